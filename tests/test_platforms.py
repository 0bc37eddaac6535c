"""Platform export readers: each hand-written fixture (in the platform's documented
format) yields the same annotations as its equivalent long CSV; detection from content;
skipped answers counted; clear errors naming --format, --field and --multi-label."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from kdcrowd.data.annotations import AnnotationError, Annotations
from kdcrowd.data.platforms import (
    FORMATS,
    detect_format,
    item_id_from_reference,
    looks_like_platform_export,
    read_export,
)

FIX = Path(__file__).parent / "fixtures" / "platforms"
KEY = ["item", "worker", "label"]


def _zip(folder: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, prefix + p.relative_to(folder).as_posix())
    return dest


# (fixture, options, skipped counts, gold)
CASES = {
    "labelstudio": ("labelstudio.json", {"field": "animal"}, {"cancelled": 1}, {"cat_1": "cat"}),
    "labelbox": ("labelbox.ndjson", {}, {"skipped": 1}, None),
    "argilla": ("argilla.json", {"field": "sentiment"}, {"draft": 1}, None),
    "doccano": ("doccano.zip", {}, {"empty": 2}, None),
    "toloka": ("toloka.tsv", {}, {"rejected": 1, "no worker": 1}, {"cat_1": "cat"}),
    "mturk": ("mturk.csv", {}, {"rejected": 1}, None),
    "sagemaker": ("sagemaker.zip", {}, {}, None),
    "cvat": ("cvat", {}, {"empty": 2}, None),
}


@pytest.fixture
def exports(tmp_path: Path) -> dict[str, Path]:
    """Fixture paths; the ZIP exports are zipped from their hand-written folders."""
    out = {name: FIX / f for name, (f, *_rest) in CASES.items()}
    out["doccano"] = _zip(FIX / "doccano", tmp_path / "doccano.zip")
    out["sagemaker"] = _zip(FIX / "sagemaker", tmp_path / "sagemaker.zip")
    return out


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df[KEY].astype(str).sort_values(KEY).reset_index(drop=True)


@pytest.mark.parametrize("name", list(CASES))
def test_export_equals_its_long_table(name: str, exports: dict[str, Path]) -> None:
    _, options, skipped, gold = CASES[name]
    path = exports[name]
    assert detect_format(path) == name and looks_like_platform_export(path)
    export = read_export(path, **options)
    expected = pd.read_csv(FIX / f"{name}.expected.csv", dtype=str)
    pd.testing.assert_frame_equal(_sorted(export.annotations), _sorted(expected))
    # the same crowd as Annotations.read of the equivalent long CSV
    # (the same ids, classes and annotations; the row order may differ)
    got, want = export.to_annotations(), Annotations.read(FIX / f"{name}.expected.csv")
    for attr in ("item_ids", "worker_ids", "classes"):
        assert getattr(got, attr).tolist() == getattr(want, attr).tolist()
    pd.testing.assert_frame_equal(_sorted(got.to_long()), _sorted(want.to_long()))
    assert (got.to_wide() == want.to_wide()).all()
    s = export.summary
    assert s["format"] == name == export.format
    assert s["n_annotations"] == 10 and s["n_items"] == 4 and s["n_workers"] == 3
    assert s["skipped"] == skipped and s["n_read"] == 10 + sum(skipped.values())  # every answer met counts as read (Toloka's rows without a worker had not)
    if gold is None:
        assert export.gold is None
    else:
        assert dict(zip(export.gold["item"], export.gold["label"])) == gold
    # forcing the detected format gives the same result
    forced = read_export(path, format=name, **options)
    pd.testing.assert_frame_equal(forced.annotations, export.annotations)


def test_the_folder_forms_read_like_the_zips(exports: dict[str, Path], tmp_path: Path) -> None:
    for name in ("doccano", "sagemaker"):
        a = read_export(exports[name]).annotations
        b = read_export(FIX / ("sagemaker/pets-job" if name == "sagemaker" else name)).annotations
        pd.testing.assert_frame_equal(_sorted(a), _sorted(b))
    # CVAT as a ZIP of the jobs' XML files, and one job's file alone
    z = _zip(FIX / "cvat", tmp_path / "jobs.zip")
    pd.testing.assert_frame_equal(_sorted(read_export(z).annotations), _sorted(read_export(FIX / "cvat").annotations))
    one = read_export(FIX / "cvat" / "job_13.xml")
    assert set(one.annotations["worker"]) == {"job_13"} and len(one.annotations) == 3


def test_original_references_are_kept(exports: dict[str, Path]) -> None:
    ls = read_export(exports["labelstudio"], field="animal").annotations
    refs = dict(zip(ls["item"], ls["ref"]))
    assert refs == {"cat_1": "/data/upload/1/8c2f1a3b-cat_1.jpg", "dog_2": "https://example.org/images/dog_2.jpg",
                    "cat_3": "s3://bucket/pets/cat_3.jpg", "dog_4": "/data/local-files/?d=pets/dog_4.jpg"}
    argilla = read_export(exports["argilla"], field="sentiment").annotations
    assert argilla["ref"].isna().all()  # text items: no image reference, the record id is the item


@pytest.mark.parametrize("ref, expected", [
    ("https://host.example/a/b/cat_1.jpg?X-Amz-Signature=abc", "cat_1"),
    ("s3://bucket/dir/IMG 0001.JPEG", "IMG 0001"),
    ("gs://bucket/dir/img%20two.png", "img two"),
    ("/data/upload/3/9f1c2b7e-cat_1.jpg", "cat_1"),
    ("/data/local-files/?d=photos/dog_9.webp", "dog_9"),
    ("C:\\photos\\cat_7.png", "cat_7"),
    ("photos/3f2a1b7c-cat.jpg", "3f2a1b7c-cat"),  # the upload prefix only under /data/upload/
    ("r17", "r17"),
    ("a sentence about cats.", "a sentence about cats."),
    ("notes/readme.txt", "notes/readme.txt"),
])
def test_item_id_from_reference(ref: str, expected: str) -> None:
    assert item_id_from_reference(ref) == expected


def test_plain_tables_and_answers_files_are_not_exports(tmp_path: Path) -> None:
    (tmp_path / "long.csv").write_text("item,worker,label\n1,a,0\n")
    (tmp_path / "long.tsv").write_text("item\tworker\tlabel\n1\ta\t0\n")
    (tmp_path / "answers.json").write_text(json.dumps({"0": {"1": 2}}))
    (tmp_path / "list.json").write_text(json.dumps([{"item": 1, "worker": 2, "label": 0}]))
    (tmp_path / "other.xml").write_text("<?xml version='1.0'?><root/>")
    for f in tmp_path.iterdir():
        assert detect_format(f) is None and not looks_like_platform_export(f), f
    assert not looks_like_platform_export(tmp_path / "missing.csv")
    with pytest.raises(AnnotationError, match="--format"):
        read_export(tmp_path / "long.csv")


def test_unknown_format_names_the_option() -> None:
    with pytest.raises(AnnotationError, match=r"--format 'prodigy'.*labelstudio"):
        read_export(FIX / "labelbox.ndjson", format="prodigy")


def test_a_forced_wrong_format_is_a_clear_error() -> None:
    with pytest.raises(AnnotationError, match="--format"):
        read_export(FIX / "toloka.tsv", format="mturk")
    with pytest.raises(AnnotationError, match="--format"):
        read_export(FIX / "mturk.csv", format="toloka")


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_export(FIX / "nope.json")


def test_several_controls_need_field() -> None:
    with pytest.raises(AnnotationError, match=r"2 choice control.*'animal', 'quality'.*--field"):
        read_export(FIX / "labelstudio.json")
    with pytest.raises(AnnotationError, match=r"--field 'colour' is not.*'animal', 'quality'"):
        read_export(FIX / "labelstudio.json", field="colour")
    q = read_export(FIX / "labelstudio.json", field="quality")
    assert q.annotations[KEY].values.tolist() == [["cat_1", "1", "sharp"]]
    with pytest.raises(AnnotationError, match=r"2 questions.*'sentiment', 'topics'.*--field"):
        read_export(FIX / "argilla.json")


def test_multi_label_answers_need_a_policy() -> None:
    with pytest.raises(AnnotationError, match=r"several classes.*'plot', 'acting'.*--multi-label first.*--multi-label explode"):
        read_export(FIX / "argilla.json", field="topics")
    first = read_export(FIX / "argilla.json", field="topics", multi="first")
    assert first.annotations["label"].tolist() == ["plot"] and first.summary["multi"] == "first"
    exploded = read_export(FIX / "argilla.json", field="topics", multi="explode")
    assert exploded.annotations["label"].tolist() == ["plot", "acting"]
    assert exploded.annotations["item"].tolist() == ["r1", "r1"]
    with pytest.raises(AnnotationError, match="--multi-label must be one of"):
        read_export(FIX / "argilla.json", field="topics", multi="all")


def test_include_rejected() -> None:
    for name, f in (("toloka", "toloka.tsv"), ("mturk", "mturk.csv")):
        e = read_export(FIX / f, include_rejected=True)
        assert len(e.annotations) == 11 and "rejected" not in e.summary["skipped"], name
        assert e.summary["n_workers"] == 4


def test_mturk_radio_buttons_and_task_answers(tmp_path: Path) -> None:
    # crowd-html radio buttons as separate .on columns, and packed in Answer.taskAnswers
    p = tmp_path / "radio.csv"
    p.write_text(
        "HITId,WorkerId,AssignmentStatus,Input.text,Answer.pos.on,Answer.neg.on\n"
        "H1,W1,Approved,great,true,false\n"
        "H1,W2,Submitted,great,false,true\n"
    )
    e = read_export(p)
    assert e.summary["field"] == "radio" and e.annotations[KEY].values.tolist() == [["H1", "W1", "pos"], ["H1", "W2", "neg"]]
    packed = json.dumps([{"pos": {"on": True}, "neg": {"on": False}}]).replace('"', '""')
    q = tmp_path / "packed.csv"
    q.write_text(f'HITId,WorkerId,AssignmentStatus,Answer.taskAnswers\nH1,W1,Approved,"{packed}"\n')
    assert read_export(q).annotations[KEY].values.tolist() == [["H1", "W1", "pos"]]


def test_sagemaker_multi_select_and_unknown_object(tmp_path: Path) -> None:
    root = tmp_path / "job"
    shutil.copytree(FIX / "sagemaker" / "pets-job", root)
    extra = root / "annotations" / "worker-response" / "iteration-1" / "3" / "late.json"
    extra.write_text(json.dumps({"answers": [{"workerId": "w9", "answerContent": {
        "crowd-image-classifier": {"labels": ["dog", "cat"]}}}]}))
    with pytest.raises(AnnotationError, match="--multi-label"):
        read_export(root)
    assert len(read_export(root, multi="explode").annotations) == 12
    extra.unlink()
    bad = root / "annotations" / "worker-response" / "iteration-1" / "7"
    bad.mkdir()
    (bad / "x.json").write_text(json.dumps({"answers": []}))
    with pytest.raises(AnnotationError, match="data object 7.*4 lines"):
        read_export(root)


def test_same_file_name_from_two_places_is_an_error(tmp_path: Path) -> None:
    tasks = [{"id": i, "data": {"image": f"s3://b/{d}/cat.jpg"}, "annotations": [
        {"completed_by": 1, "result": [{"from_name": "c", "type": "choices", "value": {"choices": ["x"]}}]}]}
        for i, d in enumerate(["a", "b"])]
    p = tmp_path / "ls.json"
    p.write_text(json.dumps(tasks))
    with pytest.raises(AnnotationError, match="file name 'cat'.*rename"):
        read_export(p)


def test_text_tasks_keep_their_ids(tmp_path: Path) -> None:
    tasks = [{"id": 7, "data": {"text": "great film"}, "annotations": [
        {"completed_by": 1, "result": [{"from_name": "s", "type": "choices", "value": {"choices": ["pos"]}}]}]}]
    p = tmp_path / "ls.json"
    p.write_text(json.dumps(tasks))
    e = read_export(p)
    assert e.annotations[KEY].values.tolist() == [["7", "1", "pos"]] and e.annotations["ref"].isna().all()


def test_doccano_span_labels_are_rejected(tmp_path: Path) -> None:
    z = tmp_path / "ner.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("admin.jsonl", json.dumps({"id": 1, "text": "Ann met Bob", "label": [[0, 3, "PER"]]}) + "\n")
    with pytest.raises(AnnotationError, match="span labels"):
        read_export(z)


def test_cvat_without_tags(tmp_path: Path) -> None:
    p = tmp_path / "boxes.xml"
    p.write_text('<annotations><version>1.1</version><image id="0" name="a.jpg">'
                 '<box label="cat" xtl="1" ytl="1" xbr="5" ybr="5"/></image></annotations>')
    assert detect_format(p) == "cvat"
    with pytest.raises(AnnotationError, match="no image-level <tag>"):
        read_export(p)


def test_formats_table() -> None:
    assert set(FORMATS) == {"labelstudio", "labelbox", "argilla", "doccano", "toloka", "mturk", "sagemaker", "cvat"}
    assert all(reader.__doc__ for reader in FORMATS.values())


def test_doccano_collaborative_export_names_no_annotator(tmp_path: Path) -> None:
    z = tmp_path / "collab.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("all.jsonl", json.dumps({"id": 1, "text": "good", "label": ["pos"]}) + "\n")
    with pytest.raises(AnnotationError, match="collaborative.*one file per user"):
        read_export(z)


def test_doccano_image_projects_name_items_by_file(tmp_path: Path) -> None:
    z = tmp_path / "images.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("ann.jsonl", "\n".join(json.dumps(r) for r in [
            {"id": 5, "filename": "cat.png", "label": ["cat"]}, {"id": 6, "filename": "dog.png", "label": ["dog"]}]))
    e = read_export(z)
    assert e.annotations[KEY + ["ref"]].values.tolist() == [["cat", "ann", "cat", "cat.png"], ["dog", "ann", "dog", "dog.png"]]


def test_cvat_task_assignee_is_not_an_annotator(tmp_path: Path) -> None:
    p = tmp_path / "task_3.xml"
    p.write_text('<annotations><version>1.1</version><meta><task><id>3</id><assignee><username>lead</username>'
                 '</assignee></task></meta><image id="0" name="a.jpg"><tag label="cat"/></image></annotations>')
    assert read_export(p).annotations["worker"].tolist() == ["task_3"]


def test_toloka_without_task_ids(tmp_path: Path) -> None:
    # the web interface's default download has no ASSIGNMENT:task_id; one INPUT column names the items
    df = pd.read_csv(FIX / "toloka.tsv", sep="\t", dtype=str, keep_default_na=False).drop(columns="ASSIGNMENT:task_id")
    p = tmp_path / "results.tsv"
    df.to_csv(p, sep="\t", index=False)
    pd.testing.assert_frame_equal(_sorted(read_export(p).annotations), _sorted(read_export(FIX / "toloka.tsv").annotations))
    df.insert(1, "INPUT:caption", "a pet")
    df["INPUT:image"] = df["INPUT:image"].str.replace(".jpg", "")  # no longer image references
    df.to_csv(p, sep="\t", index=False)
    with pytest.raises(AnnotationError, match="task_id"):
        read_export(p)


def test_percent_signs_are_kept_in_plain_paths() -> None:
    assert item_id_from_reference("photos/100%20off.jpg") == "100%20off"
    assert item_id_from_reference("https://h.example/photos/100%25.jpg") == "100%"


# ----------------------------------------------------------------------------- documented shapes the readers missed


def _json_min(tasks: list[dict]) -> list[dict]:
    """Label Studio's JSON-MIN export of a JSON export (export.md, "JSON_MIN"; the converter's
    convert_to_json_min): one record per annotation that was not cancelled, the task's data keys
    and ``id`` at the top, each control's answer under its from_name (one choice as text,
    several as ``{"choices": [...]}``), ``annotator`` (the email of an expanded user, else the
    user id), ``annotation_id``, ``created_at``, ``updated_at``, ``lead_time``."""
    out = []
    for task in tasks:
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            rec = dict(task["data"], id=task["id"])
            for r in ann["result"]:
                choices = r["value"]["choices"]
                rec[r["from_name"]] = choices[0] if len(choices) == 1 else {"choices": choices}
            who = ann["completed_by"]
            rec.update(annotator=who["email"] if isinstance(who, dict) else who, annotation_id=ann["id"],
                       created_at="2024-05-01T10:00:00Z", updated_at="2024-05-01T10:00:00Z", lead_time=3.5)
            out.append(rec)
    return out


def test_labelstudio_json_min_export(tmp_path: Path) -> None:
    p = tmp_path / "project-1-at-2024-05-01-min.json"
    p.write_text(json.dumps(_json_min(json.loads((FIX / "labelstudio.json").read_text())), indent=2))
    assert detect_format(p) == "labelstudio"
    with pytest.raises(AnnotationError, match=r"JSON-MIN.*'animal', 'quality'.*--field"):
        read_export(p)
    got = read_export(p, field="animal")
    want = read_export(FIX / "labelstudio.json", field="animal")
    pd.testing.assert_frame_equal(_sorted(got.annotations), _sorted(want.annotations))
    refs = [dict(zip(e.annotations["item"], e.annotations["ref"])) for e in (got, want)]
    assert refs[0] == refs[1]
    assert got.summary["n_annotations"] == 10 and got.gold is None  # JSON-MIN keeps no ground_truth flag
    # a text project: the data key and the answer key look alike, so --field names the control;
    # a task without annotations (annotator and annotation_id null) is no answer
    recs = [{"text": "great film", "id": 7, "sentiment": "pos", "annotator": 1, "annotation_id": 1},
            {"text": "great film", "id": 7, "sentiment": {"choices": ["pos", "neg"]}, "annotator": 2, "annotation_id": 2},
            {"text": "dull", "id": 8, "annotator": None, "annotation_id": None}]
    q = tmp_path / "text-min.json"
    q.write_text(json.dumps(recs))
    with pytest.raises(AnnotationError, match=r"'sentiment', 'text'.*--field"):
        read_export(q)
    with pytest.raises(AnnotationError, match="--multi-label"):
        read_export(q, field="sentiment")
    e = read_export(q, field="sentiment", multi="first")
    assert e.annotations[KEY].values.tolist() == [["7", "1", "pos"], ["7", "2", "pos"]] and e.summary["n_read"] == 2


def test_labelbox_json_list_and_pretty_printed_row(tmp_path: Path) -> None:
    # the SDK's export_task.result / [data_row.json for data_row in export_task.get_buffered_stream()]
    # saved with json.dump: a JSON list of the same data rows (Labelbox "Export image annotations")
    rows = [json.loads(line) for line in (FIX / "labelbox.ndjson").read_text().splitlines()]
    p = tmp_path / "export.json"
    p.write_text(json.dumps(rows, indent=2))
    assert detect_format(p) == "labelbox"
    want = read_export(FIX / "labelbox.ndjson")
    got = read_export(p)
    pd.testing.assert_frame_equal(_sorted(got.annotations), _sorted(want.annotations))
    assert got.summary["skipped"] == {"skipped": 1}
    one = tmp_path / "one.json"  # one data row, pretty-printed like the docs' sample export
    one.write_text(json.dumps(rows[0], indent=2))
    assert detect_format(one) == "labelbox" and len(read_export(one).annotations) == 3


def _argilla_flat(records: list[dict]) -> list[dict]:
    """Argilla 2.x records flattened (``records.to_list(flatten=True)``, the rows of
    ``records.to_datasets()``): fields and metadata at the top, and per question
    ``<q>.responses``, ``<q>.responses.users``, ``<q>.responses.status`` (lists in the same
    order) and ``<q>.suggestion``; keys a record lacks are null."""
    out = []
    for r in records:
        flat = {"id": r["id"], "_server_id": r["_server_id"], **r["fields"], **r["metadata"]}
        for q, rs in r["responses"].items():
            flat[f"{q}.responses"] = [x["value"] for x in rs]
            flat[f"{q}.responses.users"] = [x["user_id"] for x in rs]
            flat[f"{q}.responses.status"] = [x.get("status", "submitted") for x in rs]
        for q, s in r["suggestions"].items():
            flat.update({f"{q}.suggestion": s["value"], f"{q}.suggestion.score": s["score"],
                         f"{q}.suggestion.agent": s["agent"]})
        out.append(flat)
    keys = {k for f in out for k in f}
    return [{k: f.get(k) for k in sorted(keys)} for f in out]


def test_argilla_flattened_records(tmp_path: Path) -> None:
    flat = _argilla_flat(json.loads((FIX / "argilla.json").read_text()))
    assert flat[1]["topics.responses"] is None  # r2 has no topics answer
    want = read_export(FIX / "argilla.json", field="sentiment")
    as_list, as_lines = tmp_path / "records.json", tmp_path / "records.jsonl"
    as_list.write_text(json.dumps(flat))
    as_lines.write_text("".join(json.dumps(f) + "\n" for f in flat))  # datasets.Dataset.to_json writes JSON lines
    for p in (as_list, as_lines):
        assert detect_format(p) == "argilla", p
        with pytest.raises(AnnotationError, match=r"2 questions.*'sentiment', 'topics'.*--field"):
            read_export(p)
        got = read_export(p, field="sentiment")
        pd.testing.assert_frame_equal(_sorted(got.annotations), _sorted(want.annotations))
        assert got.summary["skipped"] == {"draft": 1} and got.summary["n_read"] == 11


def test_doccano_json_export(tmp_path: Path) -> None:
    # doccano's "JSON" export option: one <username>.json per user, a JSON list of the examples
    z = tmp_path / "export.zip"
    with zipfile.ZipFile(z, "w") as f:
        for user in ("alice", "bob", "carol"):
            rows = [json.loads(line) for line in (FIX / "doccano" / f"{user}.jsonl").read_text().splitlines()]
            f.writestr(f"{user}.json", json.dumps(rows))
    assert detect_format(z) == "doccano"
    got = read_export(z)
    pd.testing.assert_frame_equal(_sorted(got.annotations), _sorted(pd.read_csv(FIX / "doccano.expected.csv", dtype=str)))
    assert got.summary["skipped"] == {"empty": 2}


def test_crowd_html_radio_groups(tmp_path: Path) -> None:
    # crowd-radio-group's documented output: [{"btn1": {"yes": true}, "btn2": {"no": false}}]
    # (each crowd-radio-button: name -> {value: checked}); native radio inputs sharing a name:
    # {"q1": {"Pro": true, "Con": false}}; both in Answer.taskAnswers and, with
    # answer-format="flatten-objects", as Answer.<name>.<value> columns
    def task_answers(obj: dict) -> str:
        return '"' + json.dumps([obj]).replace('"', '""') + '"'
    p = tmp_path / "radio.csv"
    p.write_text("HITId,WorkerId,AssignmentStatus,Answer.taskAnswers\n"
                 f"H1,W1,Approved,{task_answers({'btn1': {'yes': True}, 'btn2': {'no': False}})}\n"
                 f"H1,W2,Approved,{task_answers({'btn1': {'yes': False}, 'btn2': {'no': True}})}\n")
    e = read_export(p)
    assert e.summary["field"] == "radio" and e.annotations[KEY].values.tolist() == [["H1", "W1", "yes"], ["H1", "W2", "no"]]
    q = tmp_path / "native.csv"
    q.write_text("HITId,WorkerId,AssignmentStatus,Answer.taskAnswers\n"
                 f"H1,W1,Approved,{task_answers({'q1': {'Pro': True, 'Con': False, 'Tie': False}})}\n"
                 f"H1,W2,Approved,{task_answers({'q1': {'Pro': False, 'Con': False, 'Tie': True}})}\n")
    e = read_export(q)
    assert e.summary["field"] == "q1" and e.annotations["label"].tolist() == ["Pro", "Tie"]
    flat = tmp_path / "flat.csv"
    flat.write_text("HITId,WorkerId,AssignmentStatus,Answer.q1.Pro,Answer.q1.Con,Answer.q1.Tie\n"
                    "H1,W1,Approved,true,false,false\nH1,W2,Approved,false,false,true\nH1,W3,Submitted,,,\n")
    e = read_export(flat)  # the blank row (no answer) is skipped, not another field
    assert e.summary["field"] == "q1" and e.annotations["label"].tolist() == ["Pro", "Tie"]
    assert e.summary["skipped"] == {"empty": 1}
    # a SageMaker custom template holds the same crowd-form object in answerContent
    root = tmp_path / "job"
    shutil.copytree(FIX / "sagemaker" / "pets-job", root)
    for f in (root / "annotations" / "worker-response").rglob("*.json"):
        doc = json.loads(f.read_text())
        for a in doc["answers"]:
            label = a["answerContent"].pop("crowd-image-classifier")["label"]
            a["answerContent"] = {"cat": {"on": label == "cat"}, "dog": {"on": label == "dog"}}
        f.write_text(json.dumps(doc))
    got = read_export(root)
    assert got.summary["field"] == "radio"
    pd.testing.assert_frame_equal(_sorted(got.annotations), _sorted(pd.read_csv(FIX / "sagemaker.expected.csv", dtype=str)))


def test_cvat_for_video_names_the_images_format(tmp_path: Path) -> None:
    # "CVAT for video 1.1" writes tracks only (tags are not part of it)
    p = tmp_path / "annotations.xml"
    p.write_text('<annotations><version>1.1</version><meta><job><id>1</id></job></meta>'
                 '<track id="0" label="cat" source="manual"><box frame="0" keyframe="1" outside="0" occluded="0" '
                 'xtl="1" ytl="1" xbr="5" ybr="5" z_order="0"/></track></annotations>')
    with pytest.raises(AnnotationError, match=r"CVAT for video.*CVAT for images 1\.1"):
        read_export(p)


def test_cvat_jobs_of_the_same_file_name_in_two_folders_are_two_workers(tmp_path: Path) -> None:
    """job1/annotations.xml and job2/annotations.xml without assignees: the workers are the
    files' paths (the file name alone merged the two annotators into one)."""
    for j, lab in ((1, "cat"), (2, "dog")):
        (tmp_path / "cvat" / f"job{j}").mkdir(parents=True)
        (tmp_path / "cvat" / f"job{j}" / "annotations.xml").write_text(
            f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version><meta><job><id>{j}</id></job></meta>'
            f'<image id="0" name="img_a.jpg"><tag label="{lab}" source="manual"/></image>'
            f'<image id="1" name="img_b.jpg"><tag label="cat" source="manual"/></image></annotations>')
    df = read_export(tmp_path / "cvat").annotations
    assert sorted(set(df["worker"])) == ["job1/annotations", "job2/annotations"]
    assert sorted(df.loc[df["item"] == "img_a", "label"]) == ["cat", "dog"]


