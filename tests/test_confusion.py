"""One confusion(): hand-computed counts for hard and soft targets, numpy and torch alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcrowd.data.confusion import confusion

# 3 items, 2 workers, 2 classes: (item, worker, label)
ITEM = np.array([0, 1, 2, 0, 2])
WORKER = np.array([0, 0, 0, 1, 1])
LABEL = np.array([0, 1, 1, 1, 1])


def test_hard_targets_count_by_hand() -> None:
    y = np.array([0, 1, -1])  # item 2 unknown: its annotations are skipped
    c = confusion((ITEM, WORKER, LABEL), y, n_workers=2, n_classes=2)
    assert c.dtype == np.int64
    np.testing.assert_array_equal(c, [[[1, 0], [0, 1]], [[0, 1], [0, 0]]])
    t = confusion((ITEM, WORKER, LABEL), y, n_workers=2, n_classes=2, normalize=True)
    np.testing.assert_allclose(t, [[[1, 0], [0, 1]], [[0, 1], [0.5, 0.5]]])  # a row without data: uniform
    s = confusion((ITEM, WORKER, LABEL), y, n_workers=2, n_classes=2, smoothing=1.0, normalize=True)
    np.testing.assert_allclose(s[1, 0], [1 / 3, 2 / 3])


def test_soft_targets_are_expected_counts() -> None:
    p = np.array([[0.8, 0.2], [0.1, 0.9], [0.5, 0.5]])
    c = confusion((ITEM, WORKER, LABEL), p, n_workers=2, n_classes=2)
    # worker 0: item 0 → label 0, items 1 and 2 → label 1
    np.testing.assert_allclose(c[0], [[0.8, 0.1 + 0.5], [0.2, 0.9 + 0.5]])
    np.testing.assert_allclose(c[1], [[0.0, 0.8 + 0.5], [0.0, 0.2 + 0.5]])
    # one-hot soft targets give the hard counts
    onehot = np.eye(2)[[0, 1, 1]]
    np.testing.assert_allclose(confusion((ITEM, WORKER, LABEL), onehot, n_workers=2, n_classes=2), confusion((ITEM, WORKER, LABEL), np.array([0, 1, 1]), n_workers=2, n_classes=2))


@pytest.mark.parametrize("normalize", [False, True])
def test_torch_and_numpy_agree(normalize: bool) -> None:
    rng = np.random.default_rng(0)
    item, worker, label = rng.integers(0, 50, 400), rng.integers(0, 7, 400), rng.integers(0, 4, 400)
    p = rng.dirichlet(np.ones(4), 50).astype(np.float32)
    a = confusion((item, worker, label), p, n_workers=7, n_classes=4, normalize=normalize)
    b = confusion(tuple(torch.as_tensor(v) for v in (item, worker, label)), torch.as_tensor(p), n_workers=7, n_classes=4, normalize=normalize)
    assert isinstance(b, torch.Tensor)
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-6, atol=1e-6)
    y = rng.integers(-1, 4, 50)
    np.testing.assert_array_equal(confusion((item, worker, label), y, n_workers=7, n_classes=4), confusion((torch.as_tensor(item), torch.as_tensor(worker), torch.as_tensor(label)), torch.as_tensor(y), n_workers=7, n_classes=4).numpy())


def test_the_annotations_and_the_metrics_use_it() -> None:
    from kdcrowd.data.simulate import simulate_workers
    from kdcrowd.metrics import true_transitions_from_labels

    y = np.random.default_rng(1).integers(0, 3, 200)
    ann = simulate_workers(y, "symmetric", n_classes=3, seed=0).annotations
    np.testing.assert_array_equal(ann.empirical_confusion(y), confusion(ann, y))
    t, mask = true_transitions_from_labels(ann, y)
    np.testing.assert_allclose(t[mask], confusion(ann, y, normalize=True)[mask])
