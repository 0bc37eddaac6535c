"""Property-based tests (hypothesis) of the loaders: bad input never crashes deep inside
pandas / numpy / pyarrow / Pillow.

Every loader of :mod:`kdcrowd.data.annotations` and :mod:`kdcrowd.data.items` is fed
generated crowd-label tables, answers JSON, feature files and image folders, good and
bad. Each call must either

* succeed with a result consistent with its input (checked per property), or
* raise ONE error of kdcrowd's own - ``AnnotationError`` / ``ValueError`` /
  ``FileNotFoundError``, raised by kdcrowd's code (never a pandas, numpy, pyarrow, gzip
  or Pillow exception, not even one that subclasses ValueError) - whose message names the
  problem (the column, row, value or file) and says how to fix it.

Numpy overflow / invalid-cast warnings are errors here: they mean a value was silently
wrapped around or turned into garbage.

The examples per test are few (the whole file runs in well under 40 s on 2 cores);
``KDCROWD_PROPERTY_SCALE=20 pytest tests/test_properties.py`` runs 20 times as many for a
deeper search. ``database=None`` keeps hypothesis from writing a ``.hypothesis`` folder.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kdcrowd.data.annotations import AnnotationError, Annotations
from kdcrowd.data.readers import _NA_WORDS
from kdcrowd.data.items import (
    image_item_ids,
    list_image_files,
    load_images,
    match_image_ids,
    read_annotation_frame,
    read_features,
    read_item_ids,
    read_item_labels,
)

pytestmark = pytest.mark.filterwarnings(
    "error:overflow encountered:RuntimeWarning",
    "error:invalid value encountered in cast:RuntimeWarning",
)

DATA_DIR = Path(__import__("kdcrowd.data", fromlist=["x"]).__file__).resolve().parent


SCALE = float(os.environ.get("KDCROWD_PROPERTY_SCALE", "1"))


def props(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ----------------------------------------------------------------------------- the error contract

KD_ERRORS = (AnnotationError, ValueError, FileNotFoundError)
#: words of a message that says how to fix the problem
FIX = re.compile(
    r"\b(pass|drop|give|use|save|add|remove|rename|fill|check|write|declare|name|fix|point|"
    r"quote|provide|keep|split|set|expected|must|needs?|should|only|rebuild|convert|replace|encode|choose|select)\b",
    re.IGNORECASE,
)


def assert_clean_error(exc: BaseException, *needles: str) -> str:
    """``exc`` is one of kdcrowd's own errors, raised by kdcrowd's code, with a message that
    says what is wrong (``needles``) and how to fix it. Returns the message."""
    assert type(exc).__module__.startswith("kdcrowd") or type(exc) in (ValueError, FileNotFoundError), (
        f"not kdcrowd's own error: {type(exc).__module__}.{type(exc).__name__}: {exc}"
    )
    frames = traceback.extract_tb(exc.__traceback__)
    assert frames and Path(frames[-1].filename).resolve().parent == DATA_DIR, (
        f"raised outside kdcrowd.data: {frames[-1].filename if frames else '?'}: {exc}"
    )
    msg = str(exc)
    assert len(msg) >= 25, msg
    assert FIX.search(msg), f"the message does not say how to fix it: {msg}"
    for n in needles:
        assert n in msg, f"{n!r} not in: {msg}"
    return msg


def outcome(fn, *args, **kw) -> tuple[Any, BaseException | None]:
    """``(result, None)`` or ``(None, error)`` after checking the error is a clean one; any
    other exception propagates and fails the test."""
    try:
        return fn(*args, **kw), None
    except KD_ERRORS as exc:
        assert_clean_error(exc)
        return None, exc


def expect_error(fn, *args, needles: tuple[str, ...] = (), **kw) -> str:
    result, exc = outcome(fn, *args, **kw)
    assert exc is not None, f"expected an error, got {result!r}"
    return assert_clean_error(exc, *needles)


def setcell(df: pd.DataFrame, row: int, col: str, value: Any) -> None:
    """``df[col][row] = value`` for any value (pandas refuses to put a dict or list with .loc)."""
    values = df[col].tolist()
    values[row] = value
    df[col] = pd.Series(values, index=df.index, dtype=object)


def text(v: Any) -> str:
    """A value as the text a file would hold (whole-number floats without ``.0``)."""
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v.item() if isinstance(v, np.generic) else v)


def rows_as_text(a: Annotations) -> list[tuple[str, str, str]]:
    return sorted((text(i), text(w), text(lab)) for i, w, lab in a.to_long().itertuples(index=False))


def ids_as_text(ids: Any) -> list[str]:
    return [text(v) for v in np.asarray(ids, dtype=object).tolist()]


def assert_consistent(a: Annotations) -> None:
    """Invariants every Annotations object must satisfy."""
    for arr, n in ((a.item, a.n_items), (a.worker, a.n_workers), (a.label, a.n_classes)):
        assert arr.dtype == np.int64 and arr.size == len(a)
        assert arr.size == 0 or (arr.min() >= 0 and arr.max() < n)
    assert len(a.item_ids) == a.n_items and len(a.worker_ids) == a.n_workers and len(a.classes) == a.n_classes
    for ids in (a.item_ids, a.worker_ids, a.classes):
        assert pd.Index(ids).is_unique
        assert ids.dtype.kind in "iufO", ids.dtype  # never fixed-width numpy strings


# ----------------------------------------------------------------------------- strategies

#: ids that pandas or a careless reader would mangle
TRICKY_IDS = [
    "0017", "007", "0", "-0", "+1", "1e5", "1E5", "0x1A", "1.0", "1.50", " ", "NA", "N/A", "null", "None",
    "nan", "NaN", "inf", "-inf", "True", "false", "#1", "a,b", 'say "hi"', "tab\there", "new\nline",
    "ü", "猫", "кот", "😀", "١٢", "１２", "x" * 200, str(2**70), str(2**64 - 1), str(-(2**63) - 1),
]
#: label names pandas will not turn into numbers, booleans or missing values (a *label*
#: written as one of pandas' missing-value words, _NA_WORDS, reads as missing)
_NOT_NAMES = {w.lower() for w in _NA_WORDS} | {"true", "false"}


def _is_name(s: str) -> bool:
    if s.lower() in _NOT_NAMES or s.strip() != s or not s:
        return False
    try:
        float(s)
        return False
    except ValueError:
        return True


_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn"))
text_ids = st.one_of(
    st.sampled_from([t for t in TRICKY_IDS if t.strip() == t and t]),
    st.text(_CHARS, min_size=1, max_size=10).filter(lambda s: s.strip() == s and s != ""),
)
int_ids = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 17, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**70, -(2**70)]),
)
label_names = st.one_of(
    st.sampled_from(["cat", "dog", "bird", "x1", "ü", "猫", "a b", "a,b", "0x1A", "n/a!"]),
    st.text(_CHARS, min_size=1, max_size=8).filter(_is_name),
)


@st.composite
def id_lists(draw, n: int, kind: str | None = None) -> list:
    """``n`` distinct ids of one kind: text, int (huge ones included) or mixed int/text."""
    kind = kind or draw(st.sampled_from(["text", "int", "small", "mixed"]))
    if kind == "text":
        base = st.lists(text_ids, min_size=n, max_size=n, unique=True)
    elif kind == "int":
        base = st.lists(int_ids, min_size=n, max_size=n, unique=True)
    elif kind == "small":
        base = st.lists(st.integers(0, 10**6), min_size=n, max_size=n, unique=True)
    else:  # ints and texts; unique also as text (1 and "1" are one id)
        base = st.lists(st.one_of(st.integers(0, 10**6), text_ids), min_size=n, max_size=n, unique_by=str)
    return draw(base)


@st.composite
def crowd_tables(draw, max_items: int = 8, max_workers: int = 6, names: bool | None = None) -> dict:
    """A valid long table: distinct (item, worker) pairs, every item labelled, K classes
    (K = 1, 2, a few or 100), labels as ints 0..K-1 or class names."""
    n_items = draw(st.integers(1, max_items))
    n_workers = draw(st.integers(1, max_workers))
    items = draw(id_lists(n_items))
    workers = draw(id_lists(n_workers))
    k = draw(st.sampled_from([1, 2, 3, 5, 100]))
    names = draw(st.booleans()) if names is None else names
    classes = draw(st.lists(label_names, min_size=k, max_size=k, unique=True)) if names else list(range(k))
    rows = []
    for i in range(n_items):
        who = draw(st.lists(st.integers(0, n_workers - 1), min_size=1, max_size=n_workers, unique=True))
        for w in who:
            rows.append((items[i], workers[w], classes[draw(st.integers(0, k - 1))]))
    rows = draw(st.permutations(rows))
    df = pd.DataFrame({
        "item": pd.Series([r[0] for r in rows], dtype=object),
        "worker": pd.Series([r[1] for r in rows], dtype=object),
        "label": pd.Series([r[2] for r in rows], dtype=object),
    })
    for col in ("item", "worker", "label"):
        kinds = {type(v) for v in df[col]}
        if kinds == {int} and all(-(2**63) <= v < 2**63 for v in df[col]):
            df[col] = df[col].astype(np.int64)
    return {"df": df, "classes": classes, "names": names}


# ----------------------------------------------------------------------------- in-memory round trips


@props(60)
@given(crowd_tables())
def test_from_long_is_consistent_and_round_trips(t):
    df = t["df"]
    a = Annotations.from_long(df)
    assert_consistent(a)
    assert len(a) == len(df) and a.n_items == df["item"].map(str).nunique() and a.n_workers == df["worker"].map(str).nunique()
    # every annotation is one of the input rows (as text), in input order
    assert [tuple(map(text, r)) for r in a.to_long().itertuples(index=False)] == [tuple(map(text, r)) for r in df.itertuples(index=False)]
    if not t["names"]:
        assert a.classes.tolist() == list(range(int(df["label"].max()) + 1))  # 0..max
    assert Annotations.from_long(a.to_long()) == a
    assert Annotations.from_long(a.to_crowdkit()) == a
    # wide <-> long agree
    w = a.to_wide()
    assert w.shape == (a.n_items, a.n_workers) and (w >= 0).sum() == len(a)
    b = Annotations.from_wide(w, classes=a.classes, item_ids=a.item_ids, worker_ids=a.worker_ids)
    assert b == a.sorted()
    assert Annotations.from_wide(a.to_wide(missing=np.nan), missing=np.nan, classes=a.classes,
                                 item_ids=a.item_ids, worker_ids=a.worker_ids) == b
    # answers.json in memory: same annotations, ids compared as text
    c = Annotations.from_answers_json(a.to_answers_json(), classes=a.classes)
    assert_consistent(c)
    assert rows_as_text(c) == rows_as_text(a) and ids_as_text(c.item_ids) == ids_as_text(a.item_ids)
    assert c.n_classes == a.n_classes
    # declared items/workers/classes in another order (and as text) give the same rows
    items = [str(v) for v in a.item_ids[::-1]]
    d = Annotations.from_long(df, items=items + ["never-labelled"], classes=a.classes[::-1])
    assert d.n_items == a.n_items + 1 and d.labels_per_item()[-1] == 0
    assert rows_as_text(d) == rows_as_text(a)


SUFFIXES = [".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet", ".json", ".json.gz"]


@props(40)
@given(crowd_tables(names=False), st.sampled_from(SUFFIXES))
def test_file_round_trip_int_labels(t, suffix):
    _file_round_trip(Annotations.from_long(t["df"]), suffix)


@props(30)
@given(crowd_tables(names=True), st.sampled_from(SUFFIXES))
def test_file_round_trip_named_classes(t, suffix):
    _file_round_trip(Annotations.from_long(t["df"]), suffix)


def _file_round_trip(a: Annotations, suffix: str) -> None:
    """Annotations -> write -> read gives the same annotations, ids compared as text; with
    the ids and classes declared, the very same dense arrays."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"ann{suffix}"
        a.write(path)
        b = Annotations.read(path)
        assert_consistent(b)
        assert rows_as_text(b) == rows_as_text(a)
        assert sorted(ids_as_text(b.item_ids)) == sorted(ids_as_text(a.item_ids))
        assert sorted(ids_as_text(b.worker_ids)) == sorted(ids_as_text(a.worker_ids))
        # ids come back typed column by column: a text file's (or answers.json's) ids are
        # int64 when every id of the column is written as a canonical integer within int64
        # ("17", not "0017", "1e5" or 2**70), otherwise all of them are the text as written;
        # Parquet keeps the column's int type and writes any other ids as text
        for got, given in ((b.item_ids, a.item_ids), (b.worker_ids, a.worker_ids)):
            if suffix == ".parquet":
                ints = given.dtype.kind in "iu"
            else:
                ints = all(re.fullmatch(r"0|-?[1-9][0-9]*", t) and -(2**63) <= int(t) < 2**63 for t in ids_as_text(given))
            if ints:
                assert got.dtype.kind in "iu", (suffix, given, got)
            else:
                assert all(isinstance(v, str) for v in got.tolist()), (suffix, given, got)
        if suffix.startswith(".json"):
            c = Annotations.read(path, classes=a.classes)
            assert rows_as_text(c) == rows_as_text(a) and ids_as_text(c.item_ids) == ids_as_text(a.item_ids)
        else:
            c = Annotations.read(path, items=a.item_ids, workers=a.worker_ids, classes=a.classes)
            assert c == a or (rows_as_text(c) == rows_as_text(a) and np.array_equal(c.item, a.item)
                              and np.array_equal(c.worker, a.worker) and np.array_equal(c.label, a.label))
        # the CLI's path: ids as text, declared as text
        frame = read_annotation_frame(path)
        for col in ("item", "worker"):
            assert all(isinstance(v, str) for v in frame[col])
        d = Annotations.from_long(frame, items=ids_as_text(a.item_ids), classes=a.classes)
        assert rows_as_text(d) == rows_as_text(a) and np.array_equal(np.sort(d.item), np.sort(a.item))


