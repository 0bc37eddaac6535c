"""Reading crowd-label and item files: file parsing and the translation of pandas /
pyarrow / gzip / json errors into one clear message.

:class:`~kdcrowd.data.annotations.Annotations` validates labels that are already in
memory; this module turns files into the tables it takes. Imports go one way:
:mod:`kdcrowd.data.annotations` imports this module, which imports only
:mod:`kdcrowd.data._common` (never ``annotations``, not even lazily).

* :func:`read_annotation_frame` - a crowd-label file (long, wide or answers JSON) as a
  long table whose item and worker ids are the text written in the file, as the
  command line reads it;
* :func:`load_answers_json` and :func:`_answers_long` - an answers JSON file parsed, and
  its content as a long table (:meth:`Annotations.from_answers_json` uses both);
* :func:`_read_table` - one CSV/TSV/Parquet table, every read error translated
  (:meth:`Annotations.read` uses it).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._common import (  # noqa: F401 - _separator_hint is re-exported (kdcrowd.data.items)
    _CANONICAL_INT,
    AnnotationError,
    _entries,
    _fail_rows,
    _fits_int64,
    _float_int_text,
    _MissingFileError,
    _numeric_keys,
    _object_pairs,
    _one_type,
    _Pairs,
    _plural,
    _row_numbers,
    _scalar_values,
    _separator_hint,
    read_parquet_table,
    tsv_quoting,
)

__all__ = ["LONG_TABLE_WORDS", "load_answers_json", "read_annotation_frame"]

#: How many offending rows or files an error message shows.
_SHOW = 5


def _listing(values: Sequence[Any], total: int | None = None, sep: str = ", ", fmt: Callable[[Any], str] = repr) -> str:
    """``"'a', 'b', 'c'"`` for the first few values, ``"... and N more"`` for the rest.

    ``total`` is the full count when ``values`` holds only the first few; ``sep`` joins
    the entries and ``fmt`` writes each one (``repr`` by default, ``str`` for entries that
    are already descriptions).
    """
    total = len(values) if total is None else total
    text = sep.join(fmt(v) for v in list(values)[:_SHOW])
    return text + (f"{sep}... and {total - _SHOW} more" if total > _SHOW else "")


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (absolute: {path.absolute()}); check the path")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file (a folder?); pass the path of the file")


try:  # pandas' own list (not public, but where it has been since pandas 1.0)
    from pandas._libs.parsers import STR_NA_VALUES as _PANDAS_NA_WORDS
except ImportError:  # pragma: no cover - moved by a later pandas: its list as of pandas 3.1
    _PANDAS_NA_WORDS = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                        "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
#: pandas' default missing-value words (kept for columns that are not ids; a label written so
#: is missing, unless it is declared a class: :func:`_missing_value_labels`).
_NA_WORDS = sorted(_PANDAS_NA_WORDS)


def _ids_from_text(series: pd.Series) -> pd.Series:
    """Ids read as text, surrounding spaces removed (an id of only spaces is missing): int64
    when every one is a canonical integer (``"17"``, not ``"0017"``, ``"1e5"`` or
    ``"17.0"``) that fits int64, otherwise the text itself - the same rule as answers.json
    keys."""
    text = _blank_missing(series.str.strip())
    if text.isna().any() or text.empty:
        return text  # from_long reports the missing ids
    ids = _numeric_keys(text.tolist())
    return pd.Series(ids, index=text.index, dtype=ids.dtype)  # object stays object, not str


def _read_table(
    path: Path,
    what: str,
    error: type[Exception] = AnnotationError,
    text_columns: Sequence[str] | bool = (),
) -> pd.DataFrame:
    """Read a ``.csv``/``.tsv`` (optionally ``.gz``) or ``.parquet``/``.pq`` table.

    Every way a file can be unreadable - a folder, 0 bytes, not UTF-8, not gzip, a
    truncated gzip, a line with more fields than the header, not Parquet, no pyarrow -
    raises one ``error`` that names ``what`` and ``path`` and says how to fix it (never a
    pandas / pyarrow / gzip exception). ``text_columns`` (names, or True for all) are read
    as ``str`` in CSV/TSV files, where only an empty field is missing (an id ``NA``,
    ``null`` or ``None`` is that text); other columns keep pandas' missing-value words.
    """
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a file; pass the path of the file")
    name = path.name.lower()
    parquet = name.endswith((".parquet", ".pq"))
    tsv = name.endswith((".tsv", ".tsv.gz"))
    kind = "Parquet" if parquet else "TSV (tab-separated)" if tsv else "CSV (comma-separated)"
    try:
        if parquet:
            return read_parquet_table(path)
        sep = "\t" if tsv else ","
        kw: dict[str, Any] = {"quoting": tsv_quoting(path)} if tsv else {}
        if text_columns is True:
            kw |= {"dtype": str, "keep_default_na": False, "na_values": [""]}
        elif text_columns:
            header = pd.read_csv(path, sep=sep, nrows=0, **kw).columns
            text = {c for c in header if c in text_columns}
            kw |= {"dtype": {c: str for c in text}, "keep_default_na": False,
                   "na_values": {c: [""] if c in text else _NA_WORDS for c in header}}
        df = pd.read_csv(path, sep=sep, **kw)
    except ImportError as exc:
        raise error(
            f"reading the {what} {path} needs pyarrow ({exc}); `pip install pyarrow`, or "
            "save the table as .csv."
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise error(
            f"{what} {path} is empty ({path.stat().st_size} bytes, no header line); write a "
            "header line of column names, then one line per row."
        ) from exc
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {path} is not UTF-8 text ({exc.reason}: {exc.object[exc.start:exc.end]!r}); "
            "save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)."
        ) from exc
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().replace("Error tokenizing data. C error: ", "")
        raise error(
            f"cannot read the {what} {path} as {kind}: {detail}. Every line needs as many "
            f"{'tab' if tsv else 'comma'}-separated fields as the header; quote fields that "
            "contain the separator."
        ) from exc
    except (OSError, EOFError, zlib.error) as exc:
        hint = (" A .gz file must be a complete gzip-compressed file."
                if name.endswith(".gz") else " Check that it is a readable file.")
        raise error(f"cannot read the {what} {path}: {exc}.{hint}") from exc
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own types
        if not parquet:
            raise
        raise error(
            f"cannot read the {what} {path} as a Parquet file ({type(exc).__name__}: "
            f"{exc}); is it a Parquet file? Otherwise give it the suffix of its format."
        ) from exc
    if not parquet:
        _refuse_repeated_names(path, sep, df.columns, what, error)
    if not isinstance(df.index, pd.RangeIndex):
        # the first data line had more fields than the header: pandas silently took the
        # extra leading fields as the row index and shifted every column
        extra = df.index.nlevels
        raise error(
            f"cannot read the {what} {path} as {kind}: the first data line has {extra} more "
            f"field(s) than the header ({len(df.columns)} columns). Every line needs as many "
            f"{'tab' if tsv else 'comma'}-separated fields as the header; quote fields that "
            "contain the separator."
        )
    return df


#: How pandas renames the second ``name`` of a header line that repeats it: ``name.1``.
_MANGLED = re.compile(r".+\.[0-9]+")


def _refuse_repeated_names(path: Path, sep: str, columns: pd.Index, what: str, error: type[Exception]) -> None:
    """Raise ``error`` when the header line of a CSV/TSV file names a column twice: pandas
    silently renames the second ``alice`` to ``alice.1`` (a phantom worker, an ignored
    second ``label`` column)."""
    if not any(_MANGLED.fullmatch(str(c)) for c in columns):
        return  # pandas renamed nothing: no second read of the header line
    header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]
    named = header[header.str.strip() != ""]  # empty names are pandas' "Unnamed: N", never renamed
    repeated = named[named.duplicated(keep=False)]
    if repeated.empty:
        return
    where = ", ".join(f"{name!r} (columns {', '.join(str(j + 1) for j in spots)})"
                      for name, spots in repeated.groupby(repeated, sort=False).groups.items())
    raise error(f"the header line of the {what} {path} names {where} more than once; give every column its own name")


def load_answers_json(path: str | os.PathLike) -> Any:
    """The parsed content of an answers JSON file (``.json`` / ``.json.gz``): objects that
    repeat a key are kept as their pairs (:class:`~kdcrowd.data.annotations._Pairs`).
    A missing, unreadable or invalid file raises one :class:`AnnotationError`."""
    path = Path(path)
    if not path.exists():
        raise _MissingFileError(
            f"annotation file not found: {path} (absolute: {path.absolute()}); check "
            "the path"
        )
    if path.is_dir():
        raise AnnotationError(f"annotation file {path} is a folder, not a file; pass "
                              "the path of the answers JSON file")
    gz = path.name.lower().endswith(".gz")
    opener = gzip.open if gz else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as fh:  # -sig: a byte-order mark (Windows editors) is not JSON
            obj = json.load(fh, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"annotation file {path} is not valid JSON ({exc}); an answers file must "
            "be one JSON object {item: {worker: label}}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"annotation file {path} is not UTF-8 text ({exc.reason}: "
            f"{exc.object[exc.start:exc.end]!r}); JSON files must be UTF-8."
        ) from exc
    except (OSError, EOFError, zlib.error) as exc:
        hint = (" A .json.gz file must be a complete gzip-compressed JSON file; name "
                "plain JSON .json." if gz else " Check that it is a readable file.")
        raise AnnotationError(f"cannot read the annotation file {path}: {exc}.{hint}") from exc
    return obj


def _answers_long(obj: Any) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The content of an answers JSON (``{item: {worker: label}}``, a Mapping or, for an
    object that repeats a key, its :class:`~kdcrowd.data._common._Pairs`) as a long
    ``item, worker, label`` table in file order, with the item ids in key order (items
    with ``{}`` included; None when there are none).

    Keys that are all canonical integer strings become int64, at each level separately,
    unless one of them does not fit int64; so do such label strings; int labels become
    int64 when all fit. A value that is not an object raises one :class:`AnnotationError`.
    Labels are not validated here (:meth:`Annotations.from_long` does that).
    """
    if not isinstance(obj, (Mapping, _Pairs)):
        raise AnnotationError(
            "answers JSON must be an object {item: {worker: label}}, got "
            f"{type(obj).__name__}."
        )
    top = _entries(obj)
    keys = [k for k, _ in top]
    inner = [v for _, v in top]
    bad = [i for i, d in enumerate(inner) if not isinstance(d, (Mapping, _Pairs))]
    if bad:
        raise _fail_rows(
            "answers JSON values must be objects {worker: label}; found other values",
            np.asarray(bad), {"item": np.asarray(keys, dtype=object),
                              "value": np.asarray([repr(v)[:40] for v in inner], dtype=object)},
            "Use the layout {item: {worker: label}}.", what="entry",
        )
    pairs = [_entries(d) for d in inner]
    lens = np.fromiter((len(d) for d in pairs), dtype=np.int64, count=len(pairs))
    item_keys = _numeric_keys(keys)
    wk = _numeric_keys([w for d in pairs for w, _ in d])
    labels = [dict(v) if isinstance(v, _Pairs) else v for d in pairs for _, v in d]
    lab_s = pd.Series(labels, dtype=object)
    lab_kind = pd.api.types.infer_dtype(lab_s, skipna=True) if labels else "empty"
    if lab_kind == "string" and bool(lab_s.dropna().str.fullmatch(_CANONICAL_INT).all()):
        lab_s = pd.Series(_numeric_keys(lab_s.dropna().tolist()),
                          index=lab_s.dropna().index).reindex(lab_s.index)
    elif (labels and pd.api.types.infer_dtype(lab_s, skipna=False) == "integer"
          and _fits_int64(lab_s)):
        lab_s = lab_s.astype(np.int64)  # (ints beyond int64 stay python ints)
    df = pd.DataFrame({
        "item": pd.Series(np.repeat(item_keys, lens), dtype=item_keys.dtype),
        "worker": pd.Series(wk, dtype=wk.dtype if wk.size else object),
        "label": lab_s,
    })
    items = pd.unique(pd.Series(item_keys, dtype=item_keys.dtype)) if keys else None
    return df, items


