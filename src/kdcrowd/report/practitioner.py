"""What ``kdcrowd fit`` writes next to a fitted :class:`~kdcrowd.estimator.KDCrowdClassifier`.

Call :func:`write_fit_outputs` once after ``clf.fit(X, ann)``; it writes into one folder

=========================== ============================================================
``labels.csv``              ``item,label,confidence,p_<class>...`` for every item with
                            crowd labels (original item ids and class values)
``predictions.csv``         the same for items without crowd labels: the predict set
                            and unlabelled rows of the training items
``workers.csv``             ``worker,n_labels,accuracy_estimate,agreement,diag_<class>...``
``transition_matrices.npz`` ``matrices`` (M, K, K), ``workers``, ``classes``
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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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

MODEL_FORMAT = "kdcrowd.fit/1"


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
    Otherwise (majority-vote training) the soft confusion of the worker's labels against
    the final label distribution: ``T_m[k, j] ∝ Σ_{items i labelled j by m} proba[i, k]``;
    rows without any mass (a class the worker never met) are uniform.
    """
    if transitions is not None:
        return np.asarray(transitions, dtype=np.float64), MATRIX_SOURCES[True]
    k = ann.n_classes
    counts = np.zeros((ann.n_workers, k, k))
    np.add.at(counts, (ann.worker, slice(None), ann.label), np.asarray(proba, dtype=np.float64)[ann.item])
    total = counts.sum(-1, keepdims=True)
    t = np.where(total > 0, counts / np.where(total > 0, total, 1.0), 1.0 / k)
    return t, MATRIX_SOURCES[False]


#: Where :func:`worker_matrices` takes the matrices from: the method's estimate (``True``) or not.
MATRIX_SOURCES = {True: "estimated by the method", False: "the workers' labels against the final label distribution (the method estimates no worker matrices)"}