# ----------------------------------------------------------------------------- bad long tables

MUTATIONS = [
    "nan", "negative", "float_label", "integral_float", "unknown_label", "text_one", "duplicate",
    "conflict", "huge_label", "list_label", "drop_column", "rename_column", "items_missing",
    "items_extra", "none_id", "bool_label",
]


@props(120)
@given(crowd_tables(names=False), st.sampled_from(MUTATIONS), st.sampled_from(["error", "first", "last", "keep"]), st.data())
def test_bad_long_tables_fail_cleanly_or_load_consistently(t, mutation, policy, data):
    df = t["df"].copy()
    for col in df.columns:
        df[col] = df[col].astype(object)
    n = len(df)
    r = data.draw(st.integers(0, n - 1), label="row")
    kw: dict[str, Any] = {"duplicates": policy}
    expect: tuple[str, ...] | None = None  # needles of the expected error; None: must load
    if mutation == "nan":
        col = data.draw(st.sampled_from(["item", "worker", "label"]))
        setcell(df, r, col, data.draw(st.sampled_from([np.nan, None, pd.NA])))
        expect = ("missing values", f"row {r} ", col)
    elif mutation == "negative":
        setcell(df, r, "label", data.draw(st.integers(-(2**70), -1)))
        expect = ("negative labels", f"row {r} ")
    elif mutation == "float_label":
        setcell(df, r, "label", data.draw(st.sampled_from([0.5, 1.25, np.inf, -np.inf, 1e-300])))
        expect = ("non-integer", f"row {r} ")
    elif mutation == "integral_float":
        setcell(df, r, "label", float(df.loc[r, "label"]))
    elif mutation == "unknown_label":
        kw["classes"] = t["classes"]
        setcell(df, r, "label", data.draw(st.sampled_from([len(t["classes"]), "zebra", 10**30])))
        expect = ("outside the declared classes", f"row {r} ")
    elif mutation == "text_one":  # "1" next to 1: one class
        setcell(df, r, "label", str(df.loc[r, "label"]))
    elif mutation in ("duplicate", "conflict"):
        extra = df.iloc[[r]].copy()
        if mutation == "conflict":
            extra["label"] = (int(extra["label"].iloc[0]) + 1) % max(len(t["classes"]), 2)
        at = data.draw(st.integers(0, n))
        df = pd.concat([df.iloc[:at], extra, df.iloc[at:]], ignore_index=True)
        if policy == "error":
            first, second = (r, at) if at > r else (at, r + 1)
            expect = ("duplicate (item, worker) pairs", f"row {first} ", f"row {second} ", "duplicates='first'")
    elif mutation == "huge_label":
        setcell(df, r, "label", data.draw(st.sampled_from([2**63, 2**64 + 1, 2**70, 10**4, 1e20])))
        expect = ("as large as", f"row {r} ", "classes=")
    elif mutation == "list_label":
        setcell(df, r, "label", data.draw(st.sampled_from([[1], [0, 1], {"a": 1}, (1,), {1}])))
        expect = ("column 'label' holds", f"row {r} ")
    elif mutation == "drop_column":
        col = data.draw(st.sampled_from(["item", "worker", "label"]))
        df = df.drop(columns=[col])
        expect = ("missing column(s)", repr(col))
    elif mutation == "rename_column":
        col = data.draw(st.sampled_from(["item", "worker", "label"]))
        df = df.rename(columns={col: col.upper()})
        expect = ("missing column(s)", repr(col), col.upper())
    elif mutation == "items_missing":
        gone = df.loc[r, "item"]
        kw["items"] = [v for v in pd.unique(df["item"]) if str(v) != str(gone)]
        bad_rows = [i for i, v in enumerate(df["item"]) if str(v) == str(gone)]
        expect = ("items that have no features", f"row {bad_rows[0]} ", repr(gone) if not isinstance(gone, (int, np.integer)) else str(gone))
    elif mutation == "items_extra":
        kw["items"] = list(pd.unique(df["item"])) + ["unlabelled-1", "unlabelled-2"]
    elif mutation == "none_id":
        col = data.draw(st.sampled_from(["item", "worker"]))
        setcell(df, r, col, None)
        expect = ("missing values", f"row {r} ")
    elif mutation == "bool_label":  # booleans are names, not 0/1: mixed with ints they are text
        setcell(df, r, "label", True)

    result, exc = outcome(Annotations.from_long, df, **kw)
    if expect is not None:
        assert exc is not None, f"{mutation}: expected an error, loaded {result!r}"
        assert_clean_error(exc, *expect)
        return
    assert exc is None, f"{mutation}: {exc}"
    a = result
    assert_consistent(a)
    given_rows = [tuple(map(text, row)) for row in df[["item", "worker", "label"]].itertuples(index=False)]
    got = [tuple(map(text, row)) for row in a.to_long().itertuples(index=False)]
    if mutation in ("duplicate", "conflict"):
        key = df["item"].map(str) + "\x00" + df["worker"].map(str)
        if policy == "keep":
            assert got == given_rows and a.has_duplicates
        else:
            kept = ~key.duplicated(keep=policy).to_numpy()
            assert got == [g for g, k in zip(given_rows, kept) if k] and not a.has_duplicates
        return
    assert got == given_rows
    if mutation == "integral_float" or (mutation == "text_one" and any(isinstance(v, (int, np.integer)) for v in df["label"])):
        assert a == Annotations.from_long(t["df"], duplicates=policy)  # 2.0 is 2; "1" next to 1 is 1
    if mutation == "items_extra":
        assert a.n_items == len(kw["items"]) and a.labels_per_item()[-2:].tolist() == [0, 0]