@pytest.mark.parametrize("name,text,message", [
    ("lb.json", '{"data_row":{"id":"x"},"projects":[{"labels":[]}]}', "Labelbox export .*: projects is not an object"),
    ("lb2.json", '{"data_row":{"id":"x"},"projects":{"p":{"labels":[{"annotations":{"classifications":[{"name":"q","checklist_answers":["yes"]}]},'
                 '"label_details":{"created_by":"a"}}]}}}', "checklist_answers is not a list of objects"),
    ("ls.json", '[{"id":1,"data":{},"annotations":["x"]}]', "Label Studio export .*: a task's annotations is not a list of objects"),
    ("ls2.json", '[{"id":1,"data":{"t":"a"},"annotations":[{"completed_by":1,"result":[{"from_name":"c","type":"choices","value":{"choices":"cat"}}]}]}]',
     "value.choices is not a list \\(got str 'cat'\\)"),
    ("ar.json", '[{"id":"1","fields":{"t":"x"},"responses":{"q":["a"]}}]', "Argilla export .*: the responses to 'q' is not a list of objects"),
])
def test_a_malformed_export_is_one_error_naming_format(tmp_path: Path, name: str, text: str, message: str) -> None:
    """Entries of the wrong JSON type in a recognised export are one AnnotationError naming
    --format (they ended in AttributeError tracebacks; a string of choices became its letters)."""
    (tmp_path / name).write_text(text)
    with pytest.raises(AnnotationError, match=message) as e:
        read_export(tmp_path / name)
    assert "--format" in str(e.value)


