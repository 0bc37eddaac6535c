"""KD-Crowd over a teacher's saved outputs (kdcrowd.teacher_outputs): the teacher in one
process, the student and stage 2 in another, with the numbers of one process; a file of
another teacher refused, naming what differs; stage 2 fine-tuning the teacher refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_checkpoint import _drop  # _drop(metrics, keys): without those keys, at every depth
from test_methods import _digits_cfg as _cfg  # digits, maxmig-low-1, seed 0, 2 epochs on the CPU

from kdcrowd.data.datasets import CrowdDataset, load_dataset
from kdcrowd.framework import KDCrowd
from kdcrowd.methods import run_on_dataset, teacher_fingerprint_of, teacher_outputs_of
from kdcrowd.teacher_outputs import TeacherOutputs
from kdcrowd.training import DeviceData

#: What differs between two runs giving the same numbers: wall times, and where the teacher came from.
VARYING = {"seconds", "train_seconds", "timings", "resumed_seconds", "source"}


@pytest.fixture(scope="module")
def digits() -> CrowdDataset:
    return load_dataset("digits", workers="maxmig-low-1", seed=0)


@pytest.fixture(scope="module")
def teacher(digits: CrowdDataset) -> tuple[dict[str, Any], Any]:
    """annot-mix trained as a crowd-model run (the protocol suites' best teacher); on the one
    torch thread conftest.py sets (KD-Crowd's numbers are bit-stable on one thread only)."""
    return run_on_dataset(digits, _cfg("annot-mix"))


def test_kdcrowd_over_saved_teacher_outputs_gives_the_numbers_of_the_teacher_in_process(digits: CrowdDataset, teacher: Any, tmp_path: Path) -> None:
    t_metrics, t_out = teacher
    path = teacher_outputs_of(t_metrics, t_out, _cfg("annot-mix")).save(tmp_path / "annot-mix_seed0.npz")
    kd = _cfg("kdcrowd", teacher="annot-mix")
    saved = TeacherOutputs.load(path, expected=teacher_fingerprint_of(digits, kd))
    assert saved.proba.dtype == saved.posterior.dtype == saved.transitions.dtype == np.float32
    assert (saved.n_train, saved.n_classes, saved.n_workers) == (len(digits.x_train), 10, digits.annotations.n_workers)

    in_process, in_out = run_on_dataset(digits, kd, pretrained_teacher=(t_out.module.model, t_out.fit))
    from_file, file_out = run_on_dataset(digits, kd, teacher_outputs=saved)
    trained, _ = run_on_dataset(digits, kd)  # the teacher trained inside the KD-Crowd run: the crowd-model run's

    # the student and stage 2: the same histories, accuracies, matrices and final stage, to the bit
    for stage in ("student", "stage2"):
        assert _drop(from_file["stages"][stage], VARYING) == _drop(in_process["stages"][stage], VARYING) == _drop(trained["stages"][stage], VARYING), stage
    assert _drop({k: v for k, v in from_file.items() if k != "stages"}, VARYING) == _drop({k: v for k, v in in_process.items() if k != "stages"}, VARYING)
    np.testing.assert_array_equal(file_out.transitions, in_out.transitions)
    for k, v in in_out.module.state_dict().items():
        assert torch.equal(file_out.module.state_dict()[k], v), k
    # the teacher stage: the teacher run's own evaluation and history, as the run over the module reports it
    assert from_file["stages"]["teacher"]["source"] == "teacher outputs"
    assert _drop(from_file["stages"]["teacher"], VARYING) == _drop(in_process["stages"]["teacher"], VARYING)
    np.testing.assert_array_equal(saved.transitions, t_out.transitions)

    # one stage, distilling the posterior: the student over the file is the student over the module
    kd1 = _cfg("kdcrowd", teacher="annot-mix", stages=1, teacher_output="posterior")
    one_in, one_in_out = run_on_dataset(digits, kd1, pretrained_teacher=(t_out.module.model, t_out.fit))
    one_file, one_file_out = run_on_dataset(digits, kd1, teacher_outputs=saved)
    assert _drop(one_file, VARYING) == _drop(one_in, VARYING)
    np.testing.assert_array_equal(one_file_out.transitions, saved.transitions)  # one stage: the teacher's matrices


def test_saved_outputs_round_trip_exactly(digits: CrowdDataset, teacher: Any, tmp_path: Path) -> None:
    t_metrics, t_out = teacher
    made = teacher_outputs_of(t_metrics, t_out, _cfg("annot-mix"))
    back = TeacherOutputs.load(made.save(tmp_path / "t.npz"))
    for name in ("proba", "posterior", "transitions"):
        np.testing.assert_array_equal(getattr(back, name), getattr(made, name))
    assert back.best_val_accuracy == made.best_val_accuracy == max(h["val_accuracy"] for h in t_metrics["history"])
    assert back.fingerprint == made.fingerprint and back.metrics["history"] == t_metrics["history"]
    assert back.digest() == made.digest()
    with pytest.raises(ValueError, match="float32"):
        TeacherOutputs(made.proba.astype(np.float64), made.posterior, made.transitions, None, made.fingerprint)


def test_outputs_of_another_teacher_are_refused_naming_what_differs(digits: CrowdDataset, teacher: Any, tmp_path: Path) -> None:
    t_metrics, t_out = teacher
    path = teacher_outputs_of(t_metrics, t_out, _cfg("annot-mix")).save(tmp_path / "annot-mix_seed0.npz")
    kd = _cfg("kdcrowd", teacher="annot-mix")
    saved = TeacherOutputs.load(path)
    cases = {
        r"train\.epochs: 2 → 3": replace(kd, train=replace(kd.train, epochs=3)),
        r"seed: 0 → 1": replace(kd, seed=1),
        r"teacher: 'annot-mix' → 'maxmig'": replace(kd, options={"teacher": "maxmig"}),
        r"teacher_options\.embed_dim: 128 → 8": replace(kd, options={"teacher": "annot-mix", "embed_dim": 8}),
        r"backbone: 'auto' → 'mlp'": replace(kd, backbone="mlp"),
    }
    for message, cfg in cases.items():
        with pytest.raises(ValueError, match=message) as err:
            TeacherOutputs.load(path, expected=teacher_fingerprint_of(digits, cfg))
        assert "another teacher" in str(err.value) and str(path) in str(err.value)
        with pytest.raises(ValueError, match=message):  # the runner checks too, before any training
            run_on_dataset(digits, cfg, teacher_outputs=saved)
    # other data: the digest of the training items and annotations differs
    other = load_dataset("digits", workers="maxmig-low-1", seed=1)
    with pytest.raises(ValueError, match=r"data\.digest: '[0-9a-f]+' → '[0-9a-f]+'"):
        run_on_dataset(other, kd, teacher_outputs=saved)
    # settings that do not change the teacher: the progress bar, the device name
    quiet = replace(kd, train=replace(kd.train, progress=True, device="auto"))
    TeacherOutputs.load(path, expected=teacher_fingerprint_of(digits, quiet))


def test_stage2_finetune_needs_the_teacher_module(digits: CrowdDataset, teacher: Any) -> None:
    t_metrics, t_out = teacher
    saved = teacher_outputs_of(t_metrics, t_out, _cfg("annot-mix"))
    with pytest.raises(ValueError, match=r"stage2='finetune' fine-tunes the teacher module.*use stage2='reinit'"):
        run_on_dataset(digits, _cfg("kdcrowd", teacher="annot-mix", stage2="finetune"), teacher_outputs=saved)
    data = DeviceData.from_dataset(digits, torch.device("cpu"))
    with pytest.raises(ValueError, match="not both"):
        KDCrowd(teacher="annot-mix").fit(digits, data, _cfg("annot-mix").train, pretrained=(t_out.module.model, t_out.fit), teacher_outputs=saved)
    # outputs of other shapes than the data set's are refused by the framework itself
    cut = TeacherOutputs(saved.proba[:10], saved.posterior[:10], saved.transitions, saved.best_val_accuracy, saved.fingerprint)
    with pytest.raises(ValueError, match="10 training items"):
        KDCrowd(teacher="annot-mix").fit(digits, data, _cfg("annot-mix").train, teacher_outputs=cut)


def test_the_fingerprint_leaves_out_dataset_options_that_cannot_change_the_data() -> None:
    # {"verify": True} beside {} made an identical teacher's saved outputs refused
    from kdcrowd.teacher_outputs import teacher_fingerprint
    from kdcrowd.training import TrainConfig

    ds = load_dataset("digits", workers="symmetric", seed=0)
    fp = lambda opts: teacher_fingerprint(ds, TrainConfig(device="cpu"), "maxmig", {}, "mlp", dataset_options=opts)  # noqa: E731
    assert fp({"verify": True}) == fp({}) == fp({"verify": False})
    assert fp({"features": "bovw"}) != fp({})  # an option that changes the data still counts
