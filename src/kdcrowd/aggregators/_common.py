"""Shared pieces of the aggregators: the result type, the annotation arrays on the device, helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.gold import apply_gold, check_gold


def _arrays(ann: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, int]:
    """Validated ``(item, worker, label, N, M, K)`` from an annotation object."""
    try:
        item = np.asarray(ann.item, dtype=np.int64).reshape(-1)
        worker = np.asarray(ann.worker, dtype=np.int64).reshape(-1)
        label = np.asarray(ann.label, dtype=np.int64).reshape(-1)
        n, m, k = int(ann.n_items), int(ann.n_workers), int(ann.n_classes)
    except AttributeError as exc:
        raise TypeError(
            "ann must provide .item, .worker, .label arrays and .n_items, .n_workers, "
            f".n_classes (e.g. kdcrowd.data.annotations.Annotations): {exc}"
        ) from None
    if not (len(item) == len(worker) == len(label)):
        raise ValueError(
            f"item, worker and label must be aligned; got lengths {len(item)}, "
            f"{len(worker)}, {len(label)}"
        )
    if k < 1:
        raise ValueError(f"n_classes must be >= 1, got {k}")
    for name, arr, size in (("item", item, n), ("worker", worker, m), ("label", label, k)):
        if len(arr) and (arr.min() < 0 or arr.max() >= size):
            raise ValueError(
                f"{name} indices must lie in [0, {size}); got range "
                f"[{arr.min()}, {arr.max()}]"
            )
    return item, worker, label, n, m, k


def _resolve_device(device: str | torch.device) -> torch.device:
    """A torch device; ``"auto"`` is CUDA when available, else the CPU."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev



_EPS = 1e-10  # crowd-kit's floor for probabilities


@dataclass
class AggregatorResult:
    """Output of the aggregators of this module (numpy arrays, on the CPU).

    Attributes:
        labels: ``(N,)`` int64 hard labels, ``-1`` for items without annotations.
        posteriors: ``(N, K)`` distribution over each item's true class (rows sum to 1);
            the class prior (or uniform) for items without annotations.
        skills: ``(M,)`` one number per worker, as the method defines it (see each
            function); ``NaN`` for workers without annotations where the method has no
            estimate for them.
        transitions: ``(M, K, K)`` worker confusion matrices ``[worker, true, observed]``
            implied by the model, or ``None`` when the model has none (GLAD's depend on
            the item too; Wawa, ZBS and M-MSR only weight votes).
        priors: ``(K,)`` class prior, or ``None`` when the method has none.
        n_iter: iterations run.
        converged: whether the stopping rule fired before ``n_iter`` ran out (always
            ``True`` for methods that run a fixed number of iterations).
        objective: per iteration, the value the stopping rule looks at.
        extras: other fitted parameters (e.g. GLAD's item difficulties).
    """

    labels: np.ndarray
    posteriors: np.ndarray
    skills: np.ndarray | None = None
    transitions: np.ndarray | None = None
    priors: np.ndarray | None = None
    n_iter: int = 0
    converged: bool = True
    objective: list[float] = field(default_factory=list)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