def test_integer_labels_of_an_export_are_read_as_the_table_reads_them(tmp_path: Path) -> None:
    """kdcrowd aggregate on a Toloka export with numeric answers gives the classes (and the
    tie-break) of the same answers as a long CSV, class indices 0..max, as the library's
    PlatformExport.to_annotations does (the command kept them as text: '10' < '2' < '9');
    --classes names them in the user's order, on aggregate as on fit."""
    from typer.testing import CliRunner

    from kdcrowd.cli import app

    (tmp_path / "t.tsv").write_text("INPUT:text\tOUTPUT:result\tASSIGNMENT:task_id\tASSIGNMENT:worker_id\tASSIGNMENT:status\n"
                                    "hello\t2\tt1\tw1\tAPPROVED\nhello\t10\tt1\tw2\tAPPROVED\nbye\t9\tt2\tw1\tAPPROVED\nbye\t9\tt2\tw2\tAPPROVED\n")
    (tmp_path / "t.csv").write_text("item,worker,label\nt1,w1,2\nt1,w2,10\nt2,w1,9\nt2,w2,9\n")
    runner = CliRunner()
    outs = {}
    for src in ("t.tsv", "t.csv"):
        r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / src), "--out", str(tmp_path / f"{src}.out.csv")])
        assert r.exit_code == 0, r.output
        outs[src] = pd.read_csv(tmp_path / f"{src}.out.csv")
    pd.testing.assert_frame_equal(outs["t.tsv"], outs["t.csv"])
    assert list(outs["t.tsv"].columns) == ["item", "label", *(f"p_{k}" for k in range(11))] and outs["t.tsv"]["label"].tolist() == [2, 9]
    assert read_export(tmp_path / "t.tsv").to_annotations().classes.tolist() == list(range(11))
    r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / "t.tsv"), "--classes", "2,9,10", "--out", str(tmp_path / "named.csv")])
    assert r.exit_code == 0, r.output
    assert list(pd.read_csv(tmp_path / "named.csv").columns) == ["item", "label", "p_2", "p_9", "p_10"]
    r = runner.invoke(app, ["aggregate", "--annotations", str(tmp_path / "t.tsv"), "--classes", "2,2", "--out", str(tmp_path / "bad.csv")])
    assert r.exit_code == 2 and "--classes must be distinct" in r.output


