"""Simulated workers: reproducibility, shapes, and empirical confusions matching the matrices."""

from __future__ import annotations

import numpy as np
import pytest

from kdcrowd.data.simulate import (
    WORKER_CASES,
    list_worker_cases,
    pairflip_matrix,
    simulate_workers,
    symmetric_matrix,
)

N, K = 20000, 10
CASES = list(list_worker_cases())


@pytest.fixture(scope="module")
def truth() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(123)
    y = rng.integers(0, K, N)
    x = (rng.normal(size=(N, 16)) + 0.3 * y[:, None]).astype(np.float32)
    return y, x


@pytest.fixture(scope="module")
def crowds(truth) -> dict:
    y, x = truth
    return {case: simulate_workers(y, case, seed=7, x=x) for case in CASES}


def majority_vote_accuracy(ann, y: np.ndarray) -> float:
    """Majority vote, lowest class index wins ties."""
    k = ann.n_classes
    counts = np.bincount(ann.item * k + ann.label, minlength=ann.n_items * k).reshape(ann.n_items, k)
    return float((counts.argmax(1) == y).mean())


def confusion_counts(sim, y: np.ndarray) -> np.ndarray:
    a = sim.annotations
    m, k = a.n_workers, a.n_classes
    flat = (a.worker * k + y[a.item]) * k + a.label
    return np.bincount(flat, minlength=m * k * k).reshape(m, k, k).astype(np.float64)


def wide(sim) -> np.ndarray:
    a = sim.annotations
    w = np.full((a.n_items, a.n_workers), -1)
    w[a.item, a.worker] = a.label
    return w


def test_registry_lists_every_case():
    assert set(CASES) == set(WORKER_CASES)
    for name in ["symmetric", "pairflip", "hammer-spammer", "sparse", "instance"] + [f"maxmig-{e}-{i}" for e in ("low", "high") for i in (1, 2, 3)]:
        assert name in CASES
        assert isinstance(list_worker_cases()[name], str) and list_worker_cases()[name]


@pytest.mark.parametrize("case", CASES)
def test_reproducible_and_well_formed(case, truth, crowds):
    y, x = truth
    sim = crowds[case]
    again = simulate_workers(y, case, seed=7, x=x)
    other = simulate_workers(y, case, seed=8, x=x)
    a = sim.annotations
    for name in ("item", "worker", "label"):
        np.testing.assert_array_equal(getattr(a, name), getattr(again.annotations, name))
    np.testing.assert_array_equal(sim.transitions, again.transitions)
    assert not (len(a.label) == len(other.annotations.label) and np.array_equal(a.label, other.annotations.label))

    m = a.n_workers
    assert sim.transitions.shape == (m, K, K)
    assert (sim.transitions >= 0).all()
    np.testing.assert_allclose(sim.transitions.sum(-1), 1.0, atol=1e-12)
    assert a.n_items == N and a.n_classes == K
    assert len(sim.roles) == m and sim.case == case and sim.seed == 7
    assert a.label.min() >= 0 and a.label.max() < K
    # Every item is labelled, and no worker labels an item twice.
    assert np.bincount(a.item, minlength=N).min() >= 1
    assert len(np.unique(a.item * m + a.worker)) == len(a.item)


@pytest.mark.parametrize("case", CASES)
def test_empirical_confusion_matches_transitions(case, truth, crowds):
    y, _ = truth
    sim = crowds[case]
    c = confusion_counts(sim, y)
    n = c.sum(-1, keepdims=True)
    t = sim.transitions
    rows = np.broadcast_to(n >= 200, t.shape)
    emp = c / np.maximum(n, 1)
    # Binomial tolerance on every entry of every well-sampled row: 5 standard deviations of
    # the count plus 5 counts (for rare entries, where the normal approximation is poor);
    # entries with probability zero must never occur.
    tol = (5 * np.sqrt(n * t * (1 - t)) + 5) / np.maximum(n, 1)
    assert (np.abs(emp - t)[rows] <= tol[rows]).all()
    assert (c[t == 0] == 0).all()
    big = np.broadcast_to(n >= 1500, t.shape)
    if big.any():
        assert np.abs(emp - t)[big].max() < 0.03


