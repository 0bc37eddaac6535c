"""Pieces shared by the crowd models in their own modules (TraceReg, GeoCrowdNet, UnionNet,
MaDL, CrowdAR, annot-mix): the marginal annotation likelihood over padded ``(B, L)``
annotations, a batch normalisation over the observed entries only, and the running
per-worker confusion of models whose confusion depends on the item.

Everything is vectorised over the padded annotations and computed in float32.
"""

from __future__ import annotations

import hashlib

from dataclasses import fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.losses import _no_autocast
from kdcrowd.models.base import _gather_columns, _observed

__all__ = [
    "annotation_log_likelihood",
    "masked_mean",
    "MaskedBatchNorm1d",
    "RunningConfusion",
    "make_config",
    "observed_pairs",
    "to_device",
    "eta_prior_bias",
    "mix_inputs",
]


def make_config(cls: type, config: Any, overrides: dict[str, Any]) -> Any:
    """``config`` (an instance of dataclass ``cls`` or ``None`` for its defaults) with the
    keyword ``overrides`` applied; unknown names raise ``ValueError`` listing the valid ones."""
    cfg = cls() if config is None else config
    if not isinstance(cfg, cls):
        raise TypeError(f"config must be a {cls.__name__}; got {type(cfg).__name__}")
    names = {f.name for f in fields(cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(f"unknown {cls.__name__} option(s) {bad}; choose from {sorted(names)}")
    if overrides:
        cfg = type(cfg)(**{**{n: getattr(cfg, n) for n in names}, **overrides})
    return cfg


def annotation_log_likelihood(log_p: torch.Tensor, log_t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, L)``: ``log Σ_k p(k|x_b) T_{b,l}[k, y_{b,l}]`` for true-label log probabilities
    ``log_p (B, K)``, log transition matrices ``log_t (B, L, K, K)`` (rows = true class) and
    labels ``(B, L)`` (negative entries give meaningless values; mask them)."""
    cols = _gather_columns(log_t, labels)  # (B, L, K)
    return torch.logsumexp(log_p.unsqueeze(1) + cols, dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask``; an exact ``0`` still connected to the graph when
    nothing is masked in (no host synchronisation)."""
    v = torch.where(mask, values, torch.zeros_like(values))
    return v.sum() / mask.sum().clamp(min=1).to(v.dtype)


class MaskedBatchNorm1d(nn.Module):
    """Batch normalisation over the last dimension of ``x (..., C)`` whose statistics use only
    the entries where ``mask (...)`` is true (the observed (item, annotator) pairs of a padded
    batch), with running statistics like :class:`torch.nn.BatchNorm1d` (momentum 0.1,
    unbiased running variance, biased variance to normalise). A batch with one observed
    entry normalises to the bias and updates only the running mean; with none, the running
    statistics are left unchanged."""

    #: Its shift is a batch-norm shift (:class:`~kdcrowd.training.TrainConfig`'s ``bias_lr_scale``);
    #: named on the class, which a deep copy keeps (a parameter's own attributes it drops).
    norm_bias_names = ("bias",)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, update: bool = True) -> torch.Tensor:
        x = x.float()
        if mask is None:
            mask = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        if self.training:
            m = mask.unsqueeze(-1).float()
            n = m.sum(dim=tuple(range(x.dim() - 1)))  # (C,) all equal
            mean = (x * m).sum(dim=tuple(range(x.dim() - 1))) / n.clamp(min=1)
            var = (((x - mean) ** 2) * m).sum(dim=tuple(range(x.dim() - 1))) / n.clamp(min=1)
            if update:
                with torch.no_grad():
                    has = n > 0
                    unbiased = var * n / (n - 1).clamp(min=1)
                    new_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
                    new_var = (1 - self.momentum) * self.running_var + self.momentum * unbiased
                    self.running_mean.copy_(torch.where(has, new_mean, self.running_mean))
                    # one entry has no variance to estimate (torch's BatchNorm refuses it; 0 here
                    # had pulled the running variance toward 0, and evaluation's outputs up)
                    self.running_var.copy_(torch.where(n > 1, new_var, self.running_var))
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class RunningConfusion(nn.Module):
    """Per-worker running class-conditional average ``(M, K, K)`` of item-dependent
    confusion matrices.

    For models whose confusion depends on the item (MaDL, annot-mix), each training step
    passes the detached matrices ``T_{i,m}`` of its observed (item, worker) pairs and the
    class probabilities ``p(k | x_i)``. Row k of worker m's average estimates
    ``P(y^m = · | y = k) = E[T_{i,m}[k, ·] | y_i = k]``: it moves towards the batch's
    ``Σ_i p(k|x_i) T_{i,m}[k, ·] / Σ_i p(k|x_i)`` with weight ``1 − (1 − rate)^{c_{m,k}}``,
    ``c_{m,k} = Σ_i p(k|x_i)`` over the worker's pairs in the batch -- an exponential average
    over its last ~``1/rate`` annotated training items of class k. (Row k of ``T_{i,m}`` for
    an item that is clearly not of class k gets no training signal, hence the weighting.)
    A persistent buffer: saved with the model."""

    def __init__(self, n_workers: int, init: torch.Tensor, rate: float) -> None:
        super().__init__()
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"the running-confusion rate must be in (0, 1]; got {rate}")
        self.rate = float(rate)
        self.register_buffer("average", init.float().expand(n_workers, *init.shape[-2:]).clone())

    @torch.no_grad()
    def update(self, workers: torch.Tensor, probs: torch.Tensor, class_weights: torch.Tensor) -> None:
        """``workers (...)`` worker indices, ``probs (..., K, K)`` their matrices,
        ``class_weights (..., K)`` each pair's ``p(k | x_i)``, zero for entries to ignore
        (padding); no host synchronisation."""
        M, K = self.average.shape[0], self.average.shape[-1]
        w = workers.reshape(-1).clamp(min=0)
        cw = class_weights.float().reshape(-1, K)
        p = probs.float().reshape(-1, K, K) * cw.unsqueeze(-1)
        sums = torch.zeros(M, K * K, device=p.device).index_add_(0, w, p.flatten(1))
        counts = torch.zeros(M, K, device=p.device).index_add_(0, w, cw)
        mean = sums.view(M, K, K) / counts.clamp(min=1e-12).unsqueeze(-1)
        rate = (1.0 - (1.0 - self.rate) ** counts).unsqueeze(-1)  # 0 where a row saw nothing
        self.average.add_(rate * (mean - self.average))

    def log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        t = self.average[idx].float().clamp(min=1e-12)
        return torch.log(t / t.sum(-1, keepdim=True))


