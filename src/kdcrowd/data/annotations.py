"""Validated sparse crowd annotations.

:class:`Annotations` is the one representation of crowd labels that every model,
aggregator and metric in :mod:`kdcrowd` consumes.  It holds ``A`` annotations as three
aligned ``int64`` arrays of *dense* indices

* ``item``   in ``0..n_items-1``
* ``worker`` in ``0..n_workers-1``
* ``label``  in ``0..n_classes-1``

together with the original identifiers ``item_ids`` (length ``n_items``),
``worker_ids`` (length ``n_workers``) and ``classes`` (length ``n_classes``; the
original label values or class names).  A dense ``n_items x n_workers`` matrix is never
built internally; only :meth:`Annotations.to_wide` builds one, on request.

Every conversion is vectorised with numpy / pandas (``pd.factorize``,
``Index.get_indexer``, ``np.bincount``, ``argsort``...), so millions of annotations load
in about a second.

Readers and writers:

============================  ========================================================
long table                    :meth:`Annotations.from_long` / :meth:`Annotations.to_long`
crowd-kit (task, worker, …)   :meth:`Annotations.from_long` / :meth:`Annotations.to_crowdkit`
wide N x M matrix (cleanlab)  :meth:`Annotations.from_wide` / :meth:`Annotations.to_wide`
peerannot ``answers.json``    :meth:`Annotations.from_answers_json` /
                              :meth:`Annotations.to_answers_json`
files by suffix               :meth:`Annotations.read` / :meth:`Annotations.write`
============================  ========================================================

Bad input raises a single :class:`AnnotationError` (a ``ValueError``) that says what is
wrong, names the offending rows (first few, with their values, and how many in total)
and says how to fix it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ._common import (  # noqa: F401 - AnnotationError and the helpers below are re-exported
    _CANONICAL_INT,
    _SHOW,
    _SUFFIXES,
    AnnotationError,
    _describe,
    _entries,
    _fail_rows,
    _fits_int64,
    _fmt,
    _is_int_label,
    _MissingFileError,
    _numeric_keys,
    _object_pairs,
    _one_type,
    _Pairs,
    _plural,
    _scalar_values,
    _separator_hint,
    _suffix,
)
from .readers import FileLines, _answers_long, _ids_from_text, _labels_from_text, _read_table, _refuse_missing_value_labels, load_answers_json

__all__ = ["Annotations", "AnnotationError", "row_normalise", "unused_classes_message", "WIDE_LIMIT"]

#: ``to_wide`` and ``padded`` refuse to build a matrix with more entries than this.
WIDE_LIMIT: int = 200_000_000
#: ``padded`` warns above this many entries where they exceed 16 a label.
PADDED_WARN: int = 20_000_000
#: Inferred integer classes ``0..max`` are refused above this many (pass ``classes=``).
_MAX_INFERRED_CLASSES = 10_000
_DUPLICATE_POLICIES = ("error", "first", "last", "keep")
#: A row named in an error message ("row 3 (item='a', ...)"), 0-based.
_ROW = re.compile(r"\brow ([0-9]+) \(")


# ----------------------------------------------------------------------------- helpers


def check_duplicates_policy(duplicates: str) -> None:
    """Raise :class:`AnnotationError` unless ``duplicates`` is one of the policies for
    repeated (item, worker) pairs: error, first, last or keep."""
    if duplicates not in _DUPLICATE_POLICIES:
        raise AnnotationError(f"duplicates={duplicates!r} is not a policy; use one of {', '.join(_DUPLICATE_POLICIES)}.")


def _as_int64(arr: np.ndarray) -> np.ndarray:
    """Integer ids as int64 when every value fits; uint64 values above ``2**63 - 1`` would
    wrap around to negative numbers, so such an array stays uint64."""
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        return arr.astype(np.uint64, copy=False)
    return arr.astype(np.int64, copy=False)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _as_id_array(values: Any, name: str) -> np.ndarray:
    """Original identifiers as a 1-d numpy array with unique entries."""
    if isinstance(values, range):
        arr = np.arange(values.start, values.stop, values.step, dtype=np.int64)
    elif isinstance(values, (pd.Series, pd.Index)):
        arr = values.to_numpy()
    else:
        arr = np.asarray(values)
        if arr.dtype.kind in "US":  # keep python strings, not fixed-width numpy ones
            if not isinstance(values, np.ndarray) and arr.ndim == 1 and not all(isinstance(v, str) for v in values):
                # numpy wrote a list's numbers (and NaN, True) as text, beside the strings: each keeps its type
                arr = pd.Series(list(values), dtype=object).to_numpy()
            else:
                arr = arr.astype(object)
        elif arr.dtype.kind == "f" and arr.ndim == 1 and not isinstance(values, np.ndarray):
            # numpy turns python ints of [2**63, 1] or [-1, 2**63] into float64, which
            # merges distinct ids; pandas keeps them exact (uint64 or python ints)
            given = list(values)
            if any(isinstance(v, int) and not isinstance(v, bool) for v in given):
                arr = pd.Series(given).to_numpy()
    if arr.ndim != 1:
        raise AnnotationError(f"`{name}` must be a 1-d sequence, got shape {arr.shape}.")
    if arr.dtype.kind in "iu":
        arr = _as_int64(arr)
    index = pd.Index(arr)
    if index.hasnans:  # NaN, None, pd.NA: no id (a table's missing ids are refused too); NaN never equals itself
        raise _fail_rows(f"`{name}` holds missing values (NaN/None)", np.flatnonzero(index.isna()), {name: arr},
                         f"Give every entry of `{name}` an id, or leave it out.", what="position")
    if not index.is_unique:
        dup = np.flatnonzero(index.duplicated(keep=False))
        raise _fail_rows(
            f"`{name}` must list each id once; found repeated ids",
            dup,
            {name: arr},
            f"Remove the repeats from `{name}`.",
            what="position",
        )
    return arr


def _factorize(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes (sorted unique order when sortable) and the unique values."""
    codes, uniques = pd.factorize(values, sort=True)
    uniq = uniques.to_numpy() if isinstance(uniques, pd.Index) else np.asarray(uniques)
    if uniq.dtype.kind in "iu":
        uniq = _as_int64(uniq)
    elif uniq.dtype.kind in "US":
        uniq = uniq.astype(object)
    return codes.astype(np.int64, copy=False), uniq


def _type_names(values: Any) -> str:
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    if arr.dtype != object:
        return str(arr.dtype)
    sample = arr[: min(arr.size, 1000)]
    return "/".join(sorted({type(v).__name__ for v in sample})) or "object"


