"""Text items: reading id/text tables, TF-IDF features (hand-computed values, agreement
with scikit-learn, a weights_only checkpoint round trip) and a text crowd learned from
its TF-IDF features."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer

from kdcrowd.data.annotations import AnnotationError
from kdcrowd.data.simulate import simulate_workers
from kdcrowd.data.texts import TextFeaturizer, read_texts, text_features
from kdcrowd.estimator import KDCrowdClassifier

IDS = ["a1", "007", "b 2"]
TEXTS = ["a great film, really", "", "dull; far too long"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl", ".json"])
def test_read_texts_formats(tmp_path, suffix: str) -> None:
    df = pd.DataFrame({"id": IDS, "body": TEXTS, "other": [1, 2, 3]})
    p = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        df.to_csv(p, index=False)
    elif suffix == ".tsv":
        df.to_csv(p, sep="\t", index=False)
    elif suffix == ".parquet":
        df.to_parquet(p)
    elif suffix == ".jsonl":
        df.to_json(p, orient="records", lines=True)
    else:
        p.write_text(json.dumps(df.to_dict("records")))
    ids, texts = read_texts(p, id_column="id", text_column="body")
    assert ids == IDS and texts == TEXTS  # ids as written ("007" stays "007"), empty text kept
    with pytest.raises(AnnotationError, match=r"no column 'text'.*'id', 'body'.*--text-column"):
        read_texts(p, id_column="id")
    with pytest.raises(AnnotationError, match=r"no column 'item'.*--item-column"):
        read_texts(p, text_column="body")


@pytest.mark.parametrize("gz", [False, True])
def test_a_tsv_file_keeps_its_quotes_as_characters_unless_it_is_quoted_like_csv(tmp_path, gz: bool) -> None:
    """Plain TSV has no quoting: a text opening a quote it never closes keeps the rows after
    it (read as CSV quoting, it swallowed them), and ``"Great" movie`` keeps its quotes; a
    file written with CSV quoting (pandas' to_csv with a tab) reads back as written."""
    import gzip

    write = (lambda p, t: p.write_bytes(gzip.compress(t.encode()))) if gz else (lambda p, t: p.write_text(t))
    suffix = ".tsv.gz" if gz else ".tsv"
    plain = tmp_path / f"plain{suffix}"
    write(plain, 'item\ttext\nt1\t"oops\nt2\tsecond\nt3\tthird x"\nt4\t"Great" movie, loved it\n')
    assert read_texts(plain) == (["t1", "t2", "t3", "t4"], ['"oops', "second", 'third x"', '"Great" movie, loved it'])
    quoted = tmp_path / f"quoted{suffix}"
    texts = ['he said "hi"', "two\tcolumns", "two\nlines", "long " * 40_000]  # 200 k characters: past the csv module's default field limit
    frame = pd.DataFrame({"item": ["a", "b", "c", "d"], "text": texts})
    if gz:
        frame.to_csv(quoted, sep="\t", index=False, compression="gzip")
    else:
        frame.to_csv(quoted, sep="\t", index=False)
    assert read_texts(quoted) == (["a", "b", "c", "d"], texts)


def test_read_texts_errors(tmp_path) -> None:
    p = tmp_path / "dup.csv"
    p.write_text("item,text\nx,one\ny,two\nx,three\n")
    with pytest.raises(AnnotationError, match=r"repeats item ids \(rows 0, 2.*'x'"):
        read_texts(p)
    q = tmp_path / "missing.jsonl"
    q.write_text('{"item": "x", "text": "one"}\n{"item": "y", "text": null}\n')
    with pytest.raises(AnnotationError, match=r"missing texts.*rows 1.*--text-column"):
        read_texts(q)
    r = tmp_path / "numbers.jsonl"
    r.write_text('{"item": "x", "text": 5}\n')
    with pytest.raises(AnnotationError, match="non-text values.*--text-column"):
        read_texts(r)
    e = tmp_path / "empty_id.csv"
    e.write_text("item,text\n,hello there\n2,world wide\n")
    with pytest.raises(AnnotationError, match=r"without an item id.*rows 0"):
        read_texts(e)
    with pytest.raises(AnnotationError, match="suffix"):
        (tmp_path / "t.txt").write_text("x")
        read_texts(tmp_path / "t.txt")
    with pytest.raises(FileNotFoundError):
        read_texts(tmp_path / "nope.csv")


def test_tfidf_hand_computed() -> None:
    # n = 2 texts; idf(t) = ln((1 + n) / (1 + df)) + 1; tf weight 1 + ln(tf); unit rows
    X, feat = text_features(["aa aa bb", "bb cc"], ngram_range=(1, 1))
    assert feat.vocabulary_ == ["aa", "bb", "cc"] and X.dtype == np.float32 and X.shape == (2, 3)
    idf_rare, idf_common = math.log(3 / 2) + 1, 1.0
    row0 = np.array([(1 + math.log(2)) * idf_rare, idf_common, 0.0])
    row1 = np.array([0.0, idf_common, idf_rare])
    expected = np.stack([row0 / np.linalg.norm(row0), row1 / np.linalg.norm(row1)])
    np.testing.assert_allclose(X, expected, rtol=1e-6)
    # a new text: only the fitted words count, with the training idf; no words -> zeros
    new = feat.transform(["cc cc zz", "zz"])
    np.testing.assert_allclose(new, [[0, 0, 1], [0, 0, 0]], atol=1e-7)


def test_matches_scikit_learn_and_survives_a_weights_only_checkpoint(tmp_path) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)] + ["Café", "cafe"]
    train = [" ".join(rng.choice(words, rng.integers(0, 12))) for _ in range(80)]
    new = [" ".join(rng.choice(words + ["unseen"], 6)) for _ in range(20)]
    X, feat = text_features(train, max_features=50, min_df=2)
    ref = TfidfVectorizer(sublinear_tf=True, max_features=50, min_df=2, ngram_range=(1, 2), strip_accents="unicode").fit(train)
    assert feat.vocabulary_ == sorted(ref.vocabulary_, key=ref.vocabulary_.get)
    np.testing.assert_allclose(X, ref.transform(train).toarray(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(feat.transform(new), ref.transform(new).toarray(), rtol=1e-5, atol=1e-7)
    torch.save({"featurizer": feat.to_state()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["featurizer"]
    again = TextFeaturizer.from_state(state)
    np.testing.assert_array_equal(again.transform(new), feat.transform(new))
    assert again.n_features == 50


def test_unfitted_and_bad_input() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        TextFeaturizer().transform(["x"])
    with pytest.raises(AnnotationError, match="no words"):
        text_features(["", "a"])
    # a bad setting of the featurizer is scikit-learn's error naming it, not the texts'
    with pytest.raises(ValueError, match="ngram_range") as info:
        text_features(["a cat sat", "the dog ran"], ngram_range=(2, 1))
    assert not isinstance(info.value, AnnotationError)
    with pytest.raises(AnnotationError, match="strings"):
        text_features(["good text", None])
    with pytest.raises(TypeError):
        text_features("one string")


def _text_crowd(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts whose words carry the class: 3 class words (of 6 per class) among 5 shared
    filler words."""
    rng = np.random.default_rng(seed)
    k = 3
    cue = [[f"c{c}word{j}" for j in range(6)] for c in range(k)]
    filler = [f"filler{j}" for j in range(40)]
    y = rng.integers(0, k, n)
    texts = [" ".join(rng.permutation(list(rng.choice(cue[c], 3)) + list(rng.choice(filler, 5)))) for c in y]
    return texts, y


def test_text_crowd_learns_from_tfidf() -> None:
    texts, y = _text_crowd(300, seed=0)
    test_texts, y_test = _text_crowd(200, seed=1)
    crowd = simulate_workers(y, "symmetric", n_classes=3, seed=0, n_workers=10, redundancy=3,
                             noise_min=0.2, noise_max=0.5)
    X, feat = text_features(texts, max_features=200, ngram_range=(1, 1))
    assert X.shape == (300, 58)  # 18 class words + 40 fillers
    clf = KDCrowdClassifier(method="mv", backbone="mlp", epochs=8, batch_size=64, lr=1e-2, device="cpu")
    clf.fit(X, crowd.annotations)
    acc = float((clf.predict(feat.transform(test_texts)) == y_test).mean())
    # chance: 1/3; the majority vote of the training crowd itself is right on 76 % of items
    assert acc > 0.85, acc


def test_text_ids_are_written_as_the_other_readers_write_them(tmp_path) -> None:
    """A Parquet id column of whole floats (pandas writes 1.0 where a value was once missing)
    gives the ids 1, 2, 3, as the crowd labels' and features' readers give them; the texts
    had been '1.0', '2.0', '3.0' and matched no crowd label."""
    from kdcrowd.data.readers import read_annotation_frame

    pytest.importorskip("pyarrow")
    pd.DataFrame({"item": [1.0, 2.0, 3.0], "text": ["a", "b", "c"]}).to_parquet(tmp_path / "t.parquet")
    pd.DataFrame({"item": [1.0, 2.0, 3.0], "worker": ["w"] * 3, "label": ["x", "y", "x"]}).to_parquet(tmp_path / "a.parquet")
    ids, _ = read_texts(tmp_path / "t.parquet")
    assert ids == ["1", "2", "3"] == sorted(read_annotation_frame(tmp_path / "a.parquet")["item"].tolist())
    (tmp_path / "t.jsonl").write_text('{"item": 1, "text": "a"}\n{"item": 2.5, "text": "b"}\n')
    assert read_texts(tmp_path / "t.jsonl")[0] == ["1", "2.5"]


def test_the_texts_id_column_falls_back_as_the_crowd_labels_one_does(tmp_path) -> None:
    """--item-column named the crowd labels' id column and was then required of the texts
    file too (refused, with advice that could not be followed); a texts file whose id
    column is `task` (as crowd-kit names it) was refused without --item-column."""
    from typer.testing import CliRunner

    from kdcrowd.cli import app

    (tmp_path / "t.csv").write_text("task,text\na,good\nb,bad\n")
    assert read_texts(tmp_path / "t.csv", id_column=("doc", "item", "task")) == (["a", "b"], ["good", "bad"])
    with pytest.raises(AnnotationError, match=r"no column 'doc' \(nor 'item', 'task'\).*--item-column"):
        read_texts(_write(tmp_path / "u.csv", "id,text\na,x\n"), id_column=("doc", "item", "task"))
    rng = np.random.default_rng(0)
    ids = [f"d{i}" for i in range(30)]
    pd.DataFrame({"item": ids, "text": [["good day", "bad day"][i % 2] + f" w{i}" for i in range(30)]}).to_csv(tmp_path / "texts.csv", index=False)
    pd.DataFrame([(i, w, ["pos", "neg"][k % 2] if rng.random() < 0.8 else ["neg", "pos"][k % 2]) for k, i in enumerate(ids) for w in ("u", "v", "x")],
                 columns=["doc", "worker", "label"]).to_csv(tmp_path / "ann.csv", index=False)
    r = CliRunner().invoke(app, ["fit", "--annotations", str(tmp_path / "ann.csv"), "--texts", str(tmp_path / "texts.csv"), "--item-column", "doc",
                                 "--method", "mv", "--epochs", "1", "--quiet", "--device", "cpu", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "o" / "labels.csv")) == 30
    # a column the user named that no file has is refused, not replaced by `item` (texts joined on the wrong ids)
    pd.read_csv(tmp_path / "ann.csv").assign(item=range(90)).to_csv(tmp_path / "ann2.csv", index=False)
    r = CliRunner().invoke(app, ["fit", "--annotations", str(tmp_path / "ann2.csv"), "--texts", str(tmp_path / "texts.csv"), "--item-column", "doc_id",
                                 "--method", "mv", "--epochs", "1", "--quiet", "--device", "cpu", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "no column 'doc_id'" in r.output, r.output
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "o" / "model.pt"), "--texts", str(tmp_path / "texts.csv"), "--item-column", "doc_id", "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 2 and "no column 'doc_id'" in r.output, r.output
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "o" / "model.pt"), "--texts", str(tmp_path / "t.csv"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0 and pd.read_csv(tmp_path / "p.csv")["item"].tolist() == ["a", "b"], r.output  # a `task` column found
    # the error of texts that match no crowd label names the column the ids came from
    pd.DataFrame({"task": [f"x{i}" for i in range(30)], "text": ["good"] * 30}).to_csv(tmp_path / "tt.csv", index=False)
    r = CliRunner().invoke(app, ["fit", "--annotations", str(tmp_path / "ann.csv"), "--texts", str(tmp_path / "tt.csv"), "--item-column", "doc",
                                 "--method", "mv", "--epochs", "1", "--quiet", "--device", "cpu", "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "named by the 'task' column of" in " ".join(r.output.split()), r.output


def _write(path, text: str):
    path.write_text(text)
    return path


def test_text_files_a_comma_too_many_a_bom_before_json_lines_and_empty_json(tmp_path) -> None:
    """Every row one field longer than the header (an unquoted comma in each text): pandas
    made the ids the index and the first part of each text the id, silently; a byte-order
    mark before JSON lines was refused (every other reader drops it); an empty JSON list was
    told to name its item column."""
    import gzip

    from kdcrowd.data.texts import read_texts

    (tmp_path / "c.csv").write_text("item,text\nd0,Great movie, loved it\nd1,Awful film, hated it\n")
    with pytest.raises(AnnotationError, match="one field more than its header line .*must be quoted"):
        read_texts(tmp_path / "c.csv")
    (tmp_path / "t.tsv").write_text("item\ttext\nd0\tGreat\tloved\nd1\tAwful\thated\n")
    with pytest.raises(AnnotationError, match="a text holding a tab must be quoted"):
        read_texts(tmp_path / "t.tsv")
    lines = '{"item": "a", "text": "x y"}\n{"item": "b", "text": "z"}\n'
    (tmp_path / "b.jsonl").write_text("\ufeff" + lines, encoding="utf-8")
    assert read_texts(tmp_path / "b.jsonl") == (["a", "b"], ["x y", "z"])
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("\ufeff" + lines)
    assert read_texts(tmp_path / "b.jsonl.gz") == (["a", "b"], ["x y", "z"])
    (tmp_path / "r.jsonl").write_bytes(b'{"item": "a", "text": "l1\rl2"}\n')  # a raw CR inside a text stays one
    assert read_texts(tmp_path / "r.jsonl") == (["a"], ["l1\rl2"])
    for name, content in (("e.json", "[]"), ("e.jsonl", "")):
        (tmp_path / name).write_text(content)
        with pytest.raises(AnnotationError, match="has no rows"):
            read_texts(tmp_path / name)


def test_predict_finds_the_id_column_the_training_texts_had(tmp_path) -> None:
    """A model fitted on texts whose ids are in a `doc` column: predict on such a file
    needed --item-column again (the model file did not keep it); item and task still work."""
    from typer.testing import CliRunner

    from kdcrowd.cli import app

    rng = np.random.default_rng(0)
    ids = [f"d{i}" for i in range(30)]
    pd.DataFrame({"doc": ids, "body": [["good day", "bad day"][i % 2] + f" w{i}" for i in range(30)]}).to_csv(tmp_path / "texts.csv", index=False)
    pd.DataFrame([(i, w, ["pos", "neg"][k % 2] if rng.random() < 0.8 else ["neg", "pos"][k % 2]) for k, i in enumerate(ids) for w in ("u", "v", "x")],
                 columns=["doc", "worker", "label"]).to_csv(tmp_path / "ann.csv", index=False)
    r = CliRunner().invoke(app, ["fit", "--annotations", str(tmp_path / "ann.csv"), "--texts", str(tmp_path / "texts.csv"), "--item-column", "doc", "--text-column", "body",
                                 "--method", "mv", "--epochs", "1", "--quiet", "--device", "cpu", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "o" / "model.pt"), "--texts", str(tmp_path / "texts.csv"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    assert pd.read_csv(tmp_path / "p.csv")["item"].tolist() == ids
    _write(tmp_path / "t.csv", "task,body\na,good\n")
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "o" / "model.pt"), "--texts", str(tmp_path / "t.csv"), "--out", str(tmp_path / "q.csv")])
    assert r.exit_code == 0 and pd.read_csv(tmp_path / "q.csv")["item"].tolist() == ["a"], r.output
