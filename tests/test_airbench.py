"""The airbench backbone and its recipe: the whitening layer, alternating flips, test-time
augmentation, the optimiser's bias groups, the triangular schedule and label smoothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdcrowd.methods import SupervisedObjective
from kdcrowd.models.backbones import AirbenchNet, build_backbone, init_from_training_inputs
from kdcrowd.training import (
    AIRBENCH_RECIPE,
    DeviceData,
    TrainConfig,
    _lr_lambda,
    _optimizer,
    airbench_config,
    fit,
    predict_proba,
    tta_views,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 16, 16)])
def test_airbench_contract(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = build_backbone("airbench", shape, 7).eval()
    assert isinstance(net, AirbenchNet)
    x = torch.randn(3, *shape)
    logits = net(x)
    assert logits.shape == (3, 7)
    feats = net.features(x)
    assert feats.shape == (3, net.feature_dim) == (3, 256)
    torch.testing.assert_close(net.head(feats) * net.head_scale, logits)
    assert net.whiten_weight.shape == (2 * shape[0] * 4, shape[0], 2, 2)
    assert not net.whiten_weight.requires_grad and "whiten_weight" in net.state_dict() and "whitened" in net.state_dict()
    # batch-norm scales are fixed, shifts learned
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.weight.requires_grad and m.bias.requires_grad for m in bns)


def test_the_whitening_layer_whitens_the_patches() -> None:
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.5, 0.5, 0.7]])
    x = torch.einsum("dc,nchw->ndhw", mix, torch.randn(400, 3, 12, 12, generator=g)) * 2.0 + 0.3
    x = x + torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # neighbouring pixels correlated
    net = AirbenchNet(3, 10, whiten_eps=1e-8)
    assert not bool(net.whitened)
    net.init_from_inputs(x)
    assert bool(net.whitened) and float(net.whiten_bias.detach().abs().max()) == 0.0
    with torch.no_grad():
        out = net.whiten(x)  # (N, 24, 11, 11)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(half.T)
    torch.testing.assert_close(cov, torch.eye(12, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])  # the negated filters
    # eigenvalues in decreasing order: the first filter is the patch's main direction
    w = net.whiten_weight[:12].reshape(12, -1)
    assert w[0].norm() < w[-1].norm()


def _images(n: int, side: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class (0 or 1) is which half, left or right, is bright."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, side, side, 3)).astype(np.uint8)
    for i in range(n):
        half = slice(0, side // 2) if y[i] == 0 else slice(side // 2, side)
        x[i, :, half] += 150
    return x, y


def test_fit_initialises_the_whitening_layer_once() -> None:
    x, y = _images(64, side=16)
    data = DeviceData(x, None, None, None, None, CPU)
    net = build_backbone("airbench", data.input_shape, 2)
    obj = SupervisedObjective(net, torch.as_tensor(y))
    fit(obj, data, TrainConfig(epochs=1, batch_size=32, progress=False, device="cpu"))
    assert bool(net.whitened)
    w = net.whiten_weight.clone()
    ref = AirbenchNet(3, 2)
    ref.init_from_inputs(data.prepare(data.x_train).float())
    torch.testing.assert_close(w, ref.whiten_weight)
    # already initialised: a second fit (stage-2 fine-tuning, a resumed run) keeps it
    assert init_from_training_inputs(obj, lambda: (_ for _ in ()).throw(AssertionError("not needed"))) == 0
    fit(obj, data, TrainConfig(epochs=1, batch_size=32, progress=False, device="cpu"))
    torch.testing.assert_close(net.whiten_weight, w)


class _FlipRecorder(nn.Module):
    """Records, per epoch and item, whether the image it was given is mirrored."""

    def __init__(self, n: int, epochs: int) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.seen = torch.full((epochs, n), -1, dtype=torch.long)

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        # the raw images are bright on the left: a mirrored one is bright on the right
        self.seen[epoch, idx] = (x[:, 0, :, -1].mean(1) > x[:, 0, :, 0].mean(1)).long()
        return (self.p**2).sum()

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2), 0.5)


@pytest.mark.parametrize("schedule", ["alternating", "random"])
def test_alternating_flips_show_each_image_both_ways_in_two_epochs(schedule: str) -> None:
    n, epochs = 200, 4
    x = np.zeros((n, 8, 8, 3), dtype=np.uint8)
    x[:, :, :4] = 200
    data = DeviceData(x, None, None, None, None, CPU)
    rec = _FlipRecorder(n, epochs)
    fit(rec, data, TrainConfig(epochs=epochs, batch_size=32, crop_padding=0, flip_schedule=schedule, progress=False, device="cpu", seed=3))
    seen = rec.seen
    assert bool((seen >= 0).all())
    alternates = (seen[0] != seen[1]) & (seen[1] != seen[2]) & (seen[2] != seen[3])
    if schedule == "alternating":
        assert bool(alternates.all())
        assert 0.3 < float(seen[0].float().mean()) < 0.7  # a random half first
    else:
        assert not bool(alternates.all())


def test_tta_is_the_mean_of_the_views() -> None:
    torch.manual_seed(0)
    x, y = _images(40, side=16)
    data = DeviceData(x[:30], x[30:], None, y[30:], None, CPU)
    net = SupervisedObjective(build_backbone("fastcnn", data.input_shape, 2), torch.as_tensor(y[:30])).eval()
    for m in net.modules():  # make the network sensitive to orientation
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    plain = predict_proba(net, data, data.x_val, TrainConfig(device="cpu"))
    mirrored = predict_proba(net, data, data.x_val.flip(-1), TrainConfig(device="cpu"))
    both = predict_proba(net, data, data.x_val, TrainConfig(device="cpu", tta="flip"))
    assert not torch.allclose(plain, mirrored)
    torch.testing.assert_close(both, (plain + mirrored) / 2)
    assert torch.allclose(predict_proba(net, data, data.x_val, TrainConfig(device="cpu", tta="flip", flip=False)), plain)
    # flip-translate: the two views at 1/4 each and the two shifted views at 1/4 each
    xb = data.prepare(data.x_val)
    views = tta_views(xb, "flip-translate")
    assert len(views) == 4 and math.isclose(sum(w for _, w in views), 1.0)
    with torch.no_grad():
        expected = sum(w * net.predict_proba(v) for v, w in views)
    torch.testing.assert_close(predict_proba(net, data, data.x_val, TrainConfig(device="cpu", tta="flip-translate")), expected)
    # the shifted view moves the content by one pixel
    torch.testing.assert_close(views[2][0][..., 1:, 1:], xb[..., :-1, :-1])
    torch.testing.assert_close(views[3][0][..., :-1, :-1], xb.flip(-1)[..., 1:, 1:])


def test_bias_lr_scale_puts_the_norm_biases_in_groups_of_their_own() -> None:
    net = SupervisedObjective(build_backbone("airbench", (3, 16, 16), 3), torch.zeros(4, dtype=torch.long))
    cfg = TrainConfig(optimizer="sgd", lr=0.5, weight_decay=0.01, bias_lr_scale=64.0, device="cpu")
    opt = _optimizer(net, cfg)
    biases = {id(m.bias) for m in net.modules() if isinstance(m, nn.BatchNorm2d)} | {id(net.backbone.whiten_bias)}
    by_lr = {g["lr"]: g for g in opt.param_groups}
    assert set(by_lr) == {0.5, 32.0}
    assert {id(p) for p in by_lr[32.0]["params"]} == biases
    assert by_lr[32.0]["weight_decay"] == pytest.approx(0.01 / 64)
    assert by_lr[0.5]["weight_decay"] == 0.01
    n_trainable = sum(1 for p in net.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in opt.param_groups) == n_trainable
    # the default: one group, as before
    assert len(_optimizer(net, TrainConfig(device="cpu")).param_groups) == 1


def test_bias_lr_scale_also_scales_the_masked_batch_norm_shifts_of_madl_and_annot_mix() -> None:
    from kdcrowd.data.datasets import load_dataset
    from kdcrowd.models._common import MaskedBatchNorm1d
    from kdcrowd.objectives import CrowdObjective, make_crowd_model, padded_annotations
    from kdcrowd.training import DeviceData

    ds = load_dataset("digits", workers="symmetric", seed=0)
    data = DeviceData.from_dataset(ds, torch.device("cpu"))
    w, l = padded_annotations(ds.annotations, data.device)
    cfg = TrainConfig(optimizer="sgd", lr=0.5, weight_decay=0.01, bias_lr_scale=64.0, device="cpu")
    import copy

    for name in ("madl", "annot-mix"):
        model = make_crowd_model(name, ds, data, "mlp")
        for obj in (CrowdObjective(model, w, l), CrowdObjective(copy.deepcopy(model), w, l)):  # a deep copy too (a fine-tuned stage 2, a reused teacher)
            shifts = {id(m.bias) for m in obj.modules() if isinstance(m, MaskedBatchNorm1d)}
            assert shifts, name
            lr_of = {id(p): g["lr"] for g in _optimizer(obj, cfg).param_groups for p in g["params"]}
            assert {lr_of[i] for i in shifts} == {32.0}, name  # they kept 0.5, unlike every other batch-norm shift
    # the airbench whitening bias, in a deep copy as well
    net = copy.deepcopy(SupervisedObjective(build_backbone("airbench", (3, 16, 16), 3), torch.zeros(4, dtype=torch.long)))
    lr_of = {id(p): g["lr"] for g in _optimizer(net, cfg).param_groups for p in g["params"]}
    assert lr_of[id(net.backbone.whiten_bias)] == 32.0


def test_triangular_schedule() -> None:
    f = _lr_lambda(TrainConfig(epochs=10, schedule="triangular", warmup_epochs=2), steps_per_epoch=10)
    assert f(0) == pytest.approx(0.2)
    assert f(20) == pytest.approx(1.0)
    assert f(10) == pytest.approx(0.6)
    assert f(100) == pytest.approx(0.0)
    assert all(f(s) >= f(s + 1) for s in range(20, 100))


def test_label_smoothing_applies_to_hard_targets_only() -> None:
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    x, t = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    obj = SupervisedObjective(net, t, label_smoothing=0.2)
    idx = torch.arange(5)
    torch.testing.assert_close(obj.training_loss(x, idx, 0), nn.functional.cross_entropy(net(x), t, label_smoothing=0.2))
    soft = torch.softmax(torch.randn(5, 3), 1)
    obj_soft = SupervisedObjective(net, soft, label_smoothing=0.2)
    torch.testing.assert_close(obj_soft.training_loss(x, idx, 0), nn.functional.cross_entropy(net(x), soft))


def test_the_recipe_is_a_valid_config_and_scales_with_the_batch() -> None:
    assert TrainConfig(**AIRBENCH_RECIPE).tta == "flip-translate"
    c = airbench_config(epochs=20, batch_size=512, device="cpu")
    assert c.lr == pytest.approx(0.75) and c.warmup_epochs == pytest.approx(4.0) and c.optimizer == "sgd"


def test_a_tiny_airbench_run_learns_a_simple_task() -> None:
    x, y = _images(320, side=16, seed=1)
    data = DeviceData(x[:256], x[256:], None, y[256:], None, CPU)
    torch.manual_seed(0)
    obj = SupervisedObjective(build_backbone("airbench", data.input_shape, 2), torch.as_tensor(y[:256]), label_smoothing=0.2)
    # a mirrored image changes its class here: no flips
    res = fit(obj, data, airbench_config(epochs=4, batch_size=64, flip=False, device="cpu", progress=False))
    assert res.history[-1]["val_accuracy"] >= 0.95
