"""The one sliding-window SR inferer: validation (``SREvaluator``), evaluation, ``medsr upscale`` and the
bundles' ``inferring`` all blend windows through :class:`SRSlidingWindowInferer`.

Light on purpose (torch only: no engines, no MONAI import) so that the upscale path and the engines can both
import it. :func:`sliding_window_sr` is MONAI's :func:`~monai.inferers.sliding_window_inference` for the
case SR uses (windows never larger than the image, outputs on a grid ``scale`` times finer), computed the same
way, so the results are equal to the last bit (``tests/inference/test_inferer.py`` compares them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from medsr.transforms._utils import ImageTensor, is_meta_tensor
from medsr.transforms.geometry import sr_affine

__all__ = ["SRSlidingWindowInferer", "sliding_window_sr", "importance_map", "window_slices"]


def importance_map(
    patch_size: Sequence[int],
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    device: Any = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The blending weight of one window, MONAI's ``compute_importance_map``: ones (``"constant"``) or a
    separable Gaussian with sigma ``sigma_scale × size`` per axis (``"gaussian"``), clamped to at least its
    minimum (and ``1e-3``)."""
    device = torch.device(device)
    if mode == "constant":
        weights = torch.ones(tuple(patch_size), device=device, dtype=torch.float)
    elif mode == "gaussian":
        sigmas = [i * sigma_scale for i in patch_size]
        for i, n in enumerate(patch_size):
            x = torch.arange(start=-(n - 1) / 2.0, end=(n - 1) / 2.0 + 1, dtype=torch.float, device=device)
            x = torch.exp(x**2 / (-2 * sigmas[i] ** 2))
            weights = weights.unsqueeze(-1) * x[(None,) * i] if i > 0 else x
    else:
        raise ValueError(f"mode: expected 'constant' or 'gaussian', got {mode!r}")
    min_non_zero = max(torch.min(weights).item(), 1e-3)
    return torch.clamp_(weights.to(torch.float), min=min_non_zero).to(dtype)


def window_slices(
    image_size: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]
) -> list[tuple[slice, ...]]:
    """The windows of ``roi_size`` covering ``image_size`` with ``overlap``, in MONAI's order (first axis
    slowest; the last window of an axis moved back to end at the border), as ``dense_patch_slices`` gives."""
    starts = []
    for size, roi, o in zip(image_size, roi_size, overlap):
        interval = int(roi) if roi == size else max(int(roi * (1 - o)), 1)
        num = int(math.ceil(float(size) / interval))
        count = next((d + 1 for d in range(num) if d * interval + roi >= size), 1)
        starts.append([i * interval - max(i * interval + roi - size, 0) for i in range(count)])
    return [tuple(slice(s, s + r) for s, r in zip(start, roi_size)) for start in itertools.product(*starts)]


