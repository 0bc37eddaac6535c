"""One definition of a worker's confusion matrix, for hard or soft targets.

``C[m, k, j] = Σ over the annotations (i, m, j) of target_i[k]``: how much of the mass of
true class ``k`` worker ``m`` labelled ``j``. With hard targets (class indices, ``-1`` for
unknown items, whose annotations are skipped) these are counts; with soft targets
(``(N, K)`` label distributions) expected counts. Used by the annotations
(:meth:`~kdcrowd.data.annotations.Annotations.empirical_confusion`), Max-MIG's
initialisation, the practitioner's worker tables and the metrics' reference matrices.

Numpy in, numpy out; torch in (targets or indices), torch out on their device. Sums run
in annotation order (``np.add.at`` / ``index_add_``), sparse: memory is M·K·K, never N·M.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["confusion"]


def _is_torch(*xs: Any) -> bool:
    return any(type(x).__module__.startswith("torch") for x in xs)


def confusion(
    annotations: Any,
    targets: Any,
    smoothing: float = 0.0,
    normalize: bool = False,
    fill: float | None = None,
    n_workers: int | None = None,
    n_classes: int | None = None,
) -> Any:
    """``(M, K, K)`` confusion of each worker's labels against ``targets``.

    Args:
        annotations: an :class:`~kdcrowd.data.annotations.Annotations` (or anything with
            ``item``, ``worker``, ``label`` and ``n_workers``/``n_classes``), or a tuple
            ``(item, worker, label)`` of aligned index arrays (then give ``n_workers`` and
            ``n_classes``).
        targets: ``(N,)`` class indices (``-1``: unknown, skipped) or ``(N, K)`` label
            distributions of the items.
        smoothing: added to every cell before normalising (0: none).
        normalize: return row-normalised matrices instead of (expected) counts.
        fill: with ``normalize``, the value of rows without any mass (default ``1/K``,
            uniform).

    Returns:
        hard targets, no smoothing, not normalised: int64 counts; otherwise floats (the
        targets' float dtype for soft targets, float64 for hard ones).
    """
    if isinstance(annotations, tuple):
        item, worker, label = annotations
    else:
        item, worker, label = annotations.item, annotations.worker, annotations.label
        n_workers = annotations.n_workers if n_workers is None else n_workers
        n_classes = annotations.n_classes if n_classes is None else n_classes
    if n_workers is None or n_classes is None:
        raise ValueError("confusion: give n_workers and n_classes with (item, worker, label) arrays")
    m, k = int(n_workers), int(n_classes)
    if _is_torch(item, worker, label, targets):
        return _confusion_torch(item, worker, label, targets, m, k, smoothing, normalize, fill)
    item, worker, label = (np.asarray(a, dtype=np.int64) for a in (item, worker, label))
    t = np.asarray(targets)
    if t.ndim == 1:  # hard targets: exact integer counts
        yt = t.astype(np.int64)[item]
        known = yt >= 0
        flat = (worker[known] * k + yt[known]) * k + label[known]
        counts: np.ndarray = np.bincount(flat, minlength=m * k * k).reshape(m, k, k).astype(np.int64)
        if not smoothing and not normalize:
            return counts
        c = counts.astype(np.float64)
    else:
        acc = np.zeros((m * k, k), dtype=np.float64 if t.dtype.kind != "f" else t.dtype)
        np.add.at(acc, worker * k + label, t[item])  # (M·K_label, K_true), annotation order
        c = acc.reshape(m, k, k).transpose(0, 2, 1)
    c = c + smoothing if smoothing else c
    if not normalize:
        return c
    total = c.sum(-1, keepdims=True)
    return np.where(total > 0, c / np.where(total > 0, total, 1.0), 1.0 / k if fill is None else fill)


def _confusion_torch(item: Any, worker: Any, label: Any, targets: Any, m: int, k: int, smoothing: float, normalize: bool, fill: float | None) -> Any:
    import torch

    dev = targets.device if isinstance(targets, torch.Tensor) else item.device
    item, worker, label = (torch.as_tensor(a, device=dev).long() for a in (item, worker, label))
    t = torch.as_tensor(targets, device=dev)
    if t.dim() == 1:
        yt = t.long()[item]
        known = yt >= 0
        flat = (worker[known] * k + yt[known]) * k + label[known]
        counts = torch.bincount(flat, minlength=m * k * k).view(m, k, k)
        if not smoothing and not normalize:
            return counts
        c = counts.double()
    else:
        t = t.float() if not t.is_floating_point() else t
        acc = torch.zeros(m * k, k, device=dev, dtype=t.dtype).index_add_(0, worker * k + label, t[item])
        c = acc.view(m, k, k).transpose(1, 2)  # (M, K_true, K_label)
    c = c + smoothing if smoothing else c
    if not normalize:
        return c
    row = c.sum(dim=-1, keepdim=True)
    return torch.where(row > 0, c / row.clamp(min=1e-12), torch.full_like(c, 1.0 / k if fill is None else fill))