@pytest.mark.parametrize("case", ["maxmig-low-2", "maxmig-high-2"])
def test_juniors_always_answer_zero(case, crowds):
    sim = crowds[case]
    a = sim.annotations
    juniors = np.flatnonzero(np.array(sim.roles) == "junior")
    assert len(juniors) == 5
    assert (a.label[np.isin(a.worker, juniors)] == 0).all()
    np.testing.assert_array_equal(sim.transitions[juniors][:, :, 0], 1.0)


@pytest.mark.parametrize("case", ["maxmig-low-3", "maxmig-high-3"])
def test_copiers_repeat_their_source(case, crowds):
    sim = crowds[case]
    w = wide(sim)
    copiers = np.flatnonzero(np.array(sim.roles) == "copier")
    src = sim.params["copy_source"]
    assert len(copiers) == 2
    for c in copiers:
        np.testing.assert_array_equal(w[:, c], w[:, src])
        np.testing.assert_array_equal(sim.transitions[c], sim.transitions[src])


def test_maxmig_every_worker_labels_every_item(crowds):
    for case in CASES:
        if case.startswith("maxmig"):
            assert (wide(crowds[case]) >= 0).all()


def test_majority_vote_fails_with_juniors(truth, crowds):
    y, _ = truth
    low1 = majority_vote_accuracy(crowds["maxmig-low-1"].annotations, y)
    low2 = majority_vote_accuracy(crowds["maxmig-low-2"].annotations, y)
    high1 = majority_vote_accuracy(crowds["maxmig-high-1"].annotations, y)
    high2 = majority_vote_accuracy(crowds["maxmig-high-2"].annotations, y)
    assert low1 > 0.3  # 10 independent 20%-accurate workers still beat chance clearly
    assert low2 < 0.15 and low2 < low1 - 0.15  # 5 identical class-0 votes win most items
    assert high1 > 0.85
    assert high2 < high1 - 0.3


def test_low_expertise_interpretation():
    t = simulate_workers(np.arange(10), "maxmig-low-1").transitions[0]
    np.testing.assert_allclose(np.diag(t), 0.2)
    np.testing.assert_allclose(t[0, 1:], 0.8 / 9)


def test_high_expertise_pairs_on_cifar10():
    sim = simulate_workers(np.arange(10), "maxmig-high-1")
    t = sim.transitions
    pairs = {(3, 5), (4, 7), (0, 2), (1, 9), (6, 8)}
    for m in range(5):
        off = {(a, b) for a, b in zip(*np.nonzero(t[m] * (1 - np.eye(10)))) if a < b}
        assert len(off) == 3 and off <= pairs
        for a, b in off:
            assert t[m, a, b] == pytest.approx(0.45) and t[m, b, a] == pytest.approx(0.45)
    # Every pair is confused by some but not all seniors.
    per_pair = {p: sum(t[m, p[0], p[1]] > 0 for m in range(5)) for p in pairs}
    assert set(per_pair.values()) == {3}


def test_hammers_and_spammers(truth, crowds):
    y, _ = truth
    sim = crowds["hammer-spammer"]
    a = sim.annotations
    correct = a.label == y[a.item]
    roles = np.array(sim.roles)[a.worker]
    assert correct[roles == "hammer"].mean() == pytest.approx(0.95, abs=0.01)
    assert correct[roles == "spammer"].mean() == pytest.approx(0.1, abs=0.01)


def test_sparse_spread_and_redundancy(truth, crowds):
    y, _ = truth
    sim = crowds["sparse"]
    a = sim.annotations
    assert a.n_workers == 50 and len(a.item) == 3 * N
    acc = np.diagonal(sim.transitions, axis1=1, axis2=2)[:, 0]
    assert acc.min() == pytest.approx(0.3) and acc.max() == pytest.approx(0.9)
    assert set(sim.roles) == {"symmetric", "pairflip"}


