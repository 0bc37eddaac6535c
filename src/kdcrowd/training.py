"""The one training loop every method runs through.

Fast by design, after the CIFAR speedrun codebases: the whole data set lives on the
device as tensors (images stay uint8 until a batch is drawn), a batch is an index slice of
a per-epoch permutation, augmentation (random crop with padding, horizontal flip) runs on
the device for the whole batch at once, bf16 autocast is on for CUDA, and the loop makes
no host synchronisation inside an epoch (the loss accumulates on the device and is read
once per epoch).

Anything trainable is an ``nn.Module`` with

* ``training_loss(x, idx, epoch) -> Tensor`` — ``x`` the augmented float batch on the
  device, ``idx`` the long tensor of training-item indices in the batch;
* ``predict_proba(x) -> (B, K)`` — true-label probabilities;
* optionally ``param_groups(config) -> list[dict]`` for per-group learning rates, and
  ``on_epoch_start(epoch)``.

:func:`fit` trains one such module and returns its history and the validation-selected
state; callbacks ``cb(epoch, module, record)`` add fields to each epoch's record.

With ``TrainConfig(distributed=True)`` the same loop trains data-parallel over the
processes ``torchrun`` starts (one per GPU); :mod:`kdcrowd.distributed` describes how
(sharded batches, DDP, buffer synchronisation, sharded evaluation).

With ``TrainConfig(cuda_graph=True)`` on CUDA each backbone's training-mode forward and
backward are replayed as CUDA graphs captured in the first step (:mod:`kdcrowd.cuda_graphs`).

With ``TrainConfig(checkpoint=PATH)`` :func:`fit` saves everything it needs to continue
(module, optimiser, schedule, every random generator, the history and the best state)
to ``PATH`` after finished epochs (at most every ``checkpoint_interval`` seconds, the last
epoch and, on an interrupt or error, the last finished epoch always), and a later call
with the same settings continues from there: a run killed at any moment, resumed, ends
bit-identical to one never interrupted (on the CPU; CUDA kernels may differ in the last
bits from run to run anyway).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from . import distributed as D
from .config import ConfigError, bounded, check_fields
from .config import _name as option_name
from .checkpoint import read_training_checkpoint, save_training_checkpoint, set_rng_states, training_checkpoint, training_fingerprint, write_training_checkpoint
from .cuda_graphs import CudaGraphs, note_without_cuda
from .models.backbones import init_from_training_inputs

__all__ = [
    "TrainConfig",
    "AIRBENCH_RECIPE",
    "airbench_config",
    "DeviceData",
    "FitResult",
    "Trainable",
    "fit",
    "predict_proba",
    "validation_accuracy",
    "resolve_device",
    "seed_everything",
    "seeded",
]


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method (checked when made: one
    :class:`~kdcrowd.config.ConfigError` naming the setting). Defaults: 30 epochs of
    batch 128 (docs/RESULTS.md §A4, "Defaults and why": 30 epochs on digits, 20-40 per
    stage on the real crowds; the practitioner runs of §6 use 30 / 128)."""

    epochs: int = bounded(30, ge=1)
    """Number of passes over the training items."""
    batch_size: int = bounded(128, ge=2)
    """Training batch size (Max-MIG and MIG^f distillation use in-batch pairs, so it is a modelling choice there)."""
    lr: float = bounded(1e-3, gt=0.0)
    """Peak learning rate."""
    weight_decay: float = bounded(5e-4, ge=0.0)
    """Decoupled weight decay (AdamW) or L2 (SGD, RAdam)."""
    optimizer: Literal["adamw", "sgd", "radam"] = "adamw"
    """``adamw``, ``sgd`` (Nesterov momentum) or ``radam`` (rectified Adam with L2 weight
    decay, the optimiser of the annot-mix benchmark's protocol)."""
    momentum: float = bounded(0.9, ge=0.0, lt=1.0)
    """SGD momentum."""
    schedule: Literal["cosine", "constant", "linear", "triangular"] = "cosine"
    """``cosine`` (with linear warm-up), ``constant``, ``linear`` (to zero) or
    ``triangular`` (airbench's: from 0.2 × lr up to lr over the warm-up, then linearly to zero)."""
    warmup_epochs: float = bounded(1.0, ge=0.0)
    """Linear warm-up length in epochs (cosine and triangular schedules)."""
    bias_lr_scale: float = bounded(1.0, gt=0.0)
    """Learning-rate multiplier of the normalisation biases (batch-norm shifts, and the
    whitening bias of the airbench backbone); their weight decay is divided by it, so the
    decay per step stays the same. airbench's SGD recipe uses 64; keep 1 with AdamW."""
    label_smoothing: float = bounded(0.0, ge=0.0, lt=1.0)
    """Label smoothing of the cross-entropy on fixed hard targets (``clean`` and the
    aggregate-then-train methods such as ``mv``); the crowd models, soft targets and
    KD-Crowd's stages keep their own losses (smoothing would fight their noise models)."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available)."""
    amp: bool | None = None
    """bf16 autocast (mixed precision); unset (``None``): on for CUDA, off for CPU."""
    augment: bool = True
    """Random crop (padding = 1/8 of the short side) and horizontal flip for images."""
    flip: bool = True
    """Horizontal flips in augmentation (off for data where they change the class)."""
    flip_schedule: Literal["random", "alternating"] = "random"
    """``random``: each image is flipped with probability 1/2 every epoch; ``alternating``
    (airbench's derandomised flips): a random half in the first epoch, then every image
    the other way round from its previous epoch, so two consecutive epochs show each
    image both ways."""
    crop_padding: int | None = bounded(None, ge=0)
    """Padding (reflect) of the random-crop translation in pixels; unset (``None``): 1/8 of
    the image's short side (4 on CIFAR); airbench uses 2; 0 turns translation off."""
    tta: Literal["none", "flip", "flip-translate"] = "none"
    """Test-time augmentation of every prediction (validation, the training-item predictions
    between stages, test): ``flip`` averages the probabilities of each image and its mirror
    image; ``flip-translate`` adds those of the image shifted by one pixel down-right and of
    its mirror shifted up-left (the picture moves; reflect padding fills the edge), at half
    the weight (airbench's). Mirror views only with ``flip``."""
    channels_last: bool = True
    """Channels-last memory format for image backbones on CUDA."""
    compile: bool = False
    """Wrap the module's forward passes with ``torch.compile``."""
    cuda_graph: bool = False
    """On CUDA, run each backbone's training-mode forward and backward as CUDA graphs
    (:mod:`kdcrowd.cuda_graphs`): captured in the first step for the shapes a full batch
    gives, replayed as one launch each afterwards; everything else (the last, smaller batch,
    validation, prediction) runs the module as usual. For host-bound steps (small images,
    ~500 kernel launches a step: docs/RESULTS.md §7g). The same computation as without it
    (``benchmarks/check_cuda_graph.py`` compares the two); ignored on the CPU (one note on
    stderr); not with ``distributed`` or ``compile``."""
    worker_lr_scale: float = bounded(1.0, gt=0.0)
    """Crowd models: learning-rate multiplier of the worker parameters (which get no weight
    decay)."""
    gold_weight: float = bounded(1.0, ge=0.0)
    """Crowd models and KD-Crowd's crowd-model stages, with gold questions (``kdcrowd fit
    --gold``, the estimator's ``gold``):
    weight of the classifier's cross-entropy on the gold items' known labels, added to the
    crowd loss; 0 leaves it out."""
    seed: int = bounded(0, ge=0, lt=2**32)
    """Seed of initialisation, batch order and augmentation."""
    progress: bool = True
    """Show a progress bar (rich)."""
    eval_batch_size: int = bounded(2048, ge=1)
    """Batch size of prediction passes."""
    distributed: bool = False
    """Data-parallel training over the processes started by ``torchrun`` (one per GPU, see
    :mod:`kdcrowd.distributed`). ``batch_size`` is then per process (a global batch is
    ``batch_size × world_size`` items; Max-MIG's and MIG^f's in-batch pairs are formed
    within each process's shard), the learning rate is not rescaled, evaluation is
    sharded, and every rank ends with the same history and states."""
    sync_bn: bool = False
    """With ``distributed``: synchronised BatchNorm (statistics of the global batch; CUDA
    only) instead of each GPU's own batch statistics."""
    checkpoint: str | None = None
    """This training's checkpoint file (``None``: none). After finished epochs (see
    ``checkpoint_interval``) :func:`fit` writes it atomically; when it exists at the start,
    :func:`fit` checks that it was written with the same settings and continues after its
    last saved epoch (or, when it holds a finished training, returns that training's result
    without training). With ``distributed`` rank 0 writes it and every rank reads it, so it
    must be on a file system every process sees."""
    checkpoint_interval: float = bounded(30.0, ge=0.0)
    """Seconds between checkpoint writes, when the run checkpoints (kdcrowd fit, kdcrowd run
    --resume): an epoch's state is written once this many seconds have passed since the
    last write; the last epoch is always written, and an interrupt (Ctrl-C, or SIGTERM on
    the command line) or an error writes the last finished epoch, kept in memory meanwhile,
    before it stops the run, so
    only a process killed outright (SIGKILL, power loss) loses up to this many seconds of
    training. 0: after every epoch (as always with distributed training)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.device != "auto":
            _device(self.device)
        if self.schedule in ("cosine", "triangular") and self.warmup_epochs > self.epochs:
            raise ConfigError(f"{option_name('warmup_epochs')} {self.warmup_epochs:g} is longer than the {self.epochs} epoch(s) of training: the learning rate would never reach "
                              f"its peak nor decay; give at most {option_name('epochs')} (e.g. {min(1, self.epochs)})")
        if self.sync_bn and not self.distributed:
            raise ConfigError(f"{option_name('sync_bn')} synchronises BatchNorm across the processes of {option_name('distributed')} training; it goes with it")
        if self.cuda_graph and (self.distributed or self.compile):
            why = {"distributed": "DistributedDataParallel's gradient hooks and buffer broadcasts run outside CUDA graphs", "compile": "torch.compile makes graphs of its own"}
            clash = [k for k in why if getattr(self, k)]
            raise ConfigError(
                f"{option_name('cuda_graph')} cannot be combined with {' and '.join(option_name(k) for k in clash)} "
                f"({'; '.join(why[k] for k in clash)}); turn one of them off"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: airbench's recipe (Jordan 2024) as :class:`TrainConfig` settings, for the ``airbench``
#: backbone: Nesterov SGD at momentum 0.85 with airbench's learning rate (11.5 per 1024
#: examples with its summed loss, i.e. 1.5 × batch/1024 for a mean loss; here at batch
#: 1024) and weight decay (its decay per step; 0.0153 / 11.5 as an L2 coefficient), batch-
#: norm biases at 64× the learning rate, the triangular schedule (warm-up over 1/5 of
#: :data:`AIRBENCH_EPOCHS`), label smoothing 0.2 (fixed hard targets only), alternating
#: flips, translation by 2 pixels and flip-and-translate test-time averaging. Use
#: ``replace(TrainConfig(**AIRBENCH_RECIPE), ...)``; :func:`airbench_config` scales the
#: learning rate to another batch size and the warm-up to another number of epochs.
AIRBENCH_EPOCHS = 10
AIRBENCH_RECIPE: dict[str, Any] = {
    "epochs": AIRBENCH_EPOCHS,
    "batch_size": 1024,
    "optimizer": "sgd",
    "lr": 1.5,
    "momentum": 0.85,
    "weight_decay": 0.0153 / 11.5,
    "bias_lr_scale": 64.0,
    "schedule": "triangular",
    "warmup_epochs": 0.2 * AIRBENCH_EPOCHS,
    "label_smoothing": 0.2,
    "flip_schedule": "alternating",
    "crop_padding": 2,
    "tta": "flip-translate",
}


def airbench_config(epochs: int = AIRBENCH_EPOCHS, batch_size: int = 1024, lr_scale: float = 1.0, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` with :data:`AIRBENCH_RECIPE` for ``epochs`` epochs (warm-up
    1/5 of them) at ``batch_size`` (the learning rate scaled linearly from airbench's 1.5
    at 1024, times ``lr_scale``); ``overrides`` set any other field."""
    rec = {**AIRBENCH_RECIPE, "epochs": epochs, "batch_size": batch_size, "warmup_epochs": 0.2 * epochs, "lr": AIRBENCH_RECIPE["lr"] * batch_size / 1024 * lr_scale}
    return TrainConfig(**{**rec, **overrides})


