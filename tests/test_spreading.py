"""Label spreading (:mod:`kdcrowd.spreading`): the graph, the fixed point by hand, a case
built so that spreading must correct the classifier, and its doors (the estimator, the
model file, ``kdcrowd fit``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from kdcrowd.cli import app
from kdcrowd.config import ConfigError, SettingWarning
from kdcrowd.data.simulate import simulate_workers
from kdcrowd.estimator import KDCrowdClassifier
from kdcrowd.spreading import LabelSpreading, knn_graph, spread, spread_new, spread_probabilities

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _dense_graph(x: np.ndarray, k: int) -> np.ndarray:
    """The same graph the slow way: every similarity at once, loops over items."""
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T
    np.fill_diagonal(s, -np.inf)
    w = np.zeros_like(s)
    for i in range(len(x)):
        for j in np.argsort(-s[i], kind="stable")[:k]:
            w[i, j] = w[j, i] = 1.0
    d = w.sum(1)
    return w / np.sqrt(d[:, None] * d[None, :])


def test_the_chunked_graph_is_the_dense_one() -> None:
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    for chunk in (7, 4096):
        g = knn_graph(torch.from_numpy(x), 4, chunk=chunk).to_dense().numpy()
        np.testing.assert_allclose(g, _dense_graph(x.astype(np.float64), 4), atol=1e-6)
        np.testing.assert_allclose(g, g.T)
    assert knn_graph(torch.from_numpy(x[:3]), 10).to_dense().count_nonzero() == 6  # k capped at n - 1: every other item


def test_the_graph_is_built_without_warnings_and_leaves_the_invariant_checks_as_they_were() -> None:
    # torch 2.11 warned "implicitly disabled" on every graph, check_invariants=False or not (the
    # warning part can fail only on such a torch; torch 2.13 never warns). The graph's scope turns
    # the checks off for itself alone: a caller who turned them on keeps them on.
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = knn_graph(x, 3)
    with torch.sparse.check_sparse_tensor_invariants(enable=True):
        on = knn_graph(x, 3)
        assert torch.sparse.check_sparse_tensor_invariants.is_enabled()
    assert g.is_coalesced() and g.shape == (30, 30) and torch.equal(on.to_dense(), g.to_dense())


def test_the_fixed_point_by_hand() -> None:
    # two pairs far apart, one neighbour each: S joins 0-1 and 2-3 with weight 1, and
    # q0 = (1 - a) p0 + a q1, q1 = (1 - a) p1 + a q0  =>  q0 = (p0 + a p1) / (1 + a)
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.0, 10.1]])
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    a = 0.8
    g = knn_graph(x, 1)
    assert torch.equal(g.to_dense(), torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]))
    q = spread(p, g, a, tol=1e-9, max_iter=1000)
    pair = lambda i, j: (p[i] + a * p[j]) / (1 + a)
    np.testing.assert_allclose(q.numpy(), torch.stack([pair(0, 1), pair(1, 0), pair(2, 3), pair(3, 2)]).numpy(), atol=1e-6)
    # alpha 0: the classifier as it is
    np.testing.assert_allclose(spread(p, g, 0.0).numpy(), p.numpy(), atol=1e-7)


def test_spreading_corrects_a_classifier_that_errs_on_a_few_items_of_clean_clusters() -> None:
    rng = np.random.default_rng(1)
    k, n = 3, 300
    y = rng.integers(0, k, n)
    x = (rng.normal(0, 6, (k, 10))[y] + rng.normal(0, 1, (n, 10))).astype(np.float32)
    p = np.full((n, k), 0.1, dtype=np.float32)
    p[np.arange(n), y] = 0.8
    wrong = rng.choice(n, 45, replace=False)  # 15 % confidently wrong
    p[wrong] = 0.1
    p[wrong, (y[wrong] + 1) % k] = 0.8
    q = spread_probabilities(x, p, LabelSpreading("on"))
    assert (p.argmax(1) == y).mean() == pytest.approx(0.85)
    assert (q.argmax(1) == y).mean() >= 0.98  # 85 % → all but an item or two whose neighbours are mostly wrong too
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    # a new item is spread over the graph of the fitted items and itself
    new = x[wrong[:5]] + 0.01
    q_new = spread_new(x, p, new, p[wrong[:5]], LabelSpreading("on"))
    assert (q_new.argmax(1) == y[wrong[:5]]).all()


def test_options_are_checked_and_named() -> None:
    with pytest.raises(ConfigError, match="spreading_alpha must be less than 1"):
        LabelSpreading(spreading_alpha=1.0)
    with pytest.raises(ConfigError, match="spreading_neighbours must be at least 1"):
        LabelSpreading(spreading_neighbours=0)
    with pytest.raises(ConfigError, match="label_spreading must be one of auto, on, off"):
        LabelSpreading("yes")  # type: ignore[arg-type]
    assert LabelSpreading().active(frozen_features=True) and not LabelSpreading().active(frozen_features=False)
    assert LabelSpreading("on").active(False) and not LabelSpreading("off").active(True)


def test_the_defaults_are_the_validation_choice_of_the_committed_sweep() -> None:
    path = ROOT / "benchmarks/results/practitioner_pretrained/cpu_spreading_validation.json"
    chosen = json.loads(path.read_text())["chosen"]
    assert (LabelSpreading().spreading_neighbours, LabelSpreading().spreading_alpha) == (chosen["neighbours"], chosen["alpha"])


def _crowd(n: int = 160, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, object]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = (rng.normal(0, 3, (k, 6))[y] + rng.normal(0, 1, (n, 6))).astype(np.float32)
    return x, y, simulate_workers(y, "symmetric", n_classes=k, seed=seed).annotations


def test_the_estimator_spreads_its_labels_and_predictions_over_one_graph(tmp_path: Path) -> None:
    from kdcrowd.persist import load_predictor, save_model

    x, y, ann = _crowd()
    new = x[:20] + np.float32(0.05)
    kw = {"method": "mv", "backbone": "mlp", "epochs": 3, "batch_size": 32, "device": "cpu"}
    with pytest.warns(SettingWarning, match="unlabelled is used by label spreading only, which is off for these items"):
        off = KDCrowdClassifier(**kw).fit(x, ann, unlabelled=new)
    assert off.spreading_ is None and "spread" not in off.label_source_
    np.testing.assert_allclose(off.label_proba_, off.classifier_proba_, atol=1e-6)
    on = KDCrowdClassifier(**kw, label_spreading="on").fit(x, ann, unlabelled=new)
    np.testing.assert_allclose(on.classifier_proba_, off.classifier_proba_, atol=1e-6)  # the same training
    both = spread_probabilities(np.concatenate([x, new]), np.concatenate([on.classifier_proba_, on._classifier(new)]), LabelSpreading("on"))
    np.testing.assert_allclose(on.label_proba_, both[: len(x)], atol=1e-5)
    np.testing.assert_allclose(on.predict_proba(new), both[len(x) :], atol=1e-5)  # the graph the labels were spread over
    assert "spread over the 5-nearest-neighbour graph" in on.label_source_
    save_model(tmp_path / "m.pt", on)
    np.testing.assert_allclose(load_predictor(tmp_path / "m.pt")(new), on.predict_proba(new), atol=1e-5)
    with pytest.raises(ConfigError, match="label_spreading on needs feature rows.*set image_features auto or frozen"):
        KDCrowdClassifier(**kw, label_spreading="on").fit(np.zeros((20, 8, 8, 3), np.uint8), np.arange(20) % 2)


def test_the_fitted_items_predicted_again_get_their_fitted_labels(tmp_path: Path) -> None:
    """Predicting the training items (the estimator, a model file): each is its fitted item,
    not a second node beside it in the graph (that moved their probabilities, and some labels
    flipped against labels.csv); features computed again within float noise count too."""
    from kdcrowd.persist import load_predictor, save_model

    x, y, ann = _crowd()
    clf = KDCrowdClassifier(method="mv", backbone="mlp", epochs=3, batch_size=32, device="cpu", label_spreading="on").fit(x, ann)
    np.testing.assert_allclose(clf.predict_proba(x), clf.label_proba_, atol=1e-6)
    save_model(tmp_path / "m.pt", clf)
    np.testing.assert_allclose(load_predictor(tmp_path / "m.pt")(x[::-1]), clf.label_proba_[::-1], atol=1e-6)
    # items to predict given at fit time (kdcrowd fit --predict-features) that hold fitted items: one graph for both
    new = np.concatenate([x[:10], x[:15] + np.float32(0.5)])
    both = KDCrowdClassifier(method="mv", backbone="mlp", epochs=3, batch_size=32, device="cpu", label_spreading="on").fit(x, ann, unlabelled=new)
    np.testing.assert_allclose(both.predict_proba(new)[:10], both.label_proba_[:10], atol=1e-6)  # the fit's graph: its own items once
    from kdcrowd.spreading import fitted_twins

    noisy = x[:3] * (1 + np.float32(1e-7))
    assert fitted_twins(x, np.concatenate([noisy, x[:3] + 0.5])).tolist() == [0, 1, 2, -1, -1, -1]


def test_items_to_predict_given_at_fit_stay_in_the_graph_of_the_fitted_labels(tmp_path: Path) -> None:
    """fit(X, y, unlabelled=U) spreads labels_ over the graph of X and U: the model keeps U's
    rows (the estimator's spreading_, the model file), so X predicted again gives labels_ (it
    was spread over X alone: up to 0.16 apart, labels flipped), U gives what the fit's graph
    gave U, and new items are spread over that graph. A model file saved before, with the
    fitted items alone, loads and predicts as it did."""
    import torch

    from kdcrowd.persist import load_predictor, save_model

    xs, y, _ = _crowd(n=300, seed=1)
    x, u, z = xs[:150], xs[150:280], xs[280:]
    ann = simulate_workers(y[:150], "symmetric", n_classes=3, seed=1).annotations
    clf = KDCrowdClassifier(method="mv", backbone="mlp", epochs=3, batch_size=32, device="cpu", label_spreading="on").fit(x, ann, unlabelled=u)
    graph = spread_probabilities(np.concatenate([x, u]), np.concatenate([clf.classifier_proba_, clf._classifier(u)]), LabelSpreading("on"))
    np.testing.assert_allclose(clf.label_proba_, graph[: len(x)], atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(x), clf.label_proba_, atol=1e-6)
    assert (clf.predict(x) == clf.labels_).all()
    np.testing.assert_allclose(clf.predict_proba(u), graph[len(x) :], atol=1e-6)  # what the fit gave U
    with_z = spread_probabilities(np.concatenate([x, u, z]), np.concatenate([clf.classifier_proba_, clf._classifier(u), clf._classifier(z)]), LabelSpreading("on"))
    np.testing.assert_allclose(clf.predict_proba(z), with_z[len(x) + len(u) :], atol=1e-5)  # new items: over the fit's graph and themselves
    save_model(tmp_path / "m.pt", clf)
    saved = load_predictor(tmp_path / "m.pt")
    np.testing.assert_allclose(saved(x), clf.label_proba_, atol=1e-6)
    assert (clf.classes_[saved(x[::-1]).argmax(1)] == clf.labels_[::-1]).all()
    np.testing.assert_allclose(saved(u), graph[len(x) :], atol=1e-6)
    np.testing.assert_allclose(saved(z), clf.predict_proba(z), atol=1e-5)
    # a file of the layout before: the fitted items' features and anchors alone
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    ck["spreading"].update(features=torch.from_numpy(x), anchors=torch.from_numpy(clf.classifier_proba_))
    torch.save(ck, tmp_path / "old.pt")
    old = load_predictor(tmp_path / "old.pt")
    np.testing.assert_allclose(old(z), spread_new(x, clf.classifier_proba_, z, clf._classifier(z), LabelSpreading("on")), atol=1e-6)
    np.testing.assert_allclose(old(x), spread_probabilities(x, clf.classifier_proba_, LabelSpreading("on")), atol=1e-6)


def test_fit_command_spreads_over_the_items_to_predict_and_names_its_options(tmp_path: Path) -> None:
    x, y, ann = _crowd()
    ids = [f"i{i}" for i in range(len(x))]
    pd.DataFrame({"item": [ids[i] for i in ann.item], "worker": ann.worker, "label": ann.label}).to_csv(tmp_path / "a.csv", index=False)
    cols = [f"f{j}" for j in range(x.shape[1])]
    pd.concat([pd.DataFrame({"item": ids}), pd.DataFrame(x, columns=cols)], axis=1).to_csv(tmp_path / "x.csv", index=False)
    pd.concat([pd.DataFrame({"item": [f"n{i}" for i in range(20)]}), pd.DataFrame(x[:20] + 0.05, columns=cols)], axis=1).to_csv(tmp_path / "new.csv", index=False)
    base = ["fit", "--annotations", str(tmp_path / "a.csv"), "--features", str(tmp_path / "x.csv"), "--predict-features", str(tmp_path / "new.csv"),
            "--method", "mv", "--epochs", "2", "--device", "cpu", "--quiet"]
    r = runner.invoke(app, [*base, "--label-spreading", "on", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "on: 5 neighbours, alpha 0.8" in (tmp_path / "o" / "report.html").read_text()  # the report's settings
    r = runner.invoke(app, ["predict", "--model", str(tmp_path / "o" / "model.pt"), "--features", str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    p_cols = [c for c in pd.read_csv(tmp_path / "p.csv").columns if c.startswith("p_")]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv")[p_cols].to_numpy(), pd.read_csv(tmp_path / "o" / "predictions.csv")[p_cols].to_numpy(), atol=1e-4)
    # the training items predicted by the model file: their labels.csv rows (spread over the graph with the items to predict)
    r = runner.invoke(app, ["predict", "--model", str(tmp_path / "o" / "model.pt"), "--features", str(tmp_path / "x.csv"), "--out", str(tmp_path / "px.csv")])
    assert r.exit_code == 0, r.output
    fitted = pd.read_csv(tmp_path / "o" / "labels.csv").set_index("item").loc[ids]
    again = pd.read_csv(tmp_path / "px.csv").set_index("item").loc[ids]
    np.testing.assert_allclose(again[p_cols].to_numpy(), fitted[p_cols].to_numpy(), atol=1e-4)
    assert (again["label"] == fitted["label"]).all()
    r = runner.invoke(app, [*base, "--spreading-alpha", "1", "--out", str(tmp_path / "q")])
    assert r.exit_code == 2 and "--spreading-alpha must be less than 1" in r.output
    # images trained on as pixels: refused before training, naming the options to change
    from PIL import Image

    (tmp_path / "img").mkdir()
    for i in ids[:40]:
        Image.fromarray(np.full((8, 8, 3), 40 * (int(i[1:]) % 3), np.uint8)).save(tmp_path / "img" / f"{i}.png")
    answers = pd.read_csv(tmp_path / "a.csv")
    answers[answers["item"].isin(ids[:40])].to_csv(tmp_path / "a40.csv", index=False)
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "a40.csv"), "--images", str(tmp_path / "img"), "--image-features", "none",
                            "--label-spreading", "on", "--method", "mv", "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "px")])
    assert r.exit_code == 2 and "--label-spreading on needs feature rows" in r.output and "set --image-features auto or frozen" in r.output, r.output


def test_the_graph_raises_no_implicitly_disabled_sparse_warning(load_script, tmp_path) -> None:
    """``benchmarks/sparse_warning_check.py``: the library's graph raises no "implicitly disabled"
    warning in a fresh process (torch 2.11 raised it for a tensor built outside the scope; torch
    2.13 raises it for neither, so here the check runs the script and the library's way)."""
    bench = load_script("benchmarks/sparse_warning_check")
    out = bench.main(["--out", str(tmp_path / "w.json")])
    assert not out["ways"]["library"]["warns_implicitly_disabled"] and set(out["ways"]) == {"library", "without-scope"}
    assert out["torch"] == torch.__version__
    import json
    from pathlib import Path

    # the committed torch 2.11 record (the GPU machine's torch): the library silent, the tensor without the scope warned
    rec = json.loads((Path(__file__).parents[1] / "benchmarks/results/compat/sparse_warning_torch2.11_cpu.json").read_text())
    assert rec["torch"].startswith("2.11") and not rec["ways"]["library"]["warns_implicitly_disabled"] and rec["ways"]["without-scope"]["warns_implicitly_disabled"]
    if not out["ways"]["without-scope"]["warns_implicitly_disabled"]:
        pytest.skip(f"torch {torch.__version__} raises the warning for neither way: the library's silence shows nothing here (torch 2.11 raises it)")


def test_spreading_settings_without_spreading_are_refused(tmp_path: Path) -> None:
    """--spreading-neighbours/--spreading-alpha where label spreading does not run changed
    nothing, silently: refused on both doors, naming the option."""
    x, y, ann = _crowd()
    with pytest.raises(ConfigError, match="spreading_alpha is a setting of label spreading, which is off"):
        KDCrowdClassifier(method="mv", epochs=1, device="cpu", spreading_alpha=0.5).fit(x, ann)
    ids = [f"i{i}" for i in range(len(x))]
    pd.DataFrame({"item": [ids[i] for i in ann.item], "worker": ann.worker, "label": ann.label}).to_csv(tmp_path / "a.csv", index=False)
    pd.concat([pd.DataFrame({"item": ids}), pd.DataFrame(x, columns=[f"f{j}" for j in range(x.shape[1])])], axis=1).to_csv(tmp_path / "x.csv", index=False)
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "a.csv"), "--features", str(tmp_path / "x.csv"), "--method", "mv", "--epochs", "1",
                            "--device", "cpu", "--spreading-neighbours", "3", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--spreading-neighbours is a setting of label spreading" in " ".join(r.output.split()), r.output
    assert not (tmp_path / "o").exists()


