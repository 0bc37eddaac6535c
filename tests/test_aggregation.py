"""Tests for kdcrowd.aggregation (offline, CPU, fast)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from kdcrowd.aggregation import (
    METHODS,
    DS_PRIOR,
    DawidSkeneResult,
    SparseWorkersWarning,
    aggregate,
    aggregation_frame,
    dawid_skene,
    majority_vote,
    majority_vote_disagreements,
    majority_vote_winners,
)
from kdcrowd.data.annotations import Annotations

# ----------------------------------------------------------------------------- helpers


def _ann(item, worker, label, n_items=None, n_workers=None, n_classes=None):
    return Annotations(
        np.asarray(item), np.asarray(worker), np.asarray(label),
        n_items=n_items, n_workers=n_workers, n_classes=n_classes,
    )


def _random_transitions(rng, m, k, diag_low=0.6, diag_high=0.9):
    """(m, k, k) row-stochastic, diagonally dominant confusion matrices."""
    diag = rng.uniform(diag_low, diag_high, (m, k))
    off = rng.dirichlet(np.ones(k - 1), (m, k)) * (1 - diag)[..., None]
    t = np.zeros((m, k, k))
    for c in range(k):
        others = [j for j in range(k) if j != c]
        t[:, c, c] = diag[:, c]
        t[:, c, others] = off[:, c]
    return t


def _sample_labels(rng, transitions, true, worker):
    """One label per annotation from row ``transitions[worker, true]``."""
    cum = transitions[worker, true].cumsum(axis=1)
    u = rng.random(len(true))[:, None]
    return np.minimum((u > cum).sum(axis=1), transitions.shape[-1] - 1)


# Hand case: 5 items, 4 workers, 3 classes; item 3 is tied 0/2, item 4 has no labels.
#   item 0: 0 0 1      -> 0   proportions (2/3, 1/3, 0)
#   item 1: 1 1 1 2    -> 1   (0, 3/4, 1/4)
#   item 2: 2          -> 2   (0, 0, 1)
#   item 3: 2 0        -> tie (1/2, 0, 1/2)
HAND = dict(
    item=[0, 0, 0, 1, 1, 1, 1, 2, 3, 3],
    worker=[0, 1, 2, 0, 1, 2, 3, 3, 0, 1],
    label=[0, 0, 1, 1, 1, 1, 2, 2, 2, 0],
)


def _hand():
    return _ann(**HAND, n_items=5, n_workers=4, n_classes=3)


# ------------------------------------------------------------------------ majority vote


def test_majority_vote_hard_and_soft_hand_case():
    ann = _hand()
    labels = majority_vote(ann)
    assert labels.dtype == np.int64 and labels.shape == (5,)
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, -1])
    soft = majority_vote(ann, soft=True)
    expected = np.array(
        [[2 / 3, 1 / 3, 0], [0, 3 / 4, 1 / 4], [0, 0, 1], [1 / 2, 0, 1 / 2], [1 / 3] * 3]
    )
    np.testing.assert_allclose(soft, expected)


def test_majority_vote_items_without_labels():
    # items 1 and 3 of 4 have no annotation
    ann = _ann([0, 0, 2], [0, 1, 0], [1, 1, 0], n_items=4, n_workers=2, n_classes=2)
    np.testing.assert_array_equal(majority_vote(ann), [1, -1, 0, -1])
    np.testing.assert_array_equal(majority_vote(ann, tie_break="random"), [1, -1, 0, -1])
    soft = majority_vote(ann, soft=True)
    np.testing.assert_allclose(soft[[1, 3]], 0.5)
    np.testing.assert_allclose(soft[[0, 2]], [[0, 1], [1, 0]])


def test_majority_vote_tie_breaking():
    # every item tied between classes 1 and 3 (of 4); class 0 and 2 never chosen
    n = 400
    item = np.repeat(np.arange(n), 2)
    worker = np.tile([0, 1], n)
    label = np.tile([3, 1], n)
    ann = _ann(item, worker, label, n_items=n, n_workers=2, n_classes=4)
    np.testing.assert_array_equal(majority_vote(ann, tie_break="lowest"), 1)
    r1 = majority_vote(ann, tie_break="random", seed=1)
    assert set(np.unique(r1)) == {1, 3}  # only tied classes, both used
    assert 0.35 < (r1 == 3).mean() < 0.65
    np.testing.assert_array_equal(r1, majority_vote(ann, tie_break="random", seed=1))
    assert not np.array_equal(r1, majority_vote(ann, tie_break="random", seed=2))
    # no tie: random tie-breaking changes nothing
    np.testing.assert_array_equal(
        majority_vote(_hand(), tie_break="random", seed=5)[[0, 1, 2, 4]], [0, 1, 2, -1]
    )
    with pytest.raises(ValueError, match="tie_break"):
        majority_vote(ann, tie_break="highest")


def test_majority_vote_duplicates_and_weights():
    # worker 0 labels item 0 twice as class 1 -> counts as two votes (crowd-kit convention)
    ann = _ann([0, 0, 0], [0, 0, 1], [1, 1, 0], n_items=1, n_workers=2, n_classes=2)
    assert majority_vote(ann)[0] == 1
    np.testing.assert_allclose(majority_vote(ann, soft=True), [[1 / 3, 2 / 3]])
    # per-worker weights: worker 1 outweighs worker 0's two votes
    w = np.array([1.0, 3.0])
    assert majority_vote(ann, weights=w)[0] == 0
    np.testing.assert_allclose(majority_vote(ann, soft=True, weights=w), [[0.6, 0.4]])
    # equal weighted totals tie -> lowest class
    assert majority_vote(ann, weights=[1.0, 2.0])[0] == 0
    # zero total weight behaves like no labels
    assert majority_vote(ann, weights=[0.0, 0.0])[0] == -1
    with pytest.raises(ValueError, match="per worker"):
        majority_vote(ann, weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="non-negative"):
        majority_vote(ann, weights=[1.0, -1.0])


def test_input_validation_duck_typed():
    ok = SimpleNamespace(item=np.array([0, 1]), worker=np.array([0, 0]),
                         label=np.array([1, 0]), n_items=2, n_workers=1, n_classes=2)
    np.testing.assert_array_equal(majority_vote(ok), [1, 0])
    bad = SimpleNamespace(**{**vars(ok), "label": np.array([1, 2])})
    with pytest.raises(ValueError, match="label"):
        majority_vote(bad)
    with pytest.raises(ValueError, match="aligned"):
        dawid_skene(SimpleNamespace(**{**vars(ok), "worker": np.array([0])}))
    with pytest.raises(TypeError, match="n_classes"):
        majority_vote(SimpleNamespace(item=ok.item, worker=ok.worker, label=ok.label))


# -------------------------------------------------------------------------- Dawid–Skene


def test_dawid_skene_recovers_simulated_confusion_matrices():
    rng = np.random.default_rng(0)
    n, m, k, per_item = 2000, 20, 3, 5
    truth = rng.integers(0, k, n)
    trans = _random_transitions(rng, m, k)
    worker = np.argsort(rng.random((n, m)), axis=1)[:, :per_item].reshape(-1)
    item = np.repeat(np.arange(n), per_item)
    label = _sample_labels(rng, trans, truth[item], worker)
    ann = _ann(item, worker, label, n_items=n, n_workers=m, n_classes=k)

    res = dawid_skene(ann, device="cpu")
    assert isinstance(res, DawidSkeneResult)
    assert res.posteriors.shape == (n, k) and res.posteriors.dtype == np.float64
    assert res.transitions.shape == (m, k, k) and res.priors.shape == (k,)
    np.testing.assert_allclose(res.posteriors.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(res.transitions.sum(-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(res.priors, np.bincount(truth, minlength=k) / n, atol=0.03)
    err = np.abs(res.transitions - trans).mean()
    assert err < 0.05, err
    np.testing.assert_array_equal(res.labels, res.posteriors.argmax(1))
    assert (res.labels == truth).mean() > (majority_vote(ann) == truth).mean()
    assert res.converged and res.n_iter == len(res.log_likelihood) == len(res.objective)

    # proper EM (log-likelihood stopping) recovers them as well, and never decreases it
    full = dawid_skene(ann, criterion="loglik", tol=1e-8)
    assert np.abs(full.transitions - trans).mean() < 0.05
    assert np.all(np.diff(full.log_likelihood) > -1e-9)
    assert full.objective == full.log_likelihood


def test_dawid_skene_beats_majority_vote_with_spammers():
    # 3 good workers (80 % correct) label 70 % of the items; 6 spammers label 90 %:
    # three always answer class 0, three answer uniformly at random. MV follows the
    # spammers; DS learns that their labels carry no information.
    rng = np.random.default_rng(1)
    n, k = 2000, 3
    truth = rng.integers(0, k, n)
    items, workers, labels = [], [], []
    for w in range(9):
        sel = np.flatnonzero(rng.random(n) < (0.7 if w < 3 else 0.9))
        if w < 3:
            wrong = (truth[sel] + rng.integers(1, k, len(sel))) % k
            lab = np.where(rng.random(len(sel)) < 0.8, truth[sel], wrong)
        elif w < 6:
            lab = np.zeros(len(sel), dtype=np.int64)
        else:
            lab = rng.integers(0, k, len(sel))
        items.append(sel), workers.append(np.full(len(sel), w)), labels.append(lab)
    ann = _ann(np.concatenate(items), np.concatenate(workers), np.concatenate(labels),
               n_items=n, n_workers=9, n_classes=k)
    mv_acc = (majority_vote(ann) == truth).mean()
    for criterion in ("crowdkit", "loglik"):
        for prior in (0.0, 1.0):
            res = dawid_skene(ann, criterion=criterion, prior=prior)
            ds_acc = (res.labels == truth).mean()
            assert ds_acc > mv_acc + 0.2, (criterion, prior, ds_acc, mv_acc)
            # the constant spammers' rows all point at class 0 (exactly without the
            # prior; with it, one pseudo-count against ~600 labels moves them < 0.2 %)
            np.testing.assert_allclose(res.transitions[3:6, :, 0], 1.0, atol=1e-6 if prior == 0 else 2e-3)
    full = dawid_skene(ann, criterion="loglik")
    np.testing.assert_allclose(np.diag(full.transitions[:3].mean(0)), 0.8, atol=0.06)


def _one_label_per_worker(k, seed=0, n=2000, per_item=10):
    """``n`` items x ``per_item`` labels, every label from a different worker (n * per_item
    workers with one label each), worker accuracies uniform in [0.65, 0.95]."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    item = np.repeat(np.arange(n), per_item)
    m = n * per_item
    worker = rng.permutation(m)
    correct = rng.random(m) < rng.uniform(0.65, 0.95, m)
    label = np.where(correct, truth[item], (truth[item] + rng.integers(1, k, m)) % k)
    return _ann(item, worker, label, n_items=n, n_workers=m, n_classes=k), truth


