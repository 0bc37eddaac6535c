"""Noise-model-free robust students (KD-Crowd stage 1).

A student learns from hard noisy labels ``y`` (the teacher's predictions) with a robust
technique, plus an optional distillation term towards soft teacher targets. One contract:

* ``forward(x) -> (B, K)`` logits and ``predict_proba(x)``;
* ``student_loss(x, y, idx, epoch, soft=None, kd=None, lambda1=0.0) -> Tensor`` — the
  robust loss on the hard labels plus ``lambda1 * kd(logits, soft)``.

Which one to pick: ``coteaching`` (two networks exchanging small-loss items; the strongest
on heavy noise, twice the compute), ``gce`` and ``sce`` (one network, a bounded or
symmetric loss; cheap), ``elr`` (one network, early-learning regularisation; needs the
item index), ``mixup`` (one network on convex combinations of item pairs and of their
labels and soft targets: the regularisation annot-mix gives a teacher), ``ce`` (plain
cross-entropy, the control). :data:`STUDENTS` maps names to
classes; :func:`build_student` builds one (by name or class) from a backbone factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .losses import ELRLoss, coteaching_select, forget_rate_schedule, gce_loss, nonnegative, sce_loss
from .models._common import mix_inputs, to_device

__all__ = ["Student", "CEStudent", "GCEStudent", "SCEStudent", "ELRStudent", "MixupStudent", "CoTeachingStudent", "STUDENTS", "build_student", "StudentObjective"]

KDLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Student(nn.Module):
    """Base class: one backbone, robust loss in :meth:`robust_loss`."""

    networks: int = 1
    """How many backbones the student trains; :func:`build_student` passes the second one
    as ``backbone_b`` (co-teaching)."""

    @classmethod
    def suggested_params(cls, teacher_val_accuracy: float | None, epochs: int) -> dict[str, Any]:
        """Hyper-parameters derived from the teacher's validation accuracy and the number
        of epochs, used unless the user sets them (none by default)."""
        return {}

    def __init__(self, backbone: nn.Module, n_items: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.n_items, self.n_classes = n_items, n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).float().softmax(-1)

    def robust_loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def student_loss(
        self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int, soft: torch.Tensor | None = None, kd: KDLoss | None = None, lambda1: float = 0.0
    ) -> torch.Tensor:
        """Robust loss on hard labels ``y`` plus ``lambda1 * kd(logits, soft)``."""
        logits = self(x).float()
        loss = self.robust_loss(logits, y, idx, epoch)
        if kd is not None and soft is not None and lambda1 > 0:
            loss = loss + lambda1 * kd(logits, soft)
        return loss


class CEStudent(Student):
    """Plain cross-entropy on the noisy labels: the control."""

    def robust_loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, y)


class GCEStudent(Student):
    """Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018).

    Args:
        q: exponent in (0, 1]; q → 0 is CE, q = 1 is MAE.
    """

    def __init__(self, backbone: nn.Module, n_items: int, n_classes: int, q: float = 0.7) -> None:
        super().__init__(backbone, n_items, n_classes)
        if not 0.0 < q <= 1.0:  # here, so that KD-Crowd refuses it before the teacher trains
            raise ValueError(f"q must be in (0, 1]; got {q}")
        self.q = q

    def robust_loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        return gce_loss(logits, y, q=self.q)


class SCEStudent(Student):
    """Symmetric cross-entropy (Wang et al., ICCV 2019).

    Args:
        alpha: weight of CE.
        beta: weight of reverse CE.
    """

    def __init__(self, backbone: nn.Module, n_items: int, n_classes: int, alpha: float = 0.1, beta: float = 1.0) -> None:
        super().__init__(backbone, n_items, n_classes)
        for name, v in (("alpha", alpha), ("beta", beta)):  # here, so that KD-Crowd refuses them before the teacher trains
            if not nonnegative(v):  # a negative weight maximises its term
                raise ValueError(f"{name} must be a finite number >= 0; got {v!r}")
        if alpha == 0 and beta == 0:
            raise ValueError("alpha and beta are both 0: the loss would be 0; give one a positive weight")
        self.alpha, self.beta = alpha, beta

    def robust_loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        return sce_loss(logits, y, alpha=self.alpha, beta=self.beta)


class ELRStudent(Student):
    """Early-learning regularisation (Liu et al., NeurIPS 2020).

    Args:
        beta: momentum of the per-item temporal ensemble of predictions.
        lam: weight of the regulariser.
    """

    def __init__(self, backbone: nn.Module, n_items: int, n_classes: int, beta: float = 0.7, lam: float = 3.0) -> None:
        super().__init__(backbone, n_items, n_classes)
        self.elr = ELRLoss(n_items, n_classes, beta=beta, lam=lam)

    def robust_loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.elr(logits, y, idx)


class MixupStudent(Student):
    """mixup (Zhang, Cisse, Dauphin, Lopez-Paz; ICLR 2018): the network trains on convex
    combinations of pairs of items, ``x̃ = λ x_i + (1 − λ) x_j`` (``j`` a random permutation
    of the batch), against the same combination of their targets; robust to corrupted labels
    (their §3.4: CIFAR-10 with 20–80 % of the labels replaced).

    The hard labels enter as ``λ CE(f(x̃), y_i) + (1 − λ) CE(f(x̃), y_j)``, and the
    distillation term distils the mixed soft targets ``λ q_i + (1 − λ) q_j``. One ``λ ~
    Beta(α, α)`` per item, as annot-mix draws one per pair (the reference mixup draws one per
    batch); the λ and the pairing come from torch's global CPU generator and are copied to the
    device without waiting for it, so that a seed gives the same draws on every device. Predictions are of the unmixed items.

    Args:
        alpha: α of the Beta(α, α) mixing coefficients (1.0: uniform, annot-mix's default).
    """

    def __init__(self, backbone: nn.Module, n_items: int, n_classes: int, alpha: float = 1.0) -> None:
        super().__init__(backbone, n_items, n_classes)
        if not alpha > 0:
            raise ValueError(f"mixup's alpha must be > 0; got {alpha}")
        self.alpha = float(alpha)

    def student_loss(
        self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int, soft: torch.Tensor | None = None, kd: KDLoss | None = None, lambda1: float = 0.0
    ) -> torch.Tensor:
        lam = to_device(torch.distributions.Beta(self.alpha, self.alpha).sample((x.shape[0],)), x.device)
        perm = to_device(torch.randperm(x.shape[0]), x.device)  # the pairs too: host draws, the same on every device
        logits = self(mix_inputs(x, x[perm], lam)).float()
        logp = nn.functional.log_softmax(logits, -1)
        own, other = logp.gather(1, y.view(-1, 1)).squeeze(1), logp.gather(1, y[perm].view(-1, 1)).squeeze(1)
        loss = -(lam * own + (1 - lam) * other).mean()
        if kd is not None and soft is not None and lambda1 > 0:
            ls = lam.view(-1, 1).to(soft.dtype)
            loss = loss + lambda1 * kd(logits, ls * soft + (1 - ls) * soft[perm])
        return loss


class CoTeachingStudent(Student):
    """Co-teaching (Han et al., NeurIPS 2018): two networks, each trained on the small-loss
    items its peer selects; the kept fraction is 1 − R(t), R(t) = min(τ·t/T_k, τ).

    Prediction averages the two networks' probabilities.

    Args:
        backbone_b: the peer network (same architecture, independent initialisation).
        forget_rate: τ, the fraction of large-loss items dropped at full schedule; set it
            to the estimated noise rate of the labels (the framework uses one minus the
            teacher's validation accuracy).
        t_k: epochs over which the forget rate ramps up.
    """

    networks = 2

    @classmethod
    def suggested_params(cls, teacher_val_accuracy: float | None, epochs: int) -> dict[str, Any]:
        """The forget rate is the teacher's estimated noise rate, one minus its validation
        accuracy clipped to [0.05, 0.5] (0.2 without validation); it ramps up over the
        first quarter of the epochs."""
        rate = float(np.clip(1.0 - teacher_val_accuracy, 0.05, 0.5)) if teacher_val_accuracy is not None else 0.2
        return {"forget_rate": rate, "t_k": max(1, epochs // 4)}

    def __init__(self, backbone: nn.Module, n_items: int, n_classes: int, backbone_b: nn.Module | None = None, forget_rate: float = 0.2, t_k: int = 5) -> None:
        super().__init__(backbone, n_items, n_classes)
        if backbone_b is None:
            raise ValueError("co-teaching needs a second network: pass backbone_b (same architecture, fresh initialisation)")
        if not 0.0 <= forget_rate <= 1.0:  # here, so that KD-Crowd refuses it before the teacher trains
            raise ValueError(f"forget_rate must be in [0, 1]; got {forget_rate}")
        if isinstance(t_k, (bool, np.bool_)) or not isinstance(t_k, (int, float, np.integer, np.floating)) or not float(t_k).is_integer():  # epochs of the ramp (0 or less: none)
            raise ValueError(f"t_k must be a whole number of epochs; got {t_k!r}")
        t_k = int(t_k)  # 5.0 from JSON is 5
        self.backbone_b = backbone_b
        self.forget_rate, self.t_k = forget_rate, t_k

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.backbone(x).float().softmax(-1) + self.backbone_b(x).float().softmax(-1))

    def student_loss(
        self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int, soft: torch.Tensor | None = None, kd: KDLoss | None = None, lambda1: float = 0.0
    ) -> torch.Tensor:
        la, lb = self.backbone(x).float(), self.backbone_b(x).float()
        ce_a = nn.functional.cross_entropy(la, y, reduction="none")
        ce_b = nn.functional.cross_entropy(lb, y, reduction="none")
        rate = forget_rate_schedule(epoch, self.forget_rate, self.t_k)
        keep_a, keep_b = coteaching_select(ce_a.detach(), ce_b.detach(), rate)
        loss = ce_a[keep_a].mean() + ce_b[keep_b].mean()
        if kd is not None and soft is not None and lambda1 > 0:
            loss = loss + lambda1 * (kd(la, soft) + kd(lb, soft))
        return loss


STUDENTS: dict[str, type[Student]] = {
    "coteaching": CoTeachingStudent,
    "gce": GCEStudent,
    "sce": SCEStudent,
    "elr": ELRStudent,
    "mixup": MixupStudent,
    "ce": CEStudent,
}


def build_student(name: str | type[Student], make_backbone: Callable[[], nn.Module], n_items: int, n_classes: int, **hparams: Any) -> Student:
    """Build a student by name (a key of :data:`STUDENTS`) or class (a :class:`Student`
    subclass, called as ``cls(backbone, n_items, n_classes, **hparams)``); ``make_backbone``
    returns a fresh backbone each call. Students of two networks (``networks = 2``,
    co-teaching) get a second, independently initialised backbone as ``backbone_b``, built
    after the first."""
    if isinstance(name, str):
        if name not in STUDENTS:
            raise ValueError(f"unknown student '{name}'; choose one of {sorted(STUDENTS)}")
        cls = STUDENTS[name]
    else:
        cls = name
    backbone = make_backbone()
    if getattr(cls, "networks", 1) == 2 and "backbone_b" not in hparams:
        hparams = {**hparams, "backbone_b": make_backbone()}
    return cls(backbone, n_items, n_classes, **hparams)


class StudentObjective(nn.Module):
    """Adapts a student to the training loop: gathers the hard labels and soft targets of each batch."""

    labels: torch.Tensor
    soft: torch.Tensor | None

    def __init__(self, student: Student, labels: torch.Tensor, soft: torch.Tensor | None, kd: nn.Module | None, lambda1: float) -> None:
        super().__init__()
        self.student, self.kd, self.lambda1 = student, kd, lambda1
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("soft", soft, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        soft = self.soft[idx] if self.soft is not None else None
        return self.student.student_loss(x, self.labels[idx], idx, epoch, soft=soft, kd=self.kd, lambda1=self.lambda1)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.predict_proba(x)
