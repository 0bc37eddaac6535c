"""Backbones: networks mapping an input batch to true-label logits.

Every backbone follows one contract so crowd models and students can use any of them:

* ``forward(x) -> (B, K)`` logits, equal to ``head(features(x))``;
* ``features(x) -> (B, F)`` the penultimate representation (CoNAL's gate reads it);
* ``feature_dim`` (F) and ``head`` (the final :class:`torch.nn.Linear`).

Images enter channels-first as float tensors ``(B, C, H, W)`` (the training loop converts
and normalises the uint8 images kept on the device); feature vectors enter as ``(B, D)``.

Which one to pick:

* ``mlp`` — feature vectors (LabelMe bag-of-words, digits);
* ``fastcnn`` — a small, fast CNN for 28–32 px images in the style of the CIFAR-10
  speedrun networks (airbench / hlb-CIFAR10): three conv groups, batch norm, GELU;
* ``airbench`` — the airbench-class CIFAR network (:class:`AirbenchNet`): a frozen 2×2
  patch-whitening first layer initialised from the training images (by
  :func:`kdcrowd.training.fit`, through :meth:`AirbenchNet.init_from_inputs`), identity
  (dirac) initialised convolutions, fast-momentum batch norm without learned scales; best
  with its recipe, :data:`kdcrowd.training.AIRBENCH_RECIPE`;
* ``resnet18`` — the CIFAR ResNet-18 (3×3 stem, no max-pool);
* ``vgg16`` — VGG-16 with batch norm, the backbone of the paper-era baselines;
* ``labelme-cnn`` — a CNN for LabelMe's 128 px scene images (strided stem, four groups);
* ``efficientnet-lite0`` (``-lite1``, ``-lite2``), ``torchvision:NAME``, ``timm:NAME`` — ImageNet-pretrained networks
  (:mod:`kdcrowd.models.pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..config import _setting, closest

__all__ = [
    "IMAGE_FEATURE_MODES",
    "check_backbone_items",
    "check_backbone_name",
    "image_feature_backbone",
    "MLP",
    "FastCNN",
    "AirbenchNet",
    "init_from_training_inputs",
    "ResNet18",
    "VGG16BN",
    "LabelMeCNN",
    "BACKBONES",
    "build_backbone",
    "default_backbone",
]


class _Backbone(nn.Module):
    """Shared parts: ``features(x) = body(x)`` and ``forward(x) = head(features(x))``."""

    feature_dim: int
    body: nn.Module
    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(_Backbone):
    """Multi-layer perceptron for feature vectors ``(B, D)``.

    Args:
        in_features: input dimension D.
        n_classes: number of classes K.
        hidden: widths of the hidden layers.
        dropout: dropout probability after each hidden layer.
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.GELU(),
    ]