@props(40)
@given(crowd_tables(max_items=4, max_workers=3), st.integers(2, 4), st.data())
def test_duplicate_policies(t, copies, data):
    """Each (item, worker) pair repeated with labels drawn at random: 'error' names every
    repeated row, 'first'/'last' keep the first/last label of each pair, 'keep' all."""
    df = t["df"]
    reps = [data.draw(st.integers(1, copies)) for _ in range(len(df))]
    big = df.loc[df.index.repeat(reps)].reset_index(drop=True).astype(object)
    k = len(t["classes"])
    big["label"] = [t["classes"][data.draw(st.integers(0, k - 1))] for _ in range(len(big))]
    big = big.iloc[data.draw(st.permutations(range(len(big))))].reset_index(drop=True)
    key = big["item"].map(str) + "\x00" + big["worker"].map(str)
    dup_rows = np.flatnonzero(key.duplicated(keep=False).to_numpy())
    if dup_rows.size:
        msg = expect_error(Annotations.from_long, big, needles=("duplicate (item, worker) pairs", f"in {dup_rows.size} rows"))
        shown = [int(m) for m in re.findall(r"row (\d+) \(", msg)]
        assert set(shown) <= set(dup_rows.tolist()) and len(shown) == min(5, dup_rows.size)
    else:
        assert len(Annotations.from_long(big)) == len(big)
    rows = [tuple(map(text, r)) for r in big.itertuples(index=False)]
    for policy in ("first", "last"):
        a = Annotations.from_long(big, duplicates=policy)
        assert_consistent(a)
        kept = ~key.duplicated(keep=policy).to_numpy()
        assert [tuple(map(text, r)) for r in a.to_long().itertuples(index=False)] == [r for r, k in zip(rows, kept) if k]
        assert not a.has_duplicates and len(a) == len(df)
    keep = Annotations.from_long(big, duplicates="keep")
    assert len(keep) == len(big) and keep.has_duplicates == bool(dup_rows.size)
    if keep.has_duplicates:
        expect_error(keep.to_wide, needles=("duplicate",))
        expect_error(keep.to_answers_json, needles=("duplicate",))


