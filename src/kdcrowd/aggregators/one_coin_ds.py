"""One-coin Dawid–Skene EM."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ._common import _EPS, AggregatorResult, _check, _Data

def one_coin_dawid_skene(
    ann: Any,
    n_iter: int = 100,
    tol: float = 1e-5,
    eps: float = _EPS,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    gold: Any = None,
) -> AggregatorResult:
    """One-coin Dawid–Skene: worker ``w`` names the true class with probability
    ``s_w`` and each other class with ``(1 - s_w) / (K - 1)``.

    As crowd-kit's ``OneCoinDawidSkene``: start from majority-vote proportions; M-step
    ``s_w`` = mean posterior of the labels the worker gave, prior = mean posterior;
    the per-annotation probabilities are clipped to ``[eps, 1 - eps]``; stop when the
    per-annotation objective (crowd-kit's "ELBO", which adds the log prior once per
    annotation) gains less than ``tol``.

    ``gold``: gold questions, ``(N,)`` class indices with ``-1`` for unknown, or ``None``.
    Semi-supervised, as :func:`kdcrowd.aggregation.dawid_skene`: a gold item's posterior is
    clamped to its known one-hot class at initialisation and after every E-step, so the
    skills (and the class prior) are learned from the workers' gold answers too, and through
    them every other item's posterior; gold items get their known label and one-hot
    posterior in the result. Without gold the result is crowd-kit's.

    ``skills``: ``s_w`` (``NaN`` for workers without annotations); ``transitions``: the
    one-coin confusion matrices they define.
    """
    _check("tol", tol, 0.0)
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    d = _Data(ann, device, dtype, gold)
    triv = d.trivial()
    if triv is not None:
        return triv
    k = d.k
    ones = torch.ones(d.a, dtype=d.dtype, device=d.dev)
    n_w = d.per_worker(ones)

    def m_step(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        priors = q[d.has].mean(0)
        s = d.per_worker(q.reshape(-1)[d.cell]) / n_w.clamp_min(1)
        return priors, s

    def log_probs(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = s[d.worker]
        return (torch.log(sa.clamp(eps, 1 - eps)), torch.log(((1 - sa) / (k - 1)).clamp(eps, 1 - eps)))

    def e_step(priors: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        log_same, log_other = log_probs(s)
        return d.clamp(torch.softmax(d.log_posterior(torch.log(priors.clamp_min(eps)), log_other, log_same), 1))

    def objective(q: torch.Tensor, priors: torch.Tensor, s: torch.Tensor) -> float:
        log_same, log_other = log_probs(s)
        qy = q.reshape(-1)[d.cell]
        joint = (qy * log_same + (1 - qy) * log_other).sum()
        joint = joint + (d.n_item.to(d.dtype) * (q @ torch.log(priors.clamp_min(eps)))).sum()
        qc = q[d.has].clamp_min(eps)
        return float(joint - (qc * torch.log(qc)).sum()) / d.a

    votes = d.votes()
    q = d.clamp(votes / votes.sum(1, keepdim=True).clamp_min(1))
    priors, s = m_step(q)
    loss, history, converged, it = -math.inf, [], False, 0
    for it in range(1, n_iter + 1):
        q = e_step(priors, s)
        priors, s = m_step(q)
        new = objective(q, priors, s)
        history.append(new)
        if new - loss < tol:
            converged = True
            break
        loss = new
    lab, post = d.finish(q, fill=priors)
    s_np = s.cpu().numpy()
    # a worker without annotations: the uniform matrix (nothing known of it), its skill NaN
    s_mat = np.where(n_w.cpu().numpy() == 0, 1.0 / k, s_np)
    off = (1 - s_mat) / (k - 1)
    trans = np.where(np.eye(k, dtype=bool), s_mat[:, None, None], off[:, None, None])
    s_np[n_w.cpu().numpy() == 0] = np.nan
    return AggregatorResult(lab, post, skills=s_np, transitions=trans, priors=priors.cpu().numpy(), n_iter=it, converged=converged, objective=history)