class Trainable(Protocol):
    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor: ...

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor: ...


def resolve_device(device: str, distributed: bool | None = None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else as given (with a clear error).

    ``distributed`` (``None``: whether a ``torch.distributed`` process group exists; ``True``
    joins the one ``torchrun`` describes first): ``auto`` and ``cuda`` give this process's
    own GPU, ``cuda:LOCAL_RANK`` (or the CPU when there is no CUDA); ``cpu`` stays the CPU.
    """
    if distributed is None:
        distributed = D.is_initialized()
    if distributed:
        D.init_from_env()
        local = D.local_device()
        if device == "auto" or (device == "cuda" and local.type == "cuda"):
            return local
        dev = _available(device)
        if dev.type == "cuda" and dev != local:
            raise ValueError(f"distributed training: process {D.rank()} (LOCAL_RANK {D.local_rank()}) must use {local}, not '{device}'; use --device auto or cuda")
        return dev
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _available(device)


def _available(device: str) -> torch.device:
    """``device`` (:func:`_device`) where this machine has it: CUDA (and GPU ``N`` of
    ``cuda:N``) or Apple's MPS present; else one error naming the option."""
    dev = _device(device)
    where = f"{option_name('device')} {device}"
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{where}: CUDA is not available on this machine; use cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{where}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where}: Apple's MPS is not available on this machine; use cpu (or auto)")
    return dev


