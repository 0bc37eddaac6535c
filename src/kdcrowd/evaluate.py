"""Evaluation: what a run measures, during training (per-epoch callbacks) and after it.

* :func:`standard_callbacks` — per-epoch memorization of the workers' wrong labels (and of
  a student's pseudo-labels) and the progress file, for :func:`kdcrowd.training.fit`;
* :func:`evaluate_output` — accuracy (final and validation-selected), calibration,
  training-label recovery and expertise error of a trained method
  (:class:`MethodOutput`), called once per trained predictor by the runners;
* :func:`true_transitions` / :func:`expertise_error_summary` — the workers' reference
  matrices and the error of estimated ones.

The metrics themselves are in :mod:`kdcrowd.metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import metrics as M
from .data.gold import scored_truth
from .io import finite_json, json_default
from .training import DeviceData, FitResult, TrainConfig, predict_proba, validation_accuracy

__all__ = [
    "MethodOutput",
    "best_val_accuracy",
    "evaluate_output",
    "expertise_error_summary",
    "memorization_callback",
    "progress_callback",
    "standard_callbacks",
    "true_transitions",
    "truth_accuracy",
]

Callback = Callable[[int, nn.Module, dict[str, Any]], None]


@dataclass
class MethodOutput:
    """What a method (or one KD-Crowd stage) returns: the predictor and what to evaluate it on."""

    module: nn.Module
    """The true-label predictor (has ``predict_proba``), left in its validation-selected state."""
    fit: FitResult
    """Its training result (history, states)."""
    train_proba: torch.Tensor | None = None
    """The method's label distribution over the training items (N, K), if it differs from the predictor's."""
    transitions: np.ndarray | None = None
    """Estimated worker matrices (M, K, K), when the method estimates them."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Additional metrics fields."""
    dataset: Any = None
    """The data set it was trained on (set by :func:`run_on_dataset`)."""
    data: DeviceData | None = None
    """That data set on the device, as it was trained and evaluated on (set by :func:`run_on_dataset`)."""
    evaluation: dict[str, Any] | None = None
    """Its :func:`evaluate_output`, when the method has already computed it (KD-Crowd
    evaluates every stage; the runner then reuses the final stage's instead of evaluating
    it again)."""



def memorization_callback(
    ds: Any, data: DeviceData, config: TrainConfig, key: str = "memorization", pseudo: np.ndarray | None = None, y: np.ndarray | None = None,
    truth: np.ndarray | None = None,
) -> Callable[[int, nn.Module, dict[str, Any]], None]:
    """Per-epoch memorization of the workers' wrong labels by the true-label predictor (as the KD-Crowd paper measures it).

    ``pseudo``: ``(N,)`` hard labels the module trains on (KD-Crowd's student: the teacher's
    predictions); the same prediction pass then also records ``pseudo_memorization``, the
    fraction of wrong pseudo-labels the module reproduces.

    ``y``: the reference labels (default ``ds.y_train`` without its gold items,
    :func:`kdcrowd.data.gold.scored_truth`: their targets are their known answers). Without
    training ground truth, ``ds.y_reference`` (e.g. the Dawid–Skene labels of a user's
    crowd) stands in for it (:func:`standard_callbacks` passes it), and ``train_accuracy``
    is not recorded. With it, ``train_accuracy`` is the accuracy of the epoch's predictions
    on the training items that are not gold against ``ds.y_train`` (whatever ``y`` is):
    :func:`evaluate_output` reuses the selected epoch's as ``train_label_accuracy`` instead
    of predicting them again.

    ``truth``: ``scored_truth(ds)`` where the caller already has it (``None``: computed
    here); :func:`standard_callbacks` passes the one it computed."""
    ann = ds.annotations
    scored = scored_truth(ds) if truth is None else truth
    has_truth = scored is not None
    y = scored if y is None else y
    dev = data.device
    # Everything constant over the epochs is computed once, here: the annotations that
    # disagree with the reference (item, worker, label) on the device and the count per
    # worker. Each epoch then does one prediction pass and a few reductions on the device,
    # and reads back one small vector (the per-worker hit counts and two totals). The
    # divisions are done on the host as metrics.memorization does them: the same numbers.
    y_np = np.asarray(y, dtype=np.int64)
    item, worker, label = (np.asarray(a, dtype=np.int64) for a in (ann.item, ann.worker, ann.label))
    n_workers = int(ann.n_workers)
    yt = y_np[item]
    wrong = (label != yt) & (yt >= 0)
    denom = np.bincount(worker[wrong], minlength=n_workers).astype(np.float64)
    w_item, w_worker, w_label = (torch.as_tensor(a[wrong], device=dev) for a in (item, worker, label))
    y_dev = torch.as_tensor(np.asarray(scored, dtype=np.int64), device=dev) if has_truth else None
    n_scored = int((np.asarray(scored) >= 0).sum()) if has_truth else 0
    if pseudo is not None:
        s_np = np.asarray(pseudo, dtype=np.int64).ravel()
        if s_np.shape != y_np.shape:
            raise ValueError(f"lengths differ: pseudo {s_np.shape}, y_true {y_np.shape}")
        p_wrong = (s_np != y_np) & (y_np >= 0)
        n_p_wrong = int(p_wrong.sum())
        p_idx = torch.as_tensor(np.flatnonzero(p_wrong), device=dev)
        p_lab = torch.as_tensor(s_np[p_wrong], device=dev)

    def cb(epoch: int, module: nn.Module, record: dict[str, Any]) -> None:
        pred = predict_proba(module, data, data.x_train, config).argmax(1)
        hit = pred[w_item] == w_label
        # hits per worker: a miss goes to bin worker + M, so the counts stay integers without a mask
        counts = torch.bincount(w_worker + n_workers * (~hit).long(), minlength=2 * n_workers)[:n_workers]
        extra = [(pred[p_idx] == p_lab).sum() if pseudo is not None else counts.new_zeros(()), (pred == y_dev).sum() if has_truth else counts.new_zeros(())]
        got = torch.cat([counts, torch.stack(extra)]).cpu().numpy()  # the epoch's one read-back
        if pseudo is not None:
            record["pseudo_memorization"] = float(got[n_workers] / n_p_wrong) if n_p_wrong else float("nan")
        rate = np.divide(got[:n_workers].astype(np.float64), denom, out=np.full(n_workers, np.nan), where=denom > 0)
        mean, std = M.nan_mean_std(rate)
        record[f"{key}_mean"], record[f"{key}_std"] = float(mean), float(std)
        if has_truth:
            record["train_accuracy"] = float(got[n_workers + 1] / n_scored) if n_scored else float("nan")

    return cb


