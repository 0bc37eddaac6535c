"""The engine of :class:`~kdcrowd.estimator.KDCrowdClassifier`, without scikit-learn.

:class:`CrowdFit` holds everything the estimator does — its parameters (generated from
:func:`kdcrowd.doors.door_options` and :data:`ESTIMATOR_ONLY`), :meth:`~CrowdFit.fit`,
:meth:`~CrowdFit.predict_proba`, :meth:`~CrowdFit.predict` and the fitted attributes —
and checks ``X`` with numpy alone (:meth:`CrowdFit._validated`: arrays of numbers, finite,
the fitted width and column names). :class:`~kdcrowd.estimator.KDCrowdClassifier` is
``CrowdFit`` with scikit-learn's base classes and input validation (lists, sparse
matrices, dtypes, the messages scikit-learn's checks expect); read its docstring for the
parameters and attributes.

``kdcrowd fit`` trains through ``CrowdFit`` itself: its inputs are read and checked by
:mod:`kdcrowd.data.items` (finite float32 features, uint8 images), so the command does not
import scikit-learn, whose base module imports ``scipy.stats`` (about 1.3 s of a CPU
command's start). scikit-learn is still imported where its functions are used: a 1-D
``y``, a ``random_state`` that is not an int, and ``X_val``/``y_val``.
"""

from __future__ import annotations

import numbers
import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from .checkpoint import saved_seed
from .config import ConfigError, SettingWarning, _name, _setting, stands_for
from .data._common import _row_numbers
from .data.items import check_numbers, float32_features
from .doors import door_options, settings_from_options, spreading_options
from .models.backbones import IMAGE_FEATURE_MODES

__all__ = ["ESTIMATOR_ONLY", "FINAL_LABELS", "MIN_IMAGE_SIDE", "MIN_ITEMS_FOR_VALIDATION", "MIN_VALIDATION_ITEMS", "CrowdFit", "NotFitted"]

#: Below this many annotated items no validation split is held out (the final epoch is kept).
MIN_ITEMS_FOR_VALIDATION = 50
#: A held-out validation split has at least this many items.
MIN_VALIDATION_ITEMS = 10

_DS_SOURCE = "crowd (Dawid–Skene of held-out items)"
_MV_SOURCE = "crowd (majority vote of held-out items)"


#: ``final_labels``: the classifier's p(y|x), or its posterior with the item's crowd labels.
FINAL_LABELS = ("classifier", "posterior")

#: The smallest image side the image backbones take (their augmentation pads by 1/8 of it).
MIN_IMAGE_SIDE = 8


def _is_long_table(y: Any) -> bool:
    """Whether ``y`` is a long table of crowd labels, which :meth:`Annotations.from_long`
    reads: a DataFrame with an item (or crowd-kit's task) column and a worker or label column
    (one of them missing, ``from_long`` refuses it, naming it, as ``kdcrowd fit`` refuses
    such a file); any other DataFrame is a wide one, a column per worker (:func:`_wide_rows`)."""
    if not isinstance(y, pd.DataFrame):
        return False
    cols = {str(c) for c in y.columns}
    return bool(cols & {"item", "task"}) and bool(cols & {"worker", "label"})


def _wide_rows(wide: pd.DataFrame, items: Any, named: bool) -> pd.DataFrame:
    """A wide table without its item-id column, which is no worker, found as ``kdcrowd fit``
    finds a wide file's (:func:`~kdcrowd.data.readers._wide_id_column`: ``item``, ``task``, a
    column named like ids, the header-less index of ``to_csv()`` or one whose values look
    like ids; a header-less first column beside the ids is dropped too); without such a
    column, an index that names items (:func:`_index_names_items`: not the plain ``0..N-1``,
    and X's items named, the index named, as ``long.pivot(index="item", ...)``'s, or not a row per item) holds the ids, as that column would
    (``reset_index()`` makes it one). Its rows are put in X's order by those ids, compared as
    text (``17`` is ``"17"``, as a long table's), with ``named`` items (``item_ids``, or X's
    index) matched to those names, else to X's row numbers ``0..N-1``, as a long table's item
    column is; like a long table it may hold some of X's items only, the others a row of no
    labels. Ids that are not the row numbers of an X without names keep the rows in X's
    order, a row per row of X, with an :class:`~kdcrowd.data.readers.InputWarning` saying how
    to line them up (``item_ids``, or X indexed by the ids); a table without ids has a row per
    row of X."""
    from .data.readers import InputWarning, _as_text, _drop_row_numbers, _id_text, _listing, _wide_id_column

    n = len(items)
    name = _wide_id_column(wide)
    if name is not None:
        ids, where = wide[name], f"{str(name)!r} column"
        wide = _drop_row_numbers(wide, name).drop(columns=name)
    elif _index_names_items(wide.index, named, n):
        ids, where = wide.index.to_series(), "index"
    else:
        if len(wide) != n:
            raise ValueError(f"the wide table of crowd labels has {len(wide)} rows and no item ids (no column of item ids, a plain 0..N-1 index), so its rows stand for "
                             f"X's in order: a wide table without ids needs one row per row of X ({n}); to label some of X's items, give the ids of its rows "
                             "in an 'item' column or as its index")
        return wide
    text = _id_text(pd.Series(ids.to_numpy(dtype=object)))  # as a long table's item column: 17.0 (a column with gaps) is "17"
    if text.isna().any():
        rows = np.flatnonzero(text.isna().to_numpy())
        raise ValueError(f"the wide table's {where} has no item id on {len(rows)} row(s) (rows {_listing(rows.tolist(), len(rows))}, counted from 0): "
                         "write the item's id there or drop those rows")
    col = pd.Index(text.to_numpy(dtype=object))
    keys = pd.Index(_as_text(pd.Series(list(items), dtype=object)).to_numpy(dtype=object) if named else [str(i) for i in range(n)])  # X's rows unnamed: their numbers, as a long table's item column names them
    stray = ~col.isin(keys)
    if not named and len(wide) == n and (stray.any() or not col.is_unique):
        warnings.warn(f"the wide table's {where} holds ids ({_listing(col.tolist())}) that do not name X's rows, which have no names of their own (their numbers "
                      f"0..{n - 1} would be matched): its rows are taken as X's rows, in order. To match them by id, give the ids of X's rows as fit(..., item_ids=[...]), "
                      "or X as a DataFrame indexed by those ids", InputWarning, stacklevel=4)
        return wide
    if stray.any():
        fix = ("name its rows as X's items are named (item_ids or X's index), or drop those rows" if named else
               "X's rows have no names (their numbers 0..N-1 are matched): give the ids of X's rows as fit(..., item_ids=[...]), or X as a DataFrame indexed by those ids")
        k = int(stray.sum())
        raise ValueError(f"the wide table's {where} names {k} item{'s' if k > 1 else ''} that {'are' if k > 1 else 'is'} not among X's ({_listing(col[stray].tolist(), k)}); {fix}")
    if not col.is_unique:
        raise ValueError(f"the wide table's {where} repeats an id: give an item of X one row at most, named as X's items are (item_ids or X's index)")
    return wide.set_axis(col).reindex(keys)  # X's items without a row: no labels


