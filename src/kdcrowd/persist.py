"""Saving a fitted model and predicting with it again (``kdcrowd fit`` → ``model.pt`` →
``kdcrowd predict``).

:func:`save_model` writes only tensors and plain values; :func:`load_predictor` reads
the file with ``torch.load(..., weights_only=True)`` (a file holding any other pickled
object is refused) and predicts through the training code's own preprocessing and
batching (:class:`~kdcrowd.training.DeviceData`, :func:`~kdcrowd.training.predict_proba`),
exactly as the fitted estimator does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MODEL_FORMAT", "PREDICTION_SETTINGS", "save_model", "load_predictor", "prediction_config"]

#: Version of the model file layout.
MODEL_FORMAT = "kdcrowd.fit/1"

#: The training settings (:class:`~kdcrowd.training.TrainConfig` fields) that every
#: prediction of a fitted model takes from its fit: test-time augmentation and its mirror
#: views, the batch size of prediction passes and how they run on the device.
PREDICTION_SETTINGS = ("tta", "flip", "eval_batch_size", "amp", "channels_last")


def prediction_config(train: Any, device: Any) -> Any:
    """The :class:`~kdcrowd.training.TrainConfig` a fitted model predicts with on ``device``:
    the :data:`PREDICTION_SETTINGS` of ``train`` (the fit's training settings as a dict:
    ``metrics_["config"]["train"]`` of the estimator, ``trained_with["train"]`` of a model
    file), each one ``train`` lacks (``None``: all, a file saved before they were
    recorded) at its default, so that ``labels_``, :meth:`predict_proba` and a saved model
    predict the same items alike (``tta`` included)."""
    from .training import TrainConfig

    train = train if isinstance(train, dict) else {}
    return TrainConfig(device=str(device), progress=False, **{k: train[k] for k in PREDICTION_SETTINGS if k in train})


def _py(values: Any) -> list[Any]:
    return np.asarray(values).tolist()


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every value that is not a plain scalar as its text (``torch.load``'s ``weights_only`` reads the file)."""
    return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in values.items()}


