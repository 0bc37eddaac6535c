"""The training loop, on-device augmentation and backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcrowd.methods import SupervisedObjective
from kdcrowd.models.backbones import BACKBONES, FastCNN, build_backbone, default_backbone
from kdcrowd.training import DeviceData, TrainConfig, _batches, fit, predict_proba, random_crop_flip


def _blobs(n: int, k: int = 3, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


@pytest.mark.parametrize("name,shape", [("mlp", (20,)), ("fastcnn", (3, 32, 32)), ("fastcnn", (1, 28, 28)), ("resnet18", (3, 32, 32)), ("vgg16", (3, 32, 32)), ("labelme-cnn", (3, 128, 128))])
def test_backbone_contract(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, shape, 7).eval()
    x = torch.randn(2, *shape)
    logits = net(x)
    assert logits.shape == (2, 7)
    feats = net.features(x)
    assert feats.shape == (2, net.feature_dim)
    scale = net.head_scale if isinstance(net, FastCNN) else 1.0
    torch.testing.assert_close(net.head(feats) * scale, logits)


def test_backbone_errors_and_defaults() -> None:
    assert default_backbone((64,)) == "mlp"
    assert default_backbone((3, 32, 32)) == "fastcnn"
    assert default_backbone((3, 128, 128)) == "labelme-cnn"
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("nope", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="needs images"):
        build_backbone("resnet18", (64,), 10)
    assert set(BACKBONES) >= {"mlp", "fastcnn", "resnet18", "vgg16", "labelme-cnn"}


def test_batches_never_leave_a_single_item() -> None:
    assert _batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert _batches(9, 4) == [(0, 4), (4, 9)]
    assert _batches(1, 4) == [(0, 1)]
    sizes = [e - s for s, e in _batches(1025, 256)]
    assert min(sizes) >= 2 and sum(sizes) == 1025


def test_random_crop_flip_matches_a_per_image_reference() -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    pad = 2
    g = torch.Generator().manual_seed(5)
    out = random_crop_flip(x, pad=pad, flip=True, generator=g)
    # Replay the same random draws and crop each image by hand.
    g = torch.Generator().manual_seed(5)
    oy = torch.randint(0, 2 * pad + 1, (6, 1), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (6, 1), generator=g)
    flips = torch.rand(6, 1, generator=g) < 0.5
    xp = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect")
    for i in range(6):
        ref = xp[i, :, oy[i, 0] : oy[i, 0] + 8, ox[i, 0] : ox[i, 0] + 8]
        if flips[i, 0]:
            ref = ref.flip(-1)
        torch.testing.assert_close(out[i], ref)


def test_device_data_normalises_images_and_features() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    data = DeviceData(imgs, imgs[:5], imgs[:5], np.zeros(5, int), np.zeros(5, int), torch.device("cpu"))
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (50, 3, 8, 8)
    xb = data.prepare(data.x_train)
    assert abs(float(xb.mean())) < 0.05 and abs(float(xb.std()) - 1) < 0.05
    feats = rng.normal(3, 2, (50, 4)).astype(np.float32)
    d2 = DeviceData(feats, None, None, None, None, torch.device("cpu"))
    torch.testing.assert_close(d2.prepare(d2.x_train).mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="uint8"):
        DeviceData(imgs.astype(np.float32), None, None, None, None, torch.device("cpu"))


def test_a_column_constant_in_training_keeps_its_scale() -> None:
    # its std was floored at 1e-6, so a value of 1 at prediction entered the network as 1e6
    rng = np.random.default_rng(0)
    feats = np.c_[rng.normal(3, 2, (50, 3)), np.zeros(50)].astype(np.float32)
    data = DeviceData(feats, None, None, None, None, torch.device("cpu"))
    assert float(data.std[0, 3]) == 1.0 and float(data.std[0, 0]) > 1.0
    new = torch.tensor([[3.0, 3.0, 3.0, 1.0]])
    assert float(data.prepare(new).abs().max()) < 2.0
    one = DeviceData(feats[:1], None, None, None, None, torch.device("cpu"))  # one item: no std at all
    assert torch.isfinite(one.prepare(one.x_train)).all()
    tiny = np.c_[feats, rng.normal(0, 5e-7, 50)].astype(np.float32)  # a column that varies, however little, is standardised
    d3 = DeviceData(tiny, None, None, None, None, torch.device("cpu"))
    assert abs(float(d3.prepare(d3.x_train)[:, 4].std()) - 1) < 0.05
    stamps = np.c_[feats, 1.7e9 + rng.choice([-512.0, -256.0, 256.0, 512.0], 50)].astype(np.float32)  # a real spread around a large mean
    d4 = DeviceData(stamps, None, None, None, None, torch.device("cpu"))
    assert abs(float(d4.prepare(d4.x_train)[:, 4].std()) - 1) < 0.05


def test_sgd_without_momentum_trains() -> None:
    # nesterov=True was always passed, which torch refuses without a momentum
    from kdcrowd.training import _optimizer

    net = torch.nn.Linear(3, 2)
    for momentum in (0.0, 0.9):
        opt = _optimizer(net, TrainConfig(optimizer="sgd", momentum=momentum, device="cpu", progress=False))
        assert opt.param_groups[0]["nesterov"] == (momentum > 0)
        before = net.weight.detach().clone()
        net(torch.ones(4, 3)).sum().backward()
        opt.step()
        opt.zero_grad()
        assert not torch.equal(net.weight, before)  # a step was taken


def test_device_data_preprocessing_only_keeps_no_data() -> None:
    rng = np.random.default_rng(0)
    for x in (rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8), rng.normal(3, 2, (50, 4)).astype(np.float32)):
        data = DeviceData(x, x[:5], x[:5], np.zeros(5, int), np.zeros(5, int), torch.device("cpu"), y_train=np.zeros(50, int))
        prep = data.preprocessing_only()
        assert prep.n_train == 0 and prep.input_shape == data.input_shape and prep.is_image == data.is_image
        assert prep.x_val is prep.x_test is prep.y_train is prep.y_val is prep.y_test is None
        assert prep.x_train.untyped_storage().nbytes() == 0  # no view of the training data
        torch.testing.assert_close(prep.prepare(data.x_train[:7]), data.prepare(data.x_train[:7]), rtol=0, atol=0)
        assert data.n_train == 50 and data.x_val is not None  # the original is untouched


def _fit_blobs(seed: int, epochs: int = 8):
    x, y = _blobs(600, seed=1)
    data = DeviceData(x[:400], x[400:500], x[500:], y[400:500], y[500:], torch.device("cpu"), y_train=y[:400])
    torch.manual_seed(seed)
    module = SupervisedObjective(build_backbone("mlp", (5,), 3), torch.as_tensor(y[:400]))
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=seed, progress=False)
    return module, data, fit(module, data, cfg), cfg


def test_fit_learns_selects_and_is_reproducible() -> None:
    module, data, res, cfg = _fit_blobs(0)
    assert len(res.history) == 8 and {"epoch", "loss", "val_accuracy"} <= set(res.history[0])
    accs = [h["val_accuracy"] for h in res.history]
    assert max(accs) > 0.95
    assert res.best_epoch == int(np.argmax(accs)) + 1
    module.load_state_dict(res.best_state, strict=False)
    acc = float((predict_proba(module, data, data.x_val, cfg).argmax(1) == data.y_val).float().mean())
    assert acc == pytest.approx(max(accs))
    _, _, res2, _ = _fit_blobs(0)
    assert [h["loss"] for h in res.history] == [h["loss"] for h in res2.history]


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD), ("radam", torch.optim.RAdam)])
def test_each_optimizer_is_the_one_named_and_learns(name: str, cls: type) -> None:
    from kdcrowd.training import _optimizer

    module, data, _, _ = _fit_blobs(0, epochs=1)
    cfg = TrainConfig(epochs=8, batch_size=64, lr=3e-3 if name != "sgd" else 0.05, optimizer=name, weight_decay=1e-4, seed=0, progress=False)
    assert type(_optimizer(module, cfg)) is cls
    torch.manual_seed(0)
    fresh = SupervisedObjective(build_backbone("mlp", (5,), 3), module.targets)
    res = fit(fresh, data, cfg)
    assert max(h["val_accuracy"] for h in res.history) > 0.95
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_fit_times_its_steps_evaluation_and_checkpoints_apart(tmp_path) -> None:
    """FitResult.timings: the optimisation steps, the per-epoch evaluation (validation and
    callbacks) and the checkpoints add up to ``seconds``; a resumed fit continues them."""
    import time

    module, data, res, _ = _fit_blobs(0)
    t = res.timings
    assert set(t) == {"training", "evaluation", "checkpointing", "setup"} and t["training"] > 0 and t["evaluation"] > 0
    assert t["checkpointing"] == 0.0
    assert t["training"] + t["evaluation"] + t["checkpointing"] == pytest.approx(res.seconds, abs=0.02)

    def slow(epoch, module, record):  # a callback's time is evaluation, not training
        time.sleep(0.05)

    ck = tmp_path / "fit.pt"
    torch.manual_seed(0)
    module = type(module)(build_backbone("mlp", (5,), 3), module.targets)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, seed=0, progress=False, checkpoint=str(ck))
    res = fit(module, data, cfg, callbacks=[slow])
    assert res.timings["evaluation"] >= 0.15 and res.timings["checkpointing"] > 0
    again = fit(module, data, cfg, callbacks=[slow])  # complete checkpoint: the same timings back
    assert again.timings["training"] == pytest.approx(res.timings["training"]) and again.timings["evaluation"] == pytest.approx(res.timings["evaluation"])


def test_fit_reports_a_diverging_loss() -> None:
    x, y = _blobs(100)
    data = DeviceData(x, None, None, None, None, torch.device("cpu"))

    class Bad(SupervisedObjective):
        def training_loss(self, x, idx, epoch):  # type: ignore[override]
            return super().training_loss(x, idx, epoch) * float("nan")

    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(Bad(build_backbone("mlp", (5,), 3), torch.as_tensor(y)), data, TrainConfig(epochs=1, progress=False))


def test_crop_padding_follows_the_short_side_and_is_checked() -> None:
    """Wide images (8 x 72): the default padding is 1/8 of the short side (it was 1/8 of the
    width, 9 px, which torch's reflect padding refused mid-training); a set padding as large
    as the short side is one error naming crop_padding before training."""
    from kdcrowd.config import ConfigError

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 8, 72, 3), dtype=np.uint8)
    data = DeviceData(imgs, imgs[:2], imgs[:2], np.zeros(2, int), np.zeros(2, int), torch.device("cpu"))
    module = SupervisedObjective(build_backbone("fastcnn", data.input_shape, 2), torch.zeros(6, dtype=torch.long))
    fit(module, data, TrainConfig(epochs=1, batch_size=3, progress=False))
    with pytest.raises(ConfigError, match=r"crop_padding must be less than the images' short side \(8 px\); got 8"):
        fit(module, data, TrainConfig(epochs=1, batch_size=3, progress=False, crop_padding=8))
    fit(module, data, TrainConfig(epochs=1, batch_size=3, progress=False, crop_padding=8, augment=False))  # no crops: no padding


def test_a_warm_up_longer_than_training_is_refused_and_no_items_predict_as_k_columns() -> None:
    """warmup_epochs 5 of 3 epochs kept the learning rate rising to 0.6 × lr and never
    decaying; predict_proba of no items returned a bare (0,) tensor on the CPU, whose
    argmax(1) failed, and with test-time augmentation it raised."""
    import numpy as np

    from kdcrowd.config import ConfigError
    from kdcrowd.training import DeviceData, TrainConfig, predict_proba

    with pytest.raises(ConfigError, match="warmup_epochs 5 is longer than the 3 epoch"):
        TrainConfig(epochs=3, warmup_epochs=5)
    TrainConfig(epochs=3, warmup_epochs=5, schedule="constant")  # no warm-up there: nothing to refuse
    TrainConfig(epochs=3, warmup_epochs=3)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    data = DeviceData(x, x, x, np.zeros(10, dtype=np.int64), np.zeros(10, dtype=np.int64), torch.device("cpu"))
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    net.predict_proba = lambda z: net(z).softmax(-1)  # type: ignore[attr-defined]
    assert predict_proba(net, data, data.x_test[:0]).shape == (0, 3)
    imgs = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    idata = DeviceData(imgs, imgs, imgs, np.zeros(6, dtype=np.int64), np.zeros(6, dtype=np.int64), torch.device("cpu"))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    cnn.predict_proba = lambda z: cnn(z).softmax(-1)  # type: ignore[attr-defined]
    predict_proba(cnn, idata, idata.x_test[:2])  # (the lazy layer takes its shape)
    assert predict_proba(cnn, idata, idata.x_test[:0], TrainConfig(tta="flip")).shape == (0, 5)


def test_the_epoch_loss_is_a_mean_over_items() -> None:
    """A short last batch counts by its items: four items of loss 1 and two of loss 0 make an
    epoch loss of 4/6. The mean of the batches' means depends on the shuffle: 0.5 where one
    batch holds the four ones, 0.625 where it holds three of them."""

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.per_item = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 2) + 0 * self.w

        def training_loss(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
            return self.per_item[idx].mean() + 0 * self.w.sum()

    data = DeviceData(np.zeros((6, 2), np.float32), None, None, None, None, torch.device("cpu"))
    res = fit(Fixed(), data, TrainConfig(epochs=2, batch_size=4, progress=False, device="cpu"))
    assert [h["loss"] for h in res.history] == pytest.approx([4 / 6, 4 / 6])
