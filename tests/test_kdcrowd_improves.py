"""KD-Crowd's central claim on a seeded simulated case: the student (stage 1) and the
retrained crowd model (stage 2) each beat the teacher's validation accuracy.

The case: scikit-learn digits (1078 / 359 / 360 items, MLP backbone) with the Max-MIG
low-expertise crowd ``maxmig-low-1`` (10 workers, each labels every item, 80 % symmetric
noise: a worker is right only 20 % of the time). The framework runs with its defaults —
teacher ``crowdlayer-mw``, student ``coteaching``, ``kd="mig-kl"``, λ1 = λ2 = 1, the
teacher's classifier output — for 20 epochs per stage (AdamW, lr 3e-3, cosine, batch 128)
on the CPU. The teacher is trained properly: 20 epochs with the validation-selected state,
exactly as ``run_on_dataset`` does for any crowd model. It peaks around epoch 3–7 and then
visibly memorizes the workers' wrong labels (``memorization_mean`` roughly 0.02 → 0.05)
while its validation accuracy falls by 6–11 points; the claim is that KD-Crowd keeps what
the teacher knew at its best and improves on it.

Measured (validation accuracy of each stage's selected state = max of its history's
``val_accuracy``; test accuracy of that state in brackets; Δ in points), torch 2.13 CPU:

    seed  teacher          student (stage 1)   stage 2          Δ1 val  Δ2 val
    0     0.8942 (0.9028)  0.9220 (0.9361)     0.9276 (0.9306)  +2.78   +3.34
    1     0.9109 (0.9028)  0.9415 (0.9444)     0.9471 (0.9528)  +3.06   +3.62
    2     0.8997 (0.9222)  0.9304 (0.9528)     0.9359 (0.9500)  +3.07   +3.62
    3     0.9136 (0.9139)  0.9387 (0.9444)     0.9415 (0.9444)  +2.51   +2.79
    4     0.8886 (0.8833)  0.9164 (0.9333)     0.9220 (0.9278)  +2.78   +3.34
    mean                                                        +2.84   +3.34
    (seed 5, not run here: Δ1 +4.18, Δ2 +3.34.) Test-accuracy gains: student +3.72,
    stage 2 +3.61 points on average (smallest single seed +2.78).

The crowd model's initialisation is not drawn from ``RunConfig.seed`` by the library (at the
time of writing the teacher is built from the global torch generator, which torch seeds
randomly at start-up), so the test seeds torch itself before each run. To check that the
margins do not hinge on one lucky initialisation, the same five seeds were rerun with two
other teacher initialisations: per-seed gains ranged +1.67 … +4.73 (stage 1) and
+1.67 … +5.57 (stage 2) over all 18 (seed, initialisation) runs of seeds 0–5; five-seed
means were +2.84 / +3.29 / +4.29 (stage 1) and +3.34 / +3.73 / +4.57 (stage 2); mean test
gains never below +2.5 points. Hence the asserted margins: every seed ≥ 1.5 points
(5 validation items; one item is 0.28 points) and the five-seed mean ≥ 2.5 points on
validation, and a mean ≥ 1.5 points on the test set.

Controls measured on the same case (not asserted here; they would double the run time):
a plain-CE student without distillation also beats the teacher, by 1.7–2.5 points
(training on the validation-selected teacher's labels already helps; co-teaching adds about
half a point), but stage 2 with ``kd="none"`` — the crowd model simply retrained — does not
(Δ2 from −1.1 to +1.4 points), so stage 2's gain comes from distilling the student.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pytest
import torch

from kdcrowd.data.datasets import load_dataset
from kdcrowd.methods import RunConfig, run_on_dataset
from kdcrowd.training import TrainConfig

SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 20
MARGIN = 0.015
"""Smallest validation-accuracy gain of each stage over the teacher that every seed must show."""
MEAN_MARGIN = 0.025
"""Smallest validation-accuracy gain of each stage over the teacher averaged over the seeds."""
TEST_MEAN_MARGIN = 0.015
"""Smallest test-accuracy gain of each stage over the teacher averaged over the seeds."""

pytestmark = pytest.mark.slow


@lru_cache(maxsize=None)
def _stages(seed: int) -> dict[str, Any]:
    ds = load_dataset("digits", workers="maxmig-low-1", seed=seed)
    cfg = RunConfig(
        dataset="digits",
        method="kdcrowd",
        workers="maxmig-low-1",
        seed=seed,
        options={"teacher": "crowdlayer-mw", "student": "coteaching", "kd": "mig-kl", "lambda1": 1.0, "lambda2": 1.0, "teacher_output": "classifier"},
        train=TrainConfig(epochs=EPOCHS, batch_size=128, lr=3e-3, device="cpu", progress=False),
    )
    torch.manual_seed(seed)  # the teacher's initialisation (see the module docstring)
    metrics, _ = run_on_dataset(ds, cfg)
    return metrics["stages"]


def _val(stage: dict[str, Any]) -> float:
    """Validation accuracy of the stage's validation-selected state."""
    return max(rec["val_accuracy"] for rec in stage["history"])


