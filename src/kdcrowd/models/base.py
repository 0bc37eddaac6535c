"""Transition-matrix crowd models behind one contract.

Every model here is a plain :class:`torch.nn.Module` (usable in anyone's training loop)
wrapping a *backbone* (``x -> (B, K)`` true-label logits, see
:mod:`kdcrowd.models.backbones`) and a worker module. Annotations reach the models as
item-major padded tensors ``workers (B, L)`` / ``labels (B, L)`` (long, ``-1`` = missing),
the rows of :meth:`kdcrowd.data.annotations.Annotations.padded` for the items of a batch.

The contract (:class:`CrowdModel`):

- ``forward(x) -> (B, K)`` true-label logits; ``predict_proba(x) -> (B, K)``;
- ``crowd_loss(x, workers, labels) -> (loss, logits)``: the model's own loss on the
  observed annotations of the batch (missing entries contribute nothing; a batch without
  any observed annotation gives an exact, finite ``0``) and the true-label logits; a
  model whose class attribute ``takes_all_observed`` is ``True`` (annot-mix) also takes
  ``all_observed=True``, the caller's guarantee that no entry is missing;
- ``transition_matrices() -> (M, K, K)`` row-stochastic, ``T[m, k, j] = P(y^m=j | y=k)``;
- ``posterior(logits, workers, labels) -> (B, K)``: the annotation-aware posterior
  ``∝ softmax(logits) ⊙ Π_m T_m[:, y^m]`` over the observed annotations (log space);
- ``init_from_annotations(workers_padded, labels_padded, soft=None)``: a hook, a no-op
  except for models that initialise their workers from label statistics (Max-MIG, whose
  class attribute ``initialises_from_labels`` is ``True``): from the majority vote, or
  from ``soft`` ``(N, K)`` label distributions of the items when given; models without
  such an initialisation raise ``ValueError`` for a ``soft``.

Implementation rules: everything is vectorised per batch -- the ``(B, L)`` worker
parameters are gathered with ``param[workers.clamp(min=0)]`` and masked; there are no Python
loops over workers or items and nothing of size N×M (M = 50 000 workers is fine: the
parameters are M×K×K). Under autocast (bf16 on CUDA) the backbone runs in low precision
and every loss is computed in float32. The models keep no dataset state: the training
loop gathers the padded annotation rows of a batch and calls ``crowd_loss``.

Convention: a worker's K×K parameter matrix acts on the true-label probability *row*
vector, ``o = f @ W_m`` (``o_j = Σ_k f_k W_m[k, j]``), so row ``k`` of ``W_m`` is the
worker's logit vector for true class ``k`` and ``T̂_m = row-softmax(W_m)``.
"""

from __future__ import annotations

import math  # noqa: F401  (kept for subclasses written against the old single module)
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.config import ConfigError, NoOptions, from_mapping
from kdcrowd.losses import _no_autocast

__all__ = [
    "CrowdModel",
    "CrowdModelSpec",
    "CROWD_MODELS",
    "register_crowd_model",
    "crowd_model_spec",
    "crowd_model_names",
    "build_crowd_model",
]



# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _as_long(a: Any, device: torch.device) -> torch.Tensor:
    """numpy array / tensor / nested list -> long tensor on ``device``."""
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=torch.long)
    return torch.as_tensor(np.asarray(a), dtype=torch.long, device=device)


def _check_annotations(workers: torch.Tensor, labels: torch.Tensor, batch: int | None) -> None:
    if workers.dim() != 2 or workers.shape != labels.shape:
        raise ValueError(
            "workers and labels must be (B, L) tensors of the same shape; got "
            f"{tuple(workers.shape)} and {tuple(labels.shape)}"
        )
    if batch is not None and workers.shape[0] != batch:
        raise ValueError(f"annotations have {workers.shape[0]} rows for a batch of {batch} items")


