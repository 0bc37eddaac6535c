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
from .io import json_default
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



def memorization_callback(
    ds: Any, data: DeviceData, config: TrainConfig, key: str = "memorization", pseudo: np.ndarray | None = None, y: np.ndarray | None = None
) -> Callable[[int, nn.Module, dict[str, Any]], None]:
    """Per-epoch memorization of the workers' wrong labels by the true-label predictor (SPEC §5).

    ``pseudo``: ``(N,)`` hard labels the module trains on (KD-Crowd's student: the teacher's
    predictions); the same prediction pass then also records ``pseudo_memorization``, the
    fraction of wrong pseudo-labels the module reproduces.

    ``y``: the reference labels (default ``ds.y_train``). Without training ground truth,
    ``ds.y_reference`` (e.g. the Dawid–Skene labels of a user's crowd) stands in for it
    (:func:`standard_callbacks` passes it), and ``train_accuracy`` is not recorded."""
    ann = ds.annotations
    truth = ds.y_train is not None
    y = ds.y_train if y is None else y

    def cb(epoch: int, module: nn.Module, record: dict[str, Any]) -> None:
        pred = predict_proba(module, data, data.x_train, config).argmax(1).cpu().numpy()
        if pseudo is not None:
            record["pseudo_memorization"] = float(M.pseudo_label_memorization(pred, pseudo, y))
        _, mean, std = M.memorization(pred, ann.item, ann.worker, ann.label, y, ann.n_workers)
        record[f"{key}_mean"], record[f"{key}_std"] = float(mean), float(std)
        if truth:
            record["train_accuracy"] = float((pred == y).mean())

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
            f.write(json.dumps(row, default=json_default) + "\n")

    return cb


def standard_callbacks(
    ds: Any, data: DeviceData, train: TrainConfig, stage: str, pseudo: np.ndarray | None = None, *,
    track_memorization: bool = True, progress_file: str | None = None,
) -> list[Callable[[int, nn.Module, dict[str, Any]], None]]:
    """Callbacks every method gets: memorization when the training ground truth (or its
    stand-in ``ds.y_reference``) is known (with ``pseudo`` hard training labels, also
    their memorization, see :func:`memorization_callback`), and the per-epoch progress
    file when ``progress_file`` is set (lines tagged with ``stage``)."""
    cbs: list[Callable[[int, nn.Module, dict[str, Any]], None]] = []
    reference = ds.y_train if ds.y_train is not None else getattr(ds, "y_reference", None)
    if track_memorization and reference is not None and ds.annotations is not None:
        cbs.append(memorization_callback(ds, data, train, pseudo=pseudo, y=reference))
    if progress_file:
        cbs.append(progress_callback(progress_file, stage))
    return cbs


def evaluate_output(out: MethodOutput, ds: Any, data: DeviceData, config: TrainConfig) -> dict[str, Any]:
    """Accuracy (final and validation-selected), label recovery, calibration and expertise error."""
    res: dict[str, Any] = {}
    module = out.module
    module.load_state_dict(out.fit.final_state, strict=False)
    if data.x_test is not None and ds.y_test is not None:
        p = predict_proba(module, data, data.x_test, config).cpu().numpy()
        res["test_accuracy"] = M.accuracy(p, ds.y_test)
        res["test_ece"] = M.expected_calibration_error(p, ds.y_test)
    module.load_state_dict(out.fit.best_state, strict=False)
    if data.x_test is not None and ds.y_test is not None:
        p = predict_proba(module, data, data.x_test, config).cpu().numpy()
        res["test_accuracy_val_selected"] = M.accuracy(p, ds.y_test)
        res["test_ece_val_selected"] = M.expected_calibration_error(p, ds.y_test)
    res["best_epoch"] = out.fit.best_epoch
    if ds.y_train is not None:
        tp = out.train_proba if out.train_proba is not None else predict_proba(module, data, data.x_train, config)
        res["train_label_accuracy"] = M.accuracy(tp.cpu().numpy(), ds.y_train)
    if out.transitions is not None and ds.annotations is not None:
        res["expertise_error"] = expertise_error_summary(out.transitions, ds)
    return res


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
    """Expertise error of estimated worker matrices against the truth (SPEC §5).

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