@pytest.mark.parametrize("seed", SEEDS)
def test_teacher_memorizes_the_noise(seed: int) -> None:
    """The precondition: after its best epoch the teacher fits the workers' wrong labels and loses validation accuracy."""
    t = _stages(seed)["teacher"]
    h = t["history"]
    assert len(h) == EPOCHS
    val = [rec["val_accuracy"] for rec in h]
    mem = [rec["memorization_mean"] for rec in h]
    best = int(np.argmax(val))
    assert best < EPOCHS // 2, f"teacher peaks late (epoch {best + 1}); val {np.round(val, 3).tolist()}"
    assert val[-1] < val[best] - 0.03, f"teacher's validation accuracy does not drop: {np.round(val, 3).tolist()}"
    assert mem[-1] > mem[best] + 0.01, f"teacher's memorization does not rise after its best epoch: {np.round(mem, 3).tolist()}"
    assert 0.8 < val[best] < 0.95, f"teacher's best validation accuracy {val[best]:.4f} is outside the case's regime"


@pytest.mark.parametrize("seed", SEEDS)
def test_student_beats_the_teacher(seed: int) -> None:
    st = _stages(seed)
    teacher, student = _val(st["teacher"]), _val(st["student"])
    assert student >= teacher + MARGIN, f"seed {seed}: student val {student:.4f} vs teacher {teacher:.4f}"


@pytest.mark.parametrize("seed", SEEDS)
def test_stage2_beats_the_teacher(seed: int) -> None:
    st = _stages(seed)
    teacher, stage2 = _val(st["teacher"]), _val(st["stage2"])
    assert stage2 >= teacher + MARGIN, f"seed {seed}: stage-2 val {stage2:.4f} vs teacher {teacher:.4f}"


def _gains(key: Any) -> dict[str, list[float]]:
    """Per-seed gain of the student and of stage 2 over the teacher, for ``key(stage) -> accuracy``."""
    out: dict[str, list[float]] = {"student": [], "stage2": []}
    for seed in SEEDS:
        st = _stages(seed)
        for name in out:
            out[name].append(key(st[name]) - key(st["teacher"]))
    return out


def test_mean_validation_gain_over_the_seeds() -> None:
    for name, g in _gains(_val).items():
        assert np.mean(g) >= MEAN_MARGIN, f"{name}: validation gains over the teacher {np.round(g, 4).tolist()}"


def test_gains_carry_over_to_the_test_set() -> None:
    """On held-out test items (never used for selection) both stages gain on average over the seeds."""
    for name, g in _gains(lambda stage: stage["test_accuracy_val_selected"]).items():
        assert np.mean(g) >= TEST_MEAN_MARGIN, f"{name}: test-accuracy gains over the teacher {np.round(g, 4).tolist()}"
