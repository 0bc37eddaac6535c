"""Evaluation metrics (numpy in, numpy/float out; torch tensors are accepted too).

- :func:`accuracy` -- accuracy of hard predictions or of the argmax of probabilities.
- :func:`expertise_error` -- error of estimated worker transition matrices (as the KD-Crowd paper measures it).
- :func:`true_transitions_from_labels` -- "true" transition matrices of real workers: their
  row-normalised confusion counts against the ground truth.
- :func:`memorization` / :func:`pseudo_label_memorization` -- how often a true-label
  predictor reproduces the workers' (or a teacher's) wrong labels.
- :func:`expected_calibration_error` -- ECE (Guo, Pleiss, Sun & Weinberger, "On calibration
  of modern neural networks", ICML 2017).

Functions taking annotations accept either an annotations-like object (anything with
``.item``, ``.worker``, ``.label`` arrays and optionally ``.n_workers`` / ``.n_classes``,
e.g. :class:`kdcrowd.data.annotations.Annotations`) or the three raw aligned arrays.

Aggregates over workers use ``nanmean`` / ``nanstd`` (population std, ``ddof=0``): workers
for which a quantity is undefined get NaN and are left out. If every worker is NaN the
aggregate is NaN (no warning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "expertise_error",
    "true_transitions_from_labels",
    "memorization",
    "pseudo_label_memorization",
    "expected_calibration_error",
]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _np(x: Any) -> np.ndarray:
    """Convert numpy-likes and torch tensors (any device / dtype, incl. bf16) to numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _hard(pred_or_proba: Any) -> np.ndarray:
    """Class ids from ``(N,)`` class ids or ``(N, K)`` scores (argmax)."""
    a = _np(pred_or_proba)
    if a.ndim == 2:
        return a.argmax(axis=1).astype(np.int64)
    if a.ndim != 1:
        raise ValueError(f"expected (N,) class ids or (N, K) scores; got shape {a.shape}")
    return a.astype(np.int64)


def nan_mean_std(v: np.ndarray) -> tuple[float, float]:
    """Mean and population standard deviation of the values that are not NaN (NaN, NaN when
    none is): per-worker rates where some workers have no item to rate."""
    v = np.asarray(v, dtype=np.float64)
    ok = ~np.isnan(v)
    if not ok.any():
        return float("nan"), float("nan")
    return float(v[ok].mean()), float(v[ok].std())


def _is_annotations(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("item", "worker", "label"))


def _unpack(item, worker, label, y_true, n_workers, n_classes):
    """Resolve ``(annotations, y_true, ...)`` or ``(item, worker, label, y_true, ...)``.

    When the first argument is annotations-like, the next positional argument (which lands
    in ``worker``) is taken as ``y_true`` unless ``y_true`` was given by keyword.
    """
    if _is_annotations(item):
        ann = item
        if y_true is None and worker is not None and label is None:
            y_true = worker
        elif worker is not None or label is not None:
            raise TypeError(
                "with an annotations object pass only (annotations, y_true, ...); "
                "do not pass worker/label arrays as well"
            )
        item, worker, label = ann.item, ann.worker, ann.label
        if n_workers is None:
            n_workers = getattr(ann, "n_workers", None)
        if n_classes is None:
            n_classes = getattr(ann, "n_classes", None)
    if worker is None or label is None or y_true is None:
        raise TypeError("need item, worker, label and y_true (or an annotations object and y_true)")
    # no copies when the arrays already are int64 (this runs every epoch); nothing below
    # writes into them
    item = np.asarray(_np(item), dtype=np.int64).ravel()
    worker = np.asarray(_np(worker), dtype=np.int64).ravel()
    label = np.asarray(_np(label), dtype=np.int64).ravel()
    y_true = np.asarray(_np(y_true), dtype=np.int64).ravel()
    if not (item.shape == worker.shape == label.shape):
        raise ValueError(
            f"item, worker, label must be aligned; got lengths {item.size}, {worker.size}, "
            f"{label.size}"
        )
    if item.size and (item.min() < 0 or item.max() >= y_true.size):
        raise ValueError("item indices must lie in 0..len(y_true)-1")
    if n_workers is None:
        n_workers = int(worker.max()) + 1 if worker.size else 0
    return item, worker, label, y_true, int(n_workers), n_classes


# --------------------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------------------
def accuracy(pred_or_proba: Any, y: Any) -> float:
    """Fraction of items with ``pred == y`` among those whose truth is known (``y >= 0``;
    ``-1`` marks an item without it, as in :func:`memorization`); ``pred_or_proba`` is
    ``(N,)`` class ids or ``(N, K)`` scores (argmax taken). NaN where no item has truth."""
    pred = _hard(pred_or_proba)
    y = _np(y).astype(np.int64).ravel()
    if pred.shape != y.shape:
        raise ValueError(f"prediction and label lengths differ: {pred.shape} vs {y.shape}")
    known = y >= 0
    if not known.any():
        return float("nan")
    return float((pred[known] == y[known]).mean())


