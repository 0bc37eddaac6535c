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
        build_student("mixupp", _factory(), 10, 3)


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


def test_mixup_student_loss_by_hand() -> None:
    """The mixup loss of a linear student, against the formula written out in numpy with
    the draws replayed from the same seed: λ ~ Beta(α, α) per item, then the permutation."""
    from kdcrowd.students import MixupStudent

    torch.manual_seed(3)
    lin = nn.Linear(2, 3)
    s = MixupStudent(lin, 4, 3, alpha=0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [0.5, -0.5]])
    y = torch.tensor([0, 2, 1, 1])
    q = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2], [0.3, 0.4, 0.3]])
    kl = lambda logits, t: (t * (t.log() - logits.log_softmax(-1))).sum(-1).mean()  # noqa: E731
    torch.manual_seed(11)
    got = s.student_loss(x, y, torch.arange(4), 0, soft=q, kd=kl, lambda1=0.5)
    torch.manual_seed(11)
    lam = torch.distributions.Beta(0.5, 0.5).sample((4,)).numpy().astype(np.float64)
    perm = torch.randperm(4).numpy()
    W, b = lin.weight.detach().numpy().astype(np.float64), lin.bias.detach().numpy().astype(np.float64)
    xn, yn, qn = x.numpy().astype(np.float64), y.numpy(), q.numpy().astype(np.float64)
    xm = lam[:, None] * xn + (1 - lam[:, None]) * xn[perm]
    z = xm @ W.T + b
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    ce = -(lam * logp[np.arange(4), yn] + (1 - lam) * logp[np.arange(4), yn[perm]]).mean()
    qm = lam[:, None] * qn + (1 - lam[:, None]) * qn[perm]
    kd = (qm * (np.log(qm) - logp)).sum(1).mean()
    assert perm.tolist() != [0, 1, 2, 3]  # the draw mixes
    assert float(got.detach()) == pytest.approx(ce + 0.5 * kd, rel=1e-5)


def test_mixup_student_mixes_uint8_pixels_in_float() -> None:
    """uint8 items (pixels a pretrained backbone takes): the network sees λ·x + (1−λ)·x'
    rounded back to uint8 (λ cast to uint8 was 0: the partner alone, against mixed targets)."""
    from kdcrowd.students import MixupStudent

    seen: list[torch.Tensor] = []

    class Recorder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 2)

    x = torch.tensor([[10, 20], [200, 100]], dtype=torch.uint8)
    torch.manual_seed(3)
    MixupStudent(Recorder(), 2, 2, alpha=1.0).student_loss(x, torch.tensor([0, 1]), torch.arange(2), 0)
    torch.manual_seed(3)
    lam = torch.distributions.Beta(1.0, 1.0).sample((2,))
    perm = torch.randperm(2)
    assert perm.tolist() == [1, 0] and seen[0].dtype == torch.uint8
    assert torch.equal(seen[0].float(), (lam[:, None] * x.float() + (1 - lam[:, None]) * x[perm].float()).round())


def test_mixup_student_of_identical_items_is_cross_entropy() -> None:
    """Mixing identical items changes nothing: the loss is the plain cross-entropy plus the
    distillation term of the unmixed items, whatever λ and the permutation drew."""
    from kdcrowd.students import CEStudent, MixupStudent

    torch.manual_seed(0)
    lin = nn.Linear(2, 3)
    x = torch.tensor([[0.3, -1.2]]).repeat(5, 1)
    y = torch.full((5,), 2)
    q = torch.tensor([[0.2, 0.3, 0.5]]).repeat(5, 1)
    kl = lambda logits, t: (t * (t.log() - logits.log_softmax(-1))).sum(-1).mean()  # noqa: E731
    for seed in range(3):
        torch.manual_seed(seed)
        mixed = MixupStudent(lin, 5, 3).student_loss(x, y, torch.arange(5), 0, soft=q, kd=kl, lambda1=2.0)
        plain = CEStudent(lin, 5, 3).student_loss(x, y, torch.arange(5), 0, soft=q, kd=kl, lambda1=2.0)
        assert float(mixed.detach()) == pytest.approx(float(plain.detach()), rel=1e-6)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        MixupStudent(lin, 5, 3, alpha=0.0)


def test_kdcrowd_trains_the_mixup_student(digits) -> None:
    """KD-Crowd with the mixup student: its stage 1 learns the teacher's labels (well above
    chance on ten classes after two epochs) and the same seed gives the same run."""
    from kdcrowd.framework import KDCrowd
    from kdcrowd.students import MixupStudent

    ds, data, cfg = digits
    a, _ = KDCrowd(teacher="crowdlayer-mw", student="mixup", stages=1).fit(ds, data, cfg.train)
    b, _ = KDCrowd(teacher="crowdlayer-mw", student="mixup", stages=1).fit(ds, data, cfg.train)
    assert type(a["student"].module.student) is MixupStudent
    assert a["student"].fit.history == b["student"].fit.history
    hist = a["student"].fit.history
    assert hist[-1]["val_accuracy"] > 0.3


@pytest.mark.parametrize("student, params, msg", [
    ("sce", {"alpha": -1.0, "beta": -1.0}, "alpha must be a finite number >= 0"),
    ("sce", {"beta": float("nan")}, "beta must be a finite number >= 0"),
    ("sce", {"alpha": 0.0, "beta": 0.0}, "both 0"),
    ("elr", {"lam": -3.0}, "lam must be a finite number >= 0"),
    ("elr", {"lam": float("nan")}, "lam must be a finite number >= 0"),
    ("coteaching", {"t_k": "x"}, "t_k must be a whole number"),
    ("coteaching", {"t_k": float("nan")}, "t_k must be a whole number"),
])
def test_student_settings_are_refused_before_the_teacher_trains(student: str, params: dict, msg: str) -> None:
    """These reached the student stage, after the teacher trained (a TypeError, a NaN forget
    rate, a FloatingPointError blaming the learning rate), or trained towards nonsense (SCE
    with negative weights maximised its loss)."""
    from kdcrowd.config import ConfigError
    from kdcrowd.framework import KDCrowd

    with pytest.raises((ConfigError, ValueError), match=msg):
        KDCrowd(student=student, student_params=params)


def test_whole_number_floats_are_epochs_and_a_bool_is_no_weight() -> None:
    from kdcrowd.config import ConfigError
    from kdcrowd.framework import KDCrowd

    KDCrowd(student="coteaching", student_params={"t_k": 5.0})  # JSON's 5.0, np.linspace's floats
    KDCrowd(student="coteaching", student_params={"t_k": np.float64(3)})
    with pytest.raises((ConfigError, ValueError), match="t_k must be a whole number"):
        KDCrowd(student="coteaching", student_params={"t_k": 2.5})
    with pytest.raises((ConfigError, ValueError), match="lam must be"):
        KDCrowd(student="elr", student_params={"lam": True})
