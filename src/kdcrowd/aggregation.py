"""Label aggregation: majority vote and Dawid–Skene EM.

Every function takes an annotation set ``ann`` -- an
:class:`kdcrowd.data.annotations.Annotations` or any object with the aligned int64
arrays ``item``, ``worker``, ``label`` (dense indices) and the sizes ``n_items``,
``n_workers``, ``n_classes``. Nothing is ever densified to an ``N x M`` matrix: all
work is ``bincount`` / ``index_add`` over the ``A`` annotations, so memory is
``O(A*K + N*K + M*K*K)`` and the code scales to millions of annotations.

Conventions shared by all methods

* Duplicate ``(item, worker)`` rows are kept and count as separate votes (as crowd-kit
  does).
* Items without any annotation get the hard label ``-1``. Their posterior row is uniform
  for majority vote and the learned class prior for Dawid–Skene.
* Ties in hard labels go to the lowest class index (crowd-kit's convention) unless
  ``tie_break="random"``.

Majority vote runs in numpy. Dawid–Skene runs in torch on ``device`` (``"cpu"`` by
default) in float64 on the CPU, float32 on accelerators unless ``dtype`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "METHODS",
    "DawidSkeneResult",
    "aggregate",
    "aggregation_frame",
    "dawid_skene",
    "majority_vote",
]

#: Canonical method names accepted by :func:`aggregate` (aliases are listed in
#: ``_ALIASES``).
METHODS: tuple[str, ...] = ("mv", "mv-soft", "ds", "glad", "mace", "wawa", "zbs", "one-coin-ds", "mmsr")

_ALIASES = {
    "mv": "mv",
    "majority_vote": "mv",
    "majority-vote": "mv",
    "mv-soft": "mv-soft",
    "mv_soft": "mv-soft",
    "soft_mv": "mv-soft",
    "soft-mv": "mv-soft",
    "ds": "ds",
    "dawid_skene": "ds",
    "dawid-skene": "ds",
}

_EPS = 1e-10  # crowd-kit's floor for confusion counts and priors


# --------------------------------------------------------------------------- helpers


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


def _canonical_method(method: str) -> str:
    key = str(method).strip().lower()
    if key not in _ALIASES:
        raise ValueError(
            f"unknown aggregation method {method!r}; expected one of {', '.join(METHODS)} "
            f"(aliases: {', '.join(sorted(set(_ALIASES) - set(METHODS)))})"
        )
    return _ALIASES[key]


def _resolve_device(device: str | torch.device) -> torch.device:
    """A torch device; ``"auto"`` is CUDA when available, else the CPU."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


# --------------------------------------------------------------------- majority vote