@pytest.mark.parametrize("k", [2, 3, 10])
def test_dawid_skene_one_label_per_worker_does_not_collapse(k):
    # 2,000 items, 20,000 workers, one label each. Unregularised (crowd-kit), every row of
    # a worker's matrix puts all mass on the one label they gave, labels carry no
    # information and every item gets the same class; the prior keeps DS at MV's level.
    ann, truth = _one_label_per_worker(k)
    mv_acc = (majority_vote(ann) == truth).mean()
    assert mv_acc > 0.9
    with pytest.warns(SparseWorkersWarning, match=r"20,000 of 20,000 workers \(100%\) gave fewer labels than there are classes"):
        res = dawid_skene(ann)
    acc = (res.labels == truth).mean()
    assert acc >= mv_acc - 0.02, (acc, mv_acc)
    # the same through aggregate(), the entry point of the CLI's --method ds
    with pytest.warns(SparseWorkersWarning):
        labels, _ = aggregate(ann, "ds")
    np.testing.assert_array_equal(labels, res.labels)
    # prior=0 is the unregularised model: it collapses, and the warning says what to do
    with pytest.warns(SparseWorkersWarning, match="prior=0.*--ds-prior"):
        flat = dawid_skene(ann, prior=0)
    assert len(np.unique(flat.labels)) == 1
    assert (flat.labels == truth).mean() < 1 / k + 0.05


