"""Simulated crowd workers with known transition matrices.

Call :func:`simulate_workers` with the ground-truth labels of a data set and a case name;
it returns a :class:`SimulatedCrowd` holding the sampled :class:`Annotations` and the
generating matrices ``T[m, k, j] = P(worker m answers j | true class k)``, which are the
truth for the worker-expertise error (as the KD-Crowd paper measures it). :func:`list_worker_cases` (and the
registry :data:`WORKER_CASES`) name the cases; ``kdcrowd run --workers NAME`` uses them.

Everything is reproducible from ``seed`` (one ``numpy.random.default_rng`` per call) and
vectorised: the (item, worker) pairs are drawn for all items at once, and every label is
drawn by inverse-CDF sampling on the cumulative row ``T[worker, y_true[item]]`` of its
annotation, with one uniform number per annotation.

Cases (the builders' keyword arguments, overridable through ``**params``, are listed in
each builder's docstring):

* ``symmetric`` / ``pairflip`` — per-worker symmetric or pair-flip (k → k+1 mod K) noise,
  rates spread evenly over ``[noise_min, noise_max]``; each item labelled by
  ``redundancy`` distinct random workers.
* ``maxmig-low-{1,2,3}`` / ``maxmig-high-{1,2,3}`` — the Max-MIG cases (Cao et al.,
  ICLR 2019): independent low-expertise or structured high-expertise seniors, then
  ``-2`` adds 5 juniors who always answer class 0 and ``-3`` adds 2 copiers who repeat one
  senior's labels. Every worker labels every item.
* ``hammer-spammer`` — near-perfect hammers and uniform-random spammers.
* ``sparse`` — 50 workers of widely spread expertise (mixed symmetric / pair-flip), each
  item labelled by 3 random workers.
* ``instance`` — instance-dependent noise computed from the item features ``x``.

Interpretations that are ours, not the papers' (SPEC "[choice]"):

* "80 % symmetric noise" (Max-MIG low expertise): with probability 0.8 the label is
  replaced by a uniformly random *other* class, i.e. ``T = 0.2·I + 0.8/(K−1)·(1−I)``
  (correct class 0.2, each wrong class 0.8/9 ≈ 0.089 for K = 10). Pass
  ``noise=0.72`` to get the "replaced by a uniformly random class (possibly the same)"
  reading (0.28 correct) instead.
* Max-MIG high expertise: the class pairs are ``(3,5) cat↔dog, (4,7) deer↔horse,
  (0,2) airplane↔bird, (1,9) automobile↔truck, (6,8) frog↔ship`` for K = 10 (CIFAR-10
  order), and ``(2j, 2j+1)`` otherwise. Senior ``m`` confuses the ``n_confused`` (3)
  pairs ``m, m+1, …`` (cyclically): inside a confused pair the label flips to the other
  class with probability ``flip`` (0.45); on every other class the senior is correct. So
  each senior is an expert on the remaining pairs, and each pair is confused by 3 of the
  5 seniors.
* Copiers copy one fixed senior (``copy_source``, worker 0): their labels are the *same
  samples* as that senior's, so their "true" transition matrix is the copied worker's
  matrix, but their errors are perfectly dependent on it.
* Juniors answer ``junior_label`` (class 0) always: every row of their matrix is ``e_0``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .annotations import Annotations

__all__ = [
    "SimulatedCrowd",
    "WORKER_CASES",
    "simulate_workers",
    "list_worker_cases",
    "symmetric_matrix",
    "pairflip_matrix",
    "cifar10_confusion_pairs",
]

#: CIFAR-10 class pairs confused by the Max-MIG high-expertise seniors:
#: cat↔dog, deer↔horse, airplane↔bird, automobile↔truck, frog↔ship.
cifar10_confusion_pairs: tuple[tuple[int, int], ...] = ((3, 5), (4, 7), (0, 2), (1, 9), (6, 8))

_ASSIGN_CHUNK = 65536  # items per block when drawing random worker subsets (bounds memory)


@dataclass
class SimulatedCrowd:
    """Sampled annotations and the matrices that generated them.

    Attributes:
        annotations: the sampled crowd labels; ``item`` indexes ``y_true``.
        transitions: ``(M, K, K)`` row-stochastic generating matrices,
            ``transitions[m, k, j] = P(worker m answers j | true class k)``. For the
            ``instance`` case, where each annotation has its own row, this is worker
            ``m``'s row averaged over all items of true class ``k`` (the expected confusion
            of that worker on a random item of class ``k``). For copiers it is the copied
            worker's matrix.
        case: the case name.
        params: the builder's parameters after defaults and overrides were merged.
        seed: the seed of the draw.
        roles: one string per worker (``"worker"``, ``"senior"``, ``"junior"``,
            ``"copier"``, ``"hammer"``, ``"spammer"``, ``"symmetric"``, ``"pairflip"``).
    """

    annotations: Annotations
    transitions: np.ndarray
    case: str
    params: dict[str, Any]
    seed: int = 0
    roles: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    """What a case builder returns: the matrices, the (item, worker) pairs, extras."""

    transitions: np.ndarray  # (M, K, K)
    item: np.ndarray  # (A,)
    worker: np.ndarray  # (A,)
    roles: list[str]
    rows: np.ndarray | None = None  # (A, K) per-annotation label distributions (instance noise)
    copy_of: dict[int, int] = field(default_factory=dict)  # copier -> copied worker


# ----------------------------------------------------------------------------- matrices


def symmetric_matrix(noise: float | np.ndarray, n_classes: int) -> np.ndarray:
    """``(1−ε)·I + ε/(K−1)·(1−I)``: the label is replaced by a uniformly random other class.

    Args:
        noise: ε, a scalar or an array of shape ``(M,)``.
        n_classes: K ≥ 2.

    Returns:
        ``(K, K)`` for a scalar ε, else ``(M, K, K)``.
    """
    eps = np.asarray(noise, dtype=np.float64)
    eye = np.eye(n_classes)
    off = (1.0 - eye) / max(n_classes - 1, 1)
    return (1.0 - eps)[..., None, None] * eye + eps[..., None, None] * off


def pairflip_matrix(noise: float | np.ndarray, n_classes: int) -> np.ndarray:
    """``(1−ε)·I + ε·P`` with ``P[k, (k+1) mod K] = 1``: pair-flip noise.

    Returns ``(K, K)`` for a scalar ε, else ``(M, K, K)``.
    """
    eps = np.asarray(noise, dtype=np.float64)
    eye = np.eye(n_classes)
    shift = np.roll(eye, 1, axis=1)
    return (1.0 - eps)[..., None, None] * eye + eps[..., None, None] * shift


# ----------------------------------------------------------------------------- sampling helpers


def _assign_random(n_items: int, n_workers: int, redundancy: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each item gets ``redundancy`` distinct workers drawn uniformly; item-major order."""
    if not 1 <= redundancy <= n_workers:
        raise ValueError(f"redundancy must be between 1 and n_workers={n_workers}; got {redundancy}")
    if redundancy == n_workers:
        return _assign_all(n_items, n_workers)
    blocks = []
    for start in range(0, n_items, _ASSIGN_CHUNK):
        n = min(_ASSIGN_CHUNK, n_items - start)
        keys = rng.random((n, n_workers))
        # The `redundancy` smallest random keys of a row are a uniform random subset.
        blocks.append(np.sort(np.argpartition(keys, redundancy - 1, axis=1)[:, :redundancy], axis=1))
    worker = np.concatenate(blocks).reshape(-1) if blocks else np.zeros(0, dtype=np.int64)
    item = np.repeat(np.arange(n_items, dtype=np.int64), redundancy)
    return item, worker.astype(np.int64)


