"""UnionNet (Wei, Xu, Xia, Huang, Li, Liu & Cheng, "Deep learning from multiple noisy
annotators as a union", IEEE TNNLS 2022; doi:10.1109/TNNLS.2022.3168696)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.losses import _no_autocast
from kdcrowd.config import bounded, check_fields
from kdcrowd.models._common import make_config
from kdcrowd.models.base import CrowdModel, register_crowd_model

__all__ = ["UnionNet", "UnionNetConfig"]


@dataclass
class UnionNetConfig:
    """Options of :class:`UnionNet` (defaults: the reference benchmark's).

    epsilon: initial transition logits ``(1−ε)·I + ε/(K−1)·(1−I)`` per worker (Eq. 7; 1e-5
        in ``conf/classifier/union_net.yaml``).
    """

    epsilon: float = bounded(1e-5, ge=0.0, lt=1.0)

    def __post_init__(self) -> None:
        check_fields(self)


@register_crowd_model("unionnet", config=UnionNetConfig)
class UnionNet(CrowdModel):
    """UnionNet: all workers' labels of an item as one label over the union of the M·K
    (worker, class) outputs.

    One parameter matrix ``Θ (M·K, K)`` (row ``m·K + j``: worker m answers j; column k: the
    true class) is column-softmaxed over the whole union, ``S = softmax(Θ, dim=0)``, so
    ``p_union(x) = S p(x)`` is one distribution over the M·K outputs and the loss is the
    cross-entropy of the concatenated one-hot annotations,
    ``−(1/B) Σ_b Σ_{observed (m, j)} log Σ_k p(k | x_b) S[m·K + j, k]`` -- summed over the
    labels of an item and divided by the batch size B, as in the reference. The shared
    normaliser couples the workers (a worker's share of the union grows with how often it
    labels).

    Read from the reference implementation ``maml/classifiers/_union_net.py``
    (``UnionNetClassifier``) of github.com/ies-research/multi-annotator-machine-learning,
    branch ``annot-mix``: ``transition_matrix`` is the concatenation of M matrices
    ``(1−ε)I + ε/(K−1)(1−I)`` (used as logits), ``p_union = p_class @ softmax(T, 0).T``,
    loss ``(−z_one_hot · log p_union).sum() / n_samples``; ε = 1e-5
    (``conf/classifier/union_net.yaml``). Benchmark optimiser (``conf/data/label_me.yaml``):
    RAdam lr 1e-2 (classifier weight decay 1e-4, none on Θ), cosine over 50 epochs, batch 64;
    CIFAR-10N: lr 1e-3, 100 epochs, batch 128. Published LabelMe last-epoch accuracy (frozen
    DINOv2 + MLP head): 85.2 (MV 80.5).

    ``transition_matrices()``: each worker's block of ``S`` normalised over its own K
    outputs, ``T_m[k, j] = S[m·K+j, k] / Σ_j' S[m·K+j', k] = softmax_j(Θ[m·K+j, k])`` (the
    reference's ``p_annot`` normalisation). The parameter is stored as ``weight (M, K, K)``
    with ``weight[m, j, k] = Θ[m·K + j, k]``.
    """

    def __init__(self, backbone: nn.Module, n_workers: int, n_classes: int, config: UnionNetConfig | None = None, **overrides: Any) -> None:
        super().__init__(backbone, n_workers, n_classes)
        self.config = make_config(UnionNetConfig, config, overrides)
        eps = float(self.config.epsilon)
        K = self.n_classes
        eye = torch.eye(K)
        init = (1 - eps) * eye + eps / (K - 1) * (1 - eye)
        self.weight = nn.Parameter(init.repeat(self.n_workers, 1, 1))  # [m, j (label), k (true)]

    def extra_repr(self) -> str:
        return f"n_workers={self.n_workers}, n_classes={self.n_classes}, config={self.config}"

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.weight[idx].float().transpose(-1, -2), dim=-1)

    def log_union(self) -> torch.Tensor:
        """``log S (M, K, K)``, ``S[m, j, k] = softmax over all (m', j') of Θ[m', j', k]``."""
        w = self.weight.float()
        return w - torch.logsumexp(w.flatten(0, 1), dim=0)

    def crowd_loss(self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.backbone(x)
        workers, labels, obs = self._annotations_on(logits, workers, labels)
        with _no_autocast(logits):
            log_p = F.log_softmax(logits.float(), dim=-1)
            log_z = torch.logsumexp(self.weight.float().flatten(0, 1), dim=0)  # (K,)
            rows = self.weight[workers.clamp(min=0), labels.clamp(min=0)].float() - log_z  # (B, L, K)
            ll = torch.logsumexp(log_p.unsqueeze(1) + rows, dim=-1)  # (B, L)
            loss = -torch.where(obs, ll, torch.zeros_like(ll)).sum() / max(int(logits.shape[0]), 1)
        return loss, logits
