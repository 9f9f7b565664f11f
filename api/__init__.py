"""medsr: super-resolution for medical images, built on MONAI.

The Python API is :func:`upscale`; the command line is ``medsr`` (:mod:`medsr.pipeline.cli`). The sub-packages
are :mod:`medsr.pipeline` (data, training, inference, the bundles' helpers), :mod:`medsr.transforms` and
:mod:`medsr.networks`. Importing ``medsr`` imports none of them (nor torch): :func:`upscale` does, on first use.

Example::

    import numpy as np
    import medsr

    lr = np.random.rand(64, 64).astype("float32")          # a 2D image, rows x columns, 0.8 mm pixels
    hr, spacing = medsr.upscale(lr, scale=2, spacing=(0.8, 0.8))
    hr.shape, spacing                                        # ((128, 128), (0.4, 0.4))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medsr.pipeline import __version__

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["__version__", "upscale"]


def upscale(
    image: np.ndarray | torch.Tensor,
    scale: int | Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    model: str | os.PathLike | torch.nn.Module | None = None,
    device: str | None = None,
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.25,
    progress: bool = False,
    clip: bool = True,
) -> tuple[Any, tuple[float, ...]]:
    """Super-resolve an image in memory with a shipped model (``medsr models``) or your own.

    Intensities keep the input's units (the network sees a percentile-normalized copy, mapped back after);
    large images go through overlapping windows.

    Args:
        image: a 2D ``(H, W)`` or 3D ``(X, Y, Z)`` numpy array or tensor without a channel axis, or a MONAI
            ``MetaTensor``, channel first (``(1, *spatial)``) with its affine.
        scale: the factor, ``2`` (the default for a shipped model; a given ``model`` keeps its own), or per
            axis for a 3D model (``(1, 1, 4)``: thick slices, applied to the thickest axis). A single factor on
            a 3D image upscales in-plane, slice by slice across the thickest axis, with the 2D model.
        spacing: voxel size in mm per spatial axis (default: 1 mm for an array, the affine's for a MetaTensor).
        model: a shipped model's name, a model file (``medsr models export``), or a medsr generator
            (``torch.nn.Module`` with ``spatial_dims`` and ``scale_factor``); default: the shipped model for
            the image's dimension and ``scale``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` (default: CUDA when present).
        roi_size: window size in LR voxels (default 128 in 2D, 64 in 3D).
        overlap: window overlap in ``[0, 1)``.
        progress: a progress bar over windows.
        clip: keep the output within the input's value range (as ``medsr upscale`` does).

    Returns:
        ``(sr, spacing)``: the SR image, a numpy array ``scale`` times larger per axis (for a MetaTensor input,
        a channel-first MetaTensor with the HR affine, the field of view kept), and its spacing in mm.

    Raises:
        ValueError: a shape, spacing, scale or model that does not fit, in one line.
    """
    from medsr.pipeline.inference import upscale_array

    return upscale_array(image, scale, spacing, model, device, roi_size, overlap, progress, clip)
