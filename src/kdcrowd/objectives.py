"""Objectives: what the training loop (:func:`kdcrowd.training.fit`) trains.

Each wraps a model into the loop's contract (``training_loss(x, idx, epoch)``,
``predict_proba(x)``) and holds the per-item targets it needs on the device:

* :class:`SupervisedObjective` — a backbone on fixed hard or soft targets;
* :class:`CrowdObjective` — a crowd model on the padded annotations, its worker
  parameters (:meth:`~kdcrowd.models.base.CrowdModel.worker_parameters`) in their own
  parameter group (:func:`crowd_param_groups`);
* :class:`KDStage2Objective` — KD-Crowd's stage 2: the crowd loss plus distillation
  towards the student.

And :class:`Ensemble`, which trains nothing: the averaged predictions of trained ones
(KD-Crowd's ``final="ensemble"`` and ``"ensemble-all"``); :func:`predictor_networks` lists the networks whose
averaged softmax is a trained predictor's ``predict_proba`` (what a model file keeps).

Plus the builders the runners and the framework share: :func:`make_crowd_model` (a
registered crowd model on a data set, initialised from its annotations),
:func:`build_kd_loss`, :func:`padded_annotations`, :func:`crowd_outputs`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .data.gold import check_gold
from .losses import DEFAULT_TV_TEMPERATURE, KLDistillation, MIGfDistillation
from .models import build_crowd_model
from .models.backbones import build_backbone
from .models.base import _observed
from .training import DeviceData, TrainConfig, predict_proba

__all__ = [
    "SupervisedObjective",
    "CrowdObjective",
    "KDStage2Objective",
    "crowd_param_groups",
    "make_crowd_model",
    "padded_annotations",
    "crowd_outputs",
    "build_kd_loss",
    "KD_LOSSES",
    "require_annotations",
    "gold_targets",
    "gold_cross_entropy",
    "Ensemble",
    "predictor_networks",
]

KD_LOSSES = ("mig-kl", "mig-pearson", "mig-js", "mig-tv", "mig-rkl", "mig-hellinger", "kl", "none")


def build_kd_loss(name: str, temperature: float = 1.0, prior: Any = "uniform", tv_temperature: float = DEFAULT_TV_TEMPERATURE) -> nn.Module | None:
    """``mig-<f>`` → :class:`MIGfDistillation` (with ``prior``: ``uniform``, ``teacher``
    or a fixed probability vector, and ``tv_temperature``), ``kl`` →
    :class:`KLDistillation` (at ``temperature``), ``none`` → None."""
    if name == "none":
        return None
    if name == "kl":
        return KLDistillation(temperature=temperature)
    if name.startswith("mig-"):
        return MIGfDistillation(f=name[4:], prior=prior, tv_temperature=tv_temperature)
    raise ValueError(f"unknown distillation loss '{name}'; choose one of {KD_LOSSES}")


class SupervisedObjective(nn.Module):
    """A backbone trained with cross-entropy on fixed targets: hard ``(N,)`` or soft ``(N, K)``.

    ``label_smoothing`` (:class:`~kdcrowd.training.TrainConfig`'s) applies to hard targets
    only; soft targets are already distributions.

    ``labelled``: ``(N,)`` bool, the items that have a target (crowd labels or a gold
    label); the others add nothing to the loss, which is then the mean over the batch's
    labelled items (0 for a batch without any; under data-parallel training each process's
    share of the batch). ``None``: every item has one."""

    targets: torch.Tensor
    labelled: torch.Tensor | None

    def __init__(self, backbone: nn.Module, targets: torch.Tensor, label_smoothing: float = 0.0, labelled: torch.Tensor | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        if labelled is not None and targets.dim() == 1:
            targets = torch.where(labelled, targets, torch.zeros_like(targets))  # any class: masked out
        self.register_buffer("targets", targets, persistent=False)
        self.register_buffer("labelled", labelled, persistent=False)
        self.label_smoothing = float(label_smoothing) if targets.dim() == 1 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.labelled is None:
            return nn.functional.cross_entropy(self.backbone(x).float(), self.targets[idx], label_smoothing=self.label_smoothing)
        per_item = nn.functional.cross_entropy(self.backbone(x).float(), self.targets[idx], label_smoothing=self.label_smoothing, reduction="none")
        w = self.labelled[idx].float()
        return (per_item * w).sum() / w.sum().clamp_min(1.0)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).float().softmax(-1)


def crowd_param_groups(model: nn.Module, config: TrainConfig, worker_lr_scale: float | None = None) -> list[dict[str, Any]]:
    """The model's worker parameters (``model.worker_parameters()``) at ``worker_lr_scale``
    times the learning rate (default: ``config.worker_lr_scale``) and without weight decay; every other parameter (the
    backbone, and e.g. CoNAL's gate network) at the base learning rate.

    Worker matrices start far from their targets (CrowdLayer's identity gives a diagonal of
    e/(e+K−1) ≈ 0.23 for K = 10) and each worker sees few items per epoch, so at the
    backbone's learning rate they stay near their initialisation for a whole run.
    """
    if worker_lr_scale is None:
        worker_lr_scale = config.worker_lr_scale
    worker_params = getattr(model, "worker_parameters", None)
    if worker_params is None:  # a module with the contract but not a CrowdModel subclass
        backbone_ids = {id(p) for p in model.backbone.parameters()}
        workers = [p for p in model.parameters() if id(p) not in backbone_ids]
    else:
        workers = list(worker_params())
    worker_ids = {id(p) for p in workers}
    workers = [p for p in workers if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": [p for p in model.backbone.parameters() if p.requires_grad]}]
    if workers:
        groups.append({"params": workers, "lr": config.lr * worker_lr_scale, "weight_decay": 0.0})
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in worker_ids and id(p) not in backbone_ids]
    if rest:
        groups.append({"params": rest})
    return groups


def gold_targets(ds: Any, device: torch.device) -> torch.Tensor | None:
    """The data set's gold questions (``ds.gold``: ``(N,)`` class indices, ``-1`` for
    unknown) as a long tensor on ``device``, or ``None`` when it has none."""
    g = check_gold(getattr(ds, "gold", None), len(ds.x_train), ds.n_classes)
    return None if g is None else torch.as_tensor(g, dtype=torch.long, device=device)


def gold_cross_entropy(logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Supervised term of the gold items of a batch: the sum of the cross-entropies of
    ``logits`` (B, K) against the known classes ``gold`` (B,) over the rows with
    ``gold >= 0``, divided by the batch size ``B`` (each gold item weighs as one item of
    the crowd loss's batch mean; 0 for a batch without gold items)."""
    known = gold >= 0
    ce = nn.functional.cross_entropy(logits.float(), gold.clamp_min(0), reduction="none")
    return torch.where(known, ce, torch.zeros_like(ce)).sum() / max(1, len(gold))


class CrowdObjective(nn.Module):
    """Adapts a crowd model (``crowd_loss(x, workers, labels)``) to the training loop.

    Holds the item-major padded annotations of the training items on the device and
    gathers the rows of each batch. Worker parameters train at ``worker_lr_scale`` times
    the learning rate (see :func:`crowd_param_groups`). When every padded entry is
    observed (no item has fewer annotations than another) and the model takes it
    (:attr:`~kdcrowd.models.base.CrowdModel.takes_all_observed`), each batch's loss is
    told so (``all_observed=True``): checked once here instead of in every step.

    ``gold``: ``(N,)`` known classes of the gold questions (``-1`` for unknown) or
    ``None``. The loss then adds ``gold_weight`` times :func:`gold_cross_entropy` of the
    classifier's logits on the batch's gold items: the classifier is anchored to the known
    labels, and through it the worker matrices (which explain the annotations given the
    classifier's true-label distribution).
    """

    model: Any  # a crowd model (kdcrowd.models.base contract)
    ann_workers: torch.Tensor
    ann_labels: torch.Tensor
    gold: torch.Tensor | None

    def __init__(self, model: nn.Module, workers: torch.Tensor, labels: torch.Tensor, worker_lr_scale: float = 1.0, gold: torch.Tensor | None = None, gold_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.worker_lr_scale = worker_lr_scale
        self.gold_weight = float(gold_weight)
        self.register_buffer("ann_workers", workers, persistent=False)
        self.register_buffer("ann_labels", labels, persistent=False)
        self.register_buffer("gold", None if gold is None else gold.long(), persistent=False)
        dense = getattr(model, "takes_all_observed", False) and bool(_observed(workers, labels).all())
        self._loss_options: dict[str, Any] = {"all_observed": True} if dense else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _crowd_loss(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's ``crowd_loss`` on the annotations of the batch's items ``idx``."""
        return self.model.crowd_loss(x, self.ann_workers[idx], self.ann_labels[idx], **self._loss_options)

    def _with_gold(self, loss: torch.Tensor, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.gold is None or self.gold_weight == 0:
            return loss
        return loss + self.gold_weight * gold_cross_entropy(logits, self.gold[idx])

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        loss, logits = self._crowd_loss(x, idx)
        return self._with_gold(loss, logits, idx)

    def param_groups(self, config: TrainConfig) -> list[dict[str, Any]]:
        return crowd_param_groups(self.model, config, self.worker_lr_scale)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict_proba(x).float()


class KDStage2Objective(CrowdObjective):
    """Stage 2: the crowd model's own loss plus ``lambda2 * kd(f(x), r)`` towards the student's predictions ``r``."""

    refined: torch.Tensor

    def __init__(self, model: nn.Module, workers: torch.Tensor, labels: torch.Tensor, refined: torch.Tensor, kd: nn.Module | None, lambda2: float, worker_lr_scale: float = 1.0, gold: torch.Tensor | None = None, gold_weight: float = 1.0) -> None:
        super().__init__(model, workers, labels, worker_lr_scale=worker_lr_scale, gold=gold, gold_weight=gold_weight)
        self.kd, self.lambda2 = kd, lambda2
        self.register_buffer("refined", refined, persistent=False)

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        loss, logits = self._crowd_loss(x, idx)
        if self.kd is not None and self.lambda2 > 0:
            loss = loss + self.lambda2 * self.kd(logits.float(), self.refined[idx])
        return self._with_gold(loss, logits, idx)


def predictor_networks(module: nn.Module) -> list[nn.Module]:
    """The networks whose averaged softmax is ``module``'s ``predict_proba``.

    An objective wraps a crowd model (``.model``), a student (``.student``) or a backbone
    directly; a co-teaching student averages two backbones (``backbone``, ``backbone_b``);
    an :class:`Ensemble` the networks of its members, each network once."""
    if isinstance(module, Ensemble):
        return [net for m in module.members for net in predictor_networks(m)]
    inner = module
    for attr in ("model", "student"):
        if isinstance(getattr(inner, attr, None), nn.Module):
            inner = getattr(inner, attr)
            break
    nets = [inner.backbone]
    if isinstance(getattr(inner, "backbone_b", None), nn.Module):
        nets.append(inner.backbone_b)
    return nets


class Ensemble(nn.Module):
    """Trained predictors as one: ``predict_proba`` is the mean softmax of every network of
    its members (:func:`predictor_networks`): each member's ``predict_proba`` weighted by its
    number of networks, so a co-teaching student (two) and a crowd model (one) weigh 2/3 and
    1/3. A model file of it keeps the networks and averages their softmax, which predicts
    exactly the same when each member's ``predict_proba`` is the mean softmax of its networks,
    as for every built-in student and crowd model. It trains nothing; its state is its
    members', under ``members.<i>.``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two predictors, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.weights = [len(predictor_networks(m)) for m in members]  # each member's number of networks

    def average(self, probas: list[torch.Tensor]) -> torch.Tensor:
        """The members' probabilities (in order) averaged as :meth:`predict_proba` does."""
        return sum(w * p.float() for w, p in zip(self.weights, probas)) / sum(self.weights)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.average([m.predict_proba(x) for m in self.members])

    @staticmethod
    def state(member_states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The ensemble's state dict from its members' (in order)."""
        return {f"members.{i}.{k}": v for i, sd in enumerate(member_states) for k, v in sd.items()}


def padded_annotations(ann: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Item-major padded (worker, label) long tensors of ``ann`` on ``device``."""
    t = ann.to_torch(device, padded=True)
    return t["workers"].long(), t["labels"].long()


def require_annotations(ds: Any, method: str) -> Any:
    """``ds.annotations``, or a ``ValueError`` saying ``method`` needs them."""
    if ds.annotations is None:
        raise ValueError(f"method '{method}' needs crowd annotations but data set '{ds.name}' has none; pick simulated workers with --workers (see `kdcrowd datasets`)")
    return ds.annotations


def make_crowd_model(
    name: str,
    ds: Any,
    data: DeviceData,
    backbone: str = "auto",
    options: Any = None,
    padded: tuple[torch.Tensor, torch.Tensor] | None = None,
    soft: torch.Tensor | None = None,
) -> nn.Module:
    """A fresh registered crowd model ``name`` on ``ds`` (``options``: its options
    dataclass or mapping), on ``data.device``, initialised from the padded annotations
    (computed here unless ``padded`` is given).

    ``soft``: ``(N, K)`` label distributions of the training items for the models that
    initialise their workers from label statistics (``initialises_from_labels``, Max-MIG)
    instead of majority vote; the others raise ``ValueError``. Without ``soft``, when ``ds``
    has gold questions (``ds.gold``), those models start from the posteriors of Dawid–Skene
    anchored on the gold items (:func:`kdcrowd.aggregation.dawid_skene` with ``gold``)."""
    ann = require_annotations(ds, name)
    net = build_backbone(backbone, data.input_shape, ds.n_classes).to(data.device)
    model = build_crowd_model(name, net, ann.n_workers, ds.n_classes, options).to(data.device)
    gold = getattr(ds, "gold", None)
    if soft is None and gold is not None and getattr(model, "initialises_from_labels", False):
        # gold questions: the workers start from their confusion against the labels of
        # Dawid–Skene anchored on the gold items, instead of majority vote
        from .aggregation import dawid_skene

        soft = torch.as_tensor(dawid_skene(ann, gold=gold, warn=False).posteriors, dtype=torch.float32, device=data.device)
    model.init_from_annotations(*(padded or padded_annotations(ann, data.device)), soft=soft)
    return model


#: How many worker-matrix entries one slice of :func:`crowd_outputs` may hold (64 Mi floats).
POSTERIOR_ELEMENTS = 1 << 26


def crowd_outputs(model: nn.Module, data: DeviceData, workers: torch.Tensor, labels: torch.Tensor, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier probabilities and annotation-aware posteriors of a crowd model on the training items.

    The posteriors are computed in slices of items: a crowd model's posterior holds
    ``(items, L, K, K)`` worker matrices, where ``L`` is the most labels of any item (one
    item labelled by 100 workers made it 8.6 GB for 100 k items in one piece)."""
    proba = predict_proba(model, data, data.x_train, config)
    n, k = proba.shape
    step = max(1, POSTERIOR_ELEMENTS // max(1, workers.shape[1] * k * k))
    with torch.no_grad():
        log_p = proba.clamp_min(1e-12).log()
        post = torch.cat([model.posterior(log_p[s:s + step], workers[s:s + step], labels[s:s + step]).float() for s in range(0, n, step)]) if n else proba.clone()
    return proba, post
