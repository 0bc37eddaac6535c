"""Methods: what ``kdcrowd run --method NAME`` trains, and the metrics every run reports.

A method takes a :class:`~kdcrowd.data.datasets.CrowdDataset` already placed on a device
(:class:`~kdcrowd.training.DeviceData`) and a :class:`RunConfig`, trains through the one
loop in :mod:`kdcrowd.training`, and returns a :class:`MethodOutput`. :func:`run` then
evaluates it into the ``metrics.json`` dictionary. Every door (CLI, estimator, benchmarks)
goes through :func:`run`.

Methods here:

* ``clean`` — the backbone on the ground-truth labels (the ceiling; simulated or real
  data with known training labels only);
* ``mv`` / ``mv-soft`` — the backbone on majority-vote labels (hard or vote proportions);
* ``ds`` / ``ds-soft`` — the backbone on Dawid–Skene labels (hard or posteriors);
* crowd models ``crowdlayer-mw|vw|vb|vwb``, ``maxmig``, ``conal``;
* ``kdcrowd`` — the KD-Crowd framework over a teacher and a student.

With :attr:`RunConfig.checkpoint_dir` every training stage checkpoints after each epoch
(:class:`StageCheckpoints`), and the same run started again continues where it stopped.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as D
from . import metrics as M
from .aggregation import aggregate
from .models.backbones import build_backbone
from .training import DeviceData, FitResult, TrainConfig, fit, predict_proba, resolve_device

__all__ = [
    "RunConfig",
    "MethodOutput",
    "StageCheckpoints",
    "METHODS",
    "SupervisedObjective",
    "CrowdObjective",
    "run",
    "run_on_dataset",
    "versions",
]


@dataclass
class RunConfig:
    """Everything needed to rerun one method on one data set."""

    dataset: str = "digits"
    """Registered data set name."""
    method: str = "mv"
    """Method name (see :data:`METHODS`)."""
    workers: str | None = None
    """Simulated-worker case replacing the data set's annotations (``None``: its own)."""
    backbone: str = "auto"
    """Backbone name or ``auto``."""
    seed: int = 0
    """Seed of the simulation, initialisation and batch order."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation settings."""
    options: dict[str, Any] = field(default_factory=dict)
    """Method-specific options (``mig_f``, ``teacher``, ``student``, ``kd``, ...)."""
    dataset_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of :func:`~kdcrowd.data.datasets.load_dataset`."""
    track_memorization: bool = True
    """Record per-epoch memorization of the workers' wrong labels (needs training ground truth)."""
    progress_file: str | None = None
    """If set, every epoch's record is appended there as a JSON line (nothing is lost on interruption)."""
    checkpoint_dir: str | None = None
    """If set, every training stage saves a checkpoint there after each epoch (module,
    optimiser, schedule, RNG states, history) and a run started again with the same
    settings and directory continues from the last finished epoch. Layout: one file per
    stage, ``<method>.pt`` (``teacher.pt``, ``student.pt``, ``stage2.pt`` for ``kdcrowd``),
    and ``state.json`` (the stage training now, the finished stages, the settings); see
    :class:`StageCheckpoints`."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MethodOutput:
    """What a method returns to :func:`run`."""

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


class SupervisedObjective(nn.Module):
    """A backbone trained with cross-entropy on fixed targets: hard ``(N,)`` or soft ``(N, K)``."""

    targets: torch.Tensor

    def __init__(self, backbone: nn.Module, targets: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("targets", targets, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.backbone(x).float(), self.targets[idx])

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).float().softmax(-1)


def crowd_param_groups(model: nn.Module, config: TrainConfig, worker_lr_scale: float) -> list[dict[str, Any]]:
    """Backbone parameters at the base learning rate; worker parameters (everything outside
    ``model.backbone``) at ``worker_lr_scale`` times it and without weight decay.

    Worker matrices start far from their targets (CrowdLayer's identity gives a diagonal of
    e/(e+K−1) ≈ 0.23 for K = 10) and each worker sees few items per epoch, so at the
    backbone's learning rate they stay near their initialisation for a whole run.
    """
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    workers = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups: list[dict[str, Any]] = [{"params": [p for p in model.backbone.parameters() if p.requires_grad]}]
    if workers:
        groups.append({"params": workers, "lr": config.lr * worker_lr_scale, "weight_decay": 0.0})
    return groups


class CrowdObjective(nn.Module):
    """Adapts a crowd model (``crowd_loss(x, workers, labels)``) to the training loop.

    Holds the item-major padded annotations of the training items on the device and
    gathers the rows of each batch. Worker parameters train at ``worker_lr_scale`` times
    the learning rate (see :func:`crowd_param_groups`).
    """

    model: Any  # a crowd model (kdcrowd.models.crowd contract)
    ann_workers: torch.Tensor
    ann_labels: torch.Tensor

    def __init__(self, model: nn.Module, workers: torch.Tensor, labels: torch.Tensor, worker_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.worker_lr_scale = worker_lr_scale
        self.register_buffer("ann_workers", workers, persistent=False)
        self.register_buffer("ann_labels", labels, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        loss, _ = self.model.crowd_loss(x, self.ann_workers[idx], self.ann_labels[idx])
        return loss

    def param_groups(self, config: TrainConfig) -> list[dict[str, Any]]:
        return crowd_param_groups(self.model, config, self.worker_lr_scale)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict_proba(x).float()


def padded_annotations(ann: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Item-major padded (worker, label) long tensors of ``ann`` on ``device``."""
    t = ann.to_torch(device, padded=True)
    return t["workers"].long(), t["labels"].long()