@props(30)
@given(st.integers(1, 30), st.sampled_from([1, 2, 100]), st.sampled_from(["one_worker", "one_class", "both"]), st.data())
def test_single_worker_single_class_and_many_classes(n_items, k, case, data):
    workers = 1 if case in ("one_worker", "both") else data.draw(st.integers(2, 5))
    labels = [0] * n_items if case in ("one_class", "both") else [data.draw(st.integers(0, k - 1)) for _ in range(n_items)]
    if k == 100 and case not in ("one_class", "both"):
        labels[0] = 99  # K = 100 inferred from the largest label
    df = pd.DataFrame({"item": [f"{i:04d}" for i in range(n_items)], "worker": [f"w{i % workers}" for i in range(n_items)], "label": labels})
    a = Annotations.from_long(df)
    assert_consistent(a)
    assert a.n_workers == min(workers, n_items) and a.n_classes == max(labels) + 1
    assert a.item_ids.tolist() == [f"{i:04d}" for i in range(n_items)]  # leading zeros kept
    b = Annotations.from_long(df, classes=list(range(k)))
    assert b.n_classes == k and b.vote_counts().sum() == n_items
    named = Annotations.from_long(df.assign(label=df["label"].map(lambda v: f"c{v}")))
    assert named.n_classes == len(set(labels))


# ----------------------------------------------------------------------------- wide matrices


