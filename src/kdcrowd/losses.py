"""Loss functions for learning from crowds and for KD-Crowd distillation.

Everything here is pure ``torch`` and works on any device. Under mixed-precision autocast
(e.g. bf16 on CUDA) every loss disables autocast locally and computes in float32; float64
inputs stay float64 (useful for ``torch.autograd.gradcheck``).

Contents
--------
- :func:`masked_cross_entropy` -- cross-entropy over the *observed* crowd annotations of a
  batch (``-1`` = missing), the loss of CrowdLayer-style models.
- :func:`mig_f` and :class:`MIGfDistillation` -- the f-mutual-information-gain estimator of
  Max-MIG (Cao, Xu, Kong & Wang, "Max-MIG: an information theoretic approach for joint
  learning from crowds", ICLR 2019), used by KD-Crowd as a distillation loss
  (Li, Zheng, Shi, Huang & Chen, "KD-Crowd: a knowledge distillation framework for learning
  from crowds", Frontiers of Computer Science 19(1), 2025).
- :class:`KLDistillation` -- ordinary KL knowledge distillation (Hinton, Vinyals & Dean,
  "Distilling the knowledge in a neural network", NIPS Deep Learning Workshop 2015).
- Noise-model-free robust losses for the KD-Crowd student: :func:`gce_loss`,
  :func:`sce_loss`, :class:`ELRLoss`, :func:`coteaching_select` and
  :func:`forget_rate_schedule`.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "F_DIVERGENCES",
    "DEFAULT_TV_TEMPERATURE",
    "DEFAULT_PROB_EPS",
    "masked_cross_entropy",
    "masked_crowd_ce",
    "mig_f",
    "MIGfDistillation",
    "KLDistillation",
    "gce_loss",
    "sce_loss",
    "ELRLoss",
    "coteaching_select",
    "forget_rate_schedule",
]

#: The f-divergences available to :func:`mig_f` (Max-MIG, Cao et al. ICLR 2019, Table 1).
F_DIVERGENCES: tuple[str, ...] = ("kl", "pearson", "js", "tv", "rkl", "hellinger")

#: Temperature of the smooth total-variation surrogate ``tanh((R - 1) / T)`` that replaces
#: ``sign(R - 1)`` (whose gradient is zero almost everywhere). Small enough that the value is
#: within 0.01 of ``sign`` once ``|R - 1| > 0.27``; large enough to give usable gradients.
DEFAULT_TV_TEMPERATURE: float = 0.1

#: Probability floor of :func:`mig_f`: every probability ``p`` enters as ``p + eps``,
#: computed as ``logaddexp(log p, log eps)``, so ``log 0 = -inf`` inputs (one-hot
#: predictions) are finite and keep a non-zero gradient.
DEFAULT_PROB_EPS: float = 1e-12


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _no_autocast(t: torch.Tensor):
    """Context manager that disables autocast for the device type of ``t``."""
    try:
        return torch.autocast(device_type=t.device.type, enabled=False)
    except (RuntimeError, ValueError):  # pragma: no cover - exotic device types
        return contextlib.nullcontext()


def _as_float(t: torch.Tensor) -> torch.Tensor:
    """float64 stays float64, everything else (bf16, fp16, ints) becomes float32."""
    return t if t.dtype == torch.float64 else t.float()


def _check_logits_labels(logits: torch.Tensor, y: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, K); got {tuple(logits.shape)}")
    if y.dim() != 1 or y.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape (B,) matching logits (B, K); got {tuple(y.shape)} "
            f"for logits {tuple(logits.shape)}"
        )


# --------------------------------------------------------------------------------------
# masked crowd cross-entropy
# --------------------------------------------------------------------------------------
def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy over the observed annotations only.

    Parameters
    ----------
    logits:
        ``(..., K)`` logits; for crowd models typically the per-worker logits ``(B, L, K)``
        aligned with the padded annotation rows of :meth:`Annotations.padded`.
    labels:
        ``logits.shape[:-1]`` long tensor of annotated classes, ``-1`` (any negative
        value) = missing; missing entries contribute nothing.
    reduction:
        ``"mean"`` (default): the sum of the cross-entropies of the observed annotations
        divided by the number of observed annotations in the batch (an average *per
        annotation*, not per item). If nothing is observed the result is an exact ``0``
        that is still connected to the graph (``backward`` works and gives zero
        gradients) -- never NaN.
        ``"sum"``: the plain sum over observed annotations.
        ``"none"``: a tensor shaped like ``labels`` with ``0`` at missing entries.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} must equal logits.shape[:-1] "
            f"{tuple(logits.shape[:-1])}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
    with _no_autocast(logits):
        log_p = F.log_softmax(_as_float(logits), dim=-1)
        labels = labels.long()
        observed = labels >= 0
        safe = labels.clamp(min=0)
        nll = -log_p.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        nll = torch.where(observed, nll, torch.zeros_like(nll))
        if reduction == "none":
            return nll
        total = nll.sum()
        if reduction == "sum":
            return total
        return total / observed.sum().clamp(min=1).to(total.dtype)


#: Alias of :func:`masked_cross_entropy`.
masked_crowd_ce = masked_cross_entropy


# --------------------------------------------------------------------------------------
# MIG^f
# --------------------------------------------------------------------------------------
def _mig_terms(
    log_r: torch.Tensor, f: str, tv_temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (f'(R), f*(f'(R))) elementwise as functions of ``log R``."""
    u = log_r
    if f == "kl":
        return 1.0 + u, torch.exp(u)
    if f == "pearson":
        return 2.0 * torch.expm1(u), torch.expm1(2.0 * u)
    if f == "js":
        # f'(R) = log(2R/(1+R)) = log 2 - softplus(-log R)
        # f*(f'(R)) = -log(2/(1+R)) = softplus(log R) - log 2
        return math.log(2.0) - F.softplus(-u), F.softplus(u) - math.log(2.0)
    if f == "tv":
        s = torch.tanh(torch.expm1(u) / tv_temperature)  # smooth sign(R - 1)
        return s, s
    if f == "rkl":
        return -torch.exp(-u), u - 1.0
    if f == "hellinger":
        return -torch.expm1(-0.5 * u), torch.expm1(0.5 * u)
    raise ValueError(f"unknown f-divergence {f!r}; choose one of {F_DIVERGENCES}")