def test_toloka_text_opening_a_quote_it_never_closes_keeps_every_row(tmp_path: Path) -> None:
    # Toloka's results file is plain TSV: a quote in a text is a character (read as CSV
    # quoting, two such texts swallowed 9 answers of 2 tasks without a word)
    rows = ["INPUT:text\tOUTPUT:result\tASSIGNMENT:task_id\tASSIGNMENT:worker_id\tASSIGNMENT:status"]
    for t in range(6):
        text = '"Best phone ever, really good' if t in (1, 3) else f"item number {t}"
        rows += [f"{text}\t{'good' if t % 2 else 'bad'}\ttask-{t}\t{w}\tAPPROVED" for w in ("w1", "w2", "w3")]
    p = tmp_path / "results.tsv"
    p.write_text("\n".join(rows) + "\n")
    ann = read_export(p).annotations
    assert len(ann) == 18 and ann["item"].nunique() == 6


def test_labelbox_data_rows_whose_keys_share_a_file_name_are_refused(tmp_path: Path) -> None:
    # two images' votes were pooled under one item, though different references with one file name are an error
    def row(t: int, key: str) -> str:
        lab = {"label_details": {"created_by": f"u{t}"}, "performance_details": {"skipped": False},
               "annotations": {"classifications": [{"name": "animal", "radio_answer": {"name": "cat"}}]}}
        return json.dumps({"data_row": {"id": f"clx{t}", "global_key": key, "row_data": key}, "projects": {"p1": {"labels": [lab]}}})
    p = tmp_path / "export.ndjson"
    p.write_text(row(0, "s3://bucket/2023/img_001.jpg") + "\n" + row(1, "s3://bucket/2024/img_001.jpg") + "\n")
    with pytest.raises(AnnotationError, match="img_001"):
        read_export(p)


