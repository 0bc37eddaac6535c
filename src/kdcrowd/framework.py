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

:class:`KDCrowd` composes the pieces; a new teacher or student needs no change here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from . import metrics as M
from .losses import KLDistillation, MIGfDistillation
from .methods import (
    CrowdObjective,
    MethodOutput,
    RunConfig,
    StageCheckpoints,
    build_crowd_model,
    crowd_model_class,
    crowd_outputs,
    evaluate_output,
    module_digest,
    padded_annotations,
    standard_callbacks,
)
from .models.backbones import build_backbone
from .students import (
    STUDENTS,
    CoTeachingStudent,
    Student,
    StudentObjective,
    build_student,
)
from .training import (
    DeviceData,
    EpochLog,
    FitResult,
    fit,
    predict_proba,
    validation_accuracy,
)

__all__ = ["KDCrowd", "KDStage2Objective", "build_kd_loss", "run_kdcrowd", "KD_LOSSES"]

KD_LOSSES = ("mig-kl", "mig-pearson", "mig-js", "mig-tv", "mig-rkl", "mig-hellinger", "kl", "none")


def build_kd_loss(name: str, temperature: float = 1.0, prior: str = "uniform") -> nn.Module | None:
    """``mig-<f>`` → :class:`MIGfDistillation`, ``kl`` → :class:`KLDistillation`, ``none`` → None."""
    if name == "none":
        return None
    if name == "kl":
        return KLDistillation(temperature=temperature)
    if name.startswith("mig-"):
        return MIGfDistillation(f=name[4:], prior=prior)
    raise ValueError(f"unknown distillation loss '{name}'; choose one of {KD_LOSSES}")


class KDStage2Objective(CrowdObjective):
    """Stage 2: the crowd model's own loss plus ``lambda2 * kd(f(x), r)`` towards the student's predictions ``r``."""

    refined: torch.Tensor

    def __init__(self, model: nn.Module, workers: torch.Tensor, labels: torch.Tensor, refined: torch.Tensor, kd: nn.Module | None, lambda2: float, worker_lr_scale: float = 1.0) -> None:
        super().__init__(model, workers, labels, worker_lr_scale=worker_lr_scale)
        self.kd, self.lambda2 = kd, lambda2
        self.register_buffer("refined", refined, persistent=False)

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        loss, logits = self.model.crowd_loss(x, self.ann_workers[idx], self.ann_labels[idx])
        if self.kd is not None and self.lambda2 > 0:
            loss = loss + self.lambda2 * self.kd(logits.float(), self.refined[idx])
        return loss


