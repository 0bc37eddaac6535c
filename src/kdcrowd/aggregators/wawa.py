"""Wawa and ZeroBasedSkill: majority votes weighted by each worker's agreement with the aggregate."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._common import AggregatorResult, _argmax_lowest, _Data

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
        self.count = d.sum_by(self.worker, torch.ones(len(key), dtype=d.dtype, device=d.dev), d.m)

    def __call__(self, labels: torch.Tensor, current: torch.Tensor, on: torch.Tensor | None = None) -> torch.Tensor:
        """Per-worker share of the distinct answers that equal ``labels[item]``; with ``on``,
        an ``(N,)`` bool mask, of the distinct answers on the items it marks only.
        ``current`` for workers with no such answer."""
        d = self.d
        hit = labels[self.item] == self.label
        count = self.count
        if on is not None:
            mask = on[self.item]
            hit = hit & mask
            count = d.sum_by(self.worker, mask.to(d.dtype), d.m)
        right = d.sum_by(self.worker, hit.to(d.dtype), d.m)
        return torch.where(count > 0, right / count.clamp_min(1), current)


def wawa(ann: Any, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, gold: Any = None) -> AggregatorResult:
    """Wawa (worker agreement with aggregate): majority vote weighted by each worker's
    agreement with the plain majority vote.

    As crowd-kit's ``Wawa``: skills are the share of a worker's distinct
    ``(item, label)`` answers that equal the majority label (lowest class on ties);
    labels are the skill-weighted vote, posteriors the weighted vote proportions.

    ``gold``: gold questions, ``(N,)`` class indices with ``-1`` for unknown, or ``None``.
    A worker's answers on gold items are compared with the known class instead of the
    majority label, so the skills (and through them the weighted vote on every other item)
    reflect the gold answers; the reference of the other items stays their plain majority
    vote. Gold items get their known label and one-hot posterior in the result.

    ``skills``: the agreement of each worker (``NaN`` for workers without annotations).
    """
    d = _Data(ann, device, dtype, gold)
    triv = d.trivial()
    if triv is not None:
        return triv
    acc = _Accuracy(d)
    nan = torch.full((d.m,), float("nan"), dtype=d.dtype, device=d.dev)
    skills = acc(d.reference(_argmax_lowest(d.votes())), nan)
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
    gold: Any = None,
) -> AggregatorResult:
    """ZeroBasedSkill: skills start at ``1/K + eps``; each iteration takes the
    skill-weighted vote and moves every skill by ``lr`` towards the worker's agreement
    with it; ``lr`` is multiplied by ``lr_reduce_factor`` on every
    ``lr_steps_to_reduce``-th iteration. As crowd-kit's ``ZeroBasedSkill`` (a fixed
    number of iterations, no stopping rule; agreement counts a repeated
    ``(item, worker, label)`` once). Labels and posteriors: the vote weighted by the
    final skills.

    ``gold``: gold questions, ``(N,)`` class indices with ``-1`` for unknown, or ``None``.
    The skills are anchored on them: a worker who answered gold items starts from the share
    of those answers that name the known class (the others from ``1/K + eps``), and in every
    iteration a worker's answers on gold items are compared with the known class instead of
    the weighted vote. Gold items get their known label and one-hot posterior in the result.

    ``skills``: the final skills (``NaN`` for workers without annotations).
    ``objective``: per iteration, the largest change of a skill.
    """
    if n_iter < 0 or lr_steps_to_reduce < 1:
        raise ValueError(f"n_iter must be >= 0 and lr_steps_to_reduce >= 1, got {n_iter}, {lr_steps_to_reduce}")
    d = _Data(ann, device, dtype, gold)
    triv = d.trivial()
    if triv is not None:
        return triv
    acc = _Accuracy(d)
    skills = torch.full((d.m,), 1.0 / d.k + eps, dtype=d.dtype, device=d.dev)
    if d.gold is not None:  # a worker's share of right answers on gold items
        skills = acc(d.gold, skills, on=d.gold >= 0)
    lr, changes = lr_init, []
    for it in range(1, n_iter + 1):
        if it % lr_steps_to_reduce == 0:
            lr *= lr_reduce_factor
        labels, _ = _weighted_vote(d, skills)
        step = lr * (acc(d.reference(labels), skills) - skills)
        skills = skills + step
        changes.append(float(step.abs().max()))
    labels, post = _weighted_vote(d, skills)
    lab, post_np = d.finish(post, labels)
    sk = skills.cpu().numpy()
    sk[d.n_worker.cpu().numpy() == 0] = np.nan
    return AggregatorResult(lab, post_np, skills=sk, n_iter=n_iter, objective=changes)