def test_a_text_ending_in_an_image_extension_is_not_an_image(tmp_path: Path) -> None:
    # a text-classification task was renamed after its text's "file stem"
    def task(t: int, text: str) -> dict:
        result = [{"value": {"choices": ["pos"]}, "from_name": "sentiment", "to_name": "text", "type": "choices"}]
        return {"id": t, "data": {"text": text}, "annotations": [{"id": t, "completed_by": 1, "result": result}]}
    texts = ["Refund denied, see attached receipt.PNG", "line one\nphoto.jpg", "see photos/cat 1.jpg", "plain.jpg"]
    p = tmp_path / "project.json"
    p.write_text(json.dumps([task(t, x) for t, x in enumerate(texts, 1)]))
    assert sorted(read_export(p).annotations["item"]) == ["1", "2", "cat 1", "plain"]


def test_a_bare_image_file_name_with_a_space_is_still_an_image(tmp_path: Path) -> None:
    # only the data fields of text tasks (Label Studio, Argilla) read a spaced value without a
    # folder as a text; a Labelbox key "IMG 0001.jpg" is the image IMG 0001, as --images names it
    lab = {"label_details": {"created_by": "u1"}, "performance_details": {"skipped": False},
           "annotations": {"classifications": [{"name": "animal", "radio_answer": {"name": "cat"}}]}}
    p = tmp_path / "export.ndjson"
    p.write_text(json.dumps({"data_row": {"id": "clx0", "global_key": "IMG 0001.jpg"}, "projects": {"p1": {"labels": [lab]}}}) + "\n")
    assert read_export(p).annotations["item"].tolist() == ["IMG 0001"]


