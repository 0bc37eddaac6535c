"""Edge cases of reading crowd-label files: each file is read as meant or refused with one
clear error (on the command line: one ``error:`` line naming what to change, exit 2)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdcrowd.cli_checks import cli_message
from kdcrowd.data.annotations import Annotations, AnnotationError
from kdcrowd.data.readers import load_answers_json, read_annotation_frame
from test_messy_input import cli, frame_of, refused


# ----------------------------------------------------------------------------- separators


@pytest.mark.parametrize("sep, word", [(";", "semicolon"), ("\t", "tab")])
def test_wide_table_with_another_separator_is_refused_with_the_separator_hint(tmp_path: Path, sep: str, word: str) -> None:
    # a semicolon CSV was read as one worker whose labels were whole lines
    text = sep.join(["image", "w1", "w2"]) + "\n" + "".join(sep.join([f"img{i}", "cat", "dog"]) + "\n" for i in range(3))
    with pytest.raises(ValueError, match=f"looks {word}-separated"):
        frame_of(tmp_path, text)
    (tmp_path / "semi.csv").write_text(text)
    line = refused(cli("aggregate", "--annotations", "semi.csv", "--out", "l.csv", cwd=tmp_path))
    assert f"{word}-separated" in line and not (tmp_path / "l.csv").exists()


def test_single_column_wide_table_without_a_separator_is_still_read(tmp_path: Path) -> None:
    df, _ = frame_of(tmp_path, "w1\ncat\ndog\n")
    assert df["worker"].tolist() == ["w1", "w1"] and df["label"].tolist() == ["cat", "dog"]


# ----------------------------------------------------------------------------- the item-id column of a wide table


def test_wide_table_written_by_pandas_to_csv_takes_its_index_as_item_ids(tmp_path: Path) -> None:
    pd.DataFrame({"w1": [0, 1, 2, 0, 1], "w2": [0, 1, 2, 2, 1]}).to_csv(tmp_path / "a.csv")  # first header empty
    df, warned = frame_of(tmp_path, (tmp_path / "a.csv").read_text())
    assert set(df["worker"]) == {"w1", "w2"} and df["item"].tolist()[:4] == ["0", "0", "1", "1"]
    assert len(warned) == 1 and "no header" in warned[0]
    # to_csv() of a table that has an item column: the index column is no worker either
    pd.DataFrame({"item": ["a", "b", "c"], "w1": [0, 1, 1], "w2": [0, 1, 0]}).to_csv(tmp_path / "b.csv")
    df, warned = frame_of(tmp_path, (tmp_path / "b.csv").read_text())
    assert set(df["worker"]) == {"w1", "w2"} and set(df["item"]) == {"a", "b", "c"}
    assert len(warned) == 1 and "no header" in warned[0]


@pytest.mark.parametrize("name", ["image", "Item", "filename", "file", "id", "task_id"])
def test_wide_table_column_named_like_an_id_is_the_item_ids(tmp_path: Path, name: str) -> None:
    df, warned = frame_of(tmp_path, f"{name},alice,bob\nimg1,cat,dog\nimg2,cat,cat\n")  # 2 rows: too few to tell by the values
    assert set(df["worker"]) == {"alice", "bob"} and df["item"].tolist() == ["img1", "img1", "img2", "img2"]
    assert len(warned) == 1 and f"--item-column {name}" in warned[0]
    if name != "image":
        return
    (tmp_path / "w.csv").write_text(f"{name},alice,bob\nimg1,cat,dog\nimg2,cat,cat\n")
    r = cli("aggregate", "--annotations", "w.csv", "--out", "l.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "l.csv")["item"].tolist() == ["img1", "img2"]


def test_wide_table_whose_id_column_is_ambiguous_is_refused(tmp_path: Path) -> None:
    # named like an id, while another column holds a distinct value per row too
    rows = "".join(f"img{i},f{i}.png,{i % 2}\n" for i in range(6))
    with pytest.raises(ValueError, match="--item-column NAME"):
        frame_of(tmp_path, "image,path,w1\n" + rows)
    with pytest.raises(ValueError, match="--item-column NAME"):
        frame_of(tmp_path, "image,w0,w1\n" + "".join(f"img{i},x{i},{i % 2}\n" for i in range(6)))
    df, _ = frame_of(tmp_path, "image,path,w1\n" + rows, item_column="image")
    assert set(df["worker"]) == {"path", "w1"}  # the user's choice


def test_wide_table_with_numbered_annotator_columns_is_wide(tmp_path: Path) -> None:
    # 'annotator' in the headers made it a long table, refused for want of worker/label columns
    df, _ = frame_of(tmp_path, "item,annotator_1,annotator_2,Annotator 3\na,cat,dog,cat\nb,dog,dog,\nc,cat,cat,cat\n")
    assert set(df["worker"]) == {"annotator_1", "annotator_2", "Annotator 3"} and len(df) == 8
    assert df[df["item"] == "a"]["label"].tolist() == ["cat", "dog", "cat"]
    # a long table still names its columns: one unnumbered word marks it long
    df, _ = frame_of(tmp_path, "item,annotator,label\na,u1,cat\nb,u2,dog\n")
    assert set(df.columns) >= {"item", "annotator", "label"}


def test_wide_table_with_an_item_column_and_two_others_says_how_it_was_read(tmp_path: Path) -> None:
    # a long table whose worker and label columns have other names read silently as two workers
    df, warned = frame_of(tmp_path, "item,coder,code\na,c1,pos\nb,c1,neg\nc,c1,neg\n")
    assert set(df["worker"]) == {"coder", "code"}
    assert len(warned) == 1 and "read as a wide table" in warned[0] and "name its columns item, worker, label" in warned[0]
    _, warned = frame_of(tmp_path, "item,w1,w2,w3\na,cat,dog,cat\nb,dog,dog,cat\n")
    assert warned == []  # three workers: a wide table's layout
    # two workers who share labels (as numbers too: pandas writes a column with gaps 1.0), one worker
    for text in ("item,alice,bob\na,cat,dog\nb,dog,dog\n", "item,alice\na,cat\nb,dog\n", "item,w1,w2\na,1.0,1\nb,,0\nc,0.0,1\n"):
        _, warned = frame_of(tmp_path, text)
        assert warned == [], text


def test_wide_table_minus_one_is_no_label_among_text_labels(tmp_path: Path) -> None:
    # the help's "blank or -1 for no label" held only where every label was a number
    df, warned = frame_of(tmp_path, "item,alice,bob,carol\na,cat,dog,-1\nb,dog,-1,dog\nc,-1,cat,cat\n")
    assert sorted(set(df["label"])) == ["cat", "dog"] and len(df) == 6
    assert len(warned) == 1 and "read 3 cells of '-1' as no label" in warned[0]
    _, warned = frame_of(tmp_path, "item,alice,bob,carol\na,0,1,-1\nb,1,-1,1\nc,-1,0,0\n")
    assert warned == []  # among numbers -1 is the usual code of no label
    assert df[df["item"] == "a"]["worker"].tolist() == ["alice", "bob"]


#: A wide table as R's write.csv writes it: its row names first, NA in every empty cell.
R_WIDE = '"","item","alice","bob","carol"\n"1","a","cat",NA,NA\n"2","b","dog","dog",NA\n"3","c",NA,"cat","cat"\n'


def test_wide_table_missing_value_words_are_no_label_among_class_names(tmp_path: Path) -> None:
    # R's write.csv writes NA in an empty cell (df.astype(str).to_csv() writes nan): each was an annotation of class 'NA'
    df, warned = frame_of(tmp_path, R_WIDE)
    assert sorted(set(df["label"])) == ["cat", "dog"] and len(df) == 5
    said = [w for w in warned if "missing-value" in w]
    assert len(said) == 1 and "4 cells" in said[0] and "'NA'" in said[0] and "--classes cat,dog,NA" in said[0], warned
    df, warned = frame_of(tmp_path, "item,alice,bob,carol\na,cat,nan,None\nb,nan,dog,\nc,dog,null,N/A\n")
    assert sorted(df["label"]) == ["cat", "dog", "dog"]
    (said,) = [w for w in warned if "missing-value" in w]
    assert "5 cells" in said and all(f"'{w}'" in said for w in ("nan", "None", "null", "N/A")), said
    # a declared class is a class
    df, warned = frame_of(tmp_path, R_WIDE, classes=["cat", "dog", "NA"])
    assert (df["label"] == "NA").sum() == 4 and len(df) == 9 and not any("missing-value" in w for w in warned)
    # among numbers NA was already no label, without a word
    df, warned = frame_of(tmp_path, "item,alice,bob,carol\na,0,NA,1\nb,1,1,NA\nc,NA,0,0\n")
    assert len(df) == 6 and warned == []


def test_cli_reads_na_cells_of_a_wide_table_as_no_label(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text(R_WIDE)
    (tmp_path / "feat.csv").write_text("item,f1\na,0.1\nb,0.2\nc,0.3\n")
    r = cli("aggregate", "--annotations", "r.csv", "--out", "l.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "aggregated 5 annotations" in r.stdout and r.stderr.count("--classes cat,dog,NA") == 1, r.stderr
    assert list(pd.read_csv(tmp_path / "l.csv").columns) == ["item", "label", "p_cat", "p_dog"]
    r = cli("aggregate", "--annotations", "r.csv", "--out", "l2.csv", "--classes", "cat,dog,NA", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "aggregated 9 annotations" in r.stdout and "--classes" not in r.stderr, r.stderr
    assert list(pd.read_csv(tmp_path / "l2.csv").columns) == ["item", "label", "p_cat", "p_dog", "p_NA"]
    r = cli("fit", "--annotations", "r.csv", "--features", "feat.csv", "--out", "o", "--method", "mv", "--epochs", "1", "--quiet", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "5 annotations" in r.stdout and "p_NA" not in (tmp_path / "o" / "labels.csv").read_text()


def test_wide_table_id_column_with_fewer_rows_than_classes_is_found_by_its_values(tmp_path: Path) -> None:
    # 3 rows, 4 classes: the ids were no more than the labels, so 'photo' became a worker
    df, warned = frame_of(tmp_path, "photo,alice,bob,carol\nimg1,cat,dog,bird\nimg2,cat,cat,fish\nimg3,dog,bird,fish\n")
    assert set(df["worker"]) == {"alice", "bob", "carol"} and df["item"].unique().tolist() == ["img1", "img2", "img3"]
    assert len(warned) == 1 and "--item-column photo" in warned[0]


def test_wide_table_without_ids_says_its_items_are_row_numbers(tmp_path: Path) -> None:
    df, warned = frame_of(tmp_path, "w1,w2,w3\ncat,dog,cat\ndog,dog,cat\n")
    assert df["item"].unique().tolist() == ["0", "1"]
    assert len(warned) == 1 and "named by their row numbers, 0 to 1" in warned[0] and "--item-column" in warned[0]


#: (a wide CSV table, its column of item ids as pd.read_csv names it, whether that is a guess said with a warning)
_WIDE_ID_CASES = [
    ("item,task,w1\na,x,0\nb,y,1\nc,z,0\n", "item", False),  # 'item' before crowd-kit's 'task' (then a worker)
    ("task,w1,w2\na,0,1\nb,1,1\n", "task", False),
    ("file_name,w1,w2\nimg1,0,1\nimg2,1,1\n", "file_name", True),  # named like ids (2 rows: too few for the values)
    (",w1,w2\n0,0,1\n1,1,1\n2,0,0\n", "Unnamed: 0", True),  # the header-less index that to_csv() writes
    ("photo,w1,w2,w3\nimg1,cat,dog,bird\nimg2,cat,cat,fish\nimg3,dog,bird,fish\n", "photo", True),  # by its values
    ("w1,w2,w3\ncat,dog,cat\ndog,dog,cat\n", None, False),  # none: the rows are the items
]


@pytest.mark.parametrize("text, column, said", _WIDE_ID_CASES)
def test_wide_table_id_column_is_one_rule_for_a_file_and_a_dataframe(tmp_path: Path, text: str, column: str | None, said: bool) -> None:
    """_wide_id_column without a file (the estimator's wide DataFrame) finds the column that
    kdcrowd fit reads as a wide file's item ids, and says so naming no file nor --item-column."""
    import io
    import warnings

    from kdcrowd.data.readers import InputWarning, _wide_id_column

    table = pd.read_csv(io.StringIO(text))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _wide_id_column(table) == column
    warned = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert len(warned) == said and all(w.startswith("the wide table of crowd labels: ") and "--item-column" not in w and "file" not in w.split(":")[0] for w in warned), warned
    assert all(f"{column!r}" in w and "call it 'item'" in w for w in warned), warned
    df, warned = frame_of(tmp_path, text)  # the file, as kdcrowd fit reads it
    ids = [str(i) for i in range(len(table))] if column is None else table[column].astype(str).tolist()
    assert df.attrs["items"] == ids and set(df["worker"]) == {str(c) for c in table.columns if c != column}
    assert sum("as the item ids of a wide table" in w for w in warned) == said and all(str(tmp_path / "a.csv") in w for w in warned)


def test_wide_table_id_column_ambiguity_is_refused_for_a_file_and_a_dataframe(tmp_path: Path) -> None:
    import io

    from kdcrowd.data.readers import _wide_id_column

    text = "image_id,code,w1\n" + "".join(f"img{i},x{i},{i % 2}\n" for i in range(6))  # named like ids; distinct values
    with pytest.raises(ValueError, match=r"^the wide table of crowd labels \(one column per worker\) has columns 'image_id', 'code' that each could be the item ids") as e:
        _wide_id_column(pd.read_csv(io.StringIO(text)))
    assert "call the column of item ids 'item'" in str(e.value) and "--item-column" not in str(e.value)
    with pytest.raises(ValueError, match=r"annotation file .*a\.csv looks like a wide table .*'image_id', 'code' each could be .*--item-column NAME"):
        frame_of(tmp_path, text)


def test_wide_table_header_less_first_column_beside_the_ids_is_no_worker(tmp_path: Path) -> None:
    import io
    import warnings

    from kdcrowd.data.readers import InputWarning, _drop_row_numbers, _wide_id_column

    text = ",item,w1,w2\n0,a,0,1\n1,b,1,1\n"  # to_csv() of a table with an item column
    table = pd.read_csv(io.StringIO(text))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _drop_row_numbers(table, _wide_id_column(table)).columns.tolist() == ["item", "w1", "w2"]
    warned = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert len(warned) == 1 and warned[0].startswith("the wide table of crowd labels: skipped its first column 'Unnamed: 0'"), warned
    kept = pd.read_csv(io.StringIO(",w1,w2\n0,0,1\n1,1,1\n"))
    assert _drop_row_numbers(kept, "Unnamed: 0") is kept and _drop_row_numbers(kept, None) is kept  # the ids; or no ids
    df, warned = frame_of(tmp_path, text)
    assert df.attrs["items"] == ["a", "b"] and set(df["worker"]) == {"w1", "w2"}
    assert len(warned) == 1 and "annotation file" in warned[0] and "skipped its first column" in warned[0]


# ----------------------------------------------------------------------------- repeated header names


def test_repeated_header_names_are_refused(tmp_path: Path) -> None:
    # pandas renamed the second 'alice' to 'alice.1' (a phantom worker) and ignored a second 'label'
    with pytest.raises(ValueError, match=r"'alice'.*more than once"):
        frame_of(tmp_path, "item,alice,alice,bob\ni1,cat,dog,cat\ni2,dog,dog,dog\n")
    with pytest.raises(ValueError, match=r"'label'.*more than once"):
        frame_of(tmp_path, "item,worker,label,label\ni1,a,cat,dog\ni2,a,dog,dog\n")
    (tmp_path / "a.csv").write_text("item,worker,label,label\ni1,a,cat,dog\n")
    with pytest.raises(AnnotationError, match=r"'label'.*more than once"):
        Annotations.read(tmp_path / "a.csv")
    line = refused(cli("aggregate", "--annotations", "a.csv", "--out", "l.csv", cwd=tmp_path))
    assert "'label'" in line and "more than once" in line
    df, _ = frame_of(tmp_path, "item,alice,alice.1\ni1,cat,dog\n")  # a name that only looks mangled is a name
    assert set(df["worker"]) == {"alice", "alice.1"}


# ----------------------------------------------------------------------------- ids of spaces


def test_ids_of_only_spaces_are_missing_and_rows_of_spaces_are_blank(tmp_path: Path) -> None:
    df, warned = frame_of(tmp_path, "item,worker,label\n1,a,cat\n2,a,dog\n , , \n")
    assert df["item"].tolist() == ["1", "2"] and any("blank row" in w and "line(s) 4" in w for w in warned)
    df, _ = frame_of(tmp_path, "item,worker,label\n1,a,cat\n,,\n ,b,dog\n3, ,cat\n")
    assert df["item"].isna().tolist() == [False, True, False] and df["worker"].isna().tolist() == [False, False, True]
    with pytest.raises(AnnotationError, match=r"in 2 rows: line 4 \(item=nan.*; line 5 \(item='3'"):  # file lines, the blank line 3 counted
        Annotations.from_long(df)
    with pytest.raises(AnnotationError, match=r"in 2 rows: row 0 \(item=nan.*; row 1 \(item='3'"):  # no longer the table read: its rows
        Annotations.from_long(df.iloc[1:].reset_index(drop=True))
    (tmp_path / "a.csv").write_text("item,worker,label\n1,a,cat\n2,a,dog\n ,b,dog\n")
    with pytest.raises(AnnotationError, match="missing values"):
        Annotations.read(tmp_path / "a.csv")
    with pytest.raises(ValueError, match="line 3"):  # a wide row without its item id
        frame_of(tmp_path, "item,w1,w2\na,cat,dog\n  ,cat,cat\n")


# ----------------------------------------------------------------------------- answers.json with a BOM


@pytest.mark.parametrize("gz", [False, True])
def test_answers_json_with_a_byte_order_mark_is_read(tmp_path: Path, gz: bool) -> None:
    data = b'\xef\xbb\xbf{"1": {"a": "cat"}, "2": {"a": "dog"}}'
    path = tmp_path / ("ans.json.gz" if gz else "ans.json")
    path.write_bytes(gzip.compress(data) if gz else data)
    assert load_answers_json(path) == {"1": {"a": "cat"}, "2": {"a": "dog"}}
    df = read_annotation_frame(path)
    assert df["item"].tolist() == ["1", "2"] and df["label"].tolist() == ["cat", "dog"]


# ----------------------------------------------------------------------------- CLI wording


def test_cli_errors_name_the_header_and_options_not_the_python_api(tmp_path: Path) -> None:
    (tmp_path / "caps.csv").write_text("Item,Worker,Label\n1,a,cat\n")
    line = refused(cli("aggregate", "--annotations", "caps.csv", "--out", "l.csv", cwd=tmp_path))
    assert "from_long" not in line and "header" in line and "--item-column" in line
    (tmp_path / "na.csv").write_text("item,worker,label\n1,a,cat\n2,,dog\n")
    line = refused(cli("aggregate", "--annotations", "na.csv", "--out", "l.csv", cwd=tmp_path))
    assert "dropna" not in line and "line 3" in line and "row 1" not in line
    (tmp_path / "feat.csv").write_text("item,f1\n1,0.1\n2,0.2\n")
    (tmp_path / "extra.csv").write_text("item,worker,label\n1,a,cat\n3,a,dog\n")
    line = refused(cli("fit", "--annotations", "extra.csv", "--features", "feat.csv", "--out", "o", "--epochs", "1", "--quiet", "--device", "cpu", cwd=tmp_path))
    assert "`items`" not in line and "--features" in line and "'3'" in line
    assert not (tmp_path / "o").exists()


def test_library_messages_keep_naming_the_python_api() -> None:
    with pytest.raises(AnnotationError, match=r"from_long\(df, item="):
        Annotations.from_long(pd.DataFrame({"Item": [1], "Worker": ["a"], "Label": ["cat"]}))
    with pytest.raises(AnnotationError, match=r"df\.dropna\(\)"):
        Annotations.from_long(pd.DataFrame({"item": [1, 2], "worker": ["a", None], "label": ["cat", "dog"]}))
    with pytest.raises(AnnotationError, match="Add those ids to `items`"):
        Annotations.from_long(pd.DataFrame({"item": [1, 3], "worker": ["a", "a"], "label": ["cat", "dog"]}), items=[1, 2])
    for message in ("missing column(s) ['item']; found columns ['Item']. Accepted names: item (or crowd-kit's task), worker, label; "
                    "name other columns with from_long(df, item=..., worker=..., label=...).",
                    "missing values (NaN/None) in column(s) ['worker'] in 1 row: row 1 (item='2', worker=nan, label='dog'). Drop those "
                    "rows (df.dropna()) or fill them in; a missing label is expressed by leaving the row out.",
                    "annotations for items that have no features (item ids not in `items`) in 1 row: row 1 (item='3'). Add those ids to "
                    "`items` or drop the rows."):
        out = cli_message(message)
        assert "from_long" not in out and "dropna" not in out and "`items`" not in out, out


# ----------------------------------------------------------------------------- Unicode spellings


def test_ids_written_in_two_unicode_forms_are_kept_apart_with_a_warning(tmp_path: Path) -> None:
    """café composed and decomposed are two ids (an id keeps its spelling, so a file reads
    back as it was written), and the reader says so: they look alike."""
    import unicodedata
    import warnings

    from kdcrowd.data.readers import InputWarning, read_annotation_frame

    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    (tmp_path / "a.csv").write_text(f"item,worker,label\n{nfc},a,cat\n{nfd},b,dog\nplain,a,cat\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = read_annotation_frame(tmp_path / "a.csv")
    assert set(df["item"]) == {nfc, nfd, "plain"}
    msgs = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert any("1 id of column 'item' written in two Unicode forms" in m and ascii(nfd) in m for m in msgs), msgs
    (tmp_path / "b.csv").write_text(f"item,worker,label\n{nfc},a,cat\nx,b,dog\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_annotation_frame(tmp_path / "b.csv")
    assert not [w for w in caught if "Unicode forms" in str(w.message)]


# ----------------------------------------------------------------------------- quotes in plain TSV


def test_plain_tsv_quotes_are_characters_of_the_labels(tmp_path: Path) -> None:
    # a label opening a quote it never closes swallowed the rows after it; a balanced one lost its quotes
    p = tmp_path / "ann.tsv"
    p.write_text('item\tworker\tlabel\nt1\ta\t"quoted\nt1\tb\tno\nt2\ta\tyes\nt2\tb\t"yes" maybe\nt3\ta\tno\n')
    df = read_annotation_frame(p)
    assert df["label"].tolist() == ['"quoted', "no", "yes", '"yes" maybe', "no"]
    # a TSV quoted as pandas writes it still reads back
    q = tmp_path / "quoted.tsv"
    pd.DataFrame({"item": ["t1", "t2"], "worker": ["a", "b"], "label": ["tab\there", "ok"]}).to_csv(q, sep="\t", index=False)
    assert read_annotation_frame(q)["label"].tolist() == ["tab\there", "ok"]


# ----------------------------------------------------------------------------- feature tables, integer codes, predict


def test_feature_table_written_with_its_index_skips_the_index_column(tmp_path: Path) -> None:
    import warnings

    from kdcrowd.data.items import read_features
    from kdcrowd.data.readers import InputWarning

    pd.DataFrame({"item": ["a", "b", "c"], "f1": [0.1, 0.2, 0.3]}).to_csv(tmp_path / "x.csv")  # the row numbers were a feature
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        ids, X, columns = read_features(tmp_path / "x.csv", with_columns=True)
    assert columns == ["f1"] and X[:, 0].tolist() == pytest.approx([0.1, 0.2, 0.3]) and ids.tolist() == ["a", "b", "c"]
    assert sum("no header" in str(w.message) for w in caught) == 1
    # a slice's or a shuffled frame's index is skipped too; a header-less column of other values is kept
    (tmp_path / "y.csv").write_text(",item,f1\n25,a,0.1\n21,b,0.2\n29,c,0.3\n")
    assert read_features(tmp_path / "y.csv", with_columns=True)[2] == ["f1"]
    (tmp_path / "z.csv").write_text(",item,f1\n0.5,a,0.1\n0.7,b,0.2\n0.9,c,0.3\n")
    assert read_features(tmp_path / "z.csv", with_columns=True)[2] == ["Unnamed: 0", "f1"]
    # with a model's training columns they decide: kept where the model was trained with it, else skipped
    assert read_features(tmp_path / "z.csv", with_columns=True, keep_columns=["Unnamed: 0", "f1"])[2] == ["Unnamed: 0", "f1"]
    assert read_features(tmp_path / "z.csv", with_columns=True, keep_columns=["f1"])[2] == ["f1"]
    # on the command line: one warning: line
    pd.DataFrame([(i, w, lab) for i, lab in zip("abc", "xyx") for w in ("u", "v")], columns=["item", "worker", "label"]).to_csv(tmp_path / "ann.csv", index=False)
    r = cli("fit", "--annotations", "ann.csv", "--features", "x.csv", "--method", "mv", "--epochs", "1", "--quiet", "--out", "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if "no header" in line][0].startswith("warning: feature table x.csv: skipped its first column")


def test_integer_labels_with_gaps_are_warned_of(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("item,worker,label\na,u,0\na,v,50\nb,u,100\nb,v,100\nc,u,0\nc,v,0\n")
    r = cli("aggregate", "--annotations", "a.csv", "--out", "l.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "98 of those classes (1..49, 51..99) nobody chose" in warned[0] and "--classes 0,50,100" in warned[0]
    (tmp_path / "c.csv").write_text("item,worker,label\na,u,1\nb,u,3\n")  # from 1 with a gap: both unused classes named
    r = cli("aggregate", "--annotations", "c.csv", "--out", "k.csv", cwd=tmp_path)
    assert "2 of those classes (0, 2) nobody chose" in r.stderr, r.stderr
    (tmp_path / "b.csv").write_text("item,worker,label\na,u,0\na,v,1\nb,u,2\n")
    r = cli("aggregate", "--annotations", "b.csv", "--out", "m.csv", cwd=tmp_path)
    assert r.returncode == 0 and "warning:" not in r.stderr, r.stderr


def test_predict_with_another_number_of_feature_columns_names_features(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(20)]
    np.save(tmp_path / "x.npy", rng.normal(size=(20, 3)))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    pd.DataFrame([(i, w, rng.choice(["a", "b"])) for i in ids for w in ("w1", "w2")], columns=["item", "worker", "label"]).to_csv(tmp_path / "ann.csv", index=False)
    pd.DataFrame({"item": ids, "f1": rng.normal(size=20), "f2": rng.normal(size=20)}).to_csv(tmp_path / "new.csv", index=False)
    r = cli("fit", "--annotations", "ann.csv", "--features", "x.npy", "--item-ids", "ids.txt", "--method", "mv", "--epochs", "1", "--quiet", "--out", "fit", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = refused(cli("predict", "--model", "fit/model.pt", "--features", "new.csv", "--out", "p.csv", cwd=tmp_path))
    assert "--features new.csv has 2 feature columns, but the model was trained on 3" in line  # it said "X has item shape (2,)"


def test_gzipped_table_exports_are_recognised_and_a_missing_file_is_named_missing(tmp_path: Path) -> None:
    from kdcrowd.data.platforms import detect_format

    toloka = "INPUT:image\tOUTPUT:result\tASSIGNMENT:task_id\tASSIGNMENT:worker_id\tASSIGNMENT:status\nhttps://x/a.jpg\tcat\tT1\tw1\tAPPROVED\nhttps://x/a.jpg\tdog\tT1\tw2\tAPPROVED\n"
    (tmp_path / "results.tsv.gz").write_bytes(gzip.compress(toloka.encode()))
    (tmp_path / "turk.csv.gz").write_bytes(gzip.compress(b"HITId,WorkerId,Answer.label\nh1,w1,cat\n"))
    (tmp_path / "long.csv.gz").write_bytes(gzip.compress(b"item,worker,label\na,u,cat\n"))
    assert [detect_format(tmp_path / f) for f in ("results.tsv.gz", "turk.csv.gz", "long.csv.gz")] == ["toloka", "mturk", None]
    r = cli("aggregate", "--annotations", "results.tsv.gz", "--out", "l.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # it asked to rename the columns to item, worker, label
    (tmp_path / "results.tsv").write_text(toloka)
    assert cli("aggregate", "--annotations", "results.tsv", "--out", "u.csv", cwd=tmp_path).returncode == 0
    assert (tmp_path / "l.csv").read_text() == (tmp_path / "u.csv").read_text()  # read as the uncompressed export
    line = refused(cli("aggregate", "--annotations", "no_such_export.zip", "--out", "m.csv", cwd=tmp_path))
    assert "not found" in line and "cannot tell the format" not in line
    # a damaged gzip file: still one error line (the detection's zlib.error was a traceback)
    data = gzip.compress(b"item,worker,label\n" + b"a,u,cat\n" * 500)
    (tmp_path / "bad.csv.gz").write_bytes(data[:12] + bytes(b ^ 0x5A for b in data[12:40]) + data[40:])
    line = refused(cli("aggregate", "--annotations", "bad.csv.gz", "--out", "n.csv", cwd=tmp_path))
    assert "cannot read the annotation file bad.csv.gz" in line


def test_predict_refuses_an_out_that_is_one_of_its_images(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "imgs" / "p00.png")
    before = (tmp_path / "imgs" / "p00.png").read_bytes()
    (tmp_path / "model.pt").write_bytes(b"not read: the --out is refused first")
    line = refused(cli("predict", "--model", "model.pt", "--images", "imgs", "--out", "imgs/p00.png", cwd=tmp_path))
    assert "one of the images of --images imgs" in line  # the CSV replaced the image
    assert (tmp_path / "imgs" / "p00.png").read_bytes() == before


def test_label_file_errors_name_the_file_lines(tmp_path: Path) -> None:
    # they named data rows from 0 ("row 1") where the annotation reader names file lines
    from kdcrowd.data.items import read_item_labels

    (tmp_path / "t.csv").write_text("item,label\na,cat\nnope,dog\n")
    with pytest.raises(ValueError, match=r"line 3 \(item='nope'\)"):
        read_item_labels(tmp_path / "t.csv", ["a", "b"], ["cat", "dog"])
    (tmp_path / "u.csv").write_text("item,label\na,cat\nb,cow\n")
    with pytest.raises(ValueError, match=r"line 3 \(item='b', label='cow'\)"):
        read_item_labels(tmp_path / "u.csv", ["a", "b"], ["cat", "dog"])
    (tmp_path / "v.csv").write_text("item,label\na,cat\nb,\n")
    with pytest.raises(ValueError, match=r"missing item or label in line\(s\) 3;"):
        read_item_labels(tmp_path / "v.csv", ["a", "b"], ["cat", "dog"])
    pd.DataFrame({"item": ["a", "nope"], "label": ["cat", "dog"]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"row 1 \(item='nope'\)"):  # a Parquet file has no lines: rows from 0
        read_item_labels(tmp_path / "t.parquet", ["a", "b"], ["cat", "dog"])


def test_fit_options_without_effect_are_refused_or_warned(tmp_path: Path) -> None:
    # --image-size and --text-column with --features, and --final-labels posterior with mv, passed in silence
    import numpy as np

    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(20)]
    pd.DataFrame({"item": ids, "f1": rng.normal(size=20), "f2": rng.normal(size=20)}).to_csv(tmp_path / "x.csv", index=False)
    pd.DataFrame([(i, w, rng.choice(["a", "b"])) for i in ids for w in ("w1", "w2")], columns=["item", "worker", "label"]).to_csv(tmp_path / "ann.csv", index=False)
    base = ["fit", "--annotations", "ann.csv", "--features", "x.csv", "--method", "mv", "--epochs", "1", "--quiet"]
    assert refused(cli(*base, "--out", "a", "--image-size", "64", cwd=tmp_path)) == "error: --image-size goes with --images"
    assert refused(cli(*base, "--out", "b", "--text-column", "body", cwd=tmp_path)) == "error: --text-column goes with --texts"
    assert refused(cli(*base, "--out", "d", "--image-ids", "name", cwd=tmp_path)) == "error: --image-ids goes with --images"
    r = cli(*base, "--out", "c", "--final-labels", "posterior", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # kdcrowd predict: --image-ids without --images, --item-ids with images, as fit refuses them (they changed nothing)
    np.save(tmp_path / "x.npy", rng.normal(size=(3, 2)))
    (tmp_path / "ids.txt").write_text("p\nq\nr\n")
    predict = ["predict", "--model", "c/model.pt", "--out", "p.csv"]
    assert refused(cli(*predict, "--features", "x.csv", "--image-ids", "name", cwd=tmp_path)) == "error: --image-ids goes with --images"
    (tmp_path / "imgs").mkdir()
    assert refused(cli(*predict, "--images", "imgs", "--item-ids", "ids.txt", cwd=tmp_path)).startswith("error: --item-ids goes with a .npy --features file")
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "--final-labels posterior has no effect: method 'mv'" in warned[0] and "Traceback" not in r.stderr


def test_errors_name_the_true_file_line_after_empty_lines_and_multiline_cells(tmp_path: Path) -> None:
    # pandas skips empty lines and reads a quoted cell over two lines as one row: "line r + 2" named the wrong line
    from kdcrowd.data.items import read_item_labels
    from kdcrowd.data.readers import data_row_lines

    (tmp_path / "a.csv").write_text('item,worker,label\na,w1,cat\n\n\nb,w1,dog\n"c\nd",w2,dog\ne,,dog\n')
    assert data_row_lines(tmp_path / "a.csv", 4).tolist() == [2, 5, 6, 8]
    line = refused(cli("aggregate", "--annotations", "a.csv", "--out", "o.csv", cwd=tmp_path))
    assert "line 8 (item='e'" in line
    (tmp_path / "t.csv").write_text("item,label\na,cat\n\nnope,dog\n")
    with pytest.raises(ValueError, match=r"line 4 \(item='nope'\)"):
        read_item_labels(tmp_path / "t.csv", ["a", "b"], ["cat", "dog"])
    (tmp_path / "plain.csv").write_text("item,label\na,cat\nb,dog\n")  # the common case: one line per row, counted, not parsed
    assert data_row_lines(tmp_path / "plain.csv", 2).tolist() == [2, 3]
    (tmp_path / "tail.csv").write_text("item,label\na,cat\nb,dog\n\n\n")  # empty lines at the end: still the fast count
    assert data_row_lines(tmp_path / "tail.csv", 2).tolist() == [2, 3]
    assert data_row_lines(tmp_path / "plain.csv", 5).tolist() == [2, 3, 4, 5, 6]  # readers that disagree: r + 2 kept
    (tmp_path / "g.csv.gz").write_bytes(gzip.compress(b"item,label\n\na,cat\n"))
    assert data_row_lines(tmp_path / "g.csv.gz", 1).tolist() == [3]


def test_aggregate_warns_of_unused_classes_before_it_aggregates_and_of_sparse_workers_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the unused-class warning came after the aggregation (a stray 700 among 0/1 labels made
    # Dawid-Skene take minutes first); it now also says which methods the unused classes change;
    # Dawid-Skene's sparse-workers note was a raw Python warning with its source line
    (tmp_path / "a.csv").write_text("item,worker,label\na,u,1\na,v,2\nb,u,2\nb,v,2\nc,u,1\nc,v,1\n")
    r = cli("aggregate", "--annotations", "a.csv", "--method", "glad", "--out", "l.csv", cwd=tmp_path)
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert r.returncode == 0 and len(warned) == 1 and "class 0 is a class nobody chose" in warned[0] and "glad spreads each worker's errors" in warned[0], r.stderr
    r = cli("aggregate", "--annotations", "a.csv", "--method", "ds", "--out", "d.csv", cwd=tmp_path)
    assert "class 0 is a class nobody chose" in r.stderr and "spreads" not in r.stderr, r.stderr
    (tmp_path / "s.csv").write_text("item,worker,label\n" + "".join(f"i{j % 4},w{j},{'xyz'[j % 3]}\n" for j in range(12)))  # a label a worker
    r = cli("aggregate", "--annotations", "s.csv", "--method", "ds", "--out", "s_out.csv", cwd=tmp_path)
    assert r.returncode == 0 and "SparseWorkersWarning" not in r.stderr and "res = " not in r.stderr, r.stderr
    assert any(line.startswith("warning:") and "fewer labels than there are classes" in line for line in r.stderr.splitlines()), r.stderr
    # a failing command prints its error alone
    r = cli("aggregate", "--annotations", "a.csv", "--method", "mv", "--max-iter", "5", "--out", "e.csv", cwd=tmp_path)
    assert r.returncode == 2 and "warning:" not in r.stderr and "--max-iter" in r.stderr, r.stderr
    # the warning is out before the aggregation starts
    from kdcrowd import aggregation, cli as cli_module

    calls: list[str] = []
    monkeypatch.setattr(cli_module, "_warn", lambda message: calls.append("warn"))
    real = aggregation.aggregation_frame
    monkeypatch.setattr(aggregation, "aggregation_frame", lambda *a, **k: (calls.append("aggregate"), real(*a, **k))[1])
    from typer.testing import CliRunner

    res = CliRunner().invoke(cli_module.app, ["aggregate", "--annotations", str(tmp_path / "a.csv"), "--method", "mv", "--out", str(tmp_path / "m.csv")])
    assert res.exit_code == 0, res.output
    assert calls[:2] == ["warn", "aggregate"], calls


def test_fit_with_dawid_skene_says_its_sparse_workers_note_once(tmp_path: Path) -> None:
    # Dawid-Skene runs twice in `kdcrowd fit --method ds` (the reference labels and the method): the note came twice
    rng = np.random.default_rng(0)
    ids = [f"i{j}" for j in range(40)]
    rows = [(ids[j], f"w{2 * j + k}", "abc"[(j + (rng.random() < 0.3)) % 3]) for j in range(40) for k in range(2)]
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(tmp_path / "ann.csv", index=False)
    x = pd.DataFrame(rng.normal(size=(40, 3)), columns=["f0", "f1", "f2"])
    x.insert(0, "item", ids)
    x.to_csv(tmp_path / "x.csv", index=False)
    r = cli("fit", "--annotations", "ann.csv", "--features", "x.csv", "--method", "ds", "--epochs", "1", "--device", "cpu", "--quiet", "--out", "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sum("fewer labels than there are classes" in line for line in r.stderr.splitlines()) == 1, r.stderr


def test_a_truth_file_s_truth_column_is_its_label(tmp_path: Path) -> None:
    """The truth-inference sets' ``item,truth`` files and crowd-kit's ``task,true_label`` are
    label files as they are (they were refused as lacking a 'label' column); a 'label'
    column, where there is one, is the label."""
    from kdcrowd.data.items import read_item_labels

    (tmp_path / "t.csv").write_text("item,truth\nb,dog\na,cat\n")
    items, labels = read_item_labels(tmp_path / "t.csv", ["a", "b"], ["cat", "dog"])
    assert sorted(zip(items.tolist(), labels.tolist())) == [(0, 0), (1, 1)]
    (tmp_path / "k.csv").write_text("task,true_label\na,dog\n")
    assert read_item_labels(tmp_path / "k.csv", ["a", "b"], ["cat", "dog"])[1].tolist() == [1]
    (tmp_path / "both.csv").write_text("item,label,truth\na,cat,dog\n")
    assert read_item_labels(tmp_path / "both.csv", ["a", "b"], ["cat", "dog"])[1].tolist() == [0]


# ----------------------------------------------------------------------------- Parquet tables written with their index


def test_parquet_tables_written_with_their_index_keep_it_as_a_column(tmp_path: Path) -> None:
    """pandas reads the index a DataFrame was written with (``df.set_index("item").to_parquet()``)
    back as the index, not as a column: every reader said the file had no 'item' column."""
    from kdcrowd.data.items import read_features, read_item_labels
    from kdcrowd.data.texts import read_texts

    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(30)]
    y = np.arange(30) % 2
    feats = pd.DataFrame({"item": ids, "a": rng.normal(size=30) + 3 * y, "b": rng.normal(size=30)})
    feats.set_index("item").to_parquet(tmp_path / "feat.parquet")
    feats.set_index("item").to_parquet(tmp_path / "pred.parquet")
    pd.DataFrame({"item": ids, "text": [("good fine" if k % 2 else "bad awful") + f" n{k}" for k in range(30)]}).set_index("item").to_parquet(tmp_path / "texts.parquet")
    ann = pd.DataFrame([(i, w, ["cat", "dog"][y[k]]) for k, i in enumerate(ids) for w in ("w1", "w2", "w3")], columns=["item", "worker", "label"])
    ann.set_index("item").to_parquet(tmp_path / "ann.parquet")
    truth = ann.drop_duplicates("item")[["item", "label"]]
    truth.set_index("item").to_parquet(tmp_path / "truth.parquet")
    truth.iloc[:4].set_index("item").to_parquet(tmp_path / "gold.parquet")
    assert read_features(tmp_path / "feat.parquet")[0].tolist() == ids
    assert read_annotation_frame(tmp_path / "ann.parquet")["item"].tolist() == ann["item"].tolist()
    assert sorted(Annotations.read(tmp_path / "ann.parquet").item_ids.tolist()) == sorted(ids)
    assert read_texts(tmp_path / "texts.parquet")[0] == ids
    assert read_item_labels(tmp_path / "truth.parquet", ids, ["cat", "dog"])[1].tolist() == y.tolist()
    # an unnamed index (the rows kept of a filtered frame) is no column; an index repeating a column is read once
    ann[ann["worker"] != "w3"].to_parquet(tmp_path / "kept.parquet")
    assert read_annotation_frame(tmp_path / "kept.parquet").columns.tolist() == ["item", "worker", "label"]
    ann.set_index("item", drop=False).to_parquet(tmp_path / "twice.parquet")
    assert read_annotation_frame(tmp_path / "twice.parquet")["item"].tolist() == ann["item"].tolist()
    common = ["--method", "mv", "--epochs", "1", "--quiet", "--device", "cpu"]
    r = cli("fit", "--annotations", "ann.parquet", "--features", "feat.parquet", "--predict-features", "pred.parquet", "--truth", "truth.parquet",
            "--gold", "gold.parquet", "--out", "o", *common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "o" / "labels.csv")["item"].tolist() == ids
    r = cli("fit", "--annotations", "ann.parquet", "--texts", "texts.parquet", "--predict-texts", "texts.parquet", "--out", "t", *common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("aggregate", "--annotations", "ann.parquet", "--gold", "gold.parquet", "--out", "l.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "l.csv").set_index("item")["label"].to_dict() == truth.set_index("item")["label"].to_dict()