def worker_table(t: np.ndarray, ann: Any, proba: np.ndarray, accuracy: np.ndarray) -> pd.DataFrame:
    """``workers.csv``: ``worker,n_labels,accuracy_estimate,agreement,diag_<class>...`` in
    worker order.

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
    cols: dict[str, Any] = {"worker": np.asarray(ann.worker_ids), "n_labels": n, "accuracy_estimate": np.asarray(accuracy, dtype=np.float64), "agreement": agree}
    diag = np.diagonal(t, axis1=1, axis2=2)
    for j, c in enumerate(np.asarray(ann.classes)):
        cols[f"diag_{c}"] = diag[:, j]
    return pd.DataFrame(cols)


def save_matrices(path: str | Path, t: np.ndarray, ann: Any) -> None:
    """``transition_matrices.npz``: ``matrices`` (M, K, K) float32, ``workers`` and
    ``classes`` as text arrays (readable with ``np.load(path)``, no pickle)."""
    np.savez_compressed(path, matrices=np.asarray(t, dtype=np.float32), workers=np.asarray(ann.worker_ids).astype(str), classes=np.asarray(ann.classes).astype(str))


# ----------------------------------------------------------------------------- model file


def _predictor_backbones(module: Any) -> list[Any]:
    """The backbone(s) whose averaged softmax is the fitted module's ``predict_proba``.

    Objectives wrap a crowd model (``.model``), a student (``.student``) or a backbone
    directly; co-teaching students average two backbones (``backbone``, ``backbone_b``).
    """
    from torch import nn

    inner = module
    for attr in ("model", "student"):
        if isinstance(getattr(inner, attr, None), nn.Module):
            inner = getattr(inner, attr)
            break
    nets = [inner.backbone]
    if isinstance(getattr(inner, "backbone_b", None), nn.Module):
        nets.append(inner.backbone_b)
    return nets


def _py(values: Any) -> list[Any]:
    return np.asarray(values).tolist()


def save_model(path: str | Path, clf: Any) -> None:
    """Write ``clf`` (fitted) to ``path`` with :func:`torch.save`.

    The file holds only tensors and plain Python values, so ``torch.load(path)`` reads it
    with its default ``weights_only=True``: ``state_dict`` (the whole trained module,
    worker parameters included), ``module_class``, ``predictor`` (``backbone`` name,
    ``input_shape``, ``state_dicts`` of the backbone(s) whose averaged softmax predicts,
    and the input normalisation ``mean``/``std``; images are scaled to [0, 1] first),
    ``classes``, ``worker_ids``, ``item_shape``, ``feature_names`` (the training
    features' column names, or None), ``config`` (the estimator's parameters),
    ``transition_matrices`` and ``versions``.
    """
    import torch

    from ..models.backbones import default_backbone

    cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}
    prep = clf.preprocessor_
    input_shape = tuple(int(s) for s in prep.input_shape)
    backbone = clf.backbone if clf.backbone != "auto" else default_backbone(input_shape)
    trans = clf.transition_matrices_
    params = {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in clf.get_params().items()}
    payload = {
        "format": MODEL_FORMAT,
        "state_dict": cpu(clf.module_.state_dict()),
        "module_class": type(clf.module_).__name__,
        "predictor": {
            "backbone": backbone,
            "input_shape": input_shape,
            "state_dicts": [cpu(net.state_dict()) for net in _predictor_backbones(clf.module_)],
            "mean": prep.mean.detach().float().cpu(),
            "std": prep.std.detach().float().cpu(),
            "is_image": bool(prep.is_image),
        },
        "classes": _py(clf.classes_),
        "worker_ids": _py(clf.worker_ids_),
        "item_shape": tuple(int(s) for s in clf.item_shape_),
        # the training features' column names (a DataFrame X): `kdcrowd predict` matches new features by name
        "feature_names": [str(c) for c in clf.feature_names_in_] if hasattr(clf, "feature_names_in_") else None,
        "config": params,
        "transition_matrices": None if trans is None else torch.as_tensor(np.asarray(trans, dtype=np.float32)),
        "versions": {str(k): str(v) for k, v in clf.metrics_.get("versions", {}).items()},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def load_predictor(path: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """Rebuild the classifier saved by :func:`save_model`.

    Returns ``predict_proba(X) -> (N, K)`` numpy probabilities (columns in the order of the
    file's ``classes``, also its attribute ``classes``; ``item_shape`` is the shape of one
    item) for float features ``(N, D)`` or uint8 RGB images ``(N, H, W, 3)`` of the
    training size (:func:`kdcrowd.data.items.read_image_folder` with
    ``size=item_shape[0]`` reads new ones). ``device``: as everywhere
    (:func:`kdcrowd.training.resolve_device`; ``auto`` is CUDA when there is one).
    """
    import pickle

    import torch

    from ..models.backbones import build_backbone
    from ..training import resolve_device

    device = resolve_device(device)

    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}; give the model.pt that `kdcrowd fit --out DIR` wrote into DIR")
    try:
        ck = torch.load(path, map_location=device)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        detail = " ".join(str(e).split())
        if len(detail) > 160:  # cut at a word, not inside one
            detail = detail[:160].rsplit(" ", 1)[0] + " ..."
        raise ValueError(f"{path} is not a model file written by `kdcrowd fit`, or it is truncated or damaged (torch.load: {detail}); give the model.pt that `kdcrowd fit --out DIR` wrote, copied whole") from e
    if not isinstance(ck, dict) or ck.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model file written by `kdcrowd fit`")
    p = ck["predictor"]
    nets = []
    for sd in p["state_dicts"]:
        net = build_backbone(p["backbone"], p["input_shape"], len(ck["classes"])).to(device)
        net.load_state_dict(sd)
        nets.append(net.eval())
    mean, std = p["mean"].to(device), p["std"].to(device)
    item_shape = tuple(ck["item_shape"])

    @torch.no_grad()
    def predict_proba(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if tuple(X.shape[1:]) != item_shape:
            raise ValueError(f"X has item shape {X.shape[1:]}, but the model was trained on items of shape {item_shape}")
        x = torch.as_tensor(np.ascontiguousarray(X), device=device)
        x = x.permute(0, 3, 1, 2).float() / 255.0 if p["is_image"] else x.float()
        x = (x - mean) / std
        return (sum(net(x).float().softmax(-1) for net in nets) / len(nets)).cpu().numpy()

    predict_proba.classes = np.asarray(ck["classes"])  # type: ignore[attr-defined]
    predict_proba.item_shape = item_shape  # type: ignore[attr-defined]
    predict_proba.feature_names = ck.get("feature_names")  # type: ignore[attr-defined]
    return predict_proba


# ----------------------------------------------------------------------------- outputs


def _resolved_backbone(clf: Any) -> str:
    from ..models.backbones import default_backbone

    return clf.backbone if clf.backbone != "auto" else default_backbone(tuple(clf.preprocessor_.input_shape))


FILES = {
    "labels.csv": "item,label,confidence,p_<class>... for every item with crowd labels",
    "predictions.csv": "the same for items without crowd labels (the --predict set, and unlabelled rows of the training items)",
    "workers.csv": "worker,n_labels,accuracy_estimate,agreement,diag_<class>...",
    "transition_matrices.npz": "matrices (M, K, K), workers, classes",
    "model.pt": "the trained classifier; kdcrowd predict --model reads it",
    "metrics.json": "configuration, versions, device, timings, per-epoch history",
    "report.html": "this page",
}


def _method_text(clf: Any) -> str:
    m = clf.metrics_
    if clf.method == "kdcrowd":
        return (
            f"<b>KD-Crowd</b>: the crowd model <code>{clf.teacher}</code> is trained as teacher, a robust <code>{clf.student}</code> student learns from its predictions "
            f"with the <code>{clf.kd}</code> distillation loss"
            + (", then the roles switch and the crowd model is retrained towards the student" if clf.stages == 2 else "")
            + f"; labels and worker matrices come from the final stage (<code>{m.get('final_stage', '?')}</code>), {clf.epochs} epochs per stage, backbone <code>{_resolved_backbone(clf)}</code>."
        )
    return f"Method <code>{clf.method}</code>, {clf.epochs} epochs, backbone <code>{_resolved_backbone(clf)}</code>."


def _selection_text(clf: Any) -> str:
    v = getattr(clf, "validation_", None) or {}
    n = int(v.get("n_items", 0) or 0)
    if n:
        return (
            f"Training loss and validation agreement per epoch (stages one after another). Model selection: {n} labelled items were held out of training; "
            f"the kept epoch (★) of each stage is the one whose predictions agree best with their {v.get('source', 'validation labels')}. "
            "Their final labels come from the trained network."
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
) -> dict[str, Path]:
    """Write every output file of ``kdcrowd fit`` into ``out``; returns ``{name: path}``.

    ``clf`` is a fitted :class:`~kdcrowd.estimator.KDCrowdClassifier`, ``ann`` the
    :class:`~kdcrowd.data.Annotations` it was fitted on (item index = row of X),
    ``item_ids`` the original ids of those rows; ``predict`` the ids and (R, K)
    probabilities of the predict set; ``thumbnail(i)`` PNG bytes of item ``i`` for the
    report. The files are written into a hidden folder next to them and moved into
    ``out`` only when all of them are complete, so a failure leaves no output that looks
    finished. See :data:`FILES`.
    """
    import shutil
    import tempfile

    from ..io import write_json
    from .html import FitPage, render_fit_html

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    proba = clf.label_proba_
    ids = np.asarray(item_ids)
    annotated = ann.labels_per_item() > 0
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=out))
    try:
        label_frame(ids[annotated], clf.classes_, proba[annotated]).to_csv(tmp / "labels.csv", index=False)
        pred_ids, pred_proba = [ids[~annotated]], [proba[~annotated]]
        if predict is not None:
            pred_ids.append(np.asarray(predict[0]))
            pred_proba.append(np.asarray(predict[1]))
        label_frame(np.concatenate(pred_ids), clf.classes_, np.concatenate(pred_proba)).to_csv(tmp / "predictions.csv", index=False)
        t = clf.worker_matrices_
        source = MATRIX_SOURCES[clf.transition_matrices_ is not None]
        workers = worker_table(t, ann, proba, clf.worker_quality_)
        workers.to_csv(tmp / "workers.csv", index=False)
        save_matrices(tmp / "transition_matrices.npz", t, ann)
        save_model(tmp / "model.pt", clf)
        write_json(tmp / "metrics.json", clf.metrics_)
        page = FitPage(
            metrics=clf.metrics_, classes=np.asarray(clf.classes_), proba=proba, annotations=ann, item_ids=ids, workers=workers, matrices=t,
            matrices_source=source, items_description=items_description, settings=settings, method_text=_method_text(clf),
            selection_text=_selection_text(clf), gold=gold, thumbnail=thumbnail, files=FILES,
        )
        (tmp / "report.html").write_text(render_fit_html(page), encoding="utf-8")
        paths: dict[str, Path] = {}
        for name in FILES:  # report.html last: its presence means the outputs are complete
            (tmp / name).replace(out / name)
            paths[name] = out / name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