def _toloka(path: Path, rows: list[list[str]]) -> Path:
    hdr = ["INPUT:text", "OUTPUT:result", "GOLDEN:result", "ASSIGNMENT:task_id", "ASSIGNMENT:worker_id", "ASSIGNMENT:status"]
    path.write_text("\n".join("\t".join(r) for r in [hdr, *rows]) + "\n")
    return path


def test_export_gold_with_several_classes_is_left_out_not_an_unknown_class(tmp_path: Path) -> None:
    """A gold answer naming several classes (a Label Studio ground truth with two choices, a
    Toloka GOLDEN cell ["pos","neg"]) stays a list, which fit and aggregate leave out and
    say so; as JSON text it had stopped them as a label that is no class."""
    from typer.testing import CliRunner

    from kdcrowd.cli import app

    def ann(w: int, ch: list[str], gt: bool = False) -> dict:
        return {"id": w, "completed_by": w, "was_cancelled": False, "ground_truth": gt,
                "result": [{"from_name": "animal", "to_name": "img", "type": "choices", "value": {"choices": ch}}]}

    tasks = [{"id": 1, "data": {"text": "a purring animal"}, "annotations": [ann(1, ["cat", "dog"], gt=True), ann(2, ["cat"]), ann(3, ["cat"])]},
             {"id": 2, "data": {"text": "a barking animal"}, "annotations": [ann(1, ["dog"], gt=True), ann(2, ["dog"]), ann(3, ["cat"])]},
             {"id": 3, "data": {"text": "meow"}, "annotations": [ann(1, ["cat"]), ann(2, ["cat"]), ann(3, ["dog"])]}]
    ls = tmp_path / "ls.json"
    ls.write_text(json.dumps(tasks))
    assert read_export(ls, multi="first").gold["label"].tolist() == [["cat", "dog"], "dog"]
    tol = _toloka(tmp_path / "t.tsv", [["meh", '["pos"]', '["pos","neg"]', "t1", "w1", "APPROVED"], ["meh", '["neg"]', '["pos","neg"]', "t1", "w2", "APPROVED"],
                                       ["good", '["pos"]', '["pos"]', "t2", "w1", "APPROVED"], ["good", '["pos"]', '["pos"]', "t2", "w2", "APPROVED"]])
    assert read_export(tol).gold["label"].tolist() == [["pos", "neg"], "pos"]
    for path, extra in ((ls, ["--multi-label", "first"]), (tol, [])):
        r = CliRunner().invoke(app, ["aggregate", "--annotations", str(path), *extra, "--out", str(tmp_path / "agg.csv")])
        assert r.exit_code == 0 and "using the 1 gold answers" in r.output and "left out 1 with several classes" in " ".join(r.output.split()), r.output


def test_toloka_rows_without_a_worker_count_as_read(tmp_path: Path) -> None:
    """Rows without a worker are skipped and, as in every reader, counted among the answers
    read (the summary had read 3 answers, 2 annotations and 2 skipped)."""
    tol = _toloka(tmp_path / "t.tsv", [["a", "pos", "", "t1", "w1", "APPROVED"], ["b", "neg", "", "t2", "w1", "APPROVED"],
                                       ["c", "pos", "", "t3", "", "APPROVED"], ["d", "neg", "", "t4", "w1", "REJECTED"]])
    s = read_export(tol).summary
    assert (s["n_read"], s["n_annotations"], s["skipped"]) == (4, 2, {"no worker": 1, "rejected": 1})


def test_a_json_lines_export_with_a_long_first_record_is_recognised(tmp_path: Path) -> None:
    """An Argilla record holding a 70 kB text first: the format was guessed from a cut-off
    first line, so the file was not recognised as an export."""
    recs = [{"id": f"r{i}", "status": "completed", "_server_id": f"s{i}", "fields": {"text": "word " * 14000 if i == 0 else "short"},
             "metadata": {}, "suggestions": {}, "vectors": {},
             "responses": {"label": [{"value": "pos", "user_id": "U1", "status": "submitted"}, {"value": "neg", "user_id": "U2", "status": "submitted"}]}} for i in range(3)]
    p = tmp_path / "long.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert len(p.read_text().splitlines()[0]) > 65536
    assert detect_format(p) == "argilla" and read_export(p).summary["n_annotations"] == 6
    # a raw U+2028 in a text (a line break to splitlines, not to JSON lines) and a blank first line
    recs[0]["fields"]["text"] += "\u2028more"
    recs[1]["fields"]["text"] = "short\u2028text"
    for name, lead, first in (("sep.jsonl", "", 0), ("blank.jsonl", "\n", 0), ("short_sep.jsonl", "", 1)):
        q = tmp_path / name
        q.write_text(lead + "\n".join(json.dumps(r, ensure_ascii=False) for r in recs[first:]) + "\n", encoding="utf-8")
        assert detect_format(q) == "argilla", name


