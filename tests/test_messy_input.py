"""Messy real-world input: each case a new user met is read correctly or refused with one
clear error that names the option to change, and a refused command leaves nothing behind.

The command-line cases run ``python -m kdcrowd`` in a subprocess, as a user would: exit
status 2, exactly one line on stderr (the error), nothing on stdout, nothing in OUT.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kdcrowd
from kdcrowd.data.annotations import Annotations
from kdcrowd.data.items import align_feature_columns, list_image_files, match_image_ids, read_features
from kdcrowd.data.readers import InputWarning, read_annotation_frame

SRC = str(Path(kdcrowd.__file__).resolve().parents[1])


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "NO_COLOR": "1", "COLUMNS": "200", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "kdcrowd", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def refused(r: subprocess.CompletedProcess) -> str:
    """The one error line of a refused command (exit 2, nothing on stdout)."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert r.stdout.strip() == "", r.stdout
    assert "Traceback" not in r.stderr
    return lines[0]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_problem(root: Path, n: int = 60, seed: int = 0) -> dict:
    """Two-class features (4 named columns, the class in f0 and f2) and three fair workers."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    X[:, 0] += 4 * y
    X[:, 2] -= 3 * y
    ids = [f"it{i:03d}" for i in range(n)]
    rows = [(ids[i], f"w{m}", ["cat", "dog"][y[i] if rng.random() < 0.8 else 1 - y[i]]) for i in range(n) for m in range(3)]
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(root / "answers.csv", index=False)
    feats = pd.DataFrame(X, columns=["f0", "f1", "f2", "f3"])
    feats.insert(0, "item", ids)
    feats.to_csv(root / "X.csv", index=False)
    return {"X": X, "ids": ids, "y": y, "feats": feats}


def fit_args(root: Path, out: str, *extra: str) -> list[str]:
    return ["fit", "--annotations", str(root / "answers.csv"), "--features", str(root / "X.csv"), "--out", out, "--method", "mv", "--epochs", "2", "--device", "cpu", "--quiet", *extra]


# ----------------------------------------------------------------------------- 1: feature columns by name


@pytest.mark.slow
def test_feature_columns_are_matched_by_name_in_predict_and_fit(tmp_path: Path) -> None:
    prob = write_problem(tmp_path)
    feats = prob["feats"]
    feats[["item", "f3", "f1", "f0", "f2"]].to_csv(tmp_path / "X_perm.csv", index=False)  # same columns, another order
    feats.rename(columns={"f2": "g2"}).to_csv(tmp_path / "X_renamed.csv", index=False)
    r = cli(*fit_args(tmp_path, "out", "--predict-features", str(tmp_path / "X_perm.csv")), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # the output paths are listed at the end, one per line
    assert str(tmp_path / "out" / "model.pt") in r.stdout or "out/model.pt" in r.stdout
    labels = pd.read_csv(tmp_path / "out" / "labels.csv").set_index("item")
    pred_perm = pd.read_csv(tmp_path / "out" / "predictions.csv").set_index("item")
    r = cli("predict", "--model", "out/model.pt", "--features", "X.csv", "--out", "p.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("predict", "--model", "out/model.pt", "--features", "X_perm.csv", "--out", "p_perm.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    p, pp = pd.read_csv(tmp_path / "p.csv").set_index("item"), pd.read_csv(tmp_path / "p_perm.csv").set_index("item")
    assert (p["label"] == pp["label"]).all()  # a permuted file gives the same labels (it gave 43-57 % agreement)
    np.testing.assert_allclose(p["confidence"], pp["confidence"], atol=1e-5)
    assert (pred_perm.loc[p.index, "label"] == p["label"]).all()  # fit --predict-features too
    assert (p["label"] == labels.loc[p.index, "label"]).mean() > 0.8  # and the classifier learnt the classes
    r = cli("predict", "--model", "out/model.pt", "--features", "X_renamed.csv", "--out", "p_bad.csv", cwd=tmp_path)
    line = refused(r)
    assert "'f2'" in line and "'g2'" in line and "--features" in line
    assert not (tmp_path / "p_bad.csv").exists()


def test_align_feature_columns_reorders_or_names_the_difference() -> None:
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(align_feature_columns(X, ["b", "c", "a"], ["a", "b", "c"], "x"), X[:, [2, 0, 1]])
    for cols, needle in ((["a", "b"], "missing 'c'"), (["a", "b", "c", "d"], "not in the training features 'd'"), (["a", "b", "z"], "missing 'c'")):
        with pytest.raises(ValueError, match=needle):
            align_feature_columns(np.zeros((2, len(cols)), np.float32), cols, ["a", "b", "c"], "x")
    with pytest.raises(ValueError, match=r"3 feature columns \(item shape \(3,\)\) but the model was trained on 2"):
        align_feature_columns(X, None, ["a", "b"], "x")


# ----------------------------------------------------------------------------- 2, 4, 5: label tables


def frame_of(tmp_path: Path, text: str, **kw) -> tuple[pd.DataFrame, list[str]]:
    path = tmp_path / "a.csv"
    path.write_text(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        df = read_annotation_frame(path, **kw)
    return df, [str(w.message) for w in caught if issubclass(w.category, InputWarning)]


def test_labels_lose_surrounding_spaces_and_case_variants_are_named(tmp_path: Path) -> None:
    text = "item,worker,label\na,w1,cat\na,w2, cat \nb,w1,Cat\nb,w2,dog\n"
    df, warned = frame_of(tmp_path, text)
    assert sorted(set(df["label"])) == ["Cat", "cat", "dog"]  # 'cat ' is 'cat'
    assert len(warned) == 1 and "'Cat' / 'cat'" in warned[0] and "--label-case fold" in warned[0]
    df, warned = frame_of(tmp_path, text, label_case="fold")
    assert sorted(set(df["label"])) == ["cat", "dog"] and warned == []  # the most frequent spelling
    df, warned = frame_of(tmp_path, text, label_case="keep")
    assert sorted(set(df["label"])) == ["Cat", "cat", "dog"] and warned == []
    with pytest.raises(ValueError, match="--label-case must be fold or keep"):
        frame_of(tmp_path, text, label_case="lower")


def test_label_case_fold_takes_the_declared_spelling_of_each_class(tmp_path: Path) -> None:
    # with --classes cat,dog every label became the most frequent spelling, 'Cat', refused as outside the declared classes
    text = "item,worker,label\n" + "".join(f"{i},{w},{lab.capitalize() if w != 'w1' else lab}\n"
                                            for i, lab in (("a", "cat"), ("b", "dog"), ("c", "cat")) for w in ("w1", "w2", "w3"))
    df, warned = frame_of(tmp_path, text, label_case="fold")
    assert sorted(set(df["label"])) == ["Cat", "Dog"] and warned == []  # no class list: the most frequent spelling
    df, warned = frame_of(tmp_path, text, label_case="fold", classes=["cat", "dog"])
    assert sorted(set(df["label"])) == ["cat", "dog"] and warned == []
    df, _ = frame_of(tmp_path, text, label_case="fold", classes=["CAT", "dog", "bird"])
    assert sorted(set(df["label"])) == ["CAT", "dog"]
    df, _ = frame_of(tmp_path, text, label_case="keep", classes=["cat", "dog"])
    assert sorted(set(df["label"])) == ["Cat", "Dog", "cat", "dog"]  # kept apart, as asked
    with pytest.raises(ValueError, match="names .cat. and .Cat., which differ only by letter case.*--label-case keep"):
        frame_of(tmp_path, text, label_case="fold", classes=["cat", "Cat", "dog"])
    # a missing-value word declared in another case is that class once folded
    df, _ = frame_of(tmp_path, "item,worker,label\na,w1,NULL\nb,w1,cat\n", label_case="fold", classes=["cat", "null"])
    assert df["label"].tolist() == ["null", "cat"]
    (tmp_path / "a.csv").write_text(text)
    (tmp_path / "feat.csv").write_text("item,f1\na,0.1\nb,0.2\nc,0.3\n")
    (tmp_path / "truth.csv").write_text("item,label\na,CAT\nb,Dog\n")
    for command in (["aggregate", "--out", "l.csv"],
                    ["fit", "--features", "feat.csv", "--truth", "truth.csv", "--gold", "truth.csv", "--out", "o", "--method", "mv", "--epochs", "1", "--quiet", "--device", "cpu"]):
        r = cli(*command, "--annotations", "a.csv", "--label-case", "fold", "--classes", "cat,dog", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert list(pd.read_csv(tmp_path / "l.csv").columns) == ["item", "label", "p_cat", "p_dog"]
    assert pd.read_csv(tmp_path / "o" / "labels.csv")["label"].tolist() == ["cat", "dog", "cat"]
    line = refused(cli("aggregate", "--annotations", "a.csv", "--label-case", "fold", "--classes", "cat,Cat,dog", "--out", "l2.csv", cwd=tmp_path))
    assert "--classes" in line and "--label-case keep" in line


def test_repeated_header_and_blank_rows_are_skipped_with_their_line_numbers(tmp_path: Path) -> None:
    df, warned = frame_of(tmp_path, "item,worker,label\na,w1,1\nb,w1,0\n,,\nitem,worker,label\nc,w1,1\n,,\n")
    assert df["item"].tolist() == ["a", "b", "c"] and df["label"].tolist() == [1, 0, 1]
    assert df["label"].dtype.kind == "i"  # numbers again once the header copy is gone
    assert any("2 blank row(s)" in w and "line(s) 4, 7" in w for w in warned), warned
    assert any("repeat the header" in w and "line(s) 5" in w for w in warned), warned
    a = Annotations.from_long(df)
    assert a.n_items == 3 and a.n_classes == 2
    # files saved with a byte-order mark and then joined: the inner header line starts with one
    df, warned = frame_of(tmp_path, "\ufeffitem,worker,label\na,w1,1\n\ufeffitem,worker,label\nb,w1,0\n")
    assert df["item"].tolist() == ["a", "b"] and any("repeat the header" in w and "line(s) 3" in w for w in warned), warned


def test_a_label_written_as_a_missing_value_is_refused_unless_its_class_is_declared(tmp_path: Path) -> None:
    # R's write.csv writes NA for a missing label (df.astype(str).to_csv(): nan); among class names it was a class 'NA'
    text = "item,worker,label\na,w1,NA\nb,w1,None\nc,w1,null\nd,w1,cat\n"
    with pytest.raises(ValueError, match=r"3 labels on line\(s\) 2, 3, 4 .*delete those rows.*--classes cat,NA,None,null"):
        frame_of(tmp_path, text)
    declared = ["cat", "NA", "None", "null"]
    df, _ = frame_of(tmp_path, text, classes=declared)
    assert df["label"].tolist() == ["NA", "None", "null", "cat"]
    with pytest.raises(ValueError, match=r"line\(s\) 2, 3, 4.*--classes cat,NA,None,null"):  # the Python API reads it alike
        Annotations.read(tmp_path / "a.csv")
    assert Annotations.read(tmp_path / "a.csv", classes=declared).classes.tolist() == declared
    line = refused(cli("aggregate", "--annotations", "a.csv", "--out", "l.csv", cwd=tmp_path))
    assert "line(s) 2, 3, 4" in line and "--classes cat,NA,None,null" in line
    r = cli("aggregate", "--annotations", "a.csv", "--out", "l.csv", "--classes", ",".join(declared), cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    df, _ = frame_of(tmp_path, "item,worker,label\na,w1,1\nb,w1,NA\n")
    assert df["label"].isna().tolist() == [False, True]  # a number column: NA is missing, as before


def test_wide_table_id_column_under_another_name(tmp_path: Path) -> None:
    rows = "".join(f"img{i},{i % 2},{(i + 1) % 2 if i % 3 else i % 2}\n" for i in range(6))
    df, warned = frame_of(tmp_path, "image_id,w1,w2\n" + rows)
    assert set(df["worker"]) == {"w1", "w2"} and set(df["item"]) == {f"img{i}" for i in range(6)}
    assert sorted(set(df["label"])) == [0, 1]
    assert len(warned) == 1 and "'image_id'" in warned[0] and "--item-column image_id" in warned[0]
    df, warned = frame_of(tmp_path, "image_id,w1,w2\n" + rows, item_column="image_id")
    assert set(df["worker"]) == {"w1", "w2"} and warned == []
    with pytest.raises(ValueError, match="--item-column NAME"):  # two id-like columns: which one?
        frame_of(tmp_path, "image_id,file,w1\n" + "".join(f"img{i},f{i}.png,{i % 2}\n" for i in range(6)))
    with pytest.raises(ValueError, match="--item-column 'nope' is not a column"):
        frame_of(tmp_path, "image_id,w1,w2\n" + rows, item_column="nope")


def test_cli_aggregate_messy_file_warns_on_stderr_and_reads_it(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("item,worker,label\na,w1,cat\na,w2,Cat \nitem,worker,label\nb,w1,dog\nb,w2,dog\n,,\n")
    r = cli("aggregate", "--annotations", "a.csv", "--out", "l.csv", "--label-case", "fold", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote l.csv" in r.stdout and "warning:" not in r.stdout
    assert r.stderr.count("warning:") == 2 and "repeat the header" in r.stderr and "blank row" in r.stderr
    out = pd.read_csv(tmp_path / "l.csv")
    assert list(out.columns) == ["item", "label", "p_Cat", "p_dog"] or list(out.columns) == ["item", "label", "p_cat", "p_dog"]
    assert out["item"].tolist() == ["a", "b"]


def test_cli_aggregate_writes_a_row_for_items_nobody_labelled(tmp_path: Path) -> None:
    # an answers.json item {} (or a wide row without a label) was left out of the output
    (tmp_path / "answers.json").write_text('{"0": {"0": 1, "1": 1}, "1": {}, "2": {"0": 0, "1": 1}}')
    (tmp_path / "wide.csv").write_text("item,ann_a,ann_b\nx,1,1\ny,,\nz,0,1\n")
    for name, items in (("answers.json", ["0", "1", "2"]), ("wide.csv", ["x", "y", "z"])):
        r = cli("aggregate", "--annotations", name, "--method", "glad", "--out", "l.csv", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        out = pd.read_csv(tmp_path / "l.csv", dtype={"item": str})
        assert out["item"].tolist() == items and out["label"].isna().tolist() == [False, True, False]
        np.testing.assert_allclose(out.iloc[1, 2:].to_numpy(dtype=float), [0.5, 0.5])
    # a wide table that lists an item on two rows (two batches pasted together), with zero-padded codes
    (tmp_path / "wide2.csv").write_text("item,w1,w2\na,01,\nb,02,02\na,,01\n")
    r = cli("aggregate", "--annotations", "wide2.csv", "--out", "l2.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = pd.read_csv(tmp_path / "l2.csv", dtype=str)
    assert list(out.columns) == ["item", "label", "p_01", "p_02"] and out["label"].tolist() == ["01", "02"]
    frame = read_annotation_frame(_write(tmp_path / "wide3.csv", "item,w1,w2\n007,01,02\n008,-1,01\n"))
    assert frame["label"].tolist() == ["01", "02", "01"]  # -1 is still a missing label beside zero-padded codes


def test_cli_aggregate_ds_prior_whatever_the_spelling_of_the_method(tmp_path: Path) -> None:
    # --method DS (or Dawid-Skene) silently dropped --ds-prior
    write_problem(tmp_path, n=40)
    outs = {}
    for method, prior in (("ds", "0"), ("DS", "0"), ("Dawid-Skene", "0"), ("ds", "1")):
        r = cli("aggregate", "--annotations", "answers.csv", "--method", method, "--ds-prior", prior, "--out", f"{method}{prior}.csv", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        outs[method + prior] = (tmp_path / f"{method}{prior}.csv").read_bytes()
    assert outs["DS0"] == outs["ds0"] == outs["Dawid-Skene0"] != outs["ds1"]


def test_cli_aggregate_keeps_zero_padded_label_codes(tmp_path: Path) -> None:
    # labels 01 / 02 came out as 1 / 2 with a phantom class 0 (p_0, p_1, p_2)
    (tmp_path / "a.csv").write_text("item,worker,label\n0017,u,01\n0017,v,02\n0018,u,02\n0018,v,02\n")
    r = cli("aggregate", "--annotations", "a.csv", "--method", "mv", "--out", "l.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = pd.read_csv(tmp_path / "l.csv", dtype=str)
    assert list(out.columns) == ["item", "label", "p_01", "p_02"]
    assert out["item"].tolist() == ["0017", "0018"] and out["label"].tolist() == ["01", "02"]


# ----------------------------------------------------------------------------- 7: output paths


def test_cli_output_path_mistakes_are_one_line_each(tmp_path: Path) -> None:
    write_problem(tmp_path, n=12)
    (tmp_path / "afile").write_text("x")
    line = refused(cli("aggregate", "--annotations", "answers.csv", "--out", ".", cwd=tmp_path))
    assert "--out . is a folder" in line
    line = refused(cli("aggregate", "--annotations", "answers.csv", "--out", "afile/l.csv", cwd=tmp_path))
    assert "afile is a file" in line
    line = refused(cli(*fit_args(tmp_path, "afile"), cwd=tmp_path))
    assert "--out afile is a file" in line
    line = refused(cli(*fit_args(tmp_path, "afile/sub"), cwd=tmp_path))
    assert "is a file, not a folder" in line
    line = refused(cli("predict", "--model", "nothing.pt", "--features", "X.csv", "--out", str(tmp_path), cwd=tmp_path))
    assert "is a folder" in line and "predictions.csv" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.csv", "afile", "answers.csv"]


# ----------------------------------------------------------------------------- 8, 9: nothing left in OUT; one run per OUT


def test_cli_fit_refuses_bad_settings_before_creating_out(tmp_path: Path) -> None:
    write_problem(tmp_path, n=12)
    for extra, needle in ((["--lr", "-1"], "--lr must be"), (["--device", "cuda"], "--device cuda: CUDA is not available"), (["--backbone", "nope"], "--backbone: unknown backbone"),
                          (["--worker-lr-scale", "nan"], "--worker-lr-scale"), (["--label-case", "up"], "--label-case")):
        args = fit_args(tmp_path, "out", *extra)
        args[args.index("--device") + 1:args.index("--device") + 2] = [] if "--device" in extra else ["cpu"]
        line = refused(cli(*args, cwd=tmp_path))
        assert needle in line, line
        assert not (tmp_path / "out").exists(), extra


def test_cli_fit_into_a_locked_out_fails_at_once_and_writes_nothing(tmp_path: Path) -> None:
    from kdcrowd.outdir import prepare_out_dir, release

    write_problem(tmp_path, n=12)
    out = tmp_path / "out"
    prepare_out_dir(out)  # this process stands for a first run in progress
    (out / "run.json").write_text('{"first": true}')
    (out / "checkpoints").mkdir()  # the first run's epochs: a running run, not an interrupted one
    try:
        line = refused(cli(*fit_args(tmp_path, "out"), cwd=tmp_path))
        assert "in use by another kdcrowd run" in line and "--out" in line
        line = refused(cli("fit", "--resume", "out", cwd=tmp_path))
        assert "in use by another kdcrowd run" in line and "--resume" in line
        assert (out / "run.json").read_text() == '{"first": true}' and sorted(p.name for p in out.iterdir()) == ["checkpoints", "run.json"]
    finally:
        release(out)


def test_out_dir_lock_is_exclusive_between_processes(tmp_path: Path) -> None:
    code = "import sys; from kdcrowd.outdir import prepare_out_dir; prepare_out_dir(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": SRC}
    from kdcrowd.outdir import OutPathError, prepare_out_dir, release

    prepare_out_dir(tmp_path / "o")
    try:
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], env=env, capture_output=True, text=True)
        assert r.returncode != 0 and "in use by another kdcrowd run" in r.stderr
    finally:
        release(tmp_path / "o")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # released: free again
    (tmp_path / "f").write_text("")
    with pytest.raises(OutPathError, match="--out .* is a file"):
        prepare_out_dir(tmp_path / "f")


# ----------------------------------------------------------------------------- command-line conventions


def test_cli_errors_go_to_stderr_and_name_the_option(tmp_path: Path) -> None:
    pd.DataFrame({"item": [1, 1], "worker": [1, 1], "label": [0, 1]}).to_csv(tmp_path / "dup.csv", index=False)
    line = refused(cli("aggregate", "--annotations", "dup.csv", "--out", "l.csv", cwd=tmp_path))
    assert "--duplicates first or last" in line and "--duplicates keep" in line and "duplicates='" not in line
    assert not (tmp_path / "l.csv").exists()


def test_cli_version_and_no_color(tmp_path: Path) -> None:
    r = cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"kdcrowd {kdcrowd.__version__}"
    (tmp_path / "dup.csv").write_text("item,worker,label\n1,1,0\n1,1,1\n")
    env = {**os.environ, "PYTHONPATH": SRC, "FORCE_COLOR": "1"}
    r = subprocess.run([sys.executable, "-m", "kdcrowd", "aggregate", "--annotations", "dup.csv", "--out", "l.csv"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "\x1b[" in r.stderr  # colour when forced ...
    r = subprocess.run([sys.executable, "-m", "kdcrowd", "aggregate", "--annotations", "dup.csv", "--out", "l.csv"], cwd=tmp_path, env={**env, "NO_COLOR": "1"}, capture_output=True, text=True)
    assert r.returncode == 2 and "\x1b[" not in r.stderr and r.stderr.startswith("error:")  # ... and none under NO_COLOR


def test_cli_exit_status_130_on_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    import kdcrowd.data.datasets as datasets
    from kdcrowd.cli import app

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "list_datasets", interrupted)
    with pytest.raises(SystemExit) as e:
        app(["datasets"], prog_name="kdcrowd")
    assert e.value.code == 130


# ----------------------------------------------------------------------------- weak messages


def test_unsupported_image_files_are_named_and_tiff_is_read(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("a.png", "b.tiff", "c.gif"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / name)
    with pytest.warns(InputWarning, match=r"skipped 1 image file\(s\) of an unsupported type: 'c.gif'"):
        files = list_image_files(tmp_path)
    assert [f.name for f in files] == ["a.png", "b.tiff"]


def test_stem_clash_is_named_when_labels_use_stems(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("a.png", "a.jpg", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    files = list_image_files(tmp_path)
    with pytest.raises(ValueError, match=r"'a.jpg', 'a.png' in .* would get the same item id.*remove the duplicate"):
        match_image_ids(files, tmp_path, ["a", "b"])
    assert match_image_ids(files, tmp_path, ["a.png", "b.png"])[0] == "name"  # labels that name files fully still match


def test_npy_features_missing_items_suggest_item_ids(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kdcrowd.cli import app

    write_problem(tmp_path, n=12)
    np.save(tmp_path / "X.npy", np.zeros((12, 3), np.float32))
    r = CliRunner().invoke(app, ["fit", "--annotations", str(tmp_path / "answers.csv"), "--features", str(tmp_path / "X.npy"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert r.exit_code == 2 and "--item-ids FILE" in r.output
    assert not (tmp_path / "o").exists()


def test_features_beyond_float32_are_not_called_infinite(tmp_path: Path) -> None:
    (tmp_path / "X.csv").write_text("item,f0,f1\na,1,2\nb,1e300,3\n")
    with pytest.raises(ValueError, match=r"beyond the float32 range .* b \(f0: 1e\+300\).*rescale") as e:
        read_features(tmp_path / "X.csv")
    assert "infinite" not in str(e.value)


def test_truncated_model_file_message_is_whole(tmp_path: Path) -> None:
    import torch

    from kdcrowd.report.practitioner import load_predictor

    torch.save({"format": "x", "w": torch.zeros(1000)}, tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as e:
        load_predictor(tmp_path / "m.pt")
    msg = str(e.value)
    assert "truncated" in msg and msg.endswith("copied whole")
    inner = msg.split("(torch.load: ", 1)[1].rsplit(");", 1)[0]
    assert len(inner) <= 165 and (inner.endswith(" ...") or len(inner) < 160)


def test_estimator_uses_the_index_of_a_dataframe_as_item_ids() -> None:
    from kdcrowd import KDCrowdClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(20, 3)).astype(np.float32), index=[f"id{i}" for i in range(20)], columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int).to_numpy()
    long = pd.DataFrame({"item": [f"id{i}" for i in range(20)] * 2, "worker": ["u"] * 20 + ["v"] * 20, "label": np.r_[y, y]})
    clf = KDCrowdClassifier(method="mv", epochs=1, device="cpu", batch_size=8).fit(X, long)  # refused before: items 0..19 are not id0..id19
    assert len(clf.labels_) == 20 and list(clf.feature_names_in_) == ["a", "b", "c"]
    ref = KDCrowdClassifier(method="mv", epochs=1, device="cpu", batch_size=8).fit(X.reset_index(drop=True), long, item_ids=list(X.index))
    np.testing.assert_array_equal(clf.label_proba_, ref.label_proba_)  # the index is the item ids, row by row


def test_a_usage_error_is_one_error_line_too(tmp_path: Path) -> None:
    """An unknown option, a value that is not a number or an unknown command printed click's
    usage line, a hint and a boxed message, where every other bad input prints one line."""
    line = refused(cli("fit", "--bogus", cwd=tmp_path))
    assert "No such option: --bogus" in line and "kdcrowd fit --help" in line
    line = refused(cli("run", "--dataset", "digits", "--out", "o", "--epochs", "abc", cwd=tmp_path))
    assert "'--epochs'" in line and "kdcrowd run --help" in line
    assert "No such command 'nosuch'" in refused(cli("nosuch", cwd=tmp_path))
    r = cli("plot", cwd=tmp_path)  # a group alone: its help, as before
    assert r.returncode == 2 and "Usage: kdcrowd plot" in r.stdout + r.stderr
    r = cli("fit", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--annotations" in r.stdout
