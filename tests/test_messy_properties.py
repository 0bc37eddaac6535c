"""Property: a label table corrupted the ways real exports are (labels with other case or
surrounding spaces, the header line repeated inside the file, blank rows, a wide table
whose id column has another name) is either read as the clean table or refused with one
``ValueError`` - never silently turned into extra classes, items or workers."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdcrowd.data.annotations import Annotations
from kdcrowd.data.readers import _NA_WORDS, InputWarning, read_annotation_frame

SCALE = float(os.environ.get("KDCROWD_PROPERTY_SCALE", "1"))
PROPS = settings(max_examples=max(1, int(40 * SCALE)), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = ["cat", "dog", "bird", "NA", "None", "null", "Horse"]


@st.composite
def clean_tables(draw: st.DrawFn) -> pd.DataFrame:
    """A long table of 4..9 items, 2..4 workers, every item labelled by every worker (so the
    wide layout holds it too); class names (NA/None/null included) or class indices."""
    n_items = draw(st.integers(4, 9))
    n_workers = draw(st.integers(2, 4))
    if draw(st.booleans()):
        classes = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=3, unique_by=str.casefold))
    else:
        classes = list(range(draw(st.integers(2, 3))))
    labels = draw(st.lists(st.sampled_from(classes), min_size=n_items * n_workers, max_size=n_items * n_workers))
    labels[: len(classes)] = classes  # every class occurs
    rows = [(f"img{i}", f"w{m}", labels[i * n_workers + m]) for i in range(n_items) for m in range(n_workers)]
    return pd.DataFrame(rows, columns=["item", "worker", "label"])


def declared(clean: pd.DataFrame) -> dict:
    """``classes=`` for a table whose class names include one of pandas' missing-value words
    (NA, None, null): such a class is read as a class once declared, as a user declares it."""
    names = [str(c) for c in pd.unique(clean["label"])]
    return {"classes": names} if set(names) & set(_NA_WORDS) else {}


def triples(a: Annotations, fold: bool = False) -> list[tuple[str, str, str]]:
    out = [(str(i), str(w), str(l)) for i, w, l in a.to_long().itertuples(index=False)]
    return sorted((i, w, l.casefold() if fold else l) for i, w, l in out)


def read(text: str, **kw) -> tuple[Annotations | None, Exception | None, list[str]]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "labels.csv"
        path.write_text(text)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InputWarning)
            try:
                a = Annotations.from_long(read_annotation_frame(path, **kw))
            except ValueError as e:
                return None, e, []
    return a, None, [str(w.message) for w in caught if issubclass(w.category, InputWarning)]


def check(clean: pd.DataFrame, text: str, case_changed: bool, **kw) -> None:
    a, err, warned = read(text, **kw)
    want = Annotations.from_long(clean)
    if err is not None:  # refused: one message, one line
        assert str(err).strip() and "\n" not in str(err).strip(), err
        return
    assert a is not None
    assert a.n_items <= want.n_items and a.n_workers <= want.n_workers, (text, a)
    fold = kw.get("label_case") == "fold"
    if case_changed and not fold and kw.get("label_case") != "keep":
        # kept apart, but never silently: the warning names the colliding labels
        assert a.n_classes > want.n_classes or not any("letter case" in w for w in warned)
        if a.n_classes > want.n_classes:
            assert any("letter case" in w and "--label-case fold" in w for w in warned), warned
        return
    if not case_changed or fold:
        assert a.n_classes == want.n_classes, (text, a.classes, want.classes)
        assert triples(a, fold) == triples(want, fold), text


@st.composite
def corrupted_long(draw: st.DrawFn) -> tuple[pd.DataFrame, str, bool]:
    clean = draw(clean_tables())
    lines = []
    case_changed = False
    for i, w, lab in clean.itertuples(index=False):
        text = str(lab)
        if isinstance(lab, str):
            if draw(st.booleans()):
                text = draw(st.sampled_from([" ", "  ", "\t", ""])) + text + draw(st.sampled_from([" ", "", "  "]))
            if draw(st.integers(0, 5)) == 0:
                variant = draw(st.sampled_from([text.upper(), text.capitalize(), text.swapcase()]))
                case_changed |= variant.strip() != text.strip()
                text = variant
        else:
            text = draw(st.sampled_from(["", " "])) + text + draw(st.sampled_from(["", " "]))
        lines.append(f"{i},{w},{text}")
    for _ in range(draw(st.integers(0, 2))):  # files joined together: their header lines inside
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["item,worker,label", " item , worker , label "])))
    for _ in range(draw(st.integers(0, 3))):  # blank rows of a spreadsheet export, often at the end
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from([",,", ", , ", ",,"])))
    return clean, "item,worker,label\n" + "\n".join(lines) + "\n", case_changed


@PROPS
@given(corrupted_long(), st.sampled_from([None, "fold", "keep"]))
def test_corrupted_long_tables_read_correctly_or_refused(case: tuple, label_case: str | None) -> None:
    clean, text, case_changed = case
    check(clean, text, case_changed, label_case=label_case, **declared(clean))


@PROPS
@given(clean_tables(), st.sampled_from(["image_id", "id", "filename", "key", "item"]), st.booleans(), st.integers(0, 2))
def test_wide_tables_with_any_id_column_name_read_correctly_or_refused(clean: pd.DataFrame, id_name: str, id_first: bool, headers: int) -> None:
    wide = clean.pivot(index="item", columns="worker", values="label").reset_index().rename(columns={"item": id_name})
    cols = [id_name, *[c for c in wide.columns if c != id_name]]
    if not id_first:
        cols = cols[1:] + cols[:1]
    text = wide[cols].to_csv(index=False)
    lines = text.splitlines()
    for k in range(headers):  # the header line repeated inside the file
        lines.insert(1 + k * 2, lines[0])
    check(clean, "\n".join(lines) + "\n", False, **declared(clean))


@pytest.mark.parametrize("label_case", [None, "fold"])
def test_examples_of_each_corruption(label_case: str | None) -> None:
    clean = pd.DataFrame({"item": ["a", "a", "b", "b"], "worker": ["u", "v", "u", "v"], "label": ["cat", "NA", "NA", "cat"]})
    text = "item,worker,label\na,u, cat\nitem,worker,label\na,v,NA\n,,\nb,u,NA \nb,v,cat\n,,\n"
    a, err, warned = read(text, label_case=label_case, classes=["cat", "NA"])
    assert err is None and triples(a) == triples(Annotations.from_long(clean))
    assert sum("blank row" in w for w in warned) == 1 and sum("repeat the header" in w for w in warned) == 1