def test_instance_noise_depends_on_the_item(truth):
    y, x = truth
    sim = simulate_workers(y[:5000], "instance", x=x[:5000], n_workers=20, redundancy=20)
    base = simulate_workers(y[:5000], "symmetric", n_workers=20, redundancy=20, noise_min=0.2, noise_max=0.5)
    def per_item_error_var(s):
        a = s.annotations
        err = np.bincount(a.item, weights=(a.label != y[:5000][a.item]), minlength=5000)
        return err.var()
    # Item-level flip rates make the per-item error counts over-dispersed.
    assert per_item_error_var(sim) > 1.5 * per_item_error_var(base)


def test_instance_needs_features(truth):
    y, _ = truth
    with pytest.raises(ValueError, match="needs item features"):
        simulate_workers(y, "instance")
    with pytest.raises(ValueError, match="rows"):
        simulate_workers(y, "instance", x=np.zeros((3, 2)))


def test_overrides_and_errors(truth):
    y, _ = truth
    sim = simulate_workers(y[:100], "symmetric", n_workers=7, redundancy=7, noise_min=0.0, noise_max=0.0)
    assert sim.annotations.n_workers == 7 and len(sim.annotations.item) == 700
    np.testing.assert_array_equal(sim.annotations.label, y[:100][sim.annotations.item])
    assert sim.params["n_workers"] == 7 and sim.params["redundancy"] == 7
    with pytest.raises(ValueError, match="symmetric"):
        simulate_workers(y, "nope")
    with pytest.raises(ValueError, match="accepted"):
        simulate_workers(y, "symmetric", bogus=1)
    with pytest.raises(ValueError, match="redundancy"):
        simulate_workers(y, "symmetric", n_workers=2, redundancy=3)
    with pytest.raises(ValueError, match="n_classes"):
        simulate_workers(y, "symmetric", n_classes=3)


def test_general_k_pairs_and_matrices():
    sim = simulate_workers(np.arange(6) % 6, "maxmig-high-1", n_classes=6)
    off = {(a, b) for m in range(5) for a, b in zip(*np.nonzero(sim.transitions[m] * (1 - np.eye(6)))) if a < b}
    assert off == {(0, 1), (2, 3), (4, 5)}
    s = symmetric_matrix(0.3, 4)
    np.testing.assert_allclose(s, [[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]])
    p = pairflip_matrix(np.array([0.25]), 3)
    np.testing.assert_allclose(p[0], [[0.75, 0.25, 0], [0, 0.75, 0.25], [0.25, 0, 0.75]])


def test_copy_source_is_ignored_without_copiers():
    """copy_source only has to index a senior when there are copiers (it raised IndexError)."""
    y = np.random.default_rng(0).integers(0, 10, 200)
    sim = simulate_workers(y, "maxmig-low-1", n_classes=10, seed=0, n_seniors=2, n_copiers=0, copy_source=5)
    assert sim.transitions.shape[1:] == (10, 10)
    with pytest.raises(ValueError, match="copy_source"):
        simulate_workers(y, "maxmig-low-1", n_classes=10, seed=0, n_seniors=2, n_copiers=1, copy_source=5)


def test_bad_worker_parameters_are_value_errors_checked_before_the_data_is_read():
    """Unknown names and a non-mapping were TypeErrors (a traceback on the command line,
    exit 1), checked only after the data set was read; a junior_label or copy_source of 1.5
    or true reached numpy; the instance case took any max_flip (rows of -0.5 and 1.5)."""
    from kdcrowd.data.datasets import check_dataset_request

    y = np.arange(200) % 4
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bogus'\]"):
        simulate_workers(y, "symmetric", bogus=1)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bogus'\]"):
        check_dataset_request("digits", "symmetric", {"bogus": 1})
    with pytest.raises(ValueError, match="must be a mapping"):
        check_dataset_request("digits", "symmetric", 5)
    for case, name, bad in (("maxmig-low-2", "junior_label", 1.5), ("maxmig-low-2", "junior_label", True), ("maxmig-low-3", "copy_source", 1.5), ("maxmig-low-3", "copy_source", True)):
        with pytest.raises(ValueError, match=f"{name} must"):
            simulate_workers(y, case, **{name: bad})
    x = np.random.default_rng(0).normal(size=(200, 5))
    for bad in (-0.5, 1.5):
        with pytest.raises(ValueError, match="max_flip must be in"):
            simulate_workers(y, "instance", x=x, max_flip=bad)
