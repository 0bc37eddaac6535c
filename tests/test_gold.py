"""Gold questions (items with known answers): the shared helpers, Dawid–Skene's clamped
E-step, the crowd objective's supervised term, the outputs, and the evidence that gold
improves the worker matrices on a crowd where it must: a majority of class-swapping
(pair-flip beyond 50 %) workers, with which the unanchored estimates settle on the swapped
solution."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from kdcrowd.aggregation import aggregate, dawid_skene
from kdcrowd.cli import app
from kdcrowd.data.annotations import Annotations
from kdcrowd.data.datasets import CrowdDataset
from kdcrowd.data.gold import apply_gold, check_gold, gold_from_values, gold_values, gold_vector, worker_gold_accuracy
from kdcrowd.data.simulate import simulate_workers
from kdcrowd.metrics import expertise_error
from kdcrowd.objectives import CrowdObjective, gold_cross_entropy


# ----------------------------------------------------------------------------- helpers


def test_apply_gold_hard_and_soft_numpy_and_torch() -> None:
    gold = np.array([-1, 2, -1, 0])
    hard = np.array([1, 1, 1, 1])
    np.testing.assert_array_equal(apply_gold(hard, gold), [1, 2, 1, 0])
    np.testing.assert_array_equal(hard, [1, 1, 1, 1])  # the input is left as it is
    soft = np.full((4, 3), 1 / 3)
    out = apply_gold(soft, gold)
    np.testing.assert_allclose(out, [[1 / 3] * 3, [0, 0, 1], [1 / 3] * 3, [1, 0, 0]])
    t = torch.full((4, 3), 1 / 3, dtype=torch.float32)
    ot = apply_gold(t, torch.tensor(gold))
    assert ot.dtype == torch.float32
    np.testing.assert_allclose(ot.numpy(), out, atol=1e-7)
    np.testing.assert_array_equal(apply_gold(torch.tensor(hard), gold).numpy(), [1, 2, 1, 0])
    assert apply_gold(hard, None) is hard


def test_check_gold_and_conversions() -> None:
    assert check_gold(None, 3, 2) is None
    assert check_gold([-1, -1, -1], 3, 2) is None  # no gold item: nothing to anchor
    np.testing.assert_array_equal(check_gold([-1, 1, 0], 3, 2), [-1, 1, 0])
    with pytest.raises(ValueError, match="gold must hold one class index"):
        check_gold([0, 1], 3, 2)
    with pytest.raises(ValueError, match=r"outside -1\.\.1 at items \[2\]"):
        check_gold([0, 1, 2], 3, 2)
    g = gold_vector(5, [3, 0], [1, 2])
    np.testing.assert_array_equal(g, [2, -1, -1, 1, -1])
    vals = gold_values(g, ["a", "b", "c"])
    assert vals.tolist() == ["c", None, None, "b", None]
    np.testing.assert_array_equal(gold_from_values(vals, ["a", "b", "c"], 5), g)
    np.testing.assert_array_equal(gold_from_values([None, 1, np.nan], [0, 1], 3), [-1, 1, -1])
    np.testing.assert_array_equal(gold_from_values([None, "1", None], [0, 1], 3), [-1, 1, -1])  # matched by text
    # a float column with NaN for unknown (pandas' type for it) matches digit-text classes
    np.testing.assert_array_equal(gold_from_values([2.0, np.nan, 1.0], ["1", "2"], 3), [1, -1, 0])
    with pytest.raises(ValueError, match="not among the classes"):
        gold_from_values(["x", None], ["a", "b"], 2)


def test_worker_gold_accuracy_by_hand() -> None:
    # worker 0: gold items 0 (right) and 1 (wrong) -> 2, 0.5; worker 1: gold item 0 right,
    # item 2 is not gold -> 1, 1.0; worker 2: no gold answer -> 0, NaN
    ann = Annotations([0, 1, 0, 2, 2], [0, 0, 1, 1, 2], [1, 1, 1, 0, 0], n_items=3, n_workers=3, n_classes=2)
    n, acc = worker_gold_accuracy(ann, np.array([1, 0, -1]))
    np.testing.assert_array_equal(n, [2, 1, 0])
    np.testing.assert_allclose(acc, [0.5, 1.0, np.nan])


# ----------------------------------------------------------------------------- Dawid–Skene


def _tiny() -> Annotations:
    # worker 0 labels items 0 and 1 as 1; worker 1 labels item 0 as 0 and item 1 as 1
    return Annotations([0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 0, 1], n_items=2, n_workers=2, n_classes=2)


def test_ds_gold_clamps_the_initial_posteriors_by_hand() -> None:
    """n_iter=0: the M-step on the soft majority vote, item 0 clamped to class 0.

    Without gold item 0 is (0.5, 0.5): worker 1's row 'true 1' gets 0.5 of a '0' and one
    '1' -> (1/3, 2/3). With item 0 known to be class 0 that row only holds item 1's '1'
    -> (0, 1), and worker 0's row 'true 0' holds item 0's '1' -> (0, 1)."""
    ann = _tiny()
    free = dawid_skene(ann, n_iter=0, prior=0.0, warn=False)
    np.testing.assert_allclose(free.transitions[1, 1], [1 / 3, 2 / 3], atol=1e-8)
    res = dawid_skene(ann, n_iter=0, prior=0.0, warn=False, gold=np.array([0, -1]))
    np.testing.assert_allclose(res.transitions[0], [[0, 1], [0, 1]], atol=1e-8)
    np.testing.assert_allclose(res.transitions[1], [[1, 0], [0, 1]], atol=1e-8)
    np.testing.assert_allclose(res.priors, [0.5, 0.5])
    np.testing.assert_allclose(res.posteriors[0], [1, 0])
    assert res.labels[0] == 0


def test_ds_gold_clamped_every_e_step_and_em_stays_monotone() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    sc = simulate_workers(y, "symmetric", n_classes=3, seed=0, n_workers=15, redundancy=3)
    gold = np.full(300, -1)
    gold[::10] = (y[::10] + 1) % 3  # deliberately wrong "known" labels: they must still be kept
    res = dawid_skene(sc.annotations, gold=gold, criterion="loglik", tol=1e-10, n_iter=60)
    g = gold >= 0
    np.testing.assert_array_equal(res.labels[g], gold[g])
    np.testing.assert_allclose(res.posteriors[g], np.eye(3)[gold[g]])
    assert np.all(np.diff(res.log_likelihood) > -1e-9)  # EM on the joint likelihood with the gold classes
    # the gold items' log-likelihood is the joint with their known class, below the marginal
    free = dawid_skene(sc.annotations, criterion="loglik", tol=1e-10, n_iter=60)
    assert res.log_likelihood[-1] < free.log_likelihood[-1]
    # a gold item without any crowd label still gets its known label
    ann = Annotations([0, 1], [0, 1], [0, 1], n_items=3, n_workers=2, n_classes=2)
    out = dawid_skene(ann, gold=np.array([-1, -1, 1]), warn=False)
    assert out.labels.tolist() == [0, 1, 1]


def test_aggregate_gives_gold_items_their_labels_for_every_method() -> None:
    ann = _tiny()
    gold = np.array([-1, 0])
    for method in ("mv", "ds", "glad", "wawa"):
        labels, post = aggregate(ann, method, gold=gold)
        assert labels[1] == 0, method
        np.testing.assert_allclose(post[1], [1, 0], err_msg=method)
    with pytest.raises(ValueError, match="gold must hold one class index"):
        aggregate(ann, "mv", gold=[0])


def _swapping_crowd(seed: int, n: int = 600, k: int = 4) -> tuple[np.ndarray, object, np.ndarray]:
    """Pair-flip workers whose flip rates are spread over [0.3, 0.85]: most of them give
    the next class more often than the true one, so the crowd's majority is a swap."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    sc = simulate_workers(y, "pairflip", n_classes=k, seed=seed, n_workers=60, redundancy=3, noise_min=0.3, noise_max=0.85)
    gold = np.full(n, -1)
    picked = rng.choice(n, n // 10, replace=False)  # 10 % gold questions
    gold[picked] = y[picked]
    return y, sc, gold


def test_gold_improves_dawid_skene_matrices_on_a_swapping_crowd() -> None:
    """Measured (seeds 0-2): mean absolute error of the matrices 0.32/0.31/0.29 without
    gold, 0.075/0.075/0.061 with 10 % gold; accuracy on the other items 7-21 % -> 91-92 %."""
    for seed in range(3):
        y, sc, gold = _swapping_crowd(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            free = dawid_skene(sc.annotations)
            anchored = dawid_skene(sc.annotations, gold=gold)
        e_free = expertise_error(sc.transitions, free.transitions)["mae_mean"]
        e_gold = expertise_error(sc.transitions, anchored.transitions)["mae_mean"]
        assert e_gold < 0.5 * e_free, (seed, e_free, e_gold)
        assert e_gold < 0.1, (seed, e_gold)
        other = gold < 0
        assert (anchored.labels[other] == y[other]).mean() > 0.85
        assert (free.labels[other] == y[other]).mean() < 0.5  # the crowd alone is fooled


# ----------------------------------------------------------------------------- crowd models


class _Toy(torch.nn.Module):
    """A crowd-model stand-in whose crowd loss is a constant and whose logits are given."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def crowd_loss(self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(0.25), self.logits[x.long()]


def test_gold_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    gold = torch.tensor([-1, 1, 0])
    # row 1: -log(1/(3+1)) = log 4; row 2: log 2; divided by the batch size 3
    expected = (math.log(4.0) + math.log(2.0)) / 3
    assert float(gold_cross_entropy(logits, gold)) == pytest.approx(expected)
    assert float(gold_cross_entropy(logits, torch.tensor([-1, -1, -1]))) == 0.0
    # through the objective: crowd loss + weight * the term on the batch's items
    w = torch.zeros(3, 1, dtype=torch.long)
    obj = CrowdObjective(_Toy(logits), w, w, gold=torch.tensor([0, 1, -1]), gold_weight=2.0)
    idx = torch.tensor([1, 2])  # items 1 (gold 1) and 2 (no gold); x selects their logits
    got = float(obj.training_loss(idx.float(), idx, 0))
    assert got == pytest.approx(0.25 + 2.0 * math.log(4.0) / 2)
    assert float(CrowdObjective(_Toy(logits), w, w).training_loss(idx.float(), idx, 0)) == pytest.approx(0.25)


def _blob_dataset(seed: int, gold: np.ndarray | None) -> tuple[CrowdDataset, np.ndarray]:
    y, sc, g = _swapping_crowd(seed)
    rng = np.random.default_rng(100 + seed)
    k, d = 4, 8
    centers = 3 * rng.normal(size=(k, d))

    def blobs(labels: np.ndarray) -> np.ndarray:
        return (centers[labels] + rng.normal(size=(len(labels), d))).astype(np.float32)

    yv, yt = rng.integers(0, k, 100), rng.integers(0, k, 100)
    ds = CrowdDataset("swap", blobs(y), blobs(yv), blobs(yt), y, yv, yt, sc.annotations, [str(c) for c in range(k)], true_transitions=sc.transitions, gold=g if gold is None else gold)
    return ds, g


@pytest.mark.parametrize("method, worker_lr_scale", [("crowdlayer-mw", 30.0), ("maxmig", 1.0)])
def test_gold_improves_crowd_model_matrices_on_a_swapping_crowd(method: str, worker_lr_scale: float) -> None:
    """A crowd model with and without gold: the gold cross-entropy (weight 1, the default)
    and, for Max-MIG (which initialises its workers from label statistics), the start from
    Dawid–Skene anchored on the gold items.
    Measured (15 epochs, last epoch kept; seeds 0/1/2): CrowdLayer matrix error
    0.33/0.32/0.31 -> 0.096/0.088/0.077, test accuracy 0.00-0.01 -> 1.00; Max-MIG (seed 1)
    0.22 -> 0.086, test accuracy 0.07 -> 1.00."""
    from kdcrowd.methods import RunConfig, run_on_dataset
    from kdcrowd.training import TrainConfig

    ds_gold, gold = _blob_dataset(1, None)
    # no validation labels: both runs keep their last epoch (selection on validation
    # accuracy would keep the first epoch that predicts well, before the matrices moved)
    ds_gold = CrowdDataset(**{**ds_gold.__dict__, "y_val": None})
    ds_free = CrowdDataset(**{**ds_gold.__dict__, "gold": None})
    errors, test_acc = [], []
    for ds in (ds_free, ds_gold):
        cfg = RunConfig(dataset="swap", method=method, seed=1, track_memorization=False,
                        train=TrainConfig(epochs=15, batch_size=64, lr=3e-3, device="cpu", progress=False, worker_lr_scale=worker_lr_scale))
        metrics, out = run_on_dataset(ds, cfg)
        errors.append(expertise_error(ds.true_transitions, out.transitions)["mae_mean"])
        test_acc.append(metrics["test_accuracy"])
    assert errors[1] < 0.5 * errors[0] and errors[1] < 0.15, errors
    assert test_acc[1] > test_acc[0] + 0.5, test_acc


def test_gold_reaches_every_training_target() -> None:
    """Aggregate-then-train and KD-Crowd: the gold items' targets are their known labels."""
    from kdcrowd.framework import KDCrowd
    from kdcrowd.methods import RunConfig, run_on_dataset
    from kdcrowd.training import DeviceData, TrainConfig

    ds, _ = _blob_dataset(0, None)
    g = ds.gold >= 0
    cfg = RunConfig(dataset="swap", method="ds-soft", seed=0, track_memorization=False, train=TrainConfig(epochs=1, device="cpu", progress=False))
    metrics, out = run_on_dataset(ds, cfg)
    np.testing.assert_allclose(out.module.targets.cpu().numpy()[g], np.eye(4)[ds.gold[g]])
    cfg = RunConfig(dataset="swap", method="mv", seed=0, track_memorization=False, train=TrainConfig(epochs=1, device="cpu", progress=False))
    _, out = run_on_dataset(ds, cfg)
    np.testing.assert_array_equal(out.module.targets.cpu().numpy()[g], ds.gold[g])
    train = TrainConfig(epochs=1, device="cpu", progress=False)
    data = DeviceData.from_dataset(ds, torch.device("cpu"))
    outs, _ = KDCrowd(teacher="crowdlayer-mw", student="ce", stages=1).fit(ds, data, train)
    student = outs["student"].module
    np.testing.assert_array_equal(student.labels.cpu().numpy()[g], ds.gold[g])
    np.testing.assert_allclose(student.soft.cpu().numpy()[g], np.eye(4)[ds.gold[g]])


# ----------------------------------------------------------------------------- doors


def _problem(root: Path) -> dict:
    """Blob features, a crowd of 2 honest and 4 class-swapping workers (cat <-> dog), gold on
    40 items; one more item without any crowd label, in the features and in the gold file."""
    rng = np.random.default_rng(3)
    classes = np.array(["bird", "cat", "dog"])
    n, d = 150, 6
    y = rng.integers(0, 3, n)
    X = (3 * rng.normal(size=(3, d))[y] + rng.normal(size=(n, d))).astype(np.float32)
    ids = np.array([f"it{i:03d}" for i in range(n)])
    swap = np.array([0, 2, 1])
    rows = []
    for m in range(6):
        for i in range(n):
            if m == 0 or rng.random() < 0.5:  # the first honest worker labels every item
                lab = y[i] if m < 2 else swap[y[i]]
                rows.append((ids[i], f"w{m}", classes[lab]))
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(root / "answers.csv", index=False)
    ids_x, X = np.append(ids, "lonely"), np.vstack([X, X[:1]])
    pd.concat([pd.DataFrame({"item": ids_x}), pd.DataFrame(X, columns=[f"f{j}" for j in range(d)])], axis=1).to_csv(root / "X.csv", index=False)
    gold = pd.DataFrame({"item": ids[:40], "label": classes[y[:40]]})
    gold.to_csv(root / "gold.csv", index=False)
    pd.concat([gold, pd.DataFrame({"item": ["lonely"], "label": [classes[y[0]]]})]).to_csv(root / "gold_lonely.csv", index=False)
    return {"root": root, "ids": ids, "y": y, "classes": classes, "rows": rows}


def test_fit_command_with_gold(tmp_path: Path) -> None:
    prob = _problem(tmp_path / "p")
    root, out = prob["root"], tmp_path / "out"
    r = CliRunner().invoke(app, ["fit", "--annotations", str(root / "answers.csv"), "--features", str(root / "X.csv"), "--out", str(out), "--device", "cpu",
                                 "--epochs", "2", "--stages", "1", "--gold", str(root / "gold.csv"), "--quiet"])
    assert r.exit_code == 0, r.output
    workers = pd.read_csv(out / "workers.csv")
    assert list(workers.columns[:6]) == ["worker", "n_labels", "accuracy_estimate", "agreement", "gold_n", "gold_accuracy"]
    answers = pd.DataFrame(prob["rows"], columns=["item", "worker", "label"])
    on_gold = answers[answers["item"].isin(prob["ids"][:40])]
    truth = dict(zip(prob["ids"], prob["classes"][prob["y"]]))
    expected_n = on_gold["worker"].value_counts()
    expected_acc = on_gold.assign(ok=on_gold["label"] == on_gold["item"].map(truth)).groupby("worker")["ok"].mean()
    w = workers.set_index("worker")
    assert w["gold_n"].to_dict() == expected_n.to_dict()
    np.testing.assert_allclose(w.loc[expected_acc.index, "gold_accuracy"], expected_acc.to_numpy())
    assert w.loc["w0", "gold_accuracy"] == 1.0 and w.loc["w5", "gold_accuracy"] < 0.5
    labels = pd.read_csv(out / "labels.csv").set_index("item")
    assert (labels.loc[prob["ids"][:40], "label"].to_numpy() == prob["classes"][prob["y"][:40]]).all()  # known labels kept
    html = (out / "report.html").read_text()
    assert "Gold questions" in html and "gold_accuracy" in html
    # a gold file naming an unknown item: one clear error
    (root / "bad.csv").write_text("item,label\nnope,cat\n")
    r = CliRunner().invoke(app, ["fit", "--annotations", str(root / "answers.csv"), "--features", str(root / "X.csv"), "--out", str(tmp_path / "o2"), "--gold", str(root / "bad.csv"), "--quiet"])
    assert r.exit_code != 0 and "nope" in r.output


def test_aggregate_command_with_gold(tmp_path: Path) -> None:
    prob = _problem(tmp_path / "p")
    root = prob["root"]
    outs = {}
    for name, extra in (("free", []), ("gold", ["--gold", str(root / "gold.csv")])):
        r = CliRunner().invoke(app, ["aggregate", "--annotations", str(root / "answers.csv"), "--method", "ds", "--out", str(tmp_path / f"{name}.csv"), *extra])
        assert r.exit_code == 0, r.output
        outs[name] = pd.read_csv(tmp_path / f"{name}.csv").set_index("item")
    truth = pd.Series(prob["classes"][prob["y"]], index=prob["ids"])
    acc = {k: float((v["label"] == truth[v.index]).mean()) for k, v in outs.items()}
    # four swapping workers outvote two honest ones; 40 gold items let Dawid–Skene see it
    assert acc["free"] < 0.6 and acc["gold"] > 0.95, acc
    # a gold item without crowd labels: aggregate knows only the items of --annotations
    r = CliRunner().invoke(app, ["aggregate", "--annotations", str(root / "answers.csv"), "--method", "ds", "--out", str(tmp_path / "x.csv"), "--gold", str(root / "gold_lonely.csv")])
    assert r.exit_code != 0 and "no crowd labels in --annotations" in r.output and "lonely" in r.output


def test_fit_truth_accuracy_leaves_out_the_gold_questions(tmp_path: Path) -> None:
    # the gold items' final labels are their known answers: they had been scored as learnt
    prob = _problem(tmp_path / "p")
    root = prob["root"]
    pd.DataFrame({"item": prob["ids"], "label": prob["classes"][prob["y"]]}).to_csv(root / "truth.csv", index=False)
    args = ["fit", "--annotations", str(root / "answers.csv"), "--features", str(root / "X.csv"), "--device", "cpu", "--method", "mv", "--epochs", "1", "--gold", str(root / "gold.csv")]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o1"), "--truth", str(root / "truth.csv")])
    assert r.exit_code == 0, r.output
    assert "40 of the 150 items of --truth" in r.output and "reported on the other 110" in r.output
    labels = pd.read_csv(tmp_path / "o1" / "labels.csv").set_index("item")
    rest = prob["ids"][40:]
    expected = float((labels.loc[rest, "label"].to_numpy() == prob["classes"][prob["y"][40:]]).mean())
    assert f"on the 110 items of {root / 'truth.csv'}: {expected:.3f}" in " ".join(r.output.split())
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2"), "--truth", str(root / "gold.csv")])
    assert r.exit_code == 0, r.output
    assert "no item is left to score" in r.output and "accuracy of the final labels" not in r.output


def test_fit_gold_item_without_crowd_labels(tmp_path: Path) -> None:
    """A gold item nobody labelled is still a training item of `kdcrowd fit`: its known label is kept."""
    prob = _problem(tmp_path / "p")
    root, out = prob["root"], tmp_path / "out"
    r = CliRunner().invoke(app, ["fit", "--annotations", str(root / "answers.csv"), "--features", str(root / "X.csv"), "--out", str(out), "--device", "cpu",
                                 "--method", "maxmig", "--epochs", "1", "--gold", str(root / "gold_lonely.csv"), "--quiet"])
    assert r.exit_code == 0, r.output
    pred = pd.read_csv(out / "predictions.csv").set_index("item")
    assert pred.loc["lonely", "label"] == prob["classes"][prob["y"][0]] and pred.loc["lonely", "confidence"] == 1.0


def test_estimator_gold(tmp_path: Path) -> None:
    from kdcrowd import KDCrowdClassifier

    prob = _problem(tmp_path / "p")
    X = pd.read_csv(prob["root"] / "X.csv").drop(columns="item").to_numpy(np.float32)
    answers = pd.DataFrame(prob["rows"], columns=["item", "worker", "label"])
    answers["item"] = answers["item"].str[2:].astype(int)
    gold = [prob["classes"][prob["y"][i]] if i < 40 else None for i in range(len(X))]
    clf = KDCrowdClassifier(method="ds", epochs=2, device="cpu").fit(X, answers, gold=gold)
    assert (clf.gold_[:40] == np.searchsorted(clf.classes_, prob["classes"][prob["y"][:40]])).all() and (clf.gold_[40:] == -1).all()
    assert (clf.labels_[:40] == prob["classes"][prob["y"][:40]]).all()
    assert (clf.labels_[:150] == prob["classes"][prob["y"]]).mean() > 0.9  # the swappers are found out
    with pytest.raises(ValueError, match="gold must give one label"):
        KDCrowdClassifier(method="mv", epochs=1, device="cpu").fit(X, answers, gold=["cat"])


def test_gold_values_in_a_series_indexed_by_item_id_go_to_those_items() -> None:
    """A pandas Series of gold values whose index names items is aligned to the items by id
    (compared as text, as ``--gold FILE``'s item column): it may list only the gold items, in
    any order; an id that is no item (given a label), or one given two different labels, is an error,
    as in ``--gold FILE`` (the same matching: :func:`kdcrowd.data.items.item_labels_from_frame`)."""
    ids = ["a", "b", "c", "17"]
    got = gold_from_values(pd.Series(["y", None, "x"], index=["c", "a", "b"]), ["x", "y"], 4, items=ids)
    np.testing.assert_array_equal(got, [-1, 0, 1, -1])
    np.testing.assert_array_equal(gold_from_values(pd.Series(["x"], index=[17]), ["x", "y"], 4, items=ids), [-1, -1, -1, 0])  # 17 is "17"
    np.testing.assert_array_equal(gold_from_values(pd.Series(["y", "y"], index=["b", "b"]), ["x", "y"], 4, items=ids), [-1, 1, -1, -1])
    assert gold_from_values(pd.Series([None, np.nan], index=["b", "a"]), ["x", "y"], 4, items=ids) is None
    with pytest.raises(ValueError, match=r"gold: 1 row\(s\) name items that have no rows of X .*\(item='nope'\)"):
        gold_from_values(pd.Series(["x", "y", None], index=["nope", "a", "other"]), ["x", "y"], 4, items=ids)
    with pytest.raises(ValueError, match=r"gold: item\(s\) 'b' have more than one different label"):
        gold_from_values(pd.Series(["x", "y"], index=["b", "b"]), ["x", "y"], 4, items=ids)
    with pytest.raises(ValueError, match="not among the annotation classes"):
        gold_from_values(pd.Series(["z"], index=["a"]), ["x", "y"], 4, items=ids)


def test_estimator_gold_series_is_aligned_by_its_index(tmp_path: Path) -> None:
    """``gold=`` as a Series indexed by item id is aligned to X's items (X's index, as the long
    table of crowd labels is) whatever its order, or lists only the gold items, as ``--gold
    FILE`` does; it was used by position, its index ignored (the gold answers went to other
    items). A plain 0..N-1 index keeps the positional meaning of a list."""
    from kdcrowd import KDCrowdClassifier

    prob = _problem(tmp_path / "p")
    Xf = pd.read_csv(prob["root"] / "X.csv").set_index("item").iloc[:150]
    answers = pd.DataFrame(prob["rows"], columns=["item", "worker", "label"])
    ids, known = prob["ids"], prob["classes"][prob["y"]]
    as_list = [known[i] if i < 40 else None for i in range(150)]

    def gold_of(gold: object, X: object = Xf, y: object = answers) -> np.ndarray:
        clf = KDCrowdClassifier(method="mv", epochs=1, device="cpu").fit(X, y, gold=gold)
        assert (clf.labels_[clf.gold_ >= 0] == known[clf.gold_ >= 0]).all()  # the gold items keep their known labels
        return clf.gold_

    expected = gold_of(as_list)
    assert (expected[:40] >= 0).all() and (expected[40:] == -1).all()
    full = pd.Series(as_list, index=ids)
    np.testing.assert_array_equal(gold_of(full.iloc[::-1]), expected)  # another order
    np.testing.assert_array_equal(gold_of(full.iloc[:40].sample(frac=1, random_state=0)), expected)  # the gold items only
    np.testing.assert_array_equal(gold_of(pd.Series(as_list)), expected)  # a plain 0..N-1 index: by position
    with pytest.raises(ValueError, match=r"gold: 1 row\(s\) name items that have no rows of X .*\(item='nope'\)"):
        gold_of(pd.Series(["cat"], index=["nope"]))
    # X without item names: a long table's items and a Series' index are the rows of X
    by_row = answers.assign(item=answers["item"].str[2:].astype(int))
    np.testing.assert_array_equal(gold_of(pd.Series(known[:40]).iloc[::-1], Xf.to_numpy(), by_row), expected)
    with pytest.raises(ValueError, match=r"gold: 40 row\(s\) name items that have no rows of X"):
        gold_of(full.iloc[:40], Xf.to_numpy(), by_row)


def test_accuracies_of_training_labels_leave_out_the_gold_items() -> None:
    """A gold item's target, aggregate and teacher prediction is its known answer, so the
    accuracies of training labels (aggregated, network, teacher, posterior) are taken over
    the other items: counting the gold items would count their answers as learnt."""
    from kdcrowd.metrics import accuracy
    from kdcrowd.methods import RunConfig, run_on_dataset
    from kdcrowd.training import DeviceData, TrainConfig, predict_proba

    assert accuracy([0, 1, 1], [0, 1, -1]) == 1.0 and math.isnan(accuracy([0, 1], [-1, -1]))  # -1: truth unknown
    ds, _ = _blob_dataset(0, None)
    g = ds.gold >= 0
    y = ds.y_train
    train = TrainConfig(epochs=2, device="cpu", progress=False)
    metrics, out = run_on_dataset(ds, RunConfig(dataset="swap", method="mv", seed=0, train=train))
    targets = out.module.targets.cpu().numpy()
    assert (targets[g] == y[g]).all() and (targets[~g] != y[~g]).any()
    assert metrics["aggregated_label_accuracy"] == pytest.approx(float((targets[~g] == y[~g]).mean()))
    data = DeviceData.from_dataset(ds, torch.device("cpu"))
    pred = predict_proba(out.module, data, data.x_train, train).argmax(1).numpy()
    assert metrics["train_label_accuracy"] == pytest.approx(float((pred[~g] == y[~g]).mean()))
    from kdcrowd.metrics import memorization

    ann = ds.annotations
    _, mem_mean, _ = memorization(pred, ann.item, ann.worker, ann.label, np.where(g, -1, y), n_workers=ann.n_workers)
    best = next(h for h in metrics["history"] if h["epoch"] == metrics["best_epoch"])
    assert best["memorization_mean"] == pytest.approx(mem_mean)  # wrong labels of gold items left out too
    metrics, out = run_on_dataset(ds, RunConfig(dataset="swap", method="kdcrowd", seed=0, train=train, options={"teacher": "crowdlayer-mw", "student": "ce", "stages": 1}))
    hard = out.module.labels.cpu().numpy()  # the teacher's predictions the student distils, gold pasted on
    assert metrics["stages"]["student"]["teacher_label_accuracy"] == pytest.approx(float((hard[~g] == y[~g]).mean()))