def observed_pairs(workers: torch.Tensor, labels: torch.Tensor, all_observed: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(item, worker, label)`` long tensors ``(P,)`` of the observed entries of a padded
    batch, item-major (one host synchronisation: P is data dependent).

    ``all_observed``: the caller's guarantee that every entry is observed (annotations
    without padding, e.g. CIFAR-10N's); the pairs are then every entry in row-major order,
    the same tensors, without the synchronisation."""
    if all_observed:
        B, L = workers.shape
        item = torch.arange(B, device=workers.device).repeat_interleave(L)
        return item, workers.reshape(-1), labels.reshape(-1)
    obs = _observed(workers, labels)
    item, col = obs.nonzero(as_tuple=True)
    return item, workers[item, col], labels[item, col]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t.to(device)`` of a host tensor; to a CUDA device through pinned memory without
    waiting for the device (a pageable copy synchronises the host with the stream). The
    same values either way."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def mix_inputs(x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Mixup of the rows: ``lam·x + (1 − lam)·partner`` with one ``lam`` per row (a float
    vector). Float items mix in their dtype; uint8 pixels (a pretrained backbone takes them)
    mix in float and are rounded back, since ``lam`` cast to uint8 is 0 (the partner alone)."""
    if x.is_floating_point():
        lx = lam.to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        return lx * x + (1 - lx) * partner
    lx = lam.float().view(-1, *[1] * (x.dim() - 1))
    return (lx * x.float() + (1 - lx) * partner.float()).round().to(x.dtype)


def eta_prior_bias(n_classes: int, eta: float) -> torch.Tensor:
    """``(K*K,)`` output bias ``log(η(K−1)/(1−η)) · I`` flattened, whose row-softmax has
    diagonal ``η`` (MaDL's and annot-mix's prior on the annotators' accuracy)."""
    if not 0.0 < eta < 1.0:
        raise ValueError(f"eta must be in (0, 1); got {eta}")
    K = n_classes
    return (torch.log(torch.tensor(eta * (K - 1) / (1 - eta))) * torch.eye(K)).flatten()


def feature_dim_of(backbone: nn.Module, feature_dim: int | None, model: str) -> int:
    """``feature_dim`` if given, else ``backbone.feature_dim``: the width of the penultimate
    features a model with an annotator network reads (MaDL, annot-mix)."""
    if feature_dim is None:
        feature_dim = getattr(backbone, "feature_dim", None)
    if feature_dim is None:
        raise ValueError(f"{model} needs backbone.feature_dim (or pass feature_dim=)")
    return int(feature_dim)


def marginal_nll_loss(model: Any, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor, regulariser: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``crowd_loss`` of the models trained by the coupled cross-entropy (TraceReg,
    GeoCrowdNet): the negative log marginal likelihood ``-log Σ_k p(k|x) T_m[k, y]``
    averaged over the observed annotations, plus ``regulariser(log_p)`` (a weighted scalar,
    or ``None``) on batches with at least one observed annotation. Returns (loss, logits)."""
    logits = model.backbone(x)
    workers, labels, obs = model._annotations_on(logits, workers, labels)
    with _no_autocast(logits):
        log_p = F.log_softmax(logits.float(), dim=-1)
        ll = annotation_log_likelihood(log_p, model._worker_log_transitions(workers.clamp(min=0)), labels)
        loss = -masked_mean(ll, obs)
        reg = None if regulariser is None else regulariser(log_p)
        if reg is not None:
            loss = loss + torch.where(obs.any(), reg, torch.zeros_like(reg))
    return loss, logits


def module_digest(module: nn.Module) -> str:
    """A digest of ``module``'s state (names, dtypes, shapes and values): what identifies a
    trained module (checkpoints, a pre-trained teacher, a pretrained network's cached features)."""
    h = hashlib.blake2b(digest_size=16)
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}{v.dtype}{tuple(v.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
