"""Tests for kdcrowd.aggregators: GLAD, MACE, Wawa, ZBS, one-coin DS, M-MSR (CPU, fast).

Each method is checked against crowd-kit 1.4.2 (a test dependency) on two
truth-inference sets and a simulated crowd, must beat majority vote on a crowd built so
that its model says it should, and must handle items without labels and workers with a
single label.

crowd-kit work-arounds (documented here, used only in these tests):

* ``Wawa.predict`` and ``ZeroBasedSkill.predict`` call scikit-learn's
  ``check_is_fitted``, which from scikit-learn 1.6 on asks the object for
  ``__sklearn_tags__``; crowd-kit's classes are not scikit-learn estimators and fail.
  :func:`_ck` gives them a subclass with a minimal ``__sklearn_tags__``.
* crowd-kit orders workers and classes by first appearance in the data (``pd.factorize``)
  and draws MACE's and M-MSR's random starts in that order, but indexes MACE's
  strategy counts in sorted order. :func:`_first_appearance` renumbers workers and
  classes by first appearance so both orders coincide and both libraries start from the
  same numbers.
* crowd-kit's MACE runs 10 restarts that all draw the same start (it passes the same
  ``random_state`` each time), so ``n_restarts=1`` gives its result in a tenth of the time.

crowd-kit is slow (pandas per step: GLAD ~25 s, ZBS ~10 s on the 4k-annotation bird set),
so the comparisons on the truth-inference sets, with every default, are marked ``slow``;
the fast comparison runs on a small simulated crowd with fewer iterations (the same on
both sides) for GLAD, MACE and ZBS.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from kdcrowd.aggregation import aggregate, aggregation_frame, majority_vote
from kdcrowd.aggregators import (
    AGGREGATORS,
    AggregatorResult,
    glad,
    mace,
    mmsr,
    one_coin_dawid_skene,
    run_aggregator,
    wawa,
    zero_based_skill,
)
from test_aggregation import _truth_dir  # the truth-inference folder, found as the DS tests find it

METHOD_NAMES = ("glad", "mace", "wawa", "zbs", "one-coin-ds", "mmsr")

# the same, shortened settings on both sides for the slow crowd-kit classes (fast tests)
FAST = {"glad": {"n_iter": 2, "m_step_max_iter": 3}, "mace": {"n_iter": 10}, "zbs": {"n_iter": 25}}
CK_FAST = {"glad": {"n_iter": 2, "m_step_max_iter": 3}, "mace": {"n_iter": 10, "n_restarts": 1}, "zbs": {"n_iter": 25}}
CK_FULL = {"mace": {"n_restarts": 1}}  # crowd-kit's 10 restarts are 10 copies of this one


def _ann(item, worker, label, n, m, k):
    return SimpleNamespace(
        item=np.asarray(item, dtype=np.int64), worker=np.asarray(worker, dtype=np.int64),
        label=np.asarray(label, dtype=np.int64), n_items=n, n_workers=m, n_classes=k,
    )


def _ck(method, kw):
    ck = pytest.importorskip("crowdkit.aggregation")
    names = {"glad": "GLAD", "mace": "MACE", "wawa": "Wawa", "zbs": "ZeroBasedSkill", "one-coin-ds": "OneCoinDawidSkene", "mmsr": "MMSR"}
    cls = getattr(ck, names[method])
    if method in ("wawa", "zbs"):
        from sklearn.utils import Tags, TargetTags

        def tags(self):
            return Tags(estimator_type=None, target_tags=TargetTags(required=False))

        cls = type(cls.__name__, (cls,), {"__sklearn_tags__": tags})
    return cls(**kw.get(method, {}))


def _first_appearance(df):
    """Workers and labels renumbered 0.. in order of first appearance (crowd-kit's order)."""
    df = df.copy()
    df["worker"] = pd.factorize(df["worker"])[0]
    codes, uniques = pd.factorize(df["label"])
    df["label"] = codes
    return df, {old: new for new, old in enumerate(uniques)}


def _compare(method, df, truth=None, fast=True):
    """Our labels vs crowd-kit's on ``df`` (item, worker, label; dense 0-based items).
    Returns (agreement, our accuracy, crowd-kit's accuracy) (accuracies on ``truth``)."""
    df, lab_map = _first_appearance(df)
    n = int(df["item"].max()) + 1
    ann = _ann(df["item"], df["worker"], df["label"], n, int(df["worker"].max()) + 1, len(lab_map))
    ours = run_aggregator(ann, method, **(FAST.get(method, {}) if fast else {})).labels
    with warnings.catch_warnings():  # crowd-kit on pandas 3: a deprecation warning per call
        warnings.simplefilter("ignore")
        theirs = _ck(method, CK_FAST if fast else CK_FULL).fit_predict(df.rename(columns={"item": "task"}))
    theirs = theirs.reindex(np.arange(n)).to_numpy()
    has = np.bincount(df["item"], minlength=n) > 0
    agreement = float((ours[has] == theirs[has]).mean())
    if truth is None:
        return agreement, None, None
    t = truth.map(lab_map)
    idx = t.index.to_numpy()
    return agreement, float((ours[idx] == t.to_numpy()).mean()), float((theirs[idx] == t.to_numpy()).mean())




def _simulate(seed=0, n=300, m=30, k=3, per_item=5, spam=0.0, diag=(0.55, 0.9)):
    """A crowd of one-coin-ish workers (accuracy in ``diag``) and a share ``spam`` of
    uniform spammers; each item gets ``per_item`` labels from distinct random workers."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    acc = rng.uniform(*diag, m)
    spammer = rng.random(m) < spam
    item = np.repeat(np.arange(n), per_item)
    worker = np.concatenate([rng.choice(m, per_item, replace=False) for _ in range(n)])
    right = rng.random(len(item)) < acc[worker]
    wrong = (truth[item] + rng.integers(1, k, len(item))) % k
    label = np.where(right, truth[item], wrong)
    label = np.where(spammer[worker], rng.integers(0, k, len(item)), label)
    return pd.DataFrame({"item": item, "worker": worker, "label": label}), pd.Series(truth)


# ------------------------------------------------------------------- against crowd-kit


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bird", "cf"])
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_matches_crowdkit_on_truth_inference_sets(method, name):
    # bird: 108 items, 39 workers, 2 classes, 4,212 labels (39 per item); cf: 300 items,
    # 461 workers, 5 classes, 1,720 labels (sparse: F = 1 in M-MSR). Every default.
    d = _truth_dir()
    if d is None:
        pytest.skip("truth-inference data not found (set KDCROWD_DATA)")
    df = pd.read_csv(d / f"{name}_labels.csv.gz")
    truth = pd.read_csv(d / f"{name}_truth.csv.gz").set_index("item")["truth"]
    agreement, ours, theirs = _compare(method, df, truth, fast=False)
    # same labels on >= 99 % of the items and the same gold accuracy within half a point
    # (measured: identical labels for every method on both sets)
    assert agreement >= 0.99, agreement
    assert abs(ours - theirs) <= 0.005, (ours, theirs)


# crowd-kit's GLAD E-step runs a Python softmax per item: ~20 s even on this small crowd
@pytest.mark.parametrize("method", [pytest.param("glad", marks=pytest.mark.slow), *METHOD_NAMES[1:]])
def test_matches_crowdkit_on_simulated_crowd(method):
    df, truth = _simulate(seed=1, n=60 if method == "glad" else 120, m=15, per_item=4, spam=0.2)
    agreement, ours, theirs = _compare(method, df, truth)
    assert agreement >= 0.99, agreement
    assert abs(ours - theirs) <= 0.005, (ours, theirs)


# ------------------------------------------------------------------------ model checks


def test_wawa_hand_case():
    # item 0: 0 0 1 | item 1: 1 1 1 2 | item 2: 2 | item 3: 2 0 (tie -> 0) | item 4: none
    ann = _ann([0, 0, 0, 1, 1, 1, 1, 2, 3, 3], [0, 1, 2, 0, 1, 2, 3, 3, 0, 1], [0, 0, 1, 1, 1, 1, 2, 2, 2, 0], 5, 5, 3)
    res = wawa(ann)
    # agreement with the majority labels (0, 1, 2, 0): w0 2/3, w1 1, w2 1/2, w3 1/2
    np.testing.assert_allclose(res.skills[:4], [2 / 3, 1, 1 / 2, 1 / 2])
    assert np.isnan(res.skills[4])  # worker 4 gave no label
    np.testing.assert_array_equal(res.labels, [0, 1, 2, 0, -1])
    np.testing.assert_allclose(res.posteriors[0], [10 / 13, 3 / 13, 0])  # (2/3+1, 1/2) / (13/6)
    np.testing.assert_allclose(res.posteriors[3], [1 / (1 + 2 / 3), 0, (2 / 3) / (1 + 2 / 3)])
    np.testing.assert_allclose(res.posteriors[4], [1 / 3] * 3)


def test_zbs_first_step_is_wawa_and_skills_converge():
    df, _ = _simulate(seed=2)
    ann = _ann(df["item"], df["worker"], df["label"], 300, 30, 3)
    one = zero_based_skill(ann, n_iter=1)
    np.testing.assert_allclose(one.skills, wawa(ann).skills)  # lr 1: skills = agreement with MV
    res = zero_based_skill(ann)
    assert res.objective[-1] < 1e-3  # the learning rate halves every 20 steps


def test_one_coin_ds_recovers_worker_accuracies():
    df, truth = _simulate(seed=3, n=1500, m=20, per_item=6, diag=(0.4, 0.95))
    ann = _ann(df["item"], df["worker"], df["label"], 1500, 20, 3)
    res = one_coin_dawid_skene(ann)
    correct = (df["label"].to_numpy() == truth.to_numpy()[df["item"]]).astype(float)
    empirical = np.bincount(df["worker"], correct, 20) / np.bincount(df["worker"], minlength=20)
    assert np.abs(res.skills - empirical).max() < 0.05
    np.testing.assert_allclose(res.transitions.sum(-1), 1.0)
    np.testing.assert_allclose(np.diagonal(res.transitions, axis1=1, axis2=2), res.skills[:, None] * np.ones(3))


def _spammer_crowd(seed=4, n=600, k=3):
    """Few good workers (accuracy 0.85) among many uniform spammers."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    good, spam = 6, 18
    m = good + spam
    item = np.repeat(np.arange(n), 7)
    worker = np.concatenate([rng.choice(m, 7, replace=False) for _ in range(n)])
    label = np.where(rng.random(len(item)) < 0.85, truth[item], (truth[item] + rng.integers(1, k, len(item))) % k)
    label = np.where(worker >= good, rng.integers(0, k, len(item)), label)
    return _ann(item, worker, label, n, m, k), truth


@pytest.mark.parametrize("method", ["glad", "mace", "wawa", "zbs", "one-coin-ds"])
def test_beats_majority_vote_with_many_spammers(method):
    # every model here weights workers by an estimated reliability, so a vote among a
    # few good workers and many uniform spammers must beat the plain vote
    ann, truth = _spammer_crowd(n=300)
    mv_acc = (majority_vote(ann) == truth).mean()
    res = run_aggregator(ann, method)
    acc = (res.labels == truth).mean()
    assert acc >= mv_acc + 0.05, (acc, mv_acc)
    assert res.skills[:6].mean() > res.skills[6:].mean() + 0.1, res.skills  # good workers rank above spammers


def _adversarial_crowd(seed=1, n=400):
    """Two classes; 6 good workers (accuracy 0.8) and 4 adversaries (accuracy 0.15)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    acc = np.r_[np.full(6, 0.8), np.full(4, 0.15)]
    item = np.repeat(np.arange(n), 5)
    worker = np.concatenate([rng.choice(10, 5, replace=False) for _ in range(n)])
    label = np.where(rng.random(len(item)) < acc[worker], truth[item], 1 - truth[item])
    return _ann(item, worker, label, n, 10, 2), truth


def test_mmsr_turns_adversaries_around():
    # M-MSR's covariance model gives systematically wrong workers a negative
    # reliability, so their votes count for the other class: far above majority vote.
    # Uniform spammers are not its case (reliability 0 sits in the noise of |C|, and the
    # sign step makes some of them positive), hence this crowd.
    ann, truth = _adversarial_crowd()
    mv_acc = (majority_vote(ann) == truth).mean()
    post = mmsr(ann, label_rule="posterior")
    assert (post.skills[:6] > 0).all() and (post.skills[6:] < 0).all(), post.skills
    assert (post.labels == truth).mean() >= mv_acc + 0.2
    np.testing.assert_array_equal(post.labels, post.posteriors.argmax(1))
    # crowd-kit's rule (argmax of votes / their sum) picks the least voted class where
    # the voters' skills sum below 0: still better than MV here, but far less
    ck_rule = mmsr(ann)
    assert mv_acc < (ck_rule.labels == truth).mean() < (post.labels == truth).mean()
    np.testing.assert_array_equal(ck_rule.skills, post.skills)
    # each rule's posteriors are those of the votes its labels come from (the crowd-kit rule's
    # labels contradicted the posteriors written beside them on the adversaries' items)
    for res in (ck_rule, post):
        np.testing.assert_array_equal(res.labels, res.posteriors.argmax(1))
    labels, posteriors = aggregate(ann, "mmsr", label_rule="posterior")
    np.testing.assert_array_equal(labels, post.labels)
    np.testing.assert_array_equal(posteriors.argmax(1), labels)


def test_mmsr_gives_a_worker_who_shares_no_item_no_skill():
    """A worker in no observed covariance keeps M-MSR's random start as its reliability
    (crowd-kit's): that says nothing of it, so its skill is NaN and its votes weigh nothing;
    where no two workers share an item (one label per item), every skill is NaN and the
    labels are the majority vote."""
    df, _ = _simulate(seed=2, n=80, m=8, k=3, per_item=4, spam=0.0, diag=(0.6, 0.9))
    lone = pd.DataFrame({"item": np.arange(80, 100), "worker": 8, "label": np.arange(20) % 3})  # items of its own
    both = pd.concat([df, lone], ignore_index=True)
    ann = _ann(both["item"], both["worker"], both["label"], 100, 9, 3)
    for seed in (0, 1):  # its start differs by seed; its skill may not
        res = mmsr(ann, seed=seed)
        assert np.isnan(res.skills[8]) and np.isnan(res.extras["accuracy"][8])
        assert np.isfinite(res.skills[:8]).all()
        np.testing.assert_array_equal(res.labels[80:], np.arange(20) % 3)  # its items: its plain vote
    # one label per item, by 30 workers: no covariance at all
    rng = np.random.default_rng(0)
    item, worker, label = np.arange(300), rng.integers(0, 30, 300), rng.integers(0, 3, 300)
    res = mmsr(_ann(item, worker, label, 300, 30, 3))
    assert np.isnan(res.skills).all()
    np.testing.assert_array_equal(res.labels, label)


def test_mmsr_when_every_covariance_row_sums_to_zero():
    # Two workers who agree on every item (K=2): each covariance row is +1 off the
    # diagonal and -1/(K-1) on it, so every row sums to 0 and the sign step has no worker
    # to work with; it used to index an empty eigenvector. Both count as reliable now.
    ann = _ann([0, 0, 1, 1, 2, 2, 3, 3], [0, 1] * 4, [0, 0, 1, 1, 1, 1, 0, 0], 4, 2, 2)
    res = mmsr(ann)
    np.testing.assert_array_equal(res.labels, [0, 1, 1, 0])
    assert np.isfinite(res.skills).all() and (res.skills > 0).all(), res.skills
    # three binary workers who agree pairwise on 6 of 8 items: rows sum to 0 too
    answers = ["00000000", "11000000", "10100000"]
    item, worker, label = zip(*[(i, w, int(c)) for w, a in enumerate(answers) for i, c in enumerate(a)])
    res = mmsr(_ann(item, worker, label, 8, 3, 2))
    np.testing.assert_array_equal(res.labels, [1, 0, 0, 0, 0, 0, 0, 0])  # the majority of each item


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_weighted_vote_ties_break_to_the_lowest_class_in_float32_too(dtype):
    # Item 0: ten workers of skill 1/2 say 0, seven of skill 5/7 say 1, an exact tie
    # (10 x 1/2 = 7 x 5/7) that float32 sums (a GPU's default) round unequal.
    rows = []  # (item, worker, label)
    fill_a, fill_b = 17, 18  # two workers who make a lone 1 disagree with the majority

    def disagree(w):
        i = 1 + len({r[0] for r in rows})
        rows.extend([(i, fill_a, 0), (i, fill_b, 0), (i, w, 1)])

    for w in range(10):  # agree on item 0, disagree once: skill 1/2
        rows.append((0, w, 0))
        disagree(w)
    for w in range(10, 17):  # disagree on item 0 and once more, agree 5 times alone: 5/7
        rows.append((0, w, 1))
        disagree(w)
        for _ in range(5):
            rows.append((1 + len({r[0] for r in rows}), w, 0))
    item, worker, label = map(list, zip(*rows))
    res = wawa(_ann(item, worker, label, max(item) + 1, 19, 2), dtype=dtype)
    np.testing.assert_allclose(res.skills[[0, 10]], [1 / 2, 5 / 7], rtol=1e-6)
    assert res.labels[0] == 0, res.posteriors[0]


# ----------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_unlabelled_items_single_label_workers_and_unused_workers(method):
    df, _ = _simulate(seed=5, n=120, m=12, k=3, per_item=4)
    # item 120 has no label; worker 12 gives one label (to item 0); worker 13 gives none
    item = np.append(df["item"].to_numpy(), 0)
    worker = np.append(df["worker"].to_numpy(), 12)
    label = np.append(df["label"].to_numpy(), 2)
    ann = _ann(item, worker, label, 121, 14, 3)
    res = run_aggregator(ann, method)
    assert isinstance(res, AggregatorResult)
    assert res.labels.shape == (121,) and res.labels.dtype == np.int64
    assert res.labels[120] == -1 and (res.labels[:120] >= 0).all() and (res.labels < 3).all()
    assert res.posteriors.shape == (121, 3) and np.isfinite(res.posteriors).all()
    np.testing.assert_allclose(res.posteriors.sum(1), 1.0)
    assert res.skills.shape == (14,) and np.isfinite(res.skills[:13]).all()
    if res.transitions is not None:
        assert res.transitions.shape == (14, 3, 3)
        np.testing.assert_allclose(res.transitions[:13].sum(-1), 1.0)
    np.testing.assert_array_equal(res.posteriors[:120].argmax(1) == res.labels[:120], True) if method in ("glad", "mace", "one-coin-ds") else None


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_degenerate_inputs(method):
    empty = run_aggregator(_ann([], [], [], 3, 2, 4), method)
    np.testing.assert_array_equal(empty.labels, [-1, -1, -1])
    np.testing.assert_allclose(empty.posteriors, 0.25)
    one_class = run_aggregator(_ann([0, 0, 1], [0, 1, 1], [0, 0, 0], 3, 2, 1), method)
    np.testing.assert_array_equal(one_class.labels, [0, 0, -1])


# -------------------------------------------------------------- device, dtype, entry


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_device_and_dtype(method):
    ann, _ = _spammer_crowd(n=150)
    ref = run_aggregator(ann, method, device="cpu")
    f32 = run_aggregator(ann, method, device="auto", dtype=torch.float32)
    # GLAD's conjugate-gradient line search sees float32 rounding in its objective and
    # stops at slightly different points: a few near-tied items flip
    assert (f32.labels == ref.labels).mean() >= (0.97 if method == "glad" else 0.99)
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        gpu = run_aggregator(ann, method, device="cuda")
        assert (gpu.labels == ref.labels).mean() >= 0.99


def test_aggregate_dispatch_aliases_and_errors():
    ann, _ = _spammer_crowd(n=100)
    assert set(AGGREGATORS) == set(METHOD_NAMES)
    for name, alias in [("zbs", "ZeroBasedSkill"), ("one-coin-ds", "one_coin_ds"), ("mmsr", "M-MSR"), ("glad", "GLAD")]:
        labels, post = aggregate(ann, alias, device="cpu", n_iter=3)
        ref = run_aggregator(ann, name, n_iter=3)
        np.testing.assert_array_equal(labels, ref.labels)
        np.testing.assert_allclose(post, ref.posteriors)
    frame = aggregation_frame(ann, "wawa")
    assert list(frame.columns) == ["item", "label", "p_0", "p_1", "p_2"]
    with pytest.raises(ValueError, match="unexpected option.*'tie_break'.*allowed"):
        aggregate(ann, "glad", tie_break="random")
    with pytest.raises(ValueError, match="method must be 'vb' or 'em'"):
        mace(ann, method="gibbs")
    with pytest.raises(ValueError, match="n_iter"):
        glad(ann, n_iter=-1)
    with pytest.raises(ValueError, match="n_iter"):
        mmsr(ann, n_iter=-1)


def test_mace_em_and_restarts():
    ann, truth = _spammer_crowd(n=300)
    vb = mace(ann)
    em = mace(ann, method="em")
    assert (em.labels == vb.labels).mean() > 0.9
    three = mace(ann, n_restarts=3)
    assert len(three.objective) == 3 and three.objective[0] == pytest.approx(vb.objective[0])
    assert (three.labels == truth).mean() >= (vb.labels == truth).mean() - 0.02


def test_mace_fit_does_not_depend_on_how_the_worker_ids_sort():
    """The same annotations with int worker ids and with the same ids as text, which sort
    in another order ("10" before "2"), give the same labels and worker parameters: the
    random start is drawn per worker in order of first appearance, not of the ids' order."""
    from kdcrowd.data.annotations import Annotations

    # sparse, as cf (4 of 300 labels moved there): 120 workers, 3 labels per item; 4 labels moved here
    df, _ = _simulate(seed=0, n=200, m=120, k=4, per_item=3, spam=0.3, diag=(0.35, 0.8))
    df["worker"] += 2  # ids 2..121
    as_int = Annotations.from_long(df)
    as_str = Annotations.from_long(df.assign(worker=df["worker"].astype(str)))
    pos = pd.Index(as_str.worker_ids).get_indexer(as_int.worker_ids.astype(str))  # int-sorted worker -> its index among the texts
    assert not np.array_equal(pos, np.arange(len(pos)))
    a, b = mace(as_int, n_restarts=2), mace(as_str, n_restarts=2)
    np.testing.assert_array_equal(a.labels, b.labels)  # (the items are the same, in the same order)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-12)
    for got, want in ((a.skills, b.skills), (a.transitions, b.transitions), (a.extras["spamming"], b.extras["spamming"]), (a.extras["thetas"], b.extras["thetas"])):
        np.testing.assert_allclose(got, want[pos], rtol=1e-12, atol=0)


def test_mmsr_fit_does_not_depend_on_how_the_worker_ids_sort():
    """As MACE's: M-MSR's random start (``u = v``) is drawn per worker in order of first
    appearance, as crowd-kit's ``pd.unique`` order, so int ids and the same ids as text
    (another sort order) give the same labels and skills."""
    from kdcrowd.data.annotations import Annotations

    df, _ = _simulate(seed=1, n=60, m=12, k=3, per_item=6, spam=0.2, diag=(0.45, 0.8))
    df["worker"] += 2  # ids 2..13: "10" sorts before "2"
    df = df.sample(frac=1.0, random_state=0).reset_index(drop=True)  # first appearance unlike either order
    as_int = Annotations.from_long(df)
    as_str = Annotations.from_long(df.assign(worker=df["worker"].astype(str)))
    pos = pd.Index(as_str.worker_ids).get_indexer(as_int.worker_ids.astype(str))
    assert not np.array_equal(pos, np.arange(len(pos)))
    a, b = mmsr(as_int, n_iter=3, tol=0.0), mmsr(as_str, n_iter=3, tol=0.0)  # stopped early: the start shows
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.skills, b.skills[pos], rtol=1e-12, atol=0)


@pytest.mark.parametrize("f", [-2, -1, 0, 1, 2, 3])
def test_mmsr_trimmed_update_matches_crowdkit_column_by_column(f):
    ck = pytest.importorskip("crowdkit.aggregation")
    from kdcrowd.aggregators.mmsr import _trimmed_update

    rng = np.random.default_rng(f + 10)
    z = rng.random((9, 40))
    z[rng.random(z.shape) < 0.1] = 0.0
    mask = rng.random(z.shape) < 0.6
    mask[:, 0] = False  # nothing observed: keeps a
    mask[:, 1] = False
    mask[3, 1] = True  # one value
    z[3, 2], mask[:, 2] = 0.0, False
    mask[3, 2] = True  # a lone 0 becomes 1/sqrt(n_tasks)
    a = rng.random(40)
    a[5] = z[mask[:, 5], 5][0] if mask[:, 5].any() else a[5]  # a value equal to a
    rows, cols = np.nonzero(mask)  # the observed values, grouped by column, in no particular order
    shuffle = rng.permutation(len(rows))
    rows, cols = rows[shuffle], cols[shuffle]
    count = torch.tensor(np.bincount(cols, minlength=40))
    got = _trimmed_update(torch.tensor(z[rows, cols]), torch.tensor(cols), count, torch.tensor(a), f, 25).numpy()
    for j in range(40):
        y = ck.MMSR._remove_largest_and_smallest_F_value(z[mask[:, j], j].reshape(-1, 1), f, a[j], 25)
        want = a[j] if len(y) == 0 else y.mean()
        assert got[j] == pytest.approx(want, rel=1e-12, abs=1e-15), (j, got[j], want)


def test_aggregator_skills_benchmark_counts_overlap_and_skill_signs(load_script, monkeypatch, tmp_path) -> None:
    """``benchmarks/aggregator_skills.py``: the label accuracies are the aggregators' own,
    the pair overlap is the brute-force count, and the skill counts cover the active workers."""
    import itertools

    from test_methods import tiny_dataset

    from kdcrowd.aggregation import aggregate

    bench = load_script("benchmarks/aggregator_skills")
    ds = tiny_dataset(n=160, k=3, d=5)
    monkeypatch.setattr(bench, "load_dataset", lambda name, root=None, **kw: ds)
    out = bench.main(["--dataset", "tiny", "--methods", "mv", "mmsr", "--out", str(tmp_path / "s.json")])
    ann, y = ds.annotations, np.asarray(ds.y_train)
    mv, mm = out["rows"]
    assert mv["label_accuracy"] == float(np.mean(aggregate(ann, method="mv")[0] == y))
    res = mmsr(ann)
    assert mm["label_accuracy"] == float(np.mean(res.labels == y)) and mm["posterior_argmax_accuracy"] == float(np.mean(res.posteriors.argmax(1) == y))
    active = np.isfinite(res.skills)
    assert mm["workers_with_skill"] == int(active.sum()) and mm["workers_below_zero"] == int((res.skills[active] < 0).sum())
    items = {w: set(np.asarray(ann.item)[np.asarray(ann.worker) == w]) for w in np.unique(np.asarray(ann.worker))}
    shared = [len(items[a] & items[b]) for a, b in itertools.combinations(sorted(items), 2)]
    assert out["overlap"]["pairs_sharing_items"] == sum(s > 0 for s in shared)
    assert out["overlap"]["median_shared_items"] == float(np.median([s for s in shared if s > 0]))


def test_mmsr_sign_graph_operator_matches_the_dense_graph():
    # M-MSR's sign step as crowd-kit builds it, densely: sign(C) over the workers whose
    # covariance row does not sum to 0, where unobserved pairs and the diagonal hold
    # -1/(K-1); negative entries are edges, each positive pair gets a middle node. The
    # library never builds this M x M matrix (a sum plus the observed pairs instead); with
    # more than 300 nodes it runs Lanczos on that operator.
    from kdcrowd.aggregators.mmsr import _sign_vector

    rng = np.random.default_rng(3)
    ma, k = 60, 3
    cov = np.full((ma, ma), -1.0 / (k - 1))
    obs = np.triu(rng.random((ma, ma)) < 0.3, 1)
    vals = np.round(rng.uniform(-0.5, 1.0, (ma, ma)), 1)  # some exact zeros: no edge
    cov[obs] = vals[obs]
    cov.T[obs] = vals[obs]
    r, c = np.nonzero(obs | obs.T)
    valid = np.nonzero(cov.sum(1) != 0)[0]
    s = np.sign(cov)[np.ix_(valid, valid)]
    kk = len(valid)
    pi, pj = np.nonzero(np.triu(s == 1))
    p = len(pi)
    assert kk + p > 300  # the Lanczos path
    adj = np.zeros((kk + p, kk + p))
    adj[:kk, :kk] = s == -1
    adj[pi, kk + np.arange(p)] = adj[pj, kk + np.arange(p)] = 1
    adj[kk + np.arange(p), pi] = adj[kk + np.arange(p), pj] = 1
    dinv = 1 / np.sqrt(adj.sum(1))
    vec = np.linalg.eigh(dinv[:, None] * adj * dinv[None, :])[1][:, 0]
    sign = np.sign(vec[:kk])
    want = np.zeros(ma)
    want[valid] = np.sign(sign.sum()) * sign
    got = _sign_vector(ma, r, c, cov[r, c], k)
    np.testing.assert_array_equal(got, want)


def test_rank_one_distance_keeps_its_digits():
    from kdcrowd.aggregators.mmsr import _rank_one_distance

    rng = np.random.default_rng(0)
    u, v, u2, v2 = (torch.tensor(rng.random(50) * 700, dtype=torch.float64) for _ in range(4))
    dense = float(torch.linalg.norm(torch.outer(u, v) - torch.outer(u2, v2)))
    assert _rank_one_distance(u, v, u2, v2) == pytest.approx(dense, rel=1e-12)
    # the same product rescaled (M-MSR's iterates drift along u -> a u, v -> v / a): the
    # distance is rounding noise, ~eps |u| |v|, where expanding the square cancels to
    # ~sqrt(eps) |u| |v| (it stopped M-MSR 6 iterations late on the relevance set)
    a = 1 + 1e-6
    scale = float(torch.linalg.norm(u) * torch.linalg.norm(v))
    assert _rank_one_distance(u, v, u * a, v / a) < 1e-14 * scale
    assert _rank_one_distance(u, v, u, v) == 0.0


def test_mmsr_never_builds_worker_by_worker_matrices(tmp_path):
    # 6,000 workers who each label a few of 20,000 items: a dense M x M float64 matrix is
    # 288 MB and the method used about 14 of them (4 GB); over the pairs that share an item
    # it stays near the size of the annotations. A subprocess, so its peak memory is its own.
    import subprocess
    import sys

    code = """
import resource, numpy as np
from types import SimpleNamespace
from kdcrowd.aggregators import mmsr
rng = np.random.default_rng(0)
n, m = 20000, 6000
item = np.repeat(np.arange(n), 3)
worker = rng.integers(0, m, len(item))
label = rng.integers(0, 2, len(item))
ann = SimpleNamespace(item=item, worker=worker, label=label, n_items=n, n_workers=m, n_classes=2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = mmsr(ann, n_iter=3)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert res.n_iter == 3 and res.labels.shape == (n,)
print((after - before) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    grown_mb = float(out.stdout.split()[-1])
    assert grown_mb < 500, f"M-MSR's peak memory grew by {grown_mb:.0f} MB"


@pytest.mark.parametrize("f, want", [(-2, 0.15), (-1, 1 / 5), (0, 0.15)])
def test_mmsr_trimmed_update_counts_a_kept_infinite_value_as_zero(f, want):
    # |C_ij| / u_i is infinite where an iterate reached 0; every path (the sum for f = 0,
    # the maximum for f = -1, the sort otherwise) counts such a kept value as 0, and a
    # lone kept 0 becomes 1/sqrt(n_tasks) (n_tasks = 25 here)
    from kdcrowd.aggregators.mmsr import _trimmed_update

    z = torch.tensor([0.3, float("inf")], dtype=torch.float64)
    got = _trimmed_update(z, torch.tensor([0, 0]), torch.tensor([2]), torch.tensor([0.5], dtype=torch.float64), f, 25)
    assert float(got[0]) == pytest.approx(want)


def test_mmsr_zero_row_sums_are_those_crowdkit_computes():
    # Whether a worker's covariance row "sums to 0" (and is left out of the sign step)
    # decides M-MSR's signs; summed over the observed pairs in another order, a row that
    # crowd-kit sums to 7.1e-15 came out exactly 0 on this crowd, flipping 3 workers' signs
    # and 55 of 3,000 labels. Rows near 0 are now summed whole, as crowd-kit sums them.
    rng = np.random.default_rng(104)
    n, m, per, k = 3000, 300, 6, 4
    item = np.repeat(np.arange(n), per)
    worker = np.concatenate([rng.choice(m, per, replace=False) for _ in range(n)])
    truth, acc = rng.integers(0, k, n), rng.uniform(0.1, 1.0, m)
    label = np.where(rng.random(len(item)) < acc[worker], truth[item], rng.integers(0, k, len(item)))
    df = pd.DataFrame({"item": item, "worker": worker, "label": label})
    # each worker's first row on top, in worker order: crowd-kit numbers the workers (and
    # so orders each row's sum) as this crowd does, and _compare renumbers nothing
    first = df.drop_duplicates("worker").sort_values("worker")
    df = pd.concat([first, df.drop(first.index)])
    assert (pd.factorize(df["worker"])[0] == df["worker"].to_numpy()).all()
    agreement, _, _ = _compare("mmsr", df)
    assert agreement == 1.0


def test_mmsr_with_every_covariance_zero_gives_nan_skills_and_the_majority_vote():
    # three binary workers who each agree with each other on exactly half the items: the
    # completion is 0, v is 0 and the scale divided by it (ZeroDivisionError); crowd-kit's
    # skills are NaN here, and with no skill to weigh by the labels are the majority vote
    answers = ["00001111", "00110011", "01010101"]
    item, worker, label = zip(*[(i, w, int(c)) for w, a in enumerate(answers) for i, c in enumerate(a)])
    ann = _ann(item, worker, label, 8, 3, 2)
    res = mmsr(ann)
    assert np.isnan(res.skills).all()
    np.testing.assert_array_equal(res.labels, majority_vote(ann))


def test_mmsr_signs_splitting_the_workers_evenly_give_the_majority_vote_whatever_the_names() -> None:
    # two workers of each sign: nothing says which camp is skilled. crowd-kit's sign(0) = 0
    # made every skill 0 and every item class 0 (item 2's only vote is 1), and then failed;
    # keeping the eigenvector's own sign let the order of the worker ids choose a camp to call
    # adversarial, with a confident label on every item of a crowd split in two
    a = _ann([0, 0, 0, 1, 1, 1, 2], [0, 1, 2, 0, 1, 2, 3], [0, 0, 1, 1, 1, 0, 1], 3, 4, 2)
    r = mmsr(a)
    assert np.isnan(r.skills).all() and r.labels.tolist() == [0, 1, 1]
    # alice always says 0, bob always 1: the same posteriors under either's name, those of the votes
    item = np.repeat(np.arange(6), 2)
    for worker in ([0, 1] * 6, [1, 0] * 6):
        r = mmsr(_ann(item, worker, [0, 1] * 6, 6, 2, 2))
        np.testing.assert_allclose(r.posteriors, 0.5)
        assert r.labels.tolist() == [0] * 6
    # two camps of two: a, b say 0 and c, d say 1 on every item, then the camps' names swapped
    item = np.repeat(np.arange(8), 4)
    for camp0 in ([0, 1], [2, 3]):
        lab = np.tile([0 if w in camp0 else 1 for w in range(4)], 8)
        r = mmsr(_ann(item, np.tile(np.arange(4), 8), lab, 8, 4, 2))
        np.testing.assert_allclose(r.posteriors, 0.5)


def test_one_coin_ds_worker_without_labels_has_a_uniform_matrix() -> None:
    # its skill is unknown (NaN); its matrix was all NaN, which reached transitions.npz
    a = _ann([0, 0, 1, 1, 2, 2], [0, 2, 0, 2, 0, 2], [0, 0, 1, 1, 1, 0], 3, 3, 2)
    r = one_coin_dawid_skene(a)
    assert np.isnan(r.skills[1]) and np.all(np.isfinite(r.skills[[0, 2]]))
    np.testing.assert_allclose(r.transitions[1], np.full((2, 2), 0.5))
    assert np.all(np.isfinite(r.transitions))


def test_per_worker_counts_are_summed_in_float64_whatever_the_dtype() -> None:
    """A worker's cell sums all its labels: float32 running sums (index_add_ adds one value
    at a time) of 2 M values drifted by about 1e-3 relative, which moved Dawid–Skene's,
    one-coin DS's and MACE's estimates by points on accelerators (float32 there)."""
    import torch

    from kdcrowd.aggregation import _ds_counts
    from kdcrowd.aggregators._common import _Data

    n = 2_000_000
    q = torch.tensor([[0.7, 0.3]], dtype=torch.float32)
    zeros = torch.zeros(n, dtype=torch.long)
    raw = _ds_counts(zeros, zeros, q, 1, torch.empty(n, 2, dtype=torch.float32))
    assert raw.dtype == torch.float32 and abs(float(raw[0, 0]) / (0.7 * n) - 1) < 1e-6 and abs(float(raw[0, 1]) / (0.3 * n) - 1) < 1e-6
    naive = torch.zeros(1, 2).index_add_(0, zeros, q.expand(n, 2).contiguous())
    assert abs(float(naive[0, 0]) / (0.7 * n) - 1) > 1e-5  # what it was: the drift this guards against, on this machine
    d = _Data.__new__(_Data)
    d.dev, d.dtype = torch.device("cpu"), torch.float32
    s = d.sum_by(zeros, torch.full((n,), 0.8), 1)
    assert s.dtype == torch.float32 and abs(float(s[0]) / (0.8 * n) - 1) < 1e-6