# --------------------------------------------------------------------------------------
# worker expertise
# --------------------------------------------------------------------------------------
def expertise_error(T_true: Any, T_hat: Any, row_mask: Any = None) -> dict[str, Any]:
    """Error of estimated worker transition matrices.

    Parameters
    ----------
    T_true, T_hat:
        ``(M, K, K)`` true and estimated row-stochastic matrices
        (``T[m, k, j] = P(y^m = j | y = k)``); a single ``(K, K)`` matrix is treated as M=1.
    row_mask:
        optional ``(M, K)`` bool: rows (true classes) to evaluate per worker, e.g. the mask
        of :func:`true_transitions_from_labels` (classes a real worker never saw are
        excluded). ``None`` = all rows.

    Returns
    -------
    dict with

    - ``"relative_per_worker"``: ``(M,)`` float array, ``E_m`` = mean over entries of
      evaluated rows with ``T_true > 0`` of ``|T_true - T_hat| / T_true``;
    - ``"mae_per_worker"``: ``(M,)`` float array, mean of ``|T_true - T_hat|`` over all
      entries of evaluated rows;
    - ``"relative_mean"``, ``"relative_std"``, ``"mae_mean"``, ``"mae_std"``: Python floats,
      ``nanmean`` / population ``nanstd`` over workers.

    Workers without any valid entry get NaN in the per-worker arrays and are excluded from
    the aggregates. Per-worker values are numpy arrays (call ``.tolist()`` for JSON).
    """
    t = _np(T_true).astype(np.float64)
    h = _np(T_hat).astype(np.float64)
    if t.ndim == 2:
        t = t[None]
    if h.ndim == 2:
        h = h[None]
    if t.shape != h.shape or t.ndim != 3 or t.shape[1] != t.shape[2]:
        raise ValueError(
            f"T_true and T_hat must both have shape (M, K, K); got {t.shape} and {h.shape}"
        )
    M, K, _ = t.shape
    if row_mask is None:
        rows = np.ones((M, K), dtype=bool)
    else:
        rows = _np(row_mask).astype(bool).reshape(M, K)
    abs_err = np.abs(t - h)
    row_ok = np.broadcast_to(rows[:, :, None], t.shape)
    rel_ok = row_ok & (t > 0)
    rel = np.divide(abs_err, t, out=np.zeros_like(t), where=rel_ok)
    n_rel = rel_ok.sum(axis=(1, 2))
    n_all = row_ok.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_w = np.where(n_rel > 0, rel.sum(axis=(1, 2)) / np.maximum(n_rel, 1), np.nan)
        mae_w = np.where(
            n_all > 0, np.where(row_ok, abs_err, 0.0).sum(axis=(1, 2)) / np.maximum(n_all, 1),
            np.nan,
        )
    rel_mean, rel_std = nan_mean_std(rel_w)
    mae_mean, mae_std = nan_mean_std(mae_w)
    return {
        "relative_per_worker": rel_w,
        "mae_per_worker": mae_w,
        "relative_mean": rel_mean,
        "relative_std": rel_std,
        "mae_mean": mae_mean,
        "mae_std": mae_std,
    }