def _integer_values(series: pd.Series, show: Mapping[str, Any] | None = None) -> np.ndarray | None:
    """The values as int64 class indices ``0..max`` if the column holds integers (or
    integral floats), else None.

    Raises for non-integral floats, negative values and values too large to be inferred
    class indices (checked before any cast, so an integer beyond int64 - ``2**70``, a
    uint64 above ``2**63`` or ``1e20`` - is reported as itself, not wrapped around).
    ``show`` names the columns for the error messages. Assumes no missing values.
    """
    dtype = series.dtype
    if show is None:
        show = {"label": series}
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if pd.api.types.is_integer_dtype(dtype):
        v = series.to_numpy()
    elif pd.api.types.is_float_dtype(dtype):
        v = series.to_numpy(dtype=np.float64)
    elif dtype == object and pd.api.types.infer_dtype(series, skipna=False) == "integer":
        v = series.to_numpy()  # python ints, possibly beyond int64
    elif dtype == object and pd.api.types.infer_dtype(
            series, skipna=False) in ("floating", "mixed-integer-float"):
        # numbers in an object column (answers.json {"w": 1.0}, {"w": 1.5}): the same
        # rules as a float column, not class *names* 1.0 / 1.5
        return _integer_values(series.astype(np.float64), show)
    else:
        return None
    _check_class_indices(
        v, show,
        non_integer=("non-integer numeric labels",
                     "Labels must be integer class indices or class names (strings)."),
        negative=("negative labels",
                  ("Integer labels must be class indices 0..K-1; drop rows that encode 'no "
                   "answer' with a negative value, or pass classes=[...].")),
        too_large=("integer labels as large as",
                   "Pass classes=[...] explicitly (or give class names as text)."),
    )
    return v.astype(np.int64)


def _check_class_indices(
    v: np.ndarray,
    where: Mapping[str, Any],
    *,
    non_integer: tuple[str, str],
    negative: tuple[str, str],
    too_large: tuple[str, str] | None,
    what: str = "row",
    number: bool = True,
) -> None:
    """Raise unless the values ``v`` can be inferred class indices: whole numbers (checked
    for float arrays only), none negative and, unless ``too_large`` is None (a declared
    class list), all below :data:`_MAX_INFERRED_CLASSES`.

    Each check is made on the values as given, before any cast (``1e300``, a uint64 above
    ``2**63`` or a python int beyond int64 would wrap around), and raises one
    :func:`_fail_rows` error naming the offending positions of ``v`` with the columns
    ``where``. ``non_integer`` and ``negative`` are ``(problem, fix)``; ``too_large`` is
    ``(subject, fix)``, the problem reading "<subject> <max> would make more than ...".
    ``what`` / ``number`` are passed on to :func:`_fail_rows`.
    """
    if v.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(v) | (v != np.round(v)))
        if bad.size:
            raise _fail_rows(non_integer[0], bad, where, non_integer[1], what=what, number=number)
    neg = np.flatnonzero(v < 0)
    if neg.size:
        raise _fail_rows(negative[0], neg, where, negative[1], what=what, number=number)
    if too_large is not None:
        top = v.max()
        if top >= _MAX_INFERRED_CLASSES:
            raise _fail_rows(
                f"{too_large[0]} {_fmt(top)} would make more than {_MAX_INFERRED_CLASSES} "
                "classes (0..max), the most allowed without a declared class list",
                np.flatnonzero(v >= _MAX_INFERRED_CLASSES), where, too_large[1],
                what=what, number=number,
            )


def _parquet_typed(col: pd.Series) -> bool:
    """Whether Parquet can store an object column as it is (one type; ints within int64)."""
    kind = pd.api.types.infer_dtype(col, skipna=False)
    if kind == "integer":
        return _fits_int64(col)
    return kind in ("string", "floating", "boolean", "bytes")


def _lookup(ids: np.ndarray, values: pd.Series) -> np.ndarray:
    """int64 positions of ``values`` in the declared ``ids`` (``-1`` where absent).

    A value that does not match by value and type is looked up by its text, so ``"17"``
    read from a file finds the declared id ``17`` and the label ``1`` finds the class
    ``"1"`` (only when the declared ids' texts are distinct; ``1.0`` is ``"1.0"``, not
    ``"1"``). The text pass runs only for the values that did not match."""
    codes = pd.Index(ids).get_indexer(values).astype(np.int64, copy=False)
    miss = codes < 0
    if miss.any():
        text = pd.Index([str(v) for v in ids.tolist()])
        if text.is_unique:
            codes = codes.copy()
            codes[miss] = text.get_indexer([str(v) for v in values[miss].tolist()])
    return codes


def _index_array(values: Any, name: str) -> np.ndarray:
    """A 1-d int64 array of dense indices from array-like input (for the constructor)."""
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    if arr.ndim != 1:
        raise AnnotationError(f"`{name}` must be a 1-d array, got shape {arr.shape}.")
    kind = arr.dtype.kind
    if kind == "f":
        nan = np.flatnonzero(~np.isfinite(arr))
        if nan.size:
            raise _fail_rows(
                f"NaN/inf in `{name}`", nan, {name: arr},
                "Drop those annotations first.", what="position",
            )
    if kind in "uf":  # (int64 holds every int64 value; uint64 and floats may not fit)
        beyond = arr > np.iinfo(np.int64).max if kind == "u" else np.abs(arr) >= 2.0**63
        big = np.flatnonzero(beyond)
        if big.size:
            raise _fail_rows(
                f"values beyond int64 in `{name}`", big, {name: arr},
                "Dense indices must lie in 0..n-1.", what="position",
            )
    if kind in "iu":
        return np.array(arr, dtype=np.int64, copy=True)
    if kind == "f":
        bad = np.flatnonzero(arr != np.round(arr))
        if bad.size:
            raise _fail_rows(
                f"non-integer values in `{name}`", bad, {name: arr},
                "The constructor takes dense integer indices; use Annotations.from_long "
                "for arbitrary ids or labels.", what="position",
            )
        return arr.astype(np.int64)
    if kind == "O" and arr.size and pd.api.types.infer_dtype(arr, skipna=False) == "integer":
        return arr.astype(np.int64)
    raise AnnotationError(
        f"`{name}` must hold integer dense indices, got dtype {arr.dtype}. "
        "Use Annotations.from_long(df) to map arbitrary ids/labels to dense indices."
    )