def _log_matmul_exp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log(exp(x) @ exp(y).T)`` for ``(B, K)`` inputs, as one (B, B) matrix product.

    Each row is shifted by its maximum before exponentiating (the log-sum-exp trick applied
    to a product), so nothing overflows and the (B, B, K) tensor of a direct
    ``logsumexp`` over ``x_i + y_j`` is never built: memory O(B² + BK) instead of O(B²K).
    """
    mx = x.amax(dim=1, keepdim=True)
    my = y.amax(dim=1, keepdim=True)
    return torch.log((x - mx).exp() @ (y - my).exp().T) + mx + my.T


def mig_f(
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    log_prior: torch.Tensor | None = None,
    f: str = "kl",
    *,
    tv_temperature: float = DEFAULT_TV_TEMPERATURE,
    eps: float = DEFAULT_PROB_EPS,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""f-mutual information gain between two predictors on the same batch of items.

    From Max-MIG (Cao, Xu, Kong & Wang, ICLR 2019); KD-Crowd (Li et al., Frontiers of
    Computer Science 2025) uses it as a distillation loss. For items ``i, j`` of the batch
    with probability vectors ``a_i, b_j`` and class prior ``p``::

        R_ij  = sum_c a_i[c] b_j[c] / p[c]
        MIG^f = 1/B sum_i f'(R_ii) - 1/(B(B-1)) sum_{i != j} f*(f'(R_ij))

    Same-item pairs sample the joint distribution, cross-item pairs the product of the
    marginals. ``log R_ij`` is computed as a stabilised log-matrix-product of
    ``log a_i[c] - log p[c]`` and ``log b_j[c]`` and every term is written in ``log R``:

    - ``kl``:        f'(R) = 1 + log R;                      f*(f'(R)) = R
    - ``pearson``:   f'(R) = 2 (R - 1);                      f*(f'(R)) = R^2 - 1
    - ``js``:        f'(R) = log(2R/(1+R)) = log 2 - softplus(-log R);
                     f*(f'(R)) = -log(2/(1+R)) = softplus(log R) - log 2
    - ``tv``:        f'(R) = f*(f'(R)) = sign(R - 1), replaced by tanh((R - 1)/T)
    - ``rkl``:       f'(R) = -1/R = -exp(-log R);            f*(f'(R)) = -1 + log R
    - ``hellinger``: f'(R) = 1 - 1/sqrt(R) = 1 - exp(-log R / 2);
                     f*(f'(R)) = sqrt(R) - 1

    Total variation: the exact terms are ``sign(R - 1)``, whose gradient is zero almost
    everywhere; this function uses the smooth surrogate ``tanh((R - 1) / T)`` with
    ``T = tv_temperature`` (default :data:`DEFAULT_TV_TEMPERATURE` = 0.1), which tends to
    ``sign`` as ``T -> 0``.

    Parameters
    ----------
    log_a, log_b:
        ``(B, K)`` log-probabilities of the two predictors (e.g. ``log_softmax`` of a
        student's logits and ``log`` of a teacher's probabilities). ``-inf`` entries
        (probability 0) are allowed: every probability is floored softly as ``p + eps``
        (``logaddexp(log p, log eps)``), so one-hot predictions give finite values and
        gradients. Only their order matters for the symmetric f's; ``a`` is the row index.
    log_prior:
        ``(K,)`` log class prior; ``None`` means uniform (``log p = -log K``). Floored
        the same way.
    f:
        one of :data:`F_DIVERGENCES`.
    tv_temperature:
        temperature of the total-variation surrogate (only used for ``f="tv"``).
    eps:
        probability floor (default :data:`DEFAULT_PROB_EPS` = 1e-12).
    mask:
        optional ``(B,)`` booleans: only these items enter the estimate (the joint term
        averages over them, the product-of-marginals term over their distinct pairs), so
        the others get no gradient; with fewer than two the estimate is 0. The batch keeps
        its shape (no host sync, CUDA graphs stay possible).

    Returns
    -------
    A scalar tensor, the MIG^f estimate (float32, or float64 for float64 inputs). Callers
    maximise it, i.e. minimise ``-mig_f(...)``.

    Raises
    ------
    ValueError
        if ``B < 2`` (the product-of-marginals term needs two distinct items), on shape
        mismatches, or for an unknown ``f``.
    """
    if f not in F_DIVERGENCES:
        raise ValueError(f"unknown f-divergence {f!r}; choose one of {F_DIVERGENCES}")
    if log_a.dim() != 2 or log_b.dim() != 2 or log_a.shape != log_b.shape:
        raise ValueError(
            "log_a and log_b must both have shape (B, K); got "
            f"{tuple(log_a.shape)} and {tuple(log_b.shape)}"
        )
    B, K = log_a.shape
    if B < 2:
        raise ValueError(
            f"MIG^f needs a batch of at least 2 items (the off-diagonal term averages over "
            f"pairs of distinct items); got B={B}. Drop or merge batches of size 1."
        )
    if tv_temperature <= 0:
        raise ValueError(f"tv_temperature must be > 0; got {tv_temperature}")
    with _no_autocast(log_a):
        dtype = torch.float64 if torch.float64 in (log_a.dtype, log_b.dtype) else torch.float32
        la = _as_float(log_a).to(dtype)
        lb = _as_float(log_b).to(dtype)
        log_eps = math.log(eps)
        if log_prior is None:
            lp = torch.full((K,), -math.log(K), dtype=dtype, device=la.device)
        else:
            lp = _as_float(torch.as_tensor(log_prior, device=la.device)).to(dtype)
            if lp.shape != (K,):
                raise ValueError(f"log_prior must have shape ({K},); got {tuple(lp.shape)}")
        # a device-side fill, not torch.tensor (a host-to-device copy, synchronising on CUDA)
        floor = torch.full((), log_eps, dtype=dtype, device=la.device)
        if log_prior is not None:
            lp = torch.logaddexp(lp, floor)
        la = torch.logaddexp(la, floor)
        lb = torch.logaddexp(lb, floor)
        log_r = _log_matmul_exp(la - lp, lb)
        diag_term, off_term = _mig_terms(log_r, f, tv_temperature)
        eye = torch.eye(B, dtype=torch.bool, device=la.device)
        if mask is None:
            joint = torch.diagonal(diag_term).mean()
            marginal = off_term.masked_fill(eye, 0.0).sum() / (B * (B - 1))
            return joint - marginal
        if mask.shape != (B,):
            raise ValueError(f"mask must have shape ({B},); got {tuple(mask.shape)}")
        m = mask.to(device=la.device, dtype=torch.bool)
        n = m.sum().to(dtype)
        pairs = (m.unsqueeze(0) & m.unsqueeze(1)) & ~eye
        # the excluded items' terms replaced by exact zeros (their values, finite by the floor,
        # are not used), summed in the unmasked path's layout: an all-true mask gives its bits
        joint = torch.diagonal(diag_term.masked_fill(~(eye & m.unsqueeze(0)), 0.0)).sum() / n.clamp(min=1)
        marginal = off_term.masked_fill(~pairs, 0.0).sum() / (n * (n - 1)).clamp(min=1)
        return torch.where(n >= 2, joint - marginal, 0.0)