def test_dawid_skene_prior_shrinks_toward_pooled_matrix():
    # worker 0 labels one item (class 1) that everyone else calls 1; the other workers
    # label many items correctly 80 % of the time. With the prior the lone worker's matrix
    # is close to the pooled one (diagonal ~0.8), without it every row says "always 1".
    rng = np.random.default_rng(3)
    n, k, m_pool = 400, 2, 6
    truth = rng.integers(0, k, n)
    item = np.repeat(np.arange(n), 3)
    worker = np.stack([rng.permutation(m_pool)[:3] for _ in range(n)]).reshape(-1)
    label = np.where(rng.random(3 * n) < 0.8, truth[item], 1 - truth[item])
    first1 = int(np.flatnonzero(truth == 1)[0])
    item = np.append(item, first1)
    worker = np.append(worker, m_pool)
    label = np.append(label, 1)
    ann = _ann(item, worker, label, n_items=n, n_workers=m_pool + 1, n_classes=k)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 6 of 7 workers have many labels: no warning
        reg = dawid_skene(ann, prior=1.0)
    raw = dawid_skene(ann, prior=0.0)
    np.testing.assert_allclose(raw.transitions[m_pool, :, 1], 1.0, atol=1e-6)
    pooled_diag = np.diag(reg.transitions[:m_pool].mean(0))
    np.testing.assert_allclose(pooled_diag, 0.8, atol=0.05)
    # row 0 (true class 0): no count from the worker's own label -> exactly the pooled row
    assert reg.transitions[m_pool, 0, 0] == pytest.approx(pooled_diag[0], abs=0.05)
    # row 1: one pseudo-label's worth of the pooled row plus the one observed label
    assert 0.85 < reg.transitions[m_pool, 1, 1] < 0.95
    # many labels: the prior barely moves a worker's own matrix
    np.testing.assert_allclose(reg.transitions[:m_pool], raw.transitions[:m_pool], atol=0.01)
    with pytest.raises(ValueError, match="--ds-prior"):
        dawid_skene(ann, prior=-1)
    with pytest.raises(ValueError, match="--ds-prior"):
        dawid_skene(ann, prior=float("nan"))
    assert DS_PRIOR > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dawid_skene(_one_label_per_worker(2, n=50)[0], warn=False)


