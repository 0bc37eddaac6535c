"""CrowdLayer (Rodrigues & Pereira, AAAI 2018): one of the crowd models of :mod:`kdcrowd.models.base`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.config import check_fields
from kdcrowd.losses import _no_autocast, masked_cross_entropy

from .base import CrowdModel, _check_annotations, _masked_labels, register_crowd_model

__all__ = ["CrowdLayer", "CrowdLayerConfig", "CROWD_LAYER_VARIANTS"]

#: Worker-module variants of :class:`CrowdLayer` (Rodrigues & Pereira, AAAI 2018).
CROWD_LAYER_VARIANTS: tuple[str, ...] = ("mw", "vw", "vb", "vwb")


@dataclass
class CrowdLayerConfig:
    """Options of :class:`CrowdLayer` (the variant is fixed by the registered name)."""

    variant: Literal["mw", "vw", "vb", "vwb"] = "mw"
    """Worker module: matrix (``mw``), vector weight (``vw``), bias (``vb``) or both (``vwb``)."""

    def __post_init__(self) -> None:
        check_fields(self)


@register_crowd_model("crowdlayer-vwb", config=CrowdLayerConfig, variant="vwb")
@register_crowd_model("crowdlayer-vb", config=CrowdLayerConfig, variant="vb")
@register_crowd_model("crowdlayer-vw", config=CrowdLayerConfig, variant="vw")
@register_crowd_model("crowdlayer-mw", config=CrowdLayerConfig, variant="mw")  # decorators apply bottom-up: mw is registered first
class CrowdLayer(CrowdModel):
    """Crowd layer (Rodrigues & Pereira, "Deep learning from crowds", AAAI 2018;
    doi:10.1609/aaai.v32i1.11506; arXiv:1709.01779).

    The backbone's probability output ``f(x) = softmax(logits)`` is mapped per worker to
    annotator logits ``o_m = g_m(f(x))``; ``p(y^m | x) = softmax(o_m)`` and the loss is
    the cross-entropy averaged over the observed annotations of the batch
    (:func:`kdcrowd.losses.masked_cross_entropy`). Worker modules (``variant``):

    - ``"mw"``: ``o = f @ W_m`` with a K×K matrix, identity init;
    - ``"vw"``: ``o = w_m ⊙ f``, ones init;
    - ``"vb"``: ``o = f + b_m``, zeros init;
    - ``"vwb"``: ``o = w_m ⊙ f + b_m`` (ones / zeros init).

    The expertise estimate is ``T̂_m[k, :] = softmax(g_m(e_k))``.

    Args:
        backbone: network ``x -> (B, K)`` true-label logits.
        n_workers: number of workers M.
        n_classes: number of classes K.
        variant: worker module, one of ``"mw"``, ``"vw"``, ``"vb"``, ``"vwb"``.
    """

    def __init__(
        self, backbone: nn.Module, n_workers: int, n_classes: int, variant: str = "mw"
    ) -> None:
        super().__init__(backbone, n_workers, n_classes)
        variant = variant.lower().replace("+", "").replace("_", "")
        if variant not in CROWD_LAYER_VARIANTS:
            raise ValueError(f"variant must be one of {CROWD_LAYER_VARIANTS}; got {variant!r}")
        self.variant = variant
        M, K = self.n_workers, self.n_classes
        if variant == "mw":
            self.weight = nn.Parameter(torch.eye(K).repeat(M, 1, 1))
        if variant in ("vw", "vwb"):
            self.scale = nn.Parameter(torch.ones(M, K))
        if variant in ("vb", "vwb"):
            self.bias = nn.Parameter(torch.zeros(M, K))

    def extra_repr(self) -> str:
        return f"n_workers={self.n_workers}, n_classes={self.n_classes}, variant={self.variant!r}"

    def worker_logits(self, probs: torch.Tensor, workers: torch.Tensor) -> torch.Tensor:
        """Annotator logits ``(B, L, K)`` ``o = g_m(f)`` for true-label probabilities
        ``probs (B, K)`` and worker indices ``workers (B, L)`` (negative = padding; the
        output there is meaningless and must be masked)."""
        w = workers.clamp(min=0)
        f = probs.float()
        if self.variant == "mw":
            return torch.einsum("bk,blkj->blj", f, self.weight[w].float())
        o = f.unsqueeze(1)
        if self.variant in ("vw", "vwb"):
            o = o * self.scale[w].float()
        if self.variant in ("vb", "vwb"):
            o = o + self.bias[w].float()
        return o.expand(w.shape[0], w.shape[1], self.n_classes)

    def _worker_basis_logits(self, idx: torch.Tensor) -> torch.Tensor:
        """``(..., K, K)``: row ``k`` is ``g_m(e_k)``."""
        K = self.n_classes
        if self.variant == "mw":
            return self.weight[idx].float()
        dev = self._param_device()
        if self.variant in ("vw", "vwb"):
            out = torch.diag_embed(self.scale[idx].float())
        else:
            out = torch.eye(K, device=dev).expand(*idx.shape, K, K)
        if self.variant in ("vb", "vwb"):
            out = out + self.bias[idx].float().unsqueeze(-2)
        return out

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self._worker_basis_logits(idx), dim=-1)

    def crowd_loss(
        self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.backbone(x)
        _check_annotations(workers, labels, logits.shape[0])
        with _no_autocast(logits):
            workers = workers.to(logits.device).long()
            labels = labels.to(logits.device).long()
            f = torch.softmax(logits.float(), dim=-1)
            o = self.worker_logits(f, workers)
            loss = masked_cross_entropy(o, _masked_labels(workers, labels))
        return loss, logits