def test_export_gold_of_a_class_nobody_chose_names_the_options(tmp_path: Path) -> None:
    """A control task whose answer no worker chose: the error says --classes makes it a class
    and --gold replaces the export's gold (it had told the user to edit a 'label file')."""
    from typer.testing import CliRunner

    from kdcrowd.cli import app

    tol = _toloka(tmp_path / "t.tsv", [["a", "pos", "neu", "t1", "w1", "APPROVED"], ["a", "neg", "neu", "t1", "w2", "APPROVED"],
                                       ["b", "pos", "", "t2", "w1", "APPROVED"], ["b", "pos", "", "t2", "w2", "APPROVED"]])
    r = CliRunner().invoke(app, ["aggregate", "--annotations", str(tol), "--out", str(tmp_path / "agg.csv")])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "once --classes lists it" in text and "--gold FILE" in text, r.output
    r = CliRunner().invoke(app, ["aggregate", "--annotations", str(tol), "--classes", "neg,neu,pos", "--out", str(tmp_path / "agg.csv")])
    assert r.exit_code == 0, r.output


def test_json_lines_keep_a_raw_line_separator_inside_a_string(tmp_path: Path) -> None:
    """JSON allows a raw U+2028, U+2029 or U+0085 inside a string (doccano's pandas-written
    JSONL keeps them): a line is split at newlines only; splitlines() cut it in two."""
    rows = [{"id": 1, "text": "Great\u2028movie", "label": ["pos"]}, {"id": 2, "text": "Bad\u0085one\u2029", "label": ["neg"]}]
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "alice.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    e = read_export(_zip(folder, tmp_path / "d.zip"), format="doccano")
    assert sorted(e.annotations["label"].tolist()) == ["neg", "pos"]


def test_a_task_of_several_images_keeps_its_task_id(tmp_path: Path) -> None:
    """Two INPUT columns of images (a pair to compare): no one image names the task, so the
    task id does; the first image was every answer's item."""
    p = tmp_path / "pairs.tsv"
    p.write_text("INPUT:image_left\tINPUT:image_right\tOUTPUT:result\tASSIGNMENT:task_id\tASSIGNMENT:worker_id\tASSIGNMENT:status\n"
                 "https://x.org/a.jpg\thttps://x.org/b.jpg\tleft\tt1\tw1\tAPPROVED\n"
                 "https://x.org/d.jpg\thttps://x.org/c.jpg\tright\tt2\tw1\tAPPROVED\n")
    assert read_export(p, format="toloka").annotations[KEY].values.tolist() == [["t1", "w1", "left"], ["t2", "w1", "right"]]
    m = tmp_path / "pairs.csv"
    m.write_text("HITId,WorkerId,AssignmentStatus,Input.image_url_1,Input.image_url_2,Answer.label_1,Answer.label_2\n"
                 "H1,W1,Approved,https://x.org/cat_1.jpg,https://x.org/dog_2.jpg,cat,dog\n")
    assert read_export(m, format="mturk", field="label_2").annotations[KEY].values.tolist() == [["H1", "W1", "dog"]]


def test_export_labels_are_stripped_as_the_table_reader_strips_them(tmp_path: Path) -> None:
    p = tmp_path / "free.csv"
    p.write_text("HITId,WorkerId,AssignmentStatus,Answer.animal\nH1,W1,Approved,cat\nH1,W2,Approved,cat \nH2,W1,Approved, dog\nH2,W2,Approved,   \n")
    e = read_export(p, format="mturk")
    assert e.annotations["label"].tolist() == ["cat", "cat", "dog"] and e.summary["skipped"] == {"empty": 1}
    t = _toloka(tmp_path / "t.tsv", [["a", "pos", "pos ", "t1", "w1", "APPROVED"]])
    assert read_export(t).gold["label"].tolist() == ["pos"]


def test_checked_buttons_pooled_as_radio_say_they_may_be_check_boxes(tmp_path: Path) -> None:
    packed = json.dumps([{"offensive": {"on": True}, "negative": {"on": False}, "positive": {"on": True}}]).replace('"', '""')
    q = tmp_path / "boxes.csv"
    q.write_text(f'HITId,WorkerId,AssignmentStatus,Answer.taskAnswers\nH1,W1,Approved,"{packed}"\n')
    with pytest.raises(AnnotationError, match="check boxes, not one radio group"):
        read_export(q)


def test_a_table_taken_for_an_export_names_format_table(tmp_path: Path) -> None:
    p = tmp_path / "mine.csv"
    p.write_text("HITId,WorkerId,label\nH1,W1,cat\n")
    with pytest.raises(AnnotationError, match="pass --format table"):
        read_export(p, format="mturk")


def test_json_lines_end_at_a_carriage_return_too(tmp_path: Path) -> None:
    rows = [{"id": 1, "text": "good", "label": ["pos"]}, {"id": 2, "text": "bad", "label": ["neg"]}]
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "alice.jsonl").write_bytes("\r".join(json.dumps(r) for r in rows).encode())
    assert sorted(read_export(_zip(folder, tmp_path / "d.zip"), format="doccano").annotations["label"]) == ["neg", "pos"]


def test_a_task_image_beside_an_example_image_still_names_the_item(tmp_path: Path) -> None:
    """An example or hint image column (the same on every row, or mostly blank) beside the
    task's image: the image that varies names the item, as before pairs kept their task id."""
    p = tmp_path / "hint.tsv"
    p.write_text("INPUT:image\tINPUT:example\tOUTPUT:result\tASSIGNMENT:task_id\tASSIGNMENT:worker_id\n"
                 "https://x.org/a.jpg\thttps://x.org/ex.jpg\tcat\tt1\tw1\n"
                 "https://x.org/b.jpg\thttps://x.org/ex.jpg\tdog\tt2\tw1\n")
    assert read_export(p, format="toloka").annotations["item"].tolist() == ["a", "b"]
    m = tmp_path / "hint.csv"
    m.write_text("HITId,WorkerId,AssignmentStatus,Input.image_url,Input.thumb_url,Answer.label\n"
                 "H1,W1,Approved,https://x.org/cat_1.jpg,,cat\nH2,W1,Approved,https://x.org/dog_2.jpg,https://x.org/t.png,dog\n")
    assert read_export(m, format="mturk").annotations["item"].tolist() == ["cat_1", "dog_2"]