def true_transitions_from_labels(
    item: Any,
    worker: Any = None,
    label: Any = None,
    y_true: Any = None,
    n_workers: int | None = None,
    n_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row-normalised confusion counts of each worker's labels against the ground truth.

    Call as ``true_transitions_from_labels(item, worker, label, y_true, n_workers,
    n_classes)`` with aligned annotation arrays, or as
    ``true_transitions_from_labels(annotations, y_true)`` with an annotations-like object
    (``.item``, ``.worker``, ``.label`` and optionally ``.n_workers``, ``.n_classes``).
    Annotations of items whose ``y_true`` is negative (unknown) are ignored.

    Returns
    -------
    ``T`` ``(M, K, K)`` with ``T[m, k, j]`` = fraction of m's labels on items of true class k
    that are j, and ``row_mask`` ``(M, K)`` bool, False for classes the worker never labelled
    (those rows of ``T`` are all zeros).
    """
    item, worker, label, y_true, M, K = _unpack(item, worker, label, y_true, n_workers, n_classes)
    if K is None:
        K = int(max(label.max(initial=-1), y_true.max(initial=-1))) + 1
    K = int(K)
    yt = y_true[item]
    keep = yt >= 0
    worker, label, yt = worker[keep], label[keep], yt[keep]
    if label.size and (label.min() < 0 or label.max() >= K or yt.max() >= K):
        raise ValueError(f"labels and y_true must lie in 0..{K - 1}")
    if worker.size and (worker.min() < 0 or worker.max() >= M):
        raise ValueError(f"worker indices must lie in 0..{M - 1}")
    from kdcrowd.data.annotations import row_normalise
    from kdcrowd.data.confusion import confusion

    # the annotations of items with known truth, one "item" each (rows without data: zeros, masked)
    counts = confusion((np.arange(yt.size), worker, label), yt, n_workers=M, n_classes=K)
    return row_normalise(counts, fill=0.0)


# --------------------------------------------------------------------------------------
# memorization
# --------------------------------------------------------------------------------------
def memorization(
    pred: Any,
    item: Any,
    worker: Any = None,
    label: Any = None,
    y_true: Any = None,
    n_workers: int | None = None,
) -> tuple[np.ndarray, float, float]:
    """Per-worker memorization of wrong labels (as the KD-Crowd paper measures it).

    For worker m: among the items m labelled wrongly (``label != y_true[item]``), the
    fraction where the true-label prediction equals m's wrong label
    (``pred[item] == label``).

    Call as ``memorization(pred, item, worker, label, y_true, n_workers)`` or
    ``memorization(pred, annotations, y_true)``. ``pred`` is ``(N,)`` class ids or
    ``(N, K)`` scores (argmax taken), indexed by item. Items with negative ``y_true`` are
    ignored.

    Returns
    -------
    ``(rate, mean, std)``: ``rate`` ``(M,)`` float array, NaN for workers with no wrong
    labels; ``mean`` / ``std`` are ``nanmean`` / population ``nanstd`` over workers.
    """
    p = _hard(pred)
    item, worker, label, y_true, M, _ = _unpack(item, worker, label, y_true, n_workers, None)
    if item.size and item.max() >= p.size:
        raise ValueError("item indices exceed the number of predictions")
    yt = y_true[item]
    wrong = (label != yt) & (yt >= 0)
    w = worker[wrong]
    hit = (p[item[wrong]] == label[wrong]).astype(np.float64)
    denom = np.bincount(w, minlength=M).astype(np.float64)
    num = np.bincount(w, weights=hit, minlength=M)
    rate = np.divide(num, denom, out=np.full(M, np.nan), where=denom > 0)
    mean, std = nan_mean_std(rate)
    return rate, mean, std


def pseudo_label_memorization(pred: Any, pseudo: Any, y_true: Any) -> float:
    """Among items whose pseudo-label (e.g. the teacher's prediction) is wrong, the fraction
    where ``pred == pseudo``. All three are ``(N,)`` class ids or ``(N, K)`` scores. NaN if
    no pseudo-label is wrong."""
    p = _hard(pred)
    s = _hard(pseudo)
    y = _np(y_true).astype(np.int64).ravel()
    if not (p.shape == s.shape == y.shape):
        raise ValueError(f"lengths differ: pred {p.shape}, pseudo {s.shape}, y_true {y.shape}")
    wrong = (s != y) & (y >= 0)
    if not wrong.any():
        return float("nan")
    return float((p[wrong] == s[wrong]).mean())


# --------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------
def expected_calibration_error(proba: Any, y: Any, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins.

    Guo, Pleiss, Sun & Weinberger, ICML 2017: confidence = max probability, bins
    ``(b/n, (b+1)/n]`` (confidence 0 goes to the first bin),
    ``ECE = sum_b (n_b / N) |acc_b - conf_b|``. NaN for an empty input.
    """
    pr = _np(proba).astype(np.float64)
    y = _np(y).astype(np.int64).ravel()
    if pr.ndim != 2 or pr.shape[0] != y.size:
        raise ValueError(f"proba must be (N, K) matching y (N,); got {pr.shape} and {y.shape}")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    n = y.size
    if n == 0:
        return float("nan")
    conf = pr.max(axis=1)
    correct = (pr.argmax(axis=1) == y).astype(np.float64)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    sum_conf = np.bincount(b, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(b, weights=correct, minlength=n_bins)
    return float(np.abs(sum_acc - sum_conf).sum() / n)


def worker_accuracy_estimate(transitions: Any, prior: Any) -> np.ndarray:
    """Each worker's estimated accuracy ``Σ_k prior_k · T_m[k, k]`` (M,): the chance that the
    worker gives the true class when the true class follows ``prior`` (K,), from the
    worker matrices ``transitions`` (M, K, K), rows true class, columns given class."""
    t = _np(transitions).astype(np.float64)
    prior = _np(prior).astype(np.float64)
    if t.ndim != 3 or t.shape[1] != t.shape[2] or prior.shape != (t.shape[1],):
        raise ValueError(f"transitions must be (M, K, K) and prior (K,); got {t.shape} and {prior.shape}")
    return np.einsum("k,mkk->m", prior / prior.sum(), t)
