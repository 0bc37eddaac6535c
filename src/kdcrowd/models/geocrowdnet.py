"""GeoCrowdNet (Ibrahim, Nguyen & Fu, "Deep learning from crowdsourced labels: coupled
cross-entropy minimization, identifiability, and regularization", ICLR 2023;
arXiv:2306.03288): coupled cross-entropy with a log-det volume regulariser on the
classifier's outputs (``F``) or on the stacked confusion matrices (``W``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.config import bounded, check_fields
from kdcrowd.models._common import make_config, marginal_nll_loss
from kdcrowd.models.base import CrowdModel, register_crowd_model

__all__ = ["GeoCrowdNet", "GeoCrowdNetConfig", "GEOCROWDNET_VARIANTS"]

#: ``"f"``: volume of the classifier outputs; ``"w"``: volume of the confusion matrices.
GeoCrowdNetVariant = Literal["f", "w"]
GEOCROWDNET_VARIANTS: tuple[str, ...] = get_args(GeoCrowdNetVariant)


@dataclass
class GeoCrowdNetConfig:
    """Options of :class:`GeoCrowdNet` (defaults: the reference benchmark's).

    variant: ``"f"`` or ``"w"``.
    reg_weight: λ of the log-det term (1e-3 in ``conf/classifier/geo_reg_f.yaml`` and
        ``geo_reg_w.yaml``; the class's own ``"auto"`` default would be 1e-4).
    reg_max: a log-det term that is not finite or above this value is dropped for the step
        (100, the guard of the authors' code kept by the reference).
    """

    variant: GeoCrowdNetVariant = "f"
    reg_weight: float = bounded(1e-3, ge=0.0)
    reg_max: float = bounded(100.0, gt=0.0)

    def __post_init__(self) -> None:
        check_fields(self)


@register_crowd_model("geocrowdnet-w", config=GeoCrowdNetConfig, variant='w')
@register_crowd_model("geocrowdnet-f", config=GeoCrowdNetConfig, variant='f')
class GeoCrowdNet(CrowdModel):
    """GeoCrowdNet(F) / GeoCrowdNet(W).

    Model: ``p(y^m = j | x) = Σ_k p(k | x) A_m[k, j]``, ``A_m = row-softmax(W_m)``, trained by
    the coupled cross-entropy (the negative log marginal likelihood averaged over the
    observed annotations) plus ``λ · R``:

    - ``"f"``: ``R = −log det(Pᵀ P)`` with ``P (B, K)`` the classifier's probabilities on
      the batch (Eq. 8): spreads the predicted label distributions (identifiable when the
      workers' confusions are "sufficiently scattered");
    - ``"w"``: ``R = −log det(Aᵀ A)`` with ``A (M·K, K)`` the transposed confusion matrices
      of *all* workers stacked, i.e. ``Aᵀ A = Σ_m A_m A_mᵀ`` (Eq. 9, as the reference
      computes it).

    A term that is not finite or above ``reg_max`` (100) is dropped for the step, as in the
    authors' code; here without a host synchronisation (the log-det of a dropped step is
    taken of the identity so that its gradient stays finite).

    Read from the reference implementation ``maml/classifiers/_reg_crowd_net.py``
    (``RegCrowdNetClassifier``, ``regularization="geo-reg-f"`` / ``"geo-reg-w"``) of
    github.com/ies-research/multi-annotator-machine-learning, branch ``annot-mix``:
    ``W_m`` initialised to the identity (logits; Section 5 of the paper), NLL averaged
    over the observed pairs, λ = 1e-3 in the benchmark configs. Benchmark optimiser
    (``conf/data/label_me.yaml``): RAdam, lr 1e-2 (classifier weight decay 1e-4, none on the
    confusions), cosine over 50 epochs, batch 64; CIFAR-10N: lr 1e-3, 100 epochs, batch 128.
    Published LabelMe last-epoch accuracies (frozen DINOv2 + MLP head): 85.4 (F), 85.5 (W);
    MV 80.5.

    Departure: a batch without any observed annotation has loss exactly 0 (the contract).

    ``transition_matrices()``: ``row-softmax(W_m)``.
    """

    def __init__(self, backbone: nn.Module, n_workers: int, n_classes: int, config: GeoCrowdNetConfig | None = None, **overrides: Any) -> None:
        super().__init__(backbone, n_workers, n_classes)
        self.config = make_config(GeoCrowdNetConfig, config, overrides)  # its values checked there
        self.variant = self.config.variant
        self.weight = nn.Parameter(torch.eye(self.n_classes).repeat(self.n_workers, 1, 1))

    def extra_repr(self) -> str:
        return f"n_workers={self.n_workers}, n_classes={self.n_classes}, config={self.config}"

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.weight[idx].float(), dim=-1)

    def _neg_logdet(self, gram: torch.Tensor, n_rows: int | None = None) -> torch.Tensor:
        """``−log det(gram)``, or 0 where that is not finite or above ``reg_max``, or where
        ``gram`` (K, K) is ``PᵀP`` of fewer than K rows (``n_rows``): singular, so its value is
        rounding noise with huge gradients. The term is computed in float64 (from a float64
        ``gram``, :meth:`volume_term`), the precision the check uses (float32 made a finite
        float64 value inf or NaN: a batch of 7 items and 10 classes stopped training), and
        returned in float32."""
        k = gram.shape[-1]
        g64 = gram.double()
        with torch.no_grad():
            val = -torch.logdet(g64.detach())
            ok = torch.isfinite(val) & (val <= self.config.reg_max)
            if n_rows is not None and n_rows < k:
                ok = torch.zeros_like(ok)
        eye = torch.eye(k, device=gram.device, dtype=torch.float64)
        safe = torch.where(ok, g64, eye)
        return torch.where(ok, -torch.logdet(safe), torch.zeros((), device=gram.device, dtype=torch.float64)).float()

    def volume_term(self, probs: torch.Tensor | None = None) -> torch.Tensor:
        """The regulariser ``R``: for ``"f"`` of the batch probabilities ``probs (B, K)``."""
        if self.variant == "f":
            if probs is None:
                raise ValueError("GeoCrowdNet(F)'s term needs the batch's class probabilities")
            with torch.autocast(probs.device.type, enabled=False):  # bf16 autocast would round the Gram matrix: float64 throughout
                p = probs.double()
                return self._neg_logdet(p.T @ p, n_rows=p.shape[0])
        with torch.autocast(self.weight.device.type, enabled=False):
            a = torch.softmax(self.weight.double(), dim=-1)  # (M, K, K)
            return self._neg_logdet(torch.einsum("mkj,mlj->kl", a, a))

    def crowd_loss(self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.config.reg_weight
        return marginal_nll_loss(self, x, workers, labels, (lambda log_p: w * self.volume_term(log_p.exp())) if w > 0 else None)