@props(60)
@given(
    st.integers(0, 5), st.integers(0, 5),
    st.sampled_from(["int64", "int8", "uint8", "uint64", "float64", "float32", "object", "bool", "str", "complex"]),
    st.data(),
)
def test_from_wide_any_matrix(n, m, dtype, data):
    cells = st.one_of(st.integers(-3, 12), st.sampled_from([np.nan, np.inf, 0.5, 1e300, -1e300, 2**64 - 1, 2**70]))
    values = [[data.draw(cells) for _ in range(m)] for _ in range(n)]
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # the test's own cast, not kdcrowd's
            arr = np.array(values, dtype=object).reshape(n, m).astype(dtype)
    except (ValueError, TypeError, OverflowError):
        arr = np.array(values, dtype=object).reshape(n, m)
    missing = data.draw(st.sampled_from([-1, np.nan, 9]))
    a, exc = outcome(Annotations.from_wide, arr, missing=missing)

    def kind(x: Any) -> str:
        """'missing', 'label' (a class index 0..12) or 'other' (anything else)."""
        if isinstance(x, (bool, np.bool_, str, np.str_, complex, np.complexfloating)):
            return "other"
        f = float(x)
        if np.isnan(f) or f == missing:
            return "missing"
        return "label" if f.is_integer() and 0 <= f <= 12 else "other"

    kinds = {kind(x) for x in arr.ravel().tolist()}
    if arr.dtype.kind in "iufO" and "label" in kinds and kinds <= {"label", "missing"}:
        assert exc is None, f"a valid {arr.dtype} matrix failed: {exc}"  # numbers 0..12, missing or NaN
    if a is None:
        return
    assert_consistent(a)
    assert (a.n_items, a.n_workers) == (n, m)
    # every annotation is a non-missing entry, every non-missing entry an annotation
    entries = {(i, j) for i in range(n) for j in range(m)
               if not (isinstance(arr[i, j], float) and np.isnan(arr[i, j])) and not pd.isna(arr[i, j]) and arr[i, j] != missing}
    assert set(zip(a.item.tolist(), a.worker.tolist())) == entries
    for i, j, lab in zip(a.item, a.worker, a.label):
        assert float(arr[i, j]) == float(lab)


# ----------------------------------------------------------------------------- answers.json

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from([2**70, 1.5, 2.0, "1", "01", "cat", "", "NA"]), st.text(max_size=3))
json_values = st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=3), c, max_size=3)), max_leaves=8)


@props(80)
@given(st.one_of(
    json_values,
    st.dictionaries(text_ids, json_values, max_size=4),
    st.dictionaries(text_ids, st.dictionaries(text_ids, json_scalars, max_size=4), max_size=5),
))
def test_answers_json_any_structure(obj):
    a, exc = outcome(Annotations.from_answers_json, obj, duplicates="keep")
    if a is not None:
        assert_consistent(a)
        assert isinstance(obj, dict)
        assert len(a) == sum(len(v) for v in obj.values())
        assert a.n_items == len(obj)
        assert ids_as_text(a.item_ids) == [text(k) for k in obj]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("a.json", "a.json.gz"):
            path = Path(tmp) / name
            raw = json.dumps(obj).encode()
            path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
            b, exc2 = outcome(Annotations.read, path, duplicates="keep")
            assert (b is None) == (a is None)
            if b is not None:
                assert rows_as_text(b) == rows_as_text(a)
            outcome(read_annotation_frame, path)


@props(30)
@given(st.lists(st.tuples(st.sampled_from(["i1", "i2", "0017"]), st.sampled_from(["w1", "w2"]), st.integers(0, 2)), min_size=1, max_size=8))
def test_answers_json_repeated_keys_keep_every_annotation(entries):
    """A file that repeats item keys (and workers within an item) keeps all its answers."""
    body = ", ".join(f'"{i}": {{"{w}": {lab}}}' for i, w, lab in entries)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.json"
        path.write_text("{" + body + "}")
        a = Annotations.read(path, duplicates="keep")
        assert sorted(rows_as_text(a)) == sorted((i, w, str(lab)) for i, w, lab in entries)
        assert a.item_ids.tolist() == list(dict.fromkeys(i for i, _, _ in entries))
        pairs = [(i, w) for i, w, _ in entries]
        if len(set(pairs)) < len(pairs):
            expect_error(Annotations.read, path, needles=("duplicate (item, worker) pairs",))
        else:
            assert len(Annotations.read(path)) == len(entries)


# ----------------------------------------------------------------------------- bad files


#: files among the samples below that must load, by suffix (without .gz): one annotation a, b, 1
VALID_FILES = {
    ".csv": (b"task,worker,label\na,b,1\n", b"\xef\xbb\xbfitem,worker,label\na,b,1\n"),
    ".tsv": (b"item\tworker\tlabel\na\tb\t1\n",),
    ".json": (b'{"a": {"b": 1}}',),
}


@props(60)
@example(".csv", b"task,worker,label\na,b,1\n")
@example(".csv.gz", b"\xef\xbb\xbfitem,worker,label\na,b,1\n")
@example(".tsv", b"item\tworker\tlabel\na\tb\t1\n")
@example(".json.gz", b'{"a": {"b": 1}}')
@given(st.sampled_from(SUFFIXES), st.one_of(
    st.binary(max_size=200),
    st.sampled_from([
        b"", b"\n", b"item,worker,label\n", b"item,worker\na,b\n", b"task,worker,label\na,b,1\n",
        b"Item,Worker,Label\na,b,1\n", b"item\tworker\tlabel\na\tb\t1\n", b"item;worker;label\na;b;1\n",
        b"item,worker,label\na,b,1,2\n", b"item,worker,label\na,b,1\nc,d,1,2\n", b"item,worker,label\na,b\n",
        b"item,item,worker,label\na,b,c,1\n", b'item,worker,label\n"a,b,1\n', b"\xef\xbb\xbfitem,worker,label\na,b,1\n",
        "item,worker,label\n\xe9,b,1\n".encode("latin-1"), b"{}", b"[]", b'{"a": 1}', b'{"a": {"w": [1]}}', b"null",
        b'{"a": {"w": 1}, "a": {"w": 2}}', b'{"a": {"b": 1}}', b"PAR1\x00\x00PAR1",
    ]),
))
def test_any_file_fails_cleanly_or_loads(suffix, content):
    valid = content in VALID_FILES.get(suffix.removesuffix(".gz"), ())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"ann{suffix}"
        path.write_bytes(gzip.compress(content) if suffix.endswith(".gz") and content[:1] != b"\x00" else content)
        a, exc = outcome(Annotations.read, path)
        if valid:
            assert exc is None, f"a valid {suffix} file failed: {exc}"
            assert rows_as_text(a) == [("a", "b", "1")]
        if a is not None:
            assert_consistent(a)
        frame, exc2 = outcome(read_annotation_frame, path)
        assert exc2 is None or not valid, f"a valid {suffix} file failed: {exc2}"
        if frame is not None:
            b, exc3 = outcome(Annotations.from_long, frame)
            if valid:
                assert exc3 is None and rows_as_text(b) == [("a", "b", "1")], exc3
            if b is not None:
                assert_consistent(b)
                for v in b.item_ids.tolist() + b.worker_ids.tolist():
                    assert isinstance(v, str)
        outcome(read_item_labels, path, ["a", "b"], [0, 1])
        outcome(read_features, path)