@dataclass
class KDCrowd:
    """KD-Crowd over any teacher and any student.

    Call :meth:`fit` with a data set on a device; it returns one :class:`MethodOutput` per
    stage (``teacher``, ``student``, ``stage2``) and the name of the final predictor.
    """

    teacher: str | nn.Module = "crowdlayer-mw"
    """Crowd-model name (``crowdlayer-mw``, ``maxmig``, ``conal``, ...) or a crowd-model module."""
    student: str | type[Student] = "elr"
    """Robust student name (``elr``, ``coteaching``, ``gce``, ``sce``, ``ce``) or a
    :class:`~kdcrowd.students.Student` subclass. ELR is the default:
    best or tied on validation accuracy on CIFAR-10N, LabelMe and synthetic digits, with one
    network where co-teaching trains two (docs/RESULTS.md, "Choosing the defaults")."""
    kd: str = "mig-kl"
    """Distillation loss: ``mig-<f>``, ``kl`` or ``none``."""
    lambda1: float = 1.0
    """Weight of the stage-1 distillation term."""
    lambda2: float = 1.0
    """Weight of the stage-2 distillation term."""
    teacher_output: str = "classifier"
    """Teacher predictions q: the ``classifier`` f(x) or the annotation-aware ``posterior``."""
    stage2: str = "reinit"
    """Stage-2 crowd model: ``reinit`` (fresh) or ``finetune`` (from the teacher)."""
    stage2_init: str = "annotations"
    """How a re-initialised stage-2 model initialises its worker parameters (models that
    initialise them from label statistics, ``initialises_from_labels = True``, i.e. Max-MIG):
    ``annotations`` (the model's own rule, majority vote) or ``student`` (each worker's
    confusion against the student's refined predictions r, the labels stage 2 is
    "supervised by"; checked before any training)."""
    stages: int = 2
    """1: teacher → student; 2: and the role switch."""
    kd_temperature: float = 1.0
    """Temperature of the KL distillation loss."""
    student_params: dict[str, Any] = field(default_factory=dict)
    """Hyper-parameters of the student (e.g. ``q`` for GCE, ``forget_rate`` for co-teaching)."""
    final: str = "best-val"
    """Final predictor: ``stage2``, ``student``, or ``best-val`` (higher validation accuracy of the two)."""

    def _check(self) -> None:
        if self.stages not in (1, 2):
            raise ValueError(f"stages must be 1 or 2, got {self.stages}")
        if self.teacher_output not in ("classifier", "posterior"):
            raise ValueError(f"teacher_output must be 'classifier' or 'posterior', got '{self.teacher_output}'")
        if self.stage2 not in ("reinit", "finetune"):
            raise ValueError(f"stage2 must be 'reinit' or 'finetune', got '{self.stage2}'")
        if self.final not in ("stage2", "student", "best-val"):
            raise ValueError(f"final must be 'stage2', 'student' or 'best-val', got '{self.final}'")
        if self.stage2_init not in ("annotations", "student"):
            raise ValueError(f"stage2_init must be 'annotations' or 'student', got '{self.stage2_init}'")
        if self.stage2_init == "student" and self.stage2 != "reinit":
            raise ValueError("stage2_init='student' initialises a re-initialised stage 2; it has no effect with stage2='finetune' (use stage2='reinit')")
        if isinstance(self.student, str) and self.student not in STUDENTS:
            raise ValueError(f"unknown student '{self.student}'; choose one of {sorted(STUDENTS)}")

    def fit(self, ds: Any, data: DeviceData, cfg: RunConfig, pretrained: tuple[nn.Module, FitResult | None] | None = None) -> tuple[dict[str, MethodOutput], str]:
        """Run the stages on ``ds`` (already on ``data.device``); returns (outputs per stage, final stage name).

        ``pretrained``: an already trained teacher (crowd model, its fit result or ``None``);
        stage 0 then reuses a copy instead of training one, so several KD-Crowd variants can
        share one teacher. A re-initialised stage 2 needs a fresh model, so with a pretrained
        teacher ``teacher`` must be a name, or ``stage2`` must be ``finetune``.

        With ``cfg.checkpoint_dir`` each stage that trains checkpoints to its own file
        (``teacher.pt``, ``student.pt``, ``stage2.pt``; none for a pre-trained teacher) and
        ``state.json`` records the progress (:class:`~kdcrowd.methods.StageCheckpoints`); a
        second call with the same settings reuses the finished stages and continues the
        interrupted one. Every stage seeds the global generator before building its model
        and :func:`~kdcrowd.training.fit` restores every generator from the checkpoint, so
        the resumed result is the uninterrupted one.
        """
        self._check()
        if pretrained is not None and not isinstance(self.teacher, str) and self.stage2 == "reinit":
            raise ValueError("a pre-trained teacher module cannot be re-initialised for stage 2: give the teacher by name or use stage2='finetune'")
        ann = ds.annotations
        if ann is None:
            raise ValueError(f"KD-Crowd needs crowd annotations; data set '{ds.name}' has none (use --workers)")
        w, l = padded_annotations(ann, data.device)
        kd = build_kd_loss(self.kd, self.kd_temperature)
        outs: dict[str, MethodOutput] = {}
        stage_names = (["teacher"] if pretrained is None else []) + ["student"] + (["stage2"] if self.stages == 2 else [])
        ckpt = StageCheckpoints(cfg, ds, stage_names, identity=self._identity(pretrained) if cfg.checkpoint_dir else None)

        # Stage 0: the teacher. A user's module is copied, so that it stays untrained: a
        # second fit starts from the same weights, and stage 2 re-initialises from it.
        tname = self.teacher if isinstance(self.teacher, str) else type(self.teacher).__name__
        if pretrained is not None:
            teacher = copy.deepcopy(pretrained[0]).to(data.device)
        elif isinstance(self.teacher, str):
            torch.manual_seed(cfg.train.seed)  # the same teacher as the plain crowd-model run of this seed
            teacher = build_crowd_model(self.teacher, ds, data, cfg, padded=(w, l))
        else:
            teacher = copy.deepcopy(self.teacher).to(data.device)
        if self.stages == 2 and self.stage2 == "reinit" and self.stage2_init == "student":
            stage2_cls = crowd_model_class(self.teacher) if isinstance(self.teacher, str) else type(self.teacher)
            if not getattr(stage2_cls, "initialises_from_labels", False):
                raise ValueError(f"stage2_init='student' needs a crowd model that initialises its workers from label statistics (Max-MIG); {stage2_cls.__name__} does not (use stage2_init='annotations')")
        wlr = float(cfg.options.get("worker_lr_scale", 1.0))
        t_obj = CrowdObjective(teacher, w, l, worker_lr_scale=wlr)
        if pretrained is not None:
            t_fit = pretrained[1] if pretrained[1] is not None else EpochLog(t_obj, (), f"teacher {tname}").result(0.0, cfg.train)
        else:
            t_fit = fit(t_obj, data, ckpt.train_config("teacher", cfg.train), standard_callbacks(ds, data, cfg, "teacher"), desc=f"teacher {tname}")
            ckpt.finish("teacher")
            t_obj.load_state_dict(t_fit.best_state, strict=False)
        proba, post = crowd_outputs(teacher, data, w, l, cfg.train)
        q = post if self.teacher_output == "posterior" else proba
        outs["teacher"] = MethodOutput(t_obj, t_fit, train_proba=q, transitions=teacher.transition_matrices().detach().float().cpu().numpy())
        teacher_val = _best_val_accuracy(t_fit, t_obj, data, cfg)

        # Stage 1: the robust student on the teacher's hard predictions, distilling q.
        hard = q.argmax(1)
        params = dict(self.student_params)
        student_cls = STUDENTS[self.student] if isinstance(self.student, str) else self.student
        if isinstance(student_cls, type) and issubclass(student_cls, CoTeachingStudent):
            params.setdefault("forget_rate", float(np.clip(1.0 - teacher_val, 0.05, 0.5)) if teacher_val is not None else 0.2)
            params.setdefault("t_k", max(1, cfg.train.epochs // 4))
        make = lambda: build_backbone(cfg.backbone, data.input_shape, ds.n_classes)  # noqa: E731
        torch.manual_seed(cfg.train.seed + 1)
        student: Student = build_student(self.student, make, data.n_train, ds.n_classes, **params).to(data.device)
        s_obj = StudentObjective(student, hard, q, kd, self.lambda1)
        # one prediction pass per epoch records the memorization of the workers' labels and of the teacher's
        callbacks = standard_callbacks(ds, data, cfg, "student", pseudo=hard.cpu().numpy())
        sname = self.student if isinstance(self.student, str) else self.student.__name__
        s_fit = fit(s_obj, data, ckpt.train_config("student", replace(cfg.train, seed=cfg.train.seed + 1)), callbacks, desc=f"student {sname}")
        ckpt.finish("student")
        s_obj.load_state_dict(s_fit.best_state, strict=False)
        refined = predict_proba(s_obj, data, data.x_train, cfg.train)
        outs["student"] = MethodOutput(s_obj, s_fit, train_proba=refined, extra={"teacher_label_accuracy": None if ds.y_train is None else M.accuracy(q.cpu().numpy(), ds.y_train)})
        if self.stages == 1:
            return outs, "student"

        # Stage 2: roles switched — the crowd model again, supervised by the student.
        if self.stage2 == "finetune":
            model = copy.deepcopy(teacher)
        else:
            torch.manual_seed(cfg.train.seed + 2)
            soft = refined if self.stage2_init == "student" else None
            if isinstance(self.teacher, str):
                model = build_crowd_model(self.teacher, ds, data, cfg, padded=(w, l), soft=soft)
            else:
                model = copy.deepcopy(self.teacher).to(data.device)
                if soft is not None:
                    model.init_from_annotations(w, l, soft=soft)
        c_obj = KDStage2Objective(model, w, l, refined, kd, self.lambda2, worker_lr_scale=wlr)
        c_fit = fit(c_obj, data, ckpt.train_config("stage2", replace(cfg.train, seed=cfg.train.seed + 2)), standard_callbacks(ds, data, cfg, "stage2"), desc=f"stage 2 {tname}")
        ckpt.finish("stage2")
        c_obj.load_state_dict(c_fit.best_state, strict=False)
        c_proba, c_post = crowd_outputs(model, data, w, l, cfg.train)
        outs["stage2"] = MethodOutput(c_obj, c_fit, train_proba=c_proba, transitions=model.transition_matrices().detach().float().cpu().numpy())
        if ds.y_train is not None:
            outs["stage2"].extra["train_posterior_accuracy"] = M.accuracy(c_post.cpu().numpy(), ds.y_train)
        final = self.final
        if final == "best-val":
            sv, cv = _best_val_accuracy(s_fit, s_obj, data, cfg), _best_val_accuracy(c_fit, c_obj, data, cfg)
            final = "student" if (sv is not None and cv is not None and sv > cv) else "stage2"
        return outs, final

    def _identity(self, pretrained: tuple[nn.Module, FitResult | None] | None) -> dict[str, Any]:
        """What the stages depend on beyond the run configuration: this framework's settings
        (a module or class by its type name and, for a teacher module, its initial state) and
        a pre-trained teacher's state, for :class:`~kdcrowd.methods.StageCheckpoints`."""
        def plain(v: Any) -> Any:
            if isinstance(v, nn.Module):
                return {"module": type(v).__qualname__, "digest": module_digest(v)}
            if isinstance(v, type):
                return f"{v.__module__}.{v.__qualname__}"
            return v

        framework = {f.name: plain(getattr(self, f.name)) for f in fields(self)}
        return {"framework": framework, "pretrained_teacher": None if pretrained is None else module_digest(pretrained[0])}


def _best_val_accuracy(res: FitResult, module: nn.Module, data: DeviceData, cfg: RunConfig) -> float | None:
    """Validation accuracy of ``module`` in its validation-selected state: the one ``fit``
    recorded at ``res.best_epoch``; computed again only when the history has none (a
    module used without training)."""
    for record in res.history:
        if record.get("epoch") == res.best_epoch and record.get("val_accuracy") is not None:
            return float(record["val_accuracy"])
    acc = validation_accuracy(module, data, cfg.train)
    return None if acc is None else float(acc)


def run_kdcrowd(ds: Any, data: DeviceData, cfg: RunConfig, pretrained: tuple[nn.Module, FitResult] | None = None) -> MethodOutput:
    """The ``kdcrowd`` method of :mod:`kdcrowd.methods`: options from ``cfg.options``.

    ``pretrained`` (crowd model, fit result) reuses an already trained teacher.
    """
    # every KDCrowd field present in the options; the defaults live in the dataclass alone
    casts: dict[str, Any] = {"lambda1": float, "lambda2": float, "stages": int, "kd_temperature": float, "student_params": dict}
    fw = KDCrowd(**{f.name: casts.get(f.name, lambda v: v)(cfg.options[f.name]) for f in fields(KDCrowd) if f.name in cfg.options})
    outs, final = fw.fit(ds, data, cfg, pretrained=pretrained)
    stages: dict[str, Any] = {}
    for name, out in outs.items():
        rec = evaluate_output(out, ds, data, cfg.train)
        rec.update(out.extra)
        rec["history"] = out.fit.history
        rec["seconds"] = out.fit.seconds
        stages[name] = rec
    chosen = outs[final]
    transitions = outs["stage2"].transitions if "stage2" in outs else outs["teacher"].transitions
    return MethodOutput(chosen.module, chosen.fit, train_proba=chosen.train_proba, transitions=transitions, extra={"stages": stages, "final_stage": final})
