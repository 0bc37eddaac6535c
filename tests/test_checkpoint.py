"""Checkpoints and resuming (``TrainConfig.checkpoint``, ``RunConfig.checkpoint_dir``).

An interrupted training resumed from its checkpoint must end exactly where the
uninterrupted one ends (on the CPU: identical histories, best epochs, states and
metrics), whether it stopped on an exception between batches, on Ctrl-C while a
checkpoint was being written, or on SIGKILL of the whole process.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from kdcrowd import distributed as D
from kdcrowd import training
from kdcrowd.data.datasets import load_dataset
from kdcrowd.methods import RunConfig, SupervisedObjective, run_on_dataset
from kdcrowd.models.backbones import build_backbone
from kdcrowd.students import StudentObjective
from kdcrowd.training import DeviceData, FitResult, TrainConfig, fit

TIMING = {"seconds", "train_seconds", "timings", "resumed_seconds"}
WORLD = 2


# ----------------------------------------------------------------------------- helpers


def _blobs(n: int, k: int = 3, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


def _feature_task() -> tuple[DeviceData, Any]:
    """Features and an MLP (BatchNorm and dropout: the global generator matters)."""
    x, y = _blobs(96)
    xv, yv = _blobs(32, seed=1)
    data = DeviceData(x, xv, None, yv, None, torch.device("cpu"))

    def make() -> SupervisedObjective:
        torch.manual_seed(0)
        return SupervisedObjective(build_backbone("mlp", (5,), 3), torch.as_tensor(y))

    return data, make


def _image_task() -> tuple[DeviceData, Any]:
    """Tiny images and FastCNN with on-device augmentation (the augmentation generator matters)."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 64)
    data = DeviceData(imgs, imgs[:16], None, y[:16], None, torch.device("cpu"))

    def make() -> SupervisedObjective:
        torch.manual_seed(0)
        return SupervisedObjective(build_backbone("fastcnn", (3, 8, 8), 3), torch.as_tensor(y))

    return data, make


def _stop_at(epoch: int) -> Any:
    """A callback that interrupts (like Ctrl-C) while closing ``epoch`` (0-based), before its checkpoint."""

    def cb(e: int, module: Any, record: dict[str, Any]) -> None:
        if e == epoch:
            raise KeyboardInterrupt

    return cb


def _assert_same_fit(a: FitResult, b: FitResult) -> None:
    assert a.history == b.history
    assert a.best_epoch == b.best_epoch
    for name, (sa, sb) in {"final": (a.final_state, b.final_state), "best": (a.best_state, b.best_state)}.items():
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name} state {k} differs"


