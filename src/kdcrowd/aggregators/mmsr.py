"""M-MSR: worker reliabilities by robust rank-one matrix completion (Ma & Olshevsky, 2020)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ._common import AggregatorResult, _argmax_lowest, _Data

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
    if kk == 0:  # every row sums to 0 (e.g. two workers who always agree): no sign
        return np.ones(len(cov))  # conflict to resolve, so every worker counts as reliable
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
    skill to the class it names), with the label rule's votes (below). Labels (``label_rule``): ``"crowdkit"`` (default)
    reproduces crowd-kit: the argmax of the votes divided by their sum, which, where the
    skills of an item's voters sum to a negative number (workers judged adversarial),
    picks the class with the lowest skill-weighted vote: the class those adversaries chose.
    It trusts the crowd over M-MSR's signs, which small crowds often get wrong; the
    posteriors are then those of the votes turned around on such items, so that their
    argmax is the label. ``"posterior"``: the argmax of the one-coin posterior of the
    votes as they are (better where the adversaries are real). Ties go to the lowest class.

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
    if label_rule == "crowdkit":
        scores = torch.where(total < 0, -scores, scores)  # the rule's votes: turned around where the voters' skills sum below 0
    labels = _argmax_lowest(scores)
    post = torch.softmax(scores, 1)  # the one-coin posterior of the votes the labels are taken from: its argmax is the label
    lab, post_np = d.finish(post, labels)
    return AggregatorResult(lab, post_np, skills=skills, n_iter=it, converged=converged, objective=history, extras={"accuracy": acc})