class _Data:
    """The annotation arrays on the device, and what every method needs from them.

    ``gold``: gold questions, ``(N,)`` class indices with ``-1`` for unknown (checked by
    :func:`kdcrowd.data.gold.check_gold`), or ``None``. Held as ``gold_np`` (numpy) and
    ``gold`` (on the device), both ``None`` without any gold item; ``gold_rows`` are the
    gold items and ``gold_cls`` their known classes."""

    def __init__(self, ann: Any, device: str | torch.device, dtype: torch.dtype | None, gold: Any = None) -> None:
        item, worker, label, n, m, k = _arrays(ann)
        self.gold_np = check_gold(gold, n, k)
        self.n, self.m, self.k, self.a = n, m, k, len(item)
        self.dev = _resolve_device(device)
        self.dtype = dtype or (torch.float64 if self.dev.type == "cpu" else torch.float32)
        self.item_np, self.worker_np, self.label_np = item, worker, label
        self.item = torch.tensor(item, device=self.dev)  # copies: Annotations arrays are read-only
        self.worker = torch.tensor(worker, device=self.dev)
        self.label = torch.tensor(label, device=self.dev)
        self.cell = self.item * k + self.label  # flat (item, label) index
        self.n_item = torch.bincount(self.item, minlength=n)
        self.n_worker = torch.bincount(self.worker, minlength=m)
        self.has = self.n_item > 0
        self.has_np = np.bincount(item, minlength=n) > 0
        self.gold = None if self.gold_np is None else torch.from_numpy(self.gold_np).to(self.dev)
        if self.gold is not None:
            self.gold_rows = torch.nonzero(self.gold >= 0).squeeze(1)
            self.gold_cls = self.gold.index_select(0, self.gold_rows)

    def clamp(self, post: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` ``post`` with the gold items' rows set to their known one-hot class (a
        copy), as Dawid–Skene's clamped E-step: the parameters learned from these posteriors
        are then anchored on the gold answers. ``post`` itself without gold."""
        return apply_gold(post, self.gold)

    def reference(self, labels: torch.Tensor) -> torch.Tensor:
        """``(N,)`` hard ``labels`` with the gold items' known classes in their place (the
        labels a worker's agreement is measured against); ``labels`` itself without gold."""
        return labels if self.gold is None else torch.where(self.gold >= 0, self.gold, labels)

    def first_appearance_rank(self) -> np.ndarray:
        """``(M,)`` each worker's rank by its first annotation (workers without annotations
        last, in index order): the order in which a random start is drawn, crowd-kit's
        (``pd.unique``), so that it does not depend on how the worker ids sort."""
        first = np.arange(self.a, self.a + self.m)
        workers, at = np.unique(self.worker_np, return_index=True)
        first[workers] = at
        return np.argsort(np.argsort(first, kind="stable"), kind="stable")

    def zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(*shape, dtype=self.dtype, device=self.dev)

    def votes(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, K)`` sums of ``weight`` (per annotation; 1 when ``None``) by item and label."""
        w = torch.ones(self.a, dtype=self.dtype, device=self.dev) if weight is None else weight
        return self.zeros(self.n * self.k).index_add_(0, self.cell, w).view(self.n, self.k)

    def per_item(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` sums of a per-annotation quantity by item."""
        return self.zeros(self.n).index_add_(0, self.item, x)

    def sum_by(self, index: torch.Tensor, x: torch.Tensor, size: int) -> torch.Tensor:
        """``(size,)`` sums of a per-annotation quantity ``x`` by ``index``, accumulated in
        float64 whatever the working dtype (:func:`_sum64`)."""
        return _sum64(index, x, size).to(self.dtype)

    def per_worker(self, x: torch.Tensor) -> torch.Tensor:
        """``(M,)`` sums of a per-annotation quantity by worker (:meth:`sum_by`)."""
        return self.sum_by(self.worker, x, self.m)

    def log_posterior(self, log_prior: torch.Tensor, log_other: torch.Tensor, log_same: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` unnormalised log posterior when an annotation adds ``log_same`` to the
        class it names and ``log_other`` to every other class (one-coin models)."""
        out = log_prior.expand(self.n, self.k) + self.per_item(log_other)[:, None]
        return out.reshape(-1).index_add(0, self.cell, log_same - log_other).view(self.n, self.k)

    def finish(self, post: torch.Tensor, labels: torch.Tensor | None = None, fill: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Numpy ``(labels, posteriors)``: argmax (lowest class on ties) unless ``labels``
        is given; ``-1`` and ``fill`` (default uniform) for items without annotations; the
        known label and one-hot row for gold items (annotated or not)."""
        post = post.clone()
        post[~self.has] = (torch.full((self.k,), 1.0 / self.k, dtype=post.dtype, device=self.dev) if fill is None else fill.to(post.dtype))
        lab = (_argmax_lowest(post) if labels is None else labels).cpu().numpy().astype(np.int64)
        lab[~self.has_np] = -1
        return apply_gold(lab, self.gold_np), apply_gold(post.cpu().numpy().astype(np.float64), self.gold_np)

    def trivial(self) -> AggregatorResult | None:
        """The result when there is nothing to estimate (no annotation or one class)."""
        if self.a and self.k > 1:
            return None
        post = torch.ones(self.n, self.k, dtype=torch.float64) / self.k
        labels = np.where(self.has_np, 0, -1).astype(np.int64)
        return AggregatorResult(apply_gold(labels, self.gold_np), apply_gold(post.numpy(), self.gold_np), skills=np.full(self.m, np.nan))


#: Rows per float64 slice of :func:`_sum64` (8 MB per column).
_COUNT_CHUNK = 1 << 20


def _sum64(index: torch.Tensor, x: torch.Tensor, size: int) -> torch.Tensor:
    """``(size, *x.shape[1:])`` float64 sums of the rows of ``x`` by ``index``, whatever
    ``x``'s dtype, in slices of at most ``_COUNT_CHUNK`` rows (the float64 copy of a slice
    is the only extra memory): a worker's cell sums all its labels, and a float32 running
    sum of millions of values (an ``index_add_`` adds one at a time) drifts by 1e-3,
    enough to move Dawid–Skene-like estimates by points."""
    out = torch.zeros(size, *x.shape[1:], dtype=torch.float64, device=x.device)  # (a float64 slice's cast is no copy)
    for start in range(0, len(index), _COUNT_CHUNK):
        out.index_add_(0, index[start:start + _COUNT_CHUNK], x[start:start + _COUNT_CHUNK].to(torch.float64))
    return out


def _gold_evidence(log_z: torch.Tensor, log_joint: torch.Tensor, rows: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``log_z``, the items' ``(N,)`` or ``(N, 1)`` log evidence, with the gold items'
    ``rows`` set in place to the log joint probability of their annotations and known
    class ``cls`` (``(G,)``), read from the unnormalised log posterior ``log_joint``
    ``(N, K)``: a gold item's term of a clamped E-step's likelihood. Returns ``log_z``."""
    known = log_joint.index_select(0, rows).gather(1, cls.unsqueeze(1))
    return log_z.index_copy_(0, rows, known.view(-1, *log_z.shape[1:]))


def _argmax_lowest(scores: torch.Tensor) -> torch.Tensor:
    """Row argmax where values within float rounding of the maximum are ties (the lowest
    class wins), so that sums of float weights taken in another order tie the same way:
    a relative 64 ulp of the scores' dtype (float32 on a GPU rounds ~1e-7 of a sum)."""
    top = scores.max(1, keepdim=True).values
    tol = max(1e-9, 64 * torch.finfo(scores.dtype).eps) if scores.is_floating_point() else 0.0
    return (scores >= top - tol * top.abs()).to(torch.int8).argmax(1)


def _check(name: str, value: float, low: float, strict: bool = False) -> None:
    if not (value > low if strict else value >= low) or not math.isfinite(value):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value}")