def test_dawid_skene_unlabelled_items_unused_workers_and_classes():
    # item 2 has no labels, worker 3 never labels, worker 0 only ever says 0
    ann = _ann([0, 0, 1, 1, 3, 3], [0, 1, 0, 2, 1, 2], [0, 0, 0, 1, 1, 1],
               n_items=4, n_workers=4, n_classes=2)
    res = dawid_skene(ann, prior=0, warn=False)
    assert res.labels[2] == -1 and (res.labels[[0, 1, 3]] >= 0).all()
    np.testing.assert_allclose(res.posteriors[2], res.priors)
    np.testing.assert_allclose(res.transitions[3], 0.5)  # no data: uniform rows
    np.testing.assert_allclose(res.transitions[0, :, 1], 0.0)  # label never given
    np.testing.assert_allclose(res.transitions.sum(-1), 1.0)
    # with the prior, a worker without data gets the pooled matrix (the prior's mean),
    # and a label the worker never gave keeps the pooled row's mass
    reg = dawid_skene(ann, warn=False)
    q = reg.posteriors[ann.item]  # the posteriors of the last M-step, per annotation
    pooled = np.stack([q[ann.label == y].sum(0) for y in range(2)], axis=1)  # [true, observed]
    np.testing.assert_allclose(reg.transitions[3], pooled / pooled.sum(1, keepdims=True))
    assert (reg.transitions[0, :, 1] > 0).all()
    np.testing.assert_allclose(reg.transitions.sum(-1), 1.0)
    assert reg.labels[2] == -1 and (reg.labels[[0, 1, 3]] >= 0).all()
    # additive smoothing gives every cell mass
    sm = dawid_skene(ann, prior=0, smoothing=1.0, warn=False)
    assert (sm.transitions > 0).all()
    np.testing.assert_allclose(sm.transitions.sum(-1), 1.0)


def test_dawid_skene_options_and_device():
    ann = _hand()
    r0 = dawid_skene(ann, n_iter=0)
    assert r0.n_iter == 0 and r0.log_likelihood == []
    np.testing.assert_allclose(r0.posteriors[:4], majority_vote(ann, soft=True)[:4])
    hard = dawid_skene(ann, init="mv", n_iter=0)
    np.testing.assert_allclose(hard.posteriors[3], [1, 0, 0])  # tie -> lowest, one-hot
    custom = np.full((5, 3), 1 / 3)
    custom[:, 2] = 0.5
    custom[:, :2] = 0.25
    np.testing.assert_allclose(dawid_skene(ann, init=custom, n_iter=0).posteriors[:4], custom[:4])
    r32 = dawid_skene(ann, device=torch.device("cpu"), dtype=torch.float32)
    assert r32.posteriors.dtype == np.float32
    np.testing.assert_allclose(r32.posteriors, dawid_skene(ann).posteriors, atol=1e-4)
    for kw, msg in [
        (dict(init="uniform"), "init"),
        (dict(init=np.ones((2, 3))), "shape"),
        (dict(criterion="elbo2"), "criterion"),
        (dict(n_iter=-1), "n_iter"),
        (dict(smoothing=-0.1), "smoothing"),
    ]:
        with pytest.raises(ValueError, match=msg):
            dawid_skene(ann, **kw)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            dawid_skene(ann, device="cuda")


