"""What ``kdcrowd fit`` writes next to a fitted :class:`~kdcrowd.crowdfit.CrowdFit` (the engine of :class:`~kdcrowd.estimator.KDCrowdClassifier`).

Call :func:`write_fit_outputs` once after ``clf.fit(X, ann)``; it writes into one folder

=========================== ============================================================
``labels.csv``              ``item,label,confidence,p_<class>...`` for every item with
                            crowd labels (original item ids and class values)
``predictions.csv``         the same for items without crowd labels: the predict set
                            and unlabelled rows of the training items
``workers.csv``             ``worker,n_labels,accuracy_estimate,agreement,diag_<class>...``
``transition_matrices.npz`` ``matrices`` (M, K, K), ``workers``, ``classes``, ``estimated``
``model.pt``                the trained module's state dict and what rebuilds the
                            predictor (:func:`load_predictor`, ``kdcrowd predict``)
``metrics.json``            ``clf.metrics_``
``report.html``             one self-contained page (:mod:`kdcrowd.report.html`)
=========================== ============================================================

The pieces are usable on their own: :func:`label_frame`, :func:`worker_matrices`,
:func:`worker_table`, :func:`save_matrices`, :func:`save_model`, :func:`load_predictor`.

Estimated accuracy of worker ``m`` is ``Σ_k prior_k · T_m[k, k]``
(:func:`kdcrowd.metrics.worker_accuracy_estimate`): the probability that the worker gives
the true class, with the prior the mean predicted label distribution over all items.
Agreement is the fraction of the worker's labels equal to the final label.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import write_csv
from ..persist import MODEL_FORMAT, _trained_backbone, items_option, load_predictor, save_model  # noqa: F401  (re-exported)
from .svg import _e

__all__ = [
    "FILES",
    "label_frame",
    "load_predictor",
    "save_matrices",
    "save_model",
    "worker_matrices",
    "worker_table",
    "write_fit_outputs",
]



# ----------------------------------------------------------------------------- tables


def label_frame(item_ids: Sequence[Any], classes: Sequence[Any], proba: np.ndarray) -> pd.DataFrame:
    """``item,label,confidence,p_<class>...``: the argmax class, its probability and the
    distribution ``proba`` (N, K) per item."""
    classes = np.asarray(classes)
    proba = np.asarray(proba, dtype=np.float64).reshape(len(item_ids), len(classes))
    cols: dict[str, Any] = {"item": np.asarray(item_ids), "label": classes[proba.argmax(1)] if len(proba) else classes[:0], "confidence": proba.max(1) if len(proba) else proba[:, 0]}
    for j, c in enumerate(classes):
        cols[f"p_{c}"] = proba[:, j]
    return pd.DataFrame(cols)


def worker_matrices(transitions: np.ndarray | None, ann: Any, proba: np.ndarray) -> tuple[np.ndarray, str]:
    """Each worker's ``(M, K, K)`` row-stochastic confusion matrix and where it comes from.

    The method's own estimate when it has one (crowd models, KD-Crowd, Dawid–Skene).
    Otherwise (majority-vote training) the confusion of the worker's labels against the
    final labels ``proba.argmax(1)``: ``T_m[k, j]`` = the share of the worker's labels on
    items labelled ``k`` that are ``j``; rows without any (a class the worker never met)
    are uniform. (The soft confusion against ``proba`` shrank every estimate by the
    classifier's confidence: a worker right on every item came out at the mean confidence.)
    """
    if transitions is not None:
        return np.asarray(transitions, dtype=np.float64), MATRIX_SOURCES[True]
    from ..data.confusion import confusion

    proba = np.asarray(proba, dtype=np.float64)
    return confusion(ann, proba.argmax(1), normalize=True, n_classes=proba.shape[1]), MATRIX_SOURCES[False]


#: Where :func:`worker_matrices` takes the matrices from: the method's estimate (``True``) or not.
MATRIX_SOURCES = {True: "estimated by the method", False: "the workers' labels against the final labels (the method estimates no worker matrices)"}


def worker_table(t: np.ndarray, ann: Any, proba: np.ndarray, accuracy: np.ndarray, gold: np.ndarray | None = None, held_out: np.ndarray | None = None) -> pd.DataFrame:
    """``workers.csv``: ``worker,n_labels,accuracy_estimate,agreement,diag_<class>...`` in
    worker order; with gold questions ``gold`` ((N,) class indices, -1 unknown) also
    ``gold_n`` (the worker's labels on gold items) and ``gold_accuracy`` (the fraction of
    them equal to the known label, NaN without any) after ``agreement``.

    With ``held_out`` (the item indices of a validation split, which the method does not
    fit) also ``n_labels_fitted`` after ``n_labels``: the worker's labels on the other
    items, those its matrix was estimated from (0: the matrix is the method's starting
    one).

    ``accuracy`` (M,) is the estimated accuracy (the estimator's ``worker_quality_``,
    :func:`kdcrowd.metrics.worker_accuracy_estimate` of ``t``); ``agreement`` is the
    fraction of the worker's labels equal to ``proba.argmax(1)`` of the item (NaN for a
    worker without labels); ``diag_<class>`` is ``T_m[k, k]``, the chance that the worker
    recognises class k.
    """
    m = t.shape[0]
    proba = np.asarray(proba, dtype=np.float64)
    n = ann.labels_per_worker()
    agree_counts = np.bincount(ann.worker, weights=(ann.label == proba.argmax(1)[ann.item]).astype(float), minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        agree = np.where(n > 0, agree_counts / np.maximum(n, 1), np.nan)
    cols: dict[str, Any] = {"worker": np.asarray(ann.worker_ids), "n_labels": n}
    if held_out is not None and len(held_out):  # a validation split: the method saw only the other items' labels
        out = np.zeros(ann.n_items, dtype=bool)
        out[np.asarray(held_out, dtype=np.int64)] = True
        cols["n_labels_fitted"] = np.bincount(ann.worker[~out[ann.item]], minlength=m)
    cols.update({"accuracy_estimate": np.asarray(accuracy, dtype=np.float64), "agreement": agree})
    if gold is not None:
        from ..data.gold import worker_gold_accuracy

        cols["gold_n"], cols["gold_accuracy"] = worker_gold_accuracy(ann, gold)
    diag = np.diagonal(t, axis1=1, axis2=2)
    for j, c in enumerate(np.asarray(ann.classes)):
        cols[f"diag_{c}"] = diag[:, j]
    return pd.DataFrame(cols)


def save_matrices(path: str | Path, t: np.ndarray, ann: Any, estimated: bool = True) -> None:
    """``transition_matrices.npz``: ``matrices`` (M, K, K) float32, ``workers`` and
    ``classes`` as text arrays, and ``estimated`` (whether the method estimated them, or they
    count the workers' labels against the final labels) (readable with ``np.load(path)``, no
    pickle)."""
    np.savez_compressed(path, matrices=np.asarray(t, dtype=np.float32), workers=np.asarray(ann.worker_ids).astype(str), classes=np.asarray(ann.classes).astype(str),
                        estimated=np.asarray(bool(estimated)))


# ----------------------------------------------------------------------------- model file
# save_model / load_predictor: kdcrowd.persist (imported above for the outputs below)


# ----------------------------------------------------------------------------- outputs


FILES = {
    "labels.csv": "item,label,confidence,p_<class>... for every item with crowd labels",
    "predictions.csv": "the same for items without crowd labels (the --predict set, and unlabelled rows of the training items)",
    "workers.csv": "worker,n_labels,accuracy_estimate,agreement,diag_<class>... (with --gold also gold_n, gold_accuracy: each worker's gold answers and accuracy on them; with --validation-fraction and a method with its own matrices also n_labels_fitted: the labels outside the held-out items, which the matrices are estimated from)",
    "transition_matrices.npz": "matrices (M, K, K), workers, classes, estimated (false: the workers' labels against the final labels)",
    "model.pt": "the trained classifier; kdcrowd predict --model reads it",
    "metrics.json": "configuration, versions, device, timings, per-epoch history",
    "report.html": "this page",
}


def _method_text(clf: Any) -> str:
    m = clf.metrics_
    # the settings the fit trained with (a head recipe may have set some), else the estimator's
    trained = {**clf.get_params(), **m.get("config", {}).get("options", {}), **m.get("config", {}).get("train", {})}
    if clf.method == "kdcrowd":
        return (
            f"<b>KD-Crowd</b>: the crowd model <code>{_e(trained['teacher'])}</code> is trained as teacher, a robust <code>{_e(trained['student'])}</code> student learns from its predictions "
            f"with the <code>{_e(trained['kd'])}</code> distillation loss"
            + (", then the roles switch and the crowd model is retrained towards the student" if trained["stages"] == 2 else "")
            + f"; labels come from the final stage (<code>{_e(m.get('final_stage', '?'))}</code>), worker matrices from the last crowd model trained "
            + f"(<code>{'stage2' if trained['stages'] == 2 else 'teacher'}</code>; the student has none), {trained['epochs']} epochs per stage, backbone <code>{_e(_trained_backbone(clf))}</code>."
        )
    return f"Method <code>{_e(clf.method)}</code>, {trained['epochs']} epochs, backbone <code>{_e(_trained_backbone(clf))}</code>."


def _selection_text(clf: Any) -> str:
    v = getattr(clf, "validation_", None) or {}
    n = int(v.get("n_items", 0) or 0)
    if n:
        return (
            f"Training loss and validation agreement per epoch (stages one after another). Model selection: {n} labelled items were held out of training; "
            f"the kept epoch (★) of each stage is the one whose predictions agree best with their {v.get('source', 'validation labels')}. "
            f"Their final labels come from the {'crowd posterior: the trained network weighed with each worker matrix' if getattr(clf, 'label_source_', '').startswith('posterior') else 'trained network'}, like every item's."
        )
    return "Training loss per epoch (stages one after another). No items were held out, so the model after the last epoch is kept."


def write_fit_outputs(
    out: str | Path,
    clf: Any,
    ann: Any,
    item_ids: Sequence[Any],
    items_description: str,
    settings: dict[str, Any],
    gold: tuple[np.ndarray, np.ndarray] | None = None,
    predict: tuple[Sequence[Any], np.ndarray] | None = None,
    thumbnail: Callable[[int], bytes | None] | None = None,
    timings: dict[str, float] | None = None,
    since: float | None = None,
) -> dict[str, Path]:
    """Write every output file of ``kdcrowd fit`` into ``out``; returns ``{name: path}``.

    ``clf`` is a fitted :class:`~kdcrowd.crowdfit.CrowdFit` (or estimator), ``ann`` the
    :class:`~kdcrowd.data.Annotations` it was fitted on (item index = row of X),
    ``item_ids`` the original ids of those rows; ``predict`` the ids and (R, K)
    probabilities of the predict set; ``thumbnail(i)`` PNG bytes of item ``i`` for the
    report. The files are written into a hidden folder next to them and moved into
    ``out`` only when all of them are complete, so a failure leaves no output that looks
    finished. See :data:`FILES`.

    ``timings``: the seconds of each part so far (``kdcrowd fit``); the seconds of
    ``report`` (``report.html``) and ``writing`` (the other files) are added, and
    ``wall`` from ``since`` (:func:`kdcrowd.methods.close_timings`); the result is written into
    ``metrics.json`` (written last) and ``clf.metrics_["timings"]``.
    """
    import shutil
    import tempfile

    from ..io import write_json
    from ..methods import close_timings
    from .html import FitPage, render_fit_html

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    proba = clf.label_proba_
    ids = np.asarray(item_ids)
    annotated = ann.labels_per_item() > 0
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=out))
    t_write = time.perf_counter()
    try:
        write_csv(label_frame(ids[annotated], clf.classes_, proba[annotated]), tmp / "labels.csv")
        pred_ids, pred_proba = [ids[~annotated]], [proba[~annotated]]
        if predict is not None:
            pred_ids.append(np.asarray(predict[0]))
            pred_proba.append(np.asarray(predict[1]))
        write_csv(label_frame(np.concatenate(pred_ids), clf.classes_, np.concatenate(pred_proba)), tmp / "predictions.csv")
        t = clf.worker_matrices_
        estimated = clf.transition_matrices_ is not None  # else: the workers' labels against the final labels
        source = MATRIX_SOURCES[estimated]
        # the crowd-labelled items of a validation split, which the method's own matrices were not fitted on (the
        # matrices of a method without them count every label against the final labels)
        held_out = (getattr(clf, "validation_", None) or {}).get("indices") if estimated else None
        workers = worker_table(t, ann, proba, clf.worker_quality_, gold=getattr(clf, "gold_", None), held_out=held_out)
        write_csv(workers, tmp / "workers.csv")
        save_matrices(tmp / "transition_matrices.npz", t, ann, estimated=estimated)
        save_model(tmp / "model.pt", clf)
        t_report = time.perf_counter()
        page = FitPage(
            metrics=clf.metrics_, classes=np.asarray(clf.classes_), proba=proba, annotations=ann, item_ids=ids, workers=workers, matrices=t,
            matrices_source=source, items_description=items_description, settings=settings, method_text=_method_text(clf),
            selection_text=_selection_text(clf), gold=gold, thumbnail=thumbnail, files=FILES,
            predict_items=items_option(getattr(clf, "input_transform_", None), clf.item_shape_),
        )
        (tmp / "report.html").write_text(render_fit_html(page), encoding="utf-8")
        if timings is not None:
            t_end = time.perf_counter()
            timings = {**timings, "report": t_end - t_report, "writing": float(timings.get("writing", 0.0)) + t_report - t_write}
            clf.metrics_["timings"] = close_timings(timings, t_write if since is None else since, resumed=float(clf.metrics_.get("resumed_seconds") or 0.0))
        write_json(tmp / "metrics.json", clf.metrics_)
        paths: dict[str, Path] = {}
        for name in FILES:  # report.html last: its presence means the outputs are complete
            (tmp / name).replace(out / name)
            paths[name] = out / name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