def test_unlabelled_items_without_spreading_are_warned_of_and_checked_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """fit(..., unlabelled=U) with label spreading off changed nothing, silently, and U was
    not even checked; with spreading on, U of another width failed after the training, with
    a message about X ("X has 3 features, but ... expecting 4"). Now: a SettingWarning naming
    the way to use it, and with spreading on a check before training that names unlabelled."""
    import kdcrowd.methods

    x, y, ann = _crowd()
    kw = {"method": "mv", "backbone": "mlp", "epochs": 1, "batch_size": 32, "device": "cpu"}
    with pytest.warns(SettingWarning, match=r"unlabelled is used by label spreading only, which is off for these items \(on with label_spreading on, or auto "
                                            r"with frozen pretrained image features\): it has no effect; set label_spreading on, or drop unlabelled"):
        clf = KDCrowdClassifier(**kw, label_spreading="off").fit(x, ann, unlabelled=x[:5, :3])
    assert clf.spreading_ is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingWarning)
        KDCrowdClassifier(**kw).fit(x, ann)  # no unlabelled items: nothing to say

    class Trained(Exception):
        pass

    def no_training(*a: object, **k: object) -> None:
        raise Trained

    monkeypatch.setattr(kdcrowd.methods, "fit", no_training)
    with pytest.raises(ValueError, match=r"^unlabelled has 3 features, but X has 6: give unlabelled the same features as X$"):
        KDCrowdClassifier(**kw, label_spreading="on").fit(x, ann, unlabelled=x[:5, :3])
    with pytest.raises(Trained):  # the right width gets as far as the training
        KDCrowdClassifier(**kw, label_spreading="on").fit(x, ann, unlabelled=x[:5])