def test_empty_annotations():
    empty = SimpleNamespace(item=np.zeros(0, np.int64), worker=np.zeros(0, np.int64),
                            label=np.zeros(0, np.int64), n_items=3, n_workers=2, n_classes=2)
    np.testing.assert_array_equal(majority_vote(empty), -1)
    res = dawid_skene(empty)
    np.testing.assert_array_equal(res.labels, -1)
    np.testing.assert_allclose(res.posteriors, 0.5)
    assert res.converged


# ------------------------------------------------------------------------- entry points


def test_aggregate_methods_aliases_and_errors():
    ann = _hand()
    assert METHODS == ("mv", "mv-soft", "ds", "glad", "mace", "wawa", "zbs", "one-coin-ds", "mmsr")
    labels, post = aggregate(ann, "mv")
    np.testing.assert_array_equal(labels, majority_vote(ann))
    np.testing.assert_allclose(post, majority_vote(ann, soft=True))
    l2, p2 = aggregate(ann, "mv-soft", tie_break="random", seed=3, device="cpu")
    np.testing.assert_allclose(p2, post)
    assert l2[3] in (0, 2)
    l3, p3 = aggregate(ann, "DS", n_iter=5, device="cpu")
    ref = dawid_skene(ann, n_iter=5)
    np.testing.assert_array_equal(l3, ref.labels)
    np.testing.assert_allclose(p3, ref.posteriors)
    np.testing.assert_array_equal(aggregate(ann, "dawid_skene")[0], dawid_skene(ann).labels)
    np.testing.assert_array_equal(aggregate(ann, "majority_vote")[0], labels)
    with pytest.raises(ValueError, match="unknown aggregation method 'bayes'"):
        aggregate(ann, "bayes")
    with pytest.raises(ValueError, match="n_iter"):
        aggregate(ann, "mv", n_iter=3)
    with pytest.raises(ValueError, match="tie_break"):
        aggregate(ann, "ds", tie_break="random")


def test_aggregation_frame_original_ids_and_classes():
    df = pd.DataFrame({
        "task": ["b", "b", "a", "a", "a", "c"],
        "worker": ["w1", "w2", "w1", "w2", "w3", "w3"],
        "label": ["cat", "cat", "dog", "cat", "dog", "bird"],
    })
    ann = Annotations.from_long(df)
    frame = aggregation_frame(ann, "mv")
    assert list(frame.columns) == ["item", "label", "p_bird", "p_cat", "p_dog"]
    got = frame.set_index("item")
    assert got.loc["a", "label"] == "dog" and got.loc["b", "label"] == "cat"
    assert got.loc["c", "label"] == "bird"
    assert got.loc["a", "p_dog"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(frame.filter(like="p_").sum(axis=1), 1.0)
    ds = aggregation_frame(ann, "ds")
    assert list(ds.columns) == list(frame.columns) and len(ds) == 3

    # integer classes and an item nobody labelled (declared through `items`)
    ann2 = Annotations.from_long(
        pd.DataFrame({"item": [10, 10, 30], "worker": [1, 2, 1], "label": [1, 1, 0]}),
        items=[10, 20, 30],
    )
    f2 = aggregation_frame(ann2, "mv")
    assert list(f2.columns) == ["item", "label", "p_0", "p_1"]
    assert list(f2["item"]) == [10, 20, 30]
    assert f2["label"].iloc[0] == 1 and f2["label"].iloc[2] == 0
    assert pd.isna(f2["label"].iloc[1])
    np.testing.assert_allclose(f2.loc[1, ["p_0", "p_1"]].to_numpy(float), 0.5)
    with pytest.raises(ValueError, match="unknown aggregation method"):
        aggregation_frame(ann2, "median")


def test_aggregation_frame_rejects_colliding_class_names():
    # classes 1 and "1" both name a column "p_1": one used to overwrite the other
    ann = Annotations(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0, 1, 1]),
                      classes=np.array([1, "1"], dtype=object))
    assert ann.n_classes == 2
    with pytest.raises(ValueError, match="'p_1'"):
        aggregation_frame(ann, "mv")
    # from answers JSON the two spellings are one class, so the table is complete
    ann2 = Annotations.from_answers_json({"0": {"a": 1, "b": "1"}, "1": {"a": 0}})
    f = aggregation_frame(ann2, "mv")
    assert list(f.columns) == ["item", "label", "p_0", "p_1"]
    assert list(f["label"]) == [1, 0]


