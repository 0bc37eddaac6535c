"""benchmarks/protocol.py --merge on hand-made parts (no training): parts of other training
settings refused, a stale list of the first part not carried over, a teacher row read from a
file compared with the trained run of the same label and seed."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SUITE = "protocol-cifar10n-worst"
SETTINGS = {"dataset": "cifar10n", "dataset_options": {"labels": "worst"}, "backbone": "resnet18", "train": {"epochs": 100, "batch_size": 128}}


@pytest.fixture
def protocol(load_script: Any) -> ModuleType:
    return load_script("benchmarks/protocol")


def row(label: str, seed: int, acc: float, **extra: Any) -> dict[str, Any]:
    return {"method": label, "label": label, "seed": seed, "test_accuracy": acc, "test_accuracy_val_selected": acc, "val_last": acc, "stages": {}, **extra}


def part(path: Path, runs: list[dict[str, Any]], settings: dict[str, Any] | None = None, **extra: Any) -> Path:
    path.write_text(json.dumps({"suite": SUITE, "settings": settings or SETTINGS, "command": f"protocol.py {path.name}", "runs": runs, **extra}))
    return path


def merge(protocol: ModuleType, out: Path, *parts: Path) -> dict[str, Any]:
    protocol.main(["--suite", SUITE, "--out", str(out), "--merge", *map(str, parts)])
    return json.loads(out.read_text())


def test_parts_of_other_training_settings_are_refused_naming_the_setting_and_files(protocol: ModuleType, tmp_path: Path) -> None:
    a = part(tmp_path / "a.json", [row("mv", 0, 0.6)])
    radam = {**SETTINGS, "train": {**SETTINGS["train"], "optimizer": "radam", "lr": 3e-4}}
    b = part(tmp_path / "b.json", [row("mv", 1, 0.61)], settings=radam)
    out = tmp_path / "merged.json"
    with pytest.raises(SystemExit, match=rf"other settings than {a}'s: {b}: train\.lr: '\(absent\)' → 0\.0003; {b}: train\.optimizer: '\(absent\)' → 'radam'"):
        merge(protocol, out, a, b)
    assert not out.exists()
    epochs = {**SETTINGS, "train": {**SETTINGS["train"], "epochs": 3}}
    with pytest.raises(SystemExit, match=r"train\.epochs: 100 → 3"):
        merge(protocol, out, a, part(tmp_path / "c.json", [row("mv", 1, 0.61)], settings=epochs))
    # CUDA graphs (and progress, checkpoints) change no number: such parts merge, stating the first part's settings
    graphs = {**SETTINGS, "train": {**SETTINGS["train"], "cuda_graph": True}}
    merged = merge(protocol, out, a, part(tmp_path / "d.json", [row("mv", 1, 0.61)], settings=graphs))
    assert merged["settings"] == SETTINGS and [r["seed"] for r in merged["runs"]] == [0, 1]


def test_lists_of_the_first_part_do_not_survive_a_merge_without_them(protocol: ModuleType, tmp_path: Path) -> None:
    # a merged file merged again: its teacher_rows_from_files and repeated_runs were of its own parts
    first = part(tmp_path / "first.json", [row("mv", 0, 0.6)],
                 teacher_rows_from_files=["annot-mix seed 0: old/annot-mix_seed0.json"], repeated_runs=["mv seed 0: 0.5, 0.6 (differ)"])
    merged = merge(protocol, tmp_path / "merged.json", first, part(tmp_path / "second.json", [row("mv", 1, 0.61)]))
    assert "teacher_rows_from_files" not in merged and "repeated_runs" not in merged


def test_a_saved_teacher_row_is_compared_with_the_trained_run(protocol: ModuleType, tmp_path: Path) -> None:
    saved = "teachers/annot-mix_seed0.json"
    trained = part(tmp_path / "trained.json", [row("annot-mix", 0, 0.89)])
    kd = part(tmp_path / "kd.json", [row("annot-mix", 0, 0.88, from_file=saved), row("kdcrowd(annot-mix)", 0, 0.9, teacher="annot-mix")])
    kd_again = part(tmp_path / "kd_again.json", [row("annot-mix", 0, 0.88, from_file=saved), row("kdcrowd(annot-mix)", 1, 0.9, teacher="annot-mix")])
    merged = merge(protocol, tmp_path / "merged.json", trained, kd, kd_again)
    # the trained row is kept; the saved row, read by two parts, is listed once, with its file
    assert [(r["label"], r.get("from_file")) for r in merged["runs"]] == [("annot-mix", None), ("kdcrowd(annot-mix)", None), ("kdcrowd(annot-mix)", None)]
    assert merged["repeated_runs"] == [f"annot-mix seed 0: 0.89, 0.88 (from {saved}) (differ)"]
    assert "teacher_rows_from_files" not in merged
    same = part(tmp_path / "same.json", [row("annot-mix", 0, 0.89, from_file=saved)])
    assert merge(protocol, tmp_path / "merged.json", same, trained)["repeated_runs"] == [f"annot-mix seed 0: 0.89 (from {saved}), 0.89 (same)"]
    # two trained rows, as before
    assert merge(protocol, tmp_path / "merged.json", trained, trained)["repeated_runs"] == ["annot-mix seed 0: 0.89, 0.89 (same)"]