def _assign_all(n_items: int, n_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Every worker labels every item; item-major order."""
    item = np.repeat(np.arange(n_items, dtype=np.int64), n_workers)
    worker = np.tile(np.arange(n_workers, dtype=np.int64), n_items)
    return item, worker


def _sample_rows(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sampling: one label per row of ``rows`` (A, K), all rows at once."""
    cdf = np.cumsum(rows, axis=1)
    u = rng.random(rows.shape[0]) * cdf[:, -1]  # scale by the row total: immune to rounding
    # The label is the first j with u < cdf[j] = the number of cdf entries ≤ u.
    lab = (u[:, None] >= cdf).sum(axis=1)
    return np.minimum(lab, rows.shape[1] - 1).astype(np.int64)


def _spread(lo: float, hi: float, n: int) -> np.ndarray:
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"need 0 <= min <= max <= 1; got [{lo}, {hi}]")
    return np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2.0])[:n]


def _check_count(name: str, value: int, minimum: int = 0) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- builders


def _build_symmetric(y: np.ndarray, k: int, rng: np.random.Generator, x: Any, *, n_workers: int = 20, redundancy: int = 3, noise_min: float = 0.1, noise_max: float = 0.6) -> _Plan:
    """Symmetric noise; worker m's rate ε_m evenly spread over [noise_min, noise_max]."""
    m = _check_count("n_workers", n_workers, 1)
    t = symmetric_matrix(_spread(noise_min, noise_max, m), k)
    item, worker = _assign_random(len(y), m, _check_count("redundancy", redundancy, 1), rng)
    return _Plan(t, item, worker, ["symmetric"] * m)