def save_model(path: str | Path, clf: Any) -> None:
    """Write ``clf`` (fitted) to ``path`` with :func:`torch.save`.

    The file holds only tensors and plain Python values, so ``torch.load(path)`` reads it
    with its default ``weights_only=True``: ``state_dict`` (the whole trained module,
    worker parameters included), ``module_class``, ``predictor`` (``backbone``: the name of
    the network the fit built, ``auto`` resolved, the MLP head for frozen image features;
    ``input_shape``, ``state_dicts`` of the backbone(s) whose averaged softmax predicts,
    and the input normalisation ``mean``/``std``; images are scaled to [0, 1] first),
    ``classes``, ``worker_ids``, ``item_shape``, ``config`` (the estimator's parameters),
    ``trained_with`` (the training settings and method options they resolved to; its
    :data:`PREDICTION_SETTINGS`, test-time augmentation among them, are how
    :func:`load_predictor` predicts),
    ``transition_matrices``, ``versions`` and ``inputs``: how the items given to
    ``kdcrowd predict`` become the classifier's features, or ``None`` when they are its
    inputs as they are. ``inputs`` is the ``input_transform_`` attribute a door sets on
    ``clf``: ``{"kind": "image-features", "backbone": NAME, "image_size": SIDE, "norm": NORM}``
    (frozen features of the pretrained backbone NAME, images read at SIDE px:
    :func:`kdcrowd.models.pretrained.extract_features`, scaled by NORM:
    :func:`kdcrowd.models.pretrained.normalise_features`; without ``norm``, as they come) or ``{"kind": "text",
    "text_column": NAME, "item_column": NAME, "featurizer": STATE}`` (:meth:`kdcrowd.data.texts.TextFeaturizer.to_state`;
    ``item_column``: the training texts' id column, which ``kdcrowd predict`` looks for first).
    ``image_ids``: the id style of the image files ``kdcrowd fit`` trained on (``stem``,
    ``name`` or ``path``; ``None`` for other items), which ``kdcrowd predict`` names images
    by. ``spreading``: ``None``, or with label spreading (``clf.spreading_``) the ``features``
    of the items the fit spread its labels over and their classifier probabilities
    (``anchors``): the fitted items' rows (``anchors``: ``clf.classifier_proba_``), then
    those of the items to predict given to the fit (``unlabelled``; the file keeps their
    features, so a large ``unlabelled`` makes it larger), and the graph's ``neighbours``
    and ``alpha``, so that new items are spread over that graph and themselves as the
    fitted model does, and the items of the graph predicted again get what the fit gave
    them (:func:`kdcrowd.spreading.spread_new`). A file saved before the items to predict
    were kept holds the fitted items' rows alone, and predicts over their graph, as it did.
    """
    import torch

    from .objectives import predictor_networks

    clf._check_fitted()  # unfitted: the estimator's NotFittedError (CrowdFit's NotFitted), not a missing attribute
    cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}
    prep = clf.preprocessor_
    input_shape = tuple(int(s) for s in prep.input_shape)
    backbone = _trained_backbone(clf)
    trans = clf.transition_matrices_
    params = _plain(clf.get_params())
    payload = {
        "format": MODEL_FORMAT,
        "state_dict": cpu(clf.module_.state_dict()),
        "module_class": type(clf.module_).__name__,
        "predictor": {
            "backbone": backbone,
            "input_shape": input_shape,
            "state_dicts": [cpu(net.state_dict()) for net in predictor_networks(clf.module_)],
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
        # what the fit resolved those parameters to (a head recipe sets some): the training settings and the method's options
        "trained_with": {k: _plain(v) for k, v in clf.metrics_.get("config", {}).items() if k in ("train", "options")},
        "transition_matrices": None if trans is None else torch.as_tensor(np.asarray(trans, dtype=np.float32)),
        "versions": {str(k): str(v) for k, v in clf.metrics_.get("versions", {}).items()},
        "inputs": _check_inputs(getattr(clf, "input_transform_", None)),
        "image_ids": getattr(clf, "image_id_style_", None),  # how `kdcrowd fit` named the image files (stem, name, path)
        "spreading": _spreading_state(clf),
    }
    from .io import save_torch

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_torch(payload, path)


def items_option(inputs: dict[str, Any] | None, item_shape: Any) -> str:
    """The option of ``kdcrowd predict`` that gives a model its items: ``--texts``, ``--images``
    (pixels, or frozen features of images) or ``--features``, from the model's ``inputs``
    (:func:`save_model`) and the shape of one item."""
    kind = (inputs or {}).get("kind")
    return {"image-features": "--images", "text": "--texts"}.get(kind, "--images" if len(item_shape) == 3 else "--features")


def _trained_backbone(clf: Any) -> str:
    """The name of the backbone the fit built for its inputs: the run's (``metrics_``'s
    ``config``; the estimator's ``backbone`` for a fit that recorded none), ``auto``
    resolved (:func:`~kdcrowd.models.backbones.default_backbone`). With frozen image
    features the run's backbone is ``auto``, an MLP head on the features, whatever
    pretrained network ``backbone`` named for computing them (``inputs`` records that one)."""
    from .models.backbones import default_backbone

    name = (getattr(clf, "metrics_", None) or {}).get("config", {}).get("backbone") or clf.backbone
    return default_backbone(tuple(int(d) for d in clf.preprocessor_.input_shape)) if name == "auto" else str(name)


def _spreading_state(clf: Any) -> Any:
    import torch

    spreading = getattr(clf, "spreading_", None)
    if spreading is None:
        return None
    c = spreading["config"]
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return {"features": as_tensor(spreading["features"]), "anchors": as_tensor(spreading["anchors"]),
            "neighbours": int(c.spreading_neighbours), "alpha": float(c.spreading_alpha)}


#: The kinds of ``inputs`` a model file may record (see :func:`save_model`).
INPUT_KINDS = ("image-features", "text")


def _check_inputs(inputs: Any) -> Any:
    if inputs is None:
        return None
    if not isinstance(inputs, dict) or inputs.get("kind") not in INPUT_KINDS:
        raise ValueError(f"input_transform_ must be None or a dict whose 'kind' is one of {INPUT_KINDS}, got {inputs!r}")
    return inputs


class _Averaged:
    """``predict_proba`` = the averaged softmax of the saved networks (:func:`~kdcrowd.objectives.predictor_networks`: one, two for co-teaching, more for an ensemble)."""

    def __init__(self, nets: list[Any]) -> None:
        self.nets = nets
        self.training = False

    def eval(self) -> _Averaged:
        return self

    def train(self, mode: bool = True) -> _Averaged:
        return self

    def predict_proba(self, x: Any) -> Any:
        return sum(net(x).float().softmax(-1) for net in self.nets) / len(self.nets)


def _saved_backbone(predictor: dict[str, Any], inputs: dict[str, Any]) -> tuple[str, bool]:
    """``(backbone to build, whether the file is an older one's misrecord)``: the file's
    ``predictor["backbone"]``, except in a file saved before :func:`save_model` recorded the
    backbone the fit built: a model on frozen image features with a pretrained network
    named (``image_features="frozen", backbone="efficientnet-lite0"``) recorded that
    network, which computed the features, for the head trained on them; the head is the
    backbone ``auto`` resolved to for the features (an MLP), whose weights must then fit
    it exactly (``load_state_dict`` is strict)."""
    from .models.backbones import default_backbone
    from .models.pretrained import is_pretrained_name

    name, shape = str(predictor["backbone"]), tuple(predictor["input_shape"])
    if inputs.get("kind") == "image-features" and len(shape) == 1 and is_pretrained_name(name):
        return default_backbone(shape), True
    return name, False


def _damaged_member(path: str | Path) -> str | None:
    """What is damaged in the zip archive ``path`` (a member whose bytes fail its CRC-32,
    or the archive itself), or ``None`` (whole, or not a zip archive: torch.load says)."""
    import zipfile
    import zlib

    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    return None if bad is None else f"the archive's member {bad} fails its checksum"


def load_predictor(path: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """Rebuild the classifier saved by :func:`save_model`.

    Returns ``predict_proba(X) -> (N, K)`` numpy probabilities (columns in the order of the
    file's ``classes``, also its attribute ``classes``; ``item_shape`` is the shape of one
    item) for float features ``(N, D)`` or uint8 RGB images ``(N, H, W, 3)`` of the
    training size (:func:`kdcrowd.data.items.read_image_folder` with
    ``size=item_shape[0]`` reads new ones); a model trained on frozen image features or on
    texts takes those features (its attribute ``inputs`` says how they are computed, see
    :func:`save_model`; ``kdcrowd predict`` computes them), frozen image features scaled
    here as at fit (``inputs["norm"]``). ``device``: as everywhere
    (:func:`kdcrowd.training.resolve_device`; ``auto`` is CUDA when there is one).
    Prediction is batched (``eval_batch_size`` items at a time), preprocessed by
    :meth:`kdcrowd.training.DeviceData.prepare` and test-time augmented (``tta``) as in
    training, with the fit's settings (:func:`prediction_config` of ``trained_with["train"]``;
    the defaults for a file without them); a model fitted with
    label spreading spreads the classifier's probabilities of ``X`` over the graph of its
    fitted items (with the items to predict given to the fit) and ``X``
    (:func:`kdcrowd.spreading.spread_new`), as the fitted estimator does.
    ``X`` is checked as the estimator checks it (numbers, finite, float32's range, uint8
    images, the item shape); a DataFrame's columns are matched to the training columns by
    name (the file's ``feature_names``), as ``kdcrowd predict`` matches a table's, and its
    ``item`` column, unless the model was trained on one, holds the items' ids, no feature,
    as in the table ``kdcrowd predict --features`` reads (:func:`kdcrowd.data.items.feature_table`:
    ``pd.read_csv`` of that file gives the same probabilities, row by row); no rows give ``(0, K)``.
    """
    import pickle

    import pandas as pd
    import torch

    from .data.items import align_feature_columns, check_numbers, feature_table, float32_features
    from .models.backbones import build_backbone
    from .spreading import LabelSpreading, spread_new
    from .training import DeviceData, predict_proba, resolve_device

    device = resolve_device(device)

    if Path(path).is_dir():
        raise ValueError(f"{path} is a folder; give the model file in it, e.g. {Path(path) / 'model.pt'} (what `kdcrowd fit --out DIR` wrote into DIR)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}; give the model.pt that `kdcrowd fit --out DIR` wrote into DIR")
    damaged = _damaged_member(path)
    if damaged is not None:  # torch.load does not check the archive's CRC-32s: flipped bytes load as other weights
        raise ValueError(f"{path} is truncated or damaged ({damaged}); give the model.pt that `kdcrowd fit --out DIR` wrote, copied whole")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's own text advises loading unsafely: only what it found is kept
        found = next((ln.strip()[ln.strip().index("Unsupported"):].split(". ")[0] for ln in str(e).splitlines() if "Unsupported" in ln), "")
        what = "holds objects other than tensors and plain values, which kdcrowd does not load" if "global" in found else "could not be read as tensors and plain values"
        raise ValueError(f"{path} is not a model file written by `kdcrowd fit`: it {what}" + (f" (torch.load: {found[:120]})" if found else "")) from e
    except (RuntimeError, EOFError, ValueError, OSError, IndexError, KeyError) as e:  # a non-archive file read as a pickle: IndexError, KeyError
        detail = " ".join(f"{type(e).__name__}: {e}".split())
        if len(detail) > 160:  # cut at a word, not inside one
            detail = detail[:160].rsplit(" ", 1)[0] + " ..."
        raise ValueError(f"{path} is not a model file written by `kdcrowd fit`, or it is truncated or damaged (torch.load: {detail}); give the model.pt that `kdcrowd fit --out DIR` wrote, copied whole") from e
    if not isinstance(ck, dict) or ck.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model file written by `kdcrowd fit`")
    missing = [k for k in ("predictor", "classes") if k not in ck]
    if missing:
        raise ValueError(f"{path} is not a model file written by `kdcrowd fit` (it lacks {', '.join(missing)})")
    p = ck["predictor"]
    inputs = ck.get("inputs") or {}
    backbone, older = _saved_backbone(p, inputs)
    nets = []
    for sd in p["state_dicts"]:
        net = build_backbone(backbone, p["input_shape"], len(ck["classes"])).to(device)
        try:
            net.load_state_dict(sd)
        except RuntimeError as e:
            if not older:
                raise
            raise ValueError(
                f"{path} was saved by an older kdcrowd that recorded the pretrained network {p['backbone']!r} that computed the frozen image features "
                f"instead of the head trained on them, and the head's weights do not fit a {backbone!r} head on {tuple(p['input_shape'])} features; "
                "fit the model again to save a file that loads"
            ) from e
        nets.append(net.eval())
    prep = DeviceData.preprocessing(p["mean"].to(device), p["std"].to(device), bool(p["is_image"]), tuple(p["input_shape"]), device)
    item_shape = tuple(ck["item_shape"])
    config = prediction_config((ck.get("trained_with") or {}).get("train"), device)  # tta, eval_batch_size ... as the fit predicted
    spreading = ck.get("spreading")
    if spreading is not None:
        spread_config = LabelSpreading("on", int(spreading["neighbours"]), float(spreading["alpha"]))
        fitted, anchors = spreading["features"].cpu().numpy(), spreading["anchors"].cpu().numpy()

    norm = inputs.get("norm", "none") if inputs.get("kind") == "image-features" else "none"

    feature_names = ck.get("feature_names")
    n_classes = len(ck["classes"])

    @torch.no_grad()
    def predictor(X: Any) -> np.ndarray:
        # checked as the estimator checks X, and a table's columns matched by name as `kdcrowd predict` matches them
        names = list(X.columns) if isinstance(X, pd.DataFrame) else None
        if names is not None and "item" in names and "item" not in (feature_names or ()):
            # the item ids of a table, as `kdcrowd predict --features FILE` reads its 'item' column: no feature (the rows keep their order)
            _, X, names = feature_table(X, "X", keep_columns=feature_names or ())
        X = np.asarray(X)
        check_numbers(X, finite=False)
        if X.ndim >= 2 and names is not None and feature_names is not None:
            X = align_feature_columns(X, names, feature_names, "X", option="X")
        if tuple(X.shape[1:]) != item_shape:
            raise ValueError(f"X has item shape {X.shape[1:]}, but the model was trained on items of shape {item_shape}")
        if prep.is_image and X.dtype != np.uint8:
            raise ValueError(f"X must be uint8 images (N, H, W, C), as the model was trained on; got {X.dtype}")
        check_numbers(X)
        if X.ndim == 2:
            X = float32_features(X)
        if len(X) == 0:
            return np.zeros((0, n_classes), dtype=np.float32)
        if norm != "none":  # frozen image features, scaled as at fit (idempotent: scaled rows pass unchanged)
            from .models.pretrained import normalise_features

            X = normalise_features(X, norm)
        x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.uint8 if prep.is_image else np.float32)).to(device)
        if prep.is_image:
            x = x.permute(0, 3, 1, 2).contiguous()
        proba = predict_proba(_Averaged(nets), prep, x, config).cpu().numpy()
        if spreading is not None:
            proba = spread_new(fitted, anchors, X, proba, spread_config, device)
        return proba

    predictor.classes = np.asarray(ck["classes"])  # type: ignore[attr-defined]
    predictor.item_shape = item_shape  # type: ignore[attr-defined]
    predictor.feature_names = feature_names  # type: ignore[attr-defined]
    predictor.inputs = ck.get("inputs")  # type: ignore[attr-defined]  # see save_model
    predictor.image_ids = ck.get("image_ids")  # type: ignore[attr-defined]  # None: not recorded (stem)
    return predictor