def _answer_labels(labels: pd.Series) -> pd.Series:
    """answers.json labels typed as :meth:`Annotations.from_long` types them: ``1`` and
    ``"1"`` one int, ints and other text all text, whole-number floats ints. Labels that
    ``from_long`` refuses (missing ones) are left for it to name."""
    if labels.dtype != object or labels.empty or labels.isna().any():
        return labels
    kind = pd.api.types.infer_dtype(labels, skipna=False)
    if kind in ("mixed", "mixed-integer"):
        return _one_type(labels)  # (every label is a scalar: read_annotation_frame checked)
    if kind in ("floating", "mixed-integer-float"):
        num = labels.astype(np.float64)
        if bool((np.isfinite(num) & (num == np.round(num)) & (num.abs() < 2**53)).all()):
            return num.astype(np.int64)
    return labels


# ----------------------------------------------------------------------------- the command line's reading


def _text_of(v: Any) -> Any:
    if (t := _float_int_text(v)) is not None:
        return t
    return v if isinstance(v, str) else str(v)


def _as_text(s: pd.Series) -> pd.Series:
    """Values as ``str`` with surrounding spaces removed (missing values stay missing). The
    spelling is kept, Unicode form included: files are matched with crowd labels in NFC
    (:func:`kdcrowd.data.items._text_id`), and what is written reads back the same.

    A whole-number float is written without its ``.0`` (a Parquet id or label column that
    holds ``17.0`` because of a missing value elsewhere means ``"17"``, not ``"17.0"``).
    """
    given = s.notna().to_numpy()
    if not given.any():
        return s.astype(object)  # empty or all missing (a Parquet column of nulls is float): nothing to write
    # each distinct value is written once and shared by its rows: an id column of millions
    # of rows holds far fewer distinct ids, and a str object per row took ~15x the column.
    # (Not for Python objects of mixed types: factorize takes True, 1 and 1.0 for one value.)
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) != "string":
        codes, values = np.arange(len(s)), s
    else:
        codes, values = pd.factorize(s, use_na_sentinel=True)
    values = pd.Series(values, dtype=s.dtype)  # formatted as the column's type formats (dates as dates)
    if pd.api.types.is_float_dtype(s.dtype) or (s.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("floating", "mixed-integer-float", "mixed")):
        text = np.array([_text_of(v).strip() for v in values.tolist()], dtype=object)
    else:
        text = values.astype(str).str.strip().to_numpy(dtype=object)
    out = np.empty(len(s), dtype=object)
    out[given] = text[codes[given]]
    if not given.all():
        out[~given] = s[~given].astype(object).to_numpy()  # missing values stay as they were
    return pd.Series(out, index=s.index, name=s.name, dtype=object)


