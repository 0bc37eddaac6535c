"""CrowdFit, the estimator's engine without scikit-learn: the same fit as KDCrowdClassifier
on checked inputs, its own input checks, and `kdcrowd fit` running without importing
scikit-learn (whose base module imports scipy.stats) or matplotlib."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from kdcrowd.crowdfit import CrowdFit, NotFitted
from kdcrowd.data.simulate import simulate_workers
from kdcrowd.estimator import KDCrowdClassifier


def _data(n: int = 120, k: int = 3, d: int = 4, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, object]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    x = pd.DataFrame((centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32), columns=[f"f{i}" for i in range(d)])
    return x, y, simulate_workers(y, "symmetric", n_classes=k, seed=seed).annotations


SETTINGS = {"method": "maxmig", "backbone": "mlp", "epochs": 3, "batch_size": 32, "lr": 3e-3, "device": "cpu"}


def test_crowdfit_fits_exactly_as_the_estimator() -> None:
    x, _, ann = _data()
    a = CrowdFit(**SETTINGS).fit(x, ann)
    b = KDCrowdClassifier(**SETTINGS).fit(x, ann)
    np.testing.assert_array_equal(a.label_proba_, b.label_proba_)
    np.testing.assert_array_equal(a.transition_matrices_, b.transition_matrices_)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    assert list(a.feature_names_in_) == list(b.feature_names_in_) == list(x.columns)
    assert a.n_features_in_ == b.n_features_in_ == 4
    assert a.get_params() == b.get_params()


def test_crowdfit_checks_its_inputs() -> None:
    x, _, ann = _data()
    with pytest.raises(NotFitted, match="not fitted yet"):
        CrowdFit(**SETTINGS).predict(x)
    with pytest.raises(NotFittedError):
        KDCrowdClassifier(**SETTINGS).predict(x)
    bad = x.copy()
    bad.iloc[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        CrowdFit(**SETTINGS).fit(bad, ann)
    with pytest.raises(ValueError, match="must hold numbers"):
        CrowdFit(**SETTINGS).fit(x.astype(str).to_numpy(dtype=object), ann)
    clf = CrowdFit(**SETTINGS).fit(x, ann)
    with pytest.raises(ValueError, match="X has 3 features, but CrowdFit is expecting 4"):
        clf.predict(x.iloc[:, :3])
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(x.rename(columns={"f0": "other"}))
    assert clf.predict(x.to_numpy()).shape == (len(x),)  # an array without names: matched by position


def test_kdcrowd_fit_imports_neither_scikit_learn_nor_matplotlib(tmp_path: Path, heavy_imports) -> None:
    x, y, ann = _data(n=60)
    x.insert(0, "item", range(len(x)))
    x.to_csv(tmp_path / "X.csv", index=False)
    frame = pd.DataFrame({"item": ann.item, "worker": ann.worker, "label": ann.label})
    frame.to_csv(tmp_path / "answers.csv", index=False)
    code = textwrap.dedent(
        f"""
        from typer.testing import CliRunner
        from kdcrowd.cli import app
        r = CliRunner().invoke(app, ["fit", "--annotations", {str(tmp_path / "answers.csv")!r}, "--features", {str(tmp_path / "X.csv")!r},
                                     "--epochs", "1", "--device", "cpu", "--out", {str(tmp_path / "out")!r}, "--quiet"])
        assert r.exit_code == 0, r.output
        """
    )
    assert heavy_imports(code) == []
    assert (tmp_path / "out" / "report.html").exists()