class MIGfDistillation(nn.Module):
    """KD-Crowd's MIG^f distillation loss ``-MIG^f(student, teacher)``.

    See :func:`mig_f` (Max-MIG: Cao, Xu, Kong & Wang, ICLR 2019; KD-Crowd: Li, Zheng, Shi,
    Huang & Chen, Frontiers of Computer Science 2025). The teacher is a fixed target: its
    probabilities are detached.

    Parameters
    ----------
    f:
        f-divergence, one of :data:`F_DIVERGENCES` (default ``"kl"``).
    prior:
        ``"uniform"`` (default), ``"teacher"`` (the batch mean of the teacher's
        probabilities, detached), or a fixed length-K probability vector.
    tv_temperature:
        temperature of the total-variation surrogate, see :func:`mig_f`.
    eps:
        probability floor, see :func:`mig_f`.
    """

    def __init__(
        self,
        f: str = "kl",
        prior: str | Sequence[float] | torch.Tensor = "uniform",
        tv_temperature: float = DEFAULT_TV_TEMPERATURE,
        eps: float = DEFAULT_PROB_EPS,
    ) -> None:
        super().__init__()
        if f not in F_DIVERGENCES:
            raise ValueError(f"unknown f-divergence {f!r}; choose one of {F_DIVERGENCES}")
        self.f = f
        self.tv_temperature = float(tv_temperature)
        self.eps = float(eps)
        if isinstance(prior, str):
            if prior not in ("uniform", "teacher"):
                raise ValueError(
                    f"prior must be 'uniform', 'teacher' or a probability vector; got {prior!r}"
                )
            self.prior_mode = prior
            self.register_buffer("prior_probs", None)
        else:
            p = torch.as_tensor(prior, dtype=torch.float32).flatten()
            if (p < 0).any() or p.sum() <= 0:
                raise ValueError("a fixed prior must be non-negative with a positive sum")
            self.prior_mode = "fixed"
            self.register_buffer("prior_probs", p / p.sum())

    def extra_repr(self) -> str:
        return f"f={self.f!r}, prior={self.prior_mode!r}"

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """``student_logits`` (B, K), ``teacher_probs`` (B, K) -> scalar loss ``-MIG^f``."""
        with _no_autocast(student_logits):
            s = _as_float(student_logits)
            t = _as_float(teacher_probs.detach()).to(s.dtype)
            log_s = F.log_softmax(s, dim=-1)
            log_t = torch.log(t.clamp(min=0.0))
            if self.prior_mode == "teacher":
                log_prior = torch.log(t.mean(dim=0))
            elif self.prior_mode == "fixed":
                log_prior = torch.log(self.prior_probs.to(device=s.device, dtype=s.dtype))
            else:
                log_prior = None
            return -mig_f(
                log_s, log_t, log_prior, self.f, tv_temperature=self.tv_temperature, eps=self.eps
            )


