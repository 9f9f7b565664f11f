"""Comparison figures (LR input, SR output, HR target, error) for tracked validations."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsr.pipeline.io import atomic_path


def _to_2d(image: Any) -> np.ndarray:
    """Return a 2D float array: channel 0 of a channel-first image; the middle slice of the last axis in 3D."""
    array = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, dtype=float)
    if array.ndim not in (3, 4):
        raise ValueError(f"figure: expected a channel-first 2D or 3D image (C, H, W[, D]), got shape {array.shape}")
    array = array[0]
    if array.ndim == 3:
        array = array[..., array.shape[-1] // 2]
    return array


def comparison_figure(
    sr: Any,
    hr: Any | None = None,
    lr: Any | None = None,
    path: str | os.PathLike | None = None,
    title: str = "",
    cubic: Any | None = None,
) -> Path:
    """Write a PNG with the LR input, cubic interpolation, SR output, HR target and ``|SR - HR|`` side by side
    (PSNR of cubic and SR in their titles, a colour bar on the error); returns its path.

    Images are channel-first and unbatched (``C, H, W`` or ``C, H, W, D``; 3D shows the middle slice of the
    last axis). LR is drawn over the same extent as HR so the panels line up. The PSNR of the shown image
    (``data_range`` from the HR image) goes into the error panel's title.

    Args:
        sr: the network output.
        hr: the target (optional).
        lr: the input (optional).
        path: where to write; a temporary file when ``None``.
        title: the figure title.
        cubic: cubic interpolation of the LR input on the HR grid (optional): the baseline to beat.
    """
    from matplotlib.figure import Figure

    panels = []
    if lr is not None:
        panels.append(("LR input", _to_2d(lr)))
    sr2 = _to_2d(sr)
    hr2 = _to_2d(hr) if hr is not None else None
    if hr2 is not None and hr2.shape != sr2.shape:
        raise ValueError(f"figure: SR slice {sr2.shape} and HR slice {hr2.shape} differ in shape")
    data_range = (float(hr2.max() - hr2.min()) or 1.0) if hr2 is not None else 1.0

    def _psnr(image: np.ndarray) -> str:
        if hr2 is None:
            return ""
        mse = float(np.mean((image - hr2) ** 2))
        return f" ({10 * np.log10(data_range**2 / mse):.2f} dB)" if mse > 0 else " (inf dB)"

    if cubic is not None:
        cubic2 = _to_2d(cubic)
        panels.append((f"cubic{_psnr(cubic2)}", cubic2))
    panels.append((f"SR output{_psnr(sr2)}", sr2))
    if hr2 is not None:
        panels.append(("HR target", hr2))
        panels.append(("|SR - HR|", np.abs(sr2 - hr2)))
    vmin = min(float(p[1].min()) for p in panels if not p[0].startswith("|"))
    vmax = max(float(p[1].max()) for p in panels if not p[0].startswith("|"))
    fig = Figure(figsize=(4.4 * len(panels), 4.6), dpi=110)
    height, width = sr2.shape
    for i, (name, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        kwargs = {"cmap": "magma"} if name.startswith("|") else {"cmap": "gray", "vmin": vmin, "vmax": vmax}
        shown = ax.imshow(image.T, origin="lower", extent=(0, height, 0, width), interpolation="nearest", **kwargs)
        ax.set_title(name, fontsize=11)
        ax.set_axis_off()
        if name.startswith("|"):  # the error map's scale, in the images' units
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    if path is None:
        handle, name = tempfile.mkstemp(suffix=".png", prefix="medsr_fig_")
        os.close(handle)
        path = name
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def figure_image(path: str | os.PathLike) -> np.ndarray:
    """The RGB pixels (``H, W, 3`` ``uint8``) of a figure PNG, for ``MlflowClient.log_image``."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
