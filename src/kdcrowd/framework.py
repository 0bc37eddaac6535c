"""The KD-Crowd framework (Li, Zheng, Shi, Huang, Chen; Front. Comput. Sci. 2025,
DOI 10.1007/s11704-023-3578-7): a transition-matrix crowd model teaches a noise-model-free
robust student, then the roles switch.

* Stage 0 — teacher: a crowd model (CrowdLayer, Max-MIG, CoNAL, or any module with the
  crowd-model contract) trained on the annotations; its true-label predictions q on the
  training items (classifier output, or the annotation-aware posterior).
* Stage 1 — student: a fresh network trained on argmax q as noisy labels with a robust
  technique, plus ``lambda1 * L_KD(S(x), q)``; refined predictions r = S(x).
* Stage 2 — roles switched: the crowd model retrained on the annotations with
  ``lambda2 * L_KD(f(x), r)``; its matrices are the refined worker-expertise estimates.

Stage 0 may be skipped: ``fit(..., pretrained=)`` reuses a trained teacher module, and
``fit(..., teacher_outputs=)`` takes a teacher's saved outputs
(:class:`~kdcrowd.teacher_outputs.TeacherOutputs`: its predictions on the training items,
its matrices, its best validation accuracy), so the teacher may be trained in another process.

With gold questions (``ds.gold``, :mod:`kdcrowd.data.gold`) the teacher and stage 2 add
the classifier's cross-entropy on the gold items (``TrainConfig.gold_weight``) and the
student's targets q of the gold items are their known one-hot labels.

:class:`KDCrowd` composes the pieces; a new teacher or student needs no change here.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from .checkpoint import module_digest
from .config import ConfigError, _name, _setting, bounded, check_fields, warn_moot
from .data.gold import apply_gold
from .evaluate import Callback, MethodOutput, best_val_accuracy, standard_callbacks, truth_accuracy
from .losses import DEFAULT_TV_TEMPERATURE
from .models import CROWD_MODELS
from .models.backbones import build_backbone
from .models.base import crowd_model_spec
from .objectives import (
    Ensemble,
    KD_LOSSES,
    CrowdObjective,
    KDStage2Objective,
    build_kd_loss,
    crowd_outputs,
    gold_targets,
    make_crowd_model,
    padded_annotations,
)
from .students import STUDENTS, Student, StudentObjective, build_student
from .teacher_outputs import TeacherOutputs, teacher_predictions
from .training import LOOP_TIMINGS, DeviceData, EpochLog, FitResult, TrainConfig, fit, predict_proba, seeded

__all__ = ["KDCrowd", "KDStage2Objective", "build_kd_loss", "KD_LOSSES", "StageRecorder", "NO_CHECKPOINTS", "moot_settings"]

KDLossName = Literal["mig-kl", "mig-pearson", "mig-js", "mig-tv", "mig-rkl", "mig-hellinger", "kl", "none"]


def stage_seed(seed: int, stage: int) -> int:
    """The seed of KD-Crowd's stage ``stage`` (0 the teacher, 1 the student, 2 stage 2) in a
    run of seed ``seed``: ``seed + stage``, wrapped below 2**32 (a seed's bound), so that
    every seed a run takes gives its stages a seed."""
    return (int(seed) + stage) % 2**32


class StageRecorder(Protocol):
    """Where the stages checkpoint (:class:`kdcrowd.checkpoint.StageCheckpoints`)."""

    def train_config(self, stage: str, train: TrainConfig) -> TrainConfig: ...
    def finish(self, stage: str) -> None: ...


class _NoCheckpoints:
    def train_config(self, stage: str, train: TrainConfig) -> TrainConfig:
        return train

    def finish(self, stage: str) -> None:
        return None


#: Stages that checkpoint nowhere.
NO_CHECKPOINTS: StageRecorder = _NoCheckpoints()


#: KD-Crowd's ensembles (outputs that train nothing) and the stages they average.
ENSEMBLE_MEMBERS: dict[str, tuple[str, ...]] = {"ensemble": ("student", "stage2"), "ensemble-all": ("teacher", "student", "stage2")}


def moot_settings(stages: Any, kd: Any) -> dict[str, tuple[str, str]]:
    """KD-Crowd's settings that change nothing with ``stages`` and the distillation loss
    ``kd``, each with the setting that makes it so (``with stages=1``) and why (what would
    make it take effect), named the door's way (:func:`kdcrowd.config.warn_moot`): stage 2's
    settings with one stage, the distillation weights without a distillation loss, a loss's own setting with another loss. :meth:`KDCrowd.fit` warns of
    those given other values than their defaults, the head recipe leaves them at their
    defaults (:func:`kdcrowd.doors.apply_head_recipe`), and a checkpointed run compares them
    at their defaults (a run started with one resumes without it, and the other way round)."""
    out: dict[str, tuple[str, str]] = {}
    if stages == 1:
        for key in ("lambda2", "stage2", "stage2_init"):
            out[key] = (f"with {_setting('stages', 1)}", f"it is a setting of stage 2 (the role switch), which runs with {_setting('stages', 2)}")
    kd = str(kd)
    if kd == "none":
        for key, stage in (("lambda1", 1), ("lambda2", 2)):
            out.setdefault(key, (f"with {_setting('kd', 'none')}", f"it weighs the distillation term of stage {stage}, which {_setting('kd', 'none')} leaves out (choose a distillation loss: mig-<f> or kl)"))
    for key, loss, used in (("kd_temperature", "kl", kd == "kl"), ("kd_prior", "mig-<f>", kd.startswith("mig-")), ("tv_temperature", "mig-tv", kd == "mig-tv")):
        if not used:
            out[key] = (f"with {_setting('kd', kd)}", f"it is a setting of the distillation loss {loss}")
    return out


@dataclass
class KDCrowd:
    """KD-Crowd over any teacher and any student: the framework's typed configuration and
    its stages (:meth:`fit`).

    Every field is checked when the object is made (one :class:`~kdcrowd.config.ConfigError`
    naming the setting); the doors take their KD-Crowd options, names and defaults from
    these fields.
    """

    teacher: str | nn.Module = "maxmig"
    """Crowd-model name (a key of :data:`kdcrowd.models.CROWD_MODELS`) or a crowd-model
    module. Max-MIG is the default: the practitioner runs of docs/RESULTS.md §6 (LabelMe,
    CIFAR-10N) use it, and on the simulated digits crowds it is the teacher that recovers
    the true labels where majority vote fails."""
    teacher_options: dict[str, Any] = field(default_factory=dict)
    """Options of a named teacher's crowd model (its options dataclass, e.g. ``mig_f`` for
    ``maxmig``); stage 2 builds its model with the same options."""
    student: str | type[Student] = "elr"
    """Robust student name (``elr``, ``coteaching``, ``gce``, ``sce``, ``mixup``, ``ce``) or a
    :class:`~kdcrowd.students.Student` subclass. ELR is the default:
    best or tied on validation accuracy on CIFAR-10N, LabelMe and synthetic digits, with one
    network where co-teaching trains two (docs/RESULTS.md §A4, "Defaults and why"); the head
    recipe for frozen image features (head_recipe) uses co-teaching, chosen there on LabelMe's
    validation images (docs/RESULTS.md §7h)."""
    student_params: dict[str, Any] = field(default_factory=dict)
    """Hyper-parameters of the student (e.g. ``q`` for GCE, ``forget_rate`` for co-teaching)."""
    kd: KDLossName = field(default="mig-kl", metadata={"label": "distillation loss"})
    """Distillation loss: ``mig-<f>``, ``kl`` or ``none``."""
    kd_prior: Literal["uniform", "teacher"] = "uniform"
    """Class prior of the MIG^f distillation loss: ``uniform``, or ``teacher``: the mean
    prediction of the distilled model over the training items (the prior of MIG^f in the KD-Crowd paper; the teacher's q in
    stage 1, the student's r in stage 2)."""
    kd_temperature: float = bounded(1.0, gt=0.0)
    """Temperature of the KL distillation loss."""
    tv_temperature: float = bounded(DEFAULT_TV_TEMPERATURE, gt=0.0)
    """Temperature of the smooth surrogate of MIG^f-TV's sign (distillation loss ``mig-tv``)."""
    lambda1: float = bounded(1.0, ge=0.0)
    """Weight of the stage-1 distillation term."""
    lambda2: float = bounded(1.0, ge=0.0)
    """Weight of the stage-2 distillation term."""
    teacher_output: Literal["classifier", "posterior"] = "classifier"
    """Teacher predictions q: the ``classifier`` f(x) or the annotation-aware ``posterior``."""
    stage2: Literal["reinit", "finetune"] = "reinit"
    """Stage-2 crowd model: ``reinit`` (fresh) or ``finetune`` (from the teacher)."""
    stage2_init: Literal["annotations", "student"] = "annotations"
    """How a re-initialised stage-2 model initialises its worker parameters (models that
    initialise them from label statistics: Max-MIG):
    ``annotations`` (the model's own rule, majority vote) or ``student`` (each worker's
    confusion against the student's refined predictions r, the labels stage 2 is
    "supervised by"; checked before any training)."""
    stages: Literal[1, 2] = 2
    """1: teacher → student; 2: and the role switch."""
    final: Literal["best-val", "stage2", "student", "ensemble", "ensemble-all"] = "best-val"
    """Final predictor: ``stage2``, ``student``, ``best-val`` (higher validation accuracy of
    the two; stage 2 where there is no validation data, or on a tie; the student with one
    stage), ``ensemble``: the student and stage 2 averaged (the mean softmax of their
    networks, each network once, :class:`~kdcrowd.objectives.Ensemble`: two networks predict
    where the others use one, three with a co-teaching student), or ``ensemble-all``: the
    teacher, the student and stage 2 averaged (every network KD-Crowd trained; it needs the
    teacher's module, so not with a teacher's saved outputs)."""
    backbone: str = "auto"
    """Backbone of the teacher, the student and stage 2 (:func:`~kdcrowd.models.backbones.build_backbone`)."""

    def __post_init__(self) -> None:
        check_fields(self)  # stages among 1, 2 (its Literal) included
        if self.stages == 1 and self.final in ("stage2", *ENSEMBLE_MEMBERS):
            raise ConfigError(f"{_setting('final', self.final)} needs {_setting('stages', 2)}: with {_setting('stages', 1)} the student is the final predictor")
        if self.stage2_init == "student" and self.stage2 != "reinit":
            raise ConfigError(f"{_setting('stage2_init', 'student')} initialises a re-initialised stage 2; it has no effect with {_setting('stage2', 'finetune')} (use {_setting('stage2', 'reinit')})")
        if isinstance(self.student, str) and self.student not in STUDENTS:
            from .config import closest

            near = closest(self.student, STUDENTS)
            raise ConfigError(f"{_name('student')}: unknown student '{self.student}'; " + (f"did you mean '{near}'? " if near else "") + f"choose one of {', '.join(sorted(STUDENTS))}")
        if not isinstance(self.student_params, Mapping):
            raise ConfigError(f"student_params must be a mapping of the student's parameters; got {self.student_params!r}")
        self._check_student_params()
        if isinstance(self.teacher, str):
            try:
                spec = crowd_model_spec(self.teacher)
            except ConfigError as e:  # an unknown name (with its closest names), naming this option
                raise ConfigError(f"{_name('teacher')}: {e}") from None
            if not isinstance(self.teacher_options, Mapping):
                raise ConfigError(f"teacher_options must be a mapping of the teacher's options; got {self.teacher_options!r}")
            spec.options(self.teacher_options)
        elif self.teacher_options:
            raise ConfigError("teacher_options configure a teacher given by name; a teacher module is used as it is")
        if self.stages == 2:  # fit checks again (_check): a teacher module is checked as soon as it is given
            self._check_stage2_init(CROWD_MODELS[self.teacher].cls if isinstance(self.teacher, str) else type(self.teacher))

    def _check_student_params(self) -> None:
        """``student_params`` by the student's parameters (the arguments of its class after
        the backbones and sizes) and, for a named student, by building it on a stand-in
        network, so that a bad value is refused before the teacher trains."""
        cls = STUDENTS[self.student] if isinstance(self.student, str) else self.student
        name = self.student if isinstance(self.student, str) else cls.__name__
        params = inspect.signature(cls.__init__).parameters
        taken = [k for k, p in params.items() if k not in ("self", "backbone", "n_items", "n_classes", "backbone_b") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        open_ended = any(p.kind == p.VAR_KEYWORD for p in params.values())
        for k in self.student_params:
            if k not in taken and not open_ended:
                raise ConfigError(f"student_params of student {name!r}: unknown parameter {k!r}; it takes {', '.join(taken) or 'none'}")
        if isinstance(self.student, str):
            try:
                build_student(self.student, nn.Identity, 1, 2, **self.student_params)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"student_params of student {name!r}: {e}") from None

    def _check_stage2_init(self, stage2_cls: type) -> None:
        """Stage 2 initialised from the student needs a crowd model that initialises its
        workers from label statistics."""
        if self.stage2 == "reinit" and self.stage2_init == "student" and not getattr(stage2_cls, "initialises_from_labels", False):
            raise ConfigError(f"{_setting('stage2_init', 'student')} needs a crowd model that initialises its workers from label statistics (Max-MIG); {stage2_cls.__name__} does not (use {_setting('stage2_init', 'annotations')})")

    def _check(self) -> None:
        """Check again (the fields may have been changed since the object was made)."""
        self.__post_init__()

    def stage_names(self, pretrained: Any = None, teacher_outputs: TeacherOutputs | None = None) -> list[str]:
        """The stages that train, in order (a reused pre-trained teacher, or a teacher's
        saved outputs, is not one)."""
        reused = pretrained is not None or teacher_outputs is not None
        return ([] if reused else ["teacher"]) + ["student"] + (["stage2"] if self.stages == 2 else [])

    def _kd_loss(self, target: torch.Tensor) -> nn.Module | None:
        """The distillation loss towards ``target`` (N, K) (its mean is the ``teacher`` prior)."""
        prior: Any = target.float().mean(0) if self.kd_prior == "teacher" else "uniform"
        return build_kd_loss(self.kd, self.kd_temperature, prior=prior, tv_temperature=self.tv_temperature)

    def fit(
        self,
        ds: Any,
        data: DeviceData,
        train: TrainConfig,
        callbacks: Callable[[str, np.ndarray | None], list[Callback]] | None = None,
        checkpoints: StageRecorder = NO_CHECKPOINTS,
        pretrained: tuple[nn.Module, FitResult | None] | None = None,
        teacher_outputs: TeacherOutputs | None = None,
    ) -> tuple[dict[str, MethodOutput], str]:
        """Run the stages on ``ds`` (already on ``data.device``); returns (outputs per stage,
        final stage name). With two stages the outputs also hold ``"ensemble"``, the student
        and stage 2 averaged, and, where the teacher's module is here (not with
        ``teacher_outputs``), ``"ensemble-all"``, the teacher, the student and stage 2
        averaged (neither trains anything). Nothing is evaluated here: the runner evaluates
        each output.

        ``train``: the optimisation settings of every stage (stage ``s`` trains with seed
        ``stage_seed(train.seed, s)``, ``train.seed + s`` below 2**32). ``callbacks(stage, pseudo)``: the per-epoch callbacks of a
        stage (``pseudo``: the student's hard training labels, for its memorization);
        default: the memorization callbacks of :func:`~kdcrowd.evaluate.standard_callbacks`.
        ``checkpoints``: where each stage checkpoints
        (:class:`~kdcrowd.checkpoint.StageCheckpoints`; a second call with the same
        settings reuses the finished stages and continues the interrupted one).

        ``pretrained``: an already trained teacher (crowd model, its fit result or ``None``);
        stage 0 then reuses a copy instead of training one, so several KD-Crowd variants can
        share one teacher. A re-initialised stage 2 needs a fresh model, so with a pretrained
        teacher ``teacher`` must be a name, or ``stage2`` must be ``finetune``.

        ``teacher_outputs``: a teacher's saved outputs
        (:class:`~kdcrowd.teacher_outputs.TeacherOutputs`) instead of a teacher: stage 0
        neither trains nor predicts, and the student and stage 2 give the numbers they give
        over the teacher module those outputs came from. There is then no ``"teacher"``
        output (no module to evaluate: the run that trained the teacher evaluated it), and
        stage 2 cannot fine-tune the teacher (``stage2="finetune"`` is refused).
        """
        self._check()
        # a setting that changes nothing with the others (a distillation setting of another loss than ``kd``, a stage-2
        # setting with one stage, a distillation weight without a distillation loss): said once a run, before anything
        # trains (a warning, not an error, so that a run started with it before resumes)
        warn_moot(self, moot_settings(self.stages, self.kd))
        if pretrained is not None and not isinstance(self.teacher, str) and self.stage2 == "reinit":
            raise ValueError("a pre-trained teacher module cannot be re-initialised for stage 2: give the teacher by name or use stage2='finetune'")
        if teacher_outputs is not None:
            if pretrained is not None:
                raise ValueError("give the teacher as a module (pretrained=) or as its saved outputs (teacher_outputs=), not both")
            if self.stages == 2 and self.stage2 == "finetune":
                raise ValueError("stage2='finetune' fine-tunes the teacher module, and saved teacher outputs hold its predictions, not the module: "
                                 "use stage2='reinit' (a fresh crowd model, the default), or train the teacher in this run")
            if self.final == "ensemble-all":
                raise ValueError("final='ensemble-all' averages the teacher's network too, and saved teacher outputs hold its predictions, not the module: "
                                 "use final='ensemble' (the student and stage 2), or train the teacher in this run")
        ann = ds.annotations
        if ann is None:
            raise ValueError(f"KD-Crowd needs crowd annotations; data set '{ds.name}' has none (use --workers)")
        if teacher_outputs is not None:
            got, want = (teacher_outputs.n_train, teacher_outputs.n_classes, teacher_outputs.n_workers), (data.n_train, ds.n_classes, ann.n_workers)
            if got != want:
                raise ValueError(f"the teacher outputs are of {got[0]} training items, {got[1]} classes and {got[2]} workers; data set '{ds.name}' has {want[0]}, {want[1]} and {want[2]}")
        stage_callbacks = callbacks or (lambda stage, pseudo: standard_callbacks(ds, data, train, stage, pseudo))
        w, l = padded_annotations(ann, data.device)
        gold = gold_targets(ds, data.device)  # gold questions: (N,) known classes, -1 unknown; or None
        anchored = {"gold": gold, "gold_weight": train.gold_weight}
        outs: dict[str, MethodOutput] = {}

        # Stage 0: the teacher. A user's module is copied, so that it stays untrained: a
        # second fit starts from the same weights, and stage 2 re-initialises from it.
        tname = self.teacher if isinstance(self.teacher, str) else type(self.teacher).__name__
        teacher: nn.Module | None = None
        if teacher_outputs is not None:  # what the teacher gave, as it gave it (float32, exact)
            proba, post = (torch.as_tensor(a, device=data.device) for a in (teacher_outputs.proba, teacher_outputs.posterior))
            teacher_val = teacher_outputs.best_val_accuracy
        else:
            if pretrained is not None:
                teacher = copy.deepcopy(pretrained[0]).to(data.device)
            elif isinstance(self.teacher, str):
                with seeded(train.seed):  # the same teacher as the plain crowd-model run of this seed
                    teacher = make_crowd_model(self.teacher, ds, data, self.backbone, self.teacher_options, padded=(w, l))
            else:
                teacher = copy.deepcopy(self.teacher).to(data.device)
            t_obj = CrowdObjective(teacher, w, l, worker_lr_scale=train.worker_lr_scale, **anchored)
            if pretrained is not None:
                t_fit = pretrained[1] if pretrained[1] is not None else EpochLog(t_obj, (), f"teacher {tname}").result(0.0, train)
            else:
                t_fit = fit(t_obj, data, checkpoints.train_config("teacher", train), stage_callbacks("teacher", None), desc=f"teacher {tname}")
                checkpoints.finish("teacher")
                t_obj.load_state_dict(t_fit.best_state, strict=False)
            proba, post, transitions, teacher_val = teacher_predictions(teacher, t_obj, t_fit, data, w, l, train)
        q = post if self.teacher_output == "posterior" else proba
        if teacher is not None:
            outs["teacher"] = MethodOutput(t_obj, t_fit, train_proba=q, transitions=transitions)

        # Stage 1: the robust student on the teacher's hard predictions, distilling q
        # (the known one-hot labels of the gold items).
        q = apply_gold(q, gold)
        hard = q.argmax(1)
        student_cls = STUDENTS[self.student] if isinstance(self.student, str) else self.student
        # a student may derive defaults from the teacher (co-teaching: its noise rate)
        params = {**student_cls.suggested_params(teacher_val, train.epochs), **self.student_params}
        make = lambda: build_backbone(self.backbone, data.input_shape, ds.n_classes)  # noqa: E731
        with seeded(stage_seed(train.seed, 1)):
            student: Student = build_student(self.student, make, data.n_train, ds.n_classes, **params).to(data.device)
        s_obj = StudentObjective(student, hard, q, self._kd_loss(q), self.lambda1)
        sname = self.student if isinstance(self.student, str) else self.student.__name__
        s_fit = fit(s_obj, data, checkpoints.train_config("student", replace(train, seed=stage_seed(train.seed, 1))), stage_callbacks("student", hard.cpu().numpy()), desc=f"student {sname}")
        checkpoints.finish("student")
        s_obj.load_state_dict(s_fit.best_state, strict=False)
        refined = predict_proba(s_obj, data, data.x_train, train)
        outs["student"] = MethodOutput(s_obj, s_fit, train_proba=refined, extra={"teacher_label_accuracy": truth_accuracy(q.cpu().numpy(), ds)})
        if self.stages == 1:
            return outs, "student"

        # Stage 2: roles switched — the crowd model again, supervised by the student.
        if self.stage2 == "finetune":
            assert teacher is not None  # refused above with teacher outputs
            model = copy.deepcopy(teacher)
        else:
            soft = refined if self.stage2_init == "student" else None
            if isinstance(self.teacher, str):
                with seeded(stage_seed(train.seed, 2)):
                    model = make_crowd_model(self.teacher, ds, data, self.backbone, self.teacher_options, padded=(w, l), soft=soft)
            else:
                model = copy.deepcopy(self.teacher).to(data.device)
                if soft is not None:
                    model.init_from_annotations(w, l, soft=soft)
        c_obj = KDStage2Objective(model, w, l, refined, self._kd_loss(refined), self.lambda2, worker_lr_scale=train.worker_lr_scale, **anchored)
        c_fit = fit(c_obj, data, checkpoints.train_config("stage2", replace(train, seed=stage_seed(train.seed, 2))), stage_callbacks("stage2", None), desc=f"stage 2 {tname}")
        checkpoints.finish("stage2")
        c_obj.load_state_dict(c_fit.best_state, strict=False)
        c_proba, c_post = crowd_outputs(model, data, w, l, train)
        outs["stage2"] = MethodOutput(c_obj, c_fit, train_proba=c_proba, transitions=model.transition_matrices().detach().float().cpu().numpy())
        if ds.y_train is not None:
            outs["stage2"].extra["train_posterior_accuracy"] = truth_accuracy(c_post.cpu().numpy(), ds)
        # The ensembles (ENSEMBLE_MEMBERS): train nothing; evaluated like the stages (their
        # members' last-epoch states, then their validation-selected ones), whatever ``final``.
        # Each member: its objective, fit and training-item predictions, just predicted in the
        # states they are in (the teacher's classifier, as it predicts); the teacher only where
        # its module is here.
        parts = {"student": (s_obj, s_fit, refined), "stage2": (c_obj, c_fit, c_proba)}
        if teacher is not None:
            parts["teacher"] = (t_obj, t_fit, proba)
        for name, members in ENSEMBLE_MEMBERS.items():
            if all(m in parts for m in members):
                objs, fits, probas = zip(*(parts[m] for m in members))
                ens = Ensemble(list(objs))
                e_fit = FitResult(history=[], best_epoch=None, best_state=Ensemble.state([f.best_state for f in fits]),
                                  final_state=Ensemble.state([f.final_state for f in fits]), seconds=0.0, timings=dict.fromkeys(LOOP_TIMINGS, 0.0))
                outs[name] = MethodOutput(ens, e_fit, train_proba=ens.average(list(probas)), transitions=outs["stage2"].transitions)
        final = self.final
        if final == "best-val":
            sv, cv = best_val_accuracy(s_fit, s_obj, data, train), best_val_accuracy(c_fit, c_obj, data, train)
            final = "student" if (sv is not None and cv is not None and sv > cv) else "stage2"
        return outs, final

    def identity(self, pretrained: tuple[nn.Module, FitResult | None] | None = None, teacher_outputs: TeacherOutputs | None = None) -> dict[str, Any]:
        """What the stages depend on beyond the training settings: this framework's settings
        (a module or class by its type name and, for a teacher module, its initial state) and
        a pre-trained teacher's state, or a teacher's saved outputs, for
        :class:`~kdcrowd.checkpoint.StageCheckpoints`."""
        def plain(v: Any) -> Any:
            if isinstance(v, nn.Module):
                return {"module": type(v).__qualname__, "digest": module_digest(v)}
            if isinstance(v, type):
                return f"{v.__module__}.{v.__qualname__}"
            return v

        framework = {f.name: plain(getattr(self, f.name)) for f in fields(self)}
        out = {"framework": framework, "pretrained_teacher": None if pretrained is None else module_digest(pretrained[0])}
        if teacher_outputs is not None:  # a key only then: the folders of other runs keep their identity
            out["teacher_outputs"] = teacher_outputs.digest()
        return out
