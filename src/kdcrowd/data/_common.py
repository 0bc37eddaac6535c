"""The low-level pieces that :mod:`kdcrowd.data.annotations` and
:mod:`kdcrowd.data.readers` share: the error types, error-message helpers, the rules that
type ids and labels read from files (canonical integers become int64), answers-JSON
objects that repeat a key, and file-suffix helpers.

Imports go one way: ``annotations`` -> ``readers`` -> this module, which imports no other
module of the package.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

#: How many offending rows an error message shows.
_SHOW = 5
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")  # exactly str(int(s)) == s: not "-0", "007", "+1"


class AnnotationError(ValueError):
    """Invalid crowd annotations: the message says what, where, and how to fix it."""


class _MissingFileError(AnnotationError, FileNotFoundError):
    """A file to read does not exist (both an AnnotationError and a FileNotFoundError)."""


def _fmt(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _describe(
    rows: np.ndarray,
    columns: Mapping[str, Any],
    what: str | None = "row",
) -> str:
    """``"row 3 (item='a', worker=2, label=9); row 8 (...); ... and 7 more"``.

    ``columns`` maps a name to something indexable by position (numpy array or pandas
    Series); only the shown rows are materialised. ``what=None`` omits the row number.
    """
    rows = np.asarray(rows, dtype=np.int64)
    shown = rows[:_SHOW]
    values = {}
    for name, col in columns.items():
        if isinstance(col, pd.Series):
            values[name] = col.iloc[shown].to_numpy(dtype=object)
        else:
            values[name] = np.asarray(col)[shown]
    parts = []
    for k, r in enumerate(shown):
        desc = ", ".join(f"{name}={_fmt(v[k])}" for name, v in values.items())
        if what is None:
            parts.append(f"({desc})")
        else:
            parts.append(f"{what} {int(r)} ({desc})" if desc else f"{what} {int(r)}")
    text = "; ".join(parts)
    if rows.size > shown.size:
        text += f"; ... and {rows.size - shown.size} more"
    return text


def _fail_rows(
    problem: str,
    rows: np.ndarray,
    columns: Mapping[str, Any],
    fix: str,
    what: str = "row",
    number: bool = True,
) -> AnnotationError:
    rows = np.asarray(rows, dtype=np.int64)
    shown = _describe(rows, columns, what if number else None)
    return AnnotationError(f"{problem} in {_plural(int(rows.size), what)}: {shown}. {fix}")


def _fits_int64(values: Any) -> bool:
    """Whether integer values (python ints allowed) all lie within int64."""
    v = np.asarray(values)
    if v.size == 0:
        return True
    info = np.iinfo(np.int64)
    return bool(v.min() >= info.min and v.max() <= info.max)


def _is_int_label(v: Any) -> bool:
    """An int (not a bool) or a canonical integer string: a label that may become an int."""
    if isinstance(v, str):
        return _CANONICAL_INT.fullmatch(v) is not None
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _numeric_keys(keys: Sequence[Any]) -> np.ndarray:
    """JSON keys: convert when every one is a canonical integer string (``"12"``) and
    every one fits int64; otherwise they stay as they are (an id such as
    ``"123456789012345678901"`` stays a string)."""
    s = pd.Series(list(keys), dtype=object)
    if s.empty:
        return np.array([], dtype=object)
    kind = pd.api.types.infer_dtype(s, skipna=False)
    if kind == "mixed-integer" and all(_is_int_label(v) for v in s):
        s, kind = s.astype(str), "string"  # {"1": ..., 1: ...} in a dict: one key
    if kind == "integer" or (kind == "string" and bool(s.str.fullmatch(_CANONICAL_INT).all())):
        try:
            return s.astype(np.int64).to_numpy()
        except OverflowError:  # an integer beyond int64: keep every key as given
            pass
    return s.to_numpy(dtype=object)


def _scalar_values(series: pd.Series, name: str, show: Mapping[str, Any]) -> None:
    """Raise when an id or label column holds lists, dicts, sets, tuples or arrays (they
    cannot be ids or class values; pandas would fail on them with a bare TypeError)."""
    if series.dtype != object:
        return
    if pd.api.types.infer_dtype(series, skipna=True) not in ("mixed", "mixed-integer"):
        return  # only these kinds can hold containers: no per-row scan otherwise
    values = series.to_numpy()
    bad = np.flatnonzero(np.fromiter((not pd.api.types.is_scalar(v) for v in values),
                                     dtype=bool, count=values.size))
    if bad.size:
        kinds = "/".join(sorted({type(v).__name__ for v in values[bad]}))
        raise _fail_rows(
            f"column '{name}' holds {kinds} values", bad, show,
            f"Each {name} must be a single value (a number or a string); give one row per "
            "annotation.",
        )


def _one_type(series: pd.Series) -> pd.Series:
    """Ids or labels of mixed python types made comparable, so that ``1``, ``"1"`` and
    ``1.0`` are one value, not two: when every value is an int, a canonical integer string
    or an integer-valued float (and all fit int64) they become int64, otherwise every value
    becomes its text (``str(v)``).
    Columns of one type are returned as they are (no per-row work)."""
    if series.dtype != object:
        return series
    if pd.api.types.infer_dtype(series, skipna=False) not in ("mixed", "mixed-integer"):
        return series
    values = series.tolist()
    keys = [_int_text(v) for v in values]
    if all(k is not None for k in keys):
        ints = _numeric_keys(keys)
        if ints.dtype.kind == "i":
            return pd.Series(ints, index=series.index)
    return pd.Series([str(v) for v in values], index=series.index, dtype=object)


def _int_text(v: Any) -> str | None:
    """The integer text of an int, a canonical integer string or a float with an integer
    value (``1.0`` is ``1``, as a column of numbers alone is read: ``json.load`` gives 1,
    "1" and 1.0 for one answer); ``None`` for any other value."""
    return str(v) if _is_int_label(v) else _float_int_text(v)


def _float_int_text(v: Any) -> str | None:
    """The integer text of a float with an exact integer value (``1.0`` is ``"1"``; below
    2**53, where floats still hold every integer), else ``None``."""
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return None


class _Pairs(list):
    """A JSON object that repeats a key, kept as its ``(key, value)`` pairs in file order
    (``json.load`` would keep only the last value of each key)."""


def _object_pairs(pairs: list) -> Any:
    keys = [k for k, _ in pairs]
    return dict(pairs) if len(set(keys)) == len(keys) else _Pairs(pairs)


def _entries(obj: Any) -> list:
    """``(key, value)`` pairs of a JSON object (a Mapping or a :class:`_Pairs`)."""
    return list(obj) if isinstance(obj, _Pairs) else list(obj.items())


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in (".csv.gz", ".tsv.gz", ".json.gz", ".csv", ".tsv", ".parquet", ".pq", ".json"):
        if name.endswith(suf):
            return suf
    return ""


_SUFFIXES = ".csv, .csv.gz, .tsv, .tsv.gz, .parquet (.pq), .json, .json.gz"


def _separator_hint(columns: Sequence[Any]) -> str:
    """" The file looks ';'-separated ..." when a table came out as one column whose name
    holds another separator (a TSV or a semicolon CSV read as CSV), else ""."""
    if len(columns) != 1:
        return ""
    name = str(columns[0])
    for sep, word in (("\t", "tab"), (";", "semicolon"), ("|", "'|'"), (",", "comma")):
        if sep in name:
            return (f" The file was read as one column {name!r}: it looks {word}-separated; "
                    "save it comma-separated with a .csv suffix or tab-separated with a .tsv "
                    "suffix.")
    return ""


#: A quote opening a field (or a read chunk: then the Python scan decides); a quote inside a
#: field is a character under either reading.
_FIELD_QUOTE = re.compile(rb'(?:\A|[\t\n\r])"')


def read_parquet_table(path: Path) -> pd.DataFrame:
    """A Parquet file as a table of every column it stores, its rows numbered 0..n-1: the one
    way every reader here reads Parquet (crowd labels, features, texts, gold and truth).

    pandas reads the index a DataFrame was written with back as the index
    (``df.set_index("item").to_parquet(...)`` stores ``item`` in the file): a named index (each
    named level) is a column again, unless a column of that name is stored too
    (``set_index(..., drop=False)``); an unnamed one (the row labels of a filtered frame) is
    dropped, as ``to_parquet(index=False)`` would have."""
    df = pd.read_parquet(path)
    named = [n for n in df.index.names if n is not None and n not in df.columns]
    if named:
        df = df.reset_index(level=named)
    if not _row_numbers(df.index):
        df = df.reset_index(drop=True)
    return df


def _row_numbers(index: pd.Index) -> bool:
    """Whether a DataFrame's ``index`` is the plain ``0..N-1`` range (pandas' default), which
    names no items; any other index, a range that starts elsewhere or steps otherwise
    included (``X.iloc[20:]``: ``20..N+19``), holds the items' ids."""
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


