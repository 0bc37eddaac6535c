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

With :attr:`RunConfig.checkpoint_dir` every training stage checkpoints its finished epochs
(:class:`~kdcrowd.checkpoint.StageCheckpoints`, at most every
:attr:`~kdcrowd.training.TrainConfig.checkpoint_interval` seconds), and the same run
started again continues where it stopped.

A crowd-model run's outputs can be saved as a KD-Crowd teacher's
(:func:`teacher_outputs_of`, :class:`~kdcrowd.teacher_outputs.TeacherOutputs`), and a
``kdcrowd`` run can take them instead of training its teacher
(``run_on_dataset(..., teacher_outputs=)``): the teacher in one process, the student and
stage 2 in another, with the numbers of one process.

This is the runner layer: it turns a :class:`RunConfig` into the components' typed
configurations (:class:`~kdcrowd.training.TrainConfig`, a crowd model's options,
:class:`~kdcrowd.framework.KDCrowd`), trains through the engine, and evaluates every
trained predictor once (:func:`~kdcrowd.evaluate.evaluate_output`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .aggregation import aggregate_with_matrices
from .checkpoint import NOT_FINGERPRINTED, StageCheckpoints, json_plain
from .config import ConfigError, _setting, closest, warn_moot
from .evaluate import (
    MethodOutput,
    evaluate_output,
    expertise_error_summary,  # noqa: F401  (re-exported)
    standard_callbacks,
    true_transitions,  # noqa: F401  (re-exported)
    truth_accuracy,
)
from .framework import ENSEMBLE_MEMBERS, KDCrowd, moot_settings
from .models import CROWD_MODELS as _CROWD_MODEL_REGISTRY
from .models.backbones import build_backbone
from .models.base import crowd_model_spec
from .objectives import (
    CrowdObjective,
    SupervisedObjective,
    crowd_outputs,
    gold_targets,
    make_crowd_model,
    padded_annotations,
    require_annotations,
)
from .teacher_outputs import TeacherOutputs, teacher_fingerprint, teacher_predictions
from .training import DeviceData, FitResult, LOOP_TIMINGS, TrainConfig, fit, resolve_device, seeded

__all__ = [
    "RunConfig",
    "MethodOutput",
    "METHODS",
    "HARD_TARGET_METHODS",
    "CROWD_MODELS",
    "SupervisedObjective",
    "CrowdObjective",
    "method_options",
    "run",
    "run_on_dataset",
    "teacher_outputs_of",
    "versions",
]


@dataclass
class RunConfig:
    """Everything needed to rerun one method on one data set."""

    dataset: str = "digits"
    """Registered data set name."""
    method: str = "kdcrowd"
    """Method name (see :data:`METHODS`); the doors' default (``--method``, the estimator's ``method``)."""
    workers: str | None = None
    """Simulated-worker case replacing the data set's annotations (``None``: its own)."""
    backbone: str = "auto"
    """Backbone name or ``auto``."""
    seed: int = 0
    """Seed of the simulation, initialisation and batch order."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation settings."""
    options: dict[str, Any] = field(default_factory=dict)
    """Method-specific options: the crowd model's options (e.g. ``mig_f`` for ``maxmig``)
    for a crowd-model method, the :class:`~kdcrowd.framework.KDCrowd` fields and the
    teacher's crowd-model options for ``kdcrowd``. A key the method does not take is
    refused (:func:`method_options`), naming the closest one it takes."""
    dataset_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of :func:`~kdcrowd.data.datasets.load_dataset`."""
    track_memorization: bool = True
    """Record per-epoch memorization of the workers' wrong labels (needs training ground truth)."""
    progress_file: str | None = None
    """If set, every epoch's record is appended there as a JSON line (nothing is lost on interruption)."""
    checkpoint_dir: str | None = None
    """If set, every training stage saves a checkpoint there after finished epochs (module,
    optimiser, schedule, RNG states, history; when, :attr:`~kdcrowd.training.TrainConfig.checkpoint_interval`
    says) and a run started again with the same settings and directory continues from the
    last saved epoch. Layout: one file per
    stage, ``<method>.pt`` (``teacher.pt``, ``student.pt``, ``stage2.pt`` for ``kdcrowd``),
    and ``state.json`` (the stage training now, the finished stages, the settings); see
    :class:`~kdcrowd.checkpoint.StageCheckpoints`."""
    checkpoint_replace_finished: bool = False
    """A finished run of other settings in ``checkpoint_dir`` is replaced instead of refused
    (the estimator's refits on other data; never ``kdcrowd fit --resume``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def _stage_checkpoints(cfg: RunConfig, ds: Any, stages: Sequence[str], identity: dict[str, Any] | None = None,
                       free: Sequence[str] = ()) -> StageCheckpoints:
    """The run's checkpoint folder; its settings are the run configuration without the
    progress file, the checkpoint folder, the progress bar and the checkpoint interval;
    ``free``: settings that may change on resume (see :class:`StageCheckpoints`)."""
    settings = cfg.to_dict()
    for key in ("progress_file", "checkpoint_dir", "checkpoint_replace_finished"):
        settings.pop(key, None)
    for key in NOT_FINGERPRINTED:
        settings["train"].pop(key, None)
    return StageCheckpoints(cfg.checkpoint_dir, cfg.method, settings, ds, stages, identity=identity, distributed=cfg.train.distributed, free=free,
                            compared=_with_resolved_options, replace_finished=cfg.checkpoint_replace_finished)


def _with_resolved_options(settings: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint settings with the run's method options resolved (defaults filled in): a
    resume that writes out a default, or leaves out one written before, is the same run.
    KD-Crowd's settings without effect with its stages and loss
    (:func:`~kdcrowd.framework.moot_settings`) are compared at their defaults: a run whose
    head recipe set lambda2 with one stage resumes where the recipe no longer sets it.
    Options that no longer resolve are compared as written."""
    run = settings.get("run")
    if not isinstance(run, dict) or not isinstance(run.get("options"), dict) or not isinstance(run.get("method"), str):
        return settings
    try:
        resolved = method_options(run["method"], dict(run["options"]), backbone=run.get("backbone") or "auto")
    except (ConfigError, ValueError, TypeError, KeyError):
        return settings
    if resolved is None:
        return settings
    options = asdict(resolved)
    if isinstance(resolved, KDCrowd) and isinstance(resolved.teacher, str):  # a named teacher's options with their defaults too
        options["teacher_options"] = asdict(crowd_model_spec(resolved.teacher).options(dict(resolved.teacher_options or {})))
    # (student_params stay as given: a student may choose a missing one from the teacher, co-teaching's forget rate)
    out = {**settings, "run": {**run, "options": json_plain(options)}}
    if isinstance(resolved, KDCrowd):  # KD-Crowd's settings without effect (lambda2 with one stage) at their defaults, in the options and the framework
        moot = {k: json_plain(getattr(KDCrowd, k)) for k in moot_settings(resolved.stages, resolved.kd)}
        out["run"]["options"].update(moot)
        if isinstance(settings.get("framework"), dict):
            out["framework"] = {**settings["framework"], **{k: v for k, v in moot.items() if k in settings["framework"]}}
    return out


def _callbacks(ds: Any, data: DeviceData, cfg: RunConfig, stage: str, pseudo: np.ndarray | None = None) -> list[Any]:
    return standard_callbacks(ds, data, cfg.train, stage, pseudo, track_memorization=cfg.track_memorization, progress_file=cfg.progress_file)


# ----------------------------------------------------------------------------- options


def method_options(method: str, options: dict[str, Any], backbone: str = "auto") -> Any:
    """The typed configuration of ``method``'s options: a crowd model's options dataclass
    (crowd-model methods), a :class:`~kdcrowd.framework.KDCrowd` (``kdcrowd``: its fields,
    plus the teacher's crowd-model options), or ``None`` (methods without options).

    Any key the method does not take raises one :class:`~kdcrowd.config.ConfigError`
    naming the closest key it takes."""
    for key, where in (("worker_lr_scale", "a training setting: TrainConfig(worker_lr_scale=...)"), ("backbone", "a run setting: RunConfig(backbone=...)")):
        if key in options:
            raise ConfigError(f"option {key!r} is {where}, not a method option")
    if method in _CROWD_MODEL_REGISTRY:
        return crowd_model_spec(method).options(options)
    if method == "kdcrowd":
        fw_names = {f.name for f in fields(KDCrowd)} - {"backbone"}
        teacher = options.get("teacher", KDCrowd.teacher)
        model_names = {f.name for f in fields(crowd_model_spec(teacher).config)} - {k for k, _ in crowd_model_spec(teacher).preset} if isinstance(teacher, str) else set()
        fw = {k: v for k, v in options.items() if k in fw_names}
        model = {k: v for k, v in options.items() if k not in fw_names}
        for k in model:
            if k not in model_names:
                near = closest(k, fw_names | model_names)
                raise ConfigError(f"unknown kdcrowd option {k!r}; " + (f"did you mean {near!r}? " if near else "")
                                  + f"the teacher {teacher!r} takes {', '.join(sorted(model_names)) or 'no options'}; "
                                  + f"KD-Crowd itself takes {', '.join(sorted(fw_names))}", unknown=(k, near))
        if model:
            fw["teacher_options"] = {**fw.get("teacher_options", {}), **model}
        return KDCrowd(**fw, backbone=backbone)
    if options:
        k = next(iter(options))
        raise ConfigError(f"method '{method}' takes no options; got {k!r}")
    return None


# ----------------------------------------------------------------------------- methods


def _backbone(ds: Any, data: DeviceData, cfg: RunConfig) -> nn.Module:
    return build_backbone(cfg.backbone, data.input_shape, ds.n_classes).to(data.device)


def _train_on_targets(ds: Any, data: DeviceData, cfg: RunConfig, targets: torch.Tensor, desc: str, labelled: torch.Tensor | None = None) -> tuple[nn.Module, FitResult]:
    ckpt = _stage_checkpoints(cfg, ds, [cfg.method])
    with seeded(cfg.train.seed):
        module = SupervisedObjective(_backbone(ds, data, cfg), targets, label_smoothing=cfg.train.label_smoothing, labelled=labelled).to(data.device)
    res = fit(module, data, ckpt.train_config(cfg.method, cfg.train), _callbacks(ds, data, cfg, cfg.method), desc=desc)
    ckpt.finish(cfg.method)
    module.load_state_dict(res.best_state, strict=False)
    return module, res


def _aggregation_method(agg: str, soft: bool) -> Callable[[Any, DeviceData, RunConfig], MethodOutput]:
    def method(ds: Any, data: DeviceData, cfg: RunConfig) -> MethodOutput:
        ann = require_annotations(ds, cfg.method)
        trans = None
        if agg == "ds":
            from .aggregation import dawid_skene

            dsr = dawid_skene(ann, device=str(data.device), gold=getattr(ds, "gold", None))
            labels, post, trans = dsr.labels, dsr.posteriors, dsr.transitions
        else:  # gold items get their known labels as targets; trans: the worker matrices of the aggregators that estimate them (one-coin DS, MACE)
            labels, post, trans = aggregate_with_matrices(ann, method=agg, gold=getattr(ds, "gold", None), **({} if agg == "mv" else {"device": str(data.device)}))
        post_t = torch.as_tensor(np.asarray(post, dtype=np.float32), device=data.device)
        targets = post_t if soft else torch.as_tensor(np.asarray(labels), dtype=torch.long, device=data.device)
        # Items nobody labelled (and no gold label names) have no target: their aggregate is
        # a uniform row or the class prior, which would teach the network one class. They
        # add nothing to the loss (the network still predicts them).
        gold = getattr(ds, "gold", None)
        has = ann.labels_per_item() > 0
        if gold is not None:
            has |= np.asarray(gold) >= 0
        labelled = None if has.all() else torch.as_tensor(has, device=data.device)
        module, res = _train_on_targets(ds, data, cfg, targets, f"{cfg.method}+DNN", labelled=labelled)
        extra: dict[str, Any] = {}
        if ds.y_train is not None:  # left out without ground truth, as the other accuracies of training labels
            extra["aggregated_label_accuracy"] = truth_accuracy(post_t.cpu().numpy(), ds)
        return MethodOutput(module, res, transitions=trans, extra=extra)

    return method


def _clean(ds: Any, data: DeviceData, cfg: RunConfig) -> MethodOutput:
    if ds.y_train is None:
        raise ValueError(f"method 'clean' trains on ground-truth labels, which data set '{ds.name}' does not have for its training items")
    targets = torch.as_tensor(ds.y_train, dtype=torch.long, device=data.device)
    module, res = _train_on_targets(ds, data, cfg, targets, "clean")
    return MethodOutput(module, res)


def crowd_model_class(name: str) -> type[nn.Module]:
    """The class registered as crowd model ``name``."""
    return crowd_model_spec(name).cls


def build_crowd_model(
    name: str, ds: Any, data: DeviceData, cfg: RunConfig, padded: tuple[torch.Tensor, torch.Tensor] | None = None, soft: torch.Tensor | None = None
) -> nn.Module:
    """A fresh crowd model ``name`` on ``ds`` with the options of ``cfg.options`` (see
    :func:`kdcrowd.objectives.make_crowd_model`)."""
    return make_crowd_model(name, ds, data, cfg.backbone, crowd_model_spec(name).options(cfg.options) if name == cfg.method else None, padded=padded, soft=soft)


def _crowd_method(ds: Any, data: DeviceData, cfg: RunConfig) -> MethodOutput:
    options = method_options(cfg.method, cfg.options)
    w, l = padded_annotations(require_annotations(ds, cfg.method), data.device)
    ckpt = _stage_checkpoints(cfg, ds, [cfg.method])
    with seeded(cfg.train.seed):
        model = make_crowd_model(cfg.method, ds, data, cfg.backbone, options, padded=(w, l))
    obj = CrowdObjective(model, w, l, worker_lr_scale=cfg.train.worker_lr_scale, gold=gold_targets(ds, data.device), gold_weight=cfg.train.gold_weight)
    res = fit(obj, data, ckpt.train_config(cfg.method, cfg.train), _callbacks(ds, data, cfg, cfg.method), desc=cfg.method)
    ckpt.finish(cfg.method)
    obj.load_state_dict(res.best_state, strict=False)
    proba, post = crowd_outputs(model, data, w, l, cfg.train)
    extra: dict[str, Any] = {}
    if ds.y_train is not None:
        extra["train_posterior_accuracy"] = truth_accuracy(post.cpu().numpy(), ds)
    trans = model.transition_matrices().detach().float().cpu().numpy()
    return MethodOutput(obj, res, train_proba=proba, transitions=trans, extra=extra)


#: The fields of a crowd-model run's metrics that :func:`evaluate_output` gave: what a
#: KD-Crowd run over its saved outputs reports as its teacher stage.
TEACHER_STAGE_FIELDS = ("test_accuracy", "test_ece", "test_accuracy_val_selected", "test_ece_val_selected", "best_epoch", "train_label_accuracy", "expertise_error", "extra_test")


def _teacher_stage(saved: TeacherOutputs, fw: KDCrowd, ds: Any) -> dict[str, Any]:
    """The teacher stage of a KD-Crowd run over saved outputs: the teacher run's own
    evaluation, history and seconds (``timings`` empty: it trained elsewhere), with
    ``train_label_accuracy`` of the predictions the student distils (``teacher_output``), as a
    teacher trained in the run reports it, and ``source: "teacher outputs"``."""
    rec = {k: saved.metrics[k] for k in TEACHER_STAGE_FIELDS if k in saved.metrics}
    if ds.y_train is not None:
        rec["train_label_accuracy"] = truth_accuracy(saved.posterior if fw.teacher_output == "posterior" else saved.proba, ds)
    rec.update(history=saved.metrics.get("history", []), seconds=saved.metrics.get("train_seconds"), timings={}, resumed_seconds=0.0, source="teacher outputs")
    return rec


def _kdcrowd(
    ds: Any, data: DeviceData, cfg: RunConfig, pretrained: tuple[nn.Module, FitResult | None] | None = None, teacher_outputs: TeacherOutputs | None = None
) -> MethodOutput:
    """The ``kdcrowd`` method: :class:`KDCrowd` from ``cfg.options``, every stage evaluated here.

    ``pretrained`` (crowd model, fit result) reuses an already trained teacher;
    ``teacher_outputs`` takes a teacher's saved outputs instead (its stage is then the
    teacher run's own evaluation, :func:`_teacher_stage`)."""
    fw = method_options("kdcrowd", cfg.options, backbone=cfg.backbone)
    identity = fw.identity(pretrained, teacher_outputs) if cfg.checkpoint_dir else None
    # the final predictor only chooses among the trained stages: it may change on resume
    ckpt = _stage_checkpoints(cfg, ds, fw.stage_names(pretrained, teacher_outputs), identity=identity, free=("run.options.final", "framework.final"))
    outs, final = fw.fit(ds, data, cfg.train, callbacks=lambda stage, pseudo: _callbacks(ds, data, cfg, stage, pseudo), checkpoints=ckpt,
                         pretrained=pretrained, teacher_outputs=teacher_outputs)
    if "stage2" in outs:
        transitions = outs["stage2"].transitions
    else:
        transitions = outs["teacher"].transitions if teacher_outputs is None else teacher_outputs.transitions
    stages: dict[str, Any] = {} if teacher_outputs is None else {"teacher": _teacher_stage(teacher_outputs, fw, ds)}
    evaluation = None
    for name, out in outs.items():
        t = time.perf_counter()
        rec = evaluate_output(out, ds, data, cfg.train)
        if name == final and out.transitions is transitions:
            evaluation = dict(rec)  # the runner's evaluation of the chosen output: the same, not computed again
        rec.update(out.extra)
        rec["history"] = out.fit.history
        rec["seconds"] = out.fit.seconds
        rec["resumed_seconds"] = out.fit.resumed_seconds
        rec["timings"] = {**out.fit.timings, "final_evaluation": time.perf_counter() - t}
        stages[name] = rec
    chosen = outs[final]
    fit = chosen.fit
    if final in ENSEMBLE_MEMBERS:  # it trains no epochs itself: its training time is its members' (their histories are under stages)
        fit = replace(fit, seconds=sum(outs[m].fit.seconds for m in ENSEMBLE_MEMBERS[final]))
    return MethodOutput(chosen.module, fit, train_proba=chosen.train_proba, transitions=transitions, extra={"stages": stages, "final_stage": final}, evaluation=evaluation)


#: The registered crowd models' names (each is a method).
CROWD_MODELS: tuple[str, ...] = tuple(_CROWD_MODEL_REGISTRY)

METHODS: dict[str, Callable[[Any, DeviceData, RunConfig], MethodOutput]] = {
    "clean": _clean,
    "mv": _aggregation_method("mv", soft=False),
    "mv-soft": _aggregation_method("mv", soft=True),
    "ds": _aggregation_method("ds", soft=False),
    "ds-soft": _aggregation_method("ds", soft=True),
    # GLAD, MACE, Wawa, ZBS, one-coin DS, M-MSR (kdcrowd.aggregators), hard and soft
    **{f"{a}{s}": _aggregation_method(a, soft=bool(s)) for a in ("glad", "mace", "wawa", "zbs", "one-coin-ds", "mmsr") for s in ("", "-soft")},
    **{name: _crowd_method for name in CROWD_MODELS},
    "kdcrowd": _kdcrowd,
}
#: The methods that train on fixed hard targets (clean, the aggregate-then-train methods on
#: hard labels), whose cross-entropy ``label_smoothing`` smooths; it changes nothing in the others.
HARD_TARGET_METHODS: frozenset[str] = frozenset(k for k in METHODS if k not in (*CROWD_MODELS, "kdcrowd") and not k.endswith("-soft"))




def method_names() -> tuple[str, ...]:
    """Every method: the fixed ones and every registered crowd model (also one registered
    after this module was imported)."""
    return tuple(dict.fromkeys([*METHODS, *_CROWD_MODEL_REGISTRY]))


def method_function(name: str) -> Callable[[Any, DeviceData, RunConfig], MethodOutput]:
    """The function training method ``name`` (a registered crowd model trains as one)."""
    if name in METHODS:
        return METHODS[name]
    if name in _CROWD_MODEL_REGISTRY:
        return _crowd_method
    near = closest(name, method_names())
    raise ConfigError(f"unknown method '{name}'; " + (f"did you mean '{near}'? " if near else "") + f"choose one of {sorted(method_names())}")


# ----------------------------------------------------------------------------- provenance and the entry points


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


def teacher_fingerprint_of(ds: Any, cfg: RunConfig) -> dict[str, Any]:
    """The :func:`~kdcrowd.teacher_outputs.teacher_fingerprint` of run ``cfg``'s teacher:
    the crowd model a crowd-model run trains, or the one a ``kdcrowd`` run trains first
    (its ``teacher`` and teacher options). A run's seed is its training's."""
    if cfg.method == "kdcrowd":
        fw = method_options("kdcrowd", cfg.options, backbone=cfg.backbone)
        if not isinstance(fw.teacher, str):
            raise ValueError("teacher outputs are matched to a teacher given by name; this KD-Crowd teacher is a module")
        teacher, options = fw.teacher, fw.teacher_options
    elif cfg.method in _CROWD_MODEL_REGISTRY:
        teacher, options = cfg.method, cfg.options
    else:
        raise ValueError(f"method '{cfg.method}' has no teacher: teacher outputs are a crowd model's (as a KD-Crowd teacher)")
    return teacher_fingerprint(ds, replace(cfg.train, seed=cfg.seed), teacher, options, cfg.backbone, dataset_options=cfg.dataset_options, workers=cfg.workers)


def teacher_outputs_of(metrics: dict[str, Any], out: MethodOutput, cfg: RunConfig) -> TeacherOutputs:
    """A crowd-model run's outputs as a KD-Crowd teacher's (``metrics, out`` from
    :func:`run_on_dataset` with ``cfg``): what a ``kdcrowd`` run over this crowd model,
    trained with the same data, seed and settings, takes from its teacher, computed as it
    computes them, with the run's metrics and its :func:`teacher_fingerprint_of`."""
    if cfg.method not in _CROWD_MODEL_REGISTRY:
        raise ValueError(f"teacher outputs are a crowd model's; method '{cfg.method}' is not one")
    if out.data is None or out.dataset is None:
        raise ValueError("teacher_outputs_of takes the output of run_on_dataset (it records the data it trained on)")
    ds, data = out.dataset, out.data
    train = replace(cfg.train, seed=cfg.seed)
    w, l = padded_annotations(require_annotations(ds, cfg.method), data.device)
    proba, post, transitions, val = teacher_predictions(out.module.model, out.module, out.fit, data, w, l, train)
    return TeacherOutputs(proba.cpu().numpy(), post.cpu().numpy(), transitions, val, teacher_fingerprint_of(ds, cfg), metrics)


def moot_training_settings(ds: Any, data: DeviceData, cfg: RunConfig, options: Any, teacher_given: bool) -> dict[str, tuple[str, str]]:
    """The training settings that change nothing in this run, as
    :func:`~kdcrowd.framework.moot_settings` gives KD-Crowd's (``{key: (when, why)}``, named
    the door's way; :func:`kdcrowd.config.warn_moot` warns of those given): test-time
    augmentation of feature rows (frozen image features included), or ``tta`` flip without
    flips; the images' training augmentation (``augment``, ``flip``, ``flip_schedule``,
    ``crop_padding``) on feature rows, ``crop_padding`` and ``flip_schedule`` without the
    augmentation (or its flips), ``flip`` off where nothing is mirrored anyway;
    ``label_smoothing`` where the method trains on no fixed hard targets (soft targets, a
    crowd model, KD-Crowd); ``worker_lr_scale`` where no crowd model trains; ``gold_weight``
    without gold questions, or where no crowd model trains (the other methods take the gold
    labels as their targets)."""
    t = cfg.train
    out: dict[str, tuple[str, str]] = {}
    if not data.is_image:  # the training augmentation crops and mirrors images trained on as pixels
        for key in ("augment", "flip", "flip_schedule", "crop_padding"):
            out[key] = ("on feature rows", "it is a setting of the images' training augmentation (it applies to images trained on as pixels)")
    else:
        if not t.augment:
            out["crop_padding"] = (f"with {_setting('augment', False)}", f"it is a setting of the training augmentation, which {_setting('augment', False)} leaves out (use {_setting('augment', True)})")
        if not (t.augment and t.flip):
            off, on = (_setting("augment", False), _setting("augment", True)) if not t.augment else (_setting("flip", False), _setting("flip", True))
            out["flip_schedule"] = (f"with {off}", f"it orders the training augmentation's mirror images, which {off} leaves out (use {on})")
        if not t.augment and t.tta == "none":
            out["flip"] = (f"with {_setting('augment', False)} and {_setting('tta', 'none')}", "it leaves out the mirror images of the training augmentation and of test-time "
                           f"augmentation, which are both off (use {_setting('augment', True)}, or {_setting('tta', 'flip')})")
    if not data.is_image:
        out["tta"] = ("on feature rows", "its views are mirrored or shifted images (it applies to images trained on as pixels)")
    elif t.tta == "flip" and not t.flip:
        out["tta"] = (f"with {_setting('flip', False)}", f"its other view is the mirror image, which {_setting('flip', False)} "
                      f"leaves out (use {_setting('tta', 'flip-translate')} for the shifted view, or {_setting('flip', True)})")
    if cfg.method == "kdcrowd":  # its teacher trains here, or its stage 2 does
        crowd, none = not teacher_given or options.stages == 2, f"this KD-Crowd run trains no crowd model (its teacher is given trained, and {_setting('stages', 1)} has no stage 2)"
    else:
        crowd, none = cfg.method in _CROWD_MODEL_REGISTRY, f"{_setting('method', cfg.method)} trains no crowd model (a crowd-model method such as maxmig does, or kdcrowd)"
    with_method = f"with {_setting('method', cfg.method)}"
    if cfg.method not in HARD_TARGET_METHODS:
        hard = cfg.method.removesuffix("-soft")
        if hard != cfg.method and hard in HARD_TARGET_METHODS:
            why = f"{_setting('method', cfg.method)} trains on soft targets, already distributions (use {_setting('method', hard)})"
        else:
            why = ("KD-Crowd's stages keep their own losses" if cfg.method == "kdcrowd" else f"{_setting('method', cfg.method)} trains a crowd model, whose loss is its own") \
                + " (it applies to clean and the aggregate-then-train methods on hard labels, such as mv or ds)"
        out["label_smoothing"] = (with_method, f"it smooths the cross-entropy on fixed hard targets, and {why}")
    if not crowd:
        out["worker_lr_scale"] = (with_method, f"it scales the learning rate of a crowd model's worker parameters, and {none}")
    gold = getattr(ds, "gold", None)
    weighs = "it weighs the classifier's cross-entropy on the gold questions' known labels"
    if gold is None or not (np.asarray(gold) >= 0).any():
        out["gold_weight"] = ("without gold questions", f"{weighs}, and these items have none (give gold questions)")
    elif not crowd:
        out["gold_weight"] = (with_method, f"{weighs} in a crowd model's loss, and {none}; the method's training targets take the gold labels as they are")
    return out


def run_on_dataset(
    ds: Any, cfg: RunConfig, pretrained_teacher: tuple[nn.Module, FitResult] | None = None, teacher_outputs: TeacherOutputs | None = None
) -> tuple[dict[str, Any], MethodOutput]:
    """Run ``cfg.method`` on an already loaded data set; returns (metrics, method output).

    ``pretrained_teacher`` (crowd model, fit result), for ``kdcrowd`` only, reuses a teacher
    trained earlier (e.g. by a ``maxmig`` run on the same data and seed) instead of
    training a new one, so variants are compared over the same teacher.

    ``teacher_outputs``, for ``kdcrowd`` only, takes a teacher's saved outputs instead
    (:func:`teacher_outputs_of`, in another process): refused, naming what differs, unless
    they are of the teacher this run would train (:func:`teacher_fingerprint_of`). The
    ``teacher`` stage of the metrics is then the teacher run's evaluation.
    """
    method = method_function(cfg.method)
    resolved = method_options(cfg.method, cfg.options)  # refuse unknown options before any data is moved
    if cfg.train.seed != cfg.seed:
        cfg = replace(cfg, train=replace(cfg.train, seed=cfg.seed))
    if teacher_outputs is not None:
        if cfg.method != "kdcrowd":
            raise ValueError("teacher_outputs are only used by the kdcrowd method")
        if pretrained_teacher is not None:
            raise ValueError("give a pretrained_teacher or teacher_outputs, not both")
        teacher_outputs.check(teacher_fingerprint_of(ds, cfg))
    device = resolve_device(cfg.train.device, distributed=cfg.train.distributed or None)
    t0 = time.perf_counter()
    data = DeviceData.from_dataset(ds, device)
    t_data = time.perf_counter() - t0
    warn_moot(cfg.train, moot_training_settings(ds, data, cfg, resolved, teacher_given=pretrained_teacher is not None or teacher_outputs is not None), stacklevel=2)
    if pretrained_teacher is not None:
        if cfg.method != "kdcrowd":
            raise ValueError("pretrained_teacher is only used by the kdcrowd method")
        out = _kdcrowd(ds, data, cfg, pretrained=pretrained_teacher)
    elif teacher_outputs is not None:
        out = _kdcrowd(ds, data, cfg, teacher_outputs=teacher_outputs)
    else:
        out = method(ds, data, cfg)
    t_eval = time.perf_counter()
    metrics: dict[str, Any] = {
        "method": cfg.method,
        "dataset": ds.name,
        "workers": cfg.workers,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "versions": versions(),
        "device": device_name(device),
    }
    metrics.update(out.evaluation if out.evaluation is not None else evaluate_output(out, ds, data, cfg.train))
    metrics.update(out.extra)
    metrics["history"] = out.fit.history
    end = time.perf_counter()
    # a resumed run's stages count the training their checkpoints recorded (earlier processes'),
    # and so does its total, so that the parts of its timings add up to it
    stages = metrics.get("stages") or {}
    metrics["resumed_seconds"] = sum(float(r.get("resumed_seconds") or 0.0) for r in stages.values()) if stages else out.fit.resumed_seconds
    metrics["seconds"] = end - t0 + metrics["resumed_seconds"]
    metrics["train_seconds"] = out.fit.seconds
    metrics["timings"] = run_timings(metrics, out.fit, t_data, end - t_eval)
    out.dataset, out.data = ds, data
    return metrics, out


#: The parts of a run's ``timings`` (``metrics.json``), in order; see :func:`run_timings`.
TIMING_PARTS = ("startup", "data_preparation", "reference_labels", "setup", "training", "evaluation", "checkpointing", "other", "report", "writing")


def run_timings(metrics: dict[str, Any], fit_result: FitResult, data_seconds: float, final_eval_seconds: float) -> dict[str, float]:
    """Where the ``seconds`` of :func:`run_on_dataset` went, summed over the trained stages:

    * ``data_preparation``: the data set placed on the device (:class:`DeviceData`);
    * ``setup``: each stage's optimiser and schedule (the first imports ``torch._dynamo``);
    * ``training``: the optimisation steps (:attr:`FitResult.timings`);
    * ``evaluation``: the per-epoch validation and callbacks (memorization), and the
      evaluation of every trained predictor after its training;
    * ``checkpointing``: the checkpoints (``checkpoint_dir``; ``checkpoint_interval``);
    * ``other``: the rest (models built, aggregated targets, a teacher's labels for the
      student, ...).

    The doors add ``startup`` (process start to the command's start: the imports),
    more ``data_preparation`` (reading files), ``reference_labels`` (the estimator's
    Dawid–Skene stand-in truth), ``report``, ``writing`` and ``wall`` (process start to
    ``metrics.json`` written); the parts then add up to ``wall``. A run resumed from
    checkpoints counts in its parts, in ``seconds`` and in ``wall`` the training time its
    checkpoints recorded (``resumed_seconds``: earlier processes' setup, training, evaluation
    and checkpointing; not their start-up or data preparation)."""
    stages = metrics.get("stages") or {}
    parts = [rec.get("timings") or {} for rec in stages.values()] if stages else [dict(fit_result.timings)]
    total = {k: sum(float(p.get(k, 0.0)) for p in parts) for k in LOOP_TIMINGS}
    total["evaluation"] += sum(float(p.get("final_evaluation", 0.0)) for p in parts) + final_eval_seconds
    out = {"data_preparation": data_seconds, **total}
    out["other"] = max(0.0, float(metrics["seconds"]) - sum(out.values()))
    return out


def close_timings(timings: dict[str, float], since: float, resumed: float = 0.0) -> dict[str, float]:
    """A command's ``timings`` for ``metrics.json``, in the order of :data:`TIMING_PARTS`,
    with ``wall`` (``since``, a :func:`time.perf_counter` time: the process's start for a
    command run as a process, to now) and ``other`` grown by what no part counted (option
    parsing, printing, ...), so that the parts add up to ``wall``. ``metrics.json`` itself
    is written after ``wall``. ``resumed``: the seconds of earlier processes that the parts
    count (a resumed run's ``resumed_seconds``), added to ``wall``."""
    wall = time.perf_counter() - since + resumed
    out = {k: float(timings.get(k, 0.0)) for k in TIMING_PARTS}
    out.update({k: float(v) for k, v in timings.items() if k not in out})
    out["other"] = max(0.0, out["other"] + wall - sum(out.values()))
    out["wall"] = wall
    return out


def run(cfg: RunConfig, root: str | None = None) -> tuple[dict[str, Any], MethodOutput]:
    """Load ``cfg.dataset`` (with simulated workers if asked) and run ``cfg.method`` on it."""
    from .data.datasets import load_dataset

    t = time.perf_counter()
    ds = load_dataset(cfg.dataset, root=root, workers=cfg.workers, seed=cfg.seed, **cfg.dataset_options)
    t = time.perf_counter() - t
    metrics, out = run_on_dataset(ds, cfg)
    metrics["timings"]["data_preparation"] += t  # the files read (and workers simulated)
    return metrics, out
