"""CrowdAR (Cao, Chen, Huang, Shen & Huang, "Learning from crowds with annotation
reliability", SIGIR 2023; doi:10.1145/3539618.3592007)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.losses import _no_autocast
from kdcrowd.config import bounded, check_fields
from kdcrowd.models._common import make_config, masked_mean
from kdcrowd.models.base import CrowdModel, register_crowd_model

__all__ = ["CrowdAR", "CrowdARConfig"]


@dataclass
class CrowdARConfig:
    """Options of :class:`CrowdAR` (defaults: the reference benchmark's).

    reliability_dim: width of the sample-difficulty layer (``ap_embed_dim_x`` 128,
        ``conf/classifier/crowdar.yaml``).
    lmbda: weight of the annotation term against the reliability term, ``λ·L_annot +
        (1−λ)·L_rel`` (0.9).
    """

    reliability_dim: int = bounded(128, ge=1)
    lmbda: float = bounded(0.9, ge=0.0, le=1.0)

    def __post_init__(self) -> None:
        check_fields(self)


@register_crowd_model("crowdar", config=CrowdARConfig)
class CrowdAR(CrowdModel):
    """CrowdAR: a crowd layer whose targets are softened by a learned reliability of each
    annotation.

    - Annotator logits (Eq. 4): ``o_{i,m} = f_i @ W_m`` with ``f = softmax(logits)`` and a
      K×K matrix per worker (identity init), ``T̂_m = row-softmax(W_m)``.
    - Reliability (Eqs. 1-2): difficulty ``d_i = σ(W_2 σ(W_1 h_i))`` from the detached
      penultimate features ``h_i``, expertise ``e_m = σ(E_m)`` (``E`` Xavier-normal),
      ``r_{i,m} = σ(w_3 · ((e_m − d_i) ⊙ f_i) + b_3)`` with ``w_3 ≥ 0``.
    - Soft target (Eq. 3): ``t = r·onehot(y) + (1−r)/K``; loss (Eq. 5)
      ``[λ Σ CE(t, o) + (1−λ) Σ BCE(r, 1[argmax f_i = y_{i,m}])] / #annotations``.
      Gradients flow through ``r`` in the soft target and through ``f`` in the reliability,
      as in the reference.

    Read from the reference implementation ``maml/classifiers/_crowdar.py``
    (``CrowdARClassifier``, ``ReliabilityNetwork``) of
    github.com/ies-research/multi-annotator-machine-learning, branch ``annot-mix``;
    ``ap_embed_dim_x = 128``, ``lmbda = 0.9`` (``conf/classifier/crowdar.yaml``). Benchmark
    optimiser (``conf/data/label_me.yaml``): RAdam lr 1e-2 (classifier weight decay 1e-4,
    none on the annotator side), cosine over 50 epochs, batch 64; CIFAR-10N: lr 1e-3, 100
    epochs, batch 128. Published LabelMe last-epoch accuracy (frozen DINOv2 + MLP head): 84.6
    (MV 80.5).

    Departure: the reference clips ``w_3`` to ``≥ 0`` after every optimiser step; the
    training loop has no post-step hook, so the clip is applied in place at the start of
    every ``crowd_loss`` call (before ``w_3`` enters the graph). The reference's first step
    uses the unclipped initial ``w_3`` (a default ``nn.Linear`` has negative entries), so
    the two sequences differ from the first step on. The clip
    writes through ``.data``, not tracked by autograd, so a graph built by an earlier
    ``crowd_loss`` (gradient accumulation) stays valid: its ``w_3`` was clipped already. BCE uses log-sigmoids of the pre-activation (stable; the reference's
    ``binary_cross_entropy`` clamps its logs at −100).

    ``transition_matrices()``: ``row-softmax(W_m)`` (item-independent; the reliability only
    softens the training targets). :meth:`reliability` gives ``r`` for items and workers.
    """

    def __init__(self, backbone: nn.Module, n_workers: int, n_classes: int, config: CrowdARConfig | None = None, feature_dim: int | None = None, **overrides: Any) -> None:
        super().__init__(backbone, n_workers, n_classes)
        self.config = make_config(CrowdARConfig, config, overrides)
        if feature_dim is None:
            feature_dim = getattr(backbone, "feature_dim", None)
        if feature_dim is None:
            raise ValueError("CrowdAR needs backbone.feature_dim (or pass feature_dim=)")
        M, K = self.n_workers, self.n_classes
        self.weight = nn.Parameter(torch.eye(K).repeat(M, 1, 1))
        self.expertise = nn.Parameter(nn.init.xavier_normal_(torch.empty(M, K)))
        self.difficulty_hidden = nn.Linear(int(feature_dim), int(self.config.reliability_dim))
        self.difficulty_out = nn.Linear(int(self.config.reliability_dim), K)
        self.reliability_out = nn.Linear(K, 1)
        self._clip()

    def extra_repr(self) -> str:
        return f"n_workers={self.n_workers}, n_classes={self.n_classes}, config={self.config}"

    @torch.no_grad()
    def _clip(self) -> None:
        self.reliability_out.weight.data.clamp_(min=0.0)  # .data: no version bump for the graphs that hold w_3

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.weight[idx].float(), dim=-1)

    def reliability_logits(self, features: torch.Tensor, probs: torch.Tensor, workers: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` pre-sigmoid reliabilities from features ``(B, F)`` (detached here),
        class probabilities ``(B, K)`` and worker indices ``(B, L)``."""
        d = torch.sigmoid(self.difficulty_out(torch.sigmoid(self.difficulty_hidden(features.detach().float()))))  # (B, K)
        e = torch.sigmoid(self.expertise[workers.clamp(min=0)].float())  # (B, L, K)
        h = (e - d.unsqueeze(1)) * probs.float().unsqueeze(1)
        return self.reliability_out(h).squeeze(-1)

    @torch.no_grad()
    def reliability(self, x: torch.Tensor, workers: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` annotation reliabilities ``r`` of workers ``(B, L)`` on items ``x``."""
        logits, feats = self._batch_logits_and_features(x)
        with _no_autocast(logits):
            return torch.sigmoid(self.reliability_logits(feats, torch.softmax(logits.float(), -1), workers.to(logits.device).long()))

    def crowd_loss(self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._clip()
        logits, feats = self._batch_logits_and_features(x)
        workers, labels, obs = self._annotations_on(logits, workers, labels)
        with _no_autocast(logits):
            K = self.n_classes
            f = torch.softmax(logits.float(), dim=-1)
            o = torch.einsum("bk,blkj->blj", f, self.weight[workers.clamp(min=0)].float())
            s = self.reliability_logits(feats, f, workers)  # (B, L)
            r = torch.sigmoid(s).unsqueeze(-1)
            onehot = F.one_hot(labels.clamp(min=0), K).float()
            target = r * onehot + (1.0 - r) / K
            ce = -(target * F.log_softmax(o, dim=-1)).sum(-1)  # (B, L)
            correct = (f.argmax(-1, keepdim=True) == labels).float()
            bce = -(correct * F.logsigmoid(s) + (1.0 - correct) * F.logsigmoid(-s))
            lam = float(self.config.lmbda)
            loss = masked_mean(lam * ce + (1.0 - lam) * bce, obs)
        return loss, logits