@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_exports_joined_with_their_header_lines_skip_the_repeated_headers(tmp_path: Path, bom: str) -> None:
    """Two MTurk batch files (two Toloka result files) joined with `cat`, each keeping its
    header line (and its byte-order mark): the inner header is skipped with a warning naming
    its line. It had been read as an answer: a phantom item, worker and class (and for Toloka
    a gold answer), and its image column's one non-URL value had turned the item ids from
    image file names into HIT and task ids."""
    from kdcrowd.data.readers import InputWarning

    hdr = ["HITId", "WorkerId", "AssignmentStatus", "Input.image_url", "Answer.category.label"]
    parts = [[hdr] + [[f"H{k}", w, "Approved", f"https://x.org/i{k}.jpg", "cat" if k % 2 else "dog"] for w in ("A1", "A2")]
             for k in (0, 1)]
    m = tmp_path / "joined.csv"
    m.write_text("".join(bom + "\n".join(",".join(r) for r in part) + "\n" for part in parts), encoding="utf-8")
    thdr = ["INPUT:image", "OUTPUT:result", "GOLDEN:result", "ASSIGNMENT:task_id", "ASSIGNMENT:worker_id"]
    tparts = [[thdr] + [[f"https://x.org/i{k}.jpg", "cat" if k % 2 else "dog", "dog" if k == 0 else "", f"t{k}", w] for w in ("wa", "wb")]
              for k in (0, 1)]
    t = tmp_path / "joined.tsv"
    t.write_text("".join(bom + "\n".join("\t".join(r) for r in part) + "\n" for part in tparts), encoding="utf-8")
    for path, workers in ((m, ["A1", "A2"]), (t, ["wa", "wb"])):
        with pytest.warns(InputWarning, match=r"skipped 1 row\(s\) that repeat the header line .* at line\(s\) 4;"):
            e = read_export(path)
        a = e.annotations
        assert sorted(set(a["item"])) == ["i0", "i1"] and sorted(set(a["worker"])) == workers, a
        assert sorted(set(a["label"])) == ["cat", "dog"] and e.summary["n_read"] == 4 and e.summary["skipped"] == {}
        if path == t:
            assert e.gold.values.tolist() == [["i0", "dog"]]


def test_item_column_names_the_item_ids_of_a_toloka_or_mturk_export() -> None:
    """--item-column (item_column=) had been ignored for exports, even a column the export
    lacks: a Toloka or MTurk export takes its item ids from the column it names (an image
    column gives the file names, as by default); a column it lacks, a column blank on an
    answer's row, and any other export (which has no columns) are refused naming it."""
    tol = FIX / "toloka.tsv"
    assert sorted(set(read_export(tol).annotations["item"])) == ["cat_1", "cat_3", "dog_2", "dog_4"]
    e = read_export(tol, item_column="ASSIGNMENT:task_id")
    assert sorted(set(e.annotations["item"])) == [f"000a1b2c--000{k}" for k in range(1, 5)]
    assert e.gold.values.tolist() == [["000a1b2c--0001", "cat"]] and e.summary["skipped"] == {"rejected": 1, "no worker": 1}
    assert e.annotations["ref"].iloc[0] == "https://tlk.s3.example.org/pets/cat_1.jpg"  # the original reference is kept
    assert read_export(tol, item_column="INPUT:image").annotations["item"].tolist() == read_export(tol).annotations["item"].tolist()
    m = read_export(FIX / "mturk.csv", item_column="HITId")
    assert sorted(set(m.annotations["item"])) == [f"3XH7ZI000000000000000000{k}" for k in range(1, 5)]
    with pytest.raises(AnnotationError, match=r"^--item-column 'no_such_column' is not a column of Toloka results file .*ASSIGNMENT:task_id"):
        read_export(tol, item_column="no_such_column")
    with pytest.raises(AnnotationError, match=r"^--item-column 'GOLDEN:result' of Toloka results file .* is blank on 8 of the 11 rows"):
        read_export(tol, item_column="GOLDEN:result")
    with pytest.raises(AnnotationError, match=r"^--item-column .* a labelstudio export .*Drop --item-column"):
        read_export(FIX / "labelstudio.json", field="animal", item_column="id")


def test_cli_item_column_of_an_export(tmp_path: Path) -> None:
    """kdcrowd aggregate/fit --item-column with an export: honoured (item ids from that
    column), or one error line naming --item-column."""
    from typer.testing import CliRunner

    from kdcrowd.cli import app

    out = tmp_path / "agg.csv"
    r = CliRunner().invoke(app, ["aggregate", "--annotations", str(FIX / "toloka.tsv"), "--item-column", "ASSIGNMENT:task_id", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert pd.read_csv(out, dtype=str)["item"].tolist() == [f"000a1b2c--000{k}" for k in range(1, 5)]
    r = CliRunner().invoke(app, ["aggregate", "--annotations", str(FIX / "toloka.tsv"), "--item-column", "no_such_column", "--out", str(out)])
    assert r.exit_code == 2 and "--item-column 'no_such_column' is not a column" in " ".join(r.output.split()), r.output
    # fit: features keyed by the task ids; with --texts, a column the export lacks names the texts' id column
    rows = [[f"https://x.org/im{k}.jpg", ["pos", "neg"][k % 2], "", f"t{k}", w, "APPROVED"] for k in range(20) for w in ("u", "v", "x")]
    tol = tmp_path / "t.tsv"
    tol.write_text("\n".join("\t".join(r) for r in [["INPUT:image", "OUTPUT:result", "GOLDEN:result", "ASSIGNMENT:task_id",
                                                       "ASSIGNMENT:worker_id", "ASSIGNMENT:status"], *rows]) + "\n")
    pd.DataFrame({"item": [f"t{k}" for k in range(20)], "a": [k % 2 for k in range(20)]}).to_csv(tmp_path / "f.csv", index=False)
    pd.DataFrame({"doc": [f"im{k}" for k in range(20)], "text": [["good day", "bad day"][k % 2] for k in range(20)]}).to_csv(tmp_path / "x.csv", index=False)
    fit = ["fit", "--annotations", str(tol), "--method", "mv", "--epochs", "1", "--quiet", "--device", "cpu"]
    for extra in (["--features", str(tmp_path / "f.csv"), "--item-column", "ASSIGNMENT:task_id"], ["--texts", str(tmp_path / "x.csv"), "--item-column", "doc"]):
        r = CliRunner().invoke(app, [*fit, *extra, "--out", str(tmp_path / extra[0][2:])])
        assert r.exit_code == 0, r.output
        assert len(pd.read_csv(tmp_path / extra[0][2:] / "labels.csv")) == 20