def _index_names_items(index: pd.Index, named: bool, n_items: int) -> bool:
    """Whether a pandas ``index`` of crowd labels or gold (a wide table's, a Series') holds
    item ids to match the ``n_items`` items by: not the plain ``0..N-1``
    (:func:`_row_numbers`), and X's items are ``named`` (``item_ids``, or X's index), or the
    index has a name (``pivot(index="item")``'s), or its rows are not one per item (some
    items only). An unnamed index of one row per item beside an X without names is the row
    labels that ``sklearn.utils.shuffle`` or ``df.sample`` carried along: the rows stand for
    X's rows in order."""
    return not _row_numbers(index) and (named or index.name is not None or len(index) != n_items)


def _warn_one_column() -> None:
    """scikit-learn reads a column vector as labels; here it is one worker's class indices."""
    warnings.warn("y of shape (N, 1) is read as one worker's wide matrix of class indices 0..K-1 (-1 or NaN: no label); "
                  "for one label per row pass a 1-D y, or give classes=[...] to name the indices", UserWarning, stacklevel=5)


def _warn_unused_classes(ann: Any, classes: Any) -> Any:
    """``ann``, after the warning of ``kdcrowd fit`` where integer labels read as class
    indices leave classes unused (labels 1..K, codes with gaps), naming ``classes=``; none
    where ``classes`` were given (a class nobody chose is then one the user declared)."""
    from .data.annotations import unused_classes_message

    message = None if classes is not None else unused_classes_message(ann, "classes=[{classes}]")
    if message:
        warnings.warn(message, UserWarning, stacklevel=5)
    return ann


class NotFitted(ValueError, AttributeError):
    """Predicting with a :class:`CrowdFit` before :meth:`~CrowdFit.fit` (the bases of
    scikit-learn's ``NotFittedError``)."""