@pytest.mark.parametrize("content, needles", [
    (b"", ("is empty",)),
    (b"item,worker,label\n", ("no annotations", "0 rows")),
    (b"item,worker\na,b\n", ("missing column(s) ['label']",)),
    (b"Item,Worker,Label\na,b,1\n", ("missing column(s)", "'Item'")),
    (b"item;worker;label\na;b;1\n", ("semicolon-separated",)),
    (b"item\tworker\tlabel\na\tb\t1\n", ("tab-separated",)),
    (b"item,worker,label\na,b,1\nc,d,1,2\n", ("Expected 3 fields in line 3, saw 4",)),
])
def test_structural_file_problems_are_named(tmp_path, content, needles):
    path = tmp_path / "a.csv"
    path.write_bytes(content)
    expect_error(Annotations.read, path, needles=needles)
    expect_error(lambda p: Annotations.from_long(read_annotation_frame(p)), path, needles=needles)


def test_tsv_and_csv_and_parquet_agree(tmp_path):
    df = pd.DataFrame({"item": ["0017", "a b", "猫"], "worker": ["NA", "007", "w"], "label": [0, 2, 1]})
    got = []
    for name in ("a.csv", "a.tsv", "a.csv.gz", "a.parquet"):
        Annotations.from_long(df).write(tmp_path / name)
        got.append(Annotations.read(tmp_path / name))
    assert all(g == got[0] for g in got)
    assert got[0].item_ids.tolist() == ["0017", "a b", "猫"] and got[0].worker_ids.tolist() == ["007", "NA", "w"]
    expect_error(Annotations.read, tmp_path / "missing.csv", needles=("not found",))
    with pytest.raises(FileNotFoundError):
        Annotations.read(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- features


@props(60)
@given(
    st.sampled_from([(4, 3), (1, 1), (3,), (2, 2, 2), (0, 3), (3, 0), ()]),
    st.sampled_from(["float64", "float32", "float16", "int64", "uint8", "bool", "complex64", "U3", "M8[s]"]),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.sampled_from([np.nan, np.inf, -np.inf, 1e39])), max_size=2),
)
def test_read_features_npy(shape, dtype, holes):
    X = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    if dtype.startswith("float") and X.ndim == 2:
        for r, c, v in holes:
            if r < X.shape[0] and c < X.shape[1]:
                X[r, c] = v
    with np.errstate(over="ignore", invalid="ignore"):
        X = X.astype(dtype) if not dtype.startswith("U") else X.astype(int).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, X)
        result, exc = outcome(read_features, path)
        ok = X.ndim == 2 and X.shape[0] > 0 and X.shape[1] > 0 and X.dtype.kind in "biuf"
        if ok and X.dtype.kind == "f":
            with np.errstate(over="ignore"):
                ok = bool(np.isfinite(X.astype(np.float32)).all())
        if not ok:
            msg = assert_clean_error(exc, str(path)) if exc else pytest.fail(f"{shape} {dtype}: loaded {result}")
            if X.ndim == 2 and X.dtype.kind == "f" and X.size:
                x64 = X.astype(np.float64)  # one error names both kinds of bad rows, each with its count and first row
                big = np.flatnonzero((np.isfinite(x64) & (np.abs(x64) > np.finfo(np.float32).max)).any(axis=1))
                missing = np.flatnonzero(~np.isfinite(x64).all(axis=1))
                if big.size:
                    assert f"float32 range (±3.4028235e38) for {big.size} item(s): {big[0]} (column" in msg
                if missing.size:
                    assert f"missing or infinite values for {missing.size} item(s): {missing[0]} (column" in msg
            return
        assert exc is None
        ids, got = result
        assert got.dtype == np.float32 and got.shape == X.shape and np.isfinite(got).all()
        assert ids.tolist() == [str(i) for i in range(X.shape[0])]
        np.testing.assert_allclose(got, X.astype(np.float32))


@props(40)
@given(st.integers(1, 6), st.integers(0, 9), st.sampled_from(["", "\n", "\n\n", "\r\n"]), st.booleans(), st.booleans(), st.data())
def test_read_features_with_item_id_file(n_rows, n_ids, tail, blank_inside, dup, data):
    ids = data.draw(st.lists(text_ids.filter(lambda s: "\n" not in s and "\r" not in s and s.strip()), min_size=n_ids, max_size=n_ids, unique=True))
    if dup and len(ids) >= 2:
        ids[-1] = ids[0]
    lines = list(ids)
    if blank_inside and len(lines) >= 2:
        lines.insert(1, "   ")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", np.ones((n_rows, 2)))
        (Path(tmp) / "ids.txt").write_text("\n".join(lines) + tail, encoding="utf-8")
        result, exc = outcome(read_features, Path(tmp) / "x.npy", item_ids=Path(tmp) / "ids.txt")
        if blank_inside and len(lines) >= 3:
            assert_clean_error(exc, "empty item id at row(s) 1")
        elif dup and len(ids) >= 2:
            assert_clean_error(exc, "must be unique", repr(ids[0]))
        elif len(lines) != n_rows:
            assert exc is not None
            assert_clean_error(exc)
            assert f"{len(ids)} item ids for the {n_rows} rows" in str(exc)
        else:
            assert exc is None, exc
            assert result[0].tolist() == [s.strip() for s in lines]
        # the same ids as a list
        outcome(read_features, Path(tmp) / "x.npy", item_ids=ids)
        outcome(read_item_ids, Path(tmp) / "ids.txt")


cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-(10**20), 10**20),
    st.sampled_from(["", "NA", "abc", "1,5", "1e400", "-inf", "True", " 3 "]),
)


@props(50)
@given(
    st.integers(0, 5), st.integers(0, 3), st.sampled_from([".csv", ".tsv", ".csv.gz", ".parquet"]),
    st.booleans(), st.sampled_from(["item", "id", "Item"]), st.data(),
)
def test_read_features_tables(n_rows, n_cols, suffix, dup, item_col, data):
    ids = data.draw(st.lists(text_ids, min_size=n_rows, max_size=n_rows, unique=True))
    if dup and n_rows >= 2:
        ids[1] = ids[0]
    df = pd.DataFrame({item_col: ids})
    for c in range(n_cols):
        df[f"f{c}"] = [data.draw(cell) for _ in range(n_rows)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        if suffix == ".parquet":
            for c in df.columns[1:]:
                if df[c].map(type).nunique() > 1 or any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in df[c]):
                    df[c] = df[c].map(str)  # pyarrow cannot write these: store the text
            df.to_parquet(path, index=False)
        else:
            df.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
        result, exc = outcome(read_features, path)
        if item_col != "item":
            assert_clean_error(exc, "no 'item' column")
            return
        numbers = all(
            isinstance(v, (int, float)) and abs(v) <= float(np.finfo(np.float32).max)
            for c in df.columns[1:] for v in df[c]
        )
        if numbers and n_rows and n_cols and len({i.strip() for i in ids}) == n_rows:
            assert exc is None, f"a clean table failed: {exc}"  # ids like NA, 0017, 1e5 included
        if exc is not None:
            return
        got_ids, X = result
        assert X.dtype == np.float32 and X.shape == (n_rows, n_cols) and np.isfinite(X).all() and n_rows > 0 and n_cols > 0
        assert got_ids.tolist() == [s.strip() for s in ids] and len(set(got_ids.tolist())) == n_rows


# ----------------------------------------------------------------------------- images

IMAGE_KINDS = ["L", "RGB", "RGBA", "P", "1", "LA", "I;16", "L.jpg", "CMYK.jpg", "RGB.bmp", "RGB.webp", "corrupt", "empty", "truncated", "text", "notes.txt", "missing"]


def _write_image(path: Path, kind: str, w: int, h: int, rng: np.random.Generator) -> Path:
    from PIL import Image

    if kind == "corrupt":
        path.write_bytes(rng.bytes(int(rng.integers(1, 300))))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not an image")
    elif kind == "truncated":
        Image.fromarray(rng.integers(0, 256, (h + 20, w + 20, 3), dtype=np.uint8)).save(path, format="PNG")
        path.write_bytes(path.read_bytes()[:60])
    elif kind == "missing":
        pass
    else:
        mode, _, fmt = kind.partition(".")
        if mode == "I;16":
            im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
        else:
            im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
        im.save(path, format={"jpg": "JPEG", "bmp": "BMP", "webp": "WEBP"}.get(fmt, "PNG"))
    return path


