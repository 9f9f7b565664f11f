"""Perceptual / content loss on 2D feature extractors (VGG19, MobileNetV2), usable on 2D and 3D images.

In 3D the 2D extractor sees a subset of slices along each axis (a 2.5D perceptual loss): ``slices_3d``
evenly spaced slices per axis, features compared slice by slice, the axes averaged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medsr.pipeline.losses.pixel import check_same_shape

__all__ = ["PerceptualLoss", "build_feature_extractor", "missing_weights_error"]

_EXTRACTORS = {"vgg19": "VGG19Features", "mobilenetv2": "MobileNetV2Features"}


def missing_weights_error(path: str | os.PathLike | None, what: str, switch_off: str) -> FileNotFoundError:
    """A ``FileNotFoundError`` that names the missing weights path and how to switch the term off."""
    if path is None:
        return FileNotFoundError(
            f"{what}: no weights_path given; pass the path of a local state dict (nothing is downloaded), "
            f"or switch this term off ({switch_off})"
        )
    return FileNotFoundError(
        f"{what}: weights file '{os.fspath(path)}' does not exist; give the path of a local state dict "
        f"(nothing is downloaded), or switch this term off ({switch_off})"
    )


def build_feature_extractor(
    name: str,
    weights_path: str | os.PathLike | None,
    layers: Sequence[str] | None = None,
    pretrained: bool = True,
    switch_off: str = "set its weight to 0",
) -> nn.Module:
    """Build a frozen ``medsr.networks`` feature extractor by name (``"vgg19"`` or ``"mobilenetv2"``).

    Args:
        name: extractor name.
        weights_path: local state dict; required unless ``pretrained=False``.
        layers: layer names to return (VGG19 only); ``None`` keeps the extractor's default.
        pretrained: ``False`` allows random initialisation (tests, ablations): the loss is then not perceptual.
        switch_off: how the user switches this term off, quoted in the error for a missing file.
    """
    key = str(name).lower().replace("_", "").replace("-", "")
    if key not in _EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {sorted(_EXTRACTORS)} or pass a module")
    what = f"{_EXTRACTORS[key]} weights"
    if weights_path is None and pretrained:
        raise missing_weights_error(None, what, f"{switch_off}; or pretrained=False for random features")
    if weights_path is not None and not os.path.isfile(weights_path):
        raise missing_weights_error(weights_path, what, switch_off)
    import medsr.networks as networks

    cls = getattr(networks, _EXTRACTORS[key], None)
    if cls is None:
        raise ImportError(f"medsr.networks has no {_EXTRACTORS[key]}; the perceptual loss needs it for {name!r}")
    kwargs: dict = {"weights_path": None if weights_path is None else os.fspath(weights_path)}
    if layers is not None:
        kwargs["layers"] = list(layers)
    if not pretrained:
        import inspect

        if "pretrained" in inspect.signature(cls).parameters:
            kwargs["pretrained"] = False
    return cls(**kwargs)


def _as_feature_list(features) -> list[torch.Tensor]:
    if isinstance(features, torch.Tensor):
        return [features]
    if isinstance(features, Mapping):
        return list(features.values())
    if isinstance(features, (list, tuple)):
        return list(features)
    raise TypeError(f"feature extractor returned {type(features).__name__}; expected a tensor, list or dict")


def _criterion(name: str | Callable) -> Callable:
    if callable(name):
        return name
    table = {"l1": F.l1_loss, "mse": F.mse_loss, "l2": F.mse_loss}
    key = str(name).lower()
    if key not in table:
        raise ValueError(f"PerceptualLoss: criterion must be one of {sorted(table)} or a callable, got {name!r}")
    return table[key]


class PerceptualLoss(nn.Module):
    """Distance between feature maps of SR and HR images from a frozen 2D extractor, for 2D and 3D inputs.

    Args:
        extractor: a module mapping ``(B, C, H, W)`` to a tensor, list or dict of feature maps, or a name
            (``"vgg19"`` for the VGG perceptual loss, ``"mobilenetv2"`` for the SwiftSRGAN content loss).
        weights_path: local weights for a named extractor (nothing is downloaded).
        layers: layer names for a named VGG19 extractor (e.g. ``["relu5_4"]`` for ESRGAN's ``conv5_4``).
        layer_weights: one weight per returned feature map (dict in the extractor's order, or a sequence);
            ``None`` weights all 1.
        criterion: ``"l1"`` (ESRGAN), ``"mse"`` (SRGAN/SwiftSRGAN content loss) or a callable.
        slices_3d: 3D inputs: number of evenly spaced slices taken along each axis in ``slice_axes``.
        slice_axes: 3D inputs: spatial axes (0, 1, 2 = D, H, W) to slice along.
        pretrained: with a named extractor, ``False`` allows ``weights_path=None`` (random features; tests only).
        switch_off: how to switch this term off, quoted in the missing-weights error.

    The extractor is frozen (``requires_grad=False``, eval mode); gradients flow to the SR image only.
    Channels: a 1-channel extractor sees every image channel separately; a 3-channel one gets a 1-channel
    image repeated three times.
    """

    def __init__(
        self,
        extractor: nn.Module | str = "vgg19",
        weights_path: str | os.PathLike | None = None,
        layers: Sequence[str] | None = None,
        layer_weights: Sequence[float] | Mapping[str, float] | None = None,
        criterion: str | Callable = "l1",
        slices_3d: int = 4,
        slice_axes: Sequence[int] = (0, 1, 2),
        pretrained: bool = True,
        switch_off: str = "set the perceptual weight to 0",
    ) -> None:
        super().__init__()
        if isinstance(extractor, str):
            extractor = build_feature_extractor(extractor, weights_path, layers, pretrained, switch_off)
        elif not isinstance(extractor, nn.Module):
            raise TypeError(f"PerceptualLoss: extractor must be an nn.Module or a name, got {type(extractor).__name__}")
        self.extractor = extractor.eval()
        for p in self.extractor.parameters():
            p.requires_grad_(False)
        if int(slices_3d) < 1:
            raise ValueError(f"PerceptualLoss: slices_3d must be >= 1, got {slices_3d}")
        bad_axes = [a for a in slice_axes if a not in (0, 1, 2)]
        if bad_axes or not slice_axes:
            raise ValueError(f"PerceptualLoss: slice_axes must be a non-empty subset of (0, 1, 2), got {slice_axes}")
        self.slices_3d = int(slices_3d)
        self.slice_axes = tuple(int(a) for a in slice_axes)
        self.layer_weights = layer_weights
        self.criterion = _criterion(criterion)
        self.in_channels = int(getattr(extractor, "in_channels", 1))

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.extractor.eval()  # the extractor stays frozen (batch norm statistics included)
        return self

    def _weights(self, n: int) -> list[float]:
        if self.layer_weights is None:
            return [1.0] * n
        weights = (
            list(self.layer_weights.values()) if isinstance(self.layer_weights, Mapping) else list(self.layer_weights)
        )
        if len(weights) != n:
            raise ValueError(
                f"PerceptualLoss: {len(weights)} layer_weights given but the extractor returns {n} feature maps"
            )
        return [float(w) for w in weights]

    def _match_channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.in_channels:
            return x
        if self.in_channels == 1:
            return x.reshape(-1, 1, *x.shape[2:])
        if c == 1:
            return x.expand(-1, self.in_channels, *x.shape[2:])
        raise ValueError(f"PerceptualLoss: images have {c} channels but the extractor expects {self.in_channels}")

    def _loss_2d(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_in, target_in = self._match_channels(pred), self._match_channels(target)
        feats_pred = _as_feature_list(self.extractor(pred_in))
        with torch.no_grad():
            feats_target = _as_feature_list(self.extractor(target_in))
        total = pred.new_zeros((), dtype=torch.float32)
        for w, fp, ft in zip(self._weights(len(feats_pred)), feats_pred, feats_target):
            if w:
                total = total + w * self.criterion(fp.float(), ft.detach().float())
        return total

    def _slices(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        size = x.shape[2 + axis]
        k = min(self.slices_3d, size)
        if k < size:  # k evenly spaced interior slices (the border slices carry the least anatomy)
            idx = torch.linspace(0, size - 1, k + 2, device=x.device)[1:-1].round().long()
        else:
            idx = torch.arange(size, device=x.device)
        sl = x.index_select(2 + axis, idx)  # (B, C, ..k.., ...)
        sl = sl.movedim(2 + axis, 1)  # (B, k, C, a, b)
        return sl.reshape(-1, x.shape[1], *sl.shape[3:])

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "PerceptualLoss")
        if pred.ndim == 4:
            return self._loss_2d(pred, target)
        if pred.ndim != 5:
            raise ValueError(f"PerceptualLoss: expected a 2D or 3D batch, got shape {tuple(pred.shape)}")
        total = pred.new_zeros((), dtype=torch.float32)
        for axis in self.slice_axes:
            total = total + self._loss_2d(self._slices(pred, axis), self._slices(target, axis))
        return total / len(self.slice_axes)


def perceptual_weight(weight: float, weights_path: str | os.PathLike | None, name: str = "perceptual") -> float:
    """``weight`` when a local weights file is given, else 0 with a warning (nothing is downloaded).

    The studies' VGG19/MobileNetV2 content losses need ImageNet weights; medsr never downloads them, so a
    bundle run without ``--vgg_weights`` trains without that term and says so.
    """
    import warnings

    if weights_path:
        if not Path(weights_path).is_file():
            raise ValueError(f"{name} weights '{weights_path}': file not found")
        return float(weight)
    if float(weight) != 0.0:
        warnings.warn(
            f"{name} loss is off: no local weights were given (pass --vgg_weights /path/to/weights.pth to use "
            "the study's full loss; nothing is downloaded)",
            stacklevel=2,
        )
    return 0.0
