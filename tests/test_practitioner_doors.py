"""The practitioner doors: platform exports in every command that reads --annotations,
frozen pretrained image features by default in `kdcrowd fit --images`, and text items
(`kdcrowd fit --texts`, `kdcrowd predict --texts`)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kdcrowd.cli import app

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "platforms"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _labelstudio_export(path: Path, n_items: int = 40, seed: int = 0, with_gold: bool = True) -> dict[str, str]:
    """A one-control Label Studio export of image tasks: 4 good workers and one who always
    answers 'cat'; returns the true class of each item id (the image's file stem)."""
    rng = np.random.default_rng(seed)
    tasks, truth = [], {}
    for i in range(n_items):
        cls = "cat" if i % 2 else "dog"
        stem = f"img_{i:03d}"
        truth[stem] = cls
        anns = []
        for w in range(4):
            lab = cls if rng.random() < 0.85 else ("dog" if cls == "cat" else "cat")
            anns.append({"id": 10 * i + w, "completed_by": w + 1, "was_cancelled": False, "ground_truth": with_gold and i == 0 and w == 0,
                         "result": [{"from_name": "animal", "to_name": "img", "type": "choices", "value": {"choices": [lab]}}]})
        anns.append({"id": 10 * i + 5, "completed_by": {"id": 9, "email": "spam@example.org"}, "was_cancelled": False,
                     "result": [{"from_name": "animal", "to_name": "img", "type": "choices", "value": {"choices": ["cat"]}}]})
        if i == 3:
            anns.append({"id": 10 * i + 6, "completed_by": 7, "was_cancelled": True, "result": []})
        tasks.append({"id": 1000 + i, "data": {"image": f"/data/upload/1/8c2f1a3b-{stem}.jpg"}, "annotations": anns})
    path.write_text(json.dumps(tasks))
    return truth


def _kdcrowd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "kdcrowd", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


# ----------------------------------------------------------------------------- platform exports


def test_aggregate_reads_a_labelstudio_export_with_no_other_flag(tmp_path: Path) -> None:
    truth = _labelstudio_export(tmp_path / "export.json")
    r = _kdcrowd("aggregate", "--annotations", "export.json", "--method", "ds", "--out", "labels.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # the summary on stdout (1 cancelled answer skipped), the gold note on stderr
    assert "read labelstudio export export.json, field 'animal': 201 answers, 200 annotations of 40 items by 5 workers; skipped 1 (1 cancelled)" in " ".join(r.stdout.split())
    assert "using the 1 gold answers of export.json" in r.stderr and "error" not in r.stderr
    labels = pd.read_csv(tmp_path / "labels.csv", dtype={"item": str})
    assert set(labels["item"]) == set(truth)  # ids are the image file stems, as --images names them
    acc = float((labels.set_index("item")["label"] == pd.Series(truth)).mean())
    assert acc >= 0.85


def test_every_fixture_export_aggregates_as_its_expected_long_table(tmp_path: Path) -> None:
    for name, extra in [("labelstudio.json", ["--field", "animal"]), ("labelbox.ndjson", []), ("argilla.json", ["--field", "sentiment"]),
                        ("doccano", []), ("toloka.tsv", []), ("mturk.csv", []), ("sagemaker", []), ("cvat", [])]:
        out = tmp_path / f"{name}.csv"
        r = runner.invoke(app, ["aggregate", "--annotations", str(FIXTURES / name), *extra, "--method", "mv", "--out", str(out)])
        assert r.exit_code == 0, (name, r.output)
        expected = pd.read_csv(FIXTURES / f"{name.split('.')[0]}.expected.csv", dtype=str)
        got = pd.read_csv(out, dtype=str)
        assert set(got["item"]) == set(expected["item"]), name
        assert f"export {FIXTURES / name}" in " ".join(r.stdout.split()), name


def test_format_and_platform_options_fail_with_one_clear_line(tmp_path: Path) -> None:
    out = str(tmp_path / "l.csv")
    r = runner.invoke(app, ["aggregate", "--annotations", str(FIXTURES / "labelstudio.json"), "--out", out])
    assert r.exit_code == 2 and "--field" in r.output
    r = runner.invoke(app, ["aggregate", "--annotations", str(FIXTURES / "mturk.csv"), "--format", "nope", "--out", out])
    assert r.exit_code == 2 and "--format must be one of" in r.output
    pd.DataFrame({"item": [1, 2], "worker": ["a", "b"], "label": ["x", "y"]}).to_csv(tmp_path / "long.csv", index=False)
    r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / "long.csv"), "--field", "animal", "--out", out])
    assert r.exit_code == 2 and "--field applies to annotation-platform exports" in r.output
    # rejected MTurk assignments come back with --include-rejected
    r = runner.invoke(app, ["aggregate", "--annotations", str(FIXTURES / "mturk.csv"), "--include-rejected", "--out", out])
    assert r.exit_code == 0 and "11 annotations" in " ".join(r.stdout.split())


