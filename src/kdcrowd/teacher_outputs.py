"""A KD-Crowd teacher's outputs, without the teacher: what the student and stage 2 take from
it, saved to one file, so that the teacher and the stages after it can run in different
processes (two device calls of bounded length) and give the numbers of one process.

What :meth:`kdcrowd.framework.KDCrowd.fit` takes from a trained teacher:

* its classifier's probabilities p(y|x) and its annotation-aware posterior on the training
  items, in its validation-selected state (``teacher_output`` chooses which one the student
  distils; both are kept);
* its workers' transition matrices (reported as the teacher's estimate);
* its best validation accuracy (a student's ``suggested_params``: co-teaching's noise rate).

Stage 2 re-initialised (``stage2="reinit"``) builds a fresh crowd model, so it needs no more;
fine-tuning the teacher (``stage2="finetune"``) needs the module, which outputs do not hold.

* :func:`teacher_predictions` — those outputs of a trained crowd model, computed as stage 0
  computes them (one function for both, so a saved teacher gives the same numbers);
* :func:`teacher_fingerprint` — what defines a teacher: the data (name, size, a digest of
  the training items, annotations and validation split), the crowd model and its options,
  the backbone, the seed and the training settings;
* :class:`TeacherOutputs` — the outputs, the teacher run's metrics and its fingerprint;
  :meth:`~TeacherOutputs.save` / :meth:`~TeacherOutputs.load` one ``.npz`` (float32 arrays,
  exact; JSON fields), :meth:`~TeacherOutputs.check` against the fingerprint a run expects
  (one error naming every difference).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import NOT_FINGERPRINTED, data_digest, differences, digest, json_plain
from .evaluate import best_val_accuracy
from .io import atomic_file
from .models.base import crowd_model_spec
from .objectives import crowd_outputs
from .training import DeviceData, FitResult, TrainConfig

__all__ = ["TEACHER_OUTPUTS_FORMAT", "TeacherOutputs", "teacher_fingerprint", "teacher_predictions"]

#: The file format's name and version (a file of another format is refused).
TEACHER_OUTPUTS_FORMAT = "kdcrowd-teacher-outputs/1"

#: Training settings that do not change what a teacher is: the progress bar, checkpointing,
#: and the device (the outputs are arrays, usable on any device).
NOT_TEACHER_SETTINGS = (*NOT_FINGERPRINTED, "device", "seed")

#: Data set options that cannot change the data (whether downloads are checked against
#: their checksums): left out of a teacher's fingerprint, as ``data`` covers the data itself.
NOT_DATA_OPTIONS = ("verify",)


def teacher_predictions(
    model: nn.Module, objective: nn.Module, result: FitResult, data: DeviceData, workers: torch.Tensor, labels: torch.Tensor, train: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, float | None]:
    """What KD-Crowd takes from a trained crowd ``model`` (inside its training ``objective``,
    both in the validation-selected state): the classifier's probabilities and the
    annotation-aware posteriors on the training items (``(N, K)`` float32, on the device),
    the transition matrices (``(M, K, K)`` float32) and the best validation accuracy."""
    proba, post = crowd_outputs(model, data, workers, labels, train)
    transitions = model.transition_matrices().detach().float().cpu().numpy()
    return proba, post, transitions, best_val_accuracy(result, objective, data, train)


def teacher_fingerprint(
    ds: Any, train: TrainConfig, teacher: str, teacher_options: Mapping[str, Any] | None, backbone: str,
    dataset_options: Mapping[str, Any] | None = None, workers: str | None = None,
) -> dict[str, Any]:
    """What defines crowd model ``teacher`` trained on ``ds`` with ``train`` (JSON values).

    The data: :func:`~kdcrowd.checkpoint.data_digest` (name, training items, digest of the
    training items, annotations and validation split), the number of classes and workers,
    and the run's ``dataset_options`` but :data:`NOT_DATA_OPTIONS` and simulated
    ``workers`` (named, so a difference reads as one). The teacher: its name, its options with their defaults (``{}`` and the
    defaults given explicitly are the same teacher), the backbone, the seed and the
    training settings but :data:`NOT_TEACHER_SETTINGS`."""
    settings = {k: v for k, v in train.to_dict().items() if k not in NOT_TEACHER_SETTINGS}
    ann = ds.annotations
    return json_plain({
        "format": TEACHER_OUTPUTS_FORMAT,
        "data": data_digest(ds),
        "dataset_options": {k: v for k, v in (dataset_options or {}).items() if k not in NOT_DATA_OPTIONS},
        "workers": workers,
        "n_classes": ds.n_classes,
        "n_workers": None if ann is None else ann.n_workers,
        "teacher": teacher,
        "teacher_options": asdict(crowd_model_spec(teacher).options(dict(teacher_options or {}))),
        "backbone": backbone,
        "seed": train.seed,
        "train": settings,
    })


def _float32(name: str, a: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
    if arr.dtype != np.float32:
        raise ValueError(f"teacher outputs: {name} must be float32 (the teacher's own values, exact); got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"teacher outputs: {name} must have {ndim} dimensions; got shape {arr.shape}")
    return arr


@dataclass(frozen=True, eq=False)
class TeacherOutputs:
    """A trained KD-Crowd teacher's outputs (see the module's docstring): what
    :meth:`kdcrowd.framework.KDCrowd.fit` takes instead of a teacher module
    (``teacher_outputs=``) to run the student and a re-initialised stage 2."""

    proba: np.ndarray
    """Classifier probabilities p(y|x) on the training items, ``(N, K)`` float32."""
    posterior: np.ndarray
    """Annotation-aware posteriors on the training items, ``(N, K)`` float32."""
    transitions: np.ndarray
    """The workers' transition matrices, ``(M, K, K)`` float32."""
    best_val_accuracy: float | None
    """Validation accuracy at the teacher's validation-selected epoch (``None``: no validation split)."""
    fingerprint: dict[str, Any]
    """What defines the teacher (:func:`teacher_fingerprint`); compared by :meth:`check`."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The teacher run's ``metrics.json`` (its accuracies, expertise error, per-epoch
    history, configuration): what a KD-Crowd run reports as its teacher stage."""

    def __post_init__(self) -> None:
        proba, post = _float32("proba", self.proba, 2), _float32("posterior", self.posterior, 2)
        trans = _float32("transitions", self.transitions, 3)
        if post.shape != proba.shape:
            raise ValueError(f"teacher outputs: posterior {post.shape} and proba {proba.shape} differ in shape")
        if trans.shape[1:] != (proba.shape[1], proba.shape[1]):
            raise ValueError(f"teacher outputs: transitions {trans.shape} are not (workers, {proba.shape[1]}, {proba.shape[1]})")
        object.__setattr__(self, "proba", proba)
        object.__setattr__(self, "posterior", post)
        object.__setattr__(self, "transitions", trans)

    @property
    def n_train(self) -> int:
        return int(self.proba.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.proba.shape[1])

    @property
    def n_workers(self) -> int:
        return int(self.transitions.shape[0])

    def digest(self) -> str:
        """A digest of the arrays and the best validation accuracy (what the stages depend on)."""
        return digest(self.proba, self.posterior, self.transitions, np.float64(np.nan if self.best_val_accuracy is None else self.best_val_accuracy))

    def check(self, expected: Mapping[str, Any], source: str | os.PathLike[str] | None = None) -> None:
        """Refuse outputs of another teacher than the one ``expected``
        (:func:`teacher_fingerprint` of the run that would use them): one ``ValueError``
        naming every difference (``what: saved → expected``)."""
        diffs = differences(self.fingerprint, json_plain(dict(expected)))
        if diffs:
            where = f" in {source}" if source is not None else ""
            raise ValueError(f"the teacher outputs{where} are of another teacher than this run's ({'; '.join(diffs)}; saved → this run): "
                             "save them again with these settings, or run with the settings they were saved with")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one ``.npz`` (atomically): the float32 arrays as they are, the best
        validation accuracy, and the fingerprint and metrics as JSON text."""
        path = Path(path)
        meta = {"format": TEACHER_OUTPUTS_FORMAT, "best_val_accuracy": self.best_val_accuracy, "fingerprint": self.fingerprint, "metrics": json_plain(self.metrics)}
        with atomic_file(path, "wb") as f:
            np.savez_compressed(f, proba=self.proba, posterior=self.posterior, transitions=self.transitions, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], expected: Mapping[str, Any] | None = None) -> TeacherOutputs:
        """Read a file :meth:`save` wrote; with ``expected`` (a :func:`teacher_fingerprint`),
        :meth:`check` it against the run that will use it."""
        with np.load(path, allow_pickle=False) as z:
            missing = {"proba", "posterior", "transitions", "meta"} - set(z.files)
            if missing:
                raise ValueError(f"{path} is not a teacher-outputs file ({TEACHER_OUTPUTS_FORMAT}): it lacks {', '.join(sorted(missing))}")
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != TEACHER_OUTPUTS_FORMAT:
                raise ValueError(f"{path}: format {meta.get('format')!r}, this kdcrowd reads {TEACHER_OUTPUTS_FORMAT!r}")
            out = cls(z["proba"], z["posterior"], z["transitions"], meta["best_val_accuracy"], meta["fingerprint"], meta["metrics"])
        if expected is not None:
            out.check(expected, source=path)
        return out