def _vote_counts(ann: Any, weights: Any = None) -> np.ndarray:
    """``(N, K)`` vote totals: one ``bincount`` over ``item * K + label``."""
    item, worker, label, n, m, k = _arrays(ann)
    w = None
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if weights.shape != (m,):
            raise ValueError(
                f"weights must be one non-negative weight per worker, shape ({m},); "
                f"got {weights.shape}"
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and non-negative")
        w = weights[worker]
    return np.bincount(item * k + label, weights=w, minlength=n * k).reshape(n, k)


def majority_vote(
    ann: Any,
    soft: bool = False,
    tie_break: str = "lowest",
    seed: int | None = 0,
    weights: Any = None,
) -> np.ndarray:
    """Majority vote.

    Args:
        ann: annotations (see module docstring).
        soft: return vote proportions ``(n_items, K)`` (float64, rows sum to 1) instead
            of hard labels ``(n_items,)`` (int64).
        tie_break: ``"lowest"`` (lowest class index wins, as crowd-kit) or ``"random"``
            (uniform among the tied classes, reproducible through ``seed``). Only used
            for hard labels.
        seed: seed of the ``numpy`` generator for ``tie_break="random"``.
        weights: optional per-worker vote weights, shape ``(n_workers,)``, finite and
            non-negative (e.g. worker skills); votes are summed with these weights.

    Items without annotations (or whose votes all have weight 0) get label ``-1`` and a
    uniform soft row ``1/K``.
    """
    _check_tie_break(tie_break)
    counts = _vote_counts(ann, weights)
    if soft:
        return _soft_from_counts(counts)
    return _hard_from_counts(counts, tie_break, seed, weighted=weights is not None)


def _check_tie_break(tie_break: str) -> None:
    if tie_break not in ("lowest", "random"):
        raise ValueError(f"tie_break must be 'lowest' or 'random', got {tie_break!r}")


def _soft_from_counts(counts: np.ndarray) -> np.ndarray:
    """Vote proportions ``(N, K)`` from vote totals; uniform rows where there is no vote."""
    n, k = counts.shape
    total = counts.sum(axis=1)
    has = total > 0
    out = np.full((n, k), 1.0 / k, dtype=np.float64)
    out[has] = counts[has] / total[has, None]
    return out


def _hard_from_counts(counts: np.ndarray, tie_break: str, seed: int | None, weighted: bool) -> np.ndarray:
    """Hard majority labels ``(N,)`` from vote totals (``-1`` where there is no vote)."""
    n, k = counts.shape
    has = counts.sum(axis=1) > 0
    cmax = counts.max(axis=1, keepdims=True)  # k >= 1 (checked in _arrays)
    if not weighted:
        is_max = counts == cmax
    else:  # float sums: treat values within rounding of the max as tied
        is_max = counts >= cmax - 1e-9 * np.abs(cmax)
    if tie_break == "lowest":
        labels = np.argmax(is_max, axis=1)
    else:
        rng = np.random.default_rng(seed)
        # a random positive score on every tied maximum, zero elsewhere
        labels = np.argmax(rng.random((n, k)) * is_max + is_max, axis=1)
    labels = labels.astype(np.int64)
    labels[~has] = -1
    return labels


# ----------------------------------------------------------------------- Dawid–Skene


@dataclass
class DawidSkeneResult:
    """Output of :func:`dawid_skene` (numpy arrays, on the CPU).

    Attributes:
        labels: ``(N,)`` int64 argmax of the posteriors (lowest class on ties), ``-1``
            for items without annotations.
        posteriors: ``(N, K)`` posterior of each item's true class; the prior for items
            without annotations.
        transitions: ``(M, K, K)`` worker confusion matrices,
            ``transitions[m, true, observed]``, rows sum to 1. Cells of labels a worker
            never gave are exactly 0 when ``smoothing == 0``; workers without any
            annotation get uniform rows.
        priors: ``(K,)`` class prior (mean posterior over annotated items).
        n_iter: number of EM iterations (E-steps) run.
        converged: whether the stopping objective gained less than ``tol`` before
            ``n_iter`` iterations ran out.
        log_likelihood: per iteration, the marginal log-likelihood of the annotations
            under the parameters used in that E-step, divided by the number of
            annotations (non-decreasing: EM's own objective).
        objective: per iteration, the value of the stopping criterion (crowd-kit's
            objective or ``log_likelihood``, see ``criterion`` in :func:`dawid_skene`).
    """

    labels: np.ndarray
    posteriors: np.ndarray
    transitions: np.ndarray
    priors: np.ndarray
    n_iter: int
    converged: bool
    log_likelihood: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)