def test_multi_label_explode_builds_with_duplicates_kept(tmp_path: Path) -> None:
    tasks = [{"id": i, "data": {"text": f"t{i}"}, "annotations": [
        {"completed_by": w, "result": [{"from_name": "tags", "type": "choices", "value": {"choices": ["a", "b"] if (i + w) % 3 == 0 else ["a"]}}]} for w in range(3)]}
        for i in range(6)]
    (tmp_path / "multi.json").write_text(json.dumps(tasks))
    r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / "multi.json"), "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "--multi-label" in r.output
    r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / "multi.json"), "--multi-label", "explode", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 0, r.output
    assert "24 annotations" in " ".join(r.stdout.split())  # 18 answers, 6 with two classes
    r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / "multi.json"), "--multi-label", "first", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 0 and "18 annotations" in " ".join(r.stdout.split())


def _toloka_with_gold(path: Path, n: int = 40, n_gold: int = 10) -> dict[str, str]:
    """A Toloka results TSV where two of three workers always give the other class and the
    first ``n_gold`` tasks are control tasks (``GOLDEN:result``): majority vote is always
    wrong, and only the gold answers tell which workers to trust."""
    rng = np.random.default_rng(0)
    truth = {f"t{i:02d}": ("cat" if rng.random() < 0.5 else "dog") for i in range(n)}
    flip = {"cat": "dog", "dog": "cat"}
    rows = []
    for i, (task, y) in enumerate(truth.items()):
        for w, ans in (("w_flip1", flip[y]), ("w_flip2", flip[y]), ("w_true", y)):
            rows.append({"INPUT:text": f"text {task}", "OUTPUT:result": ans, "GOLDEN:result": y if i < n_gold else "",
                         "ASSIGNMENT:task_id": task, "ASSIGNMENT:worker_id": w, "ASSIGNMENT:status": "APPROVED"})
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return truth


def test_an_exports_gold_answers_are_the_gold_questions(tmp_path: Path) -> None:
    truth = _toloka_with_gold(tmp_path / "results.tsv")
    acc = lambda f: float((pd.read_csv(f, dtype={"item": str}).set_index("item")["label"] == pd.Series(truth)).mean())  # noqa: E731
    r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / "results.tsv"), "--method", "ds", "--out", str(tmp_path / "ds.csv")])
    assert r.exit_code == 0, r.output
    assert "using the 10 gold answers" in r.stderr and "--gold FILE replaces them" in r.stderr
    assert acc(tmp_path / "ds.csv") == 1.0
    # the same answers without the control tasks: Dawid-Skene follows the majority, always wrong
    plain = pd.read_csv(tmp_path / "results.tsv", sep="\t").rename(columns={"ASSIGNMENT:task_id": "item", "ASSIGNMENT:worker_id": "worker", "OUTPUT:result": "label"})
    plain[["item", "worker", "label"]].to_csv(tmp_path / "plain.csv", index=False)
    r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / "plain.csv"), "--method", "ds", "--out", str(tmp_path / "plain_ds.csv")])
    assert r.exit_code == 0, r.output
    assert acc(tmp_path / "plain_ds.csv") == 0.0
    # --gold replaces them (here: a gold file that names one item only)
    pd.DataFrame({"item": ["t00"], "label": [truth["t00"]]}).to_csv(tmp_path / "g.csv", index=False)
    r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / "results.tsv"), "--gold", str(tmp_path / "g.csv"), "--method", "ds", "--out", str(tmp_path / "g_ds.csv")])
    assert r.exit_code == 0, r.output
    assert "holds 10 gold answers" in r.stderr and "--gold replaces them" in r.stderr