# ----------------------------------------------------------------------------- checkpoints


def _digest(*arrays: Any) -> str:
    """A BLAKE2 digest of arrays' dtypes, shapes and bytes (``None`` entries included as such)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        if a.dtype == object:
            h.update(repr(a.tolist()).encode())
        elif a.size:
            h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def data_digest(ds: Any) -> dict[str, Any]:
    """What identifies a data set for resuming: its name, the number of training items, and
    a digest of the training features, the annotations and the validation split."""
    ann = ds.annotations
    parts = [ds.x_train, ds.x_val, ds.y_val]
    parts += [None] * 3 if ann is None else [ann.item, ann.worker, ann.label]
    return {"name": ds.name, "n_train": len(ds.x_train), "digest": _digest(*parts)}


def module_digest(module: nn.Module) -> str:
    """A digest of ``module``'s state (names, dtypes, shapes and values)."""
    h = hashlib.blake2b(digest_size=16)
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}{v.dtype}{tuple(v.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class StageCheckpoints:
    """The checkpoint folder of one run (:attr:`RunConfig.checkpoint_dir`).

    Each training stage gets its own file ``<dir>/<stage>.pt`` (:attr:`TrainConfig.checkpoint`,
    written by :func:`~kdcrowd.training.fit` after every epoch), and ``<dir>/state.json``
    tells a person where the run is::

        {"method": "kdcrowd", "stages": ["teacher", "student", "stage2"],
         "stage": "student", "finished": ["teacher"], "complete": false,
         "files": {"teacher": "teacher.pt", ...}, "settings": {...}}

    ``settings`` is the run configuration (without the progress file, the checkpoint
    folder and the progress bar) and a digest of the data (:func:`data_digest`) plus
    ``identity`` (anything else the stages depend on, such as a pre-trained teacher's
    digest). A folder whose ``state.json`` has other settings is refused with a
    ``ValueError`` before anything trains; each stage's file also checks its own training
    settings. Without ``checkpoint_dir`` nothing is written and :meth:`train_config`
    returns the settings unchanged. With distributed training, rank 0 writes ``state.json``
    and every rank checks it.

    Args:
        cfg: the run's configuration.
        ds: the data set it trains on.
        stages: the stages that train, in order (a reused pre-trained teacher is not one).
        identity: further JSON-serialisable settings the stages depend on.
    """

    def __init__(self, cfg: RunConfig, ds: Any, stages: Sequence[str], identity: dict[str, Any] | None = None) -> None:
        self.dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        self.stages: list[str] = list(stages)
        self.finished: list[str] = []
        self.current: str | None = None
        self.method = cfg.method
        if self.dir is None:
            return
        run = cfg.to_dict()
        for key in ("progress_file", "checkpoint_dir"):
            run.pop(key, None)
        for key in ("progress", "checkpoint"):
            run["train"].pop(key, None)
        self.settings = _json_plain({"run": run, "data": data_digest(ds), **(identity or {})})
        error = self._check()
        if cfg.train.distributed:
            errors = D.all_gather_object(error)
            error = error or next((f"another process refused {self.dir}: {e}" for e in errors if e), None)
        if error:
            raise ValueError(error)
        self._write()

    @property
    def state_file(self) -> Path | None:
        """``<dir>/state.json`` (``None`` without a checkpoint folder)."""
        return None if self.dir is None else self.dir / "state.json"

    def _check(self) -> str | None:
        path = self.state_file
        assert path is not None
        if not path.exists():
            return None
        try:
            old = json.loads(path.read_text())
            settings = old["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"{path} cannot be read ({type(e).__name__}: {e}); delete {self.dir} (or use a fresh output folder) to start afresh"
        diffs = _differences(settings, self.settings)
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
            return (
                f"checkpoint folder {self.dir} belongs to a run with other settings ({shown}); "
                f"resume with the settings it was started with, or delete {self.dir} (or use a fresh output folder) to start afresh"
            )
        self.finished = [s for s in old.get("finished", []) if s in self.stages]
        return None

    def _write(self) -> None:
        if self.dir is None or not D.is_main():
            return
        from .io import write_json

        write_json(self.dir / "state.json", durable=True, obj={
            "method": self.method,
            "stages": self.stages,
            "stage": self.current,
            "finished": self.finished,
            "complete": all(s in self.finished for s in self.stages),
            "files": {s: f"{s}.pt" for s in self.stages},
            "settings": self.settings,
        })

    def train_config(self, stage: str, train: TrainConfig) -> TrainConfig:
        """``train`` with stage ``stage``'s checkpoint file; records that ``stage`` is training now."""
        if self.dir is None:
            return train
        self.current = stage
        self._write()
        return replace(train, checkpoint=str(self.dir / f"{stage}.pt"))

    def finish(self, stage: str) -> None:
        """Record that ``stage`` finished."""
        if self.dir is None:
            return
        if stage not in self.finished:
            self.finished.append(stage)
        self.current = None
        self._write()


def _json_plain(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, numpy scalars numbers,
    other objects their type's name)."""
    from .io import json_default

    def default(o: Any) -> Any:
        try:
            return json_default(o)
        except TypeError:
            return f"<{type(o).__module__}.{type(o).__qualname__}>"

    return json.loads(json.dumps(obj, default=default))


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Readable differences between two JSON values (``path: old → new``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(a.keys() | b.keys()) for d in _differences(a.get(k, "(absent)"), b.get(k, "(absent)"), f"{path}.{k}" if path else k)]
    return [] if a == b else [f"{path}: {a!r} → {b!r}"]


# ----------------------------------------------------------------------------- callbacks


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
    :attr:`RunConfig.checkpoint_dir` appends to the same file; an epoch whose line was
    written but whose checkpoint was not (the run died in between) is trained again and
    appears twice, so a reader keeps the last line of each (stage, epoch).
    """
    import json

    from .io import json_default

    def cb(epoch: int, module: nn.Module, record: dict[str, Any]) -> None:
        row = {"stage": stage, **{k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v) for k, v in record.items()}}
        with open(path, "a") as f:
            f.write(json.dumps(row, default=json_default) + "\n")

    return cb


def standard_callbacks(
    ds: Any, data: DeviceData, cfg: RunConfig, stage: str | None = None, pseudo: np.ndarray | None = None
) -> list[Callable[[int, nn.Module, dict[str, Any]], None]]:
    """Callbacks every method gets: memorization when the training ground truth (or its
    stand-in ``ds.y_reference``) is known (with ``pseudo`` hard training labels, also
    their memorization, see :func:`memorization_callback`), and the per-epoch progress
    file when ``cfg.progress_file`` is set."""
    cbs: list[Callable[[int, nn.Module, dict[str, Any]], None]] = []
    reference = ds.y_train if ds.y_train is not None else getattr(ds, "y_reference", None)
    if cfg.track_memorization and reference is not None and ds.annotations is not None:
        cbs.append(memorization_callback(ds, data, cfg.train, pseudo=pseudo, y=reference))
    if cfg.progress_file:
        cbs.append(progress_callback(cfg.progress_file, stage or cfg.method))
    return cbs


# ----------------------------------------------------------------------------- methods


def _backbone(ds: Any, data: DeviceData, cfg: RunConfig) -> nn.Module:
    return build_backbone(cfg.backbone, data.input_shape, ds.n_classes).to(data.device)


def _require_annotations(ds: Any, method: str) -> Any:
    if ds.annotations is None:
        raise ValueError(f"method '{method}' needs crowd annotations but data set '{ds.name}' has none; pick simulated workers with --workers (see `kdcrowd datasets`)")
    return ds.annotations


def _train_on_targets(ds: Any, data: DeviceData, cfg: RunConfig, targets: torch.Tensor, desc: str) -> tuple[nn.Module, FitResult]:
    ckpt = StageCheckpoints(cfg, ds, [cfg.method])
    torch.manual_seed(cfg.train.seed)
    module = SupervisedObjective(_backbone(ds, data, cfg), targets).to(data.device)
    res = fit(module, data, ckpt.train_config(cfg.method, cfg.train), standard_callbacks(ds, data, cfg), desc=desc)
    ckpt.finish(cfg.method)
    module.load_state_dict(res.best_state, strict=False)
    return module, res


def _aggregation_method(agg: str, soft: bool) -> Callable[[Any, DeviceData, RunConfig], MethodOutput]:
    def method(ds: Any, data: DeviceData, cfg: RunConfig) -> MethodOutput:
        ann = _require_annotations(ds, cfg.method)
        trans = None
        if agg == "ds":
            from .aggregation import dawid_skene

            dsr = dawid_skene(ann, device=str(data.device))
            labels, post, trans = dsr.labels, dsr.posteriors, dsr.transitions
        else:
            labels, post = aggregate(ann, method="mv")
        post_t = torch.as_tensor(np.asarray(post, dtype=np.float32), device=data.device)
        targets = post_t if soft else torch.as_tensor(np.asarray(labels), dtype=torch.long, device=data.device)
        if not soft and (targets < 0).any():
            # Items nobody labelled get the argmax of their (uniform) posterior, class 0;
            # the soft variant gives them a uniform target instead.
            targets = post_t.argmax(1)
        module, res = _train_on_targets(ds, data, cfg, targets, f"{cfg.method}+DNN")
        extra: dict[str, Any] = {"aggregated_label_accuracy": M.accuracy(post_t.cpu().numpy(), ds.y_train) if ds.y_train is not None else None}
        return MethodOutput(module, res, transitions=trans, extra=extra)

    return method


def _clean(ds: Any, data: DeviceData, cfg: RunConfig) -> MethodOutput:
    if ds.y_train is None:
        raise ValueError(f"method 'clean' trains on ground-truth labels, which data set '{ds.name}' does not have for its training items")
    targets = torch.as_tensor(ds.y_train, dtype=torch.long, device=data.device)
    module, res = _train_on_targets(ds, data, cfg, targets, "clean")
    return MethodOutput(module, res)


def crowd_model_class(name: str) -> type[nn.Module]:
    """The class :func:`build_crowd_model` builds for ``name``."""
    from .models import crowd

    if name.startswith("crowdlayer-"):
        return crowd.CrowdLayer
    if name == "maxmig":
        return crowd.MaxMIG
    if name == "conal":
        return crowd.CoNAL
    if name in _NEW_CROWD_MODELS:
        module, cls, _ = _NEW_CROWD_MODELS[name]
        return getattr(importlib.import_module(f"kdcrowd.models.{module}"), cls)
    raise ValueError(f"unknown crowd model '{name}'; choose one of {CROWD_MODELS}")


def build_crowd_model(
    name: str, ds: Any, data: DeviceData, cfg: RunConfig, padded: tuple[torch.Tensor, torch.Tensor] | None = None, soft: torch.Tensor | None = None
) -> nn.Module:
    """A fresh crowd model for ``name`` (``crowdlayer-*``, ``maxmig``, ``conal``) on ``ds``,
    initialised from the padded annotations (computed here unless ``padded`` is given).

    ``soft``: ``(N, K)`` label distributions of the training items for the models that
    initialise their workers from label statistics (``init_from_annotations(..., soft=)``,
    Max-MIG) instead of majority vote; the others raise ``ValueError``."""
    from .models import crowd

    ann = _require_annotations(ds, name)
    cls = crowd_model_class(name)
    backbone = _backbone(ds, data, cfg)
    k, m = ds.n_classes, ann.n_workers
    opts = cfg.options
    if cls is crowd.CrowdLayer:
        model: nn.Module = crowd.CrowdLayer(backbone, m, k, variant=name.split("-", 1)[1])
    elif cls is crowd.MaxMIG:
        model = crowd.MaxMIG(backbone, m, k, f=opts.get("mig_f", "kl"))
    elif name in _NEW_CROWD_MODELS:
        model = cls(backbone, m, k, **_NEW_CROWD_MODELS[name][2])
    else:
        model = crowd.CoNAL(backbone, m, k)
    model = model.to(data.device)
    model.init_from_annotations(*(padded or padded_annotations(ann, data.device)), soft=soft)
    return model


def crowd_outputs(model: nn.Module, data: DeviceData, workers: torch.Tensor, labels: torch.Tensor, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier probabilities and annotation-aware posteriors of a crowd model on the training items."""
    proba = predict_proba(model, data, data.x_train, config)
    with torch.no_grad():
        post = model.posterior(proba.clamp_min(1e-12).log(), workers, labels).float()
    return proba, post


def _crowd_method(ds: Any, data: DeviceData, cfg: RunConfig) -> MethodOutput:
    w, l = padded_annotations(_require_annotations(ds, cfg.method), data.device)
    ckpt = StageCheckpoints(cfg, ds, [cfg.method])
    torch.manual_seed(cfg.train.seed)
    model = build_crowd_model(cfg.method, ds, data, cfg, padded=(w, l))
    obj = CrowdObjective(model, w, l, worker_lr_scale=float(cfg.options.get("worker_lr_scale", 1.0)))
    res = fit(obj, data, ckpt.train_config(cfg.method, cfg.train), standard_callbacks(ds, data, cfg), desc=cfg.method)
    ckpt.finish(cfg.method)
    obj.load_state_dict(res.best_state, strict=False)
    proba, post = crowd_outputs(model, data, w, l, cfg.train)
    extra: dict[str, Any] = {}
    if ds.y_train is not None:
        extra["train_posterior_accuracy"] = M.accuracy(post.cpu().numpy(), ds.y_train)
    trans = model.transition_matrices().detach().float().cpu().numpy()
    return MethodOutput(obj, res, train_proba=proba, transitions=trans, extra=extra)


def _kdcrowd(ds: Any, data: DeviceData, cfg: RunConfig, pretrained: tuple[nn.Module, FitResult] | None = None) -> MethodOutput:
    from .framework import run_kdcrowd

    return run_kdcrowd(ds, data, cfg, pretrained=pretrained)


#: Crowd models in their own modules: name -> (module in kdcrowd.models, class, options).
_NEW_CROWD_MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "tracereg": ("tracereg", "TraceReg", {}),
    "geocrowdnet-f": ("geocrowdnet", "GeoCrowdNet", {"variant": "f"}),
    "geocrowdnet-w": ("geocrowdnet", "GeoCrowdNet", {"variant": "w"}),
    "unionnet": ("unionnet", "UnionNet", {}),
    "madl": ("madl", "MaDL", {}),
    "crowdar": ("crowdar", "CrowdAR", {}),
    "annot-mix": ("annotmix", "AnnotMix", {}),
}
CROWD_MODELS = ("crowdlayer-mw", "crowdlayer-vw", "crowdlayer-vb", "crowdlayer-vwb", "maxmig", "conal", *_NEW_CROWD_MODELS)

METHODS: dict[str, Callable[[Any, DeviceData, RunConfig], MethodOutput]] = {
    "clean": _clean,
    "mv": _aggregation_method("mv", soft=False),
    "mv-soft": _aggregation_method("mv", soft=True),
    "ds": _aggregation_method("ds", soft=False),
    "ds-soft": _aggregation_method("ds", soft=True),
    **{name: _crowd_method for name in CROWD_MODELS},
    "kdcrowd": _kdcrowd,
}


# ----------------------------------------------------------------------------- evaluation


def versions() -> dict[str, str]:
    """Versions of Python, kdcrowd and the libraries a result depends on."""
    import numpy
    import pandas

    from . import __version__

    out = {"python": platform.python_version(), "kdcrowd": __version__, "torch": torch.__version__, "numpy": numpy.__version__, "pandas": pandas.__version__}
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
    return out


def device_name(device: torch.device) -> str:
    """Human-readable device description."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


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


def run_on_dataset(ds: Any, cfg: RunConfig, pretrained_teacher: tuple[nn.Module, FitResult] | None = None) -> tuple[dict[str, Any], MethodOutput]:
    """Run ``cfg.method`` on an already loaded data set; returns (metrics, method output).

    ``pretrained_teacher`` (crowd model, fit result), for ``kdcrowd`` only, reuses a teacher
    trained earlier (e.g. by a ``maxmig`` run on the same data and seed) instead of
    training a new one, so variants are compared over the same teacher.
    """
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method '{cfg.method}'; choose one of {sorted(METHODS)}")
    if cfg.train.seed != cfg.seed:
        cfg = replace(cfg, train=replace(cfg.train, seed=cfg.seed))
    device = resolve_device(cfg.train.device, distributed=cfg.train.distributed or None)
    t0 = time.perf_counter()
    data = DeviceData.from_dataset(ds, device)
    if pretrained_teacher is not None:
        if cfg.method != "kdcrowd":
            raise ValueError("pretrained_teacher is only used by the kdcrowd method")
        out = _kdcrowd(ds, data, cfg, pretrained=pretrained_teacher)
    else:
        out = METHODS[cfg.method](ds, data, cfg)
    metrics: dict[str, Any] = {
        "method": cfg.method,
        "dataset": ds.name,
        "workers": cfg.workers,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "versions": versions(),
        "device": device_name(device),
    }
    metrics.update(evaluate_output(out, ds, data, cfg.train))
    metrics.update(out.extra)
    metrics["history"] = out.fit.history
    metrics["seconds"] = time.perf_counter() - t0
    metrics["train_seconds"] = out.fit.seconds
    out.dataset, out.data = ds, data
    return metrics, out


def run(cfg: RunConfig, root: str | None = None) -> tuple[dict[str, Any], MethodOutput]:
    """Load ``cfg.dataset`` (with simulated workers if asked) and run ``cfg.method`` on it."""
    from .data.datasets import load_dataset

    ds = load_dataset(cfg.dataset, root=root, workers=cfg.workers, seed=cfg.seed, **cfg.dataset_options)
    return run_on_dataset(ds, cfg)