def _drop(obj: Any, keys: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _drop(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_drop(v, keys) for v in obj]
    return obj


def _comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without wall times and without the paths that differ between the runs."""
    out = _drop(metrics, TIMING)
    out["config"] = {k: v for k, v in out["config"].items() if k not in ("checkpoint_dir", "progress_file", "checkpoint_replace_finished")}
    return out


def _digits_cfg(checkpoint_dir: Path | None = None, progress_file: Path | None = None, epochs: int = 3, **options: Any) -> RunConfig:
    train = TrainConfig(epochs=epochs, batch_size=128, lr=3e-3, device="cpu", progress=False)
    return RunConfig(
        dataset="digits", method="kdcrowd", workers="maxmig-low-2", seed=0, train=train, options=options,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        progress_file=None if progress_file is None else str(progress_file),
    )


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset("digits", workers="maxmig-low-2", seed=0)


# ----------------------------------------------------------------------------- fit


def test_without_validation_the_best_state_is_not_saved_twice(tmp_path: Path) -> None:
    """No validation data: the last epoch is the best, so the checkpoint holds the weights once."""
    data, make = _feature_task()
    data = DeviceData(data.x_train.cpu().numpy(), None, None, None, None, torch.device("cpu"))
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, progress=False)
    plain = fit(make(), data, config)
    ck = replace(config, checkpoint=str(tmp_path / "fit.pt"))
    with pytest.raises(KeyboardInterrupt):
        fit(make(), data, ck, [_stop_at(2)])
    saved = torch.load(ck.checkpoint, weights_only=True)
    assert saved["log"]["best_epoch"] == 2 and "best_state" not in saved["log"]
    _assert_same_fit(fit(make(), data, ck), plain)


@pytest.mark.parametrize("task", [_feature_task, _image_task], ids=["mlp-dropout", "cnn-augment"])
def test_fit_resumed_after_an_interrupt_equals_the_uninterrupted_fit(task: Any, tmp_path: Path) -> None:
    data, make = task()
    config = TrainConfig(epochs=4, batch_size=16, lr=3e-3, progress=False)
    plain = fit(make(), data, config)
    rng_after_plain = torch.get_rng_state()

    ck = replace(config, checkpoint=str(tmp_path / "fit.pt"))
    with pytest.raises(KeyboardInterrupt):
        fit(make(), data, ck, [_stop_at(2)])
    saved = torch.load(ck.checkpoint, weights_only=True)
    assert saved["epochs"] == 2 and not saved["complete"]  # the interrupted epoch was not saved

    import random

    random.seed(7)  # another state than the one the checkpoint saved: resuming sets that one inside fit
    py_before = random.getstate()
    resumed = fit(make(), data, ck)
    _assert_same_fit(plain, resumed)
    assert torch.equal(torch.get_rng_state(), rng_after_plain)
    assert random.getstate() == py_before  # and fit gives the caller's back (it was left at the checkpoint's)
    assert torch.load(ck.checkpoint, weights_only=True)["complete"]

    # A finished checkpoint gives the same result again without training (no callback runs).
    calls: list[int] = []
    module = make()
    again = fit(module, data, ck, [lambda e, m, r: calls.append(e)])
    assert calls == []
    _assert_same_fit(plain, again)
    assert all(torch.equal(v, plain.final_state[k]) for k, v in module.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng_after_plain)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_while_writing_keeps_the_previous_checkpoint(presses: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the middle of the second epoch's write: the file is never half written. The
    interrupted training writes that finished epoch again on its way out (one press), and a
    second press in that write leaves the first epoch's file as it was."""
    data, make = _feature_task()
    config = TrainConfig(epochs=3, batch_size=16, progress=False, checkpoint=str(tmp_path / "fit.pt"), checkpoint_interval=0.0)
    real_save = torch.save
    calls = [0]

    def save_then_interrupt(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if 2 <= calls[0] < 2 + presses:  # the second epoch's checkpoint: half written, then Ctrl-C
            f.write(b"PK\x03\x04 half a zip archive")
            raise KeyboardInterrupt
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(make(), data, config)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.pt"]  # no temporary file left behind
    assert torch.load(config.checkpoint, weights_only=True)["epochs"] == (2 if presses == 1 else 1)
    _assert_same_fit(fit(make(), data, replace(config, checkpoint=None)), fit(make(), data, config))


class _Clock:
    """A stand-in for the training loop's ``time`` module whose clock moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def _saved_epochs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``epochs`` of every training checkpoint written from now on, in order."""
    real_save = torch.save
    written: list[int] = []

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        written.append(obj["epochs"])
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return written


def test_checkpoints_are_written_once_the_interval_has_passed_and_after_the_last_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, make = _feature_task()
    clock = _Clock()
    monkeypatch.setattr(training, "time", clock)

    def ten_seconds(e: int, module: Any, record: dict[str, Any]) -> None:  # each epoch lasts 10 s on the clock
        clock.now += 10.0

    config = TrainConfig(epochs=5, batch_size=16, lr=3e-3, progress=False, checkpoint=str(tmp_path / "fit.pt"), checkpoint_interval=15.0)
    written = _saved_epochs(monkeypatch)
    fit(make(), data, config, [ten_seconds])
    assert written == [2, 4, 5]  # 20 s after the start, 20 s after that write, and the last epoch
    written.clear()
    fit(make(), data, replace(config, checkpoint=str(tmp_path / "every.pt"), checkpoint_interval=0.0), [ten_seconds])
    assert written == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError], ids=["interrupt", "error"])