# --------------------------------------------------------------------------------------
# KL distillation
# --------------------------------------------------------------------------------------
class KLDistillation(nn.Module):
    """Ordinary knowledge distillation, ``KL(teacher || student)``.

    Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network", NIPS Deep
    Learning Workshop 2015. With temperature ``tau``::

        t = normalise(teacher ** (1/tau)),  s = softmax(logits / tau)
        loss = tau^2 * mean_i sum_c t_i[c] log(t_i[c] / s_i[c])

    with ``0 log 0 = 0`` (``xlogy``). The ``tau^2`` factor keeps gradient magnitudes
    comparable across temperatures. The teacher is a fixed target (detached).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        if student_logits.shape != teacher_probs.shape or student_logits.dim() != 2:
            raise ValueError(
                "student_logits and teacher_probs must both have shape (B, K); got "
                f"{tuple(student_logits.shape)} and {tuple(teacher_probs.shape)}"
            )
        tau = self.temperature
        with _no_autocast(student_logits):
            s = _as_float(student_logits)
            t = _as_float(teacher_probs.detach()).to(s.dtype).clamp(min=0.0)
            if tau != 1.0:
                t = torch.softmax(torch.log(t) / tau, dim=-1)  # t^(1/tau), renormalised
            else:
                t = t / t.sum(dim=-1, keepdim=True)
            log_s = F.log_softmax(s / tau, dim=-1)
            cross = torch.where(t > 0, t * log_s, torch.zeros_like(log_s))
            kl = (torch.xlogy(t, t) - cross).sum(dim=-1)
            return kl.mean() * (tau * tau)


# --------------------------------------------------------------------------------------
# robust losses for noise-model-free students
# --------------------------------------------------------------------------------------
def gce_loss(logits: torch.Tensor, y: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Generalized cross-entropy ``mean_i (1 - p_{i,y_i}^q) / q``.

    Zhang & Sabuncu, "Generalized cross entropy loss for training deep neural networks with
    noisy labels", NeurIPS 2018. ``q -> 0`` recovers cross-entropy, ``q = 1`` is the MAE-like
    ``1 - p_y``. ``p^q`` is computed as ``exp(q log p)``.
    """
    _check_logits_labels(logits, y)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1]; got {q}")
    with _no_autocast(logits):
        log_p = F.log_softmax(_as_float(logits), dim=-1)
        log_py = log_p.gather(1, y.long().unsqueeze(1)).squeeze(1)
        return (-torch.expm1(q * log_py) / q).mean()


