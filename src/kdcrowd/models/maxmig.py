"""Max-MIG (Cao, Xu, Kong & Wang, ICLR 2019): one of the crowd models of :mod:`kdcrowd.models.base`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.config import bounded, check_fields
from kdcrowd.data.confusion import confusion
from kdcrowd.losses import F_DIVERGENCES, _no_autocast, mig_f

from .base import CrowdModel, _as_long, _check_annotations, _observed, register_crowd_model

__all__ = ["MaxMIG", "MaxMIGConfig"]


@dataclass
class MaxMIGConfig:
    """Options of :class:`MaxMIG`."""

    mig_f: Literal["kl", "pearson", "js", "tv", "rkl", "hellinger"] = field(default="kl", metadata={"arg": "f"})
    """f-divergence of MIG^f (the class's ``f`` argument)."""
    learn_prior: bool = True
    """Whether the class prior is trained."""
    eps: float = bounded(1e-2, gt=0.0)
    """Smoothing of the initial worker matrices."""

    def __post_init__(self) -> None:
        check_fields(self)


@register_crowd_model("maxmig", config=MaxMIGConfig)
class MaxMIG(CrowdModel):
    """Max-MIG (Cao, Xu, Kong & Wang, "Max-MIG: an information theoretic approach for
    joint learning from crowds", ICLR 2019; arXiv:1905.13436).

    Two predictors of the true label are trained jointly to maximise their f-mutual
    information gain: the *data classifier* ``h(x) = softmax(backbone(x))`` and the
    *crowd aggregator* ``g(y_i) = softmax(Σ_{observed m} W_m[:, y_i^m] + log p)``
    (``W``: M×K×K, column ``j`` of ``W_m`` is worker m's log-likelihood vector of answer
    ``j``; with ``W_m = log T_m`` and one label ``g`` is the Bayes posterior). The loss is
    ``-MIG^f(h, g, p)`` (:func:`kdcrowd.losses.mig_f`). Expertise: ``T̂_m =
    row-softmax(W_m)``. :meth:`posterior` is the paper's annotation-aware forecaster
    ``∝ h(x) ⊙ g(y) / p``.

    Initialisation (:meth:`init_from_annotations`, as in the official code): ``W_m ←
    log(T_init_m + eps)`` where ``T_init_m`` is worker m's row-normalised confusion of its
    labels against the majority-vote *soft* labels (rows with no mass are uniform), and
    ``p ←`` the mean MV soft label (only if no ``prior`` was given). Before that hook is
    called ``W_m = log(T0 + eps)`` with ``T0 = ½ I + ½ · 1/K`` (a weakly diagonal
    matrix; ``W = 0`` would make ``g ≡ p`` and give the classifier no gradient).

    The prior: the paper learns ``p``; here it is a learnable log-prior parameter
    (``learn_prior=True``, normalised with ``log_softmax`` wherever it is used) initialised
    uniform / from ``prior`` / from majority vote. ``learn_prior=False`` keeps it fixed
    (what the official code does).

    Batches: any ``B ≥ 2`` works (no skipped batches). ``B == 1`` raises ``ValueError``
    because MIG's product-of-marginals term needs two distinct items; the library's
    training loop merges a trailing size-1 batch into the previous one so it never sends
    ``B = 1``. Items without any observed annotation get ``g = p`` (the uninformative
    aggregate) and are left out of MIG^f (``mask``: no gradient from their pairs); a batch
    with fewer than two labelled items has loss 0.

    Args:
        backbone: network ``x -> (B, K)`` true-label logits (the data classifier).
        n_workers: number of workers M.
        n_classes: number of classes K.
        f: f-divergence of MIG^f, one of ``"kl"``, ``"pearson"``, ``"js"``, ``"tv"``,
            ``"rkl"``, ``"hellinger"``.
        prior: initial class prior (length-K probabilities); ``None`` = uniform, replaced
            by the majority-vote prior in :meth:`init_from_annotations`.
        learn_prior: whether the log prior is a trained parameter (the paper) or fixed.
        eps: additive smoothing of ``T_init`` in ``W_m = log(T_init_m + eps)``
            (0.01 in the official code).
    """

    initialises_from_labels = True

    def __init__(
        self,
        backbone: nn.Module,
        n_workers: int,
        n_classes: int,
        f: str = "kl",
        prior: Any = None,
        learn_prior: bool = True,
        eps: float = 1e-2,
    ) -> None:
        super().__init__(backbone, n_workers, n_classes)
        if f not in F_DIVERGENCES:
            raise ValueError(f"unknown f-divergence {f!r}; choose one of {F_DIVERGENCES}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0; got {eps}")
        self.f = f
        self.eps = float(eps)
        self.learn_prior = bool(learn_prior)
        self._prior_given = prior is not None
        M, K = self.n_workers, self.n_classes
        t0 = 0.5 * torch.eye(K) + 0.5 / K
        self.weight = nn.Parameter(torch.log(t0 + self.eps).repeat(M, 1, 1))
        if prior is None:
            lp = torch.full((K,), -math.log(K))
        else:
            p = torch.as_tensor(np.asarray(prior, dtype=np.float64), dtype=torch.float32).flatten()
            if p.shape != (K,) or (p < 0).any() or p.sum() <= 0:
                raise ValueError(f"prior must be {K} non-negative numbers with positive sum")
            lp = torch.log((p / p.sum()).clamp(min=1e-6))
        self.log_prior_param = nn.Parameter(lp, requires_grad=self.learn_prior)

    def extra_repr(self) -> str:
        return (
            f"n_workers={self.n_workers}, n_classes={self.n_classes}, f={self.f!r}, "
            f"learn_prior={self.learn_prior}, eps={self.eps}"
        )

    # ---- pieces ---------------------------------------------------------------------
    def log_prior(self) -> torch.Tensor:
        """``(K,)`` normalised log prior ``log p`` (float32)."""
        return F.log_softmax(self.log_prior_param.float(), dim=0)

    def prior(self) -> torch.Tensor:
        """``(K,)`` class prior ``p`` (detached)."""
        return self.log_prior().detach().exp()

    def _aggregate_scores(self, workers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(B, K)``: ``Σ_{observed m} W_m[:, y^m]`` (float32)."""
        obs = _observed(workers, labels)
        cols = self.weight[workers.clamp(min=0), :, labels.clamp(min=0)].float()  # (B, L, K)
        cols = torch.where(obs.unsqueeze(-1), cols, torch.zeros_like(cols))
        return cols.sum(dim=1)

    def aggregator_log_probs(self, workers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Crowd aggregator ``log g(y) (B, K) = log_softmax(Σ_m W_m[:, y^m] + log p)``."""
        _check_annotations(workers, labels, None)
        dev = self.weight.device
        workers, labels = workers.to(dev).long(), labels.to(dev).long()
        with _no_autocast(self.weight):
            return F.log_softmax(self._aggregate_scores(workers, labels) + self.log_prior(), -1)

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.weight[idx].float(), dim=-1)

    # ---- contract -------------------------------------------------------------------
    def crowd_loss(
        self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] < 2:
            raise ValueError(
                f"Max-MIG needs batches of at least 2 items (MIG's product-of-marginals term "
                f"pairs distinct items); got B={x.shape[0]}. Merge a size-1 batch into its "
                "neighbour."
            )
        logits = self.backbone(x)
        _check_annotations(workers, labels, logits.shape[0])
        with _no_autocast(logits):
            workers = workers.to(logits.device).long()
            labels = labels.to(logits.device).long()
            labelled = _observed(workers, labels).any(dim=1)
            log_h = F.log_softmax(logits.float(), dim=-1)
            log_p = self.log_prior()
            log_g = F.log_softmax(self._aggregate_scores(workers, labels) + log_p, dim=-1)
            # items nobody labelled (g = p) stay out of MIG: their pairs with labelled items
            # would push their classifier outputs apart from the batch's for no reason
            loss = -mig_f(log_h, log_g, log_p, self.f, mask=labelled)
            # fewer than two labelled items: an exact, finite 0 still connected to the graph;
            # torch.where avoids a host sync
            loss = torch.where(labelled.sum() >= 2, loss, logits.float().sum() * 0.0)
        return loss, logits

    def posterior(
        self, logits: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Max-MIG's annotation-aware forecaster ``∝ h(x) ⊙ g(y) / p``
        ``= h(x) ⊙ exp(Σ_m W_m[:, y^m])`` (uses the aggregator's columns of ``W``, which
        need not be row-normalised, rather than ``T̂``)."""
        _check_annotations(workers, labels, logits.shape[0])
        with _no_autocast(logits):
            workers = workers.to(logits.device).long()
            labels = labels.to(logits.device).long()
            log_q = F.log_softmax(logits.float(), dim=-1) + self._aggregate_scores(workers, labels)
            return torch.softmax(log_q, dim=-1)

    @torch.no_grad()
    def init_from_annotations(self, workers_padded: Any, labels_padded: Any, soft: Any = None) -> None:
        """``W_m ← log(T_init_m + eps)`` from each worker's confusion against the
        majority-vote soft labels, and (unless a ``prior`` was given) ``p ←`` the mean MV
        soft label. ``workers_padded``/``labels_padded``: ``(N, L)``, ``-1`` = missing.

        ``soft``: ``(N, K)`` label distributions to use instead of majority vote (KD-Crowd's
        stage 2 passes the student's refined predictions, ``stage2_init="student"``); rows
        must be non-negative with positive sums (they are normalised here)."""
        dev = self.weight.device
        w = _as_long(workers_padded, dev)
        y = _as_long(labels_padded, dev)
        _check_annotations(w, y, None)
        M, K = self.n_workers, self.n_classes
        obs = _observed(w, y)
        if obs.any() and (int(w[obs].max()) >= M or int(y[obs].max()) >= K):
            raise ValueError("worker or label index out of range in the annotations")
        N = w.shape[0]
        # MV soft labels: per-item label counts / number of labels
        counts = torch.zeros(N, K, device=dev)
        counts.scatter_add_(1, y.clamp(min=0), obs.float())
        n_lab = counts.sum(dim=1, keepdim=True)
        has = n_lab.squeeze(1) > 0
        if soft is None:
            soft = counts / n_lab.clamp(min=1.0)
        else:
            soft = torch.as_tensor(soft, device=dev).float()
            if soft.shape != (N, K) or not bool(torch.isfinite(soft).all()) or bool((soft < 0).any()) or bool((soft.sum(1) <= 0).any()):
                raise ValueError(f"soft must be ({N}, {K}) non-negative finite rows with positive sums, got shape {tuple(soft.shape)}")
            soft = soft / soft.sum(dim=1, keepdim=True)
        # each worker's confusion against the soft labels, rows normalised (uniform without data)
        item = torch.arange(N, device=dev).unsqueeze(1).expand_as(w)[obs]
        t_init = confusion((item, w[obs], y[obs]), soft, normalize=True, n_workers=M, n_classes=K)
        self.weight.copy_(torch.log(t_init + self.eps))
        if not self._prior_given and bool(has.any()):
            p = soft[has].mean(dim=0).clamp(min=1e-6)
            self.log_prior_param.copy_(torch.log(p / p.sum()))
