"""KDCrowdClassifier: the input forms, the crowd-label validation split, determinism,
worker quality, and the fitted preprocessor (the training run's normalisation, without
the data). The scikit-learn API checks are in test_sklearn_checks.py."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError

import kdcrowd
from kdcrowd.aggregation import dawid_skene, majority_vote
from kdcrowd.config import ConfigError
from kdcrowd.data.annotations import Annotations
from kdcrowd.data.simulate import simulate_workers
from kdcrowd.estimator import (
    MIN_ITEMS_FOR_VALIDATION,
    CrowdClassifier,
    KDCrowdClassifier,
)
from kdcrowd.training import DeviceData

DS_SOURCE = "crowd (Dawid–Skene of held-out items)"


def test_a_loaded_predictor_checks_its_input_as_the_estimator_does(tmp_path) -> None:
    """load_predictor read a DataFrame by position (columns in another order gave other
    labels), gave NaN rows for NaN or huge features, and (0,) for no rows; save_model of an
    unfitted estimator raised AttributeError."""
    from sklearn.exceptions import NotFittedError

    from kdcrowd.persist import load_predictor, save_model

    x, _, sim = _blobs(n=60)
    cols = list("abcde")
    frame = pd.DataFrame(x, columns=cols)
    with pytest.raises(NotFittedError):
        save_model(tmp_path / "none.pt", _fast())
    clf = _fast(epochs=2).fit(frame, sim.annotations)
    save_model(tmp_path / "m.pt", clf)
    pred = load_predictor(tmp_path / "m.pt")
    expected = clf.predict_proba(frame[:8])
    np.testing.assert_allclose(pred(frame[:8][cols[::-1]]), expected, atol=1e-6)  # matched by name
    np.testing.assert_allclose(pred(x[:8]), expected, atol=1e-6)  # an array: by position
    with pytest.raises(ValueError, match="missing 'e'"):
        pred(frame[:8].drop(columns="e").assign(f=1.0))
    bad = x[:3].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pred(bad)
    with pytest.raises(ValueError, match="float32's range"):
        pred(x[:3].astype(np.float64) * 1e300)
    assert pred(x[:0]).shape == (0, 3)



def test_a_loaded_predictor_reads_a_table_s_item_column_as_kdcrowd_predict_does(tmp_path) -> None:
    """load_predictor of ``pd.read_csv(FILE)`` whose ``item`` column holds the ids, the file
    ``kdcrowd predict --features FILE`` reads: the ids are no feature, as there (it failed,
    "X must hold numbers; got an array of dtype object"); the index column that ``to_csv()``
    writes is skipped with the same warning, repeated ids refused with the same error."""
    from typer.testing import CliRunner

    from kdcrowd.cli import app
    from kdcrowd.data.readers import InputWarning
    from kdcrowd.persist import load_predictor, save_model

    x, _, sim = _blobs(n=60)
    cols = list("abcde")
    save_model(tmp_path / "m.pt", _fast(epochs=2).fit(pd.DataFrame(x, columns=cols), sim.annotations))
    pred = load_predictor(tmp_path / "m.pt")
    new = pd.DataFrame(x[:8], columns=cols)[cols[::-1]]
    new.insert(2, "item", [f"new{i}" for i in range(8)])  # ids among the features, the features in another order
    new.to_csv(tmp_path / "new.csv", index=False)
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "m.pt"), "--features", str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    by_cli = pd.read_csv(tmp_path / "p.csv")
    assert by_cli["item"].tolist() == new["item"].tolist()
    expected = pred(x[:8])
    np.testing.assert_allclose(by_cli[[c for c in by_cli.columns if c.startswith("p_")]].to_numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(pred(pd.read_csv(tmp_path / "new.csv")), expected, atol=1e-6)
    new.to_csv(tmp_path / "indexed.csv")
    with pytest.warns(InputWarning, match="skipped its first column, which has no header"):
        np.testing.assert_allclose(pred(pd.read_csv(tmp_path / "indexed.csv")), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"item ids must be unique, but 'new0' appear more than once"):
        pred(new.assign(item=["new0"] * 8))


def _blobs(n: int = 200, k: int = 3, d: int = 5, seed: int = 0, case: str = "symmetric", **params):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    x = (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    sim = simulate_workers(y, case, n_classes=k, seed=seed, **params)
    return x, y, sim


def _fast(**kw) -> KDCrowdClassifier:
    return KDCrowdClassifier(**{"method": "mv", "backbone": "mlp", "epochs": 4, "batch_size": 32, "lr": 3e-3, "device": "cpu", "validation_fraction": 0.1, **kw})


@pytest.mark.parametrize("method", ["mv", "crowdlayer-mw"])
def test_estimator_keeps_the_normalisation_not_the_training_data(method: str) -> None:
    x, y, sim = _blobs()
    clf = CrowdClassifier(method=method, epochs=3, batch_size=32, lr=3e-3, device="cpu").fit(x, sim.annotations, X_val=x[:40], y_val=y[:40])
    assert clf.validation_["source"] == "given" and clf.validation_["n_items"] == 40 and len(clf.validation_["indices"]) == 0
    prep = clf.preprocessor_
    ref = DeviceData(x, None, None, None, None, torch.device("cpu"))
    torch.testing.assert_close(prep.mean, ref.mean, rtol=0, atol=0)
    torch.testing.assert_close(prep.std, ref.std, rtol=0, atol=0)
    assert prep.input_shape == (5,) and not prep.is_image and prep.device == torch.device("cpu")
    assert prep.n_train == 0 and prep.x_val is None and prep.x_test is None and prep.y_val is None
    # the training labels: the method's own distribution, or (mv) the predictor on X
    assert clf.label_proba_.shape == (len(x), 3)
    if method == "mv":
        np.testing.assert_allclose(clf.label_proba_, clf.predict_proba(x), rtol=0, atol=1e-6)
    assert clf.score(x, y) > 0.8


def test_estimator_image_preprocessor() -> None:
    rng = np.random.default_rng(1)
    n, k = 64, 2
    y = rng.integers(0, k, n)
    x = (rng.integers(0, 100, (n, 8, 8, 3)) + 120 * y[:, None, None, None]).astype(np.uint8)
    ann = simulate_workers(y, "symmetric", n_classes=k, seed=1).annotations
    clf = CrowdClassifier(method="mv", backbone="mlp", epochs=1, batch_size=32, device="cpu", validation_fraction=0.1).fit(x, ann)
    held_out = clf.validation_["indices"]
    assert clf.validation_["source"] == DS_SOURCE and len(held_out) == 10  # 64 items: the minimum of 10 is held out
    prep = clf.preprocessor_
    ref = DeviceData(np.delete(x, held_out, axis=0), None, None, None, None, torch.device("cpu"))  # fitted on the training rows
    assert prep.is_image and prep.input_shape == (3, 8, 8) and prep.n_train == 0
    torch.testing.assert_close(prep.mean, ref.mean, rtol=0, atol=0)
    assert clf.predict_proba(x[:5]).shape == (5, k)
    assert clf.n_features_in_ == 8 and clf.item_shape_ == (8, 8, 3)


# ----------------------------------------------------------------------------- API


def test_names_defaults_and_the_old_keywords() -> None:
    assert kdcrowd.KDCrowdClassifier is KDCrowdClassifier is CrowdClassifier
    p = KDCrowdClassifier().get_params()
    assert (p["method"], p["teacher"], p["student"], p["kd"], p["epochs"], p["batch_size"]) == ("kdcrowd", "maxmig", "elr", "mig-kl", 30, 128)
    assert p["validation_fraction"] == 0.0 and p["checkpoint_dir"] is None and p["random_state"] == 0
    # what `kdcrowd fit` passes
    clf = CrowdClassifier(method="mv", teacher="maxmig", student="elr", backbone="mlp", epochs=2, batch_size=32, lr=1e-3, device="cpu",
                          random_state=0, duplicates="error", verbose=False, worker_lr_scale=1.0)
    x, _, sim = _blobs(n=40)
    assert clf.fit(x, annotations=sim.annotations) is clf  # the former keyword name of y
    assert clf.labels_.shape == (40,)
    with pytest.raises(ValueError, match="not both"):
        clf.fit(x, sim.annotations, annotations=sim.annotations)


def test_unfitted_and_bad_input_errors() -> None:
    x, y, sim = _blobs(n=40)
    with pytest.raises(NotFittedError):
        _fast().predict(x)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        _fast().fit(np.where(np.eye(40, 5) > 0, np.nan, x), y)
    with pytest.raises(ValueError, match="Expected 2D array"):
        _fast().fit(x[:, 0], y)
    with pytest.raises(ValueError, match="Unknown label type"):
        _fast().fit(x, y + 0.5)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        _fast().fit(x, y[:-1])
    with pytest.raises(ValueError, match="method 'clean' trains on ground-truth labels"):
        _fast(method="clean").fit(x, y)
    with pytest.raises(ValueError, match="requires y to be passed"):
        _fast().fit(x, None)
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
        _fast(validation_fraction=1.0).fit(*_blobs(n=60)[:2])
    with pytest.raises(ValueError, match="X_val has 3 features, but X has 5: give X_val the same features as X"):  # it named X, which has 5
        _fast().fit(x, y, X_val=x[:10, :3], y_val=y[:10])
    with pytest.raises(ValueError, match=r"y_val holds \[7\], which are not among the annotation classes \[0, 1, 2\]"):
        _fast().fit(x, y, X_val=x[:2], y_val=[0, 7])
    with pytest.raises(ValueError, match="at least 2 items"):
        _fast(classes=[0, 1, 2]).fit(x[:1], y[:1])
    with pytest.raises(ValueError, match=r"beyond float32's range.*rows \[3\]"):
        _fast().fit(np.where(np.arange(40)[:, None] == 3, 1e39, x.astype(np.float64)), y)
    with pytest.raises(ValueError, match="at least 8×8 pixels"):
        _fast().fit(np.zeros((40, 4, 4, 3), dtype=np.uint8), y)
    # python ints beyond int64 as item ids stay exact (a numpy array of them would be float64)
    huge = [2**63 + i for i in range(40)]
    frame = pd.DataFrame({"item": huge, "worker": 0, "label": y})
    assert _fast(epochs=1).fit(x, frame, item_ids=huge).labels_.shape == (40,)
    clf = _fast().fit(x, sim.annotations)
    with pytest.raises(ValueError, match="X has 3 features, but KDCrowdClassifier is expecting 5 features.*item shape"):
        clf.predict(x[:, :3])


def test_one_class_needs_the_classes_parameter() -> None:
    x, _, _ = _blobs(n=40)
    with pytest.raises(ValueError, match="needs at least 2 classes.*only one class.*classes="):
        _fast().fit(x, np.full(40, "cat"))
    clf = _fast(classes=["cat", "dog"]).fit(x, np.full(40, "cat"))
    assert clf.classes_.tolist() == ["cat", "dog"] and clf.label_proba_.shape == (40, 2)


def test_every_annotation_form_gives_the_same_fit() -> None:
    """1-D labels, a one-column wide matrix, a long table and an Annotations are one crowd."""
    x, y, _ = _blobs(n=80)
    names = np.array(["bird", "cat", "dog"])
    fits = {
        "1-D": _fast().fit(x, names[y]),
        "wide": _fast(classes=list(names)).fit(x, y[:, None]),
        "long": _fast().fit(x, pd.DataFrame({"item": np.arange(80), "worker": "w", "label": names[y]})),
        "Annotations": _fast().fit(x, Annotations.from_long(pd.DataFrame({"item": np.arange(80), "worker": 0, "label": names[y]}))),
    }
    ref = fits.pop("1-D")
    assert ref.classes_.tolist() == names.tolist() and ref.worker_ids_.tolist() == [0] and ref.n_workers_ == 1
    for form, clf in fits.items():
        assert clf.classes_.tolist() == names.tolist(), form
        np.testing.assert_array_equal(clf.label_proba_, ref.label_proba_, err_msg=form)
        np.testing.assert_array_equal(clf.validation_["indices"], ref.validation_["indices"], err_msg=form)


# ----------------------------------------------------------------------------- model selection


def test_crowd_label_validation_split_is_used_and_recorded() -> None:
    x, _, sim = _blobs(n=300)
    # items 0..199 keep one label, 200..299 keep their three: 100 items with >= 2 labels
    long = sim.annotations.to_long()
    long = long[(long["item"] >= 200) | ~long["item"].duplicated()]
    ann = Annotations.from_long(long, items=np.arange(300))
    clf = _fast(method="crowdlayer-mw", epochs=6, track_memorization=True).fit(x, ann)
    v = clf.validation_
    idx = v["indices"]
    assert v["source"] == DS_SOURCE and v["n_items"] == len(idx) == 30  # round(0.1 × 300)
    assert (np.diff(idx) > 0).all() and (idx >= 200).all()  # only items with >= 2 labels, sorted
    # the kept epoch is the one that agrees best with the Dawid–Skene labels of ALL crowd labels
    targets = dawid_skene(ann).labels[idx]
    val_acc = [r["val_accuracy"] for r in clf.history_]
    assert v["best_epoch"] == 1 + int(np.argmax(val_acc)) and v["agreement"] == max(val_acc)
    assert v["agreement"] == pytest.approx(float(np.mean(clf.predict(x[idx]) == clf.classes_[targets])))
    # held-out items: labels from the trained predictor; the network never trained on them
    np.testing.assert_allclose(clf.label_proba_[idx], clf.predict_proba(x[idx]), atol=1e-6)
    train_rows = np.setdiff1d(np.arange(300), idx)
    torch.testing.assert_close(clf.preprocessor_.mean, torch.from_numpy(x[train_rows]).mean(0, keepdim=True))
    # memorization of the crowd labels that disagree with the reference (Dawid–Skene of all labels)
    assert all(0 <= r["memorization_mean"] <= 1 for r in clf.history_) and "Dawid–Skene" in clf.metrics_["reference_labels"]
    # the same seed draws the same split, another seed another one
    assert np.array_equal(_fast(epochs=1).fit(x, ann).validation_["indices"], idx)
    assert not np.array_equal(_fast(epochs=1, random_state=1).fit(x, ann).validation_["indices"], idx)


def test_validation_split_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _, sim = _blobs(n=120)
    ann = sim.annotations
    # fewer items with >= 2 labels than the split needs: drawn from all annotated items
    one_each = Annotations.from_long(ann.to_long().drop_duplicates("item"), items=np.arange(120))
    v = _fast(epochs=1).fit(x, one_each).validation_
    assert v["source"] == DS_SOURCE and v["n_items"] == 12 and "annotated items" in v["reason"]
    # unlabelled items are never held out
    some = Annotations.from_long(ann.to_long().query("item >= 60"), items=np.arange(120))
    v = _fast(epochs=1).fit(x, some).validation_
    assert v["n_items"] == 10 and (v["indices"] >= 60).all()  # 60 annotated: the minimum of 10
    # switched off, or too few annotated items: nothing held out, the final epoch is kept
    for clf, why in ((_fast(validation_fraction=0), "validation_fraction=0"),
                     (_fast(), f"< {MIN_ITEMS_FOR_VALIDATION}")):
        data = (x, ann) if why.startswith("validation") else (x[:49], ann.subset_items(np.arange(49)))
        clf.fit(*data)
        v = clf.validation_
        assert v["source"] is None and v["n_items"] == 0 and len(v["indices"]) == 0 and why in v["reason"]
        assert v["best_epoch"] == clf.epochs and all(r["val_accuracy"] is None for r in clf.history_)
    # Dawid–Skene failing: majority vote of the held-out items
    import kdcrowd.aggregation

    def broken(*a, **k):
        raise FloatingPointError("no convergence")

    monkeypatch.setattr(kdcrowd.aggregation, "dawid_skene", broken)
    clf = _fast(epochs=2).fit(x, ann)
    assert clf.validation_["source"] == "crowd (majority vote of held-out items)" and "no convergence" in clf.validation_["reason"]
    targets = majority_vote(ann)[clf.validation_["indices"]]
    assert clf.validation_["agreement"] == pytest.approx(float(np.mean(clf.predict(x[clf.validation_["indices"]]) == targets)))


# ----------------------------------------------------------------------------- determinism, workers


def test_same_random_state_same_fit_on_cpu() -> None:
    x, _, sim = _blobs(n=120, seed=3)
    kw = {"method": "kdcrowd", "teacher": "maxmig", "epochs": 2, "batch_size": 32, "backbone": "mlp", "device": "cpu", "validation_fraction": 0.1}
    a = KDCrowdClassifier(random_state=7, **kw).fit(x, sim.annotations)
    b = KDCrowdClassifier(random_state=7, **kw).fit(x, sim.annotations)
    assert a.validation_["source"] == DS_SOURCE
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.label_proba_, b.label_proba_)
    np.testing.assert_array_equal(a.transition_matrices_, b.transition_matrices_)
    np.testing.assert_array_equal(a.worker_quality_, b.worker_quality_)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    np.testing.assert_array_equal(a.validation_["indices"], b.validation_["indices"])
    sa, sb = a.module_.state_dict(), b.module_.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # another seed: another initialisation, batch order and split (the final stage may differ too)
    c = KDCrowdClassifier(random_state=8, **kw).fit(x, sim.annotations)
    assert not np.array_equal(c.label_proba_, a.label_proba_)
    assert not np.array_equal(c.validation_["indices"], a.validation_["indices"])
    first_layer = lambda clf: next(p for n, p in clf.module_.named_parameters() if n.endswith("backbone.body.0.weight"))
    assert first_layer(a).shape == first_layer(c).shape and not torch.equal(first_layer(a), first_layer(c))


def test_a_refused_refit_leaves_the_earlier_fit_whole() -> None:
    """A refit refused on its labels (one class) had already set n_features_in_ to the new
    X's width, beside the earlier fit's module: predict then refused the old width with
    "expecting 6 features" and the new one with "fitted on items of shape (4,)". The
    estimator stays as it was; a first fit refused leaves it unfitted."""
    rng = np.random.default_rng(0)
    x4, x6 = rng.normal(size=(60, 4)).astype(np.float32), rng.normal(size=(60, 6)).astype(np.float32)
    y = (x4[:, 0] > 0).astype(int)
    clf = _fast(epochs=1, validation_fraction=0.0).fit(x4, y)
    before = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(pd.DataFrame(x6, columns=[f"c{j}" for j in range(6)]), np.zeros(60, int))
    assert {k: v for k, v in vars(clf).items() if k.endswith("_")}.keys() == before.keys() and all(vars(clf)[k] is v for k, v in before.items())
    assert (clf.n_features_in_, clf.item_shape_) == (4, (4,)) and not hasattr(clf, "feature_names_in_")
    np.testing.assert_allclose(clf.predict_proba(x4), clf.label_proba_, atol=1e-6)
    with pytest.raises(ValueError, match="X has 6 features, but KDCrowdClassifier is expecting 4 features"):
        clf.predict(x6)
    fresh = _fast(epochs=1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        fresh.fit(x6, np.zeros(60, int))
    assert not any(k.endswith("_") for k in vars(fresh))
    with pytest.raises(NotFittedError):
        fresh.predict(x6)


def test_worker_quality_without_worker_matrices_is_the_hard_confusion_against_the_final_labels() -> None:
    """The docstring said "the soft confusion"; the code (report.practitioner.worker_matrices)
    takes the confusion against the argmax of the final labels, on purpose."""
    from kdcrowd.data.confusion import confusion

    x, _, sim = _blobs(n=120)
    clf = _fast(epochs=2).fit(x, sim.annotations)
    np.testing.assert_allclose(clf.worker_matrices_, confusion(sim.annotations, clf.label_proba_.argmax(1), normalize=True, n_classes=3))
    doc = " ".join(KDCrowdClassifier.__doc__.split())
    assert "soft confusion" not in doc and "the confusion of the worker's labels against the final labels ``labels_`` (the argmax of ``label_proba_``" in doc


@pytest.mark.parametrize("method", ["maxmig", "mv"])
def test_worker_quality_ranks_hammers_above_spammers(method: str) -> None:
    x, _, sim = _blobs(n=300, k=3, d=5, seed=2, case="hammer-spammer", n_workers=10)
    roles = np.array(sim.roles)
    clf = _fast(method=method, epochs=10).fit(x, sim.annotations)
    q = clf.worker_quality_
    assert q.shape == (10,) and clf.worker_ids_.tolist() == list(range(10))  # aligned with worker_ids_
    assert q[roles == "hammer"].min() > q[roles == "spammer"].max(), (q, roles)
    if method == "maxmig":  # Σ_k prior_k T_m[k, k] of the method's matrices
        prior = clf.label_proba_.mean(0)
        np.testing.assert_allclose(q, np.einsum("k,mkk->m", prior / prior.sum(), clf.transition_matrices_), rtol=1e-6)
    else:
        assert clf.transition_matrices_ is None


def test_checkpoint_dir_is_passed_to_the_run(tmp_path) -> None:
    x, _, sim = _blobs(n=60)
    clf = _fast(epochs=2, checkpoint_dir=tmp_path / "ck").fit(x, sim.annotations)
    assert clf.metrics_["config"]["checkpoint_dir"] == str(tmp_path / "ck")
    assert (tmp_path / "ck" / "state.json").exists() and (tmp_path / "ck" / "mv.pt").exists()
    again = _fast(epochs=2, checkpoint_dir=tmp_path / "ck").fit(x, sim.annotations)  # the finished checkpoint: the same fit
    np.testing.assert_array_equal(again.label_proba_, clf.label_proba_)
    # its time is the first fit's training, restored, and the parts add up to its seconds
    # (seconds had counted this process only, less than its stages' restored training)
    assert clf.metrics_["resumed_seconds"] == 0 and 0 < again.metrics_["resumed_seconds"] <= clf.metrics_["seconds"]
    t = {k: v for k, v in again.metrics_["timings"].items() if k != "reference_labels"}  # (that one is computed before the run)
    assert sum(t.values()) == pytest.approx(again.metrics_["seconds"], abs=1e-6) and t["other"] > 0
    assert _fast(epochs=1).fit(x, sim.annotations).metrics_["config"]["checkpoint_dir"] is None
    # random_state None draws a seed, but a fit started again takes the one its checkpoints were
    # made with (each fit's new seed had refused the folder, so it could never resume)
    first = _fast(epochs=2, random_state=None, checkpoint_dir=tmp_path / "drawn", validation_fraction=0.2).fit(x, sim.annotations)
    again = _fast(epochs=2, random_state=None, checkpoint_dir=tmp_path / "drawn", validation_fraction=0.2).fit(x, sim.annotations)
    np.testing.assert_array_equal(again.label_proba_, first.label_proba_)
    assert again.metrics_["config"]["seed"] == first.metrics_["config"]["seed"]
    # a RandomState given is its own seed, not the saved one: another fit, for which the finished fit's files make way
    own = _fast(epochs=2, random_state=np.random.RandomState(1), checkpoint_dir=tmp_path / "drawn", validation_fraction=0.2).fit(x, sim.annotations)
    assert own.metrics_["config"]["seed"] != first.metrics_["config"]["seed"] and own.metrics_["resumed_seconds"] == 0


def test_a_finished_checkpoint_folder_makes_way_for_other_data(tmp_path) -> None:
    """A refit on other data, and the clones of model selection, share checkpoint_dir: a
    finished fit's files make way (its other settings had refused every later fit)."""
    from sklearn.model_selection import cross_val_score

    x, y, _ = _blobs(n=90)
    clf = _fast(method="maxmig", epochs=2, checkpoint_dir=tmp_path / "ck")
    clf.fit(x[:60], y[:60])
    second = clf.fit(x[30:], y[30:])
    assert second.metrics_["resumed_seconds"] == 0 and len(second.labels_) == 60
    scores = cross_val_score(_fast(method="maxmig", epochs=2, checkpoint_dir=tmp_path / "cv"), x, y, cv=3, error_score="raise")
    assert len(scores) == 3 and np.isfinite(scores).all()