@props(40)
@given(st.lists(st.tuples(st.sampled_from(IMAGE_KINDS), st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=6), st.integers(1, 9), st.integers(0, 2**31))
def test_image_folders(specs, size, seed):
    rng = np.random.default_rng(seed)
    bad_kinds = {"corrupt", "empty", "truncated", "text", "missing"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imgs"
        root.mkdir()
        files, bad = [], []
        for k, (kind, w, h) in enumerate(specs):
            if kind == "notes.txt":
                (root / f"notes{k}.txt").write_text("x")
                continue
            suffix = "." + kind.partition(".")[2] if "." in kind else ".png"
            name = f"{k:04d}{suffix}"
            _write_image(root / name, kind, w, h, rng)
            files.append(root / name)
            if kind in bad_kinds:
                bad.append(name)
        listed, exc = outcome(list_image_files, root)
        on_disk = sorted(f for f in files if f.exists())
        if not on_disk:
            assert_clean_error(exc, "no image files")
        else:
            assert listed == on_disk  # non-image files are not listed
            ids = image_item_ids(listed, root)
            assert ids.tolist() == [f.stem for f in listed]  # "0003" stays "0003"
            style, matched = match_image_ids(listed, root, [f.stem for f in listed])
            assert style == "stem" and matched.tolist() == ids.tolist()
        X, exc = outcome(load_images, files, size)
        if bad:
            msg = assert_clean_error(exc, f"{len(bad)} image file(s) could not be read")
            for name in sorted(bad)[:5]:
                assert name in msg
        else:
            assert exc is None and X.shape == (len(files), size, size, 3) and X.dtype == np.uint8


# ----------------------------------------------------------------------------- gold labels


@props(40)
@given(st.lists(st.tuples(st.sampled_from(["0017", "17", "a", "NA", "zz", " a "]), st.sampled_from(["0", "1", "2", "cat", "", "1.0"])), min_size=0, max_size=6), st.sampled_from([".csv", ".tsv", ".parquet"]))
def test_read_item_labels_any_gold_table(rows, suffix):
    item_ids = ["0017", "17", "a", "NA"]
    classes = [0, 1, 2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"gold{suffix}"
        df = pd.DataFrame({"item": [r[0] for r in rows], "label": [r[1] for r in rows]}, dtype=object)
        if suffix == ".parquet":
            df.to_parquet(path, index=False)
        else:
            df.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
        result, exc = outcome(read_item_labels, path, item_ids, classes)
        known = [(i.strip(), _as_number_text(lab.strip())) for i, lab in rows if i.strip() in item_ids and _as_number_text(lab.strip()) in {"0", "1", "2"}]
        if rows and len(known) == len(rows) and len(dict(known)) == len(set(known)):
            assert exc is None, f"a clean gold table failed: {exc}"  # the item NA included
        if exc is not None:
            return
        pos, cls = result
        assert len(pos) == len(cls) and len(set(pos.tolist())) == len(pos)
        for p, c in zip(pos, cls):
            wanted = {_as_number_text(text(lab).strip()) for i, lab in rows if i.strip() == item_ids[p]}
            assert wanted == {str(classes[c])}


def _as_number_text(s: str) -> str:
    """A label's text as the class it names: a whole number as pandas reads it ('1.0' is 1)."""
    f = pd.to_numeric(pd.Series([s]), errors="coerce").iloc[0]
    return str(int(f)) if pd.notna(f) and np.isfinite(f) and float(f).is_integer() else s


@props(40)
@given(st.sampled_from(["L", "RGB", "RGBA", "P", "LA", "I;16", "1", "L.jpg", "RGB.bmp"]), st.integers(0, 255), st.integers(1, 5), st.integers(1, 5), st.integers(1, 6))
def test_constant_images_keep_their_colour(kind, value, w, h, size):
    """A one-colour image of any mode stays that colour (16-bit grayscale scaled to 8 bits)."""
    from PIL import Image

    mode, _, fmt = kind.partition(".")
    if mode == "I;16":
        im, want = Image.fromarray(np.full((h, w), value * 257, dtype=np.uint16)), (value,) * 3
    elif mode == "1":
        im, want = Image.new("1", (w, h), 1 if value >= 128 else 0), (255 if value >= 128 else 0,) * 3
    else:
        rgb = Image.new("RGB", (w, h), (value, 255 - value, value // 2))
        im = rgb.convert(mode, dither=Image.Dither.NONE) if mode == "P" else rgb.convert(mode)
        want = tuple(np.asarray(im.convert("RGB"))[0, 0].tolist())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x.{fmt or 'png'}"
        im.save(path)
        if mode not in ("I;16", "1"):  # what the file decodes to (jpg is lossy, palettes shift)
            with Image.open(path) as back:
                want = tuple(np.asarray(back.convert("RGB"))[0, 0].tolist())
        X = load_images([path], size)
    assert X.shape == (1, size, size, 3)
    assert (X.reshape(-1, 3) == np.array(want, dtype=np.uint8)).all(), (X.reshape(-1, 3)[:2], want)


# ----------------------------------------------------------------------------- the `kdcrowd fit` data path

file_ids = st.one_of(
    st.sampled_from(["0017", "017", "17", "1e5", "NA", "null", "None", "nan", "-0", "1.0", "ü", "猫", "a b", "x" * 60, str(2**70)]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn", "Zl", "Zp"), exclude_characters="/\\"), min_size=1, max_size=8),
).filter(lambda s: s.strip() == s and s and not s.startswith(".") and len(s.encode()) < 100)


@props(30)
@given(
    st.lists(file_ids, min_size=1, max_size=5, unique=True),
    st.lists(st.sampled_from(["w1", "007", "NA", "42"]), min_size=1, max_size=3, unique=True),
    st.sampled_from([".csv", ".tsv", ".parquet", ".json"]),
    st.sampled_from(["features", "images"]),
    st.data(),
)
def test_fit_data_path_matches_annotations_to_items(ids, workers, suffix, source, data):
    """What `kdcrowd fit` does before training: read the labels with ids as text, read the
    items (a feature table or an image folder named by the ids), match them. Every
    annotation lands on the item of the same id - "0017" on 0017.png, never on 17."""
    rows = [(i, w, data.draw(st.integers(0, 2))) for i in ids for w in data.draw(st.lists(st.sampled_from(workers), min_size=1, unique=True))]
    labelled = sorted({r[0] for r in rows})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ann = tmp / f"answers{suffix}"
        df = pd.DataFrame({"item": [r[0] for r in rows], "worker": [r[1] for r in rows], "label": [r[2] for r in rows]})
        if suffix == ".json":
            obj: dict = {}
            for i, w, lab in rows:
                obj.setdefault(i, {})[w] = lab
            ann.write_text(json.dumps(obj))
        elif suffix == ".parquet":
            df.to_parquet(ann, index=False)
        else:
            df.to_csv(ann, sep="\t" if suffix == ".tsv" else ",", index=False)
        frame = read_annotation_frame(ann)
        if source == "features":
            feats = tmp / "x.csv"
            pd.DataFrame({"item": ids[::-1], "f": np.arange(len(ids), dtype=float)}).to_csv(feats, index=False)
            item_ids, X = read_features(feats)
        else:
            root = tmp / "imgs"
            root.mkdir()
            from PIL import Image

            for k, i in enumerate(ids):
                Image.new("L", (2, 2), k).save(root / f"{i}.png")
            files = list_image_files(root)
            style, item_ids = match_image_ids(files, root, frame["item"].tolist())
            assert style == "stem"
            X = load_images(files, 2)
        assert sorted(item_ids.tolist()) == sorted(ids) and len(X) == len(ids)
        a = Annotations.from_long(frame, items=item_ids)
        assert_consistent(a)
        got = sorted((a.item_ids[i], text(a.worker_ids[w]), int(a.classes[c])) for i, w, c in zip(a.item, a.worker, a.label))
        assert got == sorted((i, text(w), lab) for i, w, lab in rows)
        assert sorted(np.asarray(a.item_ids)[a.labels_per_item() > 0].tolist()) == labelled
        if source == "images":  # the pixels of item k are the image named ids[k]
            for pos, i in enumerate(item_ids):
                assert X[pos, 0, 0, 0] == ids.index(i)
