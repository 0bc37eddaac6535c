"""CrowdClassifier: the fitted preprocessor is the training run's normalisation, without the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcrowd.data.simulate import simulate_workers
from kdcrowd.estimator import CrowdClassifier
from kdcrowd.training import DeviceData


def _blobs(n: int = 200, k: int = 3, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    x = (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    sim = simulate_workers(y, "symmetric", n_classes=k, seed=seed)
    return x, y, sim.annotations


@pytest.mark.parametrize("method", ["mv", "crowdlayer-mw"])
def test_estimator_keeps_the_normalisation_not_the_training_data(method: str) -> None:
    x, y, ann = _blobs()
    clf = CrowdClassifier(method=method, epochs=3, batch_size=32, lr=3e-3, device="cpu").fit(x, ann, X_val=x[:40], y_val=y[:40])
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
    clf = CrowdClassifier(method="mv", backbone="mlp", epochs=1, batch_size=32, device="cpu").fit(x, ann)
    prep = clf.preprocessor_
    ref = DeviceData(x, None, None, None, None, torch.device("cpu"))
    assert prep.is_image and prep.input_shape == (3, 8, 8) and prep.n_train == 0
    torch.testing.assert_close(prep.mean, ref.mean, rtol=0, atol=0)
    assert clf.predict_proba(x[:5]).shape == (5, k)