def progress_callback(path: str, stage: str) -> Callable[[int, nn.Module, dict[str, Any]], None]:
    """Append each epoch's record (with its stage) as one JSON line to ``path``.

    Runs last among the callbacks, so the line holds everything the epoch recorded; an
    interrupted run keeps the history of every finished epoch. A run resumed from
    :attr:`kdcrowd.methods.RunConfig.checkpoint_dir` appends to the same file; an epoch whose line was
    written but whose checkpoint was not (the run died in between) is trained again and
    appears twice, so a reader keeps the last line of each (stage, epoch).
    """
    def cb(epoch: int, module: nn.Module, record: dict[str, Any]) -> None:
        row = {"stage": stage, **{k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v) for k, v in record.items()}}
        with open(path, "a") as f:
            f.write(json.dumps(finite_json(row), default=json_default, allow_nan=False) + "\n")

    return cb


def truth_accuracy(values: Any, ds: Any) -> float | None:
    """The accuracy of ``values`` over the training items (labels, or probabilities or
    posteriors ``(N, K)``) against ``ds.y_train``, its gold items left out
    (:func:`kdcrowd.data.gold.scored_truth`: their labels are their known answers); ``None``
    without training ground truth."""
    scored = scored_truth(ds)
    return None if scored is None else M.accuracy(values, scored)


def standard_callbacks(
    ds: Any, data: DeviceData, train: TrainConfig, stage: str, pseudo: np.ndarray | None = None, *,
    track_memorization: bool = True, progress_file: str | None = None,
) -> list[Callable[[int, nn.Module, dict[str, Any]], None]]:
    """Callbacks every method gets: memorization when the training ground truth (or its
    stand-in ``ds.y_reference``) is known (with ``pseudo`` hard training labels, also
    their memorization, see :func:`memorization_callback`), and the per-epoch progress
    file when ``progress_file`` is set (lines tagged with ``stage``)."""
    cbs: list[Callable[[int, nn.Module, dict[str, Any]], None]] = []
    scored = scored_truth(ds)  # gold items left out
    reference = getattr(ds, "y_reference", None) if scored is None else scored
    if track_memorization and reference is not None and ds.annotations is not None:
        cbs.append(memorization_callback(ds, data, train, pseudo=pseudo, y=reference, truth=scored))
    if progress_file:
        cbs.append(progress_callback(progress_file, stage))
    return cbs


