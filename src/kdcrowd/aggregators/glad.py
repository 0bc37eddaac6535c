"""GLAD: worker abilities and item difficulties (Whitehill et al., 2009)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ._common import AggregatorResult, _check, _Data

def glad(
    ann: Any,
    n_iter: int = 100,
    tol: float = 1e-5,
    labels_priors: Any = None,
    alphas_priors_mean: float | Any = 1.0,
    betas_priors_mean: float | Any = 1.0,
    m_step_max_iter: int = 25,
    m_step_tol: float = 1e-2,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    gold: Any = None,
) -> AggregatorResult:
    """GLAD (Whitehill et al., NeurIPS 2009): worker ``w`` names the true class of item
    ``i`` with probability ``sigmoid(alpha_w * exp(beta_i))`` and each other class with
    the rest split evenly; standard-normal priors around ``alphas_priors_mean`` and
    ``betas_priors_mean`` (scalars or one value per worker / item).

    As crowd-kit's ``GLAD``: ``alpha = beta = 1`` to start, a fixed uniform class prior
    (or ``labels_priors``); each iteration is an E-step and an M-step of at most
    ``m_step_max_iter`` conjugate-gradient steps (scipy's ``CG``, gradient tolerance
    ``m_step_tol``) on the expected log-likelihood plus the log priors; stop when that
    objective divided by ``A * K`` gains less than ``tol`` (the first iteration always
    runs). The objective and its gradient are sums over the ``A`` annotations computed
    in torch on ``device``; only the ``M + N`` parameters go through scipy.
    Labels and posteriors are those of the last E-step (as crowd-kit). The default
    ``dtype`` is float64 on every device: scipy's line search works on float64 values,
    and float32 sums over many annotations are too coarse for it.

    ``gold``: gold questions, ``(N,)`` class indices with ``-1`` for unknown, or ``None``.
    Semi-supervised, as :func:`kdcrowd.aggregation.dawid_skene`: a gold item's posterior is
    clamped to its known one-hot class in every E-step (the first included), so the
    M-step fits the abilities ``alpha`` (and the gold items' ``beta``) to the workers' gold
    answers too, and through them every other item's posterior; gold items get their known
    label and one-hot posterior in the result. With gold the loop stops when the objective
    changes by less than ``tol`` either way, not on its first dip: it leaves out the
    posteriors' entropy, so it dips while EM still moves (on a crowd where the gold
    contradicts the majority, crowd-kit's rule stopped after two iterations, halfway).
    Without gold the result is crowd-kit's.

    ``skills``: ``alpha`` (workers without annotations keep their prior mean);
    ``extras["betas"]``: ``beta``, the log inverse difficulty of each item.
    """
    from scipy.optimize import minimize

    _check("tol", tol, 0.0)
    if n_iter < 0 or m_step_max_iter < 0:
        raise ValueError(f"n_iter and m_step_max_iter must be >= 0, got {n_iter}, {m_step_max_iter}")
    d = _Data(ann, device, dtype or torch.float64, gold)
    triv = d.trivial()
    if triv is not None:
        return triv
    k, n, m = d.k, d.n, d.m
    if labels_priors is None:
        priors = torch.full((k,), 1.0 / k, dtype=d.dtype, device=d.dev)
    else:
        priors = torch.as_tensor(np.asarray(labels_priors, dtype=np.float64), dtype=d.dtype, device=d.dev)
        if priors.shape != (k,) or (priors <= 0).any():
            raise ValueError(f"labels_priors must be {k} positive class probabilities, got {labels_priors!r}")
        priors = priors / priors.sum()
    mu_a = torch.as_tensor(np.broadcast_to(np.asarray(alphas_priors_mean, dtype=np.float64), (m,)).copy(), dtype=d.dtype, device=d.dev)
    mu_b = torch.as_tensor(np.broadcast_to(np.asarray(betas_priors_mean, dtype=np.float64), (n,)).copy(), dtype=d.dtype, device=d.dev)
    log_k1 = math.log(k - 1)
    log_prior = torch.log(priors)
    act_w = d.n_worker > 0
    w_idx = torch.nonzero(act_w).squeeze(1)
    i_idx = torch.nonzero(d.has).squeeze(1)
    n_w, n_i = len(w_idx), len(i_idx)
    alpha, beta = mu_a.clone(), mu_b.clone()
    alpha[w_idx], beta[i_idx] = 1.0, 1.0  # crowd-kit's start; the rest never moves
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def e_step(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        z = alpha[d.worker] * torch.exp(beta[d.item])
        log_same = torch.nn.functional.logsigmoid(z)
        log_other = torch.nn.functional.logsigmoid(-z) - log_k1
        return d.clamp(torch.softmax(d.log_posterior(log_prior, log_other, log_same), 1))

    # the optimiser's vector is x = (alpha of active workers, beta of annotated items);
    # each annotation reads its two entries of x directly
    pos = torch.full((m + n,), -1, dtype=torch.long, device=d.dev)
    pos[w_idx] = torch.arange(n_w, device=d.dev)
    pos[m + i_idx] = n_w + torch.arange(n_i, device=d.dev)
    xa, xb = pos[d.worker], pos[m + d.item]
    mu = torch.cat([mu_a[w_idx], mu_b[i_idx]])
    const = (n_w + n_i) * half_log_2pi

    def q_value(xt: torch.Tensor, qy: torch.Tensor, grad: bool) -> tuple[float, torch.Tensor | None]:
        """Expected complete log-likelihood plus log priors, and its gradient in x."""
        eb = torch.exp(xt[xb])
        z = xt[xa] * eb
        log_same = torch.nn.functional.logsigmoid(z)
        # log(1 - sigmoid(z)) = log sigmoid(z) - z
        ll = log_same - (1 - qy) * (z + log_k1)
        dx = xt - mu
        val = float(ll.sum() - 0.5 * (dx @ dx)) - const
        if not grad:
            return val, None
        r = qy - torch.exp(log_same)
        g = torch.zeros(n_w + n_i, dtype=d.dtype, device=d.dev)
        g.index_add_(0, xa, r * eb).index_add_(0, xb, r * z)
        return val, g - dx

    def unpack(xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a2, b2 = alpha.clone(), beta.clone()
        a2[w_idx], b2[i_idx] = xt[:n_w], xt[n_w:]
        return a2, b2

    norm = d.a * k  # crowd-kit divides by the rows of its (annotation x class) table
    q = e_step(alpha, beta)
    last, history, converged, it = -math.inf, [], False, 0
    for it in range(1, n_iter + 1):
        q = e_step(alpha, beta)
        qy = q.reshape(-1)[d.cell]

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            val, g = q_value(torch.as_tensor(x, dtype=d.dtype, device=d.dev), qy, True)
            assert g is not None
            return -val, (-g).cpu().numpy().astype(np.float64)

        x0 = torch.cat([alpha[w_idx], beta[i_idx]]).cpu().numpy().astype(np.float64)
        res = minimize(fun, x0, method="CG", jac=True, tol=m_step_tol, options={"disp": False, "maxiter": m_step_max_iter})
        xt = torch.as_tensor(res.x, dtype=d.dtype, device=d.dev)
        alpha, beta = unpack(xt)
        value = q_value(xt, qy, False)[0] / norm
        history.append(value)
        # crowd-kit stops on a dip too; this objective (without the posteriors' entropy) dips
        # while the clamped gold items still pull the abilities, so with gold only a change of
        # less than tol either way stops the loop
        if (abs(value - last) if d.gold is not None else value - last) < tol:
            converged = True
            break
        last = value
    lab, post = d.finish(q, fill=priors)
    return AggregatorResult(
        lab, post, skills=alpha.cpu().numpy(), priors=priors.cpu().numpy(), n_iter=it, converged=converged,
        objective=history, extras={"betas": beta.cpu().numpy()},
    )