def test_fit_uses_an_exports_gold_answers(tmp_path: Path) -> None:
    truth = _toloka_with_gold(tmp_path / "results.tsv")
    ids = sorted(truth)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(len(ids), 4))
    pd.DataFrame({"item": ids, **{f"f{j}": X[:, j] for j in range(4)}}).to_csv(tmp_path / "X.csv", index=False)
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "results.tsv"), "--features", str(tmp_path / "X.csv"), "--method", "ds",
                            "--epochs", "2", "--device", "cpu", "--quiet", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "using the 10 gold answers" in r.stderr
    workers = pd.read_csv(tmp_path / "out" / "workers.csv").set_index("worker")
    assert workers.loc["w_true", "gold_accuracy"] == 1.0 and workers.loc["w_flip1", "gold_accuracy"] == 0.0
    assert "the export&#x27;s gold answers" in (tmp_path / "out" / "report.html").read_text() or "the export's gold answers" in (tmp_path / "out" / "report.html").read_text()
    # --truth over the control tasks: they are left out of its accuracy, named as the export's (no --gold was given)
    pd.DataFrame({"item": ids, "label": [truth[i] for i in ids]}).to_csv(tmp_path / "truth.csv", index=False)
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "results.tsv"), "--features", str(tmp_path / "X.csv"), "--method", "ds", "--truth", str(tmp_path / "truth.csv"),
                            "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "out2")])
    assert r.exit_code == 0, r.output
    said = " ".join(r.stderr.split())
    assert "10 of the 40 items of --truth" in said and f"(the gold answers of {tmp_path / 'results.tsv'})" in said and "(--gold)" not in said


def test_fit_on_a_platform_export_and_features(tmp_path: Path) -> None:
    truth = _labelstudio_export(tmp_path / "export.json", n_items=60)
    rng = np.random.default_rng(1)
    ids = sorted(truth)
    y = np.array([truth[i] == "cat" for i in ids], dtype=float)
    X = rng.normal(size=(len(ids), 4)) + 2.0 * y[:, None]
    pd.DataFrame({"item": ids, **{f"f{j}": X[:, j] for j in range(4)}}).to_csv(tmp_path / "X.csv", index=False)
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "export.json"), "--features", str(tmp_path / "X.csv"), "--method", "maxmig",
                            "--epochs", "5", "--device", "cpu", "--quiet", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "read labelstudio export" in r.stdout and "using the 1 gold answers" in r.stderr
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", dtype={"item": str})
    assert float((labels.set_index("item")["label"] == pd.Series(truth)).mean()) >= 0.9


# ----------------------------------------------------------------------------- texts

_WORDS = {"sport": ["match", "goal", "team", "coach", "league", "score"], "food": ["recipe", "bread", "sauce", "oven", "garlic", "salad"],
          "tech": ["laptop", "software", "chip", "server", "code", "battery"]}
_FILLER = ["the", "today", "very", "about", "people", "some", "news", "with", "again", "because"]


def _text_crowd(root: Path, n: int = 150, seed: int = 0) -> dict[str, str]:
    """Texts whose words carry the class; 3 workers right 70 % of the time (errors
    uniform), one who always says 'sport'. Writes texts.csv (id, body) and answers.csv;
    returns the true class of each id."""
    rng = np.random.default_rng(seed)
    classes = list(_WORDS)
    truth, rows = {}, []
    for i in range(n):
        c = classes[i % 3]
        words = list(rng.choice(_WORDS[c], 3)) + list(rng.choice(_FILLER, 5))
        rng.shuffle(words)
        truth[f"doc{i:04d}"] = c
        rows.append((f"doc{i:04d}", " ".join(words)))
    pd.DataFrame(rows, columns=["id", "body"]).to_csv(root / "texts.csv", index=False)
    ann = []
    for item, c in truth.items():
        for w in range(3):
            lab = c if rng.random() < 0.7 else str(rng.choice([k for k in classes if k != c]))
            ann.append((item, f"w{w}", lab))
        ann.append((item, "spam", "sport"))
    pd.DataFrame(ann, columns=["item", "worker", "label"]).to_csv(root / "answers.csv", index=False)
    return truth


