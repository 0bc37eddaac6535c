"""benchmarks/seed_ensemble.py: an ensemble of a method's seeds from the probabilities
``protocol.py --save-proba`` saved, cyclic windows of seeds, paired by seed with a
KD-Crowd stage of a merged protocol file (hand-made arrays whose accuracies are known)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

Y_TEST = np.array([0, 1, 2, 0])
Y_VAL = np.array([1, 2])


def onehot(labels: list[int], k: int = 3) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[labels]


@pytest.fixture
def mod(load_script: Any) -> ModuleType:
    return load_script("benchmarks/seed_ensemble")


def write(folder: Path, label: str, seed: int, test: np.ndarray, val: np.ndarray, y_test: np.ndarray = Y_TEST) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{label.replace(' ', '_').replace('=', '_')}_seed{seed}.npz"
    np.savez_compressed(folder / name, test=test, val=val, y_test=y_test, y_val=Y_VAL)


def three_seeds(folder: Path) -> None:
    # seed 0 right on items 0, 1; seed 1 on 0, 2; seed 2 on 1, 2, 3 (of the labels 0, 1, 2, 0)
    write(folder, "annot-mix", 0, onehot([0, 1, 0, 1]), onehot([1, 0]))
    write(folder, "annot-mix", 1, onehot([0, 0, 2, 2]), onehot([1, 2]))
    write(folder, "annot-mix", 2, onehot([1, 1, 2, 0]) * 0.9 + 0.1 / 3, onehot([0, 2]))


def test_windows_of_seeds_average_the_softmax_cyclically(mod: ModuleType, tmp_path: Path) -> None:
    three_seeds(tmp_path / "p")
    write(tmp_path / "p", "kdcrowd(annot-mix)", 0, onehot([0, 0, 0, 0]), onehot([0, 0]))  # another label's file: not read
    probs = mod.load_probabilities([tmp_path / "p"], "annot-mix", None)
    assert list(probs) == [0, 1, 2]
    one = mod.seed_ensembles(probs, 1)
    assert [one[s]["test_accuracy"] for s in (0, 1, 2)] == [0.5, 0.5, 0.75] and [one[s]["val_accuracy"] for s in (0, 1, 2)] == [0.5, 1.0, 0.5]
    two = mod.seed_ensembles(probs, 2)
    assert [two[s]["members"] for s in (0, 1, 2)] == [[0, 1], [1, 2], [2, 0]]
    # {0, 1}: item 0 both 0 (right); items 1-3 tie, and argmax takes the lower class: 0, 0, 1 (wrong)
    assert two[0]["test_accuracy"] == 0.25
    # {1, 2}: the mean of the two seeds' probabilities
    p = (probs[1]["test"] + probs[2]["test"]) / 2
    assert two[1]["test_accuracy"] == float(np.mean(p.argmax(1) == Y_TEST))
    three = mod.seed_ensembles(probs, 3)
    assert all(sorted(e["members"]) == [0, 1, 2] for e in three.values()) and len({e["test_accuracy"] for e in three.values()}) == 1
    with pytest.raises(SystemExit, match="--size 4: between 1 and the 3 seeds"):
        mod.seed_ensembles(probs, 4)


def test_missing_seeds_and_other_items_are_refused(mod: ModuleType, tmp_path: Path) -> None:
    three_seeds(tmp_path / "p")
    with pytest.raises(SystemExit, match=r"--seeds: no saved probabilities of 'annot-mix' for seed\(s\) 5"):
        mod.load_probabilities([tmp_path / "p"], "annot-mix", [0, 5])
    with pytest.raises(SystemExit, match="--proba: no saved probabilities of 'crowdar'"):
        mod.load_probabilities([tmp_path / "p"], "crowdar", None)
    write(tmp_path / "q", "annot-mix", 3, onehot([0, 1, 2, 0]), onehot([1, 2]), y_test=np.array([0, 1, 2, 1]))
    with pytest.raises(SystemExit, match="seed 3's test or validation items differ"):
        mod.load_probabilities([tmp_path / "p", tmp_path / "q"], "annot-mix", None)
    # the order given is the windows' order; a seed named twice is refused
    assert list(mod.load_probabilities([tmp_path / "p"], "annot-mix", [2, 0, 1])) == [2, 0, 1]
    assert [e["members"] for e in mod.seed_ensembles(mod.load_probabilities([tmp_path / "p"], "annot-mix", [2, 0]), 2).values()] == [[2, 0], [0, 2]]
    with pytest.raises(SystemExit, match="--seeds: a seed named twice"):
        mod.load_probabilities([tmp_path / "p"], "annot-mix", [1, 1, 2])
    (tmp_path / "s").mkdir()
    np.savez_compressed(tmp_path / "s" / "annot-mix_seed9.npz", test=onehot([0, 1, 2, 0]), y_test=Y_TEST)
    with pytest.raises(SystemExit, match="seed 9's file has no val, y_val: not written by protocol.py --save-proba"):
        mod.load_probabilities([tmp_path / "s"], "annot-mix", None)


def test_a_seed_in_several_folders_is_read_from_the_last_as_the_merge_keeps(mod: ModuleType, tmp_path: Path) -> None:
    three_seeds(tmp_path / "p")  # seed 0's test predictions 0, 1, 0, 1
    write(tmp_path / "r", "annot-mix", 0, onehot([0, 1, 2, 0]), onehot([1, 2]))  # seed 0 run again
    later = mod.load_probabilities([tmp_path / "p", tmp_path / "r"], "annot-mix", None)
    assert list(later) == [0, 1, 2] and later[0]["test"].argmax(1).tolist() == [0, 1, 2, 0]
    assert mod.load_probabilities([tmp_path / "r", tmp_path / "p"], "annot-mix", [0])[0]["test"].argmax(1).tolist() == [0, 1, 0, 1]
    # the rows protocol_table.by_label pairs with: the last of a seed, as --merge keeps
    assert mod.by_label([{"label": "annot-mix", "seed": 0, "test_accuracy": 0.5}, {"label": "annot-mix", "seed": 0, "test_accuracy": 1.0}])["annot-mix"][0]["test_accuracy"] == 1.0


def test_the_stage_is_paired_with_the_seed_ensemble_by_seed(mod: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    three_seeds(tmp_path / "p")
    stage = lambda t, v: {"stages": {"ensemble-all": {"test_accuracy": t, "val_last": v}}}  # noqa: E731
    merged = {"runs": [{"label": "annot-mix", "seed": 0, "test_accuracy": 0.5},
                       {"label": "kd", "seed": 0, **stage(1.0, 1.0)}, {"label": "kd", "seed": 1, **stage(0.75, 0.5)}, {"label": "kd", "seed": 7, **stage(0.1, 0.1)}]}
    (tmp_path / "m.json").write_text(json.dumps(merged))
    out = tmp_path / "e.json"
    result = mod.main(["--proba", str(tmp_path / "p"), "--label", "annot-mix", "--size", "2", "--compare", str(tmp_path / "m.json"), "--out", str(out)])
    (c,) = result["comparison"]
    two = mod.seed_ensembles(mod.load_probabilities([tmp_path / "p"], "annot-mix", None), 2)
    assert c["label"] == "kd" and c["seeds"] == [0, 1]  # seed 7 has no seed ensemble
    assert c["baseline_test"] == [100 * two[0]["test_accuracy"], 100 * two[1]["test_accuracy"]] and c["test"] == [100.0, 75.0]
    assert c["val"] == [100.0, 50.0] and c["baseline_val"] == [100 * two[0]["val_accuracy"], 100 * two[1]["val_accuracy"]]
    assert json.loads(out.read_text())["comparison"][0]["seeds"] == [0, 1]
    printed = capsys.readouterr().out
    assert printed.startswith("annot-mix × 2 seeds, seeds 0,1,2: test ") and "kd, its ensemble-all, seeds 0,1: test 87.5 ± 17.7 against annot-mix × 2 seeds" in printed
    assert "interval" not in printed  # overlapping windows are not independent pairs
    with pytest.raises(SystemExit, match="no row records stage 'student'"):
        mod.main(["--proba", str(tmp_path / "p"), "--label", "annot-mix", "--size", "2", "--compare", str(tmp_path / "m.json"), "--stage", "student"])