class CrowdFit:
    """Learn a classifier and the workers' confusion matrices from crowd labels: the
    parameters, methods and fitted attributes of :class:`~kdcrowd.estimator.KDCrowdClassifier`
    (see there), without scikit-learn's base classes and input validation."""

    # __init__ is generated below the class from kdcrowd.doors.door_options() and
    # ESTIMATOR_ONLY: every option of `kdcrowd run` / `kdcrowd fit` with the same name and
    # default, plus the estimator's own parameters.

    #: A finished fit's checkpoints in ``checkpoint_dir`` make way for a fit of other data or
    #: settings (a refit, a clone in model selection: RunConfig.checkpoint_replace_finished).
    #: Not a parameter: ``kdcrowd fit --resume`` sets it false on its instance, since a resume
    #: must refuse other settings rather than start afresh.
    replace_finished_checkpoint = True

    def _on_cuda(self) -> bool:
        import torch

        return str(self.device).startswith("cuda") or (self.device == "auto" and torch.cuda.is_available())

    # ------------------------------------------------------------------ input

    def _validated(self, X: Any, reset: bool) -> np.ndarray:
        """``X`` as an array of numbers, checked: not empty, finite, and (``reset`` false)
        as wide as the fitted ``X`` with the same column names. ``reset``: this is the
        training ``X``, whose width (``n_features_in_``) and, for a DataFrame with text
        column names, names (``feature_names_in_``) are recorded."""
        name = type(self).__name__
        names = None
        if isinstance(X, pd.DataFrame) and len(X.columns) and all(isinstance(c, str) for c in X.columns):
            names = np.asarray(X.columns, dtype=object)
        X = np.asarray(X)
        check_numbers(X, finite=False)
        if X.ndim < 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X must be a non-empty 2-D array of features (N, D) or 4-D uint8 images (N, H, W, C); got shape {X.shape}")
        check_numbers(X)
        if reset:
            self.n_features_in_ = X.shape[1]
            if names is not None:
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            return X
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting {self.n_features_in_} features as input.")
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is not None and names is not None and list(names) != list(fitted):
            raise ValueError(f"The feature names should match those that were passed during fit ({name} was fitted with {list(fitted)[:5]}..., X has {list(names)[:5]}...)")
        return X

    def _check_fitted(self) -> None:
        """:class:`NotFitted` before :meth:`fit` (the estimator raises scikit-learn's ``NotFittedError``)."""
        if not hasattr(self, "module_"):
            raise NotFitted(f"this {type(self).__name__} is not fitted yet; call fit before predicting")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The parameters, by name (as scikit-learn's ``get_params``)."""
        return {name: getattr(self, name) for name in _PARAMETERS}

    def _check_X(self, X: Any, item_shape: tuple[int, ...] | None = None, name: str = "X") -> np.ndarray:
        """``X`` through scikit-learn's validation (NaN/inf, empty, complex, sparse, 1-D ...):
        float32 features (N, D) or uint8 images (N, H, W, C). Without ``item_shape`` this is
        the training ``X`` (``n_features_in_`` is set); with it, rows must have that shape.
        ``name``: a fit argument checked against the training ``X`` (``X_val``,
        ``unlabelled``), named in the error where its items have another shape."""
        reset = item_shape is None
        if not reset and name != "X":
            try:
                shape = tuple(np.shape(X))
            except ValueError:  # ragged rows: the validation below says so
                shape = ()
            if len(shape) >= 2 and shape[1:] != tuple(item_shape):
                if len(shape) == 2 and len(item_shape) == 1:
                    raise ValueError(f"{name} has {shape[1]} features, but X has {item_shape[0]}: give {name} the same features as X")
                raise ValueError(f"{name} has items of shape {shape[1:]}, but X has items of shape {tuple(item_shape)}: give {name} items of the same shape as X's")
        try:
            X = self._validated(X, reset)
        except ValueError as e:
            if reset or "features, but" not in str(e):
                raise
            raise ValueError(f"{e} (X has item shape {np.shape(X)[1:]}, but the model was fitted on items of shape {item_shape})") from None
        if not (X.ndim == 2 or (X.ndim == 4 and X.dtype == np.uint8)):
            raise ValueError(f"X must be float features (N, D) or uint8 images (N, H, W, C); got {X.dtype} {X.shape}")
        if item_shape is not None and X.shape[1:] != tuple(item_shape):
            raise ValueError(f"X has item shape {X.shape[1:]}, but the model was fitted on items of shape {tuple(item_shape)}")
        if X.ndim == 4 and min(X.shape[1:3]) < MIN_IMAGE_SIDE:
            raise ValueError(f"images must be at least {MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE} pixels for the image backbones; got {X.shape[1]}×{X.shape[2]} (resize them, or flatten them into features)")
        return float32_features(X) if X.ndim == 2 else X

    def _frozen_features(self, X: np.ndarray) -> tuple[np.ndarray, str | None]:
        """``(X, None)``, or for uint8 images with ``image_features`` auto|frozen and a
        pretrained network to take them from (:func:`~kdcrowd.models.backbones.image_feature_backbone`):
        ``(their frozen features, the network's name)``, computed once and cached on disk
        (:func:`~kdcrowd.models.pretrained.extract_features`); ``input_transform_`` then
        records the network, so that :meth:`predict` takes images too."""
        from .models.backbones import image_feature_backbone

        self.input_transform_ = None
        if X.ndim != 4:
            if self.image_features == "frozen":
                raise ConfigError(f"image_features='frozen' computes the features of images; X holds features {X.shape} (give uint8 images (N, H, W, C), or image_features='auto')")
            return X, None
        name, _ = image_feature_backbone(self.image_features, self.backbone)
        if name is None:
            return X, None
        from .models.pretrained import FROZEN_FEATURE_NORM

        self.input_transform_ = {"kind": "image-features", "backbone": name, "image_size": int(X.shape[1]), "norm": FROZEN_FEATURE_NORM}
        return self._features_of(X, name), name

    def _features_of(self, images: np.ndarray, name: str) -> np.ndarray:
        """The frozen features of ``images`` from the pretrained network ``name``, on this model's device (cached on disk)."""
        from .models.pretrained import extract_features
        from .training import resolve_device

        images = np.asarray(images)
        channels = images.shape[-1]
        if channels == 1:  # grey: the same value in red, green and blue, as an image viewer shows it
            images = np.repeat(images, 3, axis=-1)
        elif channels == 4:  # RGBA: the colour channels (what kdcrowd fit --images reads of such files)
            images = images[..., :3]
        elif channels != 3:
            raise ConfigError(f"frozen image features take grey, RGB or RGBA images (N, H, W, 1|3|4); X has {channels} channels: "
                              "give image_features='none' to train on its pixels")
        return extract_features(np.ascontiguousarray(images), name, device=resolve_device(self.device))

    def _image_inputs(self, X: Any) -> Any:
        """``X``, or its frozen features when the model was trained on those and ``X`` holds images."""
        inputs = getattr(self, "input_transform_", None) or {}
        if inputs.get("kind") == "image-features" and np.ndim(X) == 4:
            return self._features_of(X, inputs["backbone"])
        return X

    def _inputs(self, X: Any, item_shape: tuple[int, ...] | None, name: str = "X") -> np.ndarray:
        """Items as the classifier takes them: images turned into their frozen features when
        the model was trained on those (:meth:`_image_inputs`), checked (:meth:`_check_X`,
        ``item_shape`` as there), and frozen image features, given as images or as
        ``extract_features``' rows, scaled as at fit (``input_transform_["norm"]``; ``none``
        for a model saved before the scaling was recorded; ``l2`` is idempotent, so rows
        already scaled pass unchanged, to float32 rounding)."""
        from .models.pretrained import normalise_features

        X = self._check_X(self._image_inputs(X), item_shape=item_shape, name=name)
        inputs = getattr(self, "input_transform_", None) or {}
        return normalise_features(X, inputs.get("norm", "none")) if inputs.get("kind") == "image-features" else X

    def _annotations(self, n: int, annotations: Any, item_ids: Any) -> Any:
        from .data.annotations import AnnotationError, Annotations, check_duplicates_policy

        try:  # whatever form the annotations take (a wide matrix has no repeats to apply it to)
            check_duplicates_policy(self.duplicates)
        except AnnotationError as e:
            raise ConfigError(str(e)) from None

        # a list stays a list: np.asarray would turn python ints beyond int64 into floats
        items = np.arange(n) if item_ids is None else (item_ids if isinstance(item_ids, (list, tuple)) else np.asarray(item_ids))
        if len(items) != n:
            raise ValueError(f"item_ids has {len(items)} entries but X has {n} rows; give one id per row of X")
        if isinstance(annotations, Annotations):
            if item_ids is None and annotations.n_items != n:
                raise ValueError(f"the annotations cover {annotations.n_items} items but X has {n} rows; their item index must be the row of X "
                                 "(or name X's rows, with item_ids or X's index, to match the annotations' item ids)")
            if item_ids is None and self.classes is None:
                return annotations
            # X's named items and the declared classes are matched as a long table's: its labels by item id and class value
            # (every worker kept, in its order; the duplicates it holds too, as its reader kept them)
            classes = annotations.classes if self.classes is None else self.classes
            return Annotations.from_long(annotations.to_long(), classes=classes, items=annotations.item_ids if item_ids is None else items,
                                         duplicates="keep", workers=annotations.worker_ids)
        if isinstance(annotations, pd.DataFrame):
            if not _is_long_table(annotations):
                # a wide table, a column per worker (its names the worker ids), a row per row of X or per item its ids name
                annotations = _wide_rows(annotations, items, named=item_ids is not None)
                if annotations.shape[1] == 1 and self.classes is None:
                    _warn_one_column()
                return _warn_unused_classes(Annotations.from_wide(annotations, classes=self.classes, item_ids=items), self.classes)
            return _warn_unused_classes(Annotations.from_long(annotations, classes=self.classes, items=items, duplicates=self.duplicates), self.classes)
        arr = np.asarray(annotations)
        if arr.ndim == 1:  # one annotator's labels: the degenerate single-worker crowd
            from sklearn.utils.multiclass import check_classification_targets
            from sklearn.utils.validation import check_consistent_length

            check_consistent_length(items, arr)
            check_classification_targets(arr)
            classes = np.unique(arr) if self.classes is None else self.classes
            frame = pd.DataFrame({"item": items, "worker": 0, "label": arr})
            return Annotations.from_long(frame, classes=classes, items=items)
        if arr.ndim == 2 and arr.shape[0] == n:
            if arr.shape[1] == 1 and self.classes is None:
                _warn_one_column()
            return _warn_unused_classes(Annotations.from_wide(arr, classes=self.classes, item_ids=items), self.classes)
        raise ValueError(
            f"annotations must be an Annotations, a long DataFrame (item, worker, label), a wide (N, M) matrix with -1/NaN for missing labels "
            f"or a 1-D array of N labels, with N = {n} rows of X; got an array of shape {arr.shape}"
        )

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            if not 0 <= rs < 2**32:
                raise ConfigError(f"random_state must be in 0..{2**32 - 1} (a seed), or None or a numpy RandomState; got {rs}")
            return int(rs)
        saved = saved_seed(self.checkpoint_dir) if rs is None else None
        if saved is not None:  # a fit started again continues its checkpoints, which a new seed would refuse
            return saved
        from sklearn.utils import check_random_state

        try:
            return int(check_random_state(rs).randint(np.iinfo(np.int32).max))
        except (TypeError, ValueError):  # sklearn's error names the value, not the parameter
            raise ConfigError(f"random_state must be a whole number in 0..{2**32 - 1} (a seed), or None or a numpy RandomState; got {rs!r}") from None

    # ------------------------------------------------------------------ validation split

    def _reference_labels(self, ann: Any, gold: Any = None) -> tuple[np.ndarray, str, str]:
        """(labels (N,), name, note): the Dawid–Skene labels of all the crowd labels, or
        majority vote if Dawid–Skene fails; items without labels get the argmax of the
        class prior (Dawid–Skene) or class 0 (majority vote)."""
        from .aggregation import dawid_skene, majority_vote
        from .data.gold import apply_gold

        try:
            res = dawid_skene(ann, device=self.device, gold=gold)
            if not np.isfinite(res.posteriors).all():
                raise FloatingPointError("non-finite posteriors")
            labels = np.where(res.labels >= 0, res.labels, np.asarray(res.posteriors).argmax(1))
            return labels.astype(np.int64), "Dawid–Skene", ""
        except (ValueError, RuntimeError, FloatingPointError) as e:
            labels = apply_gold(np.asarray(majority_vote(ann, soft=True)).argmax(1), gold)  # the hard vote's rule: lowest class on ties
            return labels.astype(np.int64), "majority vote", f"Dawid–Skene failed ({e}); majority vote used"

    def _crowd_validation(self, ann: Any, seed: int) -> tuple[np.ndarray, str]:
        """(held-out rows, why) of the crowd-label validation split."""
        none = np.zeros(0, dtype=np.int64)
        frac = self.validation_fraction
        if frac == 0:
            return none, "validation_fraction=0: no validation split, the final epoch is kept"
        per_item = ann.labels_per_item()
        annotated = np.flatnonzero(per_item > 0)
        if len(annotated) < MIN_ITEMS_FOR_VALIDATION:
            return none, f"only {len(annotated)} annotated items (< {MIN_ITEMS_FOR_VALIDATION}): no validation split, the final epoch is kept"
        # at least 2 items stay for training (a batch of 1 cannot train batch norm or Max-MIG)
        n_val = min(max(MIN_VALIDATION_ITEMS, int(round(frac * len(annotated)))), len(annotated) - 2)  # noqa: RUF046 (frac may be a numpy float)
        multi = np.flatnonzero(per_item >= 2)
        pool, pool_desc = (multi, "items with ≥ 2 labels") if len(multi) >= n_val else (annotated, "annotated items")
        rng = np.random.default_rng(seed)
        val = np.sort(rng.choice(pool, n_val, replace=False)).astype(np.int64)
        return val, f"{n_val} of {len(pool)} {pool_desc} held out"

    # ------------------------------------------------------------------ fit / predict

    def _checked_options(self) -> tuple[dict[str, Any], tuple[Any, Any, Any, Any], Any]:
        """Every option checked (one error naming it) before any data is read, as :meth:`fit`
        does first: the door options' values, what they resolve to
        (:func:`~kdcrowd.doors.settings_from_options`: method, backbone, training settings,
        method options) and the label spreading settings."""
        from .spreading import LabelSpreading

        frac = self.validation_fraction
        if not isinstance(frac, numbers.Real) or not 0 <= frac < 1:
            raise ValueError(f"validation_fraction must be in [0, 1); got {frac!r}")
        # estimator-only flags, no config dataclass checks them: taken as the bool options take
        # them; verbose also any integer (scikit-learn's convention)
        for flag in ("track_memorization", "verbose"):
            v = getattr(self, flag)
            if not (stands_for(v, bool) or (flag == "verbose" and stands_for(v, int))):
                raise ConfigError(f"{flag} must be true or false; got {v!r}")
        if self.method == "clean":
            raise ValueError("method 'clean' trains on ground-truth labels, which crowd labels do not give; choose another method (kdcrowd, maxmig, mv, ...)")
        values = {o.name: getattr(self, o.name) for o in door_options()}
        resolved = settings_from_options(values, seed=0, progress=bool(self.verbose))
        if self.checkpoint_dir is None and resolved[2].checkpoint_interval != type(resolved[2]).checkpoint_interval:  # as `kdcrowd run` refuses it without --resume
            raise ConfigError("checkpoint_interval sets how often a fit checkpoints into checkpoint_dir; it goes with checkpoint_dir (without it no checkpoint is written)")
        if self.final_labels not in FINAL_LABELS:
            raise ConfigError(f"final_labels must be one of {', '.join(FINAL_LABELS)}; got {self.final_labels!r}")
        spreading = LabelSpreading(**{o.name: getattr(self, o.name) for o in spreading_options()})
        if self.image_features not in IMAGE_FEATURE_MODES:
            raise ConfigError(f"image_features must be one of {', '.join(IMAGE_FEATURE_MODES)}; got {self.image_features!r}")
        return values, resolved, spreading

    def fit(self, X: Any, y: Any = None, X_val: Any = None, y_val: Any = None, item_ids: Any = None, *, annotations: Any = None, gold: Any = None, unlabelled: Any = None) -> CrowdFit:
        """Train on items ``X`` and their crowd labels ``y``.

        ``y`` (also accepted as ``annotations=``): an :class:`~kdcrowd.data.Annotations`, a
        long DataFrame, a wide (N, M) matrix or a 1-D array of N labels (see the module
        docstring). ``X_val``/``y_val``: items with known true labels for model selection
        (otherwise a crowd-label validation split, see the class docstring). ``item_ids``:
        the item id of each row of ``X`` (as named in a long table); by default the index
        of a DataFrame ``X`` that is not a plain ``0..N-1`` range, else the row number.
        ``gold``: gold questions, one known class value per row of ``X`` (``None``/NaN
        where unknown); a pandas Series whose index names items (:func:`_index_names_items`:
        not the plain ``0..N-1``, and X's items named or the index named) is matched to the
        items by that index instead, as ``--gold FILE``'s item column is (its ids compared as
        text with ``item_ids``, X's index, or else the row numbers; it may list the gold items
        only, in any order; an id that is no item is an error); an unnamed index beside an X
        without names (what ``sklearn.utils.shuffle`` carries along) keeps one value per row. They are the training targets of their rows, the worker estimates of
        the aggregate-then-train methods (``ds``, ``one-coin-ds``, ``glad``, ``mace``,
        ``wawa``, ``zbs``; not ``mv``, ``mmsr``) and the start of models initialised from
        label statistics are anchored on them (:mod:`kdcrowd.data.gold`), and their rows get their known labels in ``labels_``
        (``gold_``: the class indices, -1 unknown; ``None`` without gold).
        ``unlabelled``: items without crowd labels that will be predicted (same kind as
        ``X``); used only by label spreading (``label_spreading``), whose graph then holds
        them beside ``X``; the fit keeps their features in ``spreading_`` (a large
        ``unlabelled`` takes as much memory, and as much room in a saved model) so that
        :meth:`predict_proba` spreads over the same graph: ``X`` and ``unlabelled``
        predicted again get the rows the fit gave them (checked before the training;
        without label spreading a :class:`~kdcrowd.config.SettingWarning` says they
        change nothing).

        A fit that fails or is refused leaves the estimator as it was: an earlier fit whole
        (its width, module and labels together), or unfitted.
        """
        before = dict(vars(self))
        try:
            return self._fit(X, y, X_val, y_val, item_ids, annotations=annotations, gold=gold, unlabelled=unlabelled)
        except BaseException:
            vars(self).clear()  # the fitted attributes set on the way (n_features_in_ of the new X ...) go with it
            vars(self).update(before)
            raise

    def _fit(self, X: Any, y: Any, X_val: Any, y_val: Any, item_ids: Any, *, annotations: Any, gold: Any, unlabelled: Any) -> CrowdFit:
        """The body of :meth:`fit`, which restores the estimator where it fails."""
        from .aggregation import crowd_posterior
        from .data.datasets import CrowdDataset
        from .data.gold import apply_gold, gold_from_values
        from .methods import RunConfig, run_on_dataset
        from .metrics import worker_accuracy_estimate
        from .persist import prediction_config
        from .report.practitioner import worker_matrices
        from .training import predict_proba

        if annotations is not None:
            if y is not None:
                raise ValueError("give the crowd labels once: as y or as annotations=, not both")
            y = annotations
        values, (method, backbone, train, options), spreading = self._checked_options()
        if item_ids is None and isinstance(X, pd.DataFrame) and not _row_numbers(X.index) and (X.index.is_unique or _is_long_table(y)):
            # a DataFrame indexed by item id names its rows (X.iloc[20:]'s range 20.. too); a repeated index (pd.concat)
            # names nothing where the labels follow the rows by position (a 1-D or wide y), and is refused for a long table
            item_ids = X.index.tolist()
        X = self._check_X(X)
        X, frozen = self._frozen_features(X)
        if frozen is not None:  # an MLP head on the features, with the head recipe of frozen features (head_recipe auto)
            method, backbone, train, options = settings_from_options({**values, "backbone": "auto"}, seed=0, progress=bool(self.verbose), frozen_features=True)
            X = self._inputs(X, None)  # the features, scaled, are what the model takes: n_features_in_ is their width
        spreading.check_items(tuple(X.shape))
        spreading.check_used(frozen is not None)
        if unlabelled is not None and not spreading.active(frozen is not None):
            # a warning, as a fit argument: label_spreading auto decides by the items, and a checkpointed fit started with them resumes
            warnings.warn(f"unlabelled is used by label spreading only, which is off for these items (on with {_name('label_spreading')} on, or auto with frozen "
                          f"pretrained image features): it has no effect; set {_name('label_spreading')} on, or drop unlabelled", SettingWarning, stacklevel=3)
            unlabelled = None
        elif unlabelled is not None:  # checked now, not after the training
            unlabelled = self._inputs(unlabelled, tuple(X.shape[1:]), name="unlabelled")
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None: give the crowd labels (Annotations, long table, wide matrix or 1-D labels)")
        if len(X) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 items to train on; got 1 sample")
        ann = self._annotations(len(X), y, item_ids)
        if ann.n_classes < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes, but the labels hold only one class ({np.asarray(ann.classes).tolist()}); "
                "pass classes=[...] to declare the others"
            )
        by_id = isinstance(gold, pd.Series) and _index_names_items(gold.index, item_ids is not None, len(X))  # a Series indexed by item id, as a long table's item column
        gold_idx = gold_from_values(gold, ann.classes, len(X), option="gold", items=ann.item_ids if by_id else None)
        seed = self._seed()
        train = replace(train, seed=seed)
        classes = np.asarray(ann.classes)
        n = len(X)
        val_idx = np.zeros(0, dtype=np.int64)
        if y_val is not None or X_val is not None:
            if X_val is None or y_val is None:
                raise ValueError("X_val and y_val go together; give both or neither")
            X_val = self._inputs(X_val, X.shape[1:], name="X_val")
            y_val_idx = pd.Index(classes).get_indexer(np.asarray(y_val)).astype(np.int64)
            if (y_val_idx < 0).any():
                bad = np.asarray(y_val)[y_val_idx < 0][:5].tolist()
                raise ValueError(f"y_val holds {bad}, which are not among the annotation classes {classes.tolist()}")
            from sklearn.utils.validation import check_consistent_length

            check_consistent_length(X_val, y_val_idx)
            source, reason = "given", f"{len(X_val)} items with given labels (X_val, y_val)"
        else:
            val_idx, reason = self._crowd_validation(ann, seed)
            source, X_val, y_val_idx = None, None, None
        # the stand-in truth, computed only where it is used: crowd validation targets, memorization
        reference = ref_name = ref_note = None
        t_ref = time.perf_counter()
        if len(val_idx) or self.track_memorization:
            reference, ref_name, ref_note = self._reference_labels(ann, gold_idx)
            if len(val_idx):
                source = _DS_SOURCE if ref_name == "Dawid–Skene" else _MV_SOURCE
                reason = f"{reason}; {ref_note}" if ref_note else reason
                X_val, y_val_idx = X[val_idx], reference[val_idx]
        t_ref = time.perf_counter() - t_ref
        train_idx = np.setdiff1d(np.arange(n), val_idx)
        whole = len(train_idx) == n
        x_train = X if whole else X[train_idx]
        train_ann = ann if whole else ann.subset_items(train_idx)
        ds = CrowdDataset(
            name="user",
            x_train=x_train,
            x_val=X_val if X_val is not None else X[:0],
            x_test=X[:0],
            y_train=None,
            y_val=y_val_idx,
            y_test=None,
            annotations=train_ann,
            class_names=[str(c) for c in classes],
            y_reference=reference[train_idx] if self.track_memorization else None,  # the stand-in truth of memorization only
            gold=None if gold_idx is None else gold_idx[train_idx],
        )
        cfg = RunConfig(
            dataset="user", method=method, backbone=backbone, seed=seed, train=train, options=options,
            track_memorization=bool(self.track_memorization), checkpoint_dir=None if self.checkpoint_dir is None else str(self.checkpoint_dir),
            checkpoint_replace_finished=self.replace_finished_checkpoint,
        )
        metrics, out = run_on_dataset(ds, cfg)
        metrics["timings"]["reference_labels"] = t_ref  # the stand-in truth (Dawid–Skene), computed before the run
        if self.track_memorization:
            metrics["reference_labels"] = f"memorization is measured against the {ref_name} labels of all the crowd labels (no ground truth)" + (f"; {ref_note}" if ref_note else "")

        data = out.data  # the training rows of X on the device, as run_on_dataset trained on them
        module = out.module  # left in its validation-selected state
        # every prediction of the fitted items as the run's own (tta, flip, eval_batch_size ...: prediction_config), here and in _classifier
        self._predicting = predicting = prediction_config(metrics["config"]["train"], data.device)
        train_proba = out.train_proba if out.train_proba is not None else predict_proba(module, data, data.x_train, predicting)
        proba = np.empty((n, len(classes)), dtype=np.float32)
        proba[train_idx] = train_proba.detach().float().cpu().numpy()  # every row when nothing is held out
        if len(val_idx):
            proba[val_idx] = predict_proba(module, data, data.x_val, predicting).detach().float().cpu().numpy()
        self.classifier_proba_ = apply_gold(proba.copy(), gold_idx)
        self.module_ = module
        self._device = data.device
        self.preprocessor_ = data.preprocessing_only()
        self.item_shape_ = tuple(X.shape[1:])
        self.spreading_ = None
        if spreading.active(frozen is not None):
            proba = self._spread_fitted(X, unlabelled, spreading)
        if self.final_labels == "posterior" and out.transitions is not None:  # the crowd's labels weighed by the worker matrices, the model as prior
            proba = crowd_posterior(proba, ann, out.transitions)
            self.label_source_ = "posterior: the classifier's p(y|x) times each of the item's crowd labels' T_m[y, label], normalised"
        elif self.final_labels == "posterior":
            self.label_source_ = "classifier: the method estimates no worker matrices to weigh the crowd's labels with"
            warnings.warn(f"{_setting('final_labels', 'posterior')} has no effect: method {self.method!r} estimates no worker matrices to weigh the crowd's labels with, "
                          "so the final labels are the classifier's", SettingWarning, stacklevel=3)
        else:
            self.label_source_ = "classifier: its p(y|x) of each item (final_labels='classifier')"
        if self.spreading_ is not None:
            c = self.spreading_["config"]
            self.label_source_ += f", spread over the {c.spreading_neighbours}-nearest-neighbour graph of the items' features (label_spreading, alpha {c.spreading_alpha:g})"
        proba = apply_gold(proba, gold_idx)  # gold questions keep their known labels
        self.gold_ = gold_idx

        self.classes_ = classes
        self.n_workers_ = ann.n_workers
        self.worker_ids_ = np.asarray(ann.worker_ids)
        self.transition_matrices_ = out.transitions
        self.label_proba_ = proba
        self.labels_ = classes[proba.argmax(1)]
        self.worker_matrices_, _ = worker_matrices(out.transitions, ann, proba)
        self.worker_quality_ = worker_accuracy_estimate(self.worker_matrices_, proba.mean(0))
        self.history_ = metrics["history"]
        self.metrics_ = metrics
        best = metrics.get("best_epoch")
        # a predictor that trained no epochs of its own (KD-Crowd's ensemble) records its own
        agreement = next((r.get("val_accuracy") for r in metrics["history"] if r.get("epoch") == best), metrics.get("val_best"))
        self.validation_ = {
            "source": source,
            "n_items": 0 if X_val is None else len(X_val),
            "indices": val_idx,
            "best_epoch": best,
            "agreement": agreement,
            "reason": reason,
        }
        return self

    def _spread_fitted(self, X: np.ndarray, unlabelled: np.ndarray | None, config: Any) -> np.ndarray:
        """The fitted items' probabilities spread over the graph of ``X`` and ``unlabelled``
        (checked items, as :meth:`_inputs` gives them; :mod:`kdcrowd.spreading`); keeps
        ``spreading_``, what :meth:`predict_proba` spreads new items with: that graph's
        items, ``X``'s rows then ``unlabelled``'s, and their anchors."""
        from .spreading import fitted_twins, spread_probabilities

        feats, anchors = X, self.classifier_proba_
        if unlabelled is not None:
            U = unlabelled[fitted_twins(X, unlabelled, self._device) < 0]  # a fitted item among them is that item, as predict_proba takes it (spread_new)
            feats, anchors = np.concatenate([X, U]), np.concatenate([anchors, self._classifier(U)])
        self.spreading_ = {"features": feats, "anchors": anchors, "config": config}
        return spread_probabilities(feats, anchors, config, self._device)[: len(X)]

    def _classifier(self, X: np.ndarray) -> np.ndarray:
        """The trained classifier's p(y|x) of checked items ``X``, predicted with the fit's
        prediction settings (test-time augmentation ``tta``, ``flip``, ``eval_batch_size``
        ...: :func:`kdcrowd.persist.prediction_config`, kept by :meth:`fit`), as ``labels_``
        were and as a saved model predicts."""
        import torch

        from .training import predict_proba

        xt = torch.from_numpy(np.ascontiguousarray(X)).to(self._device)
        if self.preprocessor_.is_image:
            xt = xt.permute(0, 3, 1, 2).contiguous()
        return predict_proba(self.module_, self.preprocessor_, xt, self._predicting).cpu().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, K), columns in the order of ``classes_``: the classifier's,
        or with label spreading (``spreading_`` set) its probabilities spread over the graph
        the fit spread over (the fitted items and ``unlabelled``) and ``X`` together
        (:func:`kdcrowd.spreading.spread_new`): an item of that graph gets its row."""
        from .spreading import spread_new

        self._check_fitted()
        X = self._inputs(X, self.item_shape_)
        proba = self._classifier(X)
        s = getattr(self, "spreading_", None)
        if s is not None:
            proba = spread_new(s["features"], s["anchors"], X, proba, s["config"], self._device)
        return proba

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels (values of ``classes_``)."""
        proba = self.predict_proba(X)  # checks that the estimator is fitted
        return self.classes_[proba.argmax(1)]