def _build_pairflip(y: np.ndarray, k: int, rng: np.random.Generator, x: Any, *, n_workers: int = 20, redundancy: int = 3, noise_min: float = 0.1, noise_max: float = 0.6) -> _Plan:
    """Pair-flip noise k → k+1 mod K; rates evenly spread over [noise_min, noise_max]."""
    m = _check_count("n_workers", n_workers, 1)
    t = pairflip_matrix(_spread(noise_min, noise_max, m), k)
    item, worker = _assign_random(len(y), m, _check_count("redundancy", redundancy, 1), rng)
    return _Plan(t, item, worker, ["pairflip"] * m)


def _add_juniors_and_copiers(seniors: np.ndarray, k: int, n_juniors: int, junior_label: int, n_copiers: int, copy_source: int) -> tuple[np.ndarray, list[str], dict[int, int]]:
    s = seniors.shape[0]
    n_juniors = _check_count("n_juniors", n_juniors)
    n_copiers = _check_count("n_copiers", n_copiers)
    whole = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))  # noqa: E731  (1.5 or true index nothing)
    if not (whole(junior_label) and 0 <= junior_label < k):
        raise ValueError(f"junior_label must be a class index in [0, {k}); got {junior_label!r}")
    if n_copiers and not (whole(copy_source) and 0 <= copy_source < s):
        raise ValueError(f"copy_source must index a senior worker in [0, {s}); got {copy_source!r}")
    junior = np.zeros((k, k))
    junior[:, junior_label] = 1.0
    parts = [seniors, np.broadcast_to(junior, (n_juniors, k, k)), np.broadcast_to(seniors[copy_source if n_copiers else 0], (n_copiers, k, k))]
    t = np.concatenate(parts, axis=0).copy()
    roles = ["senior"] * s + ["junior"] * n_juniors + ["copier"] * n_copiers
    copy_of = {s + n_juniors + c: int(copy_source) for c in range(n_copiers)}
    return t, roles, copy_of


def _build_maxmig_low(y: np.ndarray, k: int, rng: np.random.Generator, x: Any, *, n_seniors: int = 10, noise: float = 0.8, n_juniors: int = 0, junior_label: int = 0, n_copiers: int = 0, copy_source: int = 0) -> _Plan:
    """Max-MIG low expertise: ``n_seniors`` independent workers with symmetric noise ``noise``.

    ``n_juniors`` workers always answer ``junior_label``; ``n_copiers`` workers repeat the
    labels of senior ``copy_source``. Every worker labels every item.
    """
    s = _check_count("n_seniors", n_seniors, 1)
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1]; got {noise}")
    seniors = np.broadcast_to(symmetric_matrix(noise, k), (s, k, k))
    t, roles, copy_of = _add_juniors_and_copiers(seniors, k, n_juniors, junior_label, n_copiers, copy_source)
    item, worker = _assign_all(len(y), t.shape[0])
    return _Plan(t, item, worker, roles, copy_of=copy_of)