def sliding_window_sr(
    inputs: torch.Tensor,
    roi_size: Sequence[int],
    sw_batch_size: int,
    predictor: Callable[..., torch.Tensor],
    overlap: float = 0.25,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    sw_device: Any = None,
    device: Any = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run ``predictor`` over windows of ``inputs`` (``B, C, *S``) and blend its outputs (``B, C', *(S·z)``,
    ``z`` the ratio of output to input window size) weighted by :func:`importance_map`.

    MONAI's ``sliding_window_inference`` for windows no larger than the image (``roi_size`` ≤ ``S``; no
    padding), one tensor output, no buffering: the same windows, weights and order of sums. Windows run on
    ``sw_device`` (default: the input's), the output is assembled on ``device`` (default: the input's).
    Returns a plain tensor of the input's dtype.
    """
    nd = inputs.ndim - 2
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != nd:
        raise ValueError(f"roi_size: expected {nd} values for a {nd}D input, got {tuple(roi_size)}")
    batch_size, _, *image_size = inputs.shape
    if any(r > s for r, s in zip(roi, image_size)):
        raise ValueError(f"roi_size {roi}: larger than the image {tuple(image_size)}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}.")
    dtype = inputs.dtype
    device = device or inputs.device
    sw_device = sw_device or inputs.device
    x = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
    slices = window_slices(image_size, roi, (float(overlap),) * nd)
    num_win = len(slices)
    total = num_win * batch_size
    weight = importance_map(roi, mode, sigma_scale, sw_device, dtype)[None, None].to(device=sw_device, dtype=dtype)
    windows = range(0, total, int(sw_batch_size))
    if progress:
        from tqdm import tqdm

        windows = tqdm(windows)
    output = count = z_scale = None
    for start in windows:
        coords = [
            (slice(idx // num_win, idx // num_win + 1), slice(None), *slices[idx % num_win])
            for idx in range(start, min(start + int(sw_batch_size), total))
        ]
        if int(sw_batch_size) > 1:
            win = torch.cat([x[c] for c in coords]).to(sw_device)
        else:
            win = x[coords[0]].to(sw_device)
        out = predictor(win)
        w = weight
        if tuple(out.shape[2:]) != roi:
            z_scale = [o / float(i) for o, i in zip(out.shape[2:], roi)]
            w = F.interpolate(w, out.shape[2:], mode="nearest-exact")
        if output is None:
            shape = [batch_size, out.shape[1]]
            shape += [int(i * z) for i, z in zip(image_size, z_scale)] if z_scale else list(image_size)
            output = torch.zeros(shape, dtype=dtype, device=device)
            count = torch.zeros([1, 1, *shape[2:]], dtype=dtype, device=device)
            w_out = w.to(device)
            for s in slices:
                count[(slice(None), slice(None), *_scaled(s, z_scale))] += w_out
        out *= w
        out = out.to(device)
        for c, p in zip(coords, out):
            output[(*c[:2], *_scaled(c[2:], z_scale))] += p
    output /= count
    return output


def _scaled(window: Sequence[slice], z_scale: Sequence[float] | None) -> tuple[slice, ...]:
    """A window's slices on the output grid (``int(start · z)`` to ``int(stop · z)`` per axis)."""
    if not z_scale:
        return tuple(window)
    return tuple(slice(int(s.start * z), int(s.stop * z)) for s, z in zip(window, z_scale))


class SRSlidingWindowInferer:
    """Sliding-window SR inference with overlap blending; the output grid is ``scale`` times the input.

    A MONAI ``Inferer`` in use (called as ``inferer(inputs, network)`` by the engines and bundles) without
    importing MONAI; windows are blended by :func:`sliding_window_sr`. A MetaTensor input gives a MetaTensor
    output (the input's metadata, as MONAI's inferer copies it) with the HR affine, an
    :class:`~medsr.transforms._utils.ImageTensor` input an ``ImageTensor`` with the HR affine.

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
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap: expected a value in [0, 1), got {overlap}")
        if mode not in ("gaussian", "constant"):
            raise ValueError(f"mode: expected 'gaussian' or 'constant', got {mode!r}")
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
        out = sliding_window_sr(
            inputs,
            roi,
            self.sw_batch_size,
            network,
            overlap=self.overlap,
            mode=self.mode,
            sw_device=sw_device,
            device=device,
            progress=self.progress,
        )
        scale = tuple(o // i for o, i in zip(out.shape[2:], inputs.shape[2:]))
        if is_meta_tensor(inputs):  # as MONAI's inferer: the input's metadata on the output, then the HR affine
            from monai.data import MetaTensor
            from monai.utils import convert_to_dst_type

            temp_meta = MetaTensor([]).copy_meta_from(inputs, copy_attr=False)
            out = convert_to_dst_type(out, temp_meta, device=device)[0]
            out.affine = sr_affine(inputs.affine, scale).to(torch.float64)
        elif isinstance(inputs, ImageTensor):
            meta = {k: v for k, v in inputs.meta.items() if k != "affine"}
            out = ImageTensor(out, affine=sr_affine(inputs.affine, scale), meta=meta)
        return out