def _observed(workers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` bool mask of observed annotations (both indices non-negative)."""
    return (labels >= 0) & (workers >= 0)


def _masked_labels(workers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """labels with every unobserved entry (label or worker < 0) set to -1."""
    return torch.where(_observed(workers, labels), labels.long(), torch.full_like(labels.long(), -1))


def _gather_columns(log_t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log_t (B, L, K, K)``, ``labels (B, L)`` -> ``(B, L, K)`` columns ``log_t[b,l,:,y]``."""
    B, L, K, _ = log_t.shape
    idx = labels.clamp(min=0).view(B, L, 1, 1).expand(B, L, K, 1)
    return log_t.gather(-1, idx).squeeze(-1)


# --------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------
class CrowdModel(nn.Module):
    """Base class of the crowd models: a backbone plus a per-worker noise model.

    Args:
        backbone: ``nn.Module`` mapping ``x`` to true-label logits ``(B, K)``.
        n_workers: number of workers M (worker indices ``0..M-1``).
        n_classes: number of classes K.

    Subclasses implement :meth:`crowd_loss` and :meth:`_worker_log_transitions` (the
    ``(..., K, K)`` log transition matrices of the given worker indices); the base class
    derives :meth:`transition_matrices` and :meth:`posterior` from the latter.
    """

    initialises_from_labels: bool = False
    """Whether :meth:`init_from_annotations` initialises the workers from label statistics
    (and so accepts ``soft`` label distributions); ``True`` for Max-MIG."""

    takes_all_observed: bool = False
    """Whether :meth:`crowd_loss` takes the keyword ``all_observed=True``, the caller's
    guarantee that every entry of the batch's annotations is observed (no padding), which
    spares a model that gathers the observed pairs a host synchronisation (annot-mix);
    :class:`~kdcrowd.objectives.CrowdObjective` gives it when it holds for all its items."""

    def __init__(self, backbone: nn.Module, n_workers: int, n_classes: int) -> None:
        super().__init__()
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1; got {n_workers}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2; got {n_classes}")
        self.backbone = backbone
        self.n_workers = int(n_workers)
        self.n_classes = int(n_classes)

    # ---- true-label predictor -------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """True-label logits ``(B, K)``."""
        return self.backbone(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """True-label probabilities ``(B, K)`` (float32)."""
        logits = self(x)
        with _no_autocast(logits):
            return torch.softmax(logits.float(), dim=-1)

    # ---- crowd side -----------------------------------------------------------------
    def crowd_loss(
        self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)``: the model's loss on the observed annotations and the
        true-label logits ``(B, K)``."""
        raise NotImplementedError

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        """``(..., K, K)`` log transition matrices (rows log-normalised) of workers ``idx``."""
        raise NotImplementedError

    def _param_device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")  # pragma: no cover

    @torch.no_grad()
    def transition_matrices(self) -> torch.Tensor:
        """``(M, K, K)`` row-stochastic estimates ``T̂[m, k, j] = P(y^m = j | y = k)``
        (detached, float32)."""
        idx = torch.arange(self.n_workers, device=self._param_device())
        with _no_autocast(idx):
            return self._worker_log_transitions(idx).float().exp()

    def _log_annotation_likelihood(
        self, workers: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """``(B, K)``: ``Σ_{observed m} log T_m[:, y^m]`` (0 where nothing is observed)."""
        obs = _observed(workers, labels)
        log_t = self._worker_log_transitions(workers.clamp(min=0)).float()  # (B, L, K, K)
        cols = _gather_columns(log_t, labels)  # (B, L, K)
        cols = torch.where(obs.unsqueeze(-1), cols, torch.zeros_like(cols))
        return cols.sum(dim=1)

    def posterior(
        self, logits: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Annotation-aware posterior ``(B, K) ∝ softmax(logits) ⊙ Π_m T̂_m[:, y^m]`` over
        the observed annotations, computed in log space (float32)."""
        _check_annotations(workers, labels, logits.shape[0])
        with _no_autocast(logits):
            workers = workers.to(logits.device).long()
            labels = labels.to(logits.device).long()
            log_q = F.log_softmax(logits.float(), dim=-1)
            log_q = log_q + self._log_annotation_likelihood(workers, labels)
            return torch.softmax(log_q, dim=-1)

    def init_from_annotations(self, workers_padded: Any, labels_padded: Any, soft: Any = None) -> None:
        """Initialise worker parameters from the padded training annotations ``(N, L)``
        (``-1`` = missing) and, optionally, ``soft`` ``(N, K)`` label distributions of the
        items to measure the workers against (default: their majority vote). No-op by default;
        a model without such an initialisation (``initialises_from_labels`` false) raises
        ``ValueError`` when given ``soft``, which it would otherwise silently ignore."""
        if soft is not None:
            raise ValueError(f"{type(self).__name__} has no label-statistics initialisation; use stage2_init='annotations'")

    def _batch_logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass returning the logits and the input of its ``head`` -- the
        penultimate features -- captured with a forward pre-hook, so that backbones whose
        ``forward`` post-processes ``head``'s output (e.g. a logit scale) stay exact. Falls
        back to ``backbone.features(x)`` if the hook did not fire. While a fit with
        ``cuda_graph`` runs, the backbone carries ``graphed_logits_and_features(x)``
        (:mod:`kdcrowd.cuda_graphs`), whose graph gives both at once, or ``None`` when this
        call runs the module."""
        graphed = getattr(self.backbone, "graphed_logits_and_features", None)
        if graphed is not None:
            pair = graphed(x)
            if pair is not None:
                return pair
        head = getattr(self.backbone, "head", None)
        captured: list[torch.Tensor] = []
        handle = None
        if isinstance(head, nn.Module):
            handle = head.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
        try:
            logits = self.backbone(x)
        finally:
            if handle is not None:
                handle.remove()
        if captured:
            feats = captured[-1]
        elif hasattr(self.backbone, "features"):
            feats = self.backbone.features(x)
        else:
            raise AttributeError(
                f"{type(self).__name__} needs backbone.features(x) (or a backbone.head "
                "module) to read the penultimate features"
            )
        return logits, feats



    def _annotations_on(self, logits: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's ``(B, L)`` worker and label indices checked against ``logits`` and
        moved to its device as long tensors, and the mask of observed entries: the common
        start of every ``crowd_loss``."""
        _check_annotations(workers, labels, logits.shape[0])
        workers = workers.to(logits.device).long()
        labels = labels.to(logits.device).long()
        return workers, labels, _observed(workers, labels)

    # ---- what the engine needs to know ------------------------------------------------
    def worker_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of the per-worker noise model: they train at the worker
        learning-rate multiplier without weight decay (see
        :func:`kdcrowd.objectives.crowd_param_groups`). Default: every parameter outside
        the backbone; a model with other non-backbone parts (CoNAL's gate network)
        overrides this so those parts train like the backbone."""
        backbone = {id(p) for p in self.backbone.parameters()}
        return (p for p in self.parameters() if id(p) not in backbone)


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CrowdModelSpec:
    """A registered crowd model: its class, its options dataclass and fixed options."""

    name: str
    cls: type[CrowdModel]
    config: type
    preset: tuple[tuple[str, Any], ...] = ()

    def options(self, values: dict[str, Any] | None = None) -> Any:
        """The model's options dataclass from ``values`` (unknown keys refused with the
        closest valid key; the preset ones, such as CrowdLayer's variant, cannot be set)."""
        values = dict(values or {})
        for k, _ in self.preset:
            if k in values:
                raise ConfigError(f"crowd model '{self.name}' fixes its option {k!r}; choose another model name instead")
        return from_mapping(self.config, {**dict(self.preset), **values}, what=f"crowd model '{self.name}'")


#: Registered crowd models by name (:func:`register_crowd_model`).
CROWD_MODELS: dict[str, CrowdModelSpec] = {}


def register_crowd_model(name: str, config: type = NoOptions, **preset: Any) -> Callable[[type[CrowdModel]], type[CrowdModel]]:
    """Class decorator: register a crowd model under ``name`` with its options dataclass
    ``config`` (fields = keyword arguments of the class after ``backbone, n_workers,
    n_classes``; a field's ``metadata["arg"]`` names the argument when it differs) and ``preset`` options fixed by the name. Stack it to register several
    names (``crowdlayer-mw``, ``crowdlayer-vw``, ...)."""

    def deco(cls: type[CrowdModel]) -> type[CrowdModel]:
        if name in CROWD_MODELS and CROWD_MODELS[name].cls is not cls:
            raise ValueError(f"crowd model name '{name}' is already registered to {CROWD_MODELS[name].cls.__name__}")
        names = {f.name for f in fields(config)}
        bad = [k for k in preset if k not in names]
        if bad:
            raise ValueError(f"preset options {bad} are not fields of {config.__name__}")
        CROWD_MODELS[name] = CrowdModelSpec(name, cls, config, tuple(preset.items()))
        return cls

    return deco


def crowd_model_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(CROWD_MODELS)


def crowd_model_spec(name: str) -> CrowdModelSpec:
    if name not in CROWD_MODELS:
        from kdcrowd.config import closest

        near = closest(name, CROWD_MODELS)
        raise ConfigError(f"unknown crowd model '{name}'; " + (f"did you mean '{near}'? " if near else "") + f"choose one of {', '.join(CROWD_MODELS)}")
    return CROWD_MODELS[name]


def build_crowd_model(name: str, backbone: nn.Module, n_workers: int, n_classes: int, options: Any = None) -> CrowdModel:
    """A fresh crowd model ``name`` over ``backbone``; ``options``: its options dataclass
    or a mapping of them."""
    spec = crowd_model_spec(name)
    if options is None or isinstance(options, dict):
        options = spec.options(options)
    elif not isinstance(options, spec.config):
        raise ConfigError(f"crowd model '{name}' takes {spec.config.__name__} options, got {type(options).__name__}")
    kwargs = {f.metadata.get("arg", f.name): getattr(options, f.name) for f in fields(options)}
    return spec.cls(backbone, n_workers, n_classes, **kwargs)
