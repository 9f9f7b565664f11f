"""2D feature extractors for perceptual / content losses: VGG19 and MobileNetV2.

Both are built here (no torchvision) with torchvision-compatible state-dict keys (``features.0.weight``,
...), so a user's local ``vgg19-*.pth`` / ``mobilenet_v2-*.pth`` loads with ``weights_path``. Nothing is ever
downloaded: without ``weights_path`` the weights are random (a warning says so). Inputs are 1-channel (or
``in_channels``) images in ``input_range``; they are rescaled to [0, 1], replicated to 3 channels and
ImageNet-normalised inside. The extractors are frozen (``requires_grad=False``) and stay in eval mode
(``train()`` does not switch their batch norm). ``forward`` returns a dict ``{layer_name: feature_map}`` in
the order of ``layers``. 3D perceptual losses slice volumes and call these per slice.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from medsr.networks.blocks import conv_nd

__all__ = ["VGG19Features", "MobileNetV2Features", "VGG19_LAYERS", "load_torch_weights"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def _vgg19_layer_names() -> dict[str, int]:
    names: dict[str, int] = {}
    idx, block, conv = 0, 1, 1
    for v in _VGG19_CFG:
        if v == "M":
            names[f"pool{block}"] = idx
            idx += 1
            block, conv = block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = idx
            names[f"relu{block}_{conv}"] = idx + 1
            idx += 2
            conv += 1
    return names


#: layer name (``conv5_4``, ``relu5_4``, ``pool5``, ...) -> index in torchvision's ``vgg19().features``.
VGG19_LAYERS: dict[str, int] = _vgg19_layer_names()


def load_torch_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` (weights only, CPU), unwrapping ``state_dict``/``params``/``params_ema``.

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        ValueError: when the file holds no state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights_path '{path}' does not exist (weights are never downloaded)")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights_path '{path}': expected a state dict of tensors")
    return obj


class _FrozenExtractor(nn.Module):
    """Common input handling, freezing and weight loading."""

    features: nn.Sequential

    def __init__(self, in_channels: int, input_range: Sequence[float], normalize: bool) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        lo, hi = (float(v) for v in input_range)
        if not hi > lo:
            raise ValueError(f"input_range must be (low, high) with high > low, got {input_range}")
        self.in_channels, self.input_range, self.normalize = in_channels, (lo, hi), normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _finish(self, weights_path: str | os.PathLike | None, name: str) -> None:
        if weights_path is None:
            warnings.warn(f"{name}: no weights_path given, the feature extractor has random weights", stacklevel=3)
        else:
            sd = load_torch_weights(weights_path)
            own = self.features.state_dict()
            wanted = {k: sd[f"features.{k}"] for k in own if f"features.{k}" in sd}
            missing = sorted(set(own) - set(wanted))
            if missing:
                raise ValueError(
                    f"weights_path '{weights_path}': missing keys for {name}: {['features.' + k for k in missing][:8]}"
                )
            for k, v in wanted.items():
                if v.shape != own[k].shape:
                    raise ValueError(
                        f"weights_path '{weights_path}': features.{k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
                    )
            self.features.load_state_dict(wanted)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):  # noqa: D102 - frozen extractor: always eval
        return super().train(False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale to [0, 1], replicate to 3 channels, ImageNet-normalise. ``(B, C, H, W)`` in, ``(B, 3, H, W)`` out."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        lo, hi = self.input_range
        if lo != 0.0 or hi != 1.0:
            x = (x - lo) / (hi - lo)
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize:
            x = (x - self.mean) / self.std
        return x

    def _run(self, x: torch.Tensor, indices: dict[str, int]) -> dict[str, torch.Tensor]:
        x = self.prepare(x)
        by_index: dict[int, list[str]] = {}
        for name, i in indices.items():
            by_index.setdefault(i, []).append(name)
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            for name in by_index.get(i, []):
                out[name] = x
            if len(out) == len(indices):
                break
        return {name: out[name] for name in indices}


class VGG19Features(_FrozenExtractor):
    """VGG19 feature extractor (Simonyan & Zisserman, ICLR 2015) as used by SRGAN/ESRGAN perceptual losses.

    ``self.features`` mirrors torchvision's ``vgg19().features`` (same indices, so ``features.34.weight`` is
    ``conv5_4``), truncated after the deepest requested layer. Input ``(B, in_channels, H, W)`` in
    ``input_range``; output ``{name: (B, C_l, H_l, W_l)}``. Layer names: ``convX_Y`` (before ReLU, ESRGAN),
    ``reluX_Y`` (after, SRGAN), ``poolX`` (see :data:`VGG19_LAYERS`).

    Args:
        weights_path: a torchvision-format VGG19 state dict (``classifier.*`` keys are ignored).
        layers: layer names to return.
        in_channels: 1 (replicated to RGB) or 3.
        input_range: intensity range of the input, mapped to [0, 1].
        normalize: apply ImageNet mean/std.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        layers: Sequence[str] = ("relu5_4",),
        in_channels: int = 1,
        input_range: Sequence[float] = (0.0, 1.0),
        normalize: bool = True,
    ) -> None:
        super().__init__(in_channels, input_range, normalize)
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if unknown or not layers:
            raise ValueError(f"layers: unknown VGG19 layer names {unknown}; choose from {list(VGG19_LAYERS)}")
        self.layer_indices = {name: VGG19_LAYERS[name] for name in layers}
        last = max(self.layer_indices.values())
        modules: list[nn.Module] = []
        cin = 3
        for v in _VGG19_CFG:
            if v == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [conv_nd(2, cin, int(v), 3), nn.ReLU(inplace=False)]
                cin = int(v)
        self.features = nn.Sequential(*modules[: last + 1])
        self._finish(weights_path, "VGG19Features")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps ``{name: tensor}`` for ``(B, in_channels, H, W)`` images."""
        return self._run(x, self.layer_indices)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class _ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            conv_nd(2, cin, cout, kernel, stride=stride, bias=False, groups=groups),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            _ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            conv_nd(2, hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Features(_FrozenExtractor):
    """MobileNetV2 feature extractor (Sandler et al., CVPR 2018), the SwiftSRGAN content-loss network.

    ``self.features`` mirrors torchvision's ``mobilenet_v2().features`` (``features.0.0.weight``,
    ``features.1.conv.0.0.weight``, ..., ``features.18.0.weight``), truncated after the deepest requested
    block. Layer names are ``"features.N"`` (the output of block N, 0..18); the default is the whole
    ``features`` stack (1280 channels at 1/32 resolution). Input ``(B, in_channels, H, W)``; output
    ``{name: tensor}``.

    Args:
        weights_path: a torchvision-format MobileNetV2 state dict (``classifier.*`` keys are ignored).
        layers: block outputs to return.
        in_channels: 1 (replicated to RGB) or 3.
        input_range: intensity range of the input, mapped to [0, 1].
        normalize: apply ImageNet mean/std.
        width_mult: width multiplier (1.0 for the published weights).
    """

    _SETTINGS = [
        [1, 16, 1, 1],
        [6, 24, 2, 2],
        [6, 32, 3, 2],
        [6, 64, 4, 2],
        [6, 96, 3, 1],
        [6, 160, 3, 2],
        [6, 320, 1, 1],
    ]

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        layers: Sequence[str] = ("features.18",),
        in_channels: int = 1,
        input_range: Sequence[float] = (0.0, 1.0),
        normalize: bool = True,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__(in_channels, input_range, normalize)
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        valid = {f"features.{i}": i for i in range(19)}
        unknown = [name for name in layers if name not in valid]
        if unknown or not layers:
            raise ValueError(
                f"layers: unknown MobileNetV2 layer names {unknown}; choose from features.0 .. features.18"
            )
        self.layer_indices = {name: valid[name] for name in layers}
        cin = _make_divisible(32 * width_mult)
        last_c = _make_divisible(1280 * max(1.0, width_mult))
        modules: list[nn.Module] = [_ConvBNReLU6(3, cin, stride=2)]
        for t, c, n, s in self._SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                modules.append(_InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        modules.append(_ConvBNReLU6(cin, last_c, kernel=1))
        self.features = nn.Sequential(*modules[: max(self.layer_indices.values()) + 1])
        self._finish(weights_path, "MobileNetV2Features")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps ``{name: tensor}`` for ``(B, in_channels, H, W)`` images."""
        return self._run(x, self.layer_indices)
