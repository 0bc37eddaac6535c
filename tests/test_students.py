"""Robust students: built by name or by class, and KD-Crowd given a student class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdcrowd.students import STUDENTS, CEStudent, CoTeachingStudent, build_student


def _factory(d: int = 4, k: int = 3):
    return lambda: nn.Linear(d, k)


class HalfCoTeaching(CoTeachingStudent):
    """A user's co-teaching variant: only the second network predicts."""

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone_b(x).float().softmax(-1)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_build_student_by_class_is_build_student_by_name(name: str) -> None:
    """The class of a name gives the same student, initialisation order included
    (backbone A first, then co-teaching's B)."""
    torch.manual_seed(0)
    by_name = build_student(name, _factory(), 10, 3)
    torch.manual_seed(0)
    by_class = build_student(STUDENTS[name], _factory(), 10, 3)
    assert type(by_name) is type(by_class) is STUDENTS[name]
    sa, sb = by_name.state_dict(), by_class.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_build_student_gives_co_teaching_classes_a_second_network() -> None:
    torch.manual_seed(0)
    s = build_student(HalfCoTeaching, _factory(), 10, 3, forget_rate=0.3, t_k=2)
    assert isinstance(s, HalfCoTeaching) and isinstance(s.backbone_b, nn.Linear)
    assert s.backbone_b is not s.backbone and not torch.equal(s.backbone.weight, s.backbone_b.weight)
    assert s.forget_rate == 0.3 and s.t_k == 2
    torch.manual_seed(0)
    a = nn.Linear(4, 3)
    b = nn.Linear(4, 3)
    assert torch.equal(s.backbone.weight, a.weight) and torch.equal(s.backbone_b.weight, b.weight)  # A built first
    # a non-co-teaching class gets one backbone and its own hyper-parameters
    assert not hasattr(build_student(CEStudent, _factory(), 10, 3), "backbone_b")
    with pytest.raises(ValueError, match="unknown student"):
        build_student("mixup", _factory(), 10, 3)


@pytest.fixture(scope="module")
def digits():
    from kdcrowd.data.datasets import load_dataset
    from kdcrowd.methods import RunConfig
    from kdcrowd.training import DeviceData, TrainConfig

    ds = load_dataset("digits", workers="maxmig-low-1", seed=0)
    train = TrainConfig(epochs=2, batch_size=256, lr=3e-3, device="cpu", progress=False)
    cfg = RunConfig(dataset="digits", method="kdcrowd", workers="maxmig-low-1", train=train)
    return ds, DeviceData.from_dataset(ds, torch.device("cpu")), cfg


def test_kdcrowd_takes_the_co_teaching_class(digits) -> None:
    """KD-Crowd(student=CoTeachingStudent) — the class — trains co-teaching exactly as
    student='coteaching' does (it used to fail: no second network was passed)."""
    from kdcrowd.framework import KDCrowd

    ds, data, cfg = digits
    by_class, _ = KDCrowd(teacher="crowdlayer-mw", student=CoTeachingStudent, stages=1).fit(ds, data, cfg.train)
    by_name, _ = KDCrowd(teacher="crowdlayer-mw", student="coteaching", stages=1).fit(ds, data, cfg.train)
    s = by_class["student"].module.student
    assert type(s) is CoTeachingStudent and s.backbone_b is not s.backbone
    # the co-teaching defaults: forget rate from the teacher's validation accuracy, t_k = epochs // 4
    t_best = by_class["teacher"].fit
    teacher_val = next(r["val_accuracy"] for r in t_best.history if r["epoch"] == t_best.best_epoch)
    assert s.forget_rate == pytest.approx(float(np.clip(1.0 - teacher_val, 0.05, 0.5)))
    assert s.t_k == 1
    assert by_class["student"].fit.history == by_name["student"].fit.history
    torch.testing.assert_close(by_class["student"].train_proba, by_name["student"].train_proba, rtol=0, atol=0)


def test_kdcrowd_takes_a_co_teaching_subclass(digits) -> None:
    from kdcrowd.framework import KDCrowd

    ds, data, cfg = digits
    outs, final = KDCrowd(teacher="crowdlayer-mw", student=HalfCoTeaching, stages=1, student_params={"forget_rate": 0.1}).fit(ds, data, cfg.train)
    s = outs["student"].module.student
    assert type(s) is HalfCoTeaching and s.forget_rate == 0.1 and s.t_k == 1 and final == "student"
    assert "pseudo_memorization" in outs["student"].fit.history[-1]
