"""MACE: multi-annotator competence estimation (Hovy et al., 2013)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ._common import AggregatorResult, _check, _Data, _gold_evidence

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
    gold: Any = None,
) -> AggregatorResult:
    """MACE (Hovy et al., NAACL 2013): each annotation is, with probability
    ``knowing_w``, the true class, and otherwise a draw from the worker's spamming
    distribution ``theta_w``.

    As crowd-kit's ``MACE``: start values drawn uniformly from ``[1, 2 + default_noise)``
    and normalised (``numpy.random.RandomState(seed)``, the same stream for the
    ``(M, 2)`` spamming and the ``(M, K)`` theta tables, whose rows go to the workers in
    the order they first appear in the annotations, as crowd-kit's do: the start does not
    depend on how the worker ids sort, so ``2, 10`` and ``"2", "10"`` give the same
    result), then an E-step and
    ``n_iter`` times an M-step and an E-step. ``method="vb"``: variational M-step with
    Beta(``alpha``, ``beta``) priors on spamming and Dirichlet(10) on theta;
    ``method="em"``: counts smoothed by ``0.01 / K`` and normalised.

    crowd-kit runs 10 restarts but seeds each one with the same ``random_state``, so all
    ten are the same run; here ``n_restarts`` defaults to 1, and further restarts
    really differ (seeds ``seed + r``); the one with the highest marginal likelihood
    wins. Items' likelihoods are products over their annotations; they are summed in
    log space here (crowd-kit multiplies, which underflows for items with very many
    annotations).

    ``gold``: gold questions, ``(N,)`` class indices with ``-1`` for unknown, or ``None``.
    Semi-supervised, as :func:`kdcrowd.aggregation.dawid_skene`: a gold item's posterior is
    clamped to its known one-hot class in every E-step (the one after the random start
    included), so the expected counts that the M-step turns into ``spamming`` and
    ``theta`` are anchored on the workers' gold answers, and through them every other
    item's posterior; a gold item's term of the marginal likelihood that picks the restart
    is the joint probability of its annotations and its known class. Gold items get their
    known label and one-hot posterior in the result. Without gold the result is crowd-kit's.

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
    d = _Data(ann, device, dtype, gold)
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
        post = d.clamp(torch.exp(log_g - log_z[:, None]))
        if d.gold is not None:  # a gold item's evidence: its annotations joint with its known class
            _gold_evidence(log_z, log_g, d.gold_rows, d.gold_cls)
        lml = float(torch.logaddexp(log_z[d.has], torch.tensor(math.log(1e-8), dtype=d.dtype, device=d.dev)).sum())
        py = post.reshape(-1)[d.cell]
        share = s0t / (s0t + s1)
        strategy = (1 - py) + py * share
        knowing = py * (1 - share)
        strat_counts = d.sum_by(d.worker * k + d.label, strategy, m * k).view(m, k)
        know_counts = torch.stack([d.per_worker(strategy), d.per_worker(knowing)], 1)
        return lml, post, strat_counts, know_counts

    def m_step(strat: torch.Tensor, know: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if method == "vb":
            def vnorm(x: torch.Tensor) -> torch.Tensor:
                return torch.exp(torch.digamma(x) - torch.digamma(x.sum(1, keepdim=True)))

            return vnorm(know + spam_prior), vnorm(strat + 10.0)
        return ((know + smoothing) / (know + smoothing).sum(1, keepdim=True), (strat + smoothing) / (strat + smoothing).sum(1, keepdim=True))

    row = d.first_appearance_rank()  # each worker's row of the random start
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    history: list[float] = []
    for r in range(n_restarts):
        def draw(shape: tuple[int, int]) -> torch.Tensor:
            x = 1.0 + (1.0 + default_noise) * np.random.RandomState(seed + r).uniform(size=shape)[row]
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
