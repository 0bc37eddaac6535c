"""M-MSR: worker reliabilities by robust rank-one matrix completion (Ma & Olshevsky, 2020).

Everything runs over the worker pairs that share an item (``nnz``), never a dense
``M x M`` matrix: large crowds have millions of workers and few pairs among them."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ..config import SettingWarning
from ._common import AggregatorResult, _argmax_lowest, _Data


def _trimmed_update(z: torch.Tensor, group: torch.Tensor, count: torch.Tensor, a: torch.Tensor, f: int, n_tasks: int) -> torch.Tensor:
    """One M-MSR half-step for every group (a column of the covariance matrix) at once:
    the mean of group ``j``'s values ``z[group == j]`` after dropping the ``f`` smallest
    (or, when fewer than ``f`` lie below ``a[j]``, all those below) and then the ``f``
    largest (or all above ``a[j]``), as crowd-kit's ``_remove_largest_and_smallest_F_value``;
    for ``f < 0`` (crowd-kit's ``y[F:]``) only the ``-f`` largest stay. A lone kept 0
    becomes ``1/sqrt(n_tasks)``; a group with nothing kept keeps ``a[j]``; a kept value
    that is not finite counts as 0. ``count``: the values per group (``bincount(group)``).
    ``f = 0`` keeps every value and ``f = -1`` the largest (sparse crowds, where some worker
    shares items with at most one other): a sum or a maximum per group. Otherwise the
    values are sorted within their groups with two sorts (by value, then a stable sort by
    group): O(nnz log nnz), no dense column."""
    finite_z = torch.where(torch.isfinite(z), z, 0.0)
    if f == 0:
        total = torch.zeros_like(a).index_add_(0, group, finite_z)
        length = count
    elif f == -1:
        top = torch.full_like(a, -math.inf).scatter_reduce_(0, group, z, "amax")  # NaN wins, as in a sort
        total = torch.where(torch.isfinite(top), top, 0.0)
        length = count.clamp_max(1)
    else:
        by_value = torch.argsort(z)
        by_group = by_value[torch.argsort(group[by_value], stable=True)]
        start = torch.cumsum(count, 0) - count
        if f > 0:
            below = torch.zeros_like(count).index_add_(0, group, (z < a[group]).to(count.dtype))
            above = torch.zeros_like(count).index_add_(0, group, (z > a[group]).to(count.dtype))
            lo = torch.where(below < f, below, torch.full_like(below, f))
            rem = count - lo
            above_rem = torch.minimum(above, rem)
            hi = torch.where(above_rem < f, lo + rem - above_rem, count - f)
        else:
            lo = (count + f).clamp_min(0)
            hi = count
        grp = group[by_group]
        rank = torch.arange(len(z), device=z.device) - start[grp]  # place within its group
        kept = (rank >= lo[grp]) & (rank < hi[grp])
        # summed per group (a cumulative sum over all groups would lose the digits of small groups)
        total = torch.zeros_like(a).index_add_(0, grp, torch.where(kept, finite_z[by_group], 0.0))
        length = hi - lo
    mean = total / length.clamp_min(1)
    mean = torch.where((length == 1) & (mean == 0), 1.0 / math.sqrt(n_tasks), mean)
    return torch.where(length > 0, mean, a)


def _rank_one_distance(u: torch.Tensor, v: torch.Tensor, u2: torch.Tensor, v2: torch.Tensor) -> float:
    """``||u v^T - u2 v2^T||_F`` in O(M), never the ``M x M`` matrices. The difference is
    ``du v^T + u2 dv^T`` (``du = u - u2``, ``dv = v - v2``); with ``u2 = b du/|du| + r``
    (``r`` orthogonal to ``du``) it is ``du/|du| (|du| v + b dv)^T + r dv^T``, two
    orthogonal parts, so its square is ``||du| v + b dv|^2 + |r|^2 |dv|^2``: sums of
    squares of small quantities, exactly 0 at a fixed point, where expanding the square
    would cancel large terms (M-MSR's iterates drift along ``u -> a u, v -> v / a``)."""
    du, dv = u - u2, v - v2
    ndu = torch.linalg.norm(du)
    if float(ndu) == 0.0:
        return float(torch.linalg.norm(u2) * torch.linalg.norm(dv))
    dh = du / ndu
    b = dh.dot(u2)
    e = ndu * v + b * dv
    r = u2 - b * dh
    return math.sqrt(float(e.dot(e) + r.dot(r) * dv.dot(dv)))


def _sign_vector(ma: int, r: np.ndarray, c: np.ndarray, cov: np.ndarray, k: int) -> np.ndarray | None:
    """crowd-kit's ``_sign_determination_valid`` signs: the eigenvector of the smallest
    eigenvalue of the random walk on a graph where workers with negative covariance are
    neighbours and workers with positive covariance share a middle node. ``cov`` holds the
    covariance of the observed pairs ``(r, c)`` (both orders, no diagonal); every other
    entry, the diagonal included, is ``-1/(K-1)``, so those pairs are neighbours too: the
    worker block of the graph is all ones less the observed pairs of covariance >= 0, and
    its products take a sum plus the pairs, never an ``M x M`` matrix. The walk is similar
    to the symmetric ``D^-1/2 A D^-1/2``, whose eigenvector is found instead (dense up to
    300 nodes, else Lanczos on that operator); ``D^-1/2`` keeps the signs. ``None`` where the
    signs split the workers evenly: the majority that says which side is skilled is none."""
    import scipy.sparse.linalg as sla

    n_obs = np.bincount(r, minlength=ma)
    rowsum = np.bincount(r, weights=cov, minlength=ma) - (ma - n_obs) / (k - 1)
    # "sums to 0" is a test of exact equality, which the order of the sum decides: the rows
    # near 0 are summed again as crowd-kit sums them, the whole row with numpy (O(M) each;
    # only rows whose worker shares items with nearly every other worker come near 0)
    bounds = np.searchsorted(r, np.arange(ma + 1))  # the pairs come sorted by r
    for i in np.nonzero(np.abs(rowsum) <= 1e-9 * ma)[0]:
        row = np.full(ma, -1.0 / (k - 1))
        row[c[bounds[i] : bounds[i + 1]]] = cov[bounds[i] : bounds[i + 1]]
        rowsum[i] = row.sum()
    valid = np.nonzero(rowsum != 0)[0]
    kk = len(valid)
    if kk == 0:  # every row sums to 0 (e.g. two workers who always agree): no sign
        return np.ones(ma)  # conflict to resolve, so every worker counts as reliable
    vidx = np.full(ma, -1)
    vidx[valid] = np.arange(kk)
    both = (vidx[r] >= 0) & (vidx[c] >= 0)
    vr, vc, vcov = vidx[r[both]], vidx[c[both]], cov[both]
    nonneg = vcov >= 0  # not neighbours: observed with covariance 0 or above
    nr, nc = vr[nonneg], vc[nonneg]
    upper = (vcov > 0) & (vr < vc)  # a middle node per positive pair, in row-major order
    order = np.lexsort((vc[upper], vr[upper]))
    pi, pj = vr[upper][order], vc[upper][order]
    p = len(pi)
    deg = np.concatenate([kk - np.bincount(nr, minlength=kk) + np.bincount(pi, minlength=kk) + np.bincount(pj, minlength=kk), np.full(p, 2)])
    dinv = 1.0 / np.sqrt(deg.astype(np.float64))

    def adjacency_times(w: np.ndarray) -> np.ndarray:
        ww, wm = w[:kk], w[kk:]
        out_w = ww.sum() - np.bincount(nr, weights=ww[nc], minlength=kk)
        out_w = out_w + np.bincount(pi, weights=wm, minlength=kk) + np.bincount(pj, weights=wm, minlength=kk)
        return np.concatenate([out_w, ww[pi] + ww[pj]])

    def sym_times(x: np.ndarray) -> np.ndarray:
        return dinv * adjacency_times(dinv * x)

    size = kk + p
    if size <= 300:
        sym = np.stack([sym_times(e) for e in np.eye(size)], 1)  # the dense matrix, column by column
        _, vec = np.linalg.eigh(sym)
        v = vec[:, 0]
    else:  # Lanczos: O(iterations x (nnz + M)) instead of a dense O((kk + p)^3) decomposition
        op = sla.LinearOperator((size, size), matvec=sym_times, dtype=np.float64)
        _, vec = sla.eigsh(op, k=1, which="SA", v0=np.ones(size))
        v = vec[:, 0]
    sign = np.sign(v[:kk])
    if sign.sum() == 0:  # an even split: the eigenvector's own sign, which the worker order decides, would choose
        return None  # (crowd-kit multiplies by sign(0) = 0: every skill 0, every vote weighing nothing, and then fails)
    out = np.zeros(ma)
    out[valid] = np.sign(sign.sum()) * sign  # the majority's sign is the skilled one
    return out


def mmsr(
    ann: Any,
    n_iter: int = 10000,
    tol: float = 1e-10,
    seed: int = 0,
    label_rule: str = "crowdkit",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    gold: Any = None,
) -> AggregatorResult:
    """M-MSR (Ma & Olshevsky, UAI 2020): worker reliabilities from a robust rank-one
    completion of the worker covariance matrix, then a skill-weighted vote.

    As crowd-kit's ``MMSR``: a repeated ``(item, worker)`` keeps its last label for the
    covariance; ``C[i, j] = (K * agree_ij / common_ij - 1) / (K - 1)`` over the items
    both workers labelled (``-1/(K-1)`` where they share none and on the diagonal);
    ``u = v`` start as ``numpy.random.RandomState(seed).uniform`` draws (per worker in order of
    first appearance, as crowd-kit's: the start does not depend on how the ids sort); each iteration
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

    Where every observed covariance is 0 the completion is 0 and says nothing of the
    workers: the skills are ``NaN``, as crowd-kit's, and the labels the majority vote. So
    too where the signs split the workers evenly (two camps of two that always disagree):
    nothing says which camp is skilled, and the eigenvector's own sign, which the order of
    the worker ids decides, would call one camp adversarial (crowd-kit fails there). A worker
    who shares no item with another is in no covariance: its skill is ``NaN`` (crowd-kit keeps
    its random start) and its votes weigh nothing, except on items whose voters all have no
    skill, which take their plain vote; where no two workers share an item, the labels are
    the majority vote.

    ``gold``: gold questions, ``(N,)`` class indices with ``-1`` for unknown, or ``None``.
    Gold items get their known label and one-hot posterior in the result, and nothing
    else: M-MSR's skills come from the workers' agreement with each other (the covariance
    matrix's completion), which has no place for a known answer, so the skills and the
    other items' labels are those without gold. A :class:`kdcrowd.config.SettingWarning`
    says so; for gold to anchor the skills use Dawid–Skene, one-coin DS, GLAD, MACE, Wawa
    or ZBS.

    ``skills``: the log-odds skills (``NaN`` for workers without annotations);
    ``extras["accuracy"]``: ``p``.
    """
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if label_rule not in ("crowdkit", "posterior"):
        raise ValueError(f"label_rule must be 'crowdkit' or 'posterior', got {label_rule!r}")
    d = _Data(ann, device, dtype, gold)
    if d.gold is not None:
        warnings.warn(f"M-MSR does not use the {len(d.gold_rows):,} gold questions to estimate its worker skills (they come from the workers' "
                      "agreement with each other): gold only sets the labels of the gold items; for gold to anchor the skills and the other "
                      "labels use ds, one-coin-ds, glad, mace, wawa or zbs", SettingWarning, stacklevel=2)
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
        # the sparse (worker x item) and (worker x item*K + label) indicator matrices,
        # kept sparse: only the pairs that share an item
        b = torch.sparse_coo_tensor(torch.stack([wi, it_]), ones, (ma, d.n), check_invariants=False).coalesce()
        bl = torch.sparse_coo_tensor(torch.stack([wi, it_ * k + lb]), ones, (ma, d.n * k), check_invariants=False).coalesce()
        common = torch.sparse.mm(b, b.t()).coalesce()
        agree = torch.sparse.mm(bl, bl.t()).coalesce()
    (r, c), n_common = common.indices(), common.values()
    key = r * ma + c  # sorted: coalesced indices are in row-major order
    n_agree = torch.zeros_like(n_common)
    n_agree[torch.searchsorted(key, agree.indices()[0] * ma + agree.indices()[1])] = agree.values()  # agreeing pairs share an item
    off = r != c
    r, c, n_common, n_agree = r[off], c[off], n_common[off], n_agree[off]
    cov = (n_agree / n_common) * (k / (k - 1)) - 1.0 / (k - 1)  # observed pairs; -1/(K-1) elsewhere
    count = torch.bincount(c, minlength=ma)  # co-workers per worker: the pairs come in both orders, so per row too
    sparsity = int(count.min())
    f = sparsity // 2 - 1
    x = cov.abs()
    # drawn in order of first appearance (the active workers' ranks are 0..ma-1: the others come last)
    u = torch.as_tensor(np.random.RandomState(seed).uniform(size=ma)[d.first_appearance_rank()[act.cpu().numpy()]], dtype=dt, device=d.dev)
    v = u.clone()
    history: list[float] = []
    converged, it = n_iter == 0, 0
    for it in range(1, n_iter + 1):
        u_prev, v_prev = u, v
        v = _trimmed_update(x / u[r], c, count, v, f, n_tasks)  # column j: |C_ij| / u_i
        u = _trimmed_update(x / v[c], r, count, u, f, n_tasks)  # row i: |C_ij| / v_j
        loss = _rank_one_distance(u, v, u_prev, v_prev)
        history.append(loss)
        if loss < tol:
            converged = True
            break
    nu, nv = float(torch.linalg.norm(u)), float(torch.linalg.norm(v))
    # every observed covariance 0 (e.g. K = 2 workers who agree on half their shared items):
    # the completion is 0 and says nothing of the workers; crowd-kit's skills are NaN then
    # a worker who shares no item with another (a crowd of one label per item: every worker)
    # is in no observed covariance: the iterations keep its random start, which says nothing
    # of it (crowd-kit keeps it as its reliability): its skill is NaN, its votes weigh nothing
    isolated = (count == 0).cpu().numpy()
    no_completion = not (nv > 0 and math.isfinite(nu / nv)) or bool(isolated.all())
    signs = None if no_completion else _sign_vector(ma, r.cpu().numpy(), c.cpu().numpy(), cov.cpu().numpy(), k)
    degenerate = signs is None  # no completion, or no majority to say which workers are skilled: no skills
    rel = np.full(ma, np.nan) if degenerate else signs * (u / math.sqrt(nu / nv)).cpu().numpy()
    rel[isolated] = np.nan
    rel = np.minimum(rel, 1 - 1.0 / math.sqrt(n_tasks))
    rel = np.maximum(rel, -1.0 / (k - 1) + 1.0 / math.sqrt(n_tasks))
    p = rel * (k - 1) / k + 1.0 / k
    skill_a = np.log(p * (k - 1) / (1 - p))
    skills = np.full(d.m, np.nan)
    skills[act.cpu().numpy()] = skill_a
    acc = np.full(d.m, np.nan)
    acc[act.cpu().numpy()] = p
    sk = torch.as_tensor(np.nan_to_num(skills), dtype=d.dtype, device=d.dev)
    if degenerate:
        sk = torch.ones_like(sk)  # no skill to weigh by: every vote counts the same (majority vote)
    scores = d.votes(sk[d.worker])
    # an item whose voters all have skill 0 (accuracy 1/K) takes their plain vote, as Wawa's do,
    # instead of a tie of zeros that gives it class 0 whatever the votes say
    unweighed = d.votes(sk.abs()[d.worker]).sum(1, keepdim=True) == 0
    scores = torch.where(unweighed, d.votes(), scores)
    total = scores.sum(1, keepdim=True)
    if label_rule == "crowdkit":
        scores = torch.where(total < 0, -scores, scores)  # the rule's votes: turned around where the voters' skills sum below 0
    labels = _argmax_lowest(scores)
    post = torch.softmax(scores, 1)  # the one-coin posterior of the votes the labels are taken from: its argmax is the label
    lab, post_np = d.finish(post, labels)
    return AggregatorResult(lab, post_np, skills=skills, n_iter=it, converged=converged, objective=history, extras={"accuracy": acc})
