"""Pixel-level losses for SR, dimension-agnostic (2D ``(B, C, H, W)`` and 3D ``(B, C, D, H, W)``)."""

from __future__ import annotations

import torch
from monai.losses import SSIMLoss as _MonaiSSIMLoss
from torch import nn

__all__ = ["CharbonnierLoss", "TVLoss", "SSIMLoss", "get_pixel_loss", "check_same_shape"]


def check_same_shape(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``pred`` and ``target`` shapes differ."""
    if pred.shape != target.shape:
        raise ValueError(f"{name}: prediction shape {tuple(pred.shape)} does not match target {tuple(target.shape)}")


class CharbonnierLoss(nn.Module):
    """Charbonnier (smooth L1) loss ``mean(sqrt((x - y)^2 + eps^2))`` (LapSRN).

    Args:
        eps: smoothing constant; the loss behaves like L1 for ``|x - y| >> eps``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, eps: float = 1e-3, reduction: str = "mean") -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"CharbonnierLoss: eps must be > 0, got {eps}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"CharbonnierLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.eps = eps
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "CharbonnierLoss")
        loss = torch.sqrt((pred - target) ** 2 + self.eps**2)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


class TVLoss(nn.Module):
    """Total variation of an image batch, 2D or 3D.

    The sum over spatial axes of the mean ``|x[i+1] - x[i]|^p`` along that axis (``p=1``: absolute
    differences of neighbouring pixels, as in the SRGAN/SwiftSRGAN recipe; ``p=2``: squared).

    Args:
        p: 1 (anisotropic, absolute differences) or 2 (squared differences).
    """

    def __init__(self, p: int = 1) -> None:
        super().__init__()
        if p not in (1, 2):
            raise ValueError(f"TVLoss: p must be 1 or 2, got {p}")
        self.p = p

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Total variation of ``x`` (``target`` is accepted and ignored so it fits ``loss(pred, target)``)."""
        if x.ndim not in (4, 5):
            raise ValueError(f"TVLoss: expected a (B, C, H, W) or (B, C, D, H, W) batch, got shape {tuple(x.shape)}")
        total = x.new_zeros(())
        for axis in range(2, x.ndim):
            if x.shape[axis] < 2:
                continue
            diff = torch.diff(x, dim=axis)
            total = total + (diff.abs() if self.p == 1 else diff**2).mean()
        return total


class SSIMLoss(nn.Module):
    """``1 - SSIM`` for 2D or 3D batches (MONAI ``SSIMLoss``, built per number of spatial dims on first use).

    Args:
        data_range: intensity range of the images (``max - min``); not inferred.
        win_size: Gaussian window size (clipped to the smallest spatial size, kept odd).
        kernel_sigma: Gaussian window sigma.
        spatial_dims: fix the number of spatial dims (2 or 3); ``None`` takes it from the input.
    """

    def __init__(
        self, data_range: float = 1.0, win_size: int = 11, kernel_sigma: float = 1.5, spatial_dims: int | None = None
    ) -> None:
        super().__init__()
        if data_range <= 0:
            raise ValueError(f"SSIMLoss: data_range must be > 0, got {data_range}")
        if spatial_dims not in (None, 2, 3):
            raise ValueError(f"SSIMLoss: spatial_dims must be 2, 3 or None, got {spatial_dims}")
        self.data_range = float(data_range)
        self.win_size = int(win_size)
        self.kernel_sigma = float(kernel_sigma)
        self.spatial_dims = spatial_dims
        self._losses: dict[tuple[int, int], _MonaiSSIMLoss] = {}

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "SSIMLoss")
        dims = pred.ndim - 2
        if dims not in (2, 3) or (self.spatial_dims is not None and dims != self.spatial_dims):
            raise ValueError(
                f"SSIMLoss: expected a {self.spatial_dims or '2D or 3D'} batch, got shape {tuple(pred.shape)}"
            )
        win = min(self.win_size, *pred.shape[2:])
        win = win if win % 2 == 1 else win - 1
        if win < 1:
            raise ValueError(f"SSIMLoss: spatial size {tuple(pred.shape[2:])} is too small for SSIM")
        key = (dims, win)
        if key not in self._losses:
            self._losses[key] = _MonaiSSIMLoss(
                spatial_dims=dims, data_range=self.data_range, win_size=win, kernel_sigma=self.kernel_sigma
            )
        return self._losses[key](pred.float(), target.float())


def get_pixel_loss(name: str | nn.Module) -> nn.Module:
    """A pixel loss by name: ``"l1"``, ``"mse"`` (or ``"l2"``), ``"charbonnier"``, ``"ssim"``; modules pass through."""
    if isinstance(name, nn.Module):
        return name
    table = {"l1": nn.L1Loss, "mse": nn.MSELoss, "l2": nn.MSELoss, "charbonnier": CharbonnierLoss, "ssim": SSIMLoss}
    key = str(name).lower()
    if key not in table:
        raise ValueError(f"unknown pixel loss {name!r}; choose one of {sorted(table)} or pass an nn.Module")
    return table[key]()