class _ConvGroup(nn.Sequential):
    """conv → max-pool(2) → BN → GELU → conv → BN → GELU (the speedrun block)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
        )


class FastCNN(_Backbone):
    """Small fast CNN for 28–32 px images, after the CIFAR-10 speedrun networks.

    A 3×3 stem then three conv groups (each halving the resolution), global max-pool and a
    linear head scaled down by ``head_scale`` (a large-logit damping trick of those
    networks). About 1.9 M parameters at the default widths.

    Args:
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST).
        n_classes: number of classes K.
        widths: channels of the stem and the three groups.
        head_scale: multiplier of the head's output.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        widths: Sequence[int] = (32, 64, 256, 256),
        head_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.body = nn.Sequential(
            *_conv_bn(in_channels, w0),
            _ConvGroup(w0, w1),
            _ConvGroup(w1, w2),
            _ConvGroup(w2, w3),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = w3
        self.head = nn.Linear(w3, n_classes, bias=False)
        self.head_scale = head_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.head_scale


class _FixedScaleBN(nn.BatchNorm2d):
    """Batch norm with the scale fixed at 1 (only the shift is learned) and fast running
    statistics, as in airbench; its bias is a *norm bias* (a batch norm's), which
    :class:`~kdcrowd.training.TrainConfig`'s ``bias_lr_scale`` speeds up."""

    def __init__(self, c: int, momentum: float) -> None:
        super().__init__(c, momentum=momentum, eps=1e-12)
        self.weight.requires_grad_(False)


class _AirbenchGroup(nn.Sequential):
    """conv → max-pool(2) → BN → GELU → conv → BN → GELU, the convolutions dirac-initialised."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float) -> None:
        convs = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)]
        for conv in convs:  # the first c_in filters start as the identity on their input channel
            w = conv.weight.data
            nn.init.dirac_(w[: w.shape[1]])
        super().__init__(
            convs[0], nn.MaxPool2d(2), _FixedScaleBN(c_out, bn_momentum), nn.GELU(),
            convs[1], _FixedScaleBN(c_out, bn_momentum), nn.GELU(),
        )


class AirbenchNet(_Backbone):
    """The airbench-class CIFAR network (after Jordan, *94% on CIFAR-10 in 3.29 seconds on a
    single GPU*, 2024): a 2×2 patch-whitening convolution, then three conv groups (each
    halving the resolution), global max-pool and a bias-free linear head scaled by
    ``head_scale``. About 1.97 M parameters at the default widths.

    The whitening layer's weights are buffers (never trained): the eigenvectors of the
    covariance of the 2×2 patches of the training images, scaled by the inverse square
    root of their eigenvalues, and their negatives (so ``2 · C · 4`` output channels, then
    GELU). :meth:`init_from_inputs` computes them; :func:`kdcrowd.training.fit` calls it on
    the normalised training images before the first epoch (once: ``whitened`` records it,
    and is saved with the state). Its bias is learned, as a norm bias (``norm_bias_names``:
    :class:`~kdcrowd.training.TrainConfig`'s ``bias_lr_scale`` speeds it up).

    Args:
        in_channels: image channels.
        n_classes: number of classes K.
        widths: channels of the three conv groups.
        bn_momentum: batch-norm running-statistics momentum (torch's convention: the
            weight of the new batch; airbench uses 0.6).
        head_scale: multiplier of the head's output.
        whiten_eps: added to the patch-covariance eigenvalues before the inverse square root.
    """

    #: The whitening bias is a norm bias (``bias_lr_scale``); named on the class, which a
    #: deep copy keeps (a parameter's own attributes it drops).
    norm_bias_names = ("whiten_bias",)

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        widths: Sequence[int] = (64, 256, 256),
        bn_momentum: float = 0.6,
        head_scale: float = 1 / 9,
        whiten_eps: float = 5e-4,
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.patch = 2
        self.whiten_eps = whiten_eps
        c_white = 2 * in_channels * self.patch * self.patch
        self.register_buffer("whiten_weight", torch.zeros(c_white, in_channels, self.patch, self.patch))
        self.whiten_bias = nn.Parameter(torch.zeros(c_white))
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))
        self.body = nn.Sequential(
            _AirbenchGroup(c_white, w1, bn_momentum),
            _AirbenchGroup(w1, w2, bn_momentum),
            _AirbenchGroup(w2, w3, bn_momentum),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = w3
        self.head = nn.Linear(w3, n_classes, bias=False)
        self.head_scale = head_scale

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """The whitening layer's pre-activation output ``(B, 2·C·4, H-1, W-1)``."""
        return nn.functional.conv2d(x, self.whiten_weight.to(x.dtype), self.whiten_bias.to(x.dtype))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(nn.functional.gelu(self.whiten(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.head_scale

    @torch.no_grad()
    def init_from_inputs(self, x: torch.Tensor) -> None:
        """Set the whitening weights from normalised training images ``x`` ``(N, C, H, W)``
        (a few thousand are plenty): the covariance of all their 2×2 patches (the patch mean
        removed) is eigendecomposed in float64, and each eigenvector ``v`` with eigenvalue
        ``λ`` gives the filters ``± v / sqrt(λ + whiten_eps)``; the bias is reset to 0."""
        c, p = x.shape[1], self.patch
        patches = nn.functional.unfold(x.double(), p).transpose(1, 2).reshape(-1, c * p * p)  # (N·L, C·p·p)
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / max(1, patches.shape[0] - 1)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        w = (evecs / torch.sqrt(evals.clamp_min(0) + self.whiten_eps)).T.reshape(c * p * p, c, p, p)
        self.whiten_weight.copy_(torch.cat([w, -w]).to(self.whiten_weight))
        self.whiten_bias.zero_()
        self.whitened.fill_(True)


def init_from_training_inputs(module: nn.Module, inputs: Callable[[], torch.Tensor]) -> int:
    """Initialise every not-yet-initialised data-dependent layer of ``module`` (a submodule
    with ``init_from_inputs`` and a false ``whitened`` buffer, e.g. :class:`AirbenchNet`)
    from ``inputs()`` (normalised training images, computed only when some layer needs
    them); returns how many were initialised."""
    todo = [m for m in module.modules() if hasattr(m, "init_from_inputs") and not bool(getattr(m, "whitened", True))]
    if not todo:
        return 0
    x = inputs()
    for m in todo:
        m.init_from_inputs(x)
    return len(todo)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(_Backbone):
    """ResNet-18, CIFAR variant (He et al., CVPR 2016): 3×3 stem, no stem max-pool.

    Args:
        in_channels: image channels.
        n_classes: number of classes K.
    """

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        c = 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_BasicBlock(c, width, stride), _BasicBlock(width, width, 1)]
            c = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = 512
        self.head = nn.Linear(512, n_classes)


class VGG16BN(_Backbone):
    """VGG-16 with batch norm (Simonyan & Zisserman, ICLR 2015), adapted to small images.

    Args:
        in_channels: image channels.
        n_classes: number of classes K.
    """

    _CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in self._CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = 512
        self.head = nn.Linear(512, n_classes)


class LabelMeCNN(_Backbone):
    """CNN for 128 px scene images (LabelMe): strided stem, max-pool, three conv groups.

    128 → 64 (stem, stride 2) → 32 (max-pool) → 16 → 8 → 4 (groups), global average pool,
    dropout, linear. About 0.17 GFLOP per image forward, so a CPU epoch over LabelMe's
    1000 training images takes seconds, not minutes.

    Args:
        in_channels: image channels.
        n_classes: number of classes K.
        widths: channels of the stem and the three groups.
        dropout: dropout before the head.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        widths: Sequence[int] = (24, 64, 128, 256),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(in_channels, widths[0], stride=2), nn.MaxPool2d(2)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers.append(_ConvGroup(c_in, c_out))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*layers)
        self.feature_dim = widths[-1]
        self.head = nn.Linear(widths[-1], n_classes)


#: The smallest image side each network's poolings leave a feature map for (measured: a
#: forward pass of every side from 1 to 39 px).
MIN_IMAGE_SIDE = {"fastcnn": 8, "airbench": 9, "resnet18": 1, "vgg16": 32, "labelme-cnn": 31}


def _image_channels(shape: Sequence[int], name: str) -> int:
    if len(shape) != 3:
        raise ValueError(f"backbone '{name}' needs images (C, H, W); got input shape {tuple(shape)}. Use {_setting('backbone', 'mlp')} for feature vectors.")
    side = MIN_IMAGE_SIDE.get(name, 1)
    if min(shape[1:]) < side:
        raise ValueError(f"backbone '{name}' needs images of at least {side} px a side; these are {shape[1]}x{shape[2]}: "
                         f"use {_setting('backbone', 'fastcnn')} (from {MIN_IMAGE_SIDE['fastcnn']} px) or larger images")
    return int(shape[0])


#: The backbones that take images (C, H, W), not feature rows: the network of each name,
#: built on the images' channels.
_IMAGE_BACKBONES: dict[str, Callable[[int, int], nn.Module]] = {
    "fastcnn": FastCNN, "airbench": AirbenchNet, "resnet18": ResNet18, "vgg16": VGG16BN, "labelme-cnn": LabelMeCNN,
}

BACKBONES: dict[str, Callable[[Sequence[int], int], nn.Module]] = {
    "mlp": lambda shape, k: MLP(int(torch.tensor(shape).prod()), k),
    # the annot-mix benchmark's head on frozen features (conf/architecture/dino.yaml):
    # one hidden layer of 128, dropout 0.5
    "mlp-128": lambda shape, k: MLP(int(torch.tensor(shape).prod()), k, hidden=(128,), dropout=0.5),
    **{name: (lambda shape, k, net=net, name=name: net(_image_channels(shape, name), k)) for name, net in _IMAGE_BACKBONES.items()},
}


def build_backbone(name: str, input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """Build a backbone by name.

    Args:
        name: one of :data:`BACKBONES` (``mlp``, ``mlp-128``, ``fastcnn``, ``airbench``, ``resnet18``, ``vgg16``,
            ``labelme-cnn``), ``auto`` for :func:`default_backbone`, or an ImageNet-pretrained
            network to fine-tune (:mod:`kdcrowd.models.pretrained`): ``efficientnet-lite0``
            (``kdcrowd[pretrained]``), ``efficientnet-lite1``/``-lite2``
            (``kdcrowd[pretrained-lite]``), ``torchvision:NAME[@WEIGHTS]``, ``timm:NAME[@FILE]``.
        input_shape: ``(C, H, W)`` for images or ``(D,)`` for feature vectors.
        n_classes: number of classes K.
    """
    if name == "auto":
        name = default_backbone(input_shape)
    from .pretrained import build_pretrained_backbone, is_pretrained_name  # torchvision / timm stay unimported

    if is_pretrained_name(name):
        return build_pretrained_backbone(name, input_shape, n_classes)
    check_backbone_name(name)
    return BACKBONES[name](input_shape, n_classes)


def check_backbone_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a backbone :func:`build_backbone` builds:
    ``auto``, a name of :data:`BACKBONES` or a pretrained network's (naming the closest)."""
    from .pretrained import EFFICIENTNET_LITES, is_pretrained_name

    if name == "auto" or name in BACKBONES or is_pretrained_name(name):
        return
    names = sorted(BACKBONES) + ["auto", *EFFICIENTNET_LITES]
    near = closest(str(name), names)
    raise ValueError(f"unknown backbone {name!r}; " + (f"did you mean {near!r}? " if near else "") + f"choose one of {', '.join(names)}, torchvision:NAME or timm:NAME")


def check_backbone_input(name: str, input_shape: Sequence[int]) -> None:
    """The error :func:`build_backbone` would raise because ``input_shape`` is not the kind
    of item the backbone takes (feature rows for an image network, grey images for a
    pretrained one), raised without building it: a command checks it before writing."""
    from .pretrained import check_rgb_input, is_pretrained_name

    if is_pretrained_name(name):
        check_rgb_input(name, input_shape)
    elif name in _IMAGE_BACKBONES:
        _image_channels(input_shape, name)


def check_backbone_items(name: str, item_shape: Sequence[int]) -> None:
    """:func:`check_backbone_input` for items of ``item_shape`` as data sets and commands
    hold them: uint8 images ``(H, W, C)`` (the networks take ``(C, H, W)``) or feature rows."""
    shape = tuple(item_shape)
    check_backbone_input(name, (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape)


def default_backbone(input_shape: Sequence[int]) -> str:
    """The backbone used when none is named: MLP for vectors, FastCNN for images up to 64 px on
    their short side, else LabelMeCNN."""
    if len(input_shape) == 1:
        return "mlp"
    return "fastcnn" if min(input_shape[1:]) <= 64 else "labelme-cnn"  # the short side: LabelMeCNN needs 32 px of it


def default_image_backbone(input_shape: Sequence[int] | None = None) -> tuple[str, str]:
    """``(backbone name, reason)`` for ``kdcrowd fit --images``.

    ``efficientnet-lite0`` (frozen ImageNet features, computed once with
    :func:`extract_features`, an MLP head trained on them) when ``kdcrowd[pretrained]`` is
    installed; otherwise the network trained from scratch that
    :func:`kdcrowd.models.backbones.default_backbone` picks (``auto`` without
    ``input_shape``) and the hint to install the extra.
    """
    from .pretrained import EFFICIENTNET_LITE0, PRETRAINED_EXTRA, pretrained_extra_available

    if pretrained_extra_available():
        return EFFICIENTNET_LITE0, "frozen ImageNet features of EfficientNet-Lite0 (kdcrowd[pretrained]), computed once and cached; an MLP head is trained on them"
    name = "auto"
    if input_shape is not None:
        name = default_backbone(input_shape)
    return name, f"{PRETRAINED_EXTRA} for ImageNet features"


#: ``image_features`` (``kdcrowd fit --image-features`` and the estimator): how images are used.
IMAGE_FEATURE_MODES = ("auto", "frozen", "none")


def image_feature_backbone(mode: str, backbone: str) -> tuple[str | None, str]:
    """``(pretrained backbone name or None, one line saying which backbone and why)`` for
    images with ``image_features=mode`` and ``backbone``: the name of the network whose
    frozen features a head is trained on, or ``None`` when ``backbone`` trains on the pixels
    (from scratch, or fine-tuned as a whole). ``auto`` is frozen EfficientNet-Lite0 features
    with ``backbone="auto"`` when ``kdcrowd[pretrained]`` is installed (else a network from
    scratch), the frozen features of a pretrained ``backbone`` name only with ``frozen``.
    Errors (``ValueError``) name the options the active :func:`~kdcrowd.config.option_style` way."""
    from ..config import _name
    from .pretrained import EFFICIENTNET_LITE0, EFFICIENTNET_LITES, is_pretrained_name, lite_extra, pretrained_extra_available

    opt, bb = _name("image_features"), _name("backbone")
    if mode not in IMAGE_FEATURE_MODES:
        raise ValueError(f"{opt} must be auto, frozen or none, not {mode!r}")
    if mode == "none":
        return None, f"image backbone: {backbone}, trained on the images ({opt} none)"
    if backbone != "auto" and not is_pretrained_name(backbone):
        if mode == "frozen":
            raise ValueError(f"{opt} frozen computes the features of a pretrained network; {bb} {backbone} is trained from scratch (give {bb} auto, {', '.join(EFFICIENTNET_LITES)}, torchvision:NAME or timm:NAME)")
        return None, f"image backbone: {backbone}, trained from scratch ({bb})"
    if mode == "auto" and backbone != "auto":  # a pretrained name given: fine-tune the whole network
        return None, f"image backbone: {backbone}, fine-tuned as a whole ({bb}; {opt} frozen trains only a head on its frozen features)"
    name = EFFICIENTNET_LITE0 if backbone == "auto" else backbone
    if name in EFFICIENTNET_LITES and not pretrained_extra_available(name):
        if mode == "frozen":
            raise ValueError(f"{opt} frozen needs the {name} weights: {lite_extra(name)}")
        scratch, reason = default_image_backbone()
        return None, f"image backbone: {scratch} (FastCNN up to 64 px, LabelMe-CNN above), trained from scratch; {reason}"
    if backbone == "auto":
        _, reason = default_image_backbone()
        return name, f"image backbone: {name}: {reason} ({opt} none trains a network from scratch; {bb} {name} fine-tunes it)"
    return name, f"image backbone: {name}: frozen features, an MLP head trained on them ({opt} frozen)"
