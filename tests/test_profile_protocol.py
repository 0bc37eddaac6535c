"""benchmarks/profile_protocol.py on the CPU: a few epochs of protocol-suite methods with a
small MLP, on the first CIFAR-10N items when the files are there, else on digits with
simulated workers (a suite added for the test)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kdcrowd.data.datasets import data_root

LIMITS = ["--backbone", "mlp", "--limit-train", "96", "--limit-eval", "64", "--batch-size", "32", "--device", "cpu"]


def _suite(mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    if (data_root() / "cifar10n" / "cifar10n_annotations.npz").exists():
        return ["--suite", "protocol-cifar10n-worst"]
    monkeypatch.setitem(mod.protocol.SUITES, "protocol-digits-test", {"dataset": "digits", "dataset_options": {"workers": "symmetric"}, "backbone": "mlp", "train": {"epochs": 100, "batch_size": 32}})
    return ["--suite", "protocol-digits-test"]


def test_profile_protocol_writes_timings_and_synchronisations(load_script: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load_script("benchmarks/profile_protocol")
    out_path = tmp_path / "profile.json"
    out = mod.main([*_suite(mod, monkeypatch), *LIMITS, "--method", "kdcrowd", "--kd-teacher", "annot-mix", "--out", str(out_path)])
    assert json.loads(out_path.read_text()) == json.loads(json.dumps(out))
    assert out["items"] == {"train": 96, "val": 64, "test": 64}
    # the teacher runs first (KD-Crowd reuses it, as the suite does)
    assert [r["label"] for r in out["runs"]] == ["annot-mix", "kdcrowd(annot-mix)"]
    assert list(out["runs"][1]["profile"]) == ["student", "stage2"]
    for run in out["runs"]:
        assert run["test_accuracy"] is not None and run["stages"]
        for stage, p in run["profile"].items():
            assert p["steps_per_epoch"] == 3
            assert [e["kind"] for e in p["epochs"]] == ["warmup", "timed", "profiled"]
            assert all(e["train_ms"] > 0 and e["eval_ms"] > 0 for e in p["epochs"])
            assert p["step_ms"]["n"] == 2 and p["step_ms"]["median"] > 0 and p["step_ms"]["epoch_mean"] > 0
            assert p["eval_ms"]["mean"] > 0 and p["eval_ms"]["items"] == 64
            prof = p["profiled_epoch"]
            assert prof["steps"] == 3 and prof["step_ms"] > 0 and prof["top_cpu_ops"] and prof["top_cuda_kernels"] == []
            assert prof["gpu_busy_fraction"] is None and prof["kernel_time_fraction"] is None  # no CUDA here
            syncs = p["syncs"]
            assert syncs["detector"].startswith("cpu") and syncs["steps"] == 3
            # annotations without padding: no step reads anything back; what is left is the
            # previous epoch's loss and validation accuracy, read once at its end
            assert syncs["total"] == 2 and all(".item()" in row["code"] for row in syncs["by_line"]), (run["label"], stage, syncs)


def test_kdcrowd_needs_a_teacher(load_script: Any, tmp_path: Path) -> None:
    mod = load_script("benchmarks/profile_protocol")
    with pytest.raises(SystemExit, match="teacher"):
        mod.parse_methods(["kdcrowd"], None)
    assert mod.parse_methods(["kdcrowd(maxmig)", "mv"], None) == [("maxmig", "maxmig", None), ("kdcrowd(maxmig)", "kdcrowd", "maxmig"), ("mv", "mv", None)]
    assert mod.parse_methods(["maxmig", "kdcrowd"], "maxmig") == [("maxmig", "maxmig", None), ("kdcrowd(maxmig)", "kdcrowd", "maxmig")]


def test_cuda_sync_warnings_are_counted_by_the_line_that_made_them(load_script: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA counter's bookkeeping, with the debug mode's switch replaced (no CUDA here)."""
    import warnings

    import torch

    mod = load_script("benchmarks/profile_protocol")
    modes: list[str] = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    counter = mod.SyncCounter(torch.device("cpu"))
    counter.cuda = True
    counter.start()
    for _ in range(3):
        warnings.warn("called a synchronizing CUDA operation (Triggered internally at Copy.cu:1.)")  # the line counted
    with pytest.warns(UserWarning, match="unrelated"):
        warnings.warn("unrelated")
    counter.stop()
    assert modes == ["warn", "default"]
    summary = counter.summary(steps=2)
    (row,) = summary["by_line"]
    assert row["where"].startswith("tests/test_profile_protocol.py:") and "the line counted" in row["code"]
    assert (row["count"], row["per_step"], summary["total"]) == (3, 1.5, 3)
