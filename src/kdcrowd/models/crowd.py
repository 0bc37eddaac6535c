"""Transition-matrix crowd models behind one contract.

Every model here is a plain :class:`torch.nn.Module` (usable in anyone's training loop)
wrapping a *backbone* (``x -> (B, K)`` true-label logits, see
:mod:`kdcrowd.models.backbones`) and a worker module. Annotations reach the models as
item-major padded tensors ``workers (B, L)`` / ``labels (B, L)`` (long, ``-1`` = missing),
the rows of :meth:`kdcrowd.data.annotations.Annotations.padded` for the items of a batch.

The contract (:class:`CrowdModel`):

- ``forward(x) -> (B, K)`` true-label logits; ``predict_proba(x) -> (B, K)``;
- ``crowd_loss(x, workers, labels) -> (loss, logits)``: the model's own loss on the
  observed annotations of the batch (missing entries contribute nothing; a batch without
  any observed annotation gives an exact, finite ``0``) and the true-label logits;
- ``transition_matrices() -> (M, K, K)`` row-stochastic, ``T[m, k, j] = P(y^m=j | y=k)``;
- ``posterior(logits, workers, labels) -> (B, K)``: the annotation-aware posterior
  ``∝ softmax(logits) ⊙ Π_m T_m[:, y^m]`` over the observed annotations (log space);
- ``init_from_annotations(workers_padded, labels_padded, soft=None)``: a hook, a no-op
  except for models that initialise their workers from label statistics (Max-MIG, whose
  class attribute ``initialises_from_labels`` is ``True``): from the majority vote, or
  from ``soft`` ``(N, K)`` label distributions of the items when given; models without
  such an initialisation raise ``ValueError`` for a ``soft``.

Implementation rules: everything is vectorised per batch -- the ``(B, L)`` worker
parameters are gathered with ``param[workers.clamp(min=0)]`` and masked; there are no Python
loops over workers or items and nothing of size N×M (M = 50 000 workers is fine: the
parameters are M×K×K). Under autocast (bf16 on CUDA) the backbone runs in low precision
and every loss is computed in float32. The models keep no dataset state: the training
loop gathers the padded annotation rows of a batch and calls ``crowd_loss``.

Convention: a worker's K×K parameter matrix acts on the true-label probability *row*
vector, ``o = f @ W_m`` (``o_j = Σ_k f_k W_m[k, j]``), so row ``k`` of ``W_m`` is the
worker's logit vector for true class ``k`` and ``T̂_m = row-softmax(W_m)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.losses import F_DIVERGENCES, _no_autocast, masked_cross_entropy, mig_f

__all__ = [
    "CrowdModel",
    "CrowdLayer",
    "MaxMIG",
    "CoNAL",
    "CROWD_LAYER_VARIANTS",
]

#: Worker-module variants of :class:`CrowdLayer` (Rodrigues & Pereira, AAAI 2018).
CROWD_LAYER_VARIANTS: tuple[str, ...] = ("mw", "vw", "vb", "vwb")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _as_long(a: Any, device: torch.device) -> torch.Tensor:
    """numpy array / tensor / nested list -> long tensor on ``device``."""
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=torch.long)
    return torch.as_tensor(np.asarray(a), dtype=torch.long, device=device)


def _check_annotations(workers: torch.Tensor, labels: torch.Tensor, batch: int | None) -> None:
    if workers.dim() != 2 or workers.shape != labels.shape:
        raise ValueError(
            "workers and labels must be (B, L) tensors of the same shape; got "
            f"{tuple(workers.shape)} and {tuple(labels.shape)}"
        )
    if batch is not None and workers.shape[0] != batch:
        raise ValueError(f"annotations have {workers.shape[0]} rows for a batch of {batch} items")


def _observed(workers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` bool mask of observed annotations (both indices non-negative)."""
    return (labels >= 0) & (workers >= 0)


