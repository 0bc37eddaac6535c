"""Tests for kdcrowd.metrics (offline, fast)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kdcrowd.metrics import (
    accuracy,
    expected_calibration_error,
    expertise_error,
    memorization,
    pseudo_label_memorization,
    true_transitions_from_labels,
)


def test_accuracy_ids_proba_and_torch():
    y = np.array([0, 1, 2, 1])
    assert accuracy(np.array([0, 1, 1, 1]), y) == pytest.approx(0.75)
    proba = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
    assert accuracy(proba, y) == pytest.approx(0.75)
    assert accuracy(torch.tensor(proba, dtype=torch.bfloat16), torch.tensor(y)) == 0.75
    assert isinstance(accuracy(proba, y), float)
    with pytest.raises(ValueError):
        accuracy(np.array([0, 1]), y)


def _expertise_case():
    T_true = np.array(
        [
            [[1.0, 0.0], [0.5, 0.5]],
            [[0.5, 0.5], [0.2, 0.8]],
            [[0.5, 0.5], [0.5, 0.5]],
        ]
    )
    T_hat = np.array(
        [
            [[0.8, 0.2], [0.25, 0.75]],
            [[0.5, 0.5], [0.4, 0.6]],
            [[0.0, 1.0], [1.0, 0.0]],
        ]
    )
    row_mask = np.array([[True, True], [False, True], [False, False]])
    return T_true, T_hat, row_mask


def test_expertise_error_hand_case():
    T_true, T_hat, row_mask = _expertise_case()
    out = expertise_error(T_true, T_hat, row_mask)
    # worker 0: relative over entries with T>0: .2/1, .25/.5, .25/.5 -> 0.4 (the 0 entry is
    # excluded); MAE over all 4 entries: (.2+.2+.25+.25)/4 = .225
    # worker 1: only row 1: .2/.2, .2/.8 -> .625; MAE .2
    # worker 2: no rows -> NaN, excluded from aggregates
    np.testing.assert_allclose(out["relative_per_worker"][:2], [0.4, 0.625])
    np.testing.assert_allclose(out["mae_per_worker"][:2], [0.225, 0.2])
    assert math.isnan(out["relative_per_worker"][2]) and math.isnan(out["mae_per_worker"][2])
    assert out["relative_mean"] == pytest.approx(0.5125)
    assert out["relative_std"] == pytest.approx(0.1125)
    assert out["mae_mean"] == pytest.approx(0.2125)
    assert out["mae_std"] == pytest.approx(0.0125)
    for k in ("relative_mean", "relative_std", "mae_mean", "mae_std"):
        assert type(out[k]) is float
    json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()})


def test_expertise_error_no_mask_perfect_and_torch():
    T_true, T_hat, _ = _expertise_case()
    out = expertise_error(torch.tensor(T_true), torch.tensor(T_true))
    assert out["relative_mean"] == 0.0 and out["mae_mean"] == 0.0
    out = expertise_error(T_true[0], T_hat[0])  # single (K, K) matrix
    assert out["relative_per_worker"].shape == (1,)
    assert out["relative_mean"] == pytest.approx(0.4)
    out = expertise_error(T_true, T_hat, np.zeros((3, 2), dtype=bool))
    assert math.isnan(out["relative_mean"]) and math.isnan(out["mae_std"])
    with pytest.raises(ValueError):
        expertise_error(T_true, T_hat[:, :1])


def _transition_case():
    # items 0..4, y_true = [0, 0, 1, 1, -1 (unknown)]
    y_true = np.array([0, 0, 1, 1, -1])
    item = np.array([0, 1, 2, 3, 4])
    worker = np.array([0, 0, 0, 1, 1])
    label = np.array([0, 1, 1, 0, 2])
    return item, worker, label, y_true


def test_true_transitions_from_labels_hand_case():
    item, worker, label, y_true = _transition_case()
    T, mask = true_transitions_from_labels(item, worker, label, y_true, n_workers=3, n_classes=3)
    assert T.shape == (3, 3, 3) and mask.shape == (3, 3)
    expected = np.zeros((3, 3, 3))
    expected[0, 0] = [0.5, 0.5, 0.0]
    expected[0, 1] = [0.0, 1.0, 0.0]
    expected[1, 1] = [1.0, 0.0, 0.0]
    np.testing.assert_allclose(T, expected)
    np.testing.assert_array_equal(
        mask, [[True, True, False], [False, True, False], [False, False, False]]
    )


def test_true_transitions_from_annotations_object_and_torch():
    item, worker, label, y_true = _transition_case()
    ann = SimpleNamespace(item=item, worker=worker, label=label, n_workers=3, n_classes=3)
    T1, m1 = true_transitions_from_labels(ann, y_true)
    T2, m2 = true_transitions_from_labels(
        torch.tensor(item), torch.tensor(worker), torch.tensor(label), torch.tensor(y_true), 3, 3
    )
    T3, m3 = true_transitions_from_labels(ann, y_true=y_true)
    np.testing.assert_allclose(T1, T2)
    np.testing.assert_allclose(T1, T3)
    np.testing.assert_array_equal(m1, m2)
    # inferred sizes: 2 workers, 3 classes (label 2 appears on the unknown item)
    T4, m4 = true_transitions_from_labels(item, worker, label, y_true)
    assert T4.shape == (2, 3, 3)
    np.testing.assert_allclose(T4, T1[:2])
    # usable directly as expertise_error input
    out = expertise_error(T1, T1, m1)
    assert out["mae_mean"] == 0.0 and math.isnan(out["relative_per_worker"][2])


def test_true_transitions_match_annotations_empirical_confusion():
    from kdcrowd.data.annotations import Annotations, row_normalise

    rng = np.random.default_rng(0)
    n, m, k, a = 300, 12, 4, 2000
    ann = Annotations(rng.integers(0, n, a), rng.integers(0, m, a), rng.integers(0, k, a),
                      n_items=n, n_workers=m, n_classes=k)
    y_true = rng.integers(0, k, n)
    y_true[rng.random(n) < 0.2] = -1
    T, mask = true_transitions_from_labels(ann, y_true)
    ref, ref_mask = row_normalise(ann.empirical_confusion(y_true), fill=0.0)
    assert T.dtype == np.float64 and T.shape == (m, k, k)
    np.testing.assert_array_equal(T, ref)
    np.testing.assert_array_equal(mask, ref_mask)
    # the caller's arrays stay writeable (nothing is frozen behind their back)
    item, worker, label = (np.array(x) for x in (ann.item, ann.worker, ann.label))
    true_transitions_from_labels(item, worker, label, y_true, m, k)
    assert worker.flags.writeable and label.flags.writeable and y_true.flags.writeable


def test_unpack_does_not_copy_int64_arrays():
    from kdcrowd.metrics import _unpack

    item, worker, label = np.arange(6), np.array([0, 1, 0, 1, 2, 2]), np.array([0, 1, 1, 0, 1, 0])
    y_true = np.array([0, 1, 1, 0, 1, 0])
    out = _unpack(item, worker, label, y_true, None, None)
    for got, given in zip(out[:4], (item, worker, label, y_true)):
        assert np.shares_memory(got, given)
    ann = SimpleNamespace(item=item, worker=worker, label=label)
    assert all(np.shares_memory(g, x) for g, x in zip(_unpack(ann, y_true, None, None, None, None)[:3],
                                                      (item, worker, label)))
    # other dtypes and torch tensors are still converted
    out = _unpack(item.astype(np.int32), torch.tensor(worker), label, y_true, None, None)
    assert all(x.dtype == np.int64 for x in out[:4])
    np.testing.assert_array_equal(out[1], worker)


def _memo_case():
    y_true = np.array([0, 1, 2, 0])
    pred = np.array([1, 1, 2, 2])
    item = np.array([0, 3, 1, 0, 3, 1])
    worker = np.array([0, 0, 0, 1, 1, 2])
    label = np.array([1, 2, 1, 2, 2, 1])
    return pred, item, worker, label, y_true


def test_memorization_hand_case():
    pred, item, worker, label, y_true = _memo_case()
    # w0: wrong on items 0 (label 1, pred 1: hit) and 3 (label 2, pred 2: hit) -> 1.0
    # w1: wrong on items 0 (label 2, pred 1: miss) and 3 (label 2, pred 2: hit) -> 0.5
    # w2: only a correct label -> NaN; w3: no labels -> NaN
    rate, mean, std = memorization(pred, item, worker, label, y_true, n_workers=4)
    np.testing.assert_allclose(rate[:2], [1.0, 0.5])
    assert np.isnan(rate[2]) and np.isnan(rate[3])
    assert mean == pytest.approx(0.75) and std == pytest.approx(0.25)
    # probabilities instead of ids, annotations object, torch tensors
    proba = np.eye(3)[pred] * 0.9 + 0.1 / 3
    ann = SimpleNamespace(item=item, worker=worker, label=label, n_workers=4, n_classes=3)
    rate2, mean2, std2 = memorization(torch.tensor(proba), ann, torch.tensor(y_true))
    np.testing.assert_allclose(rate2, rate)
    assert (mean2, std2) == (mean, std)


def test_pseudo_label_memorization():
    y = np.array([0, 1, 2, 0])
    pseudo = np.array([1, 1, 0, 2])
    pred = np.array([1, 0, 1, 2])
    assert pseudo_label_memorization(pred, pseudo, y) == pytest.approx(2 / 3)
    assert math.isnan(pseudo_label_memorization(pred, y, y))


def test_ece_perfectly_calibrated_is_zero():
    proba = np.array([[0.75, 0.25]] * 4)
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(proba, y) == pytest.approx(0.0, abs=1e-12)
    # one-hot and always right
    assert expected_calibration_error(np.eye(3), np.arange(3)) == pytest.approx(0.0, abs=1e-12)


def test_ece_two_bin_hand_case():
    proba = np.array(
        [
            [0.4, 0.2, 0.2, 0.2],  # conf .4, right   -> bin (0, .5]
            [0.4, 0.3, 0.2, 0.1],  # conf .4, wrong   -> bin (0, .5]
            [0.9, 0.1, 0.0, 0.0],  # conf .9, right   -> bin (.5, 1]
            [0.8, 0.2, 0.0, 0.0],  # conf .8, right   -> bin (.5, 1]
        ]
    )
    y = np.array([0, 1, 0, 0])
    # bin 0: |0.5 - 0.4| * 2/4 = 0.05 ; bin 1: |1.0 - 0.85| * 2/4 = 0.075
    assert expected_calibration_error(proba, y, n_bins=2) == pytest.approx(0.125)
    assert expected_calibration_error(torch.tensor(proba), torch.tensor(y), 2) == pytest.approx(
        0.125
    )
    # conf exactly 0.5 belongs to the first bin (0, 0.5]
    p2 = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert expected_calibration_error(p2, np.array([0, 1]), n_bins=2) == pytest.approx(0.0)