def dawid_skene(
    ann: Any,
    n_iter: int = 100,
    tol: float = 1e-5,
    init: str | np.ndarray = "soft_mv",
    smoothing: float = 0.0,
    eps: float = _EPS,
    criterion: str = "crowdkit",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> DawidSkeneResult:
    """Dawid & Skene (1979) EM with one confusion matrix per worker.

    Dawid, A. P. & Skene, A. M. Maximum likelihood estimation of observer error-rates
    using the EM algorithm. Applied Statistics 28(1), 20–28. doi:10.2307/2346806.

    The conventions follow crowd-kit's ``DawidSkene`` so both agree on labels:
    initialisation from majority-vote proportions, an M-step first, priors as the mean
    posterior over annotated items floored at ``eps``, confusion counts floored at
    ``eps`` in the cells of labels the worker actually gave, then row-normalised.
    The loop stops when the per-annotation stopping objective (``criterion``) gains
    less than ``tol`` (a decrease also stops it).

    Args:
        ann: annotations (see module docstring). Duplicate ``(item, worker)`` rows count
            as separate observations.
        n_iter: maximum number of EM iterations.
        tol: stop when the stopping objective (per annotation) improves by less than
            this between two iterations.
        init: ``"soft_mv"`` (vote proportions, crowd-kit's choice), ``"mv"`` (one-hot
            hard majority vote, lowest class on ties) or an ``(N, K)`` array of initial
            posteriors.
        smoothing: additive Dirichlet pseudo-count added to every cell of every
            confusion matrix before normalising (0 = crowd-kit behaviour).
        eps: floor for confusion counts (cells the worker used) and for the priors.
        criterion: stopping objective. ``"crowdkit"`` (default) reproduces crowd-kit's
            ``DawidSkene``: its "ELBO" counts the log prior once per annotation instead
            of once per item, so it is not monotone under EM and usually stops the loop
            after a few iterations -- which is why crowd-kit's labels differ from a
            fully converged EM. ``"loglik"`` uses the marginal log-likelihood of the
            annotations, EM's actual objective, and runs EM to convergence.
        device: torch device to run on (``"cpu"``, ``"cuda"``, ``"cuda:1"``...;
            ``"auto"``: CUDA when available, else the CPU).
        dtype: torch float dtype; default float64 on the CPU, float32 elsewhere.
    """
    item_np, worker_np, label_np, n, m, k = _arrays(ann)
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    if criterion not in ("crowdkit", "loglik"):
        raise ValueError(f"criterion must be 'crowdkit' or 'loglik', got {criterion!r}")
    dev = _resolve_device(device)
    if dtype is None:
        dtype = torch.float64 if dev.type == "cpu" else torch.float32
    a = len(item_np)

    # Sort the annotations by item once (on the device): the per-iteration gathers
    # q[item] and the scatter-adds into (N, K) then walk memory in order (several times
    # faster on the CPU for large N); sums do not depend on the order (up to rounding).
    item = torch.tensor(item_np, device=dev)  # a copy: Annotations arrays are read-only
    wy = torch.from_numpy(worker_np * k + label_np).to(dev)  # row index (worker, label)
    item, order = torch.sort(item, stable=True)
    wy = wy[order]
    del order

    # ---- initial posteriors
    if isinstance(init, str):
        if init not in ("soft_mv", "mv"):
            raise ValueError(
                f"unknown init {init!r}; expected 'soft_mv', 'mv' or an (n_items, "
                "n_classes) array"
            )
        votes = torch.bincount(item * k + wy % k, minlength=n * k).view(n, k).to(dtype)
        if init == "mv":  # one-hot of the hard vote, lowest class on ties
            votes = torch.where(votes.sum(1, keepdim=True) > 0,
                                torch.nn.functional.one_hot(votes.argmax(1), k).to(dtype),
                                votes)
        total = votes.sum(1, keepdim=True)
        q = torch.where(total > 0, votes / total.clamp_min(1), 1.0 / k)
        del votes, total
    else:
        q0 = np.asarray(init, dtype=np.float64)
        if q0.shape != (n, k):
            raise ValueError(f"init array must have shape ({n}, {k}), got {q0.shape}")
        q = torch.as_tensor(q0, dtype=dtype, device=dev)
    n_labels = torch.bincount(item, minlength=n).to(dtype)  # annotations per item
    has = n_labels > 0
    n_has = int(has.sum())
    has_idx = None if n_has == n else torch.nonzero(has).squeeze(1)

    def annotated(x: torch.Tensor) -> torch.Tensor:
        return x if has_idx is None else x.index_select(0, has_idx)

    # used[m, y]: worker m gave label y at least once
    used = torch.bincount(wy, minlength=m * k).view(m, k) > 0
    used_rows = used.reshape(m * k, 1)
    # one (A, K) work buffer reused by every gather (large fresh allocations page-fault)
    buf = torch.empty(a, k, dtype=dtype, device=dev)
    # The M-step scatters into (worker, label) rows: visiting the annotations in that order
    # makes the writes sequential instead of random, which is what limits this step at scale.
    order_w = torch.argsort(wy, stable=True)
    wy_w, item_w = wy[order_w], item[order_w]

    def m_step(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if n_has:
            priors = annotated(q).mean(0)
        else:
            priors = torch.full((k,), 1.0 / k, dtype=dtype, device=dev)
        # raw[m*K + y, c] = sum over annotations (i, m, y) of q[i, c]
        raw = torch.zeros(m * k, k, dtype=dtype, device=dev)
        raw.index_add_(0, wy_w, torch.index_select(q, 0, item_w, out=buf))
        counts = raw.view(m, k, k).transpose(1, 2)  # [worker, true c, observed y]
        if smoothing:
            counts = counts + smoothing
        counts = torch.where(used[:, None, :], counts.clamp_min(eps), counts)
        rows = counts.sum(-1, keepdim=True)
        trans = torch.where(rows > 0, counts / rows.clamp_min(torch.finfo(dtype).tiny), 1.0 / k)
        return priors, trans, raw

    def log_t_by_label(trans: torch.Tensor) -> torch.Tensor:
        # row (m*K + y) holds log T_m[:, y] over the true class; -inf in cells of labels
        # the worker never gave, which no annotation gathers
        return torch.log(trans).transpose(1, 2).reshape(m * k, k)

    def e_step(priors: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, float]:
        # Log-space trick: a posterior is prior * a product of many probabilities, which
        # underflows to 0 for items with many labels. We sum logs instead and normalise
        # with log-sum-exp (subtracting each row's max before exp), which is exact since
        # the per-row shift cancels in the normalisation.
        log_post = torch.log(priors.clamp_min(eps)).expand(n, k).clone()
        log_post.index_add_(0, item, torch.index_select(log_t_by_label(trans), 0, wy, out=buf))
        log_norm = torch.logsumexp(log_post, dim=1, keepdim=True)
        post = torch.exp(log_post - log_norm)
        ll = float(annotated(log_norm).sum()) / a if a else 0.0
        return post, ll

    def crowdkit_objective(
        q: torch.Tensor, priors: torch.Tensor, trans: torch.Tensor, raw: torch.Tensor
    ) -> float:
        # crowd-kit's "evidence lower bound" per annotation: the expected complete-data
        # log-likelihood with the log prior added once per *annotation* (not per item),
        # plus the entropy of the eps-floored posteriors. Not monotone under EM.
        # sum_a q[i_a] . log T[w_a, :, y_a] is sum(raw * log T) with the M-step's counts.
        joint = torch.where(used_rows, raw * log_t_by_label(trans), 0.0).sum()
        joint = joint + (n_labels * (q @ torch.log(priors.clamp_min(eps)))).sum()
        qc = annotated(q).clamp_min(eps)
        entropy = -(qc * torch.log(qc)).sum()
        return float(joint + entropy) / a

    priors, trans, raw = m_step(q)
    loglik: list[float] = []
    objective: list[float] = []
    converged = False
    it = 0
    for it in range(1, n_iter + 1):
        q, ll = e_step(priors, trans)
        priors, trans, raw = m_step(q)
        loglik.append(ll)
        if a == 0:
            break  # nothing to fit; converged is set below
        if criterion == "crowdkit":
            objective.append(crowdkit_objective(q, priors, trans, raw))
        else:
            objective.append(ll)
        if len(objective) > 1 and objective[-1] - objective[-2] < tol:
            converged = True
            break
    if a == 0:
        converged = True
    del buf

    posteriors = q.cpu().numpy()
    labels = posteriors.argmax(axis=1).astype(np.int64)
    labels[~has.cpu().numpy()] = -1
    posteriors[~has.cpu().numpy()] = priors.cpu().numpy()
    return DawidSkeneResult(
        labels=labels,
        posteriors=posteriors,
        transitions=trans.cpu().numpy(),
        priors=priors.cpu().numpy(),
        n_iter=it,
        converged=converged,
        log_likelihood=loglik,
        objective=objective,
    )


# ---------------------------------------------------------------------- entry points


def aggregate(ann: Any, method: str = "mv", **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    """One entry point: ``(labels (N,), posteriors (N, K))``.

    Methods:
        ``"mv"``: majority vote; labels are the hard vote (keywords ``tie_break``,
            ``seed``, ``weights`` of :func:`majority_vote`), posteriors the vote
            proportions (uniform rows for items without annotations). A ``device``
            keyword is accepted and ignored (vote counting is a numpy ``bincount``).
        ``"mv-soft"``: the same result; the name exists so that the soft-target
            training variant and the CLI can say what they use.
        ``"ds"``: Dawid–Skene; labels and posteriors of :func:`dawid_skene`, whose
            keywords it accepts.

    Aliases: ``majority_vote``, ``soft_mv``, ``dawid_skene``, ... (see ``_ALIASES``).

    Unannotated items get label ``-1`` (see the module docstring).
    GLAD, MACE, Wawa, ZBS, one-coin DS and M-MSR: see :mod:`kdcrowd.aggregators`.
    """
    from .aggregators import canonical_aggregator, run_aggregator

    if canonical_aggregator(method) is not None:
        res = run_aggregator(ann, method, **kw)
        return res.labels, res.posteriors
    meth = _canonical_method(method)
    if meth in ("mv", "mv-soft"):
        kw.pop("device", None)  # accepted for a uniform call; votes are counted in numpy
        bad = set(kw) - {"tie_break", "seed", "weights"}
        if bad:
            raise ValueError(
                f"unexpected option(s) {sorted(bad)} for method {meth!r}; "
                "allowed: tie_break, seed, weights"
            )
        tie_break, seed = kw.get("tie_break", "lowest"), kw.get("seed", 0)
        _check_tie_break(tie_break)
        counts = _vote_counts(ann, kw.get("weights"))  # counted once for both outputs
        labels = _hard_from_counts(counts, tie_break, seed, weighted=kw.get("weights") is not None)
        return labels, _soft_from_counts(counts)
    allowed = {"n_iter", "tol", "init", "smoothing", "eps", "criterion", "device", "dtype"}
    bad = set(kw) - allowed
    if bad:
        raise ValueError(
            f"unexpected option(s) {sorted(bad)} for method 'ds'; allowed: "
            f"{', '.join(sorted(allowed))}"
        )
    res = dawid_skene(ann, **kw)
    return res.labels, res.posteriors


def aggregation_frame(ann: Any, method: str = "mv", **kw: Any) -> pd.DataFrame:
    """Aggregated labels as a table (what ``kdcrowd aggregate`` writes).

    Columns: ``item`` (original ids, ``ann.item_ids``), ``label`` (original class
    values, ``ann.classes``; missing for items without annotations) and one
    ``p_<class>`` column per class with the posterior probability. Objects without
    ``item_ids`` / ``classes`` fall back to dense indices.
    """
    labels, post = aggregate(ann, method, **kw)
    n, k = post.shape
    item_ids = getattr(ann, "item_ids", None)
    item_ids = np.arange(n) if item_ids is None else np.asarray(item_ids)
    classes = getattr(ann, "classes", None)
    classes = np.arange(k) if classes is None else np.asarray(classes)
    if len(item_ids) != n or len(classes) != k:
        raise ValueError(
            f"ann.item_ids / ann.classes have lengths {len(item_ids)} / {len(classes)}, "
            f"expected n_items={n} / n_classes={k}"
        )
    missing = labels < 0
    values = classes[np.where(missing, 0, labels)]
    lab: Any = values
    if missing.any():
        if np.issubdtype(values.dtype, np.integer):
            lab = pd.array(values, dtype="Int64")
            lab[missing] = pd.NA
        else:
            lab = values.astype(object)
            lab[missing] = None
    names = pd.Series([f"p_{c}" for c in classes])
    if names.duplicated().any():
        clash = sorted({repr(c) for c, d in zip(classes.tolist(), names.duplicated(keep=False)) if d})
        raise ValueError(
            f"classes {', '.join(clash)} give the same column name "
            f"{names[names.duplicated()].iloc[0]!r}; give the classes distinct names "
            "(e.g. all ints or all strings)"
        )
    cols: dict[str, Any] = {"item": item_ids, "label": lab}
    for j, c in enumerate(classes):
        cols[f"p_{c}"] = post[:, j]
    return pd.DataFrame(cols)