def test_memorization_is_tracked_only_when_asked() -> None:
    x, _, sim = _blobs(n=60)
    plain = _fast(epochs=2, validation_fraction=0).fit(x, sim.annotations)
    assert all("memorization_mean" not in r for r in plain.history_) and "reference_labels" not in plain.metrics_
    tracked = _fast(epochs=2, validation_fraction=0, track_memorization=True).fit(x, sim.annotations)
    assert all(0 <= r["memorization_mean"] <= 1 for r in tracked.history_) and "Dawid–Skene" in tracked.metrics_["reference_labels"]
    np.testing.assert_array_equal(tracked.label_proba_, plain.label_proba_)  # a record only: training is the same


def test_works_inside_sklearn_tools() -> None:
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, _ = _blobs(n=150)
    scores = cross_val_score(make_pipeline(StandardScaler(), _fast(epochs=6)), x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8


# ----------------------------------------------------------------------------- final labels: the posterior


def _expert_and_biased_crowd(n: int = 600, k: int = 4, seed: int = 0):
    """Every item labelled by one expert (90 % right, errors uniform) and two biased workers
    who answer class 0 whatever the item: majority vote follows the biased pair on 3/4 of
    the items, while the biased workers' labels carry no information about the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    expert = np.where(rng.random(n) < 0.9, y, (y + rng.integers(1, k, n)) % k)
    rows = [(i, "expert", int(expert[i])) for i in range(n)] + [(i, w, 0) for i in range(n) for w in ("biased-a", "biased-b")]
    ann = Annotations.from_long(pd.DataFrame(rows, columns=["item", "worker", "label"]), classes=list(range(k)), items=np.arange(n))
    t = np.zeros((ann.n_workers, k, k))
    for m, w in enumerate(ann.worker_ids):
        t[m] = np.full((k, k), 0.1 / (k - 1)) + np.eye(k) * (0.9 - 0.1 / (k - 1)) if w == "expert" else np.eye(k)[[0] * k]
    return y, ann, t


def test_the_posterior_beats_the_classifier_and_majority_vote_on_a_crowd_built_for_it() -> None:
    from kdcrowd.aggregation import crowd_posterior

    k = 4
    y, ann, t = _expert_and_biased_crowd(k=k)
    rng = np.random.default_rng(1)
    # a classifier that is right 70 % of the time, with the confidence of a calibrated one
    guess = np.where(rng.random(len(y)) < 0.7, y, (y + rng.integers(1, k, len(y))) % k)
    proba = np.full((len(y), k), 0.3 / (k - 1))
    proba[np.arange(len(y)), guess] = 0.7
    post = crowd_posterior(proba, ann, t)
    acc = lambda p: float((np.asarray(p) == y).mean())  # noqa: E731
    mv, clf, pos = acc(majority_vote(ann)), acc(proba.argmax(1)), acc(post.argmax(1))
    assert mv < 0.35 and 0.65 < clf < 0.75  # the crowd built so that voting fails
    assert pos > 0.88 and pos > clf + 0.15 and pos > mv + 0.6, (mv, clf, pos)
    np.testing.assert_allclose(post.sum(1), 1, rtol=1e-5)
    # items without labels keep the classifier's prediction
    sub = Annotations.from_long(ann.to_long().query("item != 0"), classes=list(range(k)), items=np.arange(len(y)))
    np.testing.assert_allclose(crowd_posterior(proba, sub, t)[0], proba[0], rtol=1e-6)


def test_the_estimators_final_labels_are_the_posterior_of_its_classifier_and_the_crowd() -> None:
    from kdcrowd.aggregation import crowd_posterior

    k = 4
    y, ann, _ = _expert_and_biased_crowd(n=400, k=k)
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 1.0, (k, 6))
    x = (centres[y] + rng.normal(0, 1, (len(y), 6))).astype(np.float32)  # overlapping blobs: the classifier alone is far from perfect
    clf = KDCrowdClassifier(method="maxmig", backbone="mlp", epochs=20, batch_size=64, lr=3e-3, device="cpu", final_labels="posterior").fit(x, ann)
    np.testing.assert_allclose(clf.label_proba_, crowd_posterior(clf.classifier_proba_, ann, clf.transition_matrices_), atol=1e-6)
    np.testing.assert_allclose(clf.classifier_proba_, clf.predict_proba(x), atol=1e-5)
    acc = lambda p: float((np.asarray(p) == y).mean())  # noqa: E731
    mv, classifier, labels = acc(majority_vote(ann)), acc(clf.classifier_proba_.argmax(1)), acc(clf.labels_)
    assert labels > classifier and labels > mv + 0.4, (mv, classifier, labels)
    assert clf.label_source_.startswith("posterior")
    # the default, and a method without worker matrices, keep the classifier's labels
    default = KDCrowdClassifier(method="maxmig", backbone="mlp", epochs=20, batch_size=64, lr=3e-3, device="cpu").fit(x, ann)
    np.testing.assert_array_equal(default.label_proba_, default.classifier_proba_)
    np.testing.assert_allclose(default.classifier_proba_, clf.classifier_proba_, atol=1e-6)  # the same training: only the labels differ
    from kdcrowd.config import SettingWarning

    with pytest.warns(SettingWarning, match=r"final_labels='posterior' has no effect: method 'mv' estimates no worker matrices"):  # it was silent
        mv_clf = KDCrowdClassifier(method="mv", backbone="mlp", epochs=2, device="cpu", final_labels="posterior").fit(x, ann)
    np.testing.assert_array_equal(mv_clf.label_proba_, mv_clf.classifier_proba_)
    with pytest.raises(ValueError, match="final_labels must be one of classifier, posterior"):
        KDCrowdClassifier(final_labels="crowd", device="cpu").fit(x, ann)


# ----------------------------------------------------------------------------- item ids, saved models, test-time augmentation


def test_a_dataframe_index_other_than_0_to_n_minus_1_names_the_items() -> None:
    """A DataFrame's index names its rows' items unless it is the plain range 0..N-1: a
    range that starts elsewhere (``X.iloc[20:]``) or steps otherwise is the items' ids too,
    as given as ``item_ids``, not the rows' numbers."""
    x, y, _ = _blobs(n=120)
    names = np.array(["bird", "cat", "dog"])
    X = pd.DataFrame(x, columns=[f"f{j}" for j in range(x.shape[1])])  # RangeIndex 0..119: row i is item i
    long = pd.DataFrame({"item": np.arange(120), "worker": "w", "label": names[y]})
    for part in (X.iloc[20:], X.iloc[::2], X.iloc[::-1]):  # ranges 20..119, 0, 2, .., 118 and 119..0
        assert isinstance(part.index, pd.RangeIndex)
        ann = long[long["item"].isin(part.index)].sample(frac=1, random_state=0)  # named by id, in no row order
        by_index = _fast(validation_fraction=0).fit(part, ann)
        given = _fast(validation_fraction=0).fit(part.to_numpy(), ann, item_ids=part.index.to_numpy())
        np.testing.assert_array_equal(by_index.label_proba_, given.label_proba_, err_msg=str(part.index))
        assert (by_index.labels_ == names[y[part.index]]).mean() > 0.9, part.index
    plain = X.iloc[20:].reset_index(drop=True)  # 0..99: the rows' numbers
    by_row = _fast(validation_fraction=0).fit(plain, long[long["item"] >= 20].assign(item=lambda d: d["item"] - 20))
    np.testing.assert_array_equal(by_row.label_proba_, _fast(validation_fraction=0).fit(X.iloc[20:], long[long["item"] >= 20]).label_proba_)


def _stand_in_features(self, images: np.ndarray, name: str) -> np.ndarray:
    """A stand-in for the pretrained network's frozen features (no weights read): each
    image quadrant's mean colour, 12 numbers."""
    assert name == "efficientnet-lite0"
    x = np.asarray(images, dtype=np.float32) / 255
    h, w = x.shape[1] // 2, x.shape[2] // 2
    return np.concatenate([x[:, i : i + h, j : j + w].mean((1, 2)) for i in (0, h) for j in (0, w)], axis=1)


def test_a_saved_model_on_frozen_features_of_a_named_network_loads_and_predicts_as_the_fit(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``image_features="frozen", backbone="efficientnet-lite0"`` trains an MLP head on the
    network's features: model.pt records that head (``predictor["backbone"]``), not the
    network (``inputs["backbone"]``), and loads to predict as the fitted estimator. A file
    saved before, which recorded the network, loads its head too; one whose weights do not
    fit that head is one clear error."""
    import kdcrowd.models.pretrained as P
    from kdcrowd.crowdfit import CrowdFit
    from kdcrowd.persist import load_predictor, save_model

    monkeypatch.setattr(P, "pretrained_extra_available", lambda name="efficientnet-lite0": True)
    monkeypatch.setattr(CrowdFit, "_features_of", _stand_in_features)
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    img = rng.integers(0, 90, (40, 16, 16, 3), dtype=np.uint8)
    img[y == 0, ..., 0] += 160
    img[y == 1, ..., 2] += 160
    clf = KDCrowdClassifier(method="mv", epochs=3, device="cpu", image_features="frozen", backbone="efficientnet-lite0").fit(img, y)
    assert clf.input_transform_["backbone"] == "efficientnet-lite0" and clf.item_shape_ == (12,)
    save_model(tmp_path / "m.pt", clf)
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ck["predictor"]["backbone"] == "mlp" and ck["inputs"]["backbone"] == "efficientnet-lite0"
    new = rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    expected = clf.predict_proba(new)
    feats = _stand_in_features(None, new, "efficientnet-lite0")
    np.testing.assert_allclose(load_predictor(tmp_path / "m.pt")(feats), expected, atol=1e-5)
    ck["predictor"]["backbone"] = "efficientnet-lite0"  # as save_model wrote it before
    torch.save(ck, tmp_path / "older.pt")
    np.testing.assert_allclose(load_predictor(tmp_path / "older.pt")(feats), expected, atol=1e-5)
    ck["predictor"]["state_dicts"] = [{k: v for k, v in sd.items() if not k.startswith("head")} for sd in ck["predictor"]["state_dicts"]]
    torch.save(ck, tmp_path / "misfit.pt")
    with pytest.raises(ValueError, match="saved by an older kdcrowd that recorded the pretrained network 'efficientnet-lite0'.*fit the model again"):
        load_predictor(tmp_path / "misfit.pt")


@pytest.mark.parametrize("method", ["mv", "crowdlayer-mw"])
def test_test_time_augmentation_applies_to_every_prediction_after_the_fit(method: str, tmp_path) -> None:
    """``tta`` (with ``flip`` and ``eval_batch_size``) is how the fitted model predicts
    everywhere: ``labels_`` of the training and held-out rows, :meth:`predict_proba` and a
    saved model (its ``trained_with``; a file without them predicts as before, without)."""
    from kdcrowd.persist import load_predictor, save_model
    from kdcrowd.training import predict_proba

    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    img = rng.integers(0, 120, (60, 16, 16, 3), dtype=np.uint8)
    img[y == 0, :, :6, 0] += 40  # a faint, one-sided pattern: the mirror and shifted views change the predictions
    img[y == 1, :, 10:, 2] += 40
    labels = np.stack([np.where(rng.random(60) < 0.8, y, 1 - y) for _ in range(3)], 1)
    clf = KDCrowdClassifier(method=method, backbone="fastcnn", epochs=4, batch_size=16, lr=1e-2, device="cpu", image_features="none",
                            tta="flip-translate", eval_batch_size=7, validation_fraction=0.2).fit(img, labels)
    assert len(clf.validation_["indices"]) == 12  # held-out rows are labelled by a prediction after the training too
    np.testing.assert_allclose(clf.predict_proba(img), clf.label_proba_, atol=1e-5)
    xt = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()
    plain = predict_proba(clf.module_, clf.preprocessor_, xt).numpy()  # the same network without test-time views
    assert np.abs(plain - clf.label_proba_).max() > 0.01, np.abs(plain - clf.label_proba_).max()
    save_model(tmp_path / "m.pt", clf)
    np.testing.assert_allclose(load_predictor(tmp_path / "m.pt")(img), clf.label_proba_, atol=1e-5)
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ck["trained_with"]["train"]["tta"] == "flip-translate"
    del ck["trained_with"]
    torch.save(ck, tmp_path / "older.pt")
    np.testing.assert_allclose(load_predictor(tmp_path / "older.pt")(img), plain, atol=1e-5)


@pytest.mark.parametrize("method", ["mv", "ds", "mv-soft", "glad"])
def test_rows_nobody_labelled_are_not_trained_on_as_a_class(method: str) -> None:
    """Aggregate-then-train methods train on the labelled rows only: the aggregate of a row
    without crowd labels is a uniform row or the class prior, not a label (trained on as
    one, it taught the network class 0 and mislabelled the items the crowd agreed on)."""
    rng = np.random.default_rng(0)
    y = np.r_[np.tile([0, 1], 20), np.ones(160, int)]  # 40 labelled rows; 160 unlabelled rows, all of class 1
    x = (rng.normal(size=(200, 2)) * 0.3 + 3.0 * y[:, None]).astype(np.float32)
    long = pd.DataFrame([(i, w, "ab"[y[i]]) for i in range(40) for w in range(3)], columns=["item", "worker", "label"])  # three perfect workers
    clf = KDCrowdClassifier(method=method, backbone="mlp", epochs=20, batch_size=32, lr=3e-3, device="cpu").fit(x, long)
    assert clf.labels_[:40].tolist() == ["ab"[c] for c in y[:40]]
    assert (clf.predict(x[40:]) == "b").mean() > 0.9


def test_labels_by_position_ignore_a_repeated_index_and_a_wide_frame_is_a_crowd() -> None:
    """X from pd.concat (index 0..29 twice) fits with a 1-D or wide y, whose labels follow the
    rows (it was refused for its repeated ids); a wide DataFrame of labels, a column per
    worker, is a crowd like the same numpy matrix (it was read as a long table and refused);
    a (N, 1) y without classes is read as one worker's class indices, with a warning saying so."""
    x, y, _ = _blobs(n=60)
    frame = pd.concat([pd.DataFrame(x[:30]), pd.DataFrame(x[30:])])
    assert not frame.index.is_unique
    by_position = _fast().fit(frame, y)
    np.testing.assert_array_equal(by_position.label_proba_, _fast().fit(x, y).label_proba_)
    wide = np.stack([np.where(np.arange(60) % 3 == m, -1, y) for m in range(3)], 1)
    ref = _fast().fit(x, wide)
    named = _fast().fit(x, pd.DataFrame(wide, columns=["ann", "bob", "cy"]))
    np.testing.assert_array_equal(named.label_proba_, ref.label_proba_)
    assert named.worker_ids_.tolist() == ["ann", "bob", "cy"]
    for column in (y[:, None], pd.DataFrame({"label": y})):  # the one-column DataFrame had no warning
        with pytest.warns(UserWarning, match=r"shape \(N, 1\) is read as one worker's wide matrix"):
            _fast().fit(x, column)
    # a wide DataFrame beside a repeated index; and crowd-kit's long table (task, worker, label) of
    # exactly N rows stays a long table, not three workers named task, worker and label
    np.testing.assert_array_equal(_fast().fit(frame, pd.DataFrame(wide, columns=["ann", "bob", "cy"])).label_proba_, ref.label_proba_)
    crowdkit = pd.DataFrame({"task": np.arange(60), "worker": "w", "label": np.array(["bird", "cat", "dog"])[y]})
    long = _fast().fit(x, crowdkit)
    assert long.classes_.tolist() == ["bird", "cat", "dog"] and long.worker_ids_.tolist() == ["w"]


def test_estimator_flags_and_model_options_are_checked_by_name() -> None:
    """track_memorization and verbose must be bools (the string 'no' had tracked memorization),
    and model_options a mapping (a string had failed with dict()'s ValueError)."""
    x, y, _ = _blobs(n=30)
    for params, message in (({"track_memorization": "no"}, "track_memorization must be true or false; got 'no'"),
                            ({"verbose": "yes"}, "verbose must be true or false; got 'yes'"),
                            ({"model_options": "mig_f=js"}, "model_options must be a mapping of option names to values; got 'mig_f=js'")):
        with pytest.raises(ConfigError, match=message):
            _fast().set_params(**params).fit(x, y)
    assert _fast().set_params(track_memorization=np.False_, verbose=False).fit(x, y).labels_.shape == (30,)
    assert "memorization_mean" in _fast().set_params(track_memorization=1, verbose=0).fit(x, y).history_[-1]  # 0/1, scikit-learn's verbose


def test_integer_labels_that_leave_classes_unused_are_warned_of_as_kdcrowd_fit_warns() -> None:
    # a long table's labels 1..3 made a 4-class model (class 0 chosen by nobody) with no word
    x, y, _ = _blobs(n=60)
    long = pd.DataFrame({"item": np.repeat(np.arange(60), 2), "worker": np.tile([0, 1], 60), "label": np.repeat(y, 2) + 1})
    with pytest.warns(UserWarning, match=r"integers from 1 to 3, read as class indices 0\.\.3: class 0 is a class nobody chose.*classes=\[1,2,3\]"):
        clf = _fast(epochs=1).fit(x, long)
    assert clf.classes_.tolist() == [0, 1, 2, 3]  # as documented: integers are class indices
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        assert _fast(epochs=1, classes=[1, 2, 3]).fit(x, long).classes_.tolist() == [1, 2, 3]
        _fast(epochs=1).fit(x, long.assign(label=long.label - 1))  # 0..2: nothing to say
        _fast(epochs=1, classes=[0, 1, 2, 3]).fit(x, long)  # classes given: class 0 is declared, not a slip


def test_a_wide_table_s_item_column_names_the_rows_not_a_worker() -> None:
    """A wide DataFrame with an ``item`` (or ``task``) column, as ``kdcrowd fit`` reads a wide
    file: that column is no worker (it was one, its ids 0..N-1 read as classes); where X's
    rows are named, the table's rows are put in X's order by it."""
    x, y, sim = _blobs(n=60)
    wide = sim.annotations.to_wide()
    plain = _fast(validation_fraction=0).fit(x, wide)
    with_ids = pd.DataFrame(wide, columns=[f"w{m}" for m in range(wide.shape[1])])
    with_ids.insert(0, "item", np.arange(60))
    clf = _fast(validation_fraction=0).fit(x, with_ids)
    assert clf.worker_ids_.tolist() == [f"w{m}" for m in range(wide.shape[1])] and len(clf.classes_) == 3
    np.testing.assert_array_equal(clf.label_proba_, plain.label_proba_)
    # X named by its index, the table in another order: lined up by the item column
    names = [f"it{i}" for i in range(60)]
    xd = pd.DataFrame(x, index=names)
    shuffled = with_ids.assign(item=names).iloc[np.random.default_rng(0).permutation(60)].rename(columns={"item": "task"})
    named = _fast(validation_fraction=0).fit(xd, shuffled)
    np.testing.assert_array_equal(named.label_proba_, plain.label_proba_)
    with pytest.raises(ValueError, match=r"'task' column names 1 item that is not among X's \('other'\)"):
        _fast(validation_fraction=0).fit(xd, shuffled.assign(task=names[:-1] + ["other"]))
    # ids compared as text, as a long table's: X named "0".."59", the column read as ints
    as_text = _fast(validation_fraction=0).fit(pd.DataFrame(x, index=[str(i) for i in range(60)]), with_ids.iloc[::-1])
    np.testing.assert_array_equal(as_text.label_proba_, plain.label_proba_)
    # a column named like ids, as kdcrowd fit reads a wide file's ('id', 'filename' ...); 'item' before 'task'
    by_name = _fast(validation_fraction=0).fit(x, with_ids.rename(columns={"item": "image_id"}))
    assert by_name.worker_ids_.tolist() == clf.worker_ids_.tolist()
    assert _fast(validation_fraction=0).fit(x, with_ids.assign(task=0)).worker_ids_.tolist() == clf.worker_ids_.tolist() + ["task"]
    with pytest.raises(ValueError, match="columns 'id', 'filename' that each could be the item ids.*call the column of item ids 'item'"):
        _fast(validation_fraction=0).fit(x, with_ids.drop(columns="item").assign(id=np.arange(60), filename=np.arange(60)))


def test_a_wide_table_s_index_of_item_ids_names_its_rows_as_an_item_column_does() -> None:
    """A wide DataFrame without a column of item ids whose index names the items
    (``long.pivot(index="item", ...)``: the ids in the index, sorted as text) is put in X's
    order by that index, as by an ``item`` column (it was read row by row, its index
    ignored: the labels of it10 went to it2). A plain ``0..N-1`` index names no items; with
    X's rows unnamed an index of other ids than the row numbers is dropped and the rows
    follow X's, with a warning, as an item column's."""
    x, _, sim = _blobs(n=60)
    ann = sim.annotations
    names = [f"it{i}" for i in range(60)]
    xd = pd.DataFrame(x, index=names)
    long = pd.DataFrame({"item": np.asarray(names, dtype=object)[ann.item], "worker": np.asarray(ann.worker), "label": np.asarray(ann.label)})
    pivot = long.pivot(index="item", columns="worker", values="label")
    assert pivot.index[:3].tolist() == ["it0", "it1", "it10"]  # sorted as text, not in X's order
    plain = _fast(validation_fraction=0, epochs=1).fit(x, ann.to_wide())
    for table in (pivot, pivot.reset_index()):  # the index, as the column reset_index() makes of it
        clf = _fast(validation_fraction=0, epochs=1).fit(xd, table)
        np.testing.assert_array_equal(clf.label_proba_, plain.label_proba_)
        assert clf.worker_ids_.tolist() == pivot.columns.tolist()
    # the errors of an item column: an id that names no item of X, an id twice
    with pytest.raises(ValueError, match=r"wide table's index names 1 item that is not among X's \('other'\)"):
        _fast(validation_fraction=0, epochs=1).fit(xd, pivot.rename(index={"it59": "other"}))
    with pytest.raises(ValueError, match="wide table's index repeats an id"):
        _fast(validation_fraction=0, epochs=1).fit(xd, pivot.rename(index={"it59": "it58"}))
    # ids compared as text: X named "0".."59", the table's index the ints 59..0
    wide = pd.DataFrame(ann.to_wide())
    as_text = _fast(validation_fraction=0, epochs=1).fit(pd.DataFrame(x, index=[str(i) for i in range(60)]), wide.iloc[::-1])
    np.testing.assert_array_equal(as_text.label_proba_, plain.label_proba_)
    # a plain 0..N-1 index names no items: the rows follow X's, named or not
    np.testing.assert_array_equal(_fast(validation_fraction=0, epochs=1).fit(xd, wide).label_proba_, plain.label_proba_)
    # X's rows unnamed: the index is no worker and, naming no row number of X, the rows stay a row per row of X, as with an item column
    by_row = pivot.loc[names]  # in X's order
    with pytest.warns(UserWarning, match="do not name X's rows"):
        unnamed = _fast(validation_fraction=0, epochs=1).fit(x, by_row.set_axis(pd.Index(names[::-1], name="item")))
    np.testing.assert_array_equal(unnamed.label_proba_, plain.label_proba_)
    with warnings.catch_warnings():  # an unnamed index beside an X without names: the rows' old positions (sklearn's shuffle), nothing to say
        warnings.simplefilter("error", UserWarning)
        positional = _fast(validation_fraction=0, epochs=1).fit(x, by_row.set_axis(names[::-1]))
    np.testing.assert_array_equal(positional.label_proba_, plain.label_proba_)
    with pytest.warns(UserWarning, match="do not name X's rows"):
        by_column = _fast(validation_fraction=0, epochs=1).fit(x, by_row.rename_axis("item").reset_index().assign(item=names[::-1]))
    np.testing.assert_array_equal(unnamed.label_proba_, by_column.label_proba_)


@pytest.mark.parametrize("layout", ["photo", "to_csv", "to_csv beside item", "image_id"])
def test_a_wide_table_s_item_ids_are_found_as_kdcrowd_fit_finds_a_wide_file_s(tmp_path, layout: str) -> None:
    """The same wide table as a file (``kdcrowd fit``'s reader) and as a DataFrame (the
    estimator) has the same column of item ids: the estimator made a column of ids found by
    its values (``photo``) or the header-less index that ``to_csv()`` writes a worker."""
    import warnings

    from kdcrowd.data.readers import InputWarning, read_annotation_frame

    x, _, sim = _blobs(n=60)
    workers = [f"w{m}" for m in range(sim.annotations.to_wide().shape[1])]
    table = pd.DataFrame(sim.annotations.to_wide(), columns=workers)
    names = [f"img{i}" for i in range(60)]
    path = tmp_path / "wide.csv"
    if layout == "to_csv":
        table.to_csv(path)  # its first column: the row numbers 0..59, without a header
        names = [str(i) for i in range(60)]
    else:
        table.insert(0, {"photo": "photo", "image_id": "image_id", "to_csv beside item": "item"}[layout], names)
        table.to_csv(path, index=layout == "to_csv beside item")
    frame = read_annotation_frame(path)
    assert set(frame["worker"]) == set(workers) and frame.attrs["items"] == names
    read_back = pd.read_csv(path)  # the DataFrame a user of the estimator has of the file
    plain = _fast(validation_fraction=0, epochs=1).fit(x, sim.annotations.to_wide())
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        clf = _fast(validation_fraction=0, epochs=1).fit(x, read_back)
    assert clf.worker_ids_.tolist() == workers and clf.classes_.tolist() == [0, 1, 2]
    said = [str(w.message) for w in warned if issubclass(w.category, InputWarning)]  # which column holds the ids, as kdcrowd fit says
    unnamed = [w for w in said if "do not name X's rows" in w]  # ids other than X's row numbers 0..59: the rows taken in order, said once
    said = [w for w in said if w not in unnamed]
    assert len(said) == 1 and said[0].startswith("the wide table of crowd labels: ") and "--item-column" not in said[0], said
    assert len(unnamed) == (layout != "to_csv"), unnamed
    np.testing.assert_array_equal(clf.label_proba_, plain.label_proba_)
    # X named by the file's item ids, the table's rows in another order: lined up by that column
    shuffled = read_back.iloc[np.random.default_rng(0).permutation(60)]
    named = _fast(validation_fraction=0, epochs=1).fit(pd.DataFrame(x, index=names), shuffled)
    np.testing.assert_array_equal(named.label_proba_, plain.label_proba_)


def test_with_x_unnamed_a_wide_table_s_ids_are_matched_to_the_row_numbers_as_a_long_table_s() -> None:
    """X's rows unnamed (an array, a plain 0..N-1 index): a wide table whose ids (an item
    column, or an index other than the plain range) are the row numbers 0..N-1 in another
    order is put in X's order by them, as a long table's item column is matched to the row
    numbers (its rows were taken in order: the labels of row 17 went to the item on the
    table's row 17, and `kdcrowd fit` matched the same file by id). Ids that are not the row
    numbers keep the rows in X's order, with one InputWarning saying how to align them."""
    import warnings

    from kdcrowd.data.readers import InputWarning

    x, _, sim = _blobs(n=60)
    workers = [f"w{m}" for m in range(sim.annotations.to_wide().shape[1])]
    wide = pd.DataFrame(sim.annotations.to_wide(), columns=workers)
    plain = _fast(validation_fraction=0, epochs=1).fit(x, wide)
    order = np.random.default_rng(1).permutation(60)
    shuffled = wide.iloc[order]  # its index: the row numbers, out of order
    # (an index names items beside an X without names when it is named: an unnamed one is the rows' old positions)
    tables = {"index": shuffled.rename_axis("item"), "item column": shuffled.rename_axis("item").reset_index(),
              "ids as text": shuffled.set_axis(pd.Index([str(i) for i in order], name="item")), "to_csv's index": shuffled.reset_index().rename(columns={"index": "Unnamed: 0"})}
    for what, table in tables.items():
        for X in (x, pd.DataFrame(x)):
            with warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                clf = _fast(validation_fraction=0, epochs=1).fit(X, table)
            np.testing.assert_array_equal(clf.label_proba_, plain.label_proba_, err_msg=what)
            assert clf.worker_ids_.tolist() == workers, what
            assert not [w for w in warned if "do not name X's rows" in str(w.message)], what
    # ids that are not X's row numbers: the rows stay X's, with one warning naming item_ids= and an indexed X
    names = [f"img{i}" for i in range(60)]
    for table in (wide.set_axis(pd.Index(names, name="item")), wide.assign(item=names), wide.set_axis(pd.Index([str(i + 1) for i in range(60)], name="id"))):
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            clf = _fast(validation_fraction=0, epochs=1).fit(x, table)
        np.testing.assert_array_equal(clf.label_proba_, plain.label_proba_)
        said = [str(w.message) for w in warned if issubclass(w.category, InputWarning)]
        assert len(said) == 1 and "do not name X's rows" in said[0] and "item_ids=" in said[0] and "indexed by" in said[0], said


def test_an_annotations_object_is_matched_to_x_s_item_ids_and_declared_classes_as_a_long_table() -> None:
    """An Annotations given as y follows X's named items (``item_ids``, or X's index) and
    ``classes=`` as the same labels in a long table do: it was used as it was, its items by
    position (from_long sorts the ids: the labels of img000 went to X's first row, img105)
    and the declared classes ignored (an unseen class missing from ``classes_``, another order
    kept)."""
    x, y, _ = _blobs(n=80)
    names = np.array(["bird", "cat", "dog"])
    ids = [f"img{i:03d}" for i in np.random.default_rng(0).permutation(80)]
    X = pd.DataFrame(x, index=ids)
    long = pd.DataFrame({"item": np.repeat(ids, 2), "worker": np.tile(["a", "b"], 80), "label": np.repeat(names[y], 2)})
    ann = Annotations.from_long(long)
    assert ann.item_ids[:2].tolist() == ["img000", "img001"]  # sorted, not in X's order
    ref = _fast(validation_fraction=0).fit(X, long)
    for clf in (_fast(validation_fraction=0).fit(X, ann), _fast(validation_fraction=0).fit(x, ann, item_ids=ids)):
        np.testing.assert_array_equal(clf.label_proba_, ref.label_proba_)
        assert clf.worker_ids_.tolist() == ["a", "b"] and clf.classes_.tolist() == names.tolist()
    # some of X's items labelled, in any order, as a long table may; an item that is no row of X: the long table's error
    part = Annotations.from_long(long.iloc[:100])
    np.testing.assert_array_equal(_fast(validation_fraction=0).fit(X, part).label_proba_, _fast(validation_fraction=0).fit(X, long.iloc[:100]).label_proba_)
    stray = Annotations.from_long(long.assign(item=long["item"].replace({ids[5]: "other"})))
    for y_ in (stray, stray.to_long()):
        with pytest.raises(ValueError, match=r"annotations for items that have no features"):
            _fast(validation_fraction=0).fit(X, y_)
    # declared classes: reordered, an unseen one added, a label outside them refused, as for a long table
    for classes in (["dog", "cat", "bird"], ["bird", "cat", "dog", "fish"]):
        by_table = _fast(validation_fraction=0, classes=classes).fit(X, long)
        for clf in (_fast(validation_fraction=0, classes=classes).fit(X, ann), _fast(validation_fraction=0, classes=classes).fit(x, ann.subset_items(pd.Index(ann.item_ids).get_indexer(ids)))):
            assert clf.classes_.tolist() == classes and by_table.classes_.tolist() == classes
            np.testing.assert_array_equal(clf.label_proba_, by_table.label_proba_)
    for y_ in (ann, long):
        with pytest.raises(ValueError, match=r"labels outside the declared classes \['cat', 'dog'\] in 48 rows"):
            _fast(classes=["cat", "dog"]).fit(X, y_)
    # X unnamed: the Annotations' items are X's rows, in its order, as before
    in_order = ann.subset_items(pd.Index(ann.item_ids).get_indexer(ids))
    np.testing.assert_array_equal(_fast(validation_fraction=0).fit(x, in_order).label_proba_, ref.label_proba_)


def test_a_wide_table_with_item_ids_may_label_some_of_x_s_items_as_a_long_table_may() -> None:
    """A wide DataFrame is a crowd whatever its number of rows: with ids (an item column, or an
    index other than the plain range) it may hold some of X's items, in any order, the others
    unlabelled, as a long table may (one of fewer rows than X was sent to the long-table reader,
    which missed its worker and label columns); without ids it needs a row per row of X."""
    x, _, sim = _blobs(n=60)
    workers = [f"w{m}" for m in range(sim.annotations.to_wide().shape[1])]
    wide = pd.DataFrame(sim.annotations.to_wide(), columns=workers)
    some = np.random.default_rng(2).permutation(60)[:40]  # the labelled rows, in no order
    masked = wide.copy()
    masked.loc[~masked.index.isin(some)] = -1  # the same crowd, a row per row of X
    ref = _fast(validation_fraction=0, epochs=1).fit(x, masked)
    names = [f"it{i}" for i in range(60)]
    xd = pd.DataFrame(x, index=names)
    for X, ids in ((x, some), (pd.DataFrame(x), some.astype(str)), (xd, np.asarray(names)[some])):
        part = wide.iloc[some].set_axis(ids)
        for table in (part, part.rename_axis("item").reset_index()):
            clf = _fast(validation_fraction=0, epochs=1).fit(X, table)
            np.testing.assert_array_equal(clf.label_proba_, ref.label_proba_)
            assert clf.worker_ids_.tolist() == workers
    # an id that names no item of X; ids that are not X's row numbers, X's rows unnamed; no ids at all
    with pytest.raises(ValueError, match=r"the wide table's 'item' column names 1 item that is not among X's \('other'\)"):
        _fast(validation_fraction=0, epochs=1).fit(xd, wide.iloc[some].assign(item=np.asarray(names)[some]).replace({"item": {names[some[0]]: "other"}}))
    with pytest.raises(ValueError, match=r"the wide table's index names 40 items that are not among X's \('it\d+', .*item_ids="):
        _fast(validation_fraction=0, epochs=1).fit(x, wide.iloc[some].set_axis(np.asarray(names)[some]))
    with pytest.raises(ValueError, match=r"the wide table of crowd labels has 40 rows and no item ids.*needs one row per row of X \(60\)"):
        _fast(validation_fraction=0, epochs=1).fit(x, wide.iloc[some].reset_index(drop=True))
    # a long table with misnamed columns is still refused as one, whatever its rows
    long = sim.annotations.to_long()
    for table in (long.rename(columns={"label": "answer"}), long.iloc[:60].rename(columns={"label": "answer"})):
        with pytest.raises(ValueError, match=r"missing column\(s\) \['label'\]"):
            _fast(validation_fraction=0, epochs=1).fit(x, table)


def test_rows_shuffled_with_an_unnamed_x_keep_their_pairing():
    """sklearn.utils.shuffle(X, wide, gold) keeps each row with its row: with X a plain array
    (no item names) the wide table's and the gold Series' unnamed indices, now in another
    order, are the rows' old positions, not ids to reorder by; a named index still names items."""
    import warnings

    from sklearn.utils import shuffle

    from kdcrowd.data.readers import InputWarning

    rng = np.random.default_rng(0)
    n = 60
    t = rng.integers(0, 3, n)
    X = (np.eye(3)[t] * 3 + rng.normal(size=(n, 3)) * 0.3).astype(np.float32)
    wide = pd.DataFrame({f"w{j}": np.where(rng.random(n) < 0.9, t, (t + 1) % 3) for j in range(3)})
    gold = pd.Series([t[i] if i < 10 else None for i in range(n)], dtype=object)
    Xs, ws, gs, ts = shuffle(X, wide, gold, t, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)  # nothing to warn of: the rows are in X's order
        clf = KDCrowdClassifier(method="mv", epochs=40, random_state=0).fit(Xs, ws)
        gold_fit = KDCrowdClassifier(method="mv", epochs=1, random_state=0).fit(Xs, ws, gold=gs)
    assert (clf.labels_ == ts).mean() > 0.9  # three clusters and three 90 % workers: paired rows are learnt (misaligned: ~0.3)
    np.testing.assert_array_equal(gold_fit.gold_, np.array([-1 if v is None else v for v in gs]))
    sliced = gold.iloc[10:]  # df.iloc[10:]'s index 10..N-1 beside its rows as an array: one value per row
    clf2 = KDCrowdClassifier(method="mv", epochs=1, random_state=0).fit(X[10:], t[10:], gold=pd.Series(t[10:], index=sliced.index))
    np.testing.assert_array_equal(clf2.gold_, t[10:])
    named = ws.rename_axis("item")  # a named index names the items: X's row numbers, as an item column would
    clf3 = KDCrowdClassifier(method="mv", epochs=1, random_state=0).fit(Xs, named)
    by_number = KDCrowdClassifier(method="mv", epochs=1, random_state=0).fit(Xs, named.sort_index().reset_index(drop=True))
    np.testing.assert_array_equal(clf3.labels_, by_number.labels_)


def test_a_wide_table_s_float_ids_are_read_as_a_long_table_s() -> None:
    """An item column that pandas holds as float (17.0: a column with gaps, a pivot) names the
    item "17", as a long table's item column does; it was compared as "17.0", matched no row
    number, and left the rows in file order (the labels of item 2 went to row 0). A missing
    id is refused, not read as the id "nan"."""
    x, _, sim = _blobs(n=30)
    wide = pd.DataFrame(sim.annotations.to_wide(), columns=[f"w{m}" for m in range(sim.annotations.to_wide().shape[1])])
    plain = _fast(validation_fraction=0, epochs=1).fit(x, wide)
    order = np.random.default_rng(0).permutation(30)
    as_float = wide.iloc[order].reset_index(drop=True).assign(item=order.astype(float))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        got = _fast(validation_fraction=0, epochs=1).fit(x, as_float)
    np.testing.assert_array_equal(got.label_proba_, plain.label_proba_)
    with pytest.raises(ValueError, match="has no item id on 1 row"):
        _fast(validation_fraction=0, epochs=1).fit(x, as_float.assign(item=np.where(np.arange(30) == 3, np.nan, order)))