def test_fit_on_texts_beats_majority_vote_and_predicts_new_texts(tmp_path: Path) -> None:
    truth = _text_crowd(tmp_path, n=300)
    (tmp_path / "new").mkdir()
    new = _text_crowd(tmp_path / "new", n=30, seed=5)
    pd.read_csv(tmp_path / "new" / "texts.csv").to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "out"
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "answers.csv"), "--texts", str(tmp_path / "texts.csv"), "--item-column", "id", "--text-column", "body",
                            "--predict-texts", str(tmp_path / "new.csv"), "--epochs", "8", "--device", "cpu", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    labels = pd.read_csv(out / "labels.csv").set_index("item")["label"]
    acc = float((labels == pd.Series(truth)).mean())
    answers = pd.read_csv(tmp_path / "answers.csv")
    mv = answers.groupby("item")["label"].agg(lambda s: s.value_counts().sort_index().idxmax())
    mv_acc = float((mv == pd.Series(truth)).mean())
    assert acc >= 0.88 and acc > mv_acc + 0.1, (acc, mv_acc)  # measured: 0.93 against 0.75
    pred = pd.read_csv(out / "predictions.csv")
    assert set(pred["item"]) == set(new)
    assert float((pred.set_index("item")["label"] == pd.Series(new)).mean()) >= 0.85

    # kdcrowd predict --texts uses the saved vocabulary (the text column defaults to the training one)
    r = runner.invoke(app, ["predict", "--model", str(out / "model.pt"), "--texts", str(tmp_path / "new.csv"), "--item-column", "id", "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    again = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(again.filter(like="p_").to_numpy(), pred.filter(like="p_").to_numpy(), atol=1e-5)
    r = runner.invoke(app, ["predict", "--model", str(out / "model.pt"), "--features", str(tmp_path / "new.csv"), "--out", str(tmp_path / "q.csv")])
    assert r.exit_code == 2 and "trained on texts; give --texts" in r.output
    # the report's closing line names what predict takes for this model (it said --features X.npy, or --images)
    html = (out / "report.html").read_text()
    assert "kdcrowd predict --model OUT/model.pt --texts FILE --out predictions.csv" in html and "--features X.npy" not in html

    import torch

    ck = torch.load(out / "model.pt", weights_only=True)
    assert ck["inputs"]["kind"] == "text" and ck["inputs"]["text_column"] == "body" and len(ck["inputs"]["featurizer"]["vocabulary"]) > 18


def test_texts_are_exclusive_with_features_and_images(tmp_path: Path) -> None:
    _text_crowd(tmp_path, n=9)
    base = ["fit", "--annotations", str(tmp_path / "answers.csv"), "--out", str(tmp_path / "o"), "--epochs", "1", "--quiet"]
    for extra in (["--texts", str(tmp_path / "texts.csv"), "--features", str(tmp_path / "texts.csv")], ["--texts", str(tmp_path / "texts.csv"), "--images", str(tmp_path)]):
        r = runner.invoke(app, base + extra)
        assert r.exit_code == 2 and "exactly one of --features FILE (.npy, .csv, .parquet), --images DIR or --texts FILE" in " ".join(r.output.split())
    r = runner.invoke(app, base + ["--texts", str(tmp_path / "texts.csv"), "--predict-features", str(tmp_path / "texts.csv")])
    assert r.exit_code == 2 and "--predict-texts with --texts" in r.output
    r = runner.invoke(app, base + ["--texts", str(tmp_path / "texts.csv"), "--item-column", "id", "--text-column", "nope"])
    assert r.exit_code == 2 and "--text-column" in r.output


# ----------------------------------------------------------------------------- pretrained image features

from kdcrowd.models.pretrained import pretrained_extra_available  # noqa: E402

needs_pretrained = pytest.mark.skipif(not pretrained_extra_available(), reason="kdcrowd[pretrained] (EfficientNet-Lite0 weights) is not installed")


def _colour_images(root: Path, n: int, seed: int, side: int = 32) -> dict[str, str]:
    """n small images, red or blue by class (with noise); returns file stem -> class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        cls = "blue" if i % 2 else "red"
        arr = rng.integers(0, 90, (side, side, 3), dtype=np.uint8)
        arr[..., 0 if cls == "red" else 2] += 160
        Image.fromarray(arr).save(root / f"im{i:03d}.png")
        truth[f"im{i:03d}"] = cls
    return truth


def _image_answers(path: Path, truth: dict[str, str], seed: int = 0, right: float = 0.8) -> None:
    rng = np.random.default_rng(seed)
    rows = [(item, w, c if rng.random() < right else ("blue" if c == "red" else "red")) for item, c in truth.items() for w in ("ann", "bob", "cy")]
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(path, index=False)


@needs_pretrained
def test_fit_images_uses_frozen_pretrained_features_by_default_and_predict_reuses_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("KDCROWD_CACHE", str(tmp_path / "cache"))
    truth = _colour_images(tmp_path / "imgs", 16, seed=0)
    new = _colour_images(tmp_path / "new", 4, seed=1)
    _image_answers(tmp_path / "answers.csv", truth, right=0.9)
    out = tmp_path / "out"
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "answers.csv"), "--images", str(tmp_path / "imgs"), "--predict-images", str(tmp_path / "new"),
                            "--method", "mv", "--epochs", "20", "--device", "cpu", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "image backbone: efficientnet-lite0: frozen ImageNet features" in " ".join(r.stderr.split())
    assert list((tmp_path / "cache" / "features").glob("efficientnet-lite0-*.npy"))  # computed once, cached on disk
    ck = torch.load(out / "model.pt", weights_only=True)
    assert ck["inputs"] == {"kind": "image-features", "backbone": "efficientnet-lite0", "image_size": 128, "norm": "l2"}
    assert ck["item_shape"] == (1280,) and ck["predictor"]["backbone"] == "mlp"
    labels = pd.read_csv(out / "labels.csv").set_index("item")["label"]
    assert float((labels == pd.Series(truth)).mean()) >= 0.85
    pred = pd.read_csv(out / "predictions.csv")
    assert float((pred.set_index("item")["label"] == pd.Series(new)).mean()) >= 0.75  # the head learned colour from the features
    # kdcrowd predict --images computes the same features before the head
    r = runner.invoke(app, ["predict", "--model", str(out / "model.pt"), "--images", str(tmp_path / "new"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    again = pd.read_csv(tmp_path / "p.csv")
    assert again["item"].tolist() == pred["item"].tolist() and set(again["item"]) == set(new)
    np.testing.assert_array_equal(again.filter(like="p_").to_numpy(), pred.filter(like="p_").to_numpy())
    # to the last digit without label spreading too: fit scaled the features it predicted once
    # (they were scaled twice, a float32 step apart, where spreading did not hide it)
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "answers.csv"), "--images", str(tmp_path / "imgs"), "--predict-images", str(tmp_path / "new"),
                            "--method", "mv", "--epochs", "3", "--label-spreading", "off", "--device", "cpu", "--quiet", "--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", "--model", str(tmp_path / "plain" / "model.pt"), "--images", str(tmp_path / "new"), "--out", str(tmp_path / "p2.csv")])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "p2.csv").filter(like="p_").to_numpy(), pd.read_csv(tmp_path / "plain" / "predictions.csv").filter(like="p_").to_numpy())
    r = runner.invoke(app, ["predict", "--model", str(out / "model.pt"), "--features", str(tmp_path / "answers.csv"), "--out", str(tmp_path / "q.csv")])
    assert r.exit_code == 2 and "trained on images; give --images" in r.output
    # the features were scaled to unit length (run.json and model.pt say so); the loaded predictor scales
    # raw feature rows the same way, and a model file saved before the scaling was recorded does not
    from kdcrowd.data.items import read_image_folder
    from kdcrowd.models.pretrained import extract_features
    from kdcrowd.persist import load_predictor

    assert json.loads((out / "run.json").read_text())["frozen_feature_norm"] == "l2"
    new_ids, new_images = read_image_folder(tmp_path / "new", size=128)
    raw = extract_features(new_images)
    scaled = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    predictor = load_predictor(out / "model.pt", device="cpu")
    np.testing.assert_allclose(predictor(raw), predictor(scaled), atol=1e-5)
    np.testing.assert_allclose(predictor(raw), pred.set_index("item").loc[[str(i) for i in new_ids]].filter(like="p_").to_numpy(), atol=1e-4)
    ck["inputs"] = {k: v for k, v in ck["inputs"].items() if k != "norm"}
    torch.save(ck, tmp_path / "older.pt")
    assert not np.allclose(load_predictor(tmp_path / "older.pt", device="cpu")(raw), predictor(raw), atol=1e-3)


def test_image_features_none_trains_from_scratch_and_bad_settings_fail(tmp_path: Path) -> None:
    import torch

    truth = _colour_images(tmp_path / "imgs", 12, seed=0, side=16)
    _image_answers(tmp_path / "answers.csv", truth)
    base = ["fit", "--annotations", str(tmp_path / "answers.csv"), "--images", str(tmp_path / "imgs"), "--image-size", "16", "--method", "mv", "--epochs", "1", "--device", "cpu", "--quiet"]
    r = runner.invoke(app, [*base, "--image-features", "none", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "image backbone: auto, trained on the images (--image-features none)" in r.stderr
    ck = torch.load(tmp_path / "o" / "model.pt", weights_only=True)
    assert ck["inputs"] is None and ck["item_shape"] == (16, 16, 3) and ck["predictor"]["backbone"] == "fastcnn"
    r = runner.invoke(app, [*base, "--image-features", "maybe", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "--image-features must be auto, frozen or none" in r.output
    r = runner.invoke(app, [*base, "--image-features", "frozen", "--backbone", "fastcnn", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "--image-features frozen computes the features of a pretrained network" in r.output
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "answers.csv"), "--features", str(tmp_path / "answers.csv"), "--image-features", "frozen", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "--image-features goes with --images" in r.output


def test_without_the_pretrained_extra_fit_says_how_to_get_it_and_trains_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kdcrowd.models.pretrained as P

    monkeypatch.setattr(P, "pretrained_extra_available", lambda name="efficientnet-lite0": False)
    truth = _colour_images(tmp_path / "imgs", 12, seed=0, side=16)
    _image_answers(tmp_path / "answers.csv", truth)
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "answers.csv"), "--images", str(tmp_path / "imgs"), "--image-size", "16", "--method", "mv", "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "trained from scratch; pip install 'kdcrowd[pretrained]' for ImageNet features" in " ".join(r.stderr.split())
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "answers.csv"), "--images", str(tmp_path / "imgs"), "--image-features", "frozen", "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "pip install 'kdcrowd[pretrained]'" in r.output


@needs_pretrained
def test_the_estimator_takes_images_through_frozen_features_as_fit_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdcrowd import KDCrowdClassifier
    from kdcrowd.config import ConfigError
    from kdcrowd.doors import FROZEN_FEATURE_HEAD

    monkeypatch.setenv("KDCROWD_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    y = np.arange(16) % 2
    x = rng.integers(0, 90, (16, 32, 32, 3), dtype=np.uint8)
    x[y == 0, :, :, 0] += 160
    x[y == 1, :, :, 2] += 160
    clf = KDCrowdClassifier(method="mv", epochs=40, device="cpu").fit(x, y)  # image_features="auto", the default of every door
    assert clf.input_transform_ == {"kind": "image-features", "backbone": "efficientnet-lite0", "image_size": 32, "norm": "l2"}
    assert clf.item_shape_ == (1280,) and clf.n_features_in_ == 1280 and clf.preprocessor_.input_shape == (1280,)
    train = clf.metrics_["config"]["train"]  # head_recipe auto on frozen features: the recipe, but the epochs given
    assert (train["epochs"], train["batch_size"], train["lr"], train["weight_decay"]) == (40, FROZEN_FEATURE_HEAD["batch_size"], FROZEN_FEATURE_HEAD["lr"], FROZEN_FEATURE_HEAD["weight_decay"])
    assert list((tmp_path / "cache" / "features").glob("efficientnet-lite0-*.npy"))
    from kdcrowd.models.pretrained import extract_features

    np.testing.assert_allclose(clf.predict_proba(x[:4]), clf.predict_proba(extract_features(x[:4])), atol=1e-6)  # images or their features
    # the head saw each image's features divided by their length (FROZEN_FEATURE_NORM), and so does predict
    np.testing.assert_allclose(np.linalg.norm(clf.spreading_["features"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(clf._inputs(x[:4], clf.item_shape_), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(pd.DataFrame(extract_features(x[:4]))), clf.predict_proba(x[:4]), atol=1e-6)  # a DataFrame of rows too
    raw = extract_features(x[:4])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    older = copy.deepcopy(clf)  # a model saved before the scaling was recorded reads its features as they come
    older.input_transform_ = {k: v for k, v in clf.input_transform_.items() if k != "norm"}
    np.testing.assert_array_equal(older._inputs(x[:4], older.item_shape_), raw)
    # grey and RGBA images: the features of the same picture in RGB (an internal function's error before)
    grey = x[..., :1].copy()
    g = KDCrowdClassifier(method="mv", epochs=1, device="cpu").fit(grey, y)
    np.testing.assert_allclose(g.predict_proba(grey[:4]), g.predict_proba(extract_features(np.repeat(grey[:4], 3, axis=-1))), atol=1e-6)
    rgba = np.concatenate([x, np.full((16, 32, 32, 1), 255, np.uint8)], -1)
    np.testing.assert_allclose(clf.predict_proba(rgba[:4]), clf.predict_proba(x[:4]), atol=1e-6)
    with pytest.raises(ConfigError, match="image_features='none'"):
        KDCrowdClassifier(method="mv", epochs=1, device="cpu").fit(np.concatenate([x, x[..., :2]], -1), y)
    shared = KDCrowdClassifier(method="mv", epochs=1, head_recipe="shared", device="cpu").fit(x, y)
    assert shared.metrics_["config"]["train"]["lr"] == 1e-3
    pixels = KDCrowdClassifier(method="mv", epochs=1, image_features="none", backbone="mlp", device="cpu").fit(x, y)
    assert pixels.input_transform_ is None and pixels.item_shape_ == (32, 32, 3)
    with pytest.raises(ConfigError, match="image_features='frozen' computes the features of images"):
        KDCrowdClassifier(image_features="frozen", device="cpu").fit(x.reshape(16, -1).astype(np.float32), y)
    with pytest.raises(ConfigError, match="image_features must be one of auto, frozen, none"):
        KDCrowdClassifier(image_features="yes", device="cpu").fit(x, y)
    with pytest.raises(ConfigError, match="head_recipe must be one of auto, shared, frozen-features; got 'frozen'"):
        KDCrowdClassifier(head_recipe="frozen", device="cpu").fit(x, y)


def test_a_resumed_fit_keeps_the_feature_scaling_its_run_started_with(tmp_path: Path) -> None:
    """``kdcrowd fit --resume``: the frozen image features are scaled as ``run.json`` records,
    ``none`` for a run started before the scaling was recorded; a new run takes the library's."""
    from kdcrowd.cli import RUN_FILE, _recorded_choices
    from kdcrowd.models.pretrained import FROZEN_FEATURE_NORM

    _feature_norm = lambda out, resume: _recorded_choices(out, resume)["frozen_feature_norm"]
    (tmp_path / RUN_FILE).write_text(json.dumps({"command": "kdcrowd fit", "settings": {}}))
    assert _feature_norm(tmp_path, resume=True) == "none"
    assert _feature_norm(tmp_path, resume=False) == FROZEN_FEATURE_NORM == "l2"
    (tmp_path / RUN_FILE).write_text(json.dumps({"command": "kdcrowd fit", "settings": {}, "frozen_feature_norm": "l2"}))
    assert _feature_norm(tmp_path, resume=True) == "l2"
