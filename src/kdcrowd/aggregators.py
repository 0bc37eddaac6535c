"""More label aggregators: GLAD, MACE, Wawa, ZeroBasedSkill, one-coin Dawid–Skene, M-MSR.

The methods practitioners compare learning-from-crowds models against, written in torch
beside :mod:`kdcrowd.aggregation` (majority vote, Dawid–Skene) with the same input
(an annotation set ``ann`` with aligned ``item``, ``worker``, ``label`` arrays and the
sizes ``n_items``, ``n_workers``, ``n_classes``) and the same conventions: nothing is
densified to ``N x M``; every step is a gather / ``index_add`` over the ``A``
annotations (M-MSR alone builds an ``M x M`` worker-agreement matrix, which is what the
method is about); items without annotations get label ``-1``; ties in hard labels go to
the lowest class index. Everything runs on ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``)
in float64 on the CPU and float32 elsewhere unless ``dtype`` is given.

Each method follows crowd-kit 1.4.2's implementation (initialisation, number of
iterations, stopping rule, defaults), so that both give the same labels on the same
data; where crowd-kit does something a user would not expect, the docstring says what
is done here and why. One difference for all of them: crowd-kit counts the classes that
occur in the data, these functions use ``ann.n_classes``; both agree when every class
is used at least once.

All functions return an :class:`AggregatorResult`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .aggregation import _arrays, _resolve_device

__all__ = [
    "AGGREGATORS",
    "AggregatorResult",
    "canonical_aggregator",
    "glad",
    "mace",
    "mmsr",
    "one_coin_dawid_skene",
    "run_aggregator",
    "wawa",
    "zero_based_skill",
]

_EPS = 1e-10  # crowd-kit's floor for probabilities


@dataclass
class AggregatorResult:
    """Output of the aggregators of this module (numpy arrays, on the CPU).

    Attributes:
        labels: ``(N,)`` int64 hard labels, ``-1`` for items without annotations.
        posteriors: ``(N, K)`` distribution over each item's true class (rows sum to 1);
            the class prior (or uniform) for items without annotations.
        skills: ``(M,)`` one number per worker, as the method defines it (see each
            function); ``NaN`` for workers without annotations where the method has no
            estimate for them.
        transitions: ``(M, K, K)`` worker confusion matrices ``[worker, true, observed]``
            implied by the model, or ``None`` when the model has none (GLAD's depend on
            the item too; Wawa, ZBS and M-MSR only weight votes).
        priors: ``(K,)`` class prior, or ``None`` when the method has none.
        n_iter: iterations run.
        converged: whether the stopping rule fired before ``n_iter`` ran out (always
            ``True`` for methods that run a fixed number of iterations).
        objective: per iteration, the value the stopping rule looks at.
        extras: other fitted parameters (e.g. GLAD's item difficulties).
    """

    labels: np.ndarray
    posteriors: np.ndarray
    skills: np.ndarray | None = None
    transitions: np.ndarray | None = None
    priors: np.ndarray | None = None
    n_iter: int = 0
    converged: bool = True
    objective: list[float] = field(default_factory=list)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


class _Data:
    """The annotation arrays on the device, and what every method needs from them."""

    def __init__(self, ann: Any, device: str | torch.device, dtype: torch.dtype | None) -> None:
        item, worker, label, n, m, k = _arrays(ann)
        self.n, self.m, self.k, self.a = n, m, k, len(item)
        self.dev = _resolve_device(device)
        self.dtype = dtype or (torch.float64 if self.dev.type == "cpu" else torch.float32)
        self.item_np, self.worker_np, self.label_np = item, worker, label
        self.item = torch.tensor(item, device=self.dev)  # copies: Annotations arrays are read-only
        self.worker = torch.tensor(worker, device=self.dev)
        self.label = torch.tensor(label, device=self.dev)
        self.cell = self.item * k + self.label  # flat (item, label) index
        self.n_item = torch.bincount(self.item, minlength=n)
        self.n_worker = torch.bincount(self.worker, minlength=m)
        self.has = self.n_item > 0
        self.has_np = np.bincount(item, minlength=n) > 0

    def zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(*shape, dtype=self.dtype, device=self.dev)

    def votes(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, K)`` sums of ``weight`` (per annotation; 1 when ``None``) by item and label."""
        w = torch.ones(self.a, dtype=self.dtype, device=self.dev) if weight is None else weight
        return self.zeros(self.n * self.k).index_add_(0, self.cell, w).view(self.n, self.k)

    def per_item(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` sums of a per-annotation quantity by item."""
        return self.zeros(self.n).index_add_(0, self.item, x)

    def per_worker(self, x: torch.Tensor) -> torch.Tensor:
        """``(M,)`` sums of a per-annotation quantity by worker."""
        return self.zeros(self.m).index_add_(0, self.worker, x)

    def log_posterior(self, log_prior: torch.Tensor, log_other: torch.Tensor, log_same: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` unnormalised log posterior when an annotation adds ``log_same`` to the
        class it names and ``log_other`` to every other class (one-coin models)."""
        out = log_prior.expand(self.n, self.k) + self.per_item(log_other)[:, None]
        return out.reshape(-1).index_add(0, self.cell, log_same - log_other).view(self.n, self.k)

    def finish(self, post: torch.Tensor, labels: torch.Tensor | None = None, fill: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Numpy ``(labels, posteriors)``: argmax (lowest class on ties) unless ``labels``
        is given; ``-1`` and ``fill`` (default uniform) for items without annotations."""
        post = post.clone()
        post[~self.has] = (torch.full((self.k,), 1.0 / self.k, dtype=post.dtype, device=self.dev) if fill is None else fill.to(post.dtype))
        lab = (post.argmax(1) if labels is None else labels).cpu().numpy().astype(np.int64)
        lab[~self.has_np] = -1
        return lab, post.cpu().numpy().astype(np.float64)

    def trivial(self) -> AggregatorResult | None:
        """The result when there is nothing to estimate (no annotation or one class)."""
        if self.a and self.k > 1:
            return None
        post = torch.ones(self.n, self.k, dtype=torch.float64) / self.k
        labels = np.where(self.has_np, 0, -1).astype(np.int64)
        return AggregatorResult(labels, post.numpy(), skills=np.full(self.m, np.nan))


def _argmax_lowest(scores: torch.Tensor) -> torch.Tensor:
    """Row argmax where values within float rounding of the maximum are ties (the lowest
    class wins), so that sums of float weights taken in another order tie the same way."""
    top = scores.max(1, keepdim=True).values
    return (scores >= top - 1e-9 * top.abs()).to(torch.int8).argmax(1)


def _check(name: str, value: float, low: float, strict: bool = False) -> None:
    if not (value > low if strict else value >= low) or not math.isfinite(value):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value}")


# ------------------------------------------------------------ Wawa and ZeroBasedSkill


def _weighted_vote(d: _Data, skills: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Skill-weighted majority vote: ``(labels, vote proportions)``. Items whose voters all
    have weight 0 fall back to the unweighted vote (crowd-kit leaves them undefined)."""
    scores = d.votes(skills[d.worker])
    plain = d.votes()
    dead = scores.sum(1) <= 0
    scores = torch.where(dead[:, None], plain, scores)
    labels = _argmax_lowest(scores)
    total = scores.sum(1, keepdim=True)
    return labels, scores / torch.where(total > 0, total, 1.0)


class _Accuracy:
    """Per-worker share of agreement with given item labels, counting a repeated
    ``(item, worker, label)`` triple once (as crowd-kit's ``get_accuracy`` does)."""

    def __init__(self, d: _Data) -> None:
        key = (d.item_np * d.m + d.worker_np) * d.k + d.label_np
        key = np.unique(key)
        self.item = torch.from_numpy(key // (d.m * d.k)).to(d.dev)
        self.worker = torch.from_numpy(key // d.k % d.m).to(d.dev)
        self.label = torch.from_numpy(key % d.k).to(d.dev)
        self.d = d
        self.count = d.zeros(d.m).index_add_(0, self.worker, torch.ones(len(key), dtype=d.dtype, device=d.dev))

    def __call__(self, labels: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        hit = (labels[self.item] == self.label).to(self.d.dtype)
        right = self.d.zeros(self.d.m).index_add_(0, self.worker, hit)
        return torch.where(self.count > 0, right / self.count.clamp_min(1), current)


def wawa(ann: Any, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> AggregatorResult:
    """Wawa (worker agreement with aggregate): majority vote weighted by each worker's
    agreement with the plain majority vote.

    As crowd-kit's ``Wawa``: skills are the share of a worker's distinct
    ``(item, label)`` answers that equal the majority label (lowest class on ties);
    labels are the skill-weighted vote, posteriors the weighted vote proportions.

    ``skills``: the agreement of each worker (``NaN`` for workers without annotations).
    """
    d = _Data(ann, device, dtype)
    triv = d.trivial()
    if triv is not None:
        return triv
    acc = _Accuracy(d)
    nan = torch.full((d.m,), float("nan"), dtype=d.dtype, device=d.dev)
    skills = acc(_argmax_lowest(d.votes()), nan)
    labels, post = _weighted_vote(d, skills)
    lab, post_np = d.finish(post, labels)
    return AggregatorResult(lab, post_np, skills=skills.cpu().numpy(), n_iter=1)


def zero_based_skill(
    ann: Any,
    n_iter: int = 100,
    lr_init: float = 1.0,
    lr_steps_to_reduce: int = 20,
    lr_reduce_factor: float = 0.5,
    eps: float = 1e-5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> AggregatorResult:
    """ZeroBasedSkill: skills start at ``1/K + eps``; each iteration takes the
    skill-weighted vote and moves every skill by ``lr`` towards the worker's agreement
    with it; ``lr`` is multiplied by ``lr_reduce_factor`` on every
    ``lr_steps_to_reduce``-th iteration. As crowd-kit's ``ZeroBasedSkill`` (a fixed
    number of iterations, no stopping rule; agreement counts a repeated
    ``(item, worker, label)`` once). Labels and posteriors: the vote weighted by the
    final skills.

    ``skills``: the final skills (``NaN`` for workers without annotations).
    ``objective``: per iteration, the largest change of a skill.
    """
    if n_iter < 0 or lr_steps_to_reduce < 1:
        raise ValueError(f"n_iter must be >= 0 and lr_steps_to_reduce >= 1, got {n_iter}, {lr_steps_to_reduce}")
    d = _Data(ann, device, dtype)
    triv = d.trivial()
    if triv is not None:
        return triv
    acc = _Accuracy(d)
    skills = torch.full((d.m,), 1.0 / d.k + eps, dtype=d.dtype, device=d.dev)
    lr, changes = lr_init, []
    for it in range(1, n_iter + 1):
        if it % lr_steps_to_reduce == 0:
            lr *= lr_reduce_factor
        labels, _ = _weighted_vote(d, skills)
        step = lr * (acc(labels, skills) - skills)
        skills = skills + step
        changes.append(float(step.abs().max()))
    labels, post = _weighted_vote(d, skills)
    lab, post_np = d.finish(post, labels)
    sk = skills.cpu().numpy()
    sk[d.n_worker.cpu().numpy() == 0] = np.nan
    return AggregatorResult(lab, post_np, skills=sk, n_iter=n_iter, objective=changes)


# ------------------------------------------------------------- one-coin Dawid–Skene


def one_coin_dawid_skene(
    ann: Any,
    n_iter: int = 100,
    tol: float = 1e-5,
    eps: float = _EPS,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> AggregatorResult:
    """One-coin Dawid–Skene: worker ``w`` names the true class with probability
    ``s_w`` and each other class with ``(1 - s_w) / (K - 1)``.

    As crowd-kit's ``OneCoinDawidSkene``: start from majority-vote proportions; M-step
    ``s_w`` = mean posterior of the labels the worker gave, prior = mean posterior;
    the per-annotation probabilities are clipped to ``[eps, 1 - eps]``; stop when the
    per-annotation objective (crowd-kit's "ELBO", which adds the log prior once per
    annotation) gains less than ``tol``.

    ``skills``: ``s_w`` (``NaN`` for workers without annotations); ``transitions``: the
    one-coin confusion matrices they define.
    """
    _check("tol", tol, 0.0)
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    d = _Data(ann, device, dtype)
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
        return torch.softmax(d.log_posterior(torch.log(priors.clamp_min(eps)), log_other, log_same), 1)

    def objective(q: torch.Tensor, priors: torch.Tensor, s: torch.Tensor) -> float:
        log_same, log_other = log_probs(s)
        qy = q.reshape(-1)[d.cell]
        joint = (qy * log_same + (1 - qy) * log_other).sum()
        joint = joint + (d.n_item.to(d.dtype) * (q @ torch.log(priors.clamp_min(eps)))).sum()
        qc = q[d.has].clamp_min(eps)
        return float(joint - (qc * torch.log(qc)).sum()) / d.a

    votes = d.votes()
    q = votes / votes.sum(1, keepdim=True).clamp_min(1)
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
    s_np[n_w.cpu().numpy() == 0] = np.nan
    off = (1 - s_np) / (k - 1)
    trans = np.where(np.eye(k, dtype=bool), s_np[:, None, None], off[:, None, None])
    return AggregatorResult(lab, post, skills=s_np, transitions=trans, priors=priors.cpu().numpy(), n_iter=it, converged=converged, objective=history)


# ---------------------------------------------------------------------------- GLAD


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

    ``skills``: ``alpha`` (workers without annotations keep their prior mean);
    ``extras["betas"]``: ``beta``, the log inverse difficulty of each item.
    """
    from scipy.optimize import minimize

    _check("tol", tol, 0.0)
    if n_iter < 0 or m_step_max_iter < 0:
        raise ValueError(f"n_iter and m_step_max_iter must be >= 0, got {n_iter}, {m_step_max_iter}")
    d = _Data(ann, device, dtype or torch.float64)
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
        return torch.softmax(d.log_posterior(log_prior, log_other, log_same), 1)

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
        if value - last < tol:
            converged = True
            break
        last = value
    lab, post = d.finish(q, fill=priors)
    return AggregatorResult(
        lab, post, skills=alpha.cpu().numpy(), priors=priors.cpu().numpy(), n_iter=it, converged=converged,
        objective=history, extras={"betas": beta.cpu().numpy()},
    )


# ---------------------------------------------------------------------------- MACE


def mace(
    ann: Any,
    n_restarts: int = 1,
    n_iter: int = 50,
    method: str = "vb",
    default_noise: float = 0.5,
    alpha: float = 0.5,
    beta: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> AggregatorResult:
    """MACE (Hovy et al., NAACL 2013): each annotation is, with probability
    ``knowing_w``, the true class, and otherwise a draw from the worker's spamming
    distribution ``theta_w``.

    As crowd-kit's ``MACE``: start values drawn uniformly from ``[1, 2 + default_noise)``
    and normalised (``numpy.random.RandomState(seed)``, the same stream for the
    ``(M, 2)`` spamming and the ``(M, K)`` theta tables), then an E-step and
    ``n_iter`` times an M-step and an E-step. ``method="vb"``: variational M-step with
    Beta(``alpha``, ``beta``) priors on spamming and Dirichlet(10) on theta;
    ``method="em"``: counts smoothed by ``0.01 / K`` and normalised.

    crowd-kit runs 10 restarts but seeds each one with the same ``random_state``, so all
    ten are the same run; here ``n_restarts`` defaults to 1, and further restarts
    really differ (seeds ``seed + r``); the one with the highest marginal likelihood
    wins. Items' likelihoods are products over their annotations; they are summed in
    log space here (crowd-kit multiplies, which underflows for items with very many
    annotations).

    ``skills``: each worker's probability of answering knowingly, ``knowing_w``;
    ``transitions``: ``knowing_w * I + (1 - knowing_w) * theta_w`` in every row;
    ``extras``: ``spamming`` ``(M, 2)`` [spam, knowing] and ``thetas`` ``(M, K)``, as
    fitted (not normalised under ``vb``).
    """
    if method not in ("vb", "em"):
        raise ValueError(f"method must be 'vb' or 'em', got {method!r}")
    if n_restarts < 1 or n_iter < 0:
        raise ValueError(f"n_restarts must be >= 1 and n_iter >= 0, got {n_restarts}, {n_iter}")
    _check("default_noise", default_noise, -1.0, strict=True)
    d = _Data(ann, device, dtype)
    triv = d.trivial()
    if triv is not None:
        return triv
    k, m = d.k, d.m
    smoothing = 0.01 / k
    spam_prior = torch.tensor([alpha, beta], dtype=d.dtype, device=d.dev)

    def e_step(spam: torch.Tensor, theta: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
        s0, s1 = spam[d.worker, 0], spam[d.worker, 1]
        s0t = s0 * theta[d.worker, d.label]
        log_other = torch.log(s0t)
        log_same = torch.log(s0t + s1)
        log_g = d.log_posterior(torch.full((k,), -math.log(k), dtype=d.dtype, device=d.dev), log_other, log_same)
        log_z = torch.logsumexp(log_g, 1)
        post = torch.exp(log_g - log_z[:, None])
        lml = float(torch.logaddexp(log_z[d.has], torch.tensor(math.log(1e-8), dtype=d.dtype, device=d.dev)).sum())
        py = post.reshape(-1)[d.cell]
        share = s0t / (s0t + s1)
        strategy = (1 - py) + py * share
        knowing = py * (1 - share)
        strat_counts = d.zeros(m * k).index_add_(0, d.worker * k + d.label, strategy).view(m, k)
        know_counts = torch.stack([d.per_worker(strategy), d.per_worker(knowing)], 1)
        return lml, post, strat_counts, know_counts

    def m_step(strat: torch.Tensor, know: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if method == "vb":
            def vnorm(x: torch.Tensor) -> torch.Tensor:
                return torch.exp(torch.digamma(x) - torch.digamma(x.sum(1, keepdim=True)))

            return vnorm(know + spam_prior), vnorm(strat + 10.0)
        return ((know + smoothing) / (know + smoothing).sum(1, keepdim=True), (strat + smoothing) / (strat + smoothing).sum(1, keepdim=True))

    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    history: list[float] = []
    for r in range(n_restarts):
        def draw(shape: tuple[int, int]) -> torch.Tensor:
            x = 1.0 + (1.0 + default_noise) * np.random.RandomState(seed + r).uniform(size=shape)
            return torch.as_tensor(x / x.sum(1, keepdims=True), dtype=d.dtype, device=d.dev)

        spam, theta = draw((m, 2)), draw((m, k))
        lml, _, strat, know = e_step(spam, theta)
        for _ in range(n_iter):
            spam, theta = m_step(strat, know)
            lml, _, strat, know = e_step(spam, theta)
        history.append(lml)
        if best is None or lml > best[0]:
            best = (lml, spam, theta)
    assert best is not None
    _, spam, theta = best
    _, post, _, _ = e_step(spam, theta)
    lab, post_np = d.finish(post)
    spam_np, theta_np = spam.cpu().numpy(), theta.cpu().numpy()
    knowing = spam_np[:, 1] / spam_np.sum(1)
    th = theta_np / theta_np.sum(1, keepdims=True)
    trans = knowing[:, None, None] * np.eye(k) + (1 - knowing)[:, None, None] * th[:, None, :]
    return AggregatorResult(
        lab, post_np, skills=knowing, transitions=trans, n_iter=n_iter, objective=history,
        extras={"spamming": spam_np, "thetas": theta_np},
    )


# --------------------------------------------------------------------------- M-MSR


def _trimmed_update(z: torch.Tensor, mask: torch.Tensor, a: torch.Tensor, f: int, n_tasks: int) -> torch.Tensor:
    """One M-MSR half-step for every column at once: the mean of column ``j``'s observed
    values ``z[mask[:, j], j]`` after dropping the ``f`` smallest (or, when fewer than
    ``f`` lie below ``a[j]``, all those below) and then the ``f`` largest (or all above
    ``a[j]``), as crowd-kit's ``_remove_largest_and_smallest_F_value``; for ``f < 0``
    (crowd-kit's ``y[F:]``) only the ``-f`` largest stay. A lone kept 0 becomes
    ``1/sqrt(n_tasks)``; a column with nothing kept keeps ``a[j]``."""
    inf = torch.tensor(float("inf"), dtype=z.dtype, device=z.device)
    vals = torch.where(mask, z, inf)
    srt = torch.sort(vals, 0).values
    c = mask.sum(0)
    below = (mask & (z < a)).sum(0)
    above = (mask & (z > a)).sum(0)
    if f >= 0:
        lo = torch.where(below < f, below, torch.full_like(below, f))
        rem = c - lo
        above_rem = torch.minimum(above, rem)
        hi = torch.where(above_rem < f, lo + rem - above_rem, c - f)
    else:
        lo = (c + f).clamp_min(0)
        hi = c
    csum = torch.cat([torch.zeros_like(srt[:1]), torch.where(torch.isinf(srt), 0.0, srt).cumsum(0)])
    total = csum.gather(0, hi[None]).squeeze(0) - csum.gather(0, lo[None]).squeeze(0)
    length = hi - lo
    mean = total / length.clamp_min(1)
    mean = torch.where((length == 1) & (mean == 0), 1.0 / math.sqrt(n_tasks), mean)
    return torch.where(length > 0, mean, a)


def _sign_vector(cov: np.ndarray) -> np.ndarray:
    """crowd-kit's ``_sign_determination_valid`` signs: the eigenvector of the smallest
    eigenvalue of the random walk on a graph where workers with negative covariance are
    neighbours and workers with positive covariance share a middle node. The walk is
    similar to the symmetric ``D^-1/2 A D^-1/2``, whose eigenvector is found instead
    (dense up to 300 nodes, else sparse Lanczos); ``D^-1/2`` keeps the signs."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    s = np.sign(cov)
    valid = np.nonzero(cov.sum(1) != 0)[0]
    sv = s[np.ix_(valid, valid)]
    kk = len(valid)
    pi, pj = np.nonzero(np.triu(sv == 1))
    neg_i, neg_j = np.nonzero(sv == -1)
    p = len(pi)
    mid = kk + np.arange(p)
    rows = np.concatenate([neg_i, pi, pj, mid, mid])
    cols = np.concatenate([neg_j, mid, mid, pi, pj])
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(kk + p, kk + p))
    deg = np.asarray(adj.sum(1)).ravel()
    dinv = sp.diags(1.0 / np.sqrt(deg))
    sym = dinv @ adj @ dinv
    if kk + p <= 300:
        _, vec = np.linalg.eigh(sym.toarray())
        v = vec[:, 0]
    else:  # Lanczos: O(iterations x nnz) instead of a dense O((kk + p)^3) decomposition
        _, vec = sla.eigsh(sym, k=1, which="SA", v0=np.ones(kk + p))
        v = vec[:, 0]
    sign = np.sign(v[:kk])
    out = np.zeros(len(cov))
    out[valid] = np.sign(sign.sum()) * sign
    return out


def mmsr(
    ann: Any,
    n_iter: int = 10000,
    tol: float = 1e-10,
    seed: int = 0,
    label_rule: str = "crowdkit",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> AggregatorResult:
    """M-MSR (Ma & Olshevsky, UAI 2020): worker reliabilities from a robust rank-one
    completion of the worker covariance matrix, then a skill-weighted vote.

    As crowd-kit's ``MMSR``: a repeated ``(item, worker)`` keeps its last label for the
    covariance; ``C[i, j] = (K * agree_ij / common_ij - 1) / (K - 1)`` over the items
    both workers labelled (``-1/(K-1)`` where they share none and on the diagonal);
    ``u = v`` start as ``numpy.random.RandomState(seed).uniform`` draws; each iteration
    replaces every ``v_j`` (then every ``u_i``) by the mean of ``|C_ij| / u_i`` over the
    workers sharing items with ``j``, trimmed by ``F = floor(s / 2) - 1`` values on each
    side (``s``: the fewest co-workers of any worker); stop when
    ``||u v^T - u' v'^T||_F < tol``. Signs come from crowd-kit's graph construction
    (see :func:`_sign_vector`); reliabilities are clipped to
    ``[-1/(K-1) + 1/sqrt(N), 1 - 1/sqrt(N)]`` and turned into one-coin accuracies ``p``
    and log-odds skills ``log(p (K-1) / (1-p))``. Only workers and items with
    annotations take part.

    Posteriors are the one-coin posterior ``softmax`` of the skill-weighted votes (what
    the skills mean: with a uniform class prior, each vote adds its worker's log-odds
    skill to the class it names). Labels (``label_rule``): ``"crowdkit"`` (default)
    reproduces crowd-kit: the argmax of the votes divided by their sum, which picks the
    *least* voted class where the skills of an item's voters sum to a negative number
    (workers judged adversarial); ``"posterior"``: the argmax of the posteriors. Ties go
    to the lowest class.

    ``skills``: the log-odds skills (``NaN`` for workers without annotations);
    ``extras["accuracy"]``: ``p``.
    """
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if label_rule not in ("crowdkit", "posterior"):
        raise ValueError(f"label_rule must be 'crowdkit' or 'posterior', got {label_rule!r}")
    d = _Data(ann, device, dtype)
    triv = d.trivial()
    if triv is not None:
        return triv
    k = d.k
    dt = torch.float64 if d.dev.type == "cpu" else d.dtype
    # active workers in index order; the last label of each (item, worker) pair
    act = torch.nonzero(d.n_worker > 0).squeeze(1)
    ma = len(act)
    w_pos = torch.full((d.m,), -1, dtype=torch.long, device=d.dev)
    w_pos[act] = torch.arange(ma, device=d.dev)
    pair = d.item * d.m + d.worker
    order = torch.argsort(pair, stable=True)
    ps = pair[order]
    last = torch.ones_like(ps, dtype=torch.bool)
    last[:-1] = ps[1:] != ps[:-1]
    sel = order[last]
    wi, it_, lb = w_pos[d.worker[sel]], d.item[sel], d.label[sel]
    n_tasks = int(d.has.sum())
    ones = torch.ones(len(sel), dtype=dt, device=d.dev)
    with warnings.catch_warnings():  # torch's notes that its sparse support is in beta
        warnings.simplefilter("ignore", UserWarning)
        # items both workers labelled, and those they gave the same label: B B^T over
        # the sparse (worker x item) and (worker x item*K + label) indicator matrices
        b = torch.sparse_coo_tensor(torch.stack([wi, it_]), ones, (ma, d.n), check_invariants=False).coalesce()
        bl = torch.sparse_coo_tensor(torch.stack([wi, it_ * k + lb]), ones, (ma, d.n * k), check_invariants=False).coalesce()
        common = torch.sparse.mm(b, b.t()).to_dense()
        agree = torch.sparse.mm(bl, bl.t()).to_dense()
    common.fill_diagonal_(0)
    obs = common != 0
    cov = torch.where(obs, agree / common.clamp_min(1), 0.0) * (k / (k - 1)) - 1.0 / (k - 1)
    sparsity = int(obs.sum(0).min())
    f = sparsity // 2 - 1
    x = cov.abs()
    u = torch.as_tensor(np.random.RandomState(seed).uniform(size=ma), dtype=dt, device=d.dev)
    v = u.clone()
    history: list[float] = []
    converged, it = n_iter == 0, 0
    for it in range(1, n_iter + 1):
        u_prev, v_prev = u, v
        v = _trimmed_update(x / u[:, None], obs, v, f, n_tasks)
        u = _trimmed_update(x.t() / v[:, None], obs.t(), u, f, n_tasks)
        loss = float(torch.linalg.norm(torch.outer(u, v) - torch.outer(u_prev, v_prev)))
        history.append(loss)
        if loss < tol:
            converged = True
            break
    scale = math.sqrt(float(torch.linalg.norm(u)) / float(torch.linalg.norm(v)))
    x1 = (u / scale).cpu().numpy()
    rel = _sign_vector(cov.cpu().numpy()) * x1
    rel = np.minimum(rel, 1 - 1.0 / math.sqrt(n_tasks))
    rel = np.maximum(rel, -1.0 / (k - 1) + 1.0 / math.sqrt(n_tasks))
    p = rel * (k - 1) / k + 1.0 / k
    skill_a = np.log(p * (k - 1) / (1 - p))
    skills = np.full(d.m, np.nan)
    skills[act.cpu().numpy()] = skill_a
    acc = np.full(d.m, np.nan)
    acc[act.cpu().numpy()] = p
    sk = torch.as_tensor(np.nan_to_num(skills), dtype=d.dtype, device=d.dev)
    scores = d.votes(sk[d.worker])
    total = scores.sum(1, keepdim=True)
    labels = _argmax_lowest(torch.where(total < 0, -scores, scores) if label_rule == "crowdkit" else scores)
    post = torch.softmax(scores, 1)
    lab, post_np = d.finish(post, labels)
    return AggregatorResult(lab, post_np, skills=skills, n_iter=it, converged=converged, objective=history, extras={"accuracy": acc})


# --------------------------------------------------------------------- entry points

#: Method name -> function; every function also takes ``device`` and ``dtype``.
AGGREGATORS: dict[str, Any] = {
    "glad": glad,
    "mace": mace,
    "wawa": wawa,
    "zbs": zero_based_skill,
    "one-coin-ds": one_coin_dawid_skene,
    "mmsr": mmsr,
}

_ALIASES = {
    "zero_based_skill": "zbs", "zero-based-skill": "zbs", "zerobasedskill": "zbs",
    "one_coin_ds": "one-coin-ds", "onecoin-ds": "one-coin-ds", "one-coin-dawid-skene": "one-coin-ds",
    "m-msr": "mmsr", "m_msr": "mmsr",
}


def canonical_aggregator(method: str) -> str | None:
    """The :data:`AGGREGATORS` key that ``method`` (any case, or an alias) names, else ``None``."""
    key = str(method).strip().lower()
    return key if key in AGGREGATORS else _ALIASES.get(key)


def run_aggregator(ann: Any, method: str, **kw: Any) -> AggregatorResult:
    """Run the aggregator named ``method`` (a key of :data:`AGGREGATORS` or an alias)
    with the keywords of its function; an unknown keyword is one clear error."""
    import inspect

    name = canonical_aggregator(method)
    if name is None:
        raise ValueError(f"unknown aggregation method {method!r}; expected one of {', '.join(AGGREGATORS)}")
    fn = AGGREGATORS[name]
    allowed = set(inspect.signature(fn).parameters) - {"ann"}
    bad = set(kw) - allowed
    if bad:
        raise ValueError(f"unexpected option(s) {sorted(bad)} for method {name!r}; allowed: {', '.join(sorted(allowed))}")
    return fn(ann, **kw)
