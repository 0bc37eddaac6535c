"""Crowd models are found through a registry: a new one is one class with its options
dataclass, registered with a decorator, and every door can train it by name."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.config import ConfigError, bounded, check_fields
from kdcrowd.methods import RunConfig, run_on_dataset
from kdcrowd.models import CROWD_MODELS, crowd_model_names
from kdcrowd.models.base import build_crowd_model, register_crowd_model
from kdcrowd.models.crowd import CoNAL, CrowdLayer, CrowdModel, MaxMIG
from kdcrowd.objectives import crowd_param_groups
from kdcrowd.training import TrainConfig
from test_methods import tiny_dataset


@dataclass
class _ConstantNoiseConfig:
    keep: float = bounded(0.8, gt=0.0, lt=1.0)
    """Probability that a worker copies the true label."""

    def __post_init__(self) -> None:
        check_fields(self)


class _ConstantNoise(CrowdModel):
    """Every worker keeps the true label with a learned probability (one logit per worker)."""

    def __init__(self, backbone: nn.Module, n_workers: int, n_classes: int, keep: float = 0.8) -> None:
        super().__init__(backbone, n_workers, n_classes)
        self.keep_logit = nn.Parameter(torch.full((n_workers,), float(torch.logit(torch.tensor(keep)))))

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        k = self.n_classes
        keep = torch.sigmoid(self.keep_logit[idx].float())[..., None, None]
        eye = torch.eye(k, device=keep.device)
        return torch.log(keep * eye + (1 - keep) * (1 - eye) / (k - 1))

    def crowd_loss(self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.backbone(x)
        obs = (workers >= 0) & (labels >= 0)
        log_t = self._worker_log_transitions(workers.clamp(min=0))  # (B, L, K, K)
        p = F.log_softmax(logits.float(), -1)[:, None, :, None] + log_t  # (B, L, K_true, K_label)
        ll = torch.logsumexp(p, dim=2).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        return -(ll * obs).sum() / obs.sum().clamp(min=1), logits


@pytest.fixture
def registered():
    register_crowd_model("constant-noise", config=_ConstantNoiseConfig)(_ConstantNoise)
    yield
    del CROWD_MODELS["constant-noise"]


def test_a_new_crowd_model_is_one_class_and_a_decorator(registered) -> None:
    assert "constant-noise" in crowd_model_names()
    ds = tiny_dataset()
    train = TrainConfig(epochs=3, batch_size=32, lr=3e-3, progress=False, device="cpu")
    metrics, out = run_on_dataset(ds, RunConfig(dataset="tiny", method="constant-noise", train=train, options={"keep": 0.7}))
    assert metrics["test_accuracy"] > 0.8
    assert out.transitions.shape == (ds.annotations.n_workers, 3, 3)
    with pytest.raises(ConfigError, match="'kep'; did you mean 'keep'"):
        run_on_dataset(ds, RunConfig(dataset="tiny", method="constant-noise", train=train, options={"kep": 0.7}))
    with pytest.raises(ConfigError, match="keep must be less than 1.0"):
        run_on_dataset(ds, RunConfig(dataset="tiny", method="constant-noise", train=train, options={"keep": 1.5}))
    # and as KD-Crowd's teacher, its options passed through
    metrics, _ = run_on_dataset(ds, RunConfig(dataset="tiny", method="kdcrowd", train=train, options={"teacher": "constant-noise", "keep": 0.9, "stages": 1}))
    assert metrics["final_stage"] == "student"


def test_the_registry_builds_the_named_models_with_their_options() -> None:
    assert crowd_model_names()[:6] == ("crowdlayer-mw", "crowdlayer-vw", "crowdlayer-vb", "crowdlayer-vwb", "maxmig", "conal")
    net = nn.Linear(4, 3)
    m = build_crowd_model("crowdlayer-vb", net, 5, 3)
    assert isinstance(m, CrowdLayer) and m.variant == "vb"
    m = build_crowd_model("maxmig", net, 5, 3, {"mig_f": "js", "eps": 0.1})
    assert isinstance(m, MaxMIG) and m.f == "js" and m.eps == 0.1
    with pytest.raises(ConfigError, match="fixes its option 'variant'"):
        build_crowd_model("crowdlayer-vb", net, 5, 3, {"variant": "mw"})
    with pytest.raises(ValueError, match="already registered"):
        register_crowd_model("maxmig")(CrowdLayer)


def test_worker_parameters_are_declared_by_the_model() -> None:
    """CoNAL's noise matrices get the worker learning rate and no weight decay; its gate
    network trains like the backbone (it used to get the worker settings too)."""
    backbone = nn.Sequential()
    backbone.head = nn.Linear(4, 3)  # type: ignore[attr-defined]
    backbone.feature_dim = 4  # type: ignore[attr-defined]
    model = CoNAL(backbone, 5, 3, embed_dim=2)
    groups = crowd_param_groups(model, TrainConfig(lr=1e-3, worker_lr_scale=10.0))
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[1] == {id(model.weight), id(model.common_weight)}
    assert groups[1]["lr"] == pytest.approx(1e-2) and groups[1]["weight_decay"] == 0.0
    assert ids[2] == {id(p) for p in (*model.instance_embed.parameters(), *model.worker_embed.parameters())}
    assert "lr" not in groups[2] and "weight_decay" not in groups[2]
    # a model without its own declaration: everything outside the backbone
    cl = CrowdLayer(nn.Linear(4, 3), 5, 3)
    assert [len(g["params"]) for g in crowd_param_groups(cl, TrainConfig())] == [2, 1]