def test_aggregate_mv_counts_votes_once(monkeypatch):
    import kdcrowd.aggregation as agg

    rng = np.random.default_rng(5)
    a = 4000
    ann = _ann(rng.integers(0, 600, a), rng.integers(0, 30, a), rng.integers(0, 4, a),
               n_items=700, n_workers=30, n_classes=4)
    weights = rng.uniform(0, 2, 30)
    weights[3] = 0.0
    cases = [{}, {"tie_break": "random", "seed": 11}, {"tie_break": "random", "seed": None},
             {"weights": weights}, {"weights": weights, "tie_break": "random", "seed": 2}]
    calls = []
    real = agg._vote_counts
    monkeypatch.setattr(agg, "_vote_counts", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    for kw in cases:
        for method in ("mv", "mv-soft"):
            calls.clear()
            labels, post = aggregate(ann, method, **kw)
            assert len(calls) == 1, (method, kw)
            if kw.get("seed", 0) is None:
                assert set(labels[labels >= 0]) <= set(range(4))
                continue
            # bit-identical to the separate hard and soft votes
            hard = majority_vote(ann, **kw)
            soft = majority_vote(ann, soft=True, weights=kw.get("weights"))
            assert labels.dtype == hard.dtype and post.dtype == soft.dtype
            np.testing.assert_array_equal(labels, hard)
            np.testing.assert_array_equal(post, soft)
    with pytest.raises(ValueError, match="tie_break"):
        aggregate(ann, "mv", tie_break="highest")


def test_dawid_skene_device_auto():
    ann = _hand()
    ref = dawid_skene(ann, n_iter=5)
    res = dawid_skene(ann, n_iter=5, device="auto")
    want = torch.float64 if not torch.cuda.is_available() else torch.float32
    assert res.posteriors.dtype == (np.float64 if want == torch.float64 else np.float32)
    np.testing.assert_allclose(res.posteriors, ref.posteriors, atol=1e-4)
    labels, _ = aggregate(ann, "ds", n_iter=5, device="auto")
    np.testing.assert_array_equal(labels, ref.labels)
    assert aggregate(ann, "mv", device="auto")[0].tolist() == majority_vote(ann).tolist()
    with pytest.raises((ValueError, RuntimeError)):
        dawid_skene(ann, device="automatic")


# ---------------------------------------------- truth-inference data sets vs crowd-kit


def _truth_dir() -> Path | None:
    roots = []
    if os.environ.get("KDCROWD_DATA"):
        roots.append(Path(os.environ["KDCROWD_DATA"]))
    roots.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for root in roots:
        for d in (root / "truth_inference", root):
            if (d / "bird_labels.csv.gz").is_file():
                return d
    return None


TRUTH_SETS = [
    "bird", "dog", "rte", "product", "sentiment_zheng", "cf_amt", "zencrowd_us",
    "zencrowd_in", "zencrowd_all", "cf", "sentiment_polarity", "sentiment_polarity_amt",
    # the three largest (88k-217k annotations): a few seconds each
    *(pytest.param(name, marks=pytest.mark.slow) for name in ("trec", "relevance", "fact_eval")),
]


@pytest.mark.parametrize("name", TRUTH_SETS)
def test_against_crowdkit_on_truth_inference_sets(name):
    data_dir = _truth_dir()
    if data_dir is None:
        pytest.skip("truth-inference data not found (set KDCROWD_DATA)")
    ck = pytest.importorskip("crowdkit.aggregation")
    df = pd.read_csv(data_dir / f"{name}_labels.csv.gz")
    gold = pd.read_csv(data_dir / f"{name}_truth.csv.gz").set_index("item")["truth"]
    ann = Annotations.from_long(df, duplicates="keep")  # duplicates kept, as crowd-kit
    assert len(ann.item) == len(df)
    item_ids, classes = np.asarray(ann.item_ids), np.asarray(ann.classes)
    cdf = df.rename(columns={"item": "task"})

    def on_gold(dense_labels):
        s = pd.Series(classes[dense_labels], index=item_ids)
        return s.reindex(gold.index)

    # crowd-kit 1.4 on pandas 3 emits a deprecation warning per pandas call (~10 per EM
    # iteration); recording them makes the comparison several times slower
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ck_soft = ck.MajorityVote().fit_predict_proba(cdf)
        ck_mv = ck.MajorityVote().fit_predict(cdf)
        ck_ds = ck.DawidSkene(n_iter=100)
        ck_labels = ck_ds.fit_predict(cdf)
    ck_soft = ck_soft.reindex(index=item_ids, columns=classes)
    ck_mv = ck_mv.reindex(item_ids).to_numpy()
    ck_labels = ck_labels.reindex(item_ids).to_numpy()

    # majority vote: identical vote proportions; identical labels where there is no tie
    kd_soft = majority_vote(ann, soft=True)
    np.testing.assert_allclose(kd_soft, ck_soft.fillna(0).to_numpy(), atol=1e-12)
    kd_mv = majority_vote(ann)
    top2 = np.sort(kd_soft, axis=1)[:, -2:]
    untied = top2[:, 1] > top2[:, 0]
    np.testing.assert_array_equal(classes[kd_mv[untied]], ck_mv[untied])
    # tied items: the lowest tied class index wins (first maximum of the raw vote counts);
    # most sets have ties (e.g. dog 50, rte 65, relevance 5168; bird and product none)
    counts = np.zeros((ann.n_items, ann.n_classes), dtype=np.int64)
    np.add.at(counts, (ann.item, ann.label), 1)
    np.testing.assert_array_equal(kd_mv[~untied], counts[~untied].argmax(1))

    # Dawid–Skene without the prior: same labels, same gold accuracy, same number of
    # iterations, same posteriors
    res = dawid_skene(ann, n_iter=100, device="cpu", prior=0, warn=False)
    agreement = (classes[res.labels] == ck_labels).mean()
    assert agreement >= 0.99, agreement
    kd_acc = (on_gold(res.labels) == gold).mean()
    ck_acc = (pd.Series(ck_labels, index=item_ids).reindex(gold.index) == gold).mean()
    assert abs(kd_acc - ck_acc) <= 0.005, (kd_acc, ck_acc)
    assert res.n_iter == len(ck_ds.loss_history_)
    ck_post = ck_ds.probas_.reindex(index=item_ids, columns=classes).to_numpy()
    np.testing.assert_allclose(res.posteriors, ck_post, atol=1e-6)

    # the regularised default never loses more than 0.5 points of crowd-kit's gold
    # accuracy (measured: at most -0.3 on trec; gains of +0.7 on cf_amt, +1.0 on
    # zencrowd_us and +6 on cf, where 76 % of the 461 workers gave fewer labels than
    # there are classes -- the one set on which it warns)
    per_worker = np.bincount(ann.worker, minlength=ann.n_workers)
    sparse = 2 * (per_worker < ann.n_classes).sum() > ann.n_workers
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = dawid_skene(ann, n_iter=100, device="cpu")
    warned = any(issubclass(w.category, SparseWorkersWarning) for w in caught)
    assert warned == sparse, (name, warned, sparse)
    reg_acc = (on_gold(reg.labels) == gold).mean()
    assert reg_acc >= ck_acc - 0.005, (name, reg_acc, ck_acc)


def test_dawid_skene_sparse_and_gather_paths_agree(monkeypatch):
    # the CPU runs S @ log T and S^T @ q on sparse CSR matrices; accelerators gather and
    # index_add_ -- both paths, on the CPU here, must give the same EM run
    import kdcrowd.aggregation as agg

    rng = np.random.default_rng(7)
    n, m, k, a = 600, 25, 4, 4000
    item = rng.integers(0, n - 5, a)  # 5 items without labels
    worker = rng.integers(0, m, a)
    label = np.where(rng.random(a) < 0.6, item % k, rng.integers(0, k, a))
    item, worker, label = np.append(item, item[:50]), np.append(worker, worker[:50]), np.append(label, label[:50])  # duplicates
    ann = _ann(item, worker, label, n_items=n, n_workers=m + 1, n_classes=k)  # one worker without labels
    for kw in ({"prior": 0.0}, {}, {"criterion": "loglik", "smoothing": 0.5}):
        monkeypatch.setattr(agg, "_CPU_SPARSE", True)
        sparse = dawid_skene(ann, **kw)
        monkeypatch.setattr(agg, "_CPU_SPARSE", False)
        dense = dawid_skene(ann, **kw)
        assert sparse.n_iter == dense.n_iter > 1, kw
        np.testing.assert_array_equal(sparse.labels, dense.labels)
        np.testing.assert_allclose(sparse.posteriors, dense.posteriors, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sparse.transitions, dense.transitions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sparse.objective, dense.objective, rtol=1e-12)


def _sparse_crowd(seed: int, n: int = 300, m: int = 40, k: int = 3, per: int = 4) -> SimpleNamespace:
    """``per`` labels an item from workers of accuracy 0.4-0.95, errors uniform."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    acc = rng.uniform(0.4, 0.95, m)
    items = np.repeat(np.arange(n), per)
    workers = np.concatenate([rng.choice(m, per, replace=False) for _ in range(n)])
    label = np.where(rng.random(len(items)) < acc[workers], y[items], (y[items] + rng.integers(1, k, len(items))) % k)
    return SimpleNamespace(item=items, worker=workers, label=label, n_items=n, n_workers=m, n_classes=k)


def test_ds_gives_a_class_nobody_chose_no_items() -> None:
    """A declared class no worker gave (classes coded 1..K read as 0..K, --classes naming one
    more) keeps prior and posterior 0, so DS's labels are those of the crowd without it; its
    eps-floored prior had taken mass from ambiguous items (3 items with prior=0 and 53 with
    criterion='loglik' on a real binary crowd). A gold item of that class makes it a class."""
    two = _sparse_crowd(1, k=2)
    three = SimpleNamespace(**{**vars(two), "n_classes": 3})
    for kw in ({}, {"prior": 0.0}, {"criterion": "loglik"}, {"prior": 0.0, "criterion": "loglik"}):
        r2, r3 = dawid_skene(two, warn=False, **kw), dawid_skene(three, warn=False, **kw)
        assert (r3.posteriors[:, 2] == 0).all() and r3.priors[2] == 0, kw
        np.testing.assert_array_equal(r3.labels, r2.labels)
        np.testing.assert_allclose(r3.posteriors[:, :2], r2.posteriors, atol=1e-12)
        np.testing.assert_allclose(r3.transitions[:, 2], 1 / 3)  # no evidence on that row: uniform
    gold = np.full(two.n_items, -1)
    gold[0] = 2
    r = dawid_skene(three, gold=gold, warn=False)
    assert r.labels[0] == 2 and r.priors[2] > 0


def test_ds_loglik_does_not_stop_on_a_dip() -> None:
    """With prior > 0 EM maximises the posterior and the log-likelihood can dip; 'loglik'
    stopped at the first dip as if converged (its step below tol), it now stops on a change
    of less than tol either way."""
    r = dawid_skene(_sparse_crowd(5), criterion="loglik", tol=1e-10, n_iter=2000, warn=False)
    steps = np.diff(r.log_likelihood)
    assert (steps < -1e-10).any()  # this crowd's curve dips by more than tol
    assert r.converged and abs(steps[-1]) < 1e-10


def test_majority_vote_winners_keeps_every_tied_class() -> None:
    # item 0: a tie of classes 0 and 2; item 1: class 1 alone; item 2: no label; item 3: a three-way tie
    ann = _ann([0, 0, 1, 1, 3, 3, 3], [0, 1, 0, 1, 0, 1, 2], [2, 0, 1, 1, 0, 1, 2], n_items=4, n_classes=3)
    w = majority_vote_winners(ann)
    assert w.tolist() == [[True, False, True], [False, True, False], [False, False, False], [True, True, True]]
    hard = majority_vote(ann)  # the one label majority vote chooses is always among them
    assert all(w[i, hard[i]] for i in (0, 1, 3)) and hard[2] == -1
    # a label among a tie's classes agrees; one outside disagrees; an item without labels never does
    assert majority_vote_disagreements(w, [2, 1, 0, 1]).tolist() == [False, False, False, False]
    assert majority_vote_disagreements(w, [1, 0, 1, 2]).tolist() == [True, True, False, False]