def test_a_stopped_training_writes_its_last_finished_epoch_and_resumes_from_it(stop: type[BaseException], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Epochs not written yet (the interval has not passed) are written when the training stops."""
    data, make = _feature_task()
    config = TrainConfig(epochs=4, batch_size=16, lr=3e-3, progress=False)
    plain = fit(make(), data, config)
    ck = replace(config, checkpoint=str(tmp_path / "fit.pt"), checkpoint_interval=1e9)

    def stop_at_2(e: int, module: Any, record: dict[str, Any]) -> None:
        if e == 2:
            raise stop("stopped")

    written = _saved_epochs(monkeypatch)
    with pytest.raises(stop):
        fit(make(), data, ck, [stop_at_2])
    assert written == [2]  # nothing while training; the last finished epoch when it stopped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.pt"]
    resumed = fit(make(), data, ck)
    assert written == [2, 4]
    _assert_same_fit(plain, resumed)


def test_an_interrupt_just_after_a_write_keeps_the_newer_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C landing after the write of the last epoch returned, before the training noted
    it: the copy of an earlier epoch kept for a later write must not go over it (the
    training would lose its last epoch and its stage stay unfinished)."""
    import kdcrowd.training as training

    data, make = _feature_task()
    config = TrainConfig(epochs=4, batch_size=16, lr=3e-3, progress=False, checkpoint=str(tmp_path / "fit.pt"), checkpoint_interval=1e9)
    real = training.write_training_checkpoint

    def write_then_interrupt(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "write_training_checkpoint", write_then_interrupt)
    written = _saved_epochs(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        fit(make(), data, config)
    assert written[0] == 4 and set(written) == {4}, written  # the last epoch's state, written again at most
    assert torch.load(tmp_path / "fit.pt", weights_only=True)["epochs"] == 4


def test_a_checkpoint_write_that_fails_is_not_tried_again_on_the_way_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that raises (a full disk) stops the training with its error alone: the
    handler that saves the last finished epoch when the training stops used to try the
    same write again, which failed again (a second traceback chained to the first; on the
    command line a second failed write). The file written before stays as it was; an
    interrupt, in or between writes, still writes the last finished epoch (tests above)."""
    import errno

    from typer.testing import CliRunner

    from kdcrowd.cli import app

    data, make = _feature_task()
    config = TrainConfig(epochs=3, batch_size=16, progress=False, checkpoint=str(tmp_path / "fit.pt"), checkpoint_interval=0.0)
    real_save = torch.save
    written: list[int] = []

    def full_after_one(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        written.append(obj["epochs"])
        if len(written) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_after_one)
    with pytest.raises(OSError, match="No space left on device") as caught:
        fit(make(), data, config)
    assert written == [1, 2]  # the second epoch's write, once
    assert caught.value.__context__ is None  # not raised while handling the first failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.pt"]  # no temporary file left behind
    assert torch.load(config.checkpoint, weights_only=True)["epochs"] == 1
    # on the command line: one error line, one failed write
    written.clear()
    r = CliRunner().invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--epochs", "3", "--device", "cpu",
                                 "--out", str(tmp_path / "run"), "--resume", "--checkpoint-interval", "0"])
    assert r.exit_code == 2, r.output
    assert written == [1, 2]
    assert [line for line in r.stderr.splitlines() if line.strip()] == ["error: [Errno 28] No space left on device"], r.stderr


def test_the_checkpoint_interval_may_change_when_resuming(tmp_path: Path) -> None:
    data, make = _feature_task()
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, progress=False, checkpoint=str(tmp_path / "fit.pt"), checkpoint_interval=0.0)
    with pytest.raises(KeyboardInterrupt):
        fit(make(), data, config, [_stop_at(1)])
    resumed = fit(make(), data, replace(config, checkpoint_interval=60.0))
    _assert_same_fit(fit(make(), data, replace(config, checkpoint=None)), resumed)


def test_checkpoint_from_other_settings_is_refused(tmp_path: Path) -> None:
    data, make = _feature_task()
    config = TrainConfig(epochs=2, batch_size=16, lr=3e-3, progress=False, checkpoint=str(tmp_path / "fit.pt"))
    with pytest.raises(KeyboardInterrupt):
        fit(make(), data, config, [_stop_at(1)])
    with pytest.raises(ValueError) as err:
        fit(make(), data, replace(config, lr=1e-3, batch_size=32))
    msg = str(err.value)
    assert str(tmp_path / "fit.pt") in msg and "lr: 0.003 → 0.001" in msg and "batch_size: 16 → 32" in msg
    assert "same settings" in msg or "settings it was started with" in msg
    assert f"delete {tmp_path}" in msg
    with pytest.raises(ValueError, match=r"desc: 'train' → 'other'"):
        fit(make(), data, config, desc="other")
    torch.manual_seed(0)
    wider = SupervisedObjective(build_backbone("mlp", (5,), 4), torch.zeros(data.n_train, dtype=torch.long))
    with pytest.raises(ValueError, match=r"module state \(names and shapes\)"):
        fit(wider, data, config)
    # The progress bar is not a setting: switching it on resumes.
    fit(make(), data, replace(config, progress=True))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_damaged_checkpoint_is_refused_with_the_fix(damage: str, tmp_path: Path) -> None:
    data, make = _feature_task()
    path = tmp_path / "fit.pt"
    config = TrainConfig(epochs=1, batch_size=16, progress=False, checkpoint=str(path))
    fit(make(), data, config)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError) as err:
        fit(make(), data, config)
    msg = str(err.value)
    assert str(path) in msg and "delete it" in msg


# ----------------------------------------------------------------------------- methods and KD-Crowd


def test_kdcrowd_interrupted_in_the_student_stage_resumes_to_the_same_metrics(digits: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, plain_out = run_on_dataset(digits, _digits_cfg())

    ckpt = tmp_path / "ckpt"
    real_loss = StudentObjective.training_loss
    steps = [0]

    def interrupt_mid_epoch(self: Any, *args: Any, **kwargs: Any) -> Any:
        steps[0] += 1
        if steps[0] == 13:  # the student's second epoch, between batches (9 batches per epoch)
            raise KeyboardInterrupt
        return real_loss(self, *args, **kwargs)

    monkeypatch.setattr(StudentObjective, "training_loss", interrupt_mid_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_on_dataset(digits, _digits_cfg(ckpt))
    monkeypatch.setattr(StudentObjective, "training_loss", real_loss)
    state = json.loads((ckpt / "state.json").read_text())
    assert state["stages"] == ["teacher", "student", "stage2"]
    assert state["stage"] == "student" and state["finished"] == ["teacher"] and not state["complete"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["state.json", "student.pt", "teacher.pt"]
    assert torch.load(ckpt / "student.pt", weights_only=True)["epochs"] == 1

    # Other method options with the folder of an unfinished run: refused before anything trains.
    with pytest.raises(ValueError, match=r"\(lambda1: 1\.0 → 0\.5\)") as err:  # the default written out, as the options are compared; named once, as the door names it
        run_on_dataset(digits, _digits_cfg(ckpt, lambda1=0.5))
    assert str(ckpt) in str(err.value) and f"delete {ckpt}" in str(err.value)

    resumed, resumed_out = run_on_dataset(digits, _digits_cfg(ckpt))
    assert _comparable(resumed) == _comparable(plain)
    np.testing.assert_array_equal(resumed_out.transitions, plain_out.transitions)
    for k, v in plain_out.module.state_dict().items():
        assert torch.equal(resumed_out.module.state_dict()[k], v), k
    state = json.loads((ckpt / "state.json").read_text())
    assert state["complete"] and state["stage"] is None and state["finished"] == ["teacher", "student", "stage2"]

    # Another final predictor only chooses among the trained stages: resumed, nothing trains.
    def no_training(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a finished stage trained again")

    monkeypatch.setattr(StudentObjective, "training_loss", no_training)
    chosen, _ = run_on_dataset(digits, _digits_cfg(ckpt, final="student"))
    monkeypatch.setattr(StudentObjective, "training_loss", real_loss)
    assert chosen["final_stage"] == "student"
    assert chosen["test_accuracy"] == plain["stages"]["student"]["test_accuracy"]
    assert json.loads((ckpt / "state.json").read_text())["settings"]["run"]["options"] == {"final": "student"}

    # Other settings with the folder of a finished run: refused too (a resume must never start afresh) ...
    with pytest.raises(ValueError, match=r"\(lambda1: 1\.0 → 0\.5\)"):
        run_on_dataset(digits, _digits_cfg(ckpt, lambda1=0.5))
    # ... unless asked to replace a finished run (the estimator's refits): it starts afresh, its files replacing the old ones.
    other, _ = run_on_dataset(digits, replace(_digits_cfg(ckpt, lambda1=0.5), checkpoint_replace_finished=True))
    assert _comparable(other) == _comparable(run_on_dataset(digits, _digits_cfg(tmp_path / "fresh", lambda1=0.5))[0])
    assert other["resumed_seconds"] == 0  # trained here, nothing restored
    state = json.loads((ckpt / "state.json").read_text())
    assert state["complete"] and state["settings"]["run"]["options"] == {"lambda1": 0.5}


def test_single_stage_methods_and_pretrained_teachers_lay_out_their_files(digits: Any, tmp_path: Path) -> None:
    cfg = replace(_digits_cfg(tmp_path / "mv", epochs=1), method="mv")
    run_on_dataset(digits, cfg)
    assert sorted(p.name for p in (tmp_path / "mv").iterdir()) == ["mv.pt", "state.json"]
    assert json.loads((tmp_path / "mv" / "state.json").read_text())["complete"]
    with pytest.raises(ValueError, match=r"\(lr: 0\.003 → 0\.001\)"):
        run_on_dataset(digits, replace(cfg, train=replace(cfg.train, lr=1e-3)))
    # an unfinished run (a stage saved, not finished) is kept even where finished ones are replaced
    state = json.loads((tmp_path / "mv" / "state.json").read_text())
    (tmp_path / "mv" / "state.json").write_text(json.dumps({**state, "finished": [], "complete": False}))
    with pytest.raises(ValueError, match=r"\(lr: 0\.003 → 0\.001\)"):
        run_on_dataset(digits, replace(cfg, checkpoint_replace_finished=True, train=replace(cfg.train, lr=1e-3)))

    # a run that saved nothing (refused or stopped before its first saved epoch) keeps no
    # settings: the corrected run starts; a damaged list of finished stages is one error
    (tmp_path / "mv" / "mv.pt").unlink()
    state = json.loads((tmp_path / "mv" / "state.json").read_text())
    (tmp_path / "mv" / "state.json").write_text(json.dumps({**state, "finished": [], "complete": False}))
    run_on_dataset(digits, replace(cfg, train=replace(cfg.train, lr=1e-3)))
    assert json.loads((tmp_path / "mv" / "state.json").read_text())["settings"]["run"]["train"]["lr"] == 1e-3
    (tmp_path / "mv" / "state.json").write_text(json.dumps({**state, "finished": None}))
    with pytest.raises(ValueError, match="state.json cannot be read.*'finished' is None"):
        run_on_dataset(digits, cfg)

    _, teacher_run = run_on_dataset(digits, replace(_digits_cfg(epochs=1), method="crowdlayer-mw"))
    teacher = (teacher_run.module.model, teacher_run.fit)
    kd = _digits_cfg(tmp_path / "kd", epochs=1, stages=1)
    first, _ = run_on_dataset(digits, kd, pretrained_teacher=teacher)
    assert sorted(p.name for p in (tmp_path / "kd").iterdir()) == ["state.json", "student.pt"]  # no teacher.pt
    assert json.loads((tmp_path / "kd" / "state.json").read_text())["stages"] == ["student"]
    again, _ = run_on_dataset(digits, kd, pretrained_teacher=teacher)
    assert _comparable(again) == _comparable(first)
    # Another teacher would make the student's checkpoint wrong: refused, finished or not; asked to
    # replace a finished run, the other teacher's run starts afresh.
    other = teacher_run.module.model
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    state = json.loads((tmp_path / "kd" / "state.json").read_text())
    (tmp_path / "kd" / "state.json").write_text(json.dumps({**state, "finished": [], "complete": False}))
    with pytest.raises(ValueError, match="pretrained_teacher"):
        run_on_dataset(digits, kd, pretrained_teacher=(other, teacher_run.fit))
    (tmp_path / "kd" / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="pretrained_teacher"):
        run_on_dataset(digits, kd, pretrained_teacher=(other, teacher_run.fit))
    with pytest.raises(ValueError, match="pretrained_teacher"):  # an unfinished run is never replaced
        (tmp_path / "kd" / "state.json").write_text(json.dumps({**state, "finished": [], "complete": False}))
        run_on_dataset(digits, replace(kd, checkpoint_replace_finished=True), pretrained_teacher=(other, teacher_run.fit))
    (tmp_path / "kd" / "state.json").write_text(json.dumps(state))
    fresh, _ = run_on_dataset(digits, replace(kd, checkpoint_replace_finished=True), pretrained_teacher=(other, teacher_run.fit))
    alone = run_on_dataset(digits, replace(kd, checkpoint_dir=None), pretrained_teacher=(other, teacher_run.fit))[0]
    assert fresh["resumed_seconds"] == 0 and _comparable(fresh) == _comparable(alone)


# ----------------------------------------------------------------------------- SIGKILL of a real process

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    from kdcrowd.data.datasets import load_dataset
    from kdcrowd.io import write_json
    from kdcrowd.methods import RunConfig, run_on_dataset
    from kdcrowd.training import DeviceData, TrainConfig

    out, ckpt, progress, pause = sys.argv[1], sys.argv[2] or None, sys.argv[3] or None, float(sys.argv[4])
    if pause:  # slower batches (same results), so the test can kill the run in the middle
        prepare = DeviceData.prepare
        def slow(self, *args, **kwargs):
            time.sleep(pause)
            return prepare(self, *args, **kwargs)
        DeviceData.prepare = slow
    ds = load_dataset("digits", workers="maxmig-low-2", seed=0)
    train = TrainConfig(epochs=2, batch_size=128, lr=3e-3, device="cpu", progress=False)
    cfg = RunConfig(dataset="digits", method="kdcrowd", workers="maxmig-low-2", seed=0, train=train, checkpoint_dir=ckpt, progress_file=progress)
    metrics, _ = run_on_dataset(ds, cfg)
    write_json(out, metrics)
    """
)


def _start(out: Path, ckpt: Path | None, progress: Path | None, pause: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [sys.executable, "-c", SCRIPT, str(out), str(ckpt or ""), str(progress or ""), str(pause)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]


@pytest.mark.slow  # three Python processes (about 3 s of start-up each)
def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_metrics(tmp_path: Path) -> None:
    ckpt, progress = tmp_path / "ckpt", tmp_path / "progress.jsonl"
    plain = _start(tmp_path / "plain.json", None, None, 0.0)
    killed = _start(tmp_path / "killed.json", ckpt, progress, 0.01)
    try:
        deadline = time.monotonic() + 90
        # 2 teacher epochs and 1 student epoch written: the kill lands in the student stage
        while not (progress.exists() and len(progress.read_text().splitlines()) >= 3):
            assert killed.poll() is None, killed.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the run wrote no progress"
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "killed.json").exists()
    state = json.loads((ckpt / "state.json").read_text())
    assert "teacher" in state["finished"] and not state["complete"]

    resumed = _start(tmp_path / "resumed.json", ckpt, progress, 0.0)
    _finish(resumed)
    _finish(plain)
    a = json.loads((tmp_path / "plain.json").read_text())
    b = json.loads((tmp_path / "resumed.json").read_text())
    assert _comparable(b) == _comparable(a)
    # Every finished epoch is in the progress file; an epoch cut short by the kill may
    # appear twice (its callbacks ran, its checkpoint was not written yet): the last wins.
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for line in progress.read_text().splitlines():
        row = json.loads(line)
        last[(row.pop("stage"), row["epoch"])] = row
    for stage, rec in b["stages"].items():
        assert [last[(stage, h["epoch"])] for h in rec["history"]] == rec["history"]


# ----------------------------------------------------------------------------- distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _distributed_scenario(folder: Path) -> dict[str, Any]:
    data, make = _feature_task()
    config = TrainConfig(epochs=4, batch_size=8, lr=3e-3, progress=False, device="cpu", distributed=True)
    plain = fit(make(), data, config)
    ck = replace(config, checkpoint=str(folder / "fit.pt"))
    try:
        fit(make(), data, ck, [_stop_at(2)])
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    D.barrier()
    saved = torch.load(ck.checkpoint, weights_only=True)
    resumed = fit(make(), data, ck)
    again = fit(make(), data, ck)

    def pack(r: FitResult) -> dict[str, Any]:
        return {"history": r.history, "best_epoch": r.best_epoch, "final": r.final_state, "best": r.best_state}

    return {"interrupted": interrupted, "saved_epochs": saved["epochs"], "ranks_saved": len(saved["rng"]), "plain": pack(plain), "resumed": pack(resumed), "again": pack(again)}


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    D.init_from_env(backend="gloo", timeout=datetime.timedelta(seconds=60))
    try:
        torch.save(_distributed_scenario(Path(folder)), Path(folder) / f"result-{rank}.pt")
    finally:
        D.cleanup()


def test_distributed_resume_equals_the_uninterrupted_run_on_every_rank(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"result-{r}.pt", weights_only=False) for r in range(WORLD)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pt" and not p.name.startswith("result")) == ["fit.pt"]
    for r in results:
        assert r["interrupted"] and r["saved_epochs"] == 2 and r["ranks_saved"] == WORLD
        for key in ("resumed", "again"):
            a, b = r["plain"], r[key]
            assert a["history"] == b["history"] and a["best_epoch"] == b["best_epoch"]
            for state in ("final", "best"):
                assert all(torch.equal(v, b[state][k]) for k, v in a[state].items()), (key, state)
    assert results[0]["resumed"]["history"] == results[1]["resumed"]["history"]


def test_other_settings_of_a_run_are_named_as_the_door_names_its_options() -> None:
    """A resume refused for other settings names the options (--lr on the command line, lr
    for the estimator), a KD-Crowd option once (run.options repeats framework's); the data
    and a crowd model's own options keep their paths."""
    from kdcrowd.checkpoint import differences, named_differences
    from kdcrowd.config import cli_style, option_style

    old = {"data": {"digest": "a"}, "framework": {"backbone": "mlp", "student": "elr"},
           "run": {"backbone": "mlp", "options": {"student": "elr", "mig_f": "js"}, "train": {"lr": 0.001, "device": "cpu"}}}
    new = {"data": {"digest": "b"}, "framework": {"backbone": "auto", "student": "gce"},
           "run": {"backbone": "auto", "options": {"student": "gce", "mig_f": "kl"}, "train": {"lr": 0.002, "device": "auto"}}}
    with option_style(cli_style):
        assert named_differences(differences(old, new)) == [
            "data.digest: 'a' → 'b'", "--student: 'elr' → 'gce'", "--backbone: 'mlp' → 'auto'", "run.options.mig_f: 'js' → 'kl'", "--device: 'cpu' → 'auto'", "--lr: 0.001 → 0.002"]
    assert "lr: 0.001 → 0.002" in named_differences(differences(old, new))


def test_a_default_written_out_resumes_and_another_value_is_refused(digits: Any, tmp_path: Path) -> None:
    """The checkpoint settings compare the method's options with their defaults filled in:
    options={} saved and {"mig_f": its default} now is the same run (it was refused); another
    value is still refused."""
    from dataclasses import asdict

    from kdcrowd.methods import _stage_checkpoints, method_options

    default_f = asdict(method_options("maxmig", {}))["mig_f"]
    other_f = next(f for f in ("js", "kl", "tv", "pearson") if f != default_f)

    def checkpoints(options: dict) -> Any:
        cfg = RunConfig(dataset="digits", method="maxmig", options=options, train=TrainConfig(epochs=1, progress=False), checkpoint_dir=str(tmp_path / "ck"))
        return _stage_checkpoints(cfg, digits, ["maxmig"])

    checkpoints({})
    (tmp_path / "ck" / "maxmig.pt").write_bytes(b"a saved epoch")  # a run with something to keep
    checkpoints({"mig_f": default_f})
    with pytest.raises(ValueError, match=f"run.options.mig_f: '{default_f}' → '{other_f}'"):
        checkpoints({"mig_f": other_f})
    # KD-Crowd: its own default and its named teacher's, written out, are the same run too
    from kdcrowd.methods import _with_resolved_options

    def compared(options: dict) -> dict:
        return _with_resolved_options({"run": {"method": "kdcrowd", "backbone": "auto", "options": options}})

    assert compared({}) == compared({"lambda1": 1.0, "teacher_options": {"mig_f": default_f}}) != compared({"teacher_options": {"mig_f": other_f}})


def test_ctrl_c_inside_torch_save_stays_an_interruption_and_keeps_the_last_checkpoint(tmp_path, monkeypatch) -> None:
    # torch's zip writer turned it into RuntimeError('unexpected pos'): a traceback, exit 1, no resume hint
    import io as _io

    from kdcrowd import checkpoint as C
    from kdcrowd.io import save_torch

    class Interrupting:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, b):
            self.writes += 1
            if self.writes == 2:
                raise KeyboardInterrupt  # where Python's SIGINT handler fires
            return self.f.write(b)

        def flush(self):
            return self.f.flush()

    with pytest.raises(KeyboardInterrupt):
        save_torch({"w": torch.zeros(100)}, Interrupting(_io.BytesIO()))
    with pytest.raises(RuntimeError, match="boom"):  # other errors pass as they are
        save_torch({"w": torch.zeros(1)}, type("Bad", (), {"write": lambda self, b: (_ for _ in ()).throw(RuntimeError("boom")), "flush": lambda self: None})())
    path = tmp_path / "ckpt.pt"
    C.save_training_checkpoint(path, {"epoch": 1})
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real(obj, Interrupting(f), *a, **k))
    with pytest.raises(KeyboardInterrupt):
        C.save_training_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path)["epoch"] == 1  # the atomic write kept the previous one