def _device(device: str) -> torch.device:
    """``device`` as a torch device of a kind the training runs on (cpu, cuda, mps); other
    torch device types (``meta``, ``xpu`` ...) are refused here, not deep in the training."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"{option_name('device')} must be cpu, cuda, cuda:N or auto; got {device!r}") from e
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{option_name('device')} must be cpu, cuda, cuda:N or auto; got {device!r}")
    return dev


@contextlib.contextmanager
def seeded(seed: int) -> Any:
    """Build modules with parameters drawn from ``seed``: inside, torch's CPU generator
    starts from ``seed``; on exit it is restored, so building a model leaves no trace in
    the caller's random state (modules are initialised on the CPU, then moved)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy's legacy global generator."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


class DeviceData:
    """A data set's splits held on one device, with batched on-device preprocessing.

    Images are kept as uint8 ``(N, C, H, W)`` and converted to normalised float per batch;
    feature vectors are standardised once with the training mean and standard deviation.

    Args:
        x_train, x_val, x_test: uint8 images ``(N, H, W, C)`` or float features ``(N, D)``.
        y_val, y_test: ground truth of the evaluation splits (``None`` when unknown).
        y_train: ground truth of the training items when known (for label-recovery
            metrics only; never used for training).
        device: where the tensors live.
    """

    def __init__(
        self,
        x_train: np.ndarray,
        x_val: np.ndarray | None,
        x_test: np.ndarray | None,
        y_val: np.ndarray | None,
        y_test: np.ndarray | None,
        device: torch.device,
        y_train: np.ndarray | None = None,
    ) -> None:
        self.device = device
        self.is_image = x_train.ndim == 4
        if self.is_image:
            if x_train.dtype != np.uint8:
                raise ValueError(f"images must be uint8 (N, H, W, C); got {x_train.dtype} {x_train.shape}")
            self.x_train = self.items(x_train)
            xf = self.x_train.float()
            self.mean = xf.mean(dim=(0, 2, 3), keepdim=True) / 255.0
            self.std = xf.std(dim=(0, 2, 3), keepdim=True).clamp_min(1.0) / 255.0
            del xf
        else:
            self.x_train = self.items(x_train)
            self.mean = self.x_train.mean(0, keepdim=True)
            s = self.x_train.std(0, keepdim=True, correction=1 if len(self.x_train) > 1 else 0)
            # a column constant in training (std 0: torch computes exactly 0 for equal values) keeps scale 1, as
            # in scikit-learn's scaler; a floor of 1e-6 made any other value of it at prediction a million (one
            # training item: std 0, also 1). Columns that vary, however little or around however large a mean,
            # are standardised.
            const = ~(s > 0)
            self.std = torch.where(const, torch.ones_like(s), s)
        self.x_val = self.items(x_val) if x_val is not None and len(x_val) else None
        self.x_test = self.items(x_test) if x_test is not None and len(x_test) else None
        lab = lambda a: None if a is None else torch.as_tensor(np.asarray(a, dtype=np.int64), device=device)
        self.y_train, self.y_val, self.y_test = lab(y_train), lab(y_val), lab(y_test)

    def items(self, a: np.ndarray) -> torch.Tensor:
        """Raw items ``a`` (as the splits are given: uint8 images ``(N, H, W, C)`` or
        features ``(N, D)``) on the device, as the splits are held: images ``(N, C, H, W)``
        uint8, features float32 (the splits, and e.g. an extra test set)."""
        if self.is_image:
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device).permute(0, 3, 1, 2).contiguous()
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

    @classmethod
    def preprocessing(cls, mean: torch.Tensor, std: torch.Tensor, is_image: bool, input_shape: tuple[int, ...], device: torch.device) -> DeviceData:
        """A preprocessing-only instance (as :meth:`preprocessing_only` returns) from saved
        normalisation statistics: what a reloaded model predicts through."""
        out = cls.__new__(cls)
        out.device, out.is_image, out.mean, out.std = device, bool(is_image), mean.to(device), std.to(device)
        out.x_train = torch.empty((0, *input_shape), dtype=torch.uint8 if is_image else torch.float32, device=device)
        out.x_val = out.x_test = out.y_train = out.y_val = out.y_test = None
        return out

    @classmethod
    def from_dataset(cls, ds: Any, device: torch.device) -> DeviceData:
        """Build from a :class:`kdcrowd.data.datasets.CrowdDataset`."""
        return cls(ds.x_train, ds.x_val, ds.x_test, ds.y_val, ds.y_test, device, y_train=ds.y_train)

    def preprocessing_only(self) -> DeviceData:
        """A copy holding only the preprocessing (device, ``is_image``, ``mean``, ``std``,
        ``input_shape``): no data splits, so keeping it keeps no data set alive."""
        out = copy.copy(self)
        out.x_train = self.x_train.new_empty((0, *self.x_train.shape[1:]))
        out.x_val = out.x_test = out.y_train = out.y_val = out.y_test = None
        return out

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def prepare(
        self,
        x: torch.Tensor,
        augment: bool = False,
        flip: bool = True,
        generator: torch.Generator | None = None,
        pad: int | None = None,
        flip_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Convert a raw batch to the normalised float input of the backbones.

        With ``augment``: a random translation by up to ``pad`` pixels (``None``: 1/8 of
        the side) and, with ``flip``, horizontal flips, at random or where ``flip_mask``
        (``(B,)`` bool) says."""
        if not self.is_image:
            return (x - self.mean) / self.std
        x = x.float().div_(255.0)
        if augment:
            x = random_crop_flip(x, pad=default_crop_padding(min(x.shape[-2:])) if pad is None else pad, flip=flip, generator=generator, flip_mask=flip_mask)
        return (x - self.mean) / self.std


def default_crop_padding(side: int) -> int:
    """The crop padding used when none is set: 1/8 of the image's short side ``side``, at
    least 1 and less than the side (reflect padding needs that)."""
    return min(max(1, side // 8), side - 1)


def check_crop_padding(pad: int | None, input_shape: Sequence[int]) -> None:
    """One error naming ``crop_padding`` where ``pad`` is not less than the short side of
    images of ``input_shape`` ``(C, H, W)`` (torch's reflect padding failed mid-training)."""
    side = min(input_shape[-2:])
    if pad is not None and pad >= side:
        raise ConfigError(f"{option_name('crop_padding')} must be less than the images' short side ({side} px); got {pad}")


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool = True, generator: torch.Generator | None = None, flip_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Random crop with reflect padding and random horizontal flip, for a whole batch at once.

    One gather with per-sample row/column index grids; no per-image Python.

    Args:
        x: float images ``(B, C, H, W)``.
        pad: padding on each side; crops keep the input size (0: no translation).
        flip: also flip half of the images horizontally.
        flip_mask: ``(B,)`` bool, which images to flip (with ``flip``), instead of a random half.
    """
    b, _, h, w = x.shape
    dev = x.device
    xp = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect") if pad > 0 else x
    oy = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    rows = oy + torch.arange(h, device=dev)  # (B, H)
    cols = ox + torch.arange(w, device=dev)  # (B, W)
    if flip:
        do_flip = (torch.rand(b, 1, device=dev, generator=generator) < 0.5) if flip_mask is None else flip_mask.view(b, 1)
        cols = torch.where(do_flip, cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    history: list[dict[str, Any]]
    """One record per epoch: ``epoch``, ``loss``, ``val_accuracy`` and callback fields."""
    best_epoch: int | None
    """1-based epoch with the highest validation accuracy (the last epoch without validation
    data); ``None`` for a predictor that trained no epochs of its own (KD-Crowd's ensemble,
    whose members' epochs are their stages')."""
    best_state: dict[str, torch.Tensor]
    """State dict at ``best_epoch``."""
    final_state: dict[str, torch.Tensor]
    """State dict after the last epoch."""
    seconds: float
    """Wall time of the training."""
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    """Where ``seconds`` went: ``training`` (the optimisation steps), ``evaluation`` (the
    per-epoch validation and callbacks, e.g. memorization) and ``checkpointing`` (the
    checkpoint writes, and the copies of the state kept between them); they add up to ``seconds``. On CUDA the device is
    synchronised once at the end of each epoch's steps so that its queued work counts as
    training. ``setup`` (building the optimiser and schedule, which imports
    ``torch._dynamo`` the first time) is outside ``seconds``."""
    resumed_seconds: float = 0.0
    """Of the ``timings``, the seconds restored from a checkpoint: what earlier processes spent
    on this training before a resumed run took it up (0 for a training run in one process)."""
    cuda_graphs: dict[str, Any] = field(default_factory=dict)
    """With ``TrainConfig.cuda_graph`` on CUDA: how the backbones' training passes ran
    (:class:`kdcrowd.cuda_graphs.GraphStats`: ``graphs`` captured, their ``signatures``,
    ``replays``, and ``module_calls`` that ran the module); empty otherwise."""


#: The parts of :attr:`FitResult.timings`.
LOOP_TIMINGS = ("setup", "training", "evaluation", "checkpointing")


def _batches(n: int, batch_size: int, min_last: int = 2) -> list[tuple[int, int]]:
    """Batch boundaries; a last batch of fewer than ``min_last`` (2) items is merged into the one before.

    Losses built on in-batch pairs (MIG^f) need at least two items, and dropping items
    would silently skip data.
    """
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_last:
        bounds[-2] = (bounds[-2][0], n)
        bounds.pop()
    return bounds


def _shard(s: int, e: int, world: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part of ``[s, e)`` split into ``world`` parts whose sizes differ by at most one."""
    base, extra = divmod(e - s, world)
    a = s + rank * base + min(rank, extra)
    return a, a + base + (1 if rank < extra else 0)


def _shard_batches(n: int, batch_size: int, world: int, rank: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Global batch boundaries (``batch_size × world`` items) and this rank's shard of each.

    Every shard has at least 2 items: a last global batch of fewer than ``2 × world`` items
    is merged into the one before. With ``world == 1`` both lists are :func:`_batches`.
    """
    if world > 1 and batch_size < 2:
        raise ValueError(f"distributed training needs batch_size >= 2 per process (in-batch pairs); got {batch_size}")
    if world > 1 and n < 2 * world:
        raise ValueError(f"distributed training over {world} processes needs at least {2 * world} training items (2 per process); got {n}")
    bounds = _batches(n, batch_size * world, min_last=2 * world if world > 1 else 2)
    return bounds, [_shard(s, e, world, rank) for s, e in bounds]


def _lr_lambda(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, config.epochs * steps_per_epoch)
    warm = int(config.warmup_epochs * steps_per_epoch) if config.schedule in ("cosine", "triangular") else 0

    def f(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if config.schedule == "linear":
            return max(0.0, 1.0 - step / total)
        if config.schedule == "triangular":
            if step < warm:
                return 0.2 + 0.8 * step / warm
            return max(0.0, 1.0 - (step - warm) / max(1, total - warm))
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    if config.schedule not in ("cosine", "constant", "linear", "triangular"):
        raise ValueError(f"unknown schedule '{config.schedule}'; use cosine, constant, linear or triangular")
    return f


def _is_norm_bias(module: nn.Module) -> Callable[[nn.Parameter], bool]:
    """Whether a parameter of ``module`` is a normalisation bias: the bias of torch's norm
    layers, and the parameters a module names in its class's ``norm_bias_names`` (kdcrowd's
    masked batch norm, the airbench whitening bias; on the class, so a deep copy, which drops
    a parameter's own attributes, keeps them)."""
    ids = {id(m.bias) for m in module.modules() if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) and getattr(m, "bias", None) is not None}
    ids |= {id(getattr(m, n)) for m in module.modules() for n in getattr(type(m), "norm_bias_names", ()) if isinstance(getattr(m, n, None), nn.Parameter)}
    return lambda p: id(p) in ids


def _split_norm_biases(module: nn.Module, groups: list[dict[str, Any]], config: TrainConfig) -> list[dict[str, Any]]:
    """Each group's normalisation biases in a group of their own at ``bias_lr_scale`` times
    the group's learning rate and its weight decay divided by that (the decay per step unchanged)."""
    is_bias = _is_norm_bias(module)
    out: list[dict[str, Any]] = []
    for g in groups:
        params = list(g["params"])
        biases = [p for p in params if is_bias(p)]
        rest = [p for p in params if not is_bias(p)]
        if rest:
            out.append({**g, "params": rest})
        if biases:
            lr = g.get("lr", config.lr) * config.bias_lr_scale
            wd = g.get("weight_decay", config.weight_decay) / config.bias_lr_scale
            out.append({**g, "params": biases, "lr": lr, "weight_decay": wd})
    return out


def _optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = module.param_groups(config) if hasattr(module, "param_groups") else [{"params": [p for p in module.parameters() if p.requires_grad]}]
    if config.bias_lr_scale != 1.0:
        groups = _split_norm_biases(module, groups, config)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0, weight_decay=config.weight_decay)  # Nesterov needs a momentum
    if config.optimizer == "radam":
        return torch.optim.RAdam(groups, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer '{config.optimizer}'; use adamw, sgd or radam")


def autocast(device: torch.device, enabled: bool | None) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast: by default (``enabled`` None) on CUDA only; ``enabled=True`` turns it
    on for any device (the CPU included, as ``TrainConfig.amp`` says), ``False`` off."""
    on = device.type == "cuda" if enabled is None else enabled
    if not on:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def predict_proba(module: Any, data: DeviceData, x: torch.Tensor, config: TrainConfig | None = None) -> torch.Tensor:
    """Class probabilities of ``module`` for raw items ``x`` (float32, on the device).

    With ``config.distributed`` under a process group of several ranks, every rank
    predicts a contiguous slice of ``x`` and the slices are all-gathered: all ranks must
    call it together, and all get the same result.
    """
    config = config or TrainConfig()
    world = D.world_size() if config.distributed else 1
    if world > 1 and x.shape[0] >= world:
        s, e = _shard(0, x.shape[0], world, D.rank())
        return D.all_gather_rows(_predict_local(module, data, x[s:e], config))
    return _predict_local(module, data, x, config)


def _predict_local(module: Any, data: DeviceData, x: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    was_training = module.training
    module.eval()
    out = []
    tta = config.tta if data.is_image else "none"
    try:  # the module's mode comes back even when a prediction fails
        # no items: one pass over the empty batch, for the (0, K) shape and the device (not a bare (0,))
        for s in range(0, max(x.shape[0], 1), config.eval_batch_size):
            xb = data.prepare(x[s : s + config.eval_batch_size])
            if data.is_image and config.channels_last and data.device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(data.device, config.amp):
                out.append(_predict_views(module, xb, tta, config.flip))
    finally:
        module.train(was_training)
    return torch.cat(out)


def tta_views(x: torch.Tensor, tta: str, flip: bool = True) -> list[tuple[torch.Tensor, float]]:
    """The test-time views of a normalised image batch and their weights (summing to 1):
    ``none``: the batch; ``flip``: it and its mirror image, 1/2 each; ``flip-translate``:
    those at 1/4 each, plus the batch shifted by one pixel towards the bottom right and its
    mirror image shifted towards the top left (the picture moves; reflect padding fills the
    edge), 1/4 each. Without ``flip`` the mirror views are left out (``flip``: the batch
    alone; ``flip-translate``: it at 1/2 and its down-right shift at 1/2)."""
    if tta == "none" or (tta == "flip" and not flip):
        return [(x, 1.0)]
    if tta not in ("flip", "flip-translate"):
        raise ValueError(f"unknown tta '{tta}'; use none, flip or flip-translate")
    views = [x, x.flip(-1)] if flip else [x]
    if tta == "flip-translate":
        h, w = x.shape[-2:]
        xp = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [xp[..., : h, : w]]
        if flip:
            shifted.append(xp.flip(-1)[..., 2 : h + 2, 2 : w + 2])
        return [(v, 0.5 / len(views)) for v in views] + [(v, 0.5 / len(shifted)) for v in shifted]
    return [(v, 1.0 / len(views)) for v in views]


def _predict_views(module: Any, xb: torch.Tensor, tta: str, flip: bool) -> torch.Tensor:
    """``module.predict_proba`` averaged over :func:`tta_views` (one pass over all views)."""
    views = tta_views(xb, tta, flip)
    if len(views) == 1 or xb.shape[0] == 0:  # (no items: nothing to average, and view() cannot split 0 rows)
        return module.predict_proba(xb).float()
    p = module.predict_proba(torch.cat([v for v, _ in views])).float().view(len(views), xb.shape[0], -1)
    weights = torch.tensor([wt for _, wt in views], device=p.device, dtype=p.dtype).view(-1, 1, 1)
    return (p * weights).sum(0)


def validation_accuracy(module: Any, data: DeviceData, config: TrainConfig) -> torch.Tensor | None:
    """Accuracy of ``module`` on the validation split (a 0-d tensor on the device), or ``None`` without one."""
    if data.x_val is None or data.y_val is None:
        return None
    return (predict_proba(module, data, data.x_val, config).argmax(1) == data.y_val).float().mean()


def _state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class EpochLog:
    """End-of-epoch bookkeeping shared by training loops: callbacks, the finite-loss check,
    the history and the validation-selected state. :func:`fit` uses it, and so does any
    other loop that must report the same :class:`FitResult` (e.g. the naive baseline loop
    of ``benchmarks/speed.py``)."""

    def __init__(self, module: nn.Module, callbacks: Sequence[Callable[[int, nn.Module, dict[str, Any]], None]], desc: str) -> None:
        self.module, self.callbacks, self.desc = module, callbacks, desc
        self.history: list[dict[str, Any]] = []
        self.best_score, self.best_epoch = -math.inf, 0
        self.best_state: dict[str, torch.Tensor] = {}

    def close(self, epoch: int, loss: Any, val_accuracy: Any) -> dict[str, Any]:
        """Record epoch ``epoch`` (0-based): run the callbacks, check the loss, keep the best state."""
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": loss, "val_accuracy": val_accuracy}
        for cb in self.callbacks:
            cb(epoch, self.module, record)
        record = {k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v) for k, v in record.items()}
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"{self.desc}: the training loss became {record['loss']} at epoch {epoch + 1}; lower the learning rate (--lr) or check the inputs")
        self.history.append(record)
        score = record["val_accuracy"] if record["val_accuracy"] is not None else float(epoch)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch + 1
            self.best_state = _state_copy(self.module)
        return record

    def state(self) -> dict[str, Any]:
        """What :meth:`restore` needs to continue: history, best score, best epoch and best
        state. The best state is left out while the last epoch is the best (always so
        without validation data): it is the module's own state, saved beside it."""
        state = {"history": self.history, "best_score": self.best_score, "best_epoch": self.best_epoch}
        if self.best_epoch != len(self.history):
            state["best_state"] = self.best_state
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state`, with the module already in its saved state (the
        best state is moved to the module's device, or copied from the module when the last
        epoch was the best)."""
        device = next((t.device for t in self.module.state_dict().values()), None)
        self.history = list(state["history"])
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])
        if "best_state" in state:
            self.best_state = {k: v.to(device) if device is not None else v for k, v in state["best_state"].items()}
        else:
            self.best_state = _state_copy(self.module)

    def result(self, seconds: float, config: TrainConfig, timings: dict[str, float] | None = None) -> FitResult:
        """The :class:`FitResult`; the final state stands in for the best when no epoch ran."""
        final_state = _state_copy(self.module)
        return FitResult(self.history, self.best_epoch, self.best_state or dict(final_state), final_state, seconds, config.to_dict(), dict(timings or {}))


class _EpochBar:
    """A rich progress bar over epochs that shows the last epoch's loss and validation accuracy."""

    def __init__(self, show: bool, total: int, desc: str, done: int = 0) -> None:
        self.bar: Any = None
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"), transient=True)
            self.task = self.bar.add_task(desc, total=total, completed=done, status="resumed" if done else "")

    def __enter__(self) -> _EpochBar:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            status = f"loss {record['loss']:.4f}" + (f"  val {record['val_accuracy']:.3f}" if record["val_accuracy"] is not None else "")
            self.bar.update(self.task, advance=1, status=status)


def fit(
    module: nn.Module,
    data: DeviceData,
    config: TrainConfig,
    callbacks: Sequence[Callable[[int, nn.Module, dict[str, Any]], None]] = (),
    desc: str = "train",
) -> FitResult:
    """Train ``module`` on ``data`` and return its history and validation-selected state.

    Every random draw of the training (batch order, augmentation, dropout, a loss's own
    draws such as annot-mix's mixup) comes from generators seeded with ``config.seed``
    inside a fork of torch's, numpy's and Python's global generators: the caller's random state is
    the same after ``fit`` as before, and the same seed gives the same run whatever that
    state was. :func:`_fit` has the details.
    """
    if config.augment and data.is_image:
        check_crop_padding(config.crop_padding, data.input_shape)
    devices = [data.device.index or 0] if data.device.type == "cuda" else []
    np_state, py_state = np.random.get_state(), random.getstate()  # a resumed run sets Python's too
    try:
        with torch.random.fork_rng(devices=devices):
            return _fit(module, data, config, callbacks, desc)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _fit(
    module: nn.Module,
    data: DeviceData,
    config: TrainConfig,
    callbacks: Sequence[Callable[[int, nn.Module, dict[str, Any]], None]] = (),
    desc: str = "train",
) -> FitResult:
    """The training of :func:`fit` (inside its fork of the global generators).

    The module must already live on ``data.device``. Per epoch: one pass over a fresh
    permutation of the training items, then validation accuracy, then the callbacks
    (which may add fields to the epoch's record). The state with the best validation
    accuracy is kept on the device.

    With ``config.distributed`` (run under ``torchrun``; see :mod:`kdcrowd.distributed`)
    every rank draws the same permutation, trains on its shard of each global batch of
    ``batch_size × world_size`` items through ``DistributedDataParallel`` (a shard of an
    unevenly split last batch weighs by its items, as in one process), synchronises
    buffers at the end of each epoch (BatchNorm statistics averaged, per-item state such
    as ELR's targets merged from the rank that owned each item), reports the epoch's loss
    as the mean over all ranks' items (as one process does: a mean over items, each batch
    weighed by its size) and evaluates sharded; history, best epoch and states are identical on every
    rank. ``data`` must be on this process's device (:func:`resolve_device`), and the
    module must be built identically on every rank (seed before building it). A module
    whose loss leaves some parameters without a gradient sets
    ``ddp_find_unused_parameters = True``.

    With ``config.checkpoint`` the state after a finished epoch is saved there
    (module state dict, optimiser, schedule, the random generators of every rank, the
    history and best state, the elapsed time and a fingerprint of the settings): once
    ``config.checkpoint_interval`` seconds have passed since the last write, after the last
    epoch, and, when an exception (an interrupt) stops the training, the last finished
    epoch not written yet (a copy of its state is kept until then); a write that fails
    (``OSError``: a full disk) stops the training with its error, not tried again. An existing checkpoint
    is resumed: its fingerprint (``config`` without ``progress``, ``checkpoint`` and
    ``checkpoint_interval``, ``desc``, the number of training items, the device type, the number of
    processes and the names and shapes of the module's state) must match, else
    ``ValueError``. The module is rebuilt by the caller as for a fresh run; non-persistent
    buffers (the objectives' inputs) are not saved. Callback fields must be plain values
    (numbers, strings, lists, dicts, tensors) to be saved.
    """
    device = data.device
    seed_everything(config.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    if data.is_image:  # a pretrained network maps the loop's standardised images to its own normalisation exactly
        for m in module.modules():
            if callable(getattr(m, "set_input_normalisation", None)):
                m.set_input_normalisation(data.mean.flatten(), data.std.flatten())
    if data.is_image and config.channels_last and device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    if config.distributed:
        device = _distributed_device(data, config)
    log = EpochLog(module, callbacks, desc)
    saved: dict[str, Any] | None = None
    fingerprint: dict[str, Any] = {}
    if config.checkpoint:
        fingerprint = training_fingerprint(module, data, config, desc, device)
        saved = read_training_checkpoint(Path(config.checkpoint), fingerprint, device)
        if saved is not None:
            module.load_state_dict(saved["module"])
            log.restore(saved["log"])
            if saved["complete"]:  # a finished training: its result, without training again
                set_rng_states(saved["rng"][D.rank() if config.distributed else 0], device)
                done = log.result(float(saved["seconds"]), config, _saved_timings(saved))
                done.resumed_seconds = sum(done.timings.values())  # all of it spent by an earlier process
                return done
    # data-dependent initialisation (airbench's whitening layer) from the normalised training
    # images, before the optimiser exists; a resumed or pre-trained module already has it
    init_from_training_inputs(module, lambda: _init_inputs(data))
    aug_gen = gen
    converted = False
    ddp: nn.Module | None = None
    if config.distributed:
        world, rank = D.world_size(), D.rank()
        bounds, local = _shard_batches(data.n_train, config.batch_size, world, rank)
        _check_ranks_agree(module, data, len(bounds), desc)
        D.broadcast_buffers(module)
        converted = config.sync_bn and D.convert_sync_batchnorm(module)
        ddp = D.wrap(module, device, find_unused_parameters=bool(getattr(module, "ddp_find_unused_parameters", False)))
        step_fn: Callable[..., torch.Tensor] = ddp
        # The permutation generator must stay identical on every rank, so augmentation
        # (and dropout, through the global generator) draw from per-rank streams.
        aug_gen = torch.Generator(device=device)
        aug_gen.manual_seed(config.seed + 1_000_003 * (rank + 1))
        torch.manual_seed(config.seed + 1_000_003 * rank)
        show = config.progress and D.is_main()
    else:
        step_fn = module.training_loss  # type: ignore[assignment]
        world, bounds = 1, _batches(data.n_train, config.batch_size)
        local = bounds
        show = config.progress
    if config.compile:
        step_fn = torch.compile(step_fn)
    t_setup = time.perf_counter()
    opt = _optimizer(module, config)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config, len(bounds)))
    first, before = 0, 0.0
    if saved is not None:
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        set_rng_states(saved["rng"][D.rank() if config.distributed else 0], device, gen, aug_gen)
        first, before = int(saved["epochs"]), float(saved["seconds"])
    base_flips = _alternating_flip_base(data, config, device)
    pad = config.crop_padding
    # the seconds of each part of the loop, continued from a resumed checkpoint
    timings = {**_saved_timings(saved), "setup": 0.0} if saved is not None else dict.fromkeys(LOOP_TIMINGS, 0.0)
    graphs = _cuda_graphs(module, device, config)
    t0 = time.perf_counter()
    timings["setup"] = t0 - t_setup
    interval = 0.0 if config.distributed else config.checkpoint_interval  # the ranks' clocks would disagree
    last_write = t0  # the first write comes `interval` seconds into the training
    pending: dict[str, Any] | None = None  # the last finished epoch's checkpoint, not written yet
    try:
        with _EpochBar(show, config.epochs, desc, done=first) as bar:
            for epoch in range(first, config.epochs):
                t_epoch = time.perf_counter()
                module.train()
                if hasattr(module, "on_epoch_start"):
                    module.on_epoch_start(epoch)
                perm = torch.randperm(data.n_train, device=device, generator=gen)
                loss_sum = torch.zeros((), device=device)
                for (s, e), (gs, ge) in zip(local, bounds):
                    idx = perm[s:e]
                    flips = None if base_flips is None else base_flips[idx] ^ bool(epoch % 2)
                    xb = data.prepare(data.x_train[idx], augment=config.augment, flip=config.flip, generator=aug_gen, pad=pad, flip_mask=flips)
                    if data.is_image and config.channels_last and device.type == "cuda":
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    if graphs is not None:
                        graphs.next_step()
                    with autocast(device, config.amp):
                        loss = step_fn(xb, idx, epoch)
                    if (e - s) * world != ge - gs:  # an uneven shard: DDP averages the ranks' gradients, so weigh by items
                        loss = loss * ((e - s) * world / (ge - gs))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    loss_sum += loss.detach().float() * (ge - gs)  # the batch's items: the epoch's loss is a mean over items
                if config.distributed:
                    owned = torch.zeros(data.n_train, dtype=torch.bool, device=device)
                    owned[torch.cat([perm[s:e] for s, e in local])] = True
                    D.sync_buffers(module, data.n_train, owned)
                    D.all_reduce_mean(loss_sum)
                if device.type == "cuda":  # the epoch's queued steps count as training, not evaluation
                    torch.cuda.synchronize(device)
                t_eval = time.perf_counter()
                timings["training"] += t_eval - t_epoch
                val = validation_accuracy(module, data, config)
                record = log.close(epoch, loss_sum / data.n_train, val)  # the global batches cover every item once
                t_ckpt = time.perf_counter()
                timings["evaluation"] += t_ckpt - t_eval
                if config.checkpoint:
                    state = (module, opt, sched, log, epoch + 1, config, fingerprint, before + t_ckpt - t0, device, gen, aug_gen)
                    if epoch + 1 == config.epochs or t_ckpt - last_write >= interval:
                        # pending until written: an interrupt in or after the write writes this state again, not an older copy
                        pending = training_checkpoint(*state, timings=timings)  # the live state (every rank: a collective call)
                        try:
                            write_training_checkpoint(Path(config.checkpoint), pending, config, epoch + 1)
                        except Exception:  # the write failed (a full disk): its error alone, not the same write tried again below
                            pending = None
                            raise
                        pending, last_write = None, time.perf_counter()
                    else:  # a copy, written by the next write's turn or by an interrupt
                        pending = training_checkpoint(*state, timings=timings, keep=True)
                    timings["checkpointing"] += time.perf_counter() - t_ckpt
                bar.advance(record)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = before + time.perf_counter() - t0
    except BaseException:  # an interrupt or an error: the last finished epoch is saved before it goes on
        if pending is not None:
            save_training_checkpoint(Path(config.checkpoint), pending)
        raise
    finally:
        if ddp is not None:
            del step_fn, ddp  # releases DDP's gradient hooks on the module's parameters (also after an interrupt)
            if converted:
                D.revert_sync_batchnorm(module)
        if graphs is not None:
            graphs.remove()  # the backbones' own forward back, the graphs freed (also after an interrupt)
    result = log.result(seconds, config, timings)
    result.resumed_seconds = before  # the restored parts (the earlier setup is not kept)
    if graphs is not None:
        result.cuda_graphs = graphs.stats.to_dict()
    return result


def _cuda_graphs(module: nn.Module, device: torch.device, config: TrainConfig) -> CudaGraphs | None:
    """With ``config.cuda_graph``: the graphed backbones of ``module`` on a CUDA ``device``;
    on any other device ``None``, after a note on stderr (once per process)."""
    if not config.cuda_graph:
        return None
    if device.type != "cuda":
        note_without_cuda(device)
        return None
    return CudaGraphs(module, device)


def _saved_timings(saved: dict[str, Any]) -> dict[str, float]:
    """The per-part seconds (:attr:`FitResult.timings`) a checkpoint recorded; a checkpoint
    written without them counts its seconds as training."""
    t = saved.get("timings")
    if isinstance(t, dict):
        return {k: float(t.get(k, 0.0)) for k in LOOP_TIMINGS}
    return {**dict.fromkeys(LOOP_TIMINGS, 0.0), "training": float(saved["seconds"])}


def _init_inputs(data: DeviceData, n: int = 5000) -> torch.Tensor:
    """The first ``n`` training items, normalised (no augmentation), in float32."""
    return data.prepare(data.x_train[:n]).float()


def _alternating_flip_base(data: DeviceData, config: TrainConfig, device: torch.device) -> torch.Tensor | None:
    """With ``flip_schedule="alternating"``: which training items are flipped in even
    epochs (a random half, from a generator of its own seeded with ``config.seed``, so the
    same on every rank and after a resume); odd epochs flip the others. ``None`` otherwise."""
    if config.flip_schedule != "alternating" or not (config.augment and config.flip and data.is_image):
        return None
    g = torch.Generator(device=device)
    g.manual_seed(config.seed + 7_919)
    return torch.rand(data.n_train, device=device, generator=g) < 0.5


# ----------------------------------------------------------------------------- checkpoints

def _distributed_device(data: DeviceData, config: TrainConfig) -> torch.device:
    """Join the process group and check that ``data`` is on this process's device."""
    D.init_from_env()
    device = data.device
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index != D.local_rank():
            raise ValueError(
                f"distributed training: process {D.rank()} (LOCAL_RANK {D.local_rank()}) has its data on cuda:{index}; "
                "each process trains on its own GPU, so build the DeviceData on resolve_device(device, distributed=True)"
            )
        device = torch.device("cuda", index)
    elif device.type != "cpu":
        raise ValueError(f"distributed training supports CUDA and CPU devices, not {device}")
    if config.sync_bn and device.type != "cuda":
        raise ValueError("sync_bn (SyncBatchNorm) needs CUDA devices; leave it off on the CPU")
    return device


@torch.no_grad()
def _check_ranks_agree(module: nn.Module, data: DeviceData, steps: int, desc: str) -> None:
    """Fail early, instead of hanging or diverging, when ranks hold different data or
    integer buffers (annotations, hard labels); floating-point buffers are broadcast from
    rank 0 afterwards, and parameters by DDP."""
    dev = data.device
    ints = [b.sum(dtype=torch.int64) for b in module.buffers() if b is not None and b.numel() and not b.is_floating_point()]
    int_sum = torch.stack(ints).sum() if ints else torch.zeros((), dtype=torch.int64, device=dev)
    mine = torch.stack([
        torch.tensor(data.n_train, dtype=torch.int64, device=dev),
        torch.tensor(steps, dtype=torch.int64, device=dev),
        int_sum.to(dev),
        data.x_train.sum(dtype=torch.float64).view(torch.int64),  # the exact bits of the sum
    ])
    every = D.all_gather_rows(mine[None])
    if not bool((every == every[0]).all()):
        raise RuntimeError(
            f"{desc}: the {D.world_size()} processes disagree on the training data or the module's integer buffers "
            f"(rows: n_train, steps per epoch, buffer checksum, data checksum bits per rank: {every.tolist()}); "
            "every rank must load the same data set, annotations and seed"
        )