def _check_range(
    arr: np.ndarray, low: int, high: int, problem: str, where: Mapping[str, Any], fix: str,
    what: str = "row",
) -> None:
    """The one range check of dense index arrays (the constructor's item / worker / label,
    ``subset_items``' indices, ``empirical_confusion``'s ``y_true``): raise one
    :func:`_fail_rows` error naming every position of the int64 array ``arr`` (already
    through :func:`_index_array`) outside ``low..high-1``."""
    bad = np.flatnonzero((arr < low) | (arr >= high))
    if bad.size:
        raise _fail_rows(problem, bad, where, fix, what=what)


# -------------------------------------------------------------------------- the class


class Annotations:
    """Validated sparse crowd labels: ``A`` annotations of ``n_items`` items by ``n_workers``
    workers into ``n_classes`` classes.

    Attributes (read-only):
        item: ``(A,)`` int64, dense item index in ``0..n_items-1``.
        worker: ``(A,)`` int64, dense worker index in ``0..n_workers-1``.
        label: ``(A,)`` int64, dense class index in ``0..n_classes-1``.
        item_ids: ``(n_items,)`` original item ids (``item_ids[item[a]]`` is the id).
        worker_ids: ``(n_workers,)`` original worker ids.
        classes: ``(n_classes,)`` original label values / class names.

    Items, workers and classes with no annotation are allowed (e.g. rows of a feature
    matrix that nobody labelled, or a class nobody chose).

    Constructor: ``Annotations(item, worker, label, n_items=None, ...)`` takes *dense
    indices* and validates them (integers, in range, equal lengths, non-empty). Sizes
    default to ``max + 1`` (or ``len(ids)`` when ids are given) and ids default to
    ``np.arange``. Use :meth:`from_long`, :meth:`from_wide`, :meth:`from_answers_json` or
    :meth:`read` for data with arbitrary ids.

    Duplicate policy: a duplicate is a second annotation for the same (item, worker)
    pair. The readers take ``duplicates=``:

    * ``"error"`` (default): raise :class:`AnnotationError` naming the offending rows;
    * ``"first"`` / ``"last"``: keep only the first / last row of each pair (in input
      order);
    * ``"keep"``: keep every row (as crowd-kit does; needed to reproduce its results on
      data sets that contain duplicates).

    The dense-index constructor does not check for duplicates (it behaves like
    ``"keep"``); :attr:`has_duplicates` tells. :meth:`to_wide` and
    :meth:`to_answers_json` cannot represent duplicates and raise on them.

    Annotation order is the input order (after duplicate removal) and is preserved by
    every method except :meth:`sorted`. Two objects compare equal (``==``) when all
    arrays, sizes and ids are equal, in the same order.

    Instances are immutable: the arrays are read-only and attributes cannot be set.
    """

    __slots__ = (
        "_item", "_worker", "_label", "_n_items", "_n_workers", "_n_classes",
        "_item_ids", "_worker_ids", "_classes", "_frozen",
    )

    # ------------------------------------------------------------------ construction

    def __init__(
        self,
        item: Any,
        worker: Any,
        label: Any,
        n_items: int | None = None,
        n_workers: int | None = None,
        n_classes: int | None = None,
        item_ids: Any = None,
        worker_ids: Any = None,
        classes: Any = None,
    ) -> None:
        it = _index_array(item, "item")
        wk = _index_array(worker, "worker")
        lb = _index_array(label, "label")
        if not (it.size == wk.size == lb.size):
            raise AnnotationError(
                f"`item`, `worker` and `label` must have the same length; got "
                f"{it.size}, {wk.size} and {lb.size}. Pass one entry per annotation to each."
            )
        if it.size == 0:
            raise AnnotationError(
                "no annotations: `item`, `worker` and `label` are empty. "
                "An Annotations object needs at least one annotation."
            )
        ids = {}
        sizes = {}
        for name, arr, n, id_name, id_values in (
            ("item", it, n_items, "item_ids", item_ids),
            ("worker", wk, n_workers, "worker_ids", worker_ids),
            ("label", lb, n_classes, "classes", classes),
        ):
            size_name = {"item": "n_items", "worker": "n_workers", "label": "n_classes"}[name]
            id_arr = None if id_values is None else _as_id_array(id_values, id_name)
            origin = ""
            if n is None:
                n = int(arr.max()) + 1 if id_arr is None else int(id_arr.size)
                if id_arr is not None:
                    origin = f", taken from len({id_name})"
            n = int(n)
            if id_arr is not None and id_arr.size != n:
                raise AnnotationError(
                    f"`{id_name}` has {id_arr.size} entries but {size_name}={n}; "
                    f"give exactly one id per {name if name != 'label' else 'class'}."
                )
            _check_range(
                arr, 0, n,
                f"`{name}` index out of range 0..{n - 1} ({size_name}={n}{origin})",
                {"item": it, "worker": wk, "label": lb},
                f"Dense indices must lie in 0..{size_name}-1; pass a larger "
                f"{size_name} or use Annotations.from_long for arbitrary ids.",
                what="annotation",
            )
            sizes[name] = n
            ids[name] = id_arr if id_arr is not None else np.arange(n, dtype=np.int64)
        self._init(
            it, wk, lb, sizes["item"], sizes["worker"], sizes["label"],
            ids["item"], ids["worker"], ids["label"],
        )

    def _init(self, item, worker, label, n_items, n_workers, n_classes,
              item_ids, worker_ids, classes) -> None:
        object.__setattr__(self, "_frozen", False)
        self._item = _readonly(item)
        self._worker = _readonly(worker)
        self._label = _readonly(label)
        self._n_items = int(n_items)
        self._n_workers = int(n_workers)
        self._n_classes = int(n_classes)
        self._item_ids = _readonly(item_ids)
        self._worker_ids = _readonly(worker_ids)
        self._classes = _readonly(classes)
        self._frozen = True

    @classmethod
    def _new(cls, item, worker, label, n_items, n_workers, n_classes,
             item_ids, worker_ids, classes) -> "Annotations":
        """Build from already-validated arrays (no checks, no copies; may be empty)."""
        obj = cls.__new__(cls)
        obj._init(
            np.asarray(item, dtype=np.int64), np.asarray(worker, dtype=np.int64),
            np.asarray(label, dtype=np.int64), n_items, n_workers, n_classes,
            item_ids, worker_ids, classes,
        )
        return obj

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("Annotations objects are immutable")
        object.__setattr__(self, name, value)

    def __reduce__(self):
        return (
            Annotations._new,
            (np.array(self._item), np.array(self._worker), np.array(self._label),
             self._n_items, self._n_workers, self._n_classes,
             np.array(self._item_ids), np.array(self._worker_ids), np.array(self._classes)),
        )

    # ------------------------------------------------------------------ readers

    @classmethod
    def from_long(
        cls,
        df: Any,
        item: str = "item",
        worker: str = "worker",
        label: str = "label",
        classes: Sequence[Any] | None = None,
        items: Sequence[Any] | None = None,
        duplicates: str = "error",
        workers: Sequence[Any] | None = None,
    ) -> "Annotations":
        """Build from a long table with one row per annotation.

        Args:
            df: DataFrame (or anything ``pd.DataFrame`` accepts) with item, worker and
                label columns. crowd-kit's ``task`` column is accepted in place of
                ``item`` automatically.
            item, worker, label: column names.
            classes: declared class list (label values or names); labels outside it are
                an error and ``label`` indices follow its order. Default: for integer
                labels ``0..max`` (a class nobody chose is still a class); otherwise
                the sorted unique values.
            items: known item ids (e.g. the rows of a feature matrix). Item indices then
                follow this order, ``n_items = len(items)`` (items without labels are
                allowed), and annotations naming an item not in ``items`` are an error.
                Default: sorted unique item ids of the table.
            duplicates: ``"error"``, ``"first"``, ``"last"`` or ``"keep"`` (see class
                docstring).
            workers: known worker ids, like ``items`` (extension; default: sorted
                unique worker ids of the table).

        A column that mixes ints and strings is taken as ints when every value is an
        integer (``1`` and ``"1"`` are one id or one class) and as text otherwise.
        Declared ``items``, ``workers`` and ``classes`` match the table by value, then
        by text (``"17"`` read from a file finds the declared id ``17``).

        Row numbers in error messages are 0-based positions in the table (header
        excluded); for a table as :func:`~kdcrowd.data.readers.read_annotation_frame`
        read it from a CSV/TSV file they are the file's line numbers.
        """
        try:
            return cls._from_long_table(df, item, worker, label, classes, items, duplicates, workers)
        except AnnotationError as exc:
            lines = df.attrs.get("lines") if isinstance(df, pd.DataFrame) else None
            at = lines.of(df) if isinstance(lines, FileLines) else None
            if at is not None:  # "row 3 (item=...)" -> "line 5 (item=...)"
                exc.args = (_ROW.sub(lambda m: f"line {at[int(m[1])]} (", str(exc)),)
            raise

    @classmethod
    def _from_long_table(cls, df: Any, item: str, worker: str, label: str, classes: Sequence[Any] | None,
                         items: Sequence[Any] | None, duplicates: str, workers: Sequence[Any] | None) -> "Annotations":
        """:meth:`from_long`, its errors naming rows by their 0-based positions."""
        check_duplicates_policy(duplicates)
        if not isinstance(df, pd.DataFrame):
            try:
                df = pd.DataFrame(df)
            except Exception as exc:  # noqa: BLE001
                raise AnnotationError(
                    f"cannot read a long table from {type(df).__name__}: {exc}. "
                    "Pass a pandas DataFrame with item, worker and label columns."
                ) from exc
        item_col = item
        if item_col not in df.columns and item == "item" and "task" in df.columns:
            item_col = "task"
        missing = [c for c in (item_col, worker, label) if c not in df.columns]
        if missing:
            raise AnnotationError(
                f"missing column(s) {missing}; found columns {list(map(str, df.columns))}. "
                "Accepted names: item (or crowd-kit's task), worker, label; name other "
                "columns with from_long(df, item=..., worker=..., label=...)."
                + _separator_hint(list(df.columns))
            )
        if len(df) == 0:
            raise AnnotationError(
                "no annotations: the table has 0 rows. Provide at least one "
                "(item, worker, label) row."
            )
        it_s: pd.Series = df[item_col]
        wk_s: pd.Series = df[worker]
        lb_s: pd.Series = df[label]
        if any(isinstance(s, pd.DataFrame) for s in (it_s, wk_s, lb_s)):
            raise AnnotationError(
                f"duplicate column names in the table: {list(map(str, df.columns))}. "
                "Rename the columns so item, worker and label each appear once."
            )
        show = {"item": it_s, "worker": wk_s, "label": lb_s}
        for name, s in (("item", it_s), ("worker", wk_s), ("label", lb_s)):
            _scalar_values(s, name, show)

        na = it_s.isna().to_numpy() | wk_s.isna().to_numpy() | lb_s.isna().to_numpy()
        if na.any():
            cols = [n for n, s in (("item", it_s), ("worker", wk_s), ("label", lb_s))
                    if s.isna().any()]
            raise _fail_rows(
                f"missing values (NaN/None) in column(s) {cols}",
                np.flatnonzero(na),
                show,
                "Drop those rows (df.dropna()) or fill them in; a missing label is "
                "expressed by leaving the row out.",
            )
        # 1 and "1" are one id / one class, not two
        it_s, wk_s, lb_s = _one_type(it_s), _one_type(wk_s), _one_type(lb_s)

        # labels -> class indices
        if classes is None:
            ints = _integer_values(lb_s, show)
            if ints is not None:
                k = int(ints.max()) + 1
                lab = ints
                class_arr = np.arange(k, dtype=np.int64)
            else:
                lab, class_arr = _factorize(lb_s)
        else:
            class_arr = _as_id_array(classes, "classes")
            if class_arr.size == 0:
                raise AnnotationError("`classes` is empty; declare at least one class.")
            lab = _lookup(class_arr, lb_s)
            bad = np.flatnonzero(lab < 0)
            if bad.size:
                hint = ""
                if bad.size == lab.size:
                    hint = (f" No label matched: the labels are {_type_names(lb_s)}, the "
                            f"classes are {_type_names(class_arr)}.")
                declared = ", ".join(_fmt(c) for c in class_arr[:20])
                more = ", ..." if class_arr.size > 20 else ""
                raise _fail_rows(
                    f"labels outside the declared classes [{declared}{more}]",
                    bad, show,
                    "Add the missing classes to `classes`, or drop those rows." + hint,
                )

        # items / workers -> dense indices
        def dense(series: pd.Series, known: Any, name: str, plural: str):
            if known is None:
                return _factorize(series)
            ids = _as_id_array(known, plural)
            codes = _lookup(ids, series)
            bad = np.flatnonzero(codes < 0)
            if bad.size:
                hint = ""
                if bad.size == codes.size:
                    hint = (f" No {name} matched: the annotation ids are "
                            f"{_type_names(series)}, `{plural}` holds {_type_names(ids)}.")
                what = ("annotations for items that have no features (item ids not in "
                        "`items`)" if name == "item" else
                        "annotations by workers not in `workers`")
                raise _fail_rows(
                    what, bad, show,
                    f"Add those ids to `{plural}` or drop the rows." + hint,
                )
            return codes, ids

        it, item_ids = dense(it_s, items, "item", "items")
        wk, worker_ids = dense(wk_s, workers, "worker", "workers")
        n_items, n_workers = int(item_ids.size), int(worker_ids.size)

        if duplicates != "keep":
            key = pd.Series(it * n_workers + wk)
            if duplicates == "error":
                dup = key.duplicated(keep=False).to_numpy()
                if dup.any():
                    rows = np.flatnonzero(dup)
                    rows = rows[np.argsort(key.to_numpy()[rows], kind="stable")]
                    n_pairs = int(pd.unique(key.to_numpy()[rows]).size)
                    raise _fail_rows(
                        f"duplicate (item, worker) pairs ({_plural(n_pairs, 'pair')} labelled "
                        "more than once)",
                        rows, show,
                        "Pass duplicates='first' or 'last' to keep one label per pair, "
                        "or duplicates='keep' to keep them all.",
                    )
            else:
                keep = ~key.duplicated(keep=duplicates).to_numpy()
                if not keep.all():
                    it, wk, lab = it[keep], wk[keep], lab[keep]

        return cls._new(
            np.ascontiguousarray(it), np.ascontiguousarray(wk), np.ascontiguousarray(lab),
            n_items, n_workers, int(class_arr.size), item_ids, worker_ids, class_arr,
        )

    @classmethod
    def from_wide(
        cls,
        matrix: Any,
        missing: float = -1,
        classes: Sequence[Any] | None = None,
        item_ids: Any = None,
        worker_ids: Any = None,
    ) -> "Annotations":
        """Build from a dense ``(N, M)`` matrix (cleanlab's format).

        Entry ``[i, m]`` is worker ``m``'s label for item ``i`` as a *class index*
        ``0..K-1``; ``missing`` (default ``-1``) and NaN mean "no label". Every row is an
        item and every column a worker, even when empty (so ``n_items = N``,
        ``n_workers = M``). ``classes`` names the ``K`` class indices (default
        ``0..max``). For a DataFrame, ``item_ids`` / ``worker_ids`` default to its index
        and columns. Annotations come out item-major (row by row).
        """
        if isinstance(matrix, pd.DataFrame):
            if item_ids is None:
                item_ids = matrix.index.to_numpy()
            if worker_ids is None:
                worker_ids = matrix.columns.to_numpy()
            if all(pd.api.types.is_integer_dtype(t) and not isinstance(t, pd.api.extensions.ExtensionDtype)
                   for t in matrix.dtypes):
                arr = matrix.to_numpy()
            else:
                try:
                    arr = matrix.to_numpy(dtype=np.float64, na_value=np.nan)
                except (TypeError, ValueError) as exc:
                    raise AnnotationError(
                        f"wide matrix must be numeric class indices: {exc}. Use "
                        "from_long for labels given as names."
                    ) from exc
        else:
            arr = np.asarray(matrix)
        if arr.ndim != 2:
            raise AnnotationError(
                f"wide matrix must be 2-d (items x workers), got shape {arr.shape}."
            )
        kind = arr.dtype.kind
        if kind == "O":
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise AnnotationError(
                    f"wide matrix must be numeric class indices: {exc}. Use from_long "
                    "for labels given as names."
                ) from exc
            kind = "f"
        if kind not in "iuf":
            raise AnnotationError(
                f"wide matrix must hold integer class indices, got dtype {arr.dtype}."
            )
        n_items, n_workers = arr.shape
        miss_nan = missing is None or (np.ndim(missing) == 0 and bool(pd.isna(missing)))  # None, NaN, pd.NA, NaT
        if kind == "f":
            mask = ~np.isnan(arr)
            if not miss_nan:
                mask &= arr != missing
        else:
            mask = np.ones(arr.shape, dtype=bool) if miss_nan else arr != missing
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            raise AnnotationError(
                f"no annotations: every entry of the {n_items}x{n_workers} matrix is "
                f"missing (missing={missing!r} or NaN). Check the `missing` value."
            )
        vals = arr[rows, cols]
        where = {"row": rows, "column": cols, "value": vals}
        _check_class_indices(
            vals, where,
            non_integer=("non-integer values in the wide matrix",
                         f"Entries must be integer class indices, {missing!r} or NaN (missing)."),
            negative=(f"negative values other than missing={missing!r}",
                      ("Entries must be class indices 0..K-1; pass missing=<your code for no "
                       "label>.")),
            too_large=None if classes is not None else (
                "the largest entry", "Pass classes=[...] explicitly (or check `missing`)."),
            what="entry", number=False,
        )
        if classes is None:
            class_arr = np.arange(int(vals.max()) + 1, dtype=np.int64)
        else:
            class_arr = _as_id_array(classes, "classes")
            big = np.flatnonzero(vals >= class_arr.size)
            if big.size:
                raise _fail_rows(
                    f"class indices >= len(classes)={class_arr.size}", big, where,
                    "In the wide format entries are class indices and `classes` names "
                    "them; declare all classes.", what="entry", number=False,
                )
        vals = vals.astype(np.int64)

        def ids(values, n, name):
            if values is None:
                return np.arange(n, dtype=np.int64)
            a = _as_id_array(values, name)
            if a.size != n:
                raise AnnotationError(
                    f"`{name}` has {a.size} entries but the matrix has {n} "
                    f"{'rows' if name == 'item_ids' else 'columns'}; give one id per "
                    f"{'row' if name == 'item_ids' else 'column'}."
                )
            return a

        return cls._new(
            rows.astype(np.int64), cols.astype(np.int64), vals,
            n_items, n_workers, int(class_arr.size),
            ids(item_ids, n_items, "item_ids"), ids(worker_ids, n_workers, "worker_ids"),
            class_arr,
        )

    @classmethod
    def from_answers_json(
        cls,
        obj_or_path: Any,
        classes: Sequence[Any] | None = None,
        duplicates: str = "error",
    ) -> "Annotations":
        """Build from peerannot's ``answers.json``: ``{item: {worker: label}}``.

        ``obj_or_path`` is the parsed dict or a path (``.json`` / ``.json.gz``). Keys
        that are all canonical integer strings (``"0"``, ``"17"``) become ints, at
        each level separately, unless one of them does not fit int64; so do such label
        strings, also when mixed with int labels (``1`` and ``"1"`` are one class). Item order follows the keys
        of the JSON (items with ``{}`` are kept, with no labels); workers are sorted.
        A key repeated in a file (which ``json.load`` would silently collapse to its
        last value) keeps every annotation it lists: a repeated item gathers the
        workers of all its entries, and a worker repeated within an item is a duplicate
        (item, worker) pair, handled by ``duplicates`` as in :meth:`from_long`.
        """
        obj = load_answers_json(obj_or_path) if isinstance(obj_or_path, (str, os.PathLike)) else obj_or_path
        df, items = _answers_long(obj)
        return cls.from_long(df, classes=classes, items=items, duplicates=duplicates)

    @classmethod
    def read(cls, path: str | os.PathLike, **kw: Any) -> "Annotations":
        """Read a file, dispatching on its suffix.

        ``.csv``, ``.csv.gz``, ``.tsv``, ``.tsv.gz``, ``.parquet`` / ``.pq`` (long
        tables, read with :meth:`from_long`; ``kw`` is passed on) and ``.json`` /
        ``.json.gz`` (peerannot answers, :meth:`from_answers_json`; ``kw`` may hold
        ``classes`` and ``duplicates``).

        In CSV/TSV files item and worker ids are read as text (spaces around them
        removed; only an empty field is missing, so a worker ``NA`` is the text ``"NA"``)
        and become int64 when every id of the column is a canonical integer, as in
        answers.json: ``17`` is 17, but ``0017``, ``1e5`` and an integer beyond int64
        keep every id of their column as text. Labels are numbers when every label is a
        number written canonically (``NA``, ``null`` ... then missing), otherwise class
        names: ``01`` and ``02`` are two classes, as the command line reads them; a label
        ``NA``, ``nan``, ``None`` ... (how R's write.csv writes a missing one) among class
        names is refused unless ``classes`` declares it.
        """
        path = Path(path)
        suffix = _suffix(path)
        if not suffix:
            raise AnnotationError(
                f"cannot tell the format of {path.name!r} from its suffix; supported: "
                f"{_SUFFIXES}. Or load it yourself and call Annotations.from_long / "
                "from_wide / from_answers_json."
            )
        if not path.exists():
            raise _MissingFileError(
                f"annotation file not found: {path} (absolute: {path.absolute()}); check the "
                "path"
            )
        if suffix in (".json", ".json.gz"):
            return cls.from_answers_json(path, **kw)
        item, worker = kw.get("item", "item"), kw.get("worker", "worker")
        label = kw.get("label", "label")
        ids = (item, worker) + (("task",) if item == "item" else ())
        df = _read_table(path, "annotation file", text_columns=ids + (label,))
        if suffix not in (".parquet", ".pq"):
            for col in ids:
                if col in df.columns and not isinstance(df[col], pd.DataFrame):
                    df[col] = _ids_from_text(df[col])
            if label in df.columns and not isinstance(df[label], pd.DataFrame):
                df[label] = _labels_from_text(df[label])
                _refuse_missing_value_labels(df[label], kw.get("classes"), path, None, AnnotationError)
                if df[label].dtype == object and df[label].dropna().isin(("True", "False")).all() and df[label].notna().any():
                    df[label] = df[label].map({"True": True, "False": False})  # what write() makes of bool labels
        return cls.from_long(df, **kw)

    # ------------------------------------------------------------------ writers

    def to_long(self, original_ids: bool = True) -> pd.DataFrame:
        """DataFrame ``(A, 3)`` with columns ``item, worker, label``: original ids and label
        values (``original_ids=True``) or dense indices."""
        if not original_ids:
            return pd.DataFrame({"item": self._item, "worker": self._worker,
                                 "label": self._label})
        return pd.DataFrame({
            "item": self._item_ids[self._item],
            "worker": self._worker_ids[self._worker],
            "label": self._classes[self._label],
        })

    def to_crowdkit(self) -> pd.DataFrame:
        """DataFrame ``(A, 3)`` with crowd-kit's columns ``task, worker, label`` (original ids)."""
        return self.to_long(original_ids=True).rename(columns={"item": "task"})

    def to_wide(self, missing: float = -1) -> np.ndarray:
        """Dense ``(n_items, n_workers)`` matrix of class *indices*, ``missing`` where no label.

        int64 unless ``missing`` is NaN (then float64). Refuses more than
        :data:`WIDE_LIMIT` entries and duplicate (item, worker) pairs.
        """
        size = self._n_items * self._n_workers
        if size > WIDE_LIMIT:
            raise AnnotationError(
                f"to_wide would build a {self._n_items} x {self._n_workers} matrix "
                f"({size:.3g} entries > limit {WIDE_LIMIT:.3g}). Use the sparse arrays or "
                "padded() instead."
            )
        self._refuse_duplicates("to_wide")
        is_nan = missing is None or bool(pd.isna(missing))  # NaN of any float type, pd.NA
        if is_nan:
            out = np.full((self._n_items, self._n_workers), np.nan)
        else:
            out = np.full((self._n_items, self._n_workers), missing, dtype=np.int64)
        out[self._item, self._worker] = self._label
        return out

    def to_answers_json(self, path: str | os.PathLike | None = None) -> dict:
        """peerannot's ``{item_id: {worker_id: label_value}}`` with every item (empty dict for
        unlabelled items) in dense order; writes it to ``path`` if given (``.json`` or
        ``.json.gz``). Keys are python ints/strs (JSON turns them into strings)."""
        self._refuse_duplicates("to_answers_json")
        order = np.argsort(self._item, kind="stable")
        counts = self.labels_per_item()
        bounds = np.concatenate(([0], np.cumsum(counts))).tolist()
        workers = self._worker_ids[self._worker[order]].tolist()
        labels = self._classes[self._label[order]].tolist()
        out: dict = {}
        for i, key in enumerate(self._item_ids.tolist()):
            s, e = bounds[i], bounds[i + 1]
            out[key] = dict(zip(workers[s:e], labels[s:e]))
        if path is not None:
            path = Path(path)
            opener = gzip.open if path.name.lower().endswith(".gz") else open
            with opener(path, "wt", encoding="utf-8") as fh:
                json.dump(out, fh)
        return out

    def write(self, path: str | os.PathLike) -> None:
        """Write by suffix: ``.csv[.gz]``, ``.tsv[.gz]``, ``.parquet``/``.pq`` (long table of
        original ids) or ``.json[.gz]`` (answers JSON). Items, workers and classes
        with no annotation are not stored by the long formats (pass ``items=`` /
        ``classes=`` to :meth:`read` to restore them). Parquet columns have one type:
        ids or labels of mixed types, or integers beyond int64, are written as text."""
        path = Path(path)
        suffix = _suffix(path)
        if not suffix:
            raise AnnotationError(
                f"cannot tell the format of {path.name!r} from its suffix; supported: "
                f"{_SUFFIXES}."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix in (".json", ".json.gz"):
            self.to_answers_json(path)
        elif suffix in (".parquet", ".pq"):
            df = self.to_long()
            for col in df.columns:
                if df[col].dtype == object and not _parquet_typed(df[col]):
                    df[col] = df[col].map(str)
            df.to_parquet(path, index=False)
        else:
            self.to_long().to_csv(path, index=False,
                                  sep="\t" if suffix.startswith(".tsv") else ",")

    def to_torch(self, device: Any = None, padded: bool = False) -> dict:
        """Long tensors on ``device``: ``{"item", "worker", "label"}`` each ``(A,)``, or with
        ``padded=True`` ``{"workers", "labels"}`` each ``(n_items, L)`` (see :meth:`padded`)."""
        import torch

        if padded:
            w, l = self.padded()
            return {"workers": torch.as_tensor(w, device=device),
                    "labels": torch.as_tensor(l, device=device)}
        return {
            "item": torch.as_tensor(np.array(self._item), device=device),
            "worker": torch.as_tensor(np.array(self._worker), device=device),
            "label": torch.as_tensor(np.array(self._label), device=device),
        }

    # ------------------------------------------------------------------ properties

    @property
    def item(self) -> np.ndarray:
        """``(A,)`` int64 dense item indices."""
        return self._item

    @property
    def worker(self) -> np.ndarray:
        """``(A,)`` int64 dense worker indices."""
        return self._worker

    @property
    def label(self) -> np.ndarray:
        """``(A,)`` int64 dense class indices."""
        return self._label

    @property
    def n_items(self) -> int:
        return self._n_items

    @property
    def n_workers(self) -> int:
        return self._n_workers

    @property
    def n_classes(self) -> int:
        return self._n_classes

    @property
    def item_ids(self) -> np.ndarray:
        """``(n_items,)`` original item ids."""
        return self._item_ids

    @property
    def worker_ids(self) -> np.ndarray:
        """``(n_workers,)`` original worker ids."""
        return self._worker_ids

    @property
    def classes(self) -> np.ndarray:
        """``(n_classes,)`` original label values / class names."""
        return self._classes

    @property
    def n_annotations(self) -> int:
        return int(self._item.size)

    def __len__(self) -> int:
        return int(self._item.size)

    @property
    def has_duplicates(self) -> bool:
        """Whether some (item, worker) pair has more than one annotation."""
        key = self._item * self._n_workers + self._worker
        return bool(pd.Series(key).duplicated().any())

    def _refuse_duplicates(self, what: str) -> None:
        if self.has_duplicates:
            key = pd.Series(self._item * self._n_workers + self._worker)
            rows = np.flatnonzero(key.duplicated(keep=False).to_numpy())
            raise _fail_rows(
                f"{what} cannot represent duplicate (item, worker) pairs", rows,
                {"item": self._item_ids[self._item], "worker": self._worker_ids[self._worker],
                 "label": self._classes[self._label]},
                "Rebuild with duplicates='first' or 'last'.", what="annotation",
            )

    def __repr__(self) -> str:
        return (f"Annotations(n_annotations={self.n_annotations}, n_items={self._n_items}, "
                f"n_workers={self._n_workers}, n_classes={self._n_classes})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Annotations):
            return NotImplemented
        return (
            self._n_items == other._n_items
            and self._n_workers == other._n_workers
            and self._n_classes == other._n_classes
            and np.array_equal(self._item, other._item)
            and np.array_equal(self._worker, other._worker)
            and np.array_equal(self._label, other._label)
            and _ids_equal(self._item_ids, other._item_ids)
            and _ids_equal(self._worker_ids, other._worker_ids)
            and _ids_equal(self._classes, other._classes)
        )

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ statistics

    def labels_per_item(self) -> np.ndarray:
        """``(n_items,)`` int64 number of annotations of each item."""
        return np.bincount(self._item, minlength=self._n_items).astype(np.int64)

    def labels_per_worker(self) -> np.ndarray:
        """``(n_workers,)`` int64 number of annotations by each worker."""
        return np.bincount(self._worker, minlength=self._n_workers).astype(np.int64)

    def vote_counts(self) -> np.ndarray:
        """``(n_items, n_classes)`` int64: how many annotations gave each class to each item."""
        k = self._n_classes
        flat = np.bincount(self._item * k + self._label, minlength=self._n_items * k)
        return flat.reshape(self._n_items, k).astype(np.int64)

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """Item-major padded arrays ``(workers, labels)``, each int64 ``(n_items, L)``.

        Row ``i`` lists the worker indices and class indices of item ``i``'s
        annotations (in annotation order), then ``-1`` padding. ``L`` is the largest
        number of annotations on one item (at least 1). Memory is ``N*L``, not ``N*M``; where
        one item has far more labels than the rest (a control question every worker answered),
        ``N*L`` far exceeds the annotations: an :class:`~kdcrowd.data.readers.InputWarning`
        says so above :data:`PADDED_WARN` entries and 16 a label, and above :data:`WIDE_LIMIT`
        entries this refuses, naming the item.
        """
        counts = self.labels_per_item()
        width = max(int(counts.max()) if counts.size else 0, 1)
        size = self._n_items * width
        if size > PADDED_WARN and size > 16 * max(1, len(self)):  # the layout, not the annotations, takes the memory
            heavy = _fmt(self._item_ids[int(np.argmax(counts))])
            what = (f"the crowd models keep each item's labels in a row as wide as the most labelled item's: item "
                    f"{heavy} has {width} labels where the median item has {int(np.median(counts))}, so the "
                    f"{self._n_items} items take {self._n_items} x {width} entries ({2 * 8 * size / 1e9:.1f} GB) for {len(self)} labels")
            fix = ("remove that item's labels if it is a control question (give its answer as a gold question: --gold), or "
                   "aggregate first (method 'ds' or 'mv', which do not keep them)")
            if size > WIDE_LIMIT:
                raise AnnotationError(f"{what}, more than kdcrowd builds ({WIDE_LIMIT} entries); {fix}")
            from .readers import InputWarning

            warnings.warn(f"{what}; {fix}", InputWarning, stacklevel=2)
        order = np.argsort(self._item, kind="stable")
        it = self._item[order]
        starts = np.cumsum(counts) - counts
        rank = np.arange(it.size, dtype=np.int64) - starts[it]
        workers = np.full((self._n_items, width), -1, dtype=np.int64)
        labels = np.full((self._n_items, width), -1, dtype=np.int64)
        workers[it, rank] = self._worker[order]
        labels[it, rank] = self._label[order]
        return workers, labels

    def empirical_confusion(self, y_true: Any) -> np.ndarray:
        """``(n_workers, n_classes, n_classes)`` int64 counts: ``[m, k, j]`` = number of items of
        true class ``k`` that worker ``m`` labelled ``j``.

        ``y_true``: ``(n_items,)`` true class indices; ``-1`` marks items with unknown
        truth (their annotations are skipped). Use :func:`row_normalise` to turn the
        counts into row-stochastic matrices with a mask of rows that have data.
        """
        y = np.asarray(y_true)
        if y.shape != (self._n_items,):
            raise AnnotationError(
                f"y_true must have shape (n_items,) = ({self._n_items},), got {y.shape}."
            )
        y = _index_array(y, "y_true")
        _check_range(y, -1, self._n_classes,
                     f"y_true outside 0..{self._n_classes - 1} (or -1 for unknown)",
                     {"y_true": y}, "Pass true class indices.", what="item")
        from .confusion import confusion

        return confusion((self._item, self._worker, self._label), y, n_workers=self._n_workers, n_classes=self._n_classes)

    @staticmethod
    def row_normalise(counts: Any, fill: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
        """Same as the module-level :func:`row_normalise`."""
        return row_normalise(counts, fill)

    # ------------------------------------------------------------------ transforms

    def subset_items(self, idx: Any) -> "Annotations":
        """Restrict to the items ``idx`` (dense indices, or a boolean mask of length
        ``n_items``), reindexed ``0..len(idx)-1`` in the given order.

        Worker indices, ``n_workers``, ``worker_ids`` and ``classes`` are kept, so worker
        identities stay comparable. The result may hold zero annotations (if no chosen
        item has labels).
        """
        sel = np.asarray(idx)
        if sel.dtype == bool:
            if sel.shape != (self._n_items,):
                raise AnnotationError(
                    f"boolean mask must have shape ({self._n_items},), got {sel.shape}."
                )
            sel = np.flatnonzero(sel)
        sel = _index_array(sel.reshape(-1) if sel.ndim == 0 else sel, "idx") \
            if sel.size else np.zeros(0, dtype=np.int64)
        _check_range(sel, 0, self._n_items, f"item indices outside 0..{self._n_items - 1}",
                     {"idx": sel}, "Pass dense item indices.", what="position")
        new = np.full(self._n_items, -1, dtype=np.int64)
        new[sel] = np.arange(sel.size, dtype=np.int64)
        if np.count_nonzero(new >= 0) != sel.size:
            dup = np.flatnonzero(pd.Series(sel).duplicated(keep=False).to_numpy())
            raise _fail_rows("repeated item indices", dup, {"idx": sel},
                             "Pass each item once.", what="position")
        mapped = new[self._item]
        keep = mapped >= 0
        return Annotations._new(
            mapped[keep], self._worker[keep], self._label[keep],
            sel.size, self._n_workers, self._n_classes,
            self._item_ids[sel], self._worker_ids, self._classes,
        )

    def sorted(self) -> "Annotations":
        """A copy with annotations ordered by (item, worker, label) - a canonical order for
        comparing objects built from different formats."""
        order = np.lexsort((self._label, self._worker, self._item))
        return Annotations._new(
            self._item[order], self._worker[order], self._label[order],
            self._n_items, self._n_workers, self._n_classes,
            self._item_ids, self._worker_ids, self._classes,
        )


def unused_classes_message(ann: Annotations, fix: str) -> str | None:
    """The warning where integer labels read as class indices leave classes unused (labels
    coded from 1 (1..K) then carry a class 0 nobody can choose, and codes with gaps (0, 50,
    100) classes between them), or ``None``. ``fix`` names the setting that gives the classes
    instead, with ``{classes}`` where the labels go (``"--classes {classes}"``); one message
    for the command line and the estimator."""
    if ann.classes.dtype.kind not in "iu" or not len(ann.label):
        return None
    codes = np.unique(ann.label)
    unused = np.setdiff1d(np.arange(ann.n_classes), codes)
    if not unused.size:
        return None
    used = ann.classes[codes].tolist()
    runs = np.split(unused, np.flatnonzero(np.diff(unused) > 1) + 1)  # consecutive codes as a..b
    spans = [str(ann.classes[r[0]]) if len(r) == 1 else f"{ann.classes[r[0]]}..{ann.classes[r[-1]]}" for r in runs]
    shown = ", ".join(spans[:5]) + (f" and {len(spans) - 5} more" if len(spans) > 5 else "")
    if unused[-1] > codes[0]:  # gaps between the codes
        what = f"{unused.size} of those classes ({shown}) nobody chose"
    else:  # only codes below the smallest label: labels coded from 1 (or higher)
        what = "class 0 is a class nobody chose" if unused.size == 1 else f"classes 0..{used[0] - 1} are classes nobody chose"
    return (f"the labels are integers from {used[0]} to {used[-1]}, read as class indices 0..{ann.n_classes - 1}: {what}. "
            f"If the labels are names, not indices, give the classes with {fix.format(classes=','.join(map(str, used)))}")


def _ids_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return bool(np.array_equal(a, b))
    # compare values and python types (so "1" != 1)
    la, lb = a.tolist(), b.tolist()
    return la == lb and all(type(x) is type(y) for x, y in zip(la, lb))


def row_normalise(counts: Any, fill: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
    """Row-normalise confusion counts ``(..., K, K)``.

    Returns ``(T, mask)``: ``T`` float64 ``(..., K, K)`` with rows summing to 1, and
    ``mask`` bool ``(..., K)`` that is True for rows with data. Rows without data (a true
    class the worker never saw) are filled with ``fill`` (NaN by default) and must be
    excluded from metrics via ``mask``.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise AnnotationError(f"counts must have shape (..., K, K), got {c.shape}.")
    totals = c.sum(axis=-1)
    mask = totals > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        t = c / totals[..., None]
    t[~mask] = fill
    return t, mask