def sce_loss(
    logits: torch.Tensor, y: torch.Tensor, alpha: float = 0.1, beta: float = 1.0, A: float = -4.0
) -> torch.Tensor:
    """Symmetric cross-entropy ``alpha * CE + beta * RCE`` (batch means).

    Wang, Ma, Chen, Luo, Yi & Bailey, "Symmetric cross entropy for robust learning with
    noisy labels", ICCV 2019. The reverse cross-entropy is ``RCE = -sum_k p_k log q_k`` with
    ``q`` the one-hot label and ``log 0`` replaced by ``A`` (default -4), so
    ``RCE = -A (1 - p_y)``.
    """
    _check_logits_labels(logits, y)
    with _no_autocast(logits):
        log_p = F.log_softmax(_as_float(logits), dim=-1)
        log_py = log_p.gather(1, y.long().unsqueeze(1)).squeeze(1)
        ce = -log_py
        rce = -A * (-torch.expm1(log_py))  # -A * (1 - p_y)
        return alpha * ce.mean() + beta * rce.mean()


def nonnegative(v: Any) -> bool:
    """Whether ``v`` is a finite number >= 0 (not a bool): a loss weight."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and bool(v >= 0)  # (numpy's numbers are Real, its bool_ is not)


class ELRLoss(nn.Module):
    """Early-learning regularization, ``CE + lam * mean_i log(1 - <t_i, p_i>)``.

    Liu, Niles-Weed, Razavian & Fernandez-Granda, "Early-learning regularization prevents
    memorization of noisy labels", NeurIPS 2020. ``targets`` (n_items, K) is a buffer of
    temporal-ensemble targets, updated in training mode at each forward call as
    ``t_i <- beta t_i + (1 - beta) p_i / sum(p_i)`` with ``p = clamp(softmax(logits),
    1e-4, 1 - 1e-4)`` detached; the regulariser uses the same clamped ``p``. In eval mode the
    targets are not updated (the loss is then a deterministic function of the logits).
    """

    targets: torch.Tensor

    def __init__(self, n_items: int, n_classes: int, beta: float = 0.7, lam: float = 3.0) -> None:
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1); got {beta}")
        if not nonnegative(lam):  # a negative weight rewards memorising the noisy labels
            raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")
        self.n_items = int(n_items)
        self.n_classes = int(n_classes)
        self.beta = float(beta)
        self.lam = float(lam)
        self.register_buffer("targets", torch.zeros(self.n_items, self.n_classes))

    def extra_repr(self) -> str:
        return (
            f"n_items={self.n_items}, n_classes={self.n_classes}, beta={self.beta}, "
            f"lam={self.lam}"
        )

    def forward(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        _check_logits_labels(logits, y)
        if logits.shape[1] != self.n_classes:
            raise ValueError(f"expected {self.n_classes} classes; got {logits.shape[1]}")
        with _no_autocast(logits):
            z = _as_float(logits)
            idx = idx.long().to(self.targets.device)
            p = torch.softmax(z, dim=-1).clamp(1e-4, 1.0 - 1e-4)
            if self.training:
                with torch.no_grad():
                    pd = p.detach().to(self.targets.dtype)
                    self.targets[idx] = self.beta * self.targets[idx] + (1.0 - self.beta) * (
                        pd / pd.sum(dim=1, keepdim=True)
                    )
            t = self.targets[idx].to(device=z.device, dtype=z.dtype)
            ce = F.cross_entropy(z, y.long())
            elr = torch.log1p(-(t * p).sum(dim=1)).mean()
            return ce + self.lam * elr


def coteaching_select(
    loss_a: torch.Tensor, loss_b: torch.Tensor, forget_rate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Co-teaching's cross sample selection.

    Han, Yao, Yu, Niu, Xu, Hu, Tsang & Sugiyama, "Co-teaching: robust training of deep neural
    networks with extremely noisy labels", NeurIPS 2018. Each network keeps the
    ``floor((1 - forget_rate) * B)`` items (at least 1) with the smallest loss *under its
    peer*: network A trains on B's small-loss items and vice versa.

    Parameters
    ----------
    loss_a, loss_b:
        ``(B,)`` per-item losses of networks A and B (their values are only compared).
    forget_rate:
        fraction ``R`` in ``[0, 1]`` of items to drop.

    Returns
    -------
    ``(idx_for_a, idx_for_b)``: long tensors of batch positions, each sorted by the peer's
    loss (smallest first).
    """
    la = torch.as_tensor(loss_a).detach().flatten()
    lb = torch.as_tensor(loss_b).detach().flatten()
    if la.shape != lb.shape:
        raise ValueError(f"loss_a and loss_b must have the same length; got {la.shape}, {lb.shape}")
    if not 0.0 <= forget_rate <= 1.0:
        raise ValueError(f"forget_rate must be in [0, 1]; got {forget_rate}")
    n = la.numel()
    if n == 0:
        empty = torch.empty(0, dtype=torch.long, device=la.device)
        return empty, empty.clone()
    n_keep = max(1, int(math.floor((1.0 - forget_rate) * n + 1e-9)))
    small_a = torch.argsort(la.float(), stable=True)[:n_keep]
    small_b = torch.argsort(lb.float(), stable=True)[:n_keep]
    return small_b, small_a


def forget_rate_schedule(epoch: int, tau: float, t_k: int) -> float:
    """Co-teaching forget rate ``R(t) = min(tau * t / T_k, tau)`` (Han et al., NeurIPS 2018).

    ``epoch`` is ``t`` as passed (0 at the start of training gives ``R = 0``); ``t_k <= 0``
    means no warm-up (``R = tau`` throughout).
    """
    if t_k <= 0:
        return float(tau)
    return float(min(tau * max(epoch, 0) / t_k, tau))
