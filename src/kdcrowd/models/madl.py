"""MaDL (Herde, Huseljic & Sick, "Multi-annotator deep learning: a probabilistic framework
for classification", TMLR 2023; arXiv:2304.02539)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.losses import _no_autocast
from kdcrowd.config import bounded, check_fields
from kdcrowd.models._common import MaskedBatchNorm1d, RunningConfusion, annotation_log_likelihood, eta_prior_bias, feature_dim_of, make_config
from kdcrowd.models.base import CrowdModel, register_crowd_model

__all__ = ["MaDL", "MaDLConfig"]


@dataclass
class MaDLConfig:
    """Options of :class:`MaDL` (defaults: the reference benchmark's,
    ``conf/classifier/madl.yaml`` and ``maml/architectures/_base.py``).

    embed_dim: annotator / sample embedding size (``embed_size`` 16).
    hidden_dim: width of the annotator-performance hidden layer (128).
    eta: prior accuracy of every annotator, the output bias (0.8).
    alpha, beta: Gamma(α, β) prior of the RBF kernel's bandwidth γ (1.25, 0.25).
    annotator_weights: weight each annotator's loss by the inverse of its summed RBF
        similarity to all annotators (Eqs. 21-23); ``False`` drops the kernel and γ.
    use_residual: add the annotator embedding after the hidden layers (``ap_use_residual``).
    instance_dependent: feed the sample embedding to the annotator model (the reference);
        ``False`` zeroes it, so each worker gets one class-dependent confusion matrix
        (a reduced variant for cases where instance dependence is not identifiable).
    confusion_rate: rate of the running per-worker confusion behind
        ``transition_matrices()`` (~1/rate last annotations per worker).
    """

    embed_dim: int = bounded(16, ge=1)
    hidden_dim: int = bounded(128, ge=1)
    eta: float = bounded(0.8, gt=0.0, lt=1.0)
    alpha: float = bounded(1.25, gt=0.0)
    beta: float = bounded(0.25, gt=0.0)
    annotator_weights: bool = True
    use_residual: bool = True
    instance_dependent: bool = True
    confusion_rate: float = bounded(0.02, gt=0.0, le=1.0)

    def __post_init__(self) -> None:
        check_fields(self)


@register_crowd_model("madl", config=MaDLConfig)
class MaDL(CrowdModel):
    """Multi-annotator deep learning (MaDL), full instance-dependent confusion matrices.

    Ground-truth model: the backbone, ``p(k | x)``. Annotator-performance model, for each
    observed (item i, worker m) pair:

    - annotator embedding ``a_m`` (a linear map of the worker's one-hot vector, i.e. a
      row of a table plus a bias, initialised U(±1/√M) like ``nn.Linear(M, E)``);
    - sample embedding ``s_i = Linear(h_i)`` of the backbone's penultimate features (not
      detached: the annotator model also trains the backbone, ``ap_use_gt_embed_x``);
    - outer-product layer ``o = OP(a_m + s_i)``, ``o_p = Σ_{e,f} u_e u_f U[p, e, f]``;
    - ``z = BN(Linear(ReLU(BN(Linear([a_m, s_i, o])))))``, residual ``z = ReLU(z + a_m)``;
    - ``T_{i,m} = row-softmax(reshape(Linear(z), K×K))`` whose output bias is
      ``log(η(K−1)/(1−η))·I`` (prior accuracy η).

    Loss (Eqs. 25-26): ``Σ w_m · (−log Σ_k p(k|x_i) T_{i,m}[k, y_{i,m}]) / #annotations
    − log Gamma(γ; α, β)`` with annotator weights ``w = M · v / Σ v``,
    ``v_m = 1 / Σ_n exp(−γ ||a_m − a_n||²)`` over the detached embeddings of all M
    annotators (γ is learned through the weights and its prior).

    Read from the reference implementation ``maml/classifiers/_madl.py``
    (``MaDLClassifier``, ``OuterProduct``) and ``maml/architectures/_base.py``
    (``_ap_net_params``: ``ap_embed_a = Linear(M, 16)``, ``ap_embed_x = Linear(F, 16)``,
    ``ap_hidden = Linear(48, 128), BN, ReLU, Linear(128, 16), BN``,
    ``ap_outer_product = OuterProduct(16, 16)``, ``ap_output = Linear(16, K²)``) of
    github.com/ies-research/multi-annotator-machine-learning, branch ``annot-mix``;
    ``conf/classifier/madl.yaml``: η 0.8, α 1.25, β 0.25, kernel ``rbf``, ``full``
    confusion matrices, residual on, embed size 16. Benchmark optimiser
    (``conf/data/label_me.yaml``): RAdam lr 1e-2 (classifier weight decay 1e-4, none on
    the annotator model), cosine over 50 epochs, batch 64; CIFAR-10N: lr 1e-3, 100 epochs,
    batch 128. Published LabelMe last-epoch accuracy (frozen DINOv2 + MLP head): 82.5
    (MV 80.5).

    Departures: the batch norms of the annotator model use the statistics of the batch's
    observed pairs only (:class:`~kdcrowd.models._common.MaskedBatchNorm1d`, computed over
    the padded ``(B, L)`` layout without a host synchronisation); a batch without any
    observed annotation has loss exactly 0 (no γ prior term). The kernel sums over all M
    annotators every step (O(M²·E), in row blocks for large M), as in the reference.

    ``transition_matrices()``: the confusion depends on the item; this returns each
    worker's *running average over the training items it annotated*, an exponential average
    of the detached ``T_{i,m}`` over its last ~``1/confusion_rate`` annotations, updated in
    :meth:`crowd_loss` while training (a persistent buffer, starting at the η prior).
    :meth:`posterior` uses these averages; :meth:`item_transitions` gives ``T_{i,m}``.
    """

    def __init__(self, backbone: nn.Module, n_workers: int, n_classes: int, config: MaDLConfig | None = None, feature_dim: int | None = None, **overrides: Any) -> None:
        super().__init__(backbone, n_workers, n_classes)
        self.config = c = make_config(MaDLConfig, config, overrides)
        feature_dim = feature_dim_of(backbone, feature_dim, "MaDL")
        M, K, E, H = self.n_workers, self.n_classes, int(c.embed_dim), int(c.hidden_dim)
        bound = 1.0 / math.sqrt(M)
        self.annot_embed = nn.Parameter(torch.empty(M, E).uniform_(-bound, bound))
        self.annot_bias = nn.Parameter(torch.empty(E).uniform_(-bound, bound))
        self.sample_embed = nn.Linear(int(feature_dim), E)
        self.outer = nn.Parameter(nn.init.xavier_uniform_(torch.empty(E, E, E)))
        self.hidden1 = nn.Linear(3 * E, H)
        self.bn1 = MaskedBatchNorm1d(H)
        self.hidden2 = nn.Linear(H, E)
        self.bn2 = MaskedBatchNorm1d(E)
        self.out = nn.Linear(E, K * K)
        with torch.no_grad():
            self.out.bias.copy_(eta_prior_bias(K, c.eta))
        self.gamma = nn.Parameter(torch.tensor(max(0.0, (c.alpha - 1.0) / c.beta))) if c.annotator_weights else None
        self.confusion = RunningConfusion(M, torch.softmax(eta_prior_bias(K, c.eta).view(K, K), -1), c.confusion_rate)

    def extra_repr(self) -> str:
        return f"n_workers={self.n_workers}, n_classes={self.n_classes}, config={self.config}"

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        return self.confusion.log_transitions(idx)

    def annotator_embeddings(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        w = self.annot_embed if idx is None else self.annot_embed[idx]
        return w.float() + self.annot_bias.float()

    def _log_confusions(self, features: torch.Tensor, workers: torch.Tensor, obs: torch.Tensor, update: bool = True) -> torch.Tensor:
        """``(B, L, K, K)`` log ``T_{i,m}`` for features ``(B, F)`` and workers ``(B, L)``;
        ``update=False`` leaves the batch norms' running statistics as they are (a read)."""
        B, L = workers.shape
        K = self.n_classes
        a = self.annotator_embeddings(workers.clamp(min=0))  # (B, L, E)
        s = self.sample_embed(features.float()).unsqueeze(1).expand_as(a)
        if not self.config.instance_dependent:
            s = torch.zeros_like(a)
        u = a + s
        op = torch.einsum("ble,blf,pef->blp", u, u, self.outer.float())
        h = torch.relu(self.bn1(self.hidden1(torch.cat([a, s, op], dim=-1)), obs, update=update))
        z = self.bn2(self.hidden2(h), obs, update=update)
        if self.config.use_residual:
            z = torch.relu(z + a)
        return F.log_softmax(self.out(z).view(B, L, K, K), dim=-1)

    def annotator_weights(self) -> torch.Tensor:
        """``(M,)`` weights ``M · v / Σ v``, ``v_m = 1 / Σ_n exp(−γ ||a_m − a_n||²)``."""
        emb = self.annotator_embeddings().detach()
        g = self.gamma.float().clamp(min=1e-5)
        M = emb.shape[0]
        block = max(1, (1 << 22) // max(M, 1))
        sums = torch.cat([torch.exp(-g * torch.cdist(emb[i : i + block], emb) ** 2).sum(-1) for i in range(0, M, block)])
        v = 1.0 / sums
        return v / v.sum() * M

    def gamma_log_prior(self) -> torch.Tensor:
        a, b = float(self.config.alpha), float(self.config.beta)
        g = self.gamma.float().clamp(min=1e-3)
        return a * math.log(b) - math.lgamma(a) + (a - 1.0) * torch.log(g) - b * g

    @torch.no_grad()
    def item_transitions(self, x: torch.Tensor, workers: torch.Tensor) -> torch.Tensor:
        """``(B, L, K, K)`` instance-dependent ``T_{i,m}`` of workers ``(B, L)`` on items ``x``."""
        logits, feats = self._batch_logits_and_features(x)
        workers = workers.to(logits.device).long()
        with _no_autocast(logits):
            return self._log_confusions(feats, workers, workers >= 0, update=False).exp()

    def crowd_loss(self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self._batch_logits_and_features(x)
        workers, labels, obs = self._annotations_on(logits, workers, labels)
        with _no_autocast(logits):
            log_t = self._log_confusions(feats, workers, obs)
            log_p = F.log_softmax(logits.float(), dim=-1)
            if self.training:
                self.confusion.update(workers, log_t.detach().exp(), log_p.detach().exp().unsqueeze(1) * obs.unsqueeze(-1))
            nll = -annotation_log_likelihood(log_p, log_t, labels)  # (B, L)
            if self.gamma is not None:
                nll = nll * self.annotator_weights()[workers.clamp(min=0)]
            nll = torch.where(obs, nll, torch.zeros_like(nll))
            loss = nll.sum() / obs.sum().clamp(min=1).float()
            if self.gamma is not None:
                prior = self.gamma_log_prior()
                loss = loss - torch.where(obs.any(), prior, torch.zeros_like(prior))
        return loss, logits
