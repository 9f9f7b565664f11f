"""The one sliding-window SR inferer: validation (``SREvaluator``), evaluation, ``medsr upscale`` and the
bundles' ``inferring`` all blend windows through :class:`SRSlidingWindowInferer`.

Light on purpose (torch and MONAI's inferers, no engines) so that the upscale path and the engines can both
import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, sliding_window_inference

from medsr.transforms.geometry import sr_affine

__all__ = ["SRSlidingWindowInferer"]


class SRSlidingWindowInferer(Inferer):
    """Sliding-window SR inference with overlap blending; the output grid is ``scale`` times the input.

    Args:
        roi_size: window size in LR voxels per spatial axis.
        scale: int or per-axis factor, for the reader (the output's shape gives the factor that sets its affine).
        sw_batch_size: windows per forward pass.
        overlap: fraction of overlap between windows.
        mode: ``"gaussian"`` (default) or ``"constant"`` blending.
        sw_device: where each window runs (default: the network's device).
        device: where the whole output is assembled (default: CPU, so a large volume never fills the GPU).
        progress: show a progress bar over windows.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        scale: Sequence[int] | int | None = None,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        mode: str = "gaussian",
        sw_device: str | torch.device | None = None,
        device: str | torch.device | None = "cpu",
        progress: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap: expected a value in [0, 1), got {overlap}")
        self.roi_size = roi_size
        self.scale = scale
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.mode = mode
        self.sw_device = sw_device
        self.device = device
        self.progress = progress

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """Run ``network`` over ``inputs`` (``B, C, *S``); returns ``B, C_out, *(S * scale)`` on ``device``."""
        spatial_dims = inputs.ndim - 2
        roi = (self.roi_size,) * spatial_dims if isinstance(self.roi_size, int) else tuple(self.roi_size)
        if len(roi) != spatial_dims:
            raise ValueError(
                f"roi_size: expected {spatial_dims} values for a {spatial_dims}D input, got {self.roi_size!r}"
            )
        roi = tuple(min(r, s) for r, s in zip(roi, inputs.shape[2:]))  # never pad a small image up to the window
        sw_device = self.sw_device
        if sw_device is None and isinstance(network, torch.nn.Module):
            param = next(network.parameters(), None)
            sw_device = param.device if param is not None else None
        device = self.device if self.device is not None else inputs.device
        out = sliding_window_inference(
            inputs,
            roi,
            self.sw_batch_size,
            network,
            overlap=self.overlap,
            mode=self.mode,
            padding_mode="replicate",
            sw_device=sw_device,
            device=device,
            progress=self.progress,
        )
        scale = tuple(o // i for o, i in zip(out.shape[2:], inputs.shape[2:]))
        if isinstance(out, MetaTensor) and isinstance(inputs, MetaTensor):
            out.affine = sr_affine(inputs.affine, scale).to(torch.float64)
        return out
