"""A new crowd model or student is one class: KD-Crowd uses them without any change.

The crowd model here is a noise-adaptation channel (Goldberger & Ben-Reuven, ICLR 2017,
per worker): p(y^m = j | x) = Σ_k p(k | x) T_m[k, j] with T_m = row-softmax(W_m), trained
by the marginal likelihood of the observed labels; the student is a bootstrapping loss
(Reed et al., 2015). Neither is part of the library.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kdcrowd.data.datasets import CrowdDataset
from kdcrowd.data.simulate import simulate_workers
from kdcrowd.framework import KDCrowd
from kdcrowd.evaluate import evaluate_output
from kdcrowd.methods import RunConfig
from kdcrowd.models.backbones import MLP
from kdcrowd.models.crowd import CrowdModel
from kdcrowd.students import Student
from kdcrowd.training import DeviceData, TrainConfig


class ChannelModel(CrowdModel):
    def __init__(self, backbone: nn.Module, n_workers: int, n_classes: int) -> None:
        super().__init__(backbone, n_workers, n_classes)
        self.w = nn.Parameter(2.0 * torch.eye(n_classes).repeat(n_workers, 1, 1))

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.w[idx], dim=-1)

    def crowd_loss(self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.backbone(x).float()
        obs = (workers >= 0) & (labels >= 0)
        log_t = self._worker_log_transitions(workers.clamp(min=0))  # (B, L, K, K)
        cols = log_t.gather(-1, labels.clamp(min=0)[..., None, None].expand(*labels.shape, self.n_classes, 1)).squeeze(-1)
        ll = torch.logsumexp(torch.log_softmax(logits, -1)[:, None, :] + cols, dim=-1)  # (B, L)
        return -(ll * obs).sum() / obs.sum().clamp(min=1), logits


class BootstrapStudent(Student):
    def robust_loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        p = logits.softmax(-1).detach()
        target = 0.8 * nn.functional.one_hot(y, logits.shape[-1]).float() + 0.2 * p
        return -(target * logits.log_softmax(-1)).sum(-1).mean()


def _data(seed: int = 0) -> CrowdDataset:
    rng = np.random.default_rng(seed)
    k, n = 3, 600
    centres = rng.normal(0, 3, (k, 5))
    y = rng.integers(0, k, n)
    x = (centres[y] + rng.normal(0, 1, (n, 5))).astype(np.float32)
    tr, va, te = np.split(np.arange(n), [400, 500])
    sim = simulate_workers(y[tr], "pairflip", n_classes=k, seed=seed, n_workers=8, redundancy=3)
    return CrowdDataset("blobs", x[tr], x[va], x[te], y[tr], y[va], y[te], sim.annotations, ["a", "b", "c"], true_transitions=sim.transitions)


def test_a_new_teacher_and_student_run_through_kdcrowd_unchanged() -> None:
    ds = _data()
    data = DeviceData.from_dataset(ds, torch.device("cpu"))
    torch.manual_seed(0)
    teacher = ChannelModel(MLP(5, 3), ds.annotations.n_workers, 3)
    err_init = np.abs(teacher.transition_matrices().numpy() - ds.true_transitions).mean()  # 0.176 (measured: teacher 0.140, stage 2 0.168)
    # worker matrices start at softmax(2I) and need a larger step than the backbone to move
    cfg = RunConfig(method="kdcrowd", train=TrainConfig(epochs=15, batch_size=64, lr=3e-3, progress=False, worker_lr_scale=30.0))
    outs, final = KDCrowd(teacher=teacher, student=BootstrapStudent, kd="mig-kl").fit(ds, data, cfg.train)
    assert set(outs) == {"teacher", "student", "stage2", "ensemble", "ensemble-all"} and final in ("student", "stage2")
    teacher_eval = evaluate_output(outs["teacher"], ds, data, cfg.train)
    final_eval = evaluate_output(outs[final], ds, data, cfg.train)
    # The channel model learns the pair-flip workers well enough to beat chance by far, and its
    # matrices come out row-stochastic and closer to the generating ones than where they started.
    assert teacher_eval["test_accuracy_val_selected"] > 0.85
    assert final_eval["test_accuracy_val_selected"] > 0.85
    t_teacher, t_stage2 = outs["teacher"].transitions, outs["stage2"].transitions
    np.testing.assert_allclose(t_stage2.sum(-1), 1, atol=1e-5)
    err = lambda t: np.abs(t - ds.true_transitions).mean()  # noqa: E731
    assert err(t_teacher) < err_init - 0.02
    assert err(t_stage2) < err_init
    # stage 2 started again from the untrained module (a fresh copy), not from the teacher
    assert outs["stage2"].module.model is not teacher
    assert not np.allclose(t_stage2, t_teacher, atol=1e-3)


def test_a_teacher_module_is_not_trained_in_place() -> None:
    """KD-Crowd trains copies of a user's teacher module: the module stays untrained, so a
    second fit of the same KDCrowd starts from the same weights and gives the same result."""
    ds = _data()
    data = DeviceData.from_dataset(ds, torch.device("cpu"))
    torch.manual_seed(0)
    teacher = ChannelModel(MLP(5, 3), ds.annotations.n_workers, 3)
    untrained = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = RunConfig(method="kdcrowd", train=TrainConfig(epochs=3, batch_size=64, lr=3e-3, progress=False, worker_lr_scale=30.0))
    fw = KDCrowd(teacher=teacher, student=BootstrapStudent, kd="mig-kl")
    first, _ = fw.fit(ds, data, cfg.train)
    assert all(torch.equal(v, untrained[k]) for k, v in teacher.state_dict().items())
    second, _ = fw.fit(ds, data, cfg.train)
    for stage in ("teacher", "stage2"):
        np.testing.assert_array_equal(first[stage].transitions, second[stage].transitions)
        assert first[stage].fit.history == second[stage].fit.history
    assert first["teacher"].module.model is not teacher and first["stage2"].module.model is not teacher
    assert not np.allclose(first["teacher"].transitions, teacher.transition_matrices().numpy(), atol=1e-3)  # the copy trained