def _blank_missing(ids: pd.Series) -> pd.Series:
    """Ids (already stripped) with the empty ones missing: an id of only spaces is no id."""
    return ids.mask(ids.eq(""))


class InputWarning(UserWarning):
    """Something in an input file was read in a way worth knowing (rows skipped, an id
    column recognised, labels that differ only by case); the message says what and how
    to make it explicit."""


#: ``label_case`` policies of :func:`read_annotation_frame`.
LABEL_CASES = ("fold", "keep")


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, InputWarning, stacklevel=3)


def data_row_lines(path: Path, n_rows: int) -> np.ndarray:
    """The file line (the header is line 1) on which each of the ``n_rows`` rows that pandas
    read from the CSV/TSV file ``path`` starts. pandas skips empty lines, and a quoted cell
    may span lines, so row ``r`` is on line ``r + 2`` only where neither occurs: that is
    checked by counting the file's lines (fast), and otherwise the lines are found with
    Python's CSV reader, reading the file as pandas does; where the two readers disagree on
    the rows, ``r + 2`` is kept. The file is read in pieces, never whole into memory."""
    import csv
    import io

    plain = np.arange(n_rows, dtype=np.int64) + 2
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    newlines = tail = 0  # the file's line breaks; those in its last run of line breaks (empty lines at the end: no rows)
    try:
        with opener(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                newlines += chunk.count(b"\n")
                body = len(chunk)
                while body and chunk[body - 1] in b"\r\n":  # (only the chunk's last line breaks: no copy of it)
                    body -= 1
                tail = chunk.count(b"\n", body) + (tail if body == 0 else 0)
        if newlines - tail == n_rows:  # one line per row: no empty line, no cell over two lines
            return plain
        tsv = path.name.lower().endswith((".tsv", ".tsv.gz"))
        starts: list[int] = []
        with opener(path, "rb") as fh:
            reader = csv.reader(io.TextIOWrapper(fh, encoding="utf-8-sig", errors="replace", newline=""), delimiter="\t" if tsv else ",",
                                quoting=tsv_quoting(path) if tsv else csv.QUOTE_MINIMAL)
            done, header = 0, False
            for row in reader:
                start, done = done + 1, reader.line_num
                if not row:  # an empty line: pandas skips it
                    continue
                if header:
                    starts.append(start)
                header = True
    except (OSError, EOFError, zlib.error, csv.Error):
        return plain
    return np.asarray(starts, dtype=np.int64) if len(starts) == n_rows else plain


def _drop_blank_and_header_rows(df: pd.DataFrame, path: Path, blank_rows: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """``df`` without rows whose every field is empty or only spaces (trailing ``,,`` rows
    of a spreadsheet) and without copies of the header line inside the file (concatenated
    exports, each part's byte-order mark kept), each with an :class:`InputWarning` naming
    the file's line numbers; and the file line number of each row kept. ``blank_rows=False``
    keeps the blank rows (a platform export's reader counts them as answers without a worker)."""
    lines = data_row_lines(path, len(df))  # the header is line 1
    if df.empty or not len(df.columns):
        return df, lines
    names = [str(c).strip() for c in df.columns]
    blank = np.full(len(df), blank_rows, dtype=bool)
    header = np.ones(len(df), dtype=bool)
    for j, n in enumerate(names):  # vectorised per column: no loop over rows
        col = df.iloc[:, j]
        text = col.astype(str).str.strip()
        blank &= (col.isna() | text.eq("")).to_numpy()
        header &= (col.notna() & (text.str.lstrip("\ufeff") if j == 0 else text).eq(n)).to_numpy()
    if blank.any():
        _warn(f"annotation file {path}: skipped {int(blank.sum())} blank row(s) (every field empty or spaces) at line(s) {_listing(lines[blank].tolist(), int(blank.sum()), fmt=str)}")
    if header.any():
        _warn(f"annotation file {path}: skipped {int(header.sum())} row(s) that repeat the header line ({', '.join(names)}) at line(s) {_listing(lines[header].tolist(), int(header.sum()), fmt=str)}; files joined together each kept their header")
    drop = blank | header
    return (df.loc[~drop].reset_index(drop=True), lines[~drop]) if drop.any() else (df, lines)


def _has_integer_codes(text: pd.Series) -> bool:
    """Whether some value is an integer written in a non-canonical way (``01``, ``+2``,
    ``-0``; the ids' rule, ``_CANONICAL_INT``): a code whose text is its identity."""
    u = pd.Series(text.unique(), dtype=object).astype(str)
    return bool((u.str.fullmatch(r"[+-]?[0-9]+") & ~u.str.fullmatch(_CANONICAL_INT)).any())


def _labels_from_text(labels: pd.Series) -> pd.Series:
    """Labels read as text (only an empty field missing): surrounding spaces removed; numbers
    when every label is a number (as pandas would have typed the column), where pandas'
    missing-value words (``NA``, ``null``, ...) are missing; otherwise class names, where
    ``NA``, ``None`` or ``null`` stays that text (whether it is a class or a missing label
    is the declared classes' to say: :func:`_missing_value_labels`). Codes written as integers that
    are not canonical (``01``, ``+2``) keep every label as text, as ids do: ``01`` and
    ``02`` are two classes, not the class indices 1 and 2 beside an unused class 0."""
    stripped = labels.astype(object).where(labels.notna(), None)
    if stripped.notna().any():
        stripped = stripped.str.strip()
    stripped = stripped.where(stripped.notna() & stripped.ne(""), None)  # a field of spaces is empty
    na_words = set(_NA_WORDS)
    present = stripped.dropna()
    numeric = present[~present.isin(na_words)]
    if len(numeric) and not _has_integer_codes(numeric):
        try:
            num = pd.to_numeric(numeric)
        except (ValueError, TypeError):
            num = None
        if num is not None and num.dtype.kind in "iuf":
            return pd.to_numeric(stripped.where(~stripped.isin(na_words), None))
    return stripped


def _missing_value_labels(labels: pd.Series, classes: Sequence[Any] | None, fold: bool = False) -> tuple[np.ndarray, str, str]:
    """Where text labels (as :func:`_labels_from_text` reads them) are one of pandas'
    missing-value words (``NA``, ``nan``, ``None`` ..., :data:`_NA_WORDS`: how R's write.csv
    and ``df.astype(str).to_csv()`` write a missing label) that ``classes`` does not declare
    (matched as text; ignoring letter case where ``fold``: ``--label-case fold``); and, when
    some are, the words found with their counts, and how to declare them as classes
    (``--classes`` with every class written). Labels that are numbers have none: there
    pandas' reading already made them missing."""
    if pd.api.types.is_numeric_dtype(labels.dtype) or pd.api.types.is_bool_dtype(labels.dtype):
        return np.zeros(len(labels), dtype=bool), "", ""
    declared = {str(c).strip() for c in classes} if classes is not None else set()
    if fold:
        declared = {c.casefold() for c in declared}
    words = {w for w in _NA_WORDS if (w.casefold() if fold else w) not in declared}
    missing = labels.isin(words).to_numpy()
    if not missing.any():
        return missing, "", ""
    counts = labels[missing].value_counts()
    found = [str(w) for w in pd.unique(labels[missing])]  # in file order
    what = (", ".join(f"{w!r} ({counts[w]})" for w in found)
            + ": pandas' missing-value words, which R's write.csv (NA) and df.astype(str).to_csv() (nan) write for a missing label")
    every = sorted(set(map(str, pd.unique(labels[~missing].dropna())))) + found  # (the distinct labels: no Python per cell of an N x M table)
    how = f"--classes {','.join(every)} (classes={every!r})" if len(every) <= 12 else "--classes (classes=[...]) listing every class, those among them"
    return missing, what, f"if {f'{found[0]!r} is a class' if len(found) == 1 else 'they are classes'}, declare the classes with {how}"


def fold_label_case(labels: pd.Series, label_case: str | None, source: str, classes: Sequence[Any] | None = None) -> pd.Series:
    """Text labels that differ only by letter case (``cat``, ``Cat``): with ``"fold"`` each
    becomes the declared class it equals ignoring case (``classes``, the class list
    ``--classes``, matched as text), else the most frequent spelling of its group (the first
    in sorted order on a tie); with ``"keep"`` they stay separate classes; with ``None`` they
    stay separate and an :class:`InputWarning` names them and both options. Declared classes
    that differ only by case cannot be folded to: with ``"fold"`` they are refused."""
    if label_case is not None and label_case not in LABEL_CASES:
        raise ValueError(f"label case must be fold or keep (--label-case fold|keep), not {label_case!r}")
    declared: dict[str, str] = {}  # the declared spelling of each class, by its case-folded text
    if label_case == "fold" and classes is not None:
        for c in map(str, classes):
            if declared.setdefault(c.casefold(), c) != c:
                raise ValueError(f"--classes names {declared[c.casefold()]!r} and {c!r}, which differ only by letter case: --label-case fold "
                                 "(label_case='fold') would merge them; list one of them, or pass --label-case keep to keep them apart")
    if label_case == "keep" or not (labels.dtype == object or pd.api.types.is_string_dtype(labels.dtype)):  # pandas 3 reads text as its string dtype
        return labels
    present = labels.dropna()
    is_text = np.fromiter((isinstance(v, str) for v in present.tolist()), dtype=bool, count=len(present))
    if not is_text.any():
        return labels
    text = present[is_text]
    counts = text.value_counts()
    spellings = pd.DataFrame({"label": counts.index.to_numpy(dtype=object), "n": counts.to_numpy()})
    spellings["key"] = spellings["label"].str.casefold()
    groups = spellings.groupby("key")["label"].nunique()
    clash = groups[groups > 1].index
    if label_case is None:
        if len(clash):
            shown = [" / ".join(repr(v) for v in sorted(spellings.loc[spellings["key"] == k, "label"])) for k in clash[:5]]
            _warn(f"{source}: labels that differ only by letter case are separate classes: {'; '.join(shown)}"
                  + (f"; ... and {len(clash) - 5} more groups" if len(clash) > 5 else "")
                  + "; pass --label-case fold (label_case='fold') to merge them, or --label-case keep to keep them apart without this warning")
        return labels
    best = spellings.sort_values(["key", "n", "label"], ascending=[True, False, True]).drop_duplicates("key").set_index("key")["label"]
    best = pd.Series([declared.get(k, v) for k, v in best.items()], index=best.index, dtype=object)
    if (best.reindex(spellings["key"].to_numpy()).to_numpy() == spellings["label"].to_numpy()).all():
        return labels  # every label is already its spelling
    out = labels.copy()
    idx = text.index
    out.loc[idx] = best.reindex(text.str.casefold().to_numpy()).to_numpy()
    return out


def read_annotation_frame(path: str | os.PathLike[str], label_case: str | None = None, item_column: str | None = None,
                          classes: Sequence[Any] | None = None) -> pd.DataFrame:
    """A crowd-label file as a long table whose item and worker ids are text.

    Reads what :meth:`kdcrowd.data.Annotations.read` reads — ``.csv``, ``.csv.gz``,
    ``.tsv``, ``.tsv.gz``, ``.parquet``/``.pq`` long tables (``item`` or crowd-kit's
    ``task``, ``worker``, ``label``) and peerannot ``answers.json``/``.json.gz`` — and
    wide tables (no column name containing a word of :data:`LONG_TABLE_WORDS` such as
    ``worker`` or ``label``: one row per item, named by an ``item``/``task`` column, a
    column named like ids or without a header (:func:`_wide_id_column`), or else by its row
    number, one column per worker; see :func:`_wide_to_long`), but keeps
    the ``item``/``task`` and ``worker`` columns as the text written in the file (an id of
    only spaces is missing), so that
    ``"0017"`` matches an image ``0017.png``. Pass the result to
    ``Annotations.from_long(df, items=ids)``, which validates it. For answers.json and wide
    tables ``df.attrs["items"]`` lists every item of the file, those nobody labelled too;
    for CSV/TSV files ``df.attrs["lines"]`` (:class:`FileLines`) lets ``from_long`` name
    file lines in its errors. A header line that names a column twice, or a file read as
    one column that holds another separator, is refused.

    Messy files are mended where the intent is clear, each with an :class:`InputWarning`:
    blank rows (every field empty or spaces) and copies of the header line inside the file
    are skipped; labels lose surrounding spaces. In CSV/TSV long tables labels are numbers
    when every label is a number (then ``NA``, ``null`` ... are missing) and class names
    otherwise. Among class names a label written as one of pandas' missing-value words
    (``NA``, ``nan``, ``None``, ``null`` ...: how R's write.csv and
    ``df.astype(str).to_csv()`` write a missing one) is a class only where ``classes`` (the
    declared class list, ``--classes``) names it: otherwise a wide table's cell is no label
    (one :class:`InputWarning` counts them) and a long table's row is refused (a missing
    label is written by leaving the row out). Text labels that differ only
    by case follow ``label_case`` (:func:`fold_label_case`; folded, a label is written as the
    declared class it matches). ``item_column`` names the
    column of item ids when it is not called ``item`` or ``task``.
    """
    path = Path(path)
    name = path.name.lower()
    _require_file(path, "annotation file")  # a mistyped path is named as missing, whatever its suffix
    if not name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq", ".json", ".json.gz")):
        raise ValueError(f"cannot tell the format of annotation file {path.name!r}; use .csv, .csv.gz, .tsv, .tsv.gz, .parquet, .pq, .json or .json.gz")
    if label_case is not None and label_case not in LABEL_CASES:
        raise ValueError(f"--label-case must be fold or keep, not {label_case!r}")
    text, long, lines = False, True, None  # a CSV/TSV file, a long table, the file line of each row
    if name.endswith((".json", ".json.gz")):
        df, items = _answers_long(load_answers_json(path))
        if items is not None:  # every item of the file, with those labelled by nobody ({}); a key of spaces is no item
            df.attrs["items"] = _id_text(pd.Series(list(items), dtype=object)).dropna().tolist()
        _scalar_values(df["label"], "label", {c: df[c] for c in df.columns})  # a list or object as a label
        df["label"] = _answer_labels(df["label"])
    else:
        text = not name.endswith((".parquet", ".pq"))
        df = _read_table(path, "annotation file", error=ValueError, text_columns=True if text else ("item", "task", "worker"))
        if len(df.columns) == 1 and _separator_hint(list(df.columns)):  # else a wide table of one worker whose labels are whole lines
            raise ValueError(f"cannot read the annotation file {path} as a table of crowd labels." + _separator_hint(list(df.columns)))
        if item_column is not None:
            if item_column not in df.columns:
                raise ValueError(f"--item-column {item_column!r} is not a column of {path} (columns: {_listing(list(map(str, df.columns)), len(df.columns))})")
            if item_column != "item":
                df = df.drop(columns=[c for c in ("item", "task") if c in df.columns and c != item_column]).rename(columns={item_column: "item"})
        if text:
            df, lines = _drop_blank_and_header_rows(df, path)
        long = _long_table(df.columns)
        if not long:
            id_col = _wide_id_column(df, path)
            df = _drop_row_numbers(df, id_col, path)
            two = [c for c in df.columns if c != id_col]
            if item_column is None and id_col in ("item", "task") and len(two) == 2 and not _shared_values(df[two[0]], df[two[1]]):
                # an item column and two others that share no value (a long table's worker ids and labels, under other names?)
                _warn(f"annotation file {path}: read as a wide table, one column per worker ({_listing([str(c) for c in two])}); "
                      "if it is a long table (one row per label), name its columns item, worker, label")
            if id_col is not None and id_col not in ("item", "task"):
                df = df.rename(columns={id_col: "item"})
                id_col = "item"
            if id_col is not None:
                df[id_col] = _id_text(df[id_col])
                _refuse_missing_ids(df, id_col, path, lines)
            if text:  # every worker column's cells together: numbers, or class names (where NA is a class only if declared)
                cells = [c for c in df.columns if c != id_col]
                n = len(df)
                joint = _labels_from_text(pd.concat([df[c] for c in cells], ignore_index=True)) if cells else None
                if joint is not None:
                    missing, what, declare = _missing_value_labels(joint, classes, label_case == "fold")
                    if missing.any():
                        _warn(f"annotation file {path}: read {_plural(int(missing.sum()), 'cell')} as no label, beside class names: {what}; {declare}")
                        joint = joint.mask(missing)
                for k, c in enumerate(cells):
                    df[c] = joint.iloc[k * n:(k + 1) * n].to_numpy()
            df = _wide_to_long(df, path, lines)
        elif text and "label" in df.columns and not isinstance(df["label"], pd.DataFrame):
            df["label"] = _labels_from_text(df["label"])
            _refuse_missing_value_labels(df["label"], classes, path, lines, ValueError, label_case == "fold")
    for col in ("item", "task", "worker"):
        if col in df.columns and not isinstance(df[col], pd.DataFrame):
            df[col] = _id_text(df[col])
            _note_unicode_twins(df[col], col, path)
    if "label" in df.columns and not isinstance(df["label"], pd.DataFrame) and df["label"].dtype == object:
        lab = df["label"]
        if pd.api.types.infer_dtype(lab, skipna=True) in ("string", "mixed", "mixed-integer"):  # (kinds .str takes)
            stripped = lab.str.strip()  # NaN for values that are not text: those stay as they are
            strip = stripped.notna().to_numpy()
            if strip.any():
                lab = lab.where(~strip, stripped)
        df["label"] = fold_label_case(lab, label_case, f"annotation file {path}", classes)
    if text and long:  # from_long then names the file's lines, as the warnings above do
        df.attrs["lines"] = FileLines(lines)
    return df


class FileLines:
    """The file line number of each row of a table read from a CSV/TSV file (header line 1),
    kept in ``df.attrs["lines"]`` by :func:`read_annotation_frame` so that
    :meth:`Annotations.from_long` names the lines to mend. Read-only and shared, never
    copied: pandas deep-copies a frame's attrs on every operation."""

    def __init__(self, lines: Any) -> None:
        self.lines = np.array(lines, dtype=np.int64)
        self.lines.flags.writeable = False

    def __len__(self) -> int:
        return len(self.lines)

    def __deepcopy__(self, memo: dict) -> "FileLines":
        return self

    def of(self, df: pd.DataFrame) -> np.ndarray | None:
        """The lines of ``df``'s rows, or None when ``df`` is no longer the table read (rows
        dropped, added or reordered: its index is no longer 0..n-1 of the same length)."""
        fresh = _row_numbers(df.index)
        return self.lines if fresh and len(df) == len(self.lines) else None


def _note_unicode_twins(ids: pd.Series, column: str, path: Path) -> None:
    """An :class:`InputWarning` where two ids of ``column`` differ only by their Unicode form
    (``café`` composed and decomposed): they look alike but stay two ids, since an id keeps
    its spelling (what is written reads back the same)."""
    import unicodedata

    distinct = [v for v in pd.unique(ids.dropna()) if isinstance(v, str) and not v.isascii()]  # ASCII has one form
    groups: dict[str, list[str]] = {}
    for v in distinct:
        groups.setdefault(unicodedata.normalize("NFC", v), []).append(v)
    twins = [g for g in groups.values() if len(g) > 1]
    if twins:
        shown = "; ".join(" and ".join(ascii(v) for v in g) for g in twins[:_SHOW])
        _warn(f"annotation file {path}: {_plural(len(twins), 'id')} of column {column!r} written in two Unicode forms (composed and decomposed), "
              f"which look alike but are kept apart: {shown}; write each id one way")


def _id_text(ids: pd.Series) -> pd.Series:
    """Item or worker ids as the command line reads them: text without surrounding spaces
    (:func:`_as_text`); an id of only spaces is missing."""
    return _blank_missing(_as_text(ids))


def _refuse_missing_value_labels(labels: pd.Series, classes: Sequence[Any] | None, path: Path, lines: np.ndarray | None,
                                 error: type[Exception], fold: bool = False) -> None:
    """Raise one ``error`` naming the file lines (``lines``: of each row, header line 1; None:
    found in the file, :func:`data_row_lines`) of the rows of a long table whose label is a
    missing-value word among class names (:func:`_missing_value_labels`): a missing label,
    or a class not declared (``fold``: matched ignoring letter case)."""
    missing, what, declare = _missing_value_labels(labels, classes, fold)
    if missing.any():
        n = int(missing.sum())
        lines = data_row_lines(path, len(labels)) if lines is None else lines
        raise error(f"annotation file {path}: {_plural(n, 'label')} on line(s) {_listing(lines[missing].tolist(), n, fmt=str)} written as a missing value, beside class "
                    f"names: {what}; delete those rows (a missing label is written by leaving the row out), or, {declare}")


def _refuse_missing_ids(df: pd.DataFrame, column: str, path: Path, lines: np.ndarray | None) -> None:
    """Raise one ``ValueError`` naming the file lines (for a Parquet file, None: the rows
    counted from 0) of the rows of a wide table without an item id in ``column``."""
    rows = np.flatnonzero(df[column].isna().to_numpy())
    if rows.size:
        where = [f"line {lines[r]}" if lines is not None else f"row {r}" for r in rows[:_SHOW]]
        raise ValueError(f"annotation file {path}: no item id in column {str(column)!r} on {_plural(rows.size, 'row')}: {_listing(where, rows.size, fmt=str)}; "
                         f"write the item's id there or delete the {'line' if lines is not None else 'row'}")


#: Words that mark a long table when a column name contains them (any case; however
#: misspelt or mis-separated its other columns are): a file whose column names hold none
#: of them is read as a wide table, one column per worker.
LONG_TABLE_WORDS = frozenset({"worker", "label", "annotator", "annotation", "answer", "response", "rater", "user", "judgment", "judgement", "class", "vote"})


#: Header names of a wide table's column of item ids (letter case, spaces, ``_`` and ``-``
#: aside): a first column ``image`` or ``file_name`` names the items, it is no worker.
_ID_COLUMN_NAMES = frozenset({
    "item", "itemid", "task", "taskid", "id", "uid", "key", "index", "idx", "image", "imageid", "imagename", "img",
    "file", "fileid", "filename", "filepath", "path", "url", "imageurl", "sample", "sampleid", "example", "exampleid",
    "question", "questionid", "doc", "docid", "document", "documentid", "record", "recordid",
})
#: The name pandas gives a column with an empty header, e.g. the index column of ``df.to_csv()``.
_UNNAMED = re.compile(r"Unnamed: [0-9]+")


#: A numbered worker column of a wide table (``annotator_1``, ``Worker 2``, ``rater3``): a
#: long-table word followed by a number marks no long table.
_NUMBERED_WORKER = re.compile(r"[a-z]+[\s_\-]*[0-9]+")


def _long_table(columns: Any) -> bool:
    """Whether a table with these column names is long (``item, worker, label``): a name
    holds one of :data:`LONG_TABLE_WORDS`, unless every such name is a numbered worker
    column (``annotator_1``, ``annotator_2``: a wide table's)."""
    marked = [str(c).lower() for c in columns if any(w in str(c).lower() for w in LONG_TABLE_WORDS)]
    return bool(marked) and not all(_NUMBERED_WORKER.fullmatch(c.strip()) for c in marked)


def _shared_values(a: pd.Series, b: pd.Series) -> bool:
    """Whether two worker columns share a label as the reader reads them: as numbers where
    both hold only numbers (a column with gaps is written ``1.0`` by pandas, a full one ``1``),
    else as text."""
    na, nb = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    if na.notna().sum() == a.notna().sum() and nb.notna().sum() == b.notna().sum():
        return bool(set(na.dropna()) & set(nb.dropna()))
    return bool(set(_as_text(a).dropna()) & set(_as_text(b).dropna()))


def _named_like_id(name: Any) -> bool:
    return re.sub(r"[\s_\-]", "", str(name)).lower() in _ID_COLUMN_NAMES


def _ids_by_values(df: pd.DataFrame) -> list[Any]:
    """The columns of a wide table that look like item ids by their values: given on every
    row, distinct on every row and not labels (more distinct values than the other columns'
    labels, at most half of them among those labels; or, beside two or more other columns,
    none of them among those labels). None with fewer than 3 rows."""
    if len(df) < 3 or df.shape[1] < 2:
        return []
    text = {c: _as_text(df[c]) for c in df.columns}
    unique = [c for c in df.columns if not text[c].isna().any() and text[c].is_unique]
    labels = [c for c in df.columns if c not in unique]
    found = []
    for c in unique:
        others: set = set()
        rest = labels or [o for o in df.columns if o != c]
        for o in rest:
            others.update(text[o].dropna().tolist())
        values = set(text[c].tolist())
        # (none among the labels of two or more workers: ids, however few the rows)
        if (len(values) > len(others) and len(values & others) <= len(values) / 2) or (len(rest) >= 2 and not values & others):
            found.append(c)
    return found


def _wide_id_column(df: pd.DataFrame, path: Path | None = None) -> Any:
    """The column of item ids of a wide table (one row per item, one column per worker): the
    one rule of a wide file that ``kdcrowd fit`` reads (:func:`read_annotation_frame`, ``path``)
    and of a wide DataFrame given to the estimator (``path`` None).

    ``item``, else crowd-kit's ``task`` (the other one, if both, is a worker); else, with an
    :class:`InputWarning` saying which, the one column named like an id
    (:data:`_ID_COLUMN_NAMES`: ``id``, ``image``, ``file_name`` ...), or a first column without
    a header (``Unnamed: 0``: the row numbers that ``df.to_csv()`` writes, as
    ``pd.read_csv`` reads them back), or whose values look like ids (:func:`_ids_by_values`).
    None when no column is such (the rows then stand for the items in order). An error when
    the names and values point at several columns, asking to call the one of ids ``item``
    (for a file: or to name it with ``--item-column``). A first column without a header
    beside the ids is no worker either: :func:`_drop_row_numbers` skips it.
    """
    if "item" in df.columns or "task" in df.columns:
        return "item" if "item" in df.columns else "task"
    named = [c for j, c in enumerate(df.columns) if _named_like_id(c) or (j == 0 and _UNNAMED.fullmatch(str(c)) and df.shape[1] > 1)]
    by_values = _ids_by_values(df)
    found = named + [c for c in by_values if c not in named]
    if len(found) > 1:  # a wrong guess makes a column of ids a worker, or a worker the ids: ask
        if path is not None:
            raise ValueError(f"annotation file {path} looks like a wide table (one column per worker) whose columns {_listing([str(c) for c in found])} each could be the item ids (named like ids or holding a distinct value per row); name the column of item ids with --item-column NAME (or call it 'item')")
        raise ValueError(f"the wide table of crowd labels (one column per worker) has columns {_listing([str(c) for c in found])} that each could be the item ids (named like ids or holding a distinct value per row); call the column of item ids 'item' (the others are read as workers' labels)")
    if not found:
        return None
    c = found[0]
    where = f"annotation file {path}" if path is not None else "the wide table of crowd labels"
    if _UNNAMED.fullmatch(str(c)):
        first, fix = ("its first column", "write 'item' as its header") if path is not None else (f"its first column {str(c)!r}", "call it 'item'")
        _warn(f"{where}: read {first}, which has no header (the row numbers that pandas' to_csv() writes), as the item ids of a wide table; {fix} to say so")
    else:
        why = "its name says so" if named else "its values differ on every row and are not labels"
        fix = f"name it 'item' or pass --item-column {c}" if path is not None else "call it 'item'"
        _warn(f"{where}: read column {str(c)!r} as the item ids of a wide table ({why}); {fix} to say so")
    return c


def _drop_row_numbers(df: pd.DataFrame, id_col: Any, path: Path | None = None) -> pd.DataFrame:
    """``df`` without a first column that has no header (the row numbers that ``df.to_csv()``
    writes) beside its column of item ids ``id_col`` (:func:`_wide_id_column`), with an
    :class:`InputWarning`: it is no worker."""
    if id_col is None or len(df.columns) < 2 or not _UNNAMED.fullmatch(str(df.columns[0])) or df.columns[0] == id_col:
        return df
    where, first = (f"annotation file {path}", "its first column") if path is not None else ("the wide table of crowd labels", f"its first column {str(df.columns[0])!r}")
    _warn(f"{where}: skipped {first}, which has no header (the row numbers that pandas' to_csv() writes), beside the item ids of column {str(id_col)!r}")
    return df.drop(columns=[df.columns[0]])


def _wide_to_long(df: pd.DataFrame, path: Path, lines: np.ndarray | None = None) -> pd.DataFrame:
    """A wide crowd-label table (one row per item, one column per worker, cleanlab's layout)
    as a long ``item, worker, label`` table, item-major in file order.

    Items are named by the column of item ids (:func:`_wide_id_column`), else by their row
    number (``"0"``, ``"1"``, ...); every other column is a worker named by its header. Empty
    cells are missing labels, and so is ``-1`` (whatever the other labels); whole-number
    labels become integers (a column with gaps is read as float). ``lines`` (the file line
    of each row of ``df``) gives each annotation the line of its item, in
    ``attrs["lines"]``.
    """
    id_col = _wide_id_column(df, path)
    pos = [j for j, c in enumerate(df.columns) if c != id_col]
    if not pos:
        raise ValueError(f"annotation file {path} has no 'worker' and 'label' columns (a long table) and no worker columns (a wide table); write it as item,worker,label rows")
    ids = _as_text(df[id_col]).to_numpy(dtype=object) if id_col else np.arange(len(df)).astype(str).astype(object)
    workers = np.array([str(df.columns[j]) for j in pos], dtype=object)
    if id_col is None:
        _warn(f"annotation file {path}: read as a wide table (one column per worker) without a column of item ids: the items are named by their row numbers, 0 to {len(df) - 1}; "
              "if a column holds the ids, name it 'item' or pass --item-column NAME")
    v = df.iloc[:, pos].to_numpy()  # the columns' common dtype: float64 for numbers, object for a mix
    r, c = np.nonzero(pd.notna(v))  # row-major: item by item, workers in column order
    label = pd.Series(v[r, c], dtype=v.dtype)
    num = pd.to_numeric(label, errors="coerce")
    keep = (num != -1).to_numpy()  # -1 (or "-1") is no label, whatever the other labels (the documented layout)
    if not keep.all():
        if num[keep].isna().any():  # among class names a '-1' might be meant as one: say what was done
            _warn(f"annotation file {path}: read {_plural(int((~keep).sum()), 'cell')} of '-1' as no label (a wide table's missing label), beside class names; "
                  "write the table long (item,worker,label) to keep '-1' as a class")
        r, c, label, num = r[keep], c[keep], label[keep].reset_index(drop=True), num[keep].reset_index(drop=True)
    if len(label) and num.notna().all():
        codes = label.dtype == object and _has_integer_codes(label)  # 01, 02 stay names
        if not codes and (num == np.round(num)).all() and (num.abs() < 2**53).all():
            label = num.astype(np.int64)
    out = pd.DataFrame({"item": ids[r], "worker": workers[c], "label": label.to_numpy()})
    out.attrs["items"] = list(pd.unique(ids))  # every row's item, those without a label too (an item on two rows once)
    if lines is not None:
        out.attrs["lines"] = FileLines(lines[r])
    return out


