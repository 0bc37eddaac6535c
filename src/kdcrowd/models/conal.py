"""CoNAL (Chu, Ma & Wang, AAAI 2021): one of the crowd models of :mod:`kdcrowd.models.base`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.config import bounded, check_fields
from kdcrowd.losses import _no_autocast, masked_cross_entropy

from .base import CrowdModel, _masked_labels, register_crowd_model

__all__ = ["CoNAL", "CoNALConfig"]


@dataclass
class CoNALConfig:
    """Options of :class:`CoNAL`."""

    embed_dim: int = bounded(20, ge=1)
    """Dimension of the instance and worker embeddings of the gate."""
    reg: float = bounded(1e-5, ge=0.0)
    """Weight of the term pushing the workers' matrices away from the common one."""
    normalize: bool = True
    """L2-normalise both embeddings before the gate's inner product."""

    def __post_init__(self) -> None:
        check_fields(self)


@register_crowd_model("conal", config=CoNALConfig)
class CoNAL(CrowdModel):
    """Common Noise Adaptation Layers (Chu, Ma & Wang, "Learning from crowds by modeling
    common confusions", AAAI 2021; doi:10.1609/aaai.v35i7.16730; arXiv:2012.13052).

    With ``f = softmax(backbone(x))``, a common confusion matrix ``W_c`` (K×K) and one
    matrix ``W_m`` per worker, the annotator logits are

        o_{i,m} = ω_{i,m} · (f_i @ W_c) + (1 − ω_{i,m}) · (f_i @ W_m),
        ω_{i,m} = σ(⟨u(x_i), v(m)⟩),

    with the instance embedding ``u`` a linear map of the backbone's penultimate features
    (the input of ``backbone.head``) and the worker embedding ``v`` an ``nn.Embedding``.
    As in the official code both embeddings are L2-normalised before the inner product
    (``normalize=True``), so ``ω ∈ [σ(−1), σ(1)]``. ``W_c`` and every ``W_m`` start at
    ``2·I`` (the official code's init). Loss: cross-entropy over the observed annotations
    minus ``reg · mean ||W_m − W_c||_F`` (the official code's term pushing the individual
    matrices away from the common one, λ = 1e-5). Departure: the official code sums the
    norm over all M workers at every step; here it is averaged over the batch's observed
    annotations, so its scale does not grow with M, it only touches the workers of the
    batch, and a batch without observed annotations has loss exactly 0.

    Expertise: ``transition_matrices()`` returns the *individual* matrices
    ``T̂_m = row-softmax(W_m)``; the gate mixes in the common confusion at instance level,
    so the effective matrix of worker m on item i is ``row-softmax(ω W_c + (1−ω) W_m)``;
    ``transition_matrices(mix=ω)`` returns that for a fixed ``ω``. :meth:`posterior` uses
    the individual matrices.

    Args:
        backbone: network with ``features(x)``/``head`` (``head(features(x))`` = logits).
        n_workers: number of workers M.
        n_classes: number of classes K.
        embed_dim: dimension of the instance and worker embeddings (20 in the paper).
        reg: weight λ of the ``−λ·mean||W_m − W_c||_F`` term (1e-5 in the official code).
        normalize: L2-normalise both embeddings before the gate's inner product.
        feature_dim: dimension of the backbone features; default ``backbone.feature_dim``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_workers: int,
        n_classes: int,
        embed_dim: int = 20,
        reg: float = 1e-5,
        normalize: bool = True,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__(backbone, n_workers, n_classes)
        if feature_dim is None:
            feature_dim = getattr(backbone, "feature_dim", None)
        if feature_dim is None:
            raise ValueError("CoNAL needs backbone.feature_dim (or pass feature_dim=)")
        M, K = self.n_workers, self.n_classes
        self.embed_dim = int(embed_dim)
        self.reg = float(reg)
        self.normalize = bool(normalize)
        self.common_weight = nn.Parameter(2.0 * torch.eye(K))
        self.weight = nn.Parameter(2.0 * torch.eye(K).repeat(M, 1, 1))
        self.instance_embed = nn.Linear(int(feature_dim), self.embed_dim)
        self.worker_embed = nn.Embedding(M, self.embed_dim)

    def extra_repr(self) -> str:
        return (
            f"n_workers={self.n_workers}, n_classes={self.n_classes}, "
            f"embed_dim={self.embed_dim}, reg={self.reg}, normalize={self.normalize}"
        )

    def worker_parameters(self) -> Iterator[nn.Parameter]:
        """The noise matrices (``W_c`` and every ``W_m``); the gate network (the instance
        and worker embeddings) trains like the backbone, with weight decay."""
        return iter((self.common_weight, self.weight))

    def gate(self, features: torch.Tensor, workers: torch.Tensor) -> torch.Tensor:
        """``ω (B, L) = σ(⟨u(x), v(m)⟩)`` from backbone features ``(B, F)``."""
        u = self.instance_embed(features.float())  # (B, E)
        v = self.worker_embed(workers.clamp(min=0)).float()  # (B, L, E)
        if self.normalize:
            u = F.normalize(u, dim=-1)
            v = F.normalize(v, dim=-1)
        return torch.sigmoid(torch.einsum("be,ble->bl", u, v))

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.weight[idx].float(), dim=-1)

    @torch.no_grad()
    def transition_matrices(self, mix: float | None = None) -> torch.Tensor:
        """``(M, K, K)`` row-stochastic: the individual ``row-softmax(W_m)`` (``mix=None``),
        or ``row-softmax(mix·W_c + (1−mix)·W_m)`` for a fixed gate value ``mix ∈ [0, 1]``."""
        if mix is None:
            return super().transition_matrices()
        if not 0.0 <= float(mix) <= 1.0:
            raise ValueError(f"mix must be in [0, 1]; got {mix}")
        with _no_autocast(self.weight):
            w = float(mix) * self.common_weight.float() + (1.0 - float(mix)) * self.weight.float()
            return torch.softmax(w, dim=-1)

    def crowd_loss(
        self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self._batch_logits_and_features(x)
        workers, labels, obs = self._annotations_on(logits, workers, labels)
        with _no_autocast(logits):
            wc = workers.clamp(min=0)
            f = torch.softmax(logits.float(), dim=-1)
            omega = self.gate(feats, workers).unsqueeze(-1)  # (B, L, 1)
            common = (f @ self.common_weight.float()).unsqueeze(1)  # (B, 1, K)
            w_m = self.weight[wc].float()  # (B, L, K, K), gathered once for both terms
            indiv = torch.einsum("bk,blkj->blj", f, w_m)  # (B, L, K)
            o = omega * common + (1.0 - omega) * indiv
            loss = masked_cross_entropy(o, _masked_labels(workers, labels))
            if self.reg != 0.0:
                diff = (w_m - self.common_weight.float()).flatten(2)
                norms = torch.linalg.vector_norm(diff, dim=-1)  # (B, L)
                norms = torch.where(obs, norms, torch.zeros_like(norms))
                loss = loss - self.reg * norms.sum() / obs.sum().clamp(min=1).float()
        return loss, logits