def _default_pairs(k: int) -> list[tuple[int, int]]:
    if k == 10:
        return list(cifar10_confusion_pairs)
    return [(2 * j, 2 * j + 1) for j in range(k // 2)]


def _build_maxmig_high(y: np.ndarray, k: int, rng: np.random.Generator, x: Any, *, n_seniors: int = 5, flip: float = 0.45, n_confused: int = 3, pairs: Any = None, n_juniors: int = 0, junior_label: int = 0, n_copiers: int = 0, copy_source: int = 0) -> _Plan:
    """Max-MIG high expertise: seniors with structured pair confusions.

    Senior ``m`` confuses the ``n_confused`` class pairs ``m, m+1, …`` (mod the number of
    pairs): within such a pair the label flips to the partner class with probability
    ``flip``. Elsewhere it is correct. ``pairs`` defaults to the CIFAR-10 pairs for
    K = 10, else ``(2j, 2j+1)``. Juniors and copiers as in the low-expertise case.
    """
    s = _check_count("n_seniors", n_seniors, 1)
    if not 0.0 <= flip <= 1.0:
        raise ValueError(f"flip must be in [0, 1]; got {flip}")
    pr = [tuple(int(c) for c in p) for p in (pairs if pairs is not None else _default_pairs(k))]
    used = [c for p in pr for c in p]
    if any(len(p) != 2 or p[0] == p[1] for p in pr) or len(set(used)) != len(used) or any(not 0 <= c < k for c in used):
        raise ValueError(f"pairs must be disjoint pairs of distinct class indices in [0, {k}); got {pr}")
    n_conf = min(_check_count("n_confused", n_confused), len(pr))
    seniors = np.broadcast_to(np.eye(k), (s, k, k)).copy()
    for m in range(s):
        for j in range(n_conf):
            a, b = pr[(m + j) % len(pr)]
            seniors[m, a, a] = seniors[m, b, b] = 1.0 - flip
            seniors[m, a, b] = seniors[m, b, a] = flip
    t, roles, copy_of = _add_juniors_and_copiers(seniors, k, n_juniors, junior_label, n_copiers, copy_source)
    item, worker = _assign_all(len(y), t.shape[0])
    return _Plan(t, item, worker, roles, copy_of=copy_of)


def _build_hammer_spammer(y: np.ndarray, k: int, rng: np.random.Generator, x: Any, *, n_workers: int = 20, hammer_fraction: float = 0.3, hammer_accuracy: float = 0.95, redundancy: int = 3) -> _Plan:
    """The first ``round(hammer_fraction·n_workers)`` workers are hammers (symmetric noise,
    accuracy ``hammer_accuracy``); the rest are spammers answering uniformly at random."""
    m = _check_count("n_workers", n_workers, 1)
    if not 0.0 <= hammer_fraction <= 1.0 or not 0.0 <= hammer_accuracy <= 1.0:
        raise ValueError("hammer_fraction and hammer_accuracy must be in [0, 1]")
    n_h = int(round(hammer_fraction * m))
    t = np.empty((m, k, k))
    t[:n_h] = symmetric_matrix(1.0 - hammer_accuracy, k)
    t[n_h:] = 1.0 / k
    item, worker = _assign_random(len(y), m, _check_count("redundancy", redundancy, 1), rng)
    return _Plan(t, item, worker, ["hammer"] * n_h + ["spammer"] * (m - n_h))


def _build_sparse(y: np.ndarray, k: int, rng: np.random.Generator, x: Any, *, n_workers: int = 50, redundancy: int = 3, accuracy_min: float = 0.3, accuracy_max: float = 0.9) -> _Plan:
    """Sparse redundancy: accuracies evenly spread over [accuracy_min, accuracy_max] and
    shuffled over workers; even-numbered workers have symmetric noise, odd-numbered ones
    pair-flip noise; each item is labelled by ``redundancy`` random workers."""
    m = _check_count("n_workers", n_workers, 1)
    acc = rng.permutation(_spread(accuracy_min, accuracy_max, m))
    t = symmetric_matrix(1.0 - acc, k)
    odd = np.arange(m) % 2 == 1
    t[odd] = pairflip_matrix(1.0 - acc[odd], k)
    item, worker = _assign_random(len(y), m, _check_count("redundancy", redundancy, 1), rng)
    return _Plan(t, item, worker, ["pairflip" if o else "symmetric" for o in odd])


def _project(x: np.ndarray, n_out: int, rng: np.random.Generator, chunk: int = 8192) -> np.ndarray:
    """Fixed random projection of flattened ``x`` to ``n_out`` standardised coordinates."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    proj = rng.standard_normal((d, n_out)).astype(np.float32) / np.float32(np.sqrt(d))
    out = np.empty((n, n_out), dtype=np.float64)
    for s in range(0, n, chunk):  # chunked so uint8 images are never converted all at once
        out[s : s + chunk] = flat[s : s + chunk].astype(np.float32) @ proj
    # Centering after projecting equals projecting centred features.
    out -= out.mean(axis=0)
    out /= out.std(axis=0) + 1e-12
    return out


def _build_instance(y: np.ndarray, k: int, rng: np.random.Generator, x: Any, *, n_workers: int = 20, redundancy: int = 3, noise_min: float = 0.2, noise_max: float = 0.5, slope: float = 1.5, max_flip: float = 0.9, n_directions: int = 32, direction_scale: float = 2.0) -> _Plan:
    """Instance-dependent noise from the item features ``x`` (after Xia et al., NeurIPS 2020).

    * Difficulty ``d_i = sigmoid(slope · z_i)`` where ``z_i`` is a fixed random projection of
      the flattened features, standardised over items (so ``2·d_i`` averages about 1).
    * Worker m (base rate ε_m evenly spread over [noise_min, noise_max]) flips item i with
      probability ``ρ_im = min(2·ε_m·d_i, max_flip)``.
    * A flipped label is drawn from ``q_i = softmax over the wrong classes of
      direction_scale · u_i · W[y_i]``, where ``u_i`` are ``n_directions`` standardised random
      projections of x_i and ``W[c] ~ N(0, 1/n_directions)`` is one random
      ``(n_directions, K)`` matrix per true class (the "part-dependent" direction).

    So each annotation has its own row ``ρ_im·q_i + (1−ρ_im)·e_{y_i}``; the returned
    ``transitions[m, c]`` averages worker m's row over all items of class c.
    """
    n = len(y)
    if x is None:
        raise ValueError("worker case 'instance' needs item features: pass x=... (an array with one row per item of y_true, e.g. the data set's x_train)")
    x = np.asarray(x)
    if x.shape[0] != n:
        raise ValueError(f"x has {x.shape[0]} rows but y_true has {n} items")
    m = _check_count("n_workers", n_workers, 1)
    nd = _check_count("n_directions", n_directions, 1)
    eps = _spread(noise_min, noise_max, m)
    if not 0.0 <= max_flip <= 1.0:  # a flip probability: outside [0, 1] the rows are no distributions
        raise ValueError(f"max_flip must be in [0, 1]; got {max_flip!r}")
    z = _project(x, 1 + nd, rng)
    d = 1.0 / (1.0 + np.exp(-slope * z[:, 0]))
    u = z[:, 1:]
    w = rng.standard_normal((k, nd, k)) / np.sqrt(nd)
    logits = np.empty((n, k))
    for c in range(k):  # a loop over classes, not items
        sel = y == c
        logits[sel] = direction_scale * (u[sel] @ w[c])
    logits[np.arange(n), y] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    q = np.exp(logits)
    q /= q.sum(axis=1, keepdims=True)  # (N, K), zero at the true class
    item, worker = _assign_random(n, m, _check_count("redundancy", redundancy, 1), rng)
    rho = np.minimum(2.0 * eps[worker] * d[item], max_flip)
    rows = rho[:, None] * q[item]
    rows[np.arange(len(item)), y[item]] += 1.0 - rho
    # Expected transition of each worker on a random item of each class.
    t = np.tile(np.eye(k), (m, 1, 1))
    rho_all = np.minimum(2.0 * eps[:, None] * d[None, :], max_flip)  # (M, N)
    for c in range(k):
        idx = np.flatnonzero(y == c)
        if idx.size == 0:
            continue
        t[:, c, :] = rho_all[:, idx] @ q[idx] / idx.size
        t[:, c, c] += 1.0 - rho_all[:, idx].mean(axis=1)
    return _Plan(t, item, worker, ["instance"] * m, rows=rows)


Builder = Callable[..., _Plan]

#: name -> (one-line description, builder). Builders take ``(y, n_classes, rng, x, **params)``.
WORKER_CASES: dict[str, tuple[str, Builder]] = {
    "symmetric": ("20 workers, symmetric noise rates spread over [0.1, 0.6], 3 random workers per item", _build_symmetric),
    "pairflip": ("20 workers, pair-flip (k→k+1) noise rates spread over [0.1, 0.6], 3 random workers per item", _build_pairflip),
    "maxmig-low-1": ("Max-MIG low expertise: 10 workers with 80% symmetric noise, all label every item", _build_maxmig_low),
    "maxmig-low-2": ("maxmig-low-1 + 5 juniors who always answer class 0", partial(_build_maxmig_low, n_juniors=5)),
    "maxmig-low-3": ("maxmig-low-1 + 2 copiers who repeat worker 0's labels", partial(_build_maxmig_low, n_copiers=2)),
    "maxmig-high-1": ("Max-MIG high expertise: 5 seniors, each flipping 3 of 5 class pairs (cat↔dog, deer↔horse, airplane↔bird, automobile↔truck, frog↔ship) w.p. 0.45", _build_maxmig_high),
    "maxmig-high-2": ("maxmig-high-1 + 5 juniors who always answer class 0", partial(_build_maxmig_high, n_juniors=5)),
    "maxmig-high-3": ("maxmig-high-1 + 2 copiers who repeat worker 0's labels", partial(_build_maxmig_high, n_copiers=2)),
    "hammer-spammer": ("20 workers: 30% hammers (95% accurate), 70% uniform-random spammers, 3 random workers per item", _build_hammer_spammer),
    "sparse": ("50 workers, accuracies spread over [0.3, 0.9], mixed symmetric/pair-flip, 3 random workers per item", _build_sparse),
    "instance": ("20 workers, instance-dependent noise from the item features (needs x), 3 random workers per item", _build_instance),
}


def list_worker_cases() -> dict[str, str]:
    """Names of the simulated-worker cases with their one-line descriptions."""
    return {name: desc for name, (desc, _) in WORKER_CASES.items()}


def _case_params(builder: Builder) -> dict[str, Any]:
    sig = inspect.signature(builder)
    return {n: p.default for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_worker_case(case: str) -> None:
    """Raise a ``ValueError`` listing the cases unless ``case`` is one of :data:`WORKER_CASES`."""
    if case not in WORKER_CASES:
        raise ValueError(f"unknown worker case '{case}'; choose one of: {', '.join(WORKER_CASES)}")


def check_worker_params(case: str, params: Any) -> None:
    """Raise a ``ValueError`` unless ``params`` is a mapping of parameters worker case ``case``
    takes (a ValueError, as a bad value is: one error line on the command line)."""
    check_worker_case(case)
    if not isinstance(params, Mapping):
        raise ValueError(f"the parameters of worker case '{case}' must be a mapping (JSON such as {{\"redundancy\": 5}}); got {params!r}")
    defaults = _case_params(WORKER_CASES[case][1])
    if unknown := sorted(set(params) - set(defaults)):
        raise ValueError(f"worker case '{case}' got unknown parameter(s) {unknown}; accepted: {sorted(defaults)}")


def simulate_workers(y_true: np.ndarray, case: str, n_classes: int | None = None, seed: int = 0, x: np.ndarray | None = None, **params: Any) -> SimulatedCrowd:
    """Sample crowd labels for items with known true labels.

    Args:
        y_true: ``(N,)`` integer true labels in ``[0, K)``.
        case: a name from :func:`list_worker_cases` (``symmetric``, ``maxmig-low-2``, …).
        n_classes: K; defaults to ``y_true.max() + 1``.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same labels.
        x: item features or images with ``N`` rows; needed only by ``instance``.
        **params: overrides of the case's parameters (e.g. ``n_workers=30``,
            ``redundancy=5``, ``noise_min=0.2``); see the builder docstrings. Unknown
            names raise ``ValueError`` listing the accepted ones.

    Returns:
        A :class:`SimulatedCrowd`: ``annotations`` (item index = position in ``y_true``,
        item-major order), ``transitions`` ``(M, K, K)``, ``case``, the merged ``params``,
        ``seed`` and per-worker ``roles``.
    """
    check_worker_params(case, params)  # the case and its parameters' names, before the labels
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_true must be a non-empty 1-D integer array; got dtype {y.dtype}, shape {y.shape}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError("y_true must hold class indices >= 0 (no missing labels)")
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if k < 2 or y.max() >= k:
        raise ValueError(f"n_classes={k} must be >= 2 and larger than the largest label {int(y.max())}")
    _, builder = WORKER_CASES[case]
    merged = {**_case_params(builder), **params}
    rng = np.random.default_rng(seed)
    plan = builder(y, k, rng, x, **merged)

    rows = plan.rows if plan.rows is not None else plan.transitions[plan.worker, y[plan.item]]
    label = _sample_rows(rows, rng)
    if plan.copy_of:
        # Copiers repeat the very samples of their source on the same item.
        for copier, source in plan.copy_of.items():
            src = np.full(len(y), -1, dtype=np.int64)
            sel = plan.worker == source
            src[plan.item[sel]] = label[sel]
            tgt = plan.worker == copier
            copied = src[plan.item[tgt]]
            if (copied < 0).any():
                raise ValueError(f"copier {copier} labelled items its source worker {source} did not label")
            label[tgt] = copied
    ann = Annotations(plan.item, plan.worker, label, n_items=len(y), n_workers=plan.transitions.shape[0], n_classes=k)
    return SimulatedCrowd(annotations=ann, transitions=np.ascontiguousarray(plan.transitions, dtype=np.float64), case=case, params=merged, seed=int(seed), roles=list(plan.roles))
