"""Data-parallel training (``TrainConfig.distributed``) on the CPU: 2 processes, gloo.

The processes are started with ``torch.multiprocessing.spawn`` and given the environment
``torchrun`` would set; each scenario runs once on both ranks and saves its results per
rank, and the tests compare them.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from test_checkpoint import _drop  # _drop(metrics, keys): without those keys, at every depth

from kdcrowd import distributed as D
from kdcrowd.data.datasets import CrowdDataset
from kdcrowd.data.simulate import simulate_workers
from kdcrowd.methods import RunConfig, run_on_dataset
from kdcrowd.students import ELRStudent, StudentObjective
from kdcrowd.training import DeviceData, TrainConfig, _batches, _shard_batches, fit, predict_proba, resolve_device

WORLD = 2
TIMING = {"seconds", "train_seconds", "timings", "resumed_seconds"}


# ----------------------------------------------------------------------------- data and models


def _blobs(n: int = 96, k: int = 3, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


def _blob_data(n: int = 96) -> tuple[DeviceData, torch.Tensor]:
    x, y = _blobs(n)
    xv, yv = _blobs(30, seed=1)
    return DeviceData(x, xv, None, yv, None, torch.device("cpu")), torch.as_tensor(y)


class LinearObjective(nn.Module):
    """Cross-entropy of a linear model: no BatchNorm, no dropout, so DDP must equal the global batch."""

    def __init__(self, d: int, k: int, targets: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(d, k)
        self.register_buffer("targets", targets, persistent=False)

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.lin(x), self.targets[idx])

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).softmax(-1)


def _equivalence_runs(distributed: bool, batch_size: int) -> dict[str, Any]:
    """A linear model and an ELR student (per-item target buffer) trained with plain SGD."""
    data, y = _blob_data()
    config = TrainConfig(epochs=3, batch_size=batch_size, lr=0.2, optimizer="sgd", weight_decay=0.0, schedule="constant", augment=False, progress=False, distributed=distributed)
    torch.manual_seed(0)
    lin = LinearObjective(5, 3, y)
    r_lin = fit(lin, data, config)
    torch.manual_seed(0)
    elr = StudentObjective(ELRStudent(nn.Linear(5, 3), data.n_train, 3), y, None, None, 0.0)
    r_elr = fit(elr, data, config)
    # 101 items: the last global batch of 5 splits 3 + 2 between the ranks
    data, y = _blob_data(101)
    torch.manual_seed(0)
    r_uneven = fit(LinearObjective(5, 3, y), data, config)
    return {"linear": r_lin, "elr": r_elr, "linear-uneven": r_uneven}


def tiny_crowd(n: int = 240, k: int = 3, d: int = 6, seed: int = 0) -> CrowdDataset:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    x = (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    tr, va, te = np.split(np.arange(n), [n // 2, 3 * n // 4])
    sim = simulate_workers(y[tr], "symmetric", n_classes=k, seed=seed)
    return CrowdDataset(
        name="tiny", x_train=x[tr], x_val=x[va], x_test=x[te], y_train=y[tr], y_val=y[va], y_test=y[te],
        annotations=sim.annotations, class_names=[str(c) for c in range(k)], true_transitions=sim.transitions,
    )


def _run(method: str, epochs: int = 2, **options: Any) -> dict[str, Any]:
    """``run_on_dataset`` with ``distributed=True`` (the MLP backbone has BatchNorm and dropout)."""
    cfg = RunConfig(dataset="tiny", method=method, train=TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, progress=False, device="cpu", distributed=True), options=options)
    metrics, out = run_on_dataset(tiny_crowd(), cfg)
    return {"metrics": _drop(metrics, TIMING), "state": {k: v.clone() for k, v in out.module.state_dict().items()}, "best": out.fit.best_state}


def _scenario_equivalence() -> dict[str, Any]:
    out = _equivalence_runs(distributed=True, batch_size=8)
    # DDP's gradient hooks are released after fit: the same module trains again.
    data, _ = _blob_data()
    lin = LinearObjective(5, 3, torch.zeros(data.n_train, dtype=torch.long))
    for _ in range(2):
        fit(lin, data, TrainConfig(epochs=1, batch_size=8, progress=False, augment=False, distributed=True))
    # Ranks holding different labels fail together, before training, instead of hanging.
    y = torch.arange(data.n_train) % 3 if D.rank() == 0 else torch.zeros(data.n_train, dtype=torch.long)
    try:
        fit(LinearObjective(5, 3, y), data, TrainConfig(epochs=1, batch_size=8, progress=False, distributed=True))
        refused = ""
    except RuntimeError as e:
        refused = str(e)
    results: dict[str, Any] = {k: {"history": r.history, "final": r.final_state, "best_epoch": r.best_epoch} for k, r in out.items()}
    return {**results, "refused": refused}


def _scenario_methods() -> dict[str, Any]:
    return {
        "crowdlayer-mw": _run("crowdlayer-mw"),
        "kdcrowd": _run("kdcrowd"),
        # Max-MIG (in-batch pairs), CoNAL (gate embeddings) and co-teaching (two networks):
        # every parameter gets a gradient, so DDP runs without find_unused_parameters.
        "kdcrowd-maxmig-coteaching": _run("kdcrowd", epochs=1, teacher="maxmig", student="coteaching", stages=1),
        "conal": _run("conal", epochs=1),
    }


SCENARIOS = {"equivalence": _scenario_equivalence, "methods": _scenario_methods}


# ----------------------------------------------------------------------------- process plumbing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, scenario: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    D.init_from_env(backend="gloo", timeout=datetime.timedelta(seconds=60))
    try:
        torch.save(SCENARIOS[scenario](), Path(out) / f"{scenario}-{rank}.pt")
    finally:
        D.cleanup()


def _spawn(scenario: str, tmp: Path) -> list[dict[str, Any]]:
    mp.spawn(_worker, args=(WORLD, _free_port(), scenario, str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"{scenario}-{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _spawn("equivalence", tmp_path_factory.mktemp("equivalence"))


@pytest.fixture(scope="module")
def methods(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _spawn("methods", tmp_path_factory.mktemp("methods"))


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in a.keys() | b.keys() for d in _differences(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))
    return [] if same else [f"{path}: {a!r} != {b!r}"]


def _assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between ranks"


# ----------------------------------------------------------------------------- tests


def test_parameters_and_buffers_identical_on_every_rank(equivalence: list[dict[str, Any]]) -> None:
    r0, r1 = equivalence
    assert "disagree" in r0["refused"] and "disagree" in r1["refused"]
    for name in ("linear", "elr"):
        _assert_states_equal(r0[name]["final"], r1[name]["final"])
        assert r0[name]["history"] == r1[name]["history"]
        assert r0[name]["best_epoch"] == r1[name]["best_epoch"]


def test_two_ranks_equal_one_process_with_the_global_batch(equivalence: list[dict[str, Any]]) -> None:
    """DDP averages the ranks' gradients of their shard means; with equal shards that is the
    gradient of the mean over the global batch, so 2 ranks × batch 8 = 1 process × batch 16.
    An uneven last shard (3 + 2 items) is weighed by its items, so that holds there too."""
    single = _equivalence_runs(distributed=False, batch_size=16)
    dist = equivalence[0]
    for name in ("linear", "elr", "linear-uneven"):
        s, d = single[name], dist[name]
        np.testing.assert_allclose([h["loss"] for h in d["history"]], [h["loss"] for h in s.history], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([h["val_accuracy"] for h in d["history"]], [h["val_accuracy"] for h in s.history])
        for k, v in s.final_state.items():
            torch.testing.assert_close(d["final"][k], v, rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")
    # ELR's per-item targets were updated by whichever rank held each item and merged.
    targets = dist["elr"]["final"]["student.elr.targets"]
    assert (targets.sum(1) > 0).all()


def test_methods_give_identical_metrics_on_every_rank(methods: list[dict[str, Any]]) -> None:
    r0, r1 = methods
    assert r0.keys() == r1.keys()
    for name in r0:
        m0, m1 = r0[name]["metrics"], r1[name]["metrics"]
        assert not _differences(m0, m1), (name, _differences(m0, m1))
        assert m0["test_accuracy"] is not None and len(m0["history"]) >= 1
        _assert_states_equal(r0[name]["state"], r1[name]["state"])
        _assert_states_equal(r0[name]["best"], r1[name]["best"])
    assert r0["kdcrowd"]["metrics"]["config"]["train"]["distributed"] is True
    assert set(r0["kdcrowd"]["metrics"]["stages"]) == {"teacher", "student", "stage2", "ensemble", "ensemble-all"}


def test_shards_partition_every_global_batch() -> None:
    for n, b, w in [(100, 8, 2), (101, 8, 2), (17, 4, 4), (1025, 256, 3), (9, 2, 4), (50, 3, 1)]:
        bounds, _ = _shard_batches(n, b, w, 0)
        if w == 1:
            assert bounds == _batches(n, b)
        for (s, e) in bounds:
            shards = [_shard_batches(n, b, w, r)[1][bounds.index((s, e))] for r in range(w)]
            assert shards[0][0] == s and shards[-1][1] == e
            assert all(a[1] == c[0] for a, c in zip(shards, shards[1:]))
            assert all(hi - lo >= 2 for lo, hi in shards)
            assert max(hi - lo for lo, hi in shards) - min(hi - lo for lo, hi in shards) <= 1
    with pytest.raises(ValueError, match="at least 8 training items"):
        _shard_batches(7, 4, 4, 0)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        _shard_batches(100, 1, 2, 0)


def test_single_process_defaults_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not D.is_initialized() and D.world_size() == 1 and D.rank() == 0 and D.is_main()
    assert TrainConfig().distributed is False and TrainConfig().sync_bn is False
    assert resolve_device("cpu") == torch.device("cpu")
    data, y = _blob_data()
    torch.manual_seed(0)
    lin = LinearObjective(5, 3, y)
    p = predict_proba(lin, data, data.x_train, TrainConfig(distributed=True))  # no process group: local
    assert p.shape == (data.n_train, 3)
    with pytest.raises(RuntimeError, match="torchrun"):
        fit(lin, data, TrainConfig(epochs=1, progress=False, distributed=True))
    with pytest.raises(RuntimeError, match="torchrun"):
        D.init_from_env()


def test_cli_run_distributed_writes_metrics_once(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m kdcrowd run --distributed`: rank 0 writes metrics.json, the group shuts down cleanly."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)  # an interrupted `run --resume`'s: a run without --resume leaves them (it deleted them)
    (out / "checkpoints" / "keep.pt").write_text("x")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "kdcrowd", "run", "--distributed", "--device", "cpu", "--dataset", "digits", "--workers", "symmetric", "--method", "crowdlayer-mw", "--epochs", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == WORLD and m["config"]["train"]["distributed"] is True
    assert len(m["history"]) == 1 and m["test_accuracy"] is not None
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "metrics.json", "progress.jsonl", "transitions.npz"]
    assert (out / "checkpoints" / "keep.pt").exists()
    assert len((out / "progress.jsonl").read_text().splitlines()) == 1  # rank 0 only
    assert proc.stdout.count("wrote ") == 1  # only rank 0 reports



def test_sync_batchnorm_conversion_round_trips() -> None:
    from kdcrowd.models.backbones import build_backbone

    torch.manual_seed(0)
    net = build_backbone("mlp", (6,), 3)
    before = {k: v for k, v in net.state_dict().items()}
    assert D.convert_sync_batchnorm(net)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
    D.revert_sync_batchnorm(net)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
    assert any(type(m) is nn.BatchNorm1d for m in net.modules())
    after = net.state_dict()
    assert before.keys() == after.keys() and all(after[k] is before[k] or after[k].data_ptr() == before[k].data_ptr() for k in before)