def tsv_quoting(path: Path) -> int:
    r"""How to read a TSV file's quotes: as CSV quoting (``QUOTE_MINIMAL``) when the file is
    quoted that way (pandas' ``to_csv(sep="\t")`` quotes the texts with a quote, a tab or a
    line break in them), else as characters of the texts (``QUOTE_NONE``: plain TSV has no
    quoting, and a text such as ``"Great" movie`` or one opening a quote it never closes is
    its own characters; read as CSV quoting, the second swallows the rows after it). Used
    for every TSV file read: texts, annotation tables, gold and truth, platform exports.

    The file is quoted when Python's strict CSV reader reads it and no field holds both a
    line break and a tab (a field spanning rows holds the tabs of the rows it swallowed).
    Python's reader because pandas has no strict mode: it reads ``"Great" movie`` as
    ``Great movie``. One case cannot be told apart: a quoted text holding both a tab and a
    line break is, byte for byte, a text opening a quote it never closes followed by rows; it
    is read as plain TSV (its rows then lack ids or columns: an error, not a silent misread)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as raw:  # no field opening with a quote (most TSV files): both readings are one; no scan in Python
        if not any(_FIELD_QUOTE.search(chunk) for chunk in iter(lambda: raw.read(1 << 20), b"")):
            return csv.QUOTE_MINIMAL
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # texts longer than the reader's default 128 KiB; restored below
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            for row in csv.reader(fh, delimiter="\t", strict=True):
                if any("\n" in field and "\t" in field for field in row):
                    return csv.QUOTE_NONE
    except csv.Error:
        return csv.QUOTE_NONE
    finally:
        csv.field_size_limit(limit)
    return csv.QUOTE_MINIMAL
