"""Gold questions: items whose true class is known and that anchor the estimates.

A gold vector is an ``(N,)`` int64 array over the training items: the known class index
of a gold item, ``-1`` for every other item. Every layer that uses gold goes through the
functions here:

* :func:`check_gold` -- one clear error for a malformed vector;
* :func:`apply_gold` -- the known labels replace hard targets, soft targets or posteriors
  (numpy or torch, ``(N,)`` or ``(N, K)``): the clamped E-steps of Dawid–Skene, one-coin
  DS, GLAD and MACE (Wawa and ZBS compare the workers' gold answers with the known class;
  majority vote and M-MSR only give the gold items their labels), the targets of
  aggregate-then-train methods, KD-Crowd's teacher predictions;
* :func:`gold_vector` -- a gold vector from ``(positions, class indices)`` (what
  :func:`kdcrowd.data.items.read_item_labels` returns for ``--gold FILE``);
* :func:`gold_from_values` -- a gold vector from class values aligned with the items
  (``None``/NaN = unknown), or from a Series indexed by item id, for the estimator;
* :func:`worker_gold_accuracy` -- each worker's number of gold answers and accuracy on
  them (``workers.csv``'s ``gold_n``, ``gold_accuracy``);
* :func:`scored_truth` -- the training items' ground truth to score on: a gold item's
  final label is its known answer, so counting it would count that answer as learnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .readers import _text_of

__all__ = ["apply_gold", "check_gold", "gold_from_values", "gold_values", "gold_vector", "scored_truth", "worker_gold_accuracy"]


def check_gold(gold: Any, n_items: int, n_classes: int, option: str = "gold") -> np.ndarray | None:
    """``gold`` as an ``(n_items,)`` int64 array (``None`` or a vector without any gold
    item stays/becomes ``None``); a ``ValueError`` naming ``option`` when its shape or
    values are wrong (class indices in ``[0, n_classes)`` or ``-1``)."""
    if gold is None:
        return None
    g = gold.detach().cpu().numpy() if isinstance(gold, torch.Tensor) else np.asarray(gold)
    if g.shape != (n_items,):
        raise ValueError(f"{option} must hold one class index (or -1 for unknown) per item, shape ({n_items},); got shape {g.shape}")
    if g.size and not np.issubdtype(g.dtype, np.integer):
        if not np.issubdtype(g.dtype, np.floating) or not np.all(g == np.round(g)):
            raise ValueError(f"{option} must hold integer class indices (-1 for unknown); got dtype {g.dtype}")
    g = g.astype(np.int64)
    bad = np.flatnonzero((g < -1) | (g >= n_classes))
    if bad.size:
        raise ValueError(f"{option} holds values outside -1..{n_classes - 1} at items {bad[:5].tolist()}")
    return g if (g >= 0).any() else None


def gold_vector(n_items: int, items: Any, labels: Any) -> np.ndarray:
    """``(n_items,)`` int64: ``labels[j]`` at position ``items[j]``, ``-1`` elsewhere."""
    g = np.full(n_items, -1, dtype=np.int64)
    g[np.asarray(items, dtype=np.int64)] = np.asarray(labels, dtype=np.int64)
    return g


def gold_values(gold: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """The inverse of :func:`gold_from_values`: an ``(N,)`` object array with the class
    value of each gold item and ``None`` elsewhere."""
    g = np.asarray(gold, dtype=np.int64)
    out = np.full(len(g), None, dtype=object)
    known = g >= 0
    out[known] = np.asarray(list(classes), dtype=object)[g[known]]
    return out


def gold_from_values(values: Any, classes: Sequence[Any], n_items: int, option: str = "gold", items: Sequence[Any] | None = None) -> np.ndarray | None:
    """A gold vector from class values aligned with the ``n_items`` items (``None``, NaN or
    ``pd.NA`` = unknown); values are matched to ``classes`` as they are, then by their text
    (``1``, ``1.0`` and ``"1"`` are the same class). ``None`` stays ``None``.

    With ``items`` (the items' ids) ``values`` is a pandas Series whose index names the
    items: each value goes to the item of its id, compared as text (``17`` is ``"17"``), as
    ``--gold FILE``'s item column (:func:`kdcrowd.data.items.read_item_labels`); it may list
    some items only (the others are unknown), an item twice with the same label. An id that
    is no item, or an item given two different labels, is a ``ValueError``."""
    if values is None:
        return None
    if items is not None:
        return _gold_by_id(values, classes, items, option)
    vals = pd.Series(list(values) if not isinstance(values, pd.Series) else values.tolist(), dtype=object)
    if len(vals) != n_items:
        raise ValueError(f"{option} must give one label (or None for unknown) per item, {n_items} in all; got {len(vals)}")
    known = ~vals.isna().to_numpy()
    idx = np.full(n_items, -1, dtype=np.int64)
    if known.any():
        idx[known] = _class_indices(vals[known].to_numpy(), classes, option)
    return idx if known.any() else None


def _class_indices(vals: np.ndarray, classes: Sequence[Any], option: str) -> np.ndarray:
    """The class index of each of the known values ``vals``: as they are, then by their text."""
    cls = pd.Index(list(classes))
    pos = cls.get_indexer(vals)
    miss = pos < 0
    if miss.any():  # by text
        text = pd.Index([str(c) for c in classes])
        pos[miss] = text.get_indexer([_text_of(v) for v in vals[miss]])  # 2.0 (a float column with NaN) is "2"
    if (pos < 0).any():
        bad = vals[pos < 0][:5].tolist()
        raise ValueError(f"{option} holds {bad}, which are not among the classes {list(classes)}")
    return pos


def _gold_by_id(values: pd.Series, classes: Sequence[Any], items: Sequence[Any], option: str) -> np.ndarray | None:
    """:func:`gold_from_values` of a Series indexed by item id (``items``: the items' ids):
    the rows of ``--gold FILE``'s table (:func:`kdcrowd.data.items.item_labels_from_frame`,
    its id and class matching and its errors), named ``option``."""
    from .items import item_labels_from_frame

    known = values.dropna()
    if known.empty:
        return None
    frame = pd.DataFrame({"item": known.index.to_numpy(dtype=object), "label": known.to_numpy(dtype=object)})
    rows, cls = item_labels_from_frame(frame, option, items, classes, items_are="rows of X (item_ids, X's index, or else the row numbers 0..N-1)", source=option)
    return gold_vector(len(items), rows, cls)


def apply_gold(values: Any, gold: Any) -> Any:
    """``values`` with the gold items' rows replaced by their known labels (a copy; the
    input is left as it is).

    ``values``: hard labels ``(N,)`` (the class index is written) or probabilities /
    soft targets / posteriors ``(N, K)`` (the one-hot row is written), as a numpy array or
    a torch tensor (the result is of the same kind, dtype and device). ``gold``: ``(N,)``
    class indices, ``-1`` for unknown, or ``None`` (``values`` is returned unchanged).
    """
    if gold is None:
        return values
    if isinstance(values, torch.Tensor):
        g = torch.as_tensor(np.asarray(gold) if not isinstance(gold, torch.Tensor) else gold, device=values.device).long()
        if g.shape != values.shape[:1]:
            raise ValueError(f"gold has shape {tuple(g.shape)} but the values have {values.shape[0]} rows")
        rows = torch.nonzero(g >= 0).squeeze(1)
        out = values.clone()
        if values.ndim == 1:
            out[rows] = g[rows].to(values.dtype)
        else:
            out[rows] = torch.nn.functional.one_hot(g[rows], values.shape[1]).to(values.dtype)
        return out
    v = np.asarray(values)
    g = gold.detach().cpu().numpy() if isinstance(gold, torch.Tensor) else np.asarray(gold)
    if g.shape != v.shape[:1]:
        raise ValueError(f"gold has shape {g.shape} but the values have {v.shape[0]} rows")
    rows = np.flatnonzero(g >= 0)
    out = v.copy()
    if v.ndim == 1:
        out[rows] = g[rows]
    else:
        out[rows] = 0
        out[rows, g[rows]] = 1
    return out


def scored_truth(ds: Any) -> np.ndarray | None:
    """``ds.y_train`` with its gold items (``ds.gold >= 0``) as ``-1``, the mark of an item
    without known truth that :func:`kdcrowd.metrics.accuracy` skips: the labels, targets and
    posteriors of gold items are their known answers (:func:`apply_gold`), so the
    accuracies of training labels are taken over the other items. ``None`` without
    ``y_train``; ``y_train`` itself where no item is gold."""
    y = getattr(ds, "y_train", None)
    gold = getattr(ds, "gold", None)
    if y is None or gold is None:
        return y
    y = np.array(y, dtype=np.int64, copy=True)
    y[np.asarray(gold) >= 0] = -1
    return y


def worker_gold_accuracy(ann: Any, gold: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(gold_n, gold_accuracy)``, both ``(M,)``: how many of the worker's labels are on
    gold items, and the fraction of them equal to the known label (NaN for a worker who
    answered no gold item). Duplicate labels count each time, as everywhere else."""
    m = ann.n_workers
    if gold is None:
        return np.zeros(m, dtype=np.int64), np.full(m, np.nan)
    g = np.asarray(gold, dtype=np.int64)[np.asarray(ann.item)]
    on = g >= 0
    worker = np.asarray(ann.worker)[on]
    n = np.bincount(worker, minlength=m).astype(np.int64)
    right = np.bincount(worker, weights=(np.asarray(ann.label)[on] == g[on]).astype(float), minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, right / np.maximum(n, 1), np.nan)
    return n, acc
