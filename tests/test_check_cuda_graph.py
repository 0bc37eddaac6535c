"""benchmarks/check_cuda_graph.py on the CPU: the eager runs only (CUDA graphs need CUDA),
repeated bit for bit, with a small MLP on the first CIFAR-10N items when the files are
there, else on digits with simulated workers (a suite added for the test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from test_profile_protocol import _suite

LIMITS = ["--backbone", "mlp", "--limit-train", "96", "--limit-eval", "64", "--batch-size", "32", "--device", "cpu"]


def test_check_cuda_graph_on_the_cpu_runs_the_eager_path_and_says_why(load_script: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load_script("benchmarks/check_cuda_graph")
    out_path = tmp_path / "check.json"
    out = mod.main([*_suite(mod, monkeypatch), *LIMITS, "--out", str(out_path)])
    assert json.loads(out_path.read_text()) == json.loads(json.dumps(out))
    assert out["items"] == {"train": 96, "val": 64, "test": 64} and out["graphs"].startswith("cuda_graph needs CUDA")
    assert list(out["methods"]) == ["annot-mix", "maxmig", "mv"]
    for method, rec in out["methods"].items():
        assert rec["graph"] == {"skipped": out["graphs"]} and "graph_vs_eager" not in rec and "deterministic" not in rec
        for run in (rec["eager"], rec["eager_repeat"]):
            assert [h["epoch"] for h in run["history"]] == [1, 2] and run["cuda_graph"] is False and run["cuda_graphs"] == {}
            assert run["steps_per_epoch"] == 3 and run["step_ms"]["n"] == 2 and run["step_ms"]["median"] > 0
            assert len(run["epoch_train_seconds"]) == 2 and all(s > 0 for s in run["epoch_train_seconds"])
        same = rec["eager_repeat_vs_eager"]
        assert same["bit_identical"] and same["max_abs_diff"] == {"loss": 0.0, "val_accuracy": 0.0, "state": 0.0}, (method, same)
        assert rec["eager"]["final_state_digest"] == rec["eager_repeat"]["final_state_digest"]
        assert out["summary"][method]["graph_bit_identical"] is None and out["summary"][method]["eager_repeat_bit_identical"] is True


def test_compare_finds_the_largest_differences(load_script: Any) -> None:
    import torch

    mod = load_script("benchmarks/check_cuda_graph")
    hist = [{"epoch": 1, "loss": 1.0, "val_accuracy": 0.5}, {"epoch": 2, "loss": 0.5, "val_accuracy": 0.75}]
    state = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    a = ({"history": hist}, state)
    assert mod.compare(a, a)["bit_identical"]
    other = [{**hist[0]}, {**hist[1], "loss": 0.25}]
    b = ({"history": other}, {**state, "w": torch.tensor([1.0, 2.5])})
    c = mod.compare(a, b)
    assert not c["bit_identical"] and not c["history_identical"] and not c["state_identical"]
    assert c["max_abs_diff"] == {"loss": 0.25, "val_accuracy": 0.0, "state": 0.5}
    assert mod.speedup({"step_ms": {"median": 15.0}, "epoch_train_seconds": [3.0, 1.0]}, {"step_ms": {"median": 6.0}, "epoch_train_seconds": [4.0, 0.5]}) == {"step_median": 2.5, "later_epochs_train_seconds": 2.0}