def _masked_labels(workers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """labels with every unobserved entry (label or worker < 0) set to -1."""
    return torch.where(_observed(workers, labels), labels.long(), torch.full_like(labels.long(), -1))


def _gather_columns(log_t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log_t (B, L, K, K)``, ``labels (B, L)`` -> ``(B, L, K)`` columns ``log_t[b,l,:,y]``."""
    B, L, K, _ = log_t.shape
    idx = labels.clamp(min=0).view(B, L, 1, 1).expand(B, L, K, 1)
    return log_t.gather(-1, idx).squeeze(-1)


# --------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------
class CrowdModel(nn.Module):
    """Base class of the crowd models: a backbone plus a per-worker noise model.

    Args:
        backbone: ``nn.Module`` mapping ``x`` to true-label logits ``(B, K)``.
        n_workers: number of workers M (worker indices ``0..M-1``).
        n_classes: number of classes K.

    Subclasses implement :meth:`crowd_loss` and :meth:`_worker_log_transitions` (the
    ``(..., K, K)`` log transition matrices of the given worker indices); the base class
    derives :meth:`transition_matrices` and :meth:`posterior` from the latter.
    """

    initialises_from_labels: bool = False
    """Whether :meth:`init_from_annotations` initialises the workers from label statistics
    (and so accepts ``soft`` label distributions); ``True`` for Max-MIG."""

    def __init__(self, backbone: nn.Module, n_workers: int, n_classes: int) -> None:
        super().__init__()
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1; got {n_workers}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2; got {n_classes}")
        self.backbone = backbone
        self.n_workers = int(n_workers)
        self.n_classes = int(n_classes)

    # ---- true-label predictor -------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """True-label logits ``(B, K)``."""
        return self.backbone(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """True-label probabilities ``(B, K)`` (float32)."""
        logits = self(x)
        with _no_autocast(logits):
            return torch.softmax(logits.float(), dim=-1)

    # ---- crowd side -----------------------------------------------------------------
    def crowd_loss(
        self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)``: the model's loss on the observed annotations and the
        true-label logits ``(B, K)``."""
        raise NotImplementedError

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        """``(..., K, K)`` log transition matrices (rows log-normalised) of workers ``idx``."""
        raise NotImplementedError

    def _param_device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")  # pragma: no cover

    @torch.no_grad()
    def transition_matrices(self) -> torch.Tensor:
        """``(M, K, K)`` row-stochastic estimates ``T̂[m, k, j] = P(y^m = j | y = k)``
        (detached, float32)."""
        idx = torch.arange(self.n_workers, device=self._param_device())
        with _no_autocast(idx):
            return self._worker_log_transitions(idx).float().exp()

    def _log_annotation_likelihood(
        self, workers: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """``(B, K)``: ``Σ_{observed m} log T_m[:, y^m]`` (0 where nothing is observed)."""
        obs = _observed(workers, labels)
        log_t = self._worker_log_transitions(workers.clamp(min=0)).float()  # (B, L, K, K)
        cols = _gather_columns(log_t, labels)  # (B, L, K)
        cols = torch.where(obs.unsqueeze(-1), cols, torch.zeros_like(cols))
        return cols.sum(dim=1)

    def posterior(
        self, logits: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Annotation-aware posterior ``(B, K) ∝ softmax(logits) ⊙ Π_m T̂_m[:, y^m]`` over
        the observed annotations, computed in log space (float32)."""
        _check_annotations(workers, labels, logits.shape[0])
        with _no_autocast(logits):
            workers = workers.to(logits.device).long()
            labels = labels.to(logits.device).long()
            log_q = F.log_softmax(logits.float(), dim=-1)
            log_q = log_q + self._log_annotation_likelihood(workers, labels)
            return torch.softmax(log_q, dim=-1)

    def init_from_annotations(self, workers_padded: Any, labels_padded: Any, soft: Any = None) -> None:
        """Initialise worker parameters from the padded training annotations ``(N, L)``
        (``-1`` = missing) and, optionally, ``soft`` ``(N, K)`` label distributions of the
        items to measure the workers against (default: their majority vote). No-op by default;
        a model without such an initialisation (``initialises_from_labels`` false) raises
        ``ValueError`` when given ``soft``, which it would otherwise silently ignore."""
        if soft is not None:
            raise ValueError(f"{type(self).__name__} has no label-statistics initialisation; use stage2_init='annotations'")

    def _batch_logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass returning the logits and the input of its ``head`` -- the
        penultimate features -- captured with a forward pre-hook, so that backbones whose
        ``forward`` post-processes ``head``'s output (e.g. a logit scale) stay exact. Falls
        back to ``backbone.features(x)`` if the hook did not fire."""
        head = getattr(self.backbone, "head", None)
        captured: list[torch.Tensor] = []
        handle = None
        if isinstance(head, nn.Module):
            handle = head.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
        try:
            logits = self.backbone(x)
        finally:
            if handle is not None:
                handle.remove()
        if captured:
            feats = captured[-1]
        elif hasattr(self.backbone, "features"):
            feats = self.backbone.features(x)
        else:
            raise AttributeError(
                f"{type(self).__name__} needs backbone.features(x) (or a backbone.head "
                "module) to read the penultimate features"
            )
        return logits, feats


# --------------------------------------------------------------------------------------
# CrowdLayer
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# Max-MIG
# --------------------------------------------------------------------------------------
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
    aggregate) and stay in the batch; a batch without any observed annotation has loss 0.

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
            any_obs = _observed(workers, labels).any()
            log_h = F.log_softmax(logits.float(), dim=-1)
            log_p = self.log_prior()
            log_g = F.log_softmax(self._aggregate_scores(workers, labels) + log_p, dim=-1)
            loss = -mig_f(log_h, log_g, log_p, self.f)
            # no observed annotation: an exact, finite 0 still connected to the graph (MIG^f
            # with g == p is 0 up to the probability floor); torch.where avoids a host sync
            loss = torch.where(any_obs, loss, logits.float().sum() * 0.0)
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
        # confusion C[m, k, j] = Σ_{i labelled j by m} soft_i[k]; accumulated as (M*K_j, K_k)
        item = torch.arange(N, device=dev).unsqueeze(1).expand_as(w)[obs]
        flat = w[obs] * K + y[obs]
        conf_t = torch.zeros(M * K, K, device=dev).index_add_(0, flat, soft[item])
        conf = conf_t.view(M, K, K).transpose(1, 2)  # (M, K_true, K_label)
        row = conf.sum(dim=-1, keepdim=True)
        t_init = torch.where(row > 0, conf / row.clamp(min=1e-12), torch.full_like(conf, 1.0 / K))
        self.weight.copy_(torch.log(t_init + self.eps))
        if not self._prior_given and bool(has.any()):
            p = soft[has].mean(dim=0).clamp(min=1e-6)
            self.log_prior_param.copy_(torch.log(p / p.sum()))


# --------------------------------------------------------------------------------------
# CoNAL
# --------------------------------------------------------------------------------------
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
        _check_annotations(workers, labels, logits.shape[0])
        with _no_autocast(logits):
            workers = workers.to(logits.device).long()
            labels = labels.to(logits.device).long()
            obs = _observed(workers, labels)
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
