"""Gold questions in the aggregators of :mod:`kdcrowd.aggregators`: one-coin DS, GLAD and
MACE clamp the gold items' posteriors (as Dawid–Skene does), Wawa and ZBS measure a
worker's gold answers against the known class, M-MSR and majority vote only give the gold
items their labels (M-MSR says so in a warning). Without gold nothing changes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kdcrowd.aggregation import aggregate, aggregate_with_matrices
from kdcrowd.aggregators import AGGREGATORS, run_aggregator
from kdcrowd.config import SettingWarning
from kdcrowd.data.annotations import Annotations
from kdcrowd.data.simulate import simulate_workers

ANCHORED = ("ds", "one-coin-ds", "glad", "mace", "zbs")
GOLD = np.array([0, 1, 0, 1, 0, 1])


def _contrarian_crowd() -> tuple[Annotations, np.ndarray]:
    """Items 0-5 are gold (classes 0, 1, 0, 1, 0, 1): worker A (0) answers every one
    wrongly, worker B (1) every one rightly. On items 6-11 A and C (2) say 1, B says 0.
    Alone, the crowd's majority (and every aggregator) says 1 there; the gold answers say
    that A contradicts the truth and B finds it, so the anchored answer is 0."""
    item, worker, label = [], [], []
    for i, g in enumerate(GOLD):
        item += [i, i]
        worker += [0, 1]
        label += [1 - g, g]
    for i in range(6, 12):
        item += [i, i, i]
        worker += [0, 2, 1]
        label += [1, 1, 0]
    gold = np.r_[GOLD, np.full(6, -1)]
    return Annotations(item, worker, label, n_items=12, n_workers=3, n_classes=2), gold


@pytest.mark.parametrize("method", ANCHORED)
def test_gold_anchors_the_other_items_labels(method: str) -> None:
    ann, gold = _contrarian_crowd()
    free, _ = aggregate(ann, method)
    assert free[6:].tolist() == [1] * 6, method  # the crowd alone
    labels, post = aggregate(ann, method, gold=gold)
    assert labels[:6].tolist() == GOLD.tolist(), method
    np.testing.assert_allclose(post[:6], np.eye(2)[GOLD], err_msg=method)
    assert labels[6:].tolist() == [0] * 6, method
    assert np.all(post[6:, 0] > 0.5), (method, post[6:])


def test_one_coin_ds_learns_the_skills_from_gold() -> None:
    ann, gold = _contrarian_crowd()
    free = run_aggregator(ann, "one-coin-ds")
    assert free.skills[0] > free.skills[1]  # A agrees with the majority, B does not
    res = run_aggregator(ann, "one-coin-ds", gold=gold)
    assert res.skills[1] > 0.9 and res.skills[0] < 0.1, res.skills
    assert res.transitions[1, 0, 0] > 0.9 and res.transitions[0, 0, 1] > 0.9  # A's '1' means 0
    # the direct call gives the gold items their labels too
    assert res.labels[:6].tolist() == GOLD.tolist()


@pytest.mark.parametrize("method", ["glad", "mace", "zbs"])
def test_gold_ranks_the_gold_expert_above_the_contrarian(method: str) -> None:
    ann, gold = _contrarian_crowd()
    free = run_aggregator(ann, method)
    res = run_aggregator(ann, method, gold=gold)
    assert free.skills[0] > free.skills[1], (method, free.skills)
    assert res.skills[1] > res.skills[0], (method, res.skills)


def test_wawa_measures_gold_answers_against_the_known_class() -> None:
    """Without gold the majority of the gold items is a tie (one right, one wrong answer),
    class 0: A agrees on 3 of them and on the 6 others (9/12), B on 3 (3/12). With gold A is
    right on none (6/12 in all), B on all six (6/12). C's agreement on the other items
    (6/6) still outweighs B there: Wawa's reference of the other items is their plain
    majority vote, which gold does not change."""
    ann, gold = _contrarian_crowd()
    np.testing.assert_allclose(run_aggregator(ann, "wawa").skills, [0.75, 0.25, 1.0])
    res = run_aggregator(ann, "wawa", gold=gold)
    np.testing.assert_allclose(res.skills, [0.5, 0.5, 1.0])
    assert res.labels.tolist() == GOLD.tolist() + [1] * 6


def test_mmsr_warns_that_gold_does_not_inform_its_skills() -> None:
    ann, gold = _contrarian_crowd()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning without gold
        free = run_aggregator(ann, "mmsr")
    with pytest.warns(SettingWarning, match="M-MSR does not use the 6 gold questions") as caught:
        res = run_aggregator(ann, "mmsr", gold=gold)
    assert len([w for w in caught if issubclass(w.category, SettingWarning)]) == 1
    np.testing.assert_array_equal(res.skills, free.skills)  # pasted, as the warning says
    np.testing.assert_array_equal(res.labels[6:], free.labels[6:])
    assert res.labels[:6].tolist() == GOLD.tolist()
    with pytest.warns(SettingWarning, match="M-MSR"):
        labels, _ = aggregate(ann, "mmsr", gold=gold)
    assert labels.tolist() == res.labels.tolist()


def test_majority_vote_only_pastes_gold() -> None:
    ann, gold = _contrarian_crowd()
    labels, post = aggregate(ann, "mv", gold=gold)
    assert labels.tolist() == GOLD.tolist() + [1] * 6
    np.testing.assert_allclose(post[6:], aggregate(ann, "mv")[1][6:])


# ------------------------------------------------------------------------ no gold: unchanged


def _crowd() -> Annotations:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 150)
    return simulate_workers(y, "symmetric", n_classes=3, seed=3, n_workers=12, redundancy=3).annotations


@pytest.mark.parametrize("method", ["mv", "ds", *AGGREGATORS])
def test_no_gold_leaves_every_output_unchanged(method: str) -> None:
    """``gold=None`` and a gold vector without any known item give exactly the result of a
    call without ``gold``; a gold item nobody answered changes nothing but its own row."""
    ann = _crowd()
    kw = {"n_iter": 5} if method == "glad" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = aggregate_with_matrices(ann, method, **kw)
        for gold in (None, np.full(ann.n_items, -1)):
            out = aggregate_with_matrices(ann, method, gold=gold, **kw)
            for a, b in zip(base, out):
                np.testing.assert_array_equal(a, b, err_msg=method)
        if method in AGGREGATORS:
            direct = run_aggregator(ann, method, gold=None, **kw)
            np.testing.assert_array_equal(direct.labels, base[0])
            np.testing.assert_array_equal(direct.posteriors, base[1])
        # one more item, unanswered, known to be class 1 (GLAD: one iteration, since with
        # gold its loop does not stop on the first dip of its objective, see glad())
        if method == "glad":
            kw = {"n_iter": 1}
            base = aggregate_with_matrices(ann, method, **kw)
        wider = Annotations(ann.item, ann.worker, ann.label, n_items=ann.n_items + 1, n_workers=ann.n_workers, n_classes=3)
        gold = np.r_[np.full(ann.n_items, -1), 1]
        labels, post, trans = aggregate_with_matrices(wider, method, gold=gold, **kw)
    np.testing.assert_allclose(labels[:-1], base[0], err_msg=method)
    np.testing.assert_allclose(post[:-1], base[1], atol=1e-12, err_msg=method)
    if base[2] is not None:
        np.testing.assert_allclose(trans, base[2], atol=1e-12, err_msg=method)
    assert labels[-1] == 1
    np.testing.assert_allclose(post[-1], [0, 1, 0])