#: The estimator's own parameters (after the options every door shares) and their defaults.
ESTIMATOR_ONLY: dict[str, Any] = {
    "random_state": 0,
    "classes": None,
    "duplicates": "error",
    "validation_fraction": 0.0,
    "image_features": "auto",
    "final_labels": "classifier",
    **{o.name: o.default for o in spreading_options()},
    "checkpoint_dir": None,
    "track_memorization": False,
    "verbose": False,
}


def _generated_init(defaults: dict[str, Any]) -> Any:
    """``__init__(self, <name>=<default>, ...)`` storing each parameter as an attribute,
    as scikit-learn requires (explicit parameters, no ``**kwargs``, nothing else done)."""
    names = list(defaults)
    src = "def __init__(self, " + ", ".join(f"{n}=_defaults[{n!r}]" for n in names) + ") -> None:\n"
    src += "".join(f"    self.{n} = {n}\n" for n in names)
    namespace: dict[str, Any] = {"_defaults": dict(defaults)}
    exec(src, namespace)  # noqa: S102 - code built from the option names above, no input
    init = namespace["__init__"]
    init.__qualname__ = "CrowdFit.__init__"
    init.__doc__ = "Parameters: see the class docstring (generated from kdcrowd.doors.door_options and ESTIMATOR_ONLY)."
    return init


#: The parameters of :class:`CrowdFit` (and the estimator), in order, with their defaults.
_PARAMETERS: dict[str, Any] = {**{o.name: o.default for o in door_options()}, **ESTIMATOR_ONLY}

CrowdFit.__init__ = _generated_init(_PARAMETERS)  # type: ignore[method-assign]