def evaluate_output(out: MethodOutput, ds: Any, data: DeviceData, config: TrainConfig) -> dict[str, Any]:
    """Accuracy (final and validation-selected), label recovery, calibration and expertise error;
    the same accuracy and calibration on each named extra test set of ``ds`` (``extra_test``:
    ``{name: {"test_accuracy": ..., "test_accuracy_val_selected": ..., ...}}``).

    A predictor without epochs of its own (empty history: KD-Crowd's ensemble of trained
    stages) also gets the validation accuracy of its two states, ``val_last`` (its final
    state) and ``val_best`` (its validation-selected state), which a trained one's history
    holds."""
    res: dict[str, Any] = {}
    module = out.module
    test = data.x_test is not None and ds.y_test is not None
    # named extra test sets (CIFAR-10H's JPEG images for a CIFAR model): scored like the test split
    extra = {name: (data.items(x), y) for name, (x, y) in (getattr(ds, "extra_test", None) or {}).items()}
    extra_res: dict[str, dict[str, float]] = {name: {} for name in extra}

    def score_extra(suffix: str) -> None:
        for name, (x, y) in extra.items():
            p = predict_proba(module, data, x, config).cpu().numpy()
            extra_res[name].update({f"test_accuracy{suffix}": M.accuracy(p, y), f"test_ece{suffix}": M.expected_calibration_error(p, y)})

    untrained = not out.fit.history
    # the last epoch is the kept one (always so without validation data): one state, predicted once
    same = not untrained and out.fit.best_epoch == len(out.fit.history)
    if (test or extra or untrained) and not same:
        module.load_state_dict(out.fit.final_state, strict=False)
        if test:
            p = predict_proba(module, data, data.x_test, config).cpu().numpy()
            res["test_accuracy"] = M.accuracy(p, ds.y_test)
            res["test_ece"] = M.expected_calibration_error(p, ds.y_test)
        score_extra("")
        if untrained:
            res["val_last"] = _float_or_none(validation_accuracy(module, data, config))
    module.load_state_dict(out.fit.best_state, strict=False)
    if untrained:
        res["val_best"] = _float_or_none(validation_accuracy(module, data, config))
    if test:
        p = predict_proba(module, data, data.x_test, config).cpu().numpy()
        res["test_accuracy_val_selected"] = M.accuracy(p, ds.y_test)
        res["test_ece_val_selected"] = M.expected_calibration_error(p, ds.y_test)
        if same:
            res = {"test_accuracy": res["test_accuracy_val_selected"], "test_ece": res["test_ece_val_selected"], **res}
    score_extra("_val_selected")
    if same:
        for r in extra_res.values():
            r.update(test_accuracy=r["test_accuracy_val_selected"], test_ece=r["test_ece_val_selected"])
    if extra_res:
        res["extra_test"] = extra_res
    res["best_epoch"] = out.fit.best_epoch
    if ds.y_train is not None:
        if out.train_proba is not None:
            res["train_label_accuracy"] = truth_accuracy(out.train_proba.cpu().numpy(), ds)
        else:
            recorded = _recorded_train_accuracy(out.fit)
            res["train_label_accuracy"] = recorded if recorded is not None else truth_accuracy(predict_proba(module, data, data.x_train, config).cpu().numpy(), ds)
    if out.transitions is not None and ds.annotations is not None:
        res["expertise_error"] = expertise_error_summary(out.transitions, ds)
    return res


def _float_or_none(value: torch.Tensor | None) -> float | None:
    return None if value is None else float(value)


def _recorded_train_accuracy(res: FitResult) -> float | None:
    """The ``train_accuracy`` that :func:`memorization_callback` recorded at the selected
    epoch: the accuracy against ``ds.y_train`` of the predictions on the training items that
    are not gold by the module in the state it is evaluated in, the same number as predicting
    them again (the same pass, and ``count / n`` over those items is what
    :func:`kdcrowd.metrics.accuracy` computes).
    ``None`` when no epoch recorded it (memorization not tracked, no training)."""
    for record in res.history:
        if record.get("epoch") == res.best_epoch and record.get("train_accuracy") is not None:
            return float(record["train_accuracy"])
    return None


def true_transitions(ds: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The workers' true matrices (M, K, K) and a row mask (M, K) of rows with data.

    Simulated workers: the generating matrices (all rows valid). Real workers: the
    row-normalised confusion counts of their labels against the training ground truth;
    rows of classes a worker never saw are masked out. ``(None, None)`` when unknown.
    """
    if ds.annotations is None:
        return None, None
    if ds.true_transitions is not None:
        return np.asarray(ds.true_transitions), None
    if ds.y_train is not None:
        return M.true_transitions_from_labels(ds.annotations, ds.y_train)
    return None, None


def expertise_error_summary(t_hat: np.ndarray, ds: Any) -> dict[str, Any] | None:
    """Expertise error of estimated worker matrices against the truth (as the KD-Crowd paper measures it).

    The truth is the generating matrices for simulated workers, else the row-normalised
    confusion counts of the workers' labels against the training ground truth.
    """
    t_true, mask = true_transitions(ds)
    if t_true is None:
        return None
    e = M.expertise_error(t_true, t_hat, row_mask=mask)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in e.items()}


def best_val_accuracy(res: FitResult, module: nn.Module, data: DeviceData, config: TrainConfig) -> float | None:
    """Validation accuracy of ``module`` in its validation-selected state: the one ``fit``
    recorded at ``res.best_epoch``; computed again only when the history has none (a
    module used without training)."""
    for record in res.history:
        if record.get("epoch") == res.best_epoch and record.get("val_accuracy") is not None:
            return float(record["val_accuracy"])
    acc = validation_accuracy(module, data, config)
    return None if acc is None else float(acc)
