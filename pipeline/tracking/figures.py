"""Comparison figures (LR input, SR output, HR target, error) for tracked validations."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
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
    sr_label: str = "",
    cubic_label: str = "",
) -> Path:
    """Write a PNG with the LR input, cubic interpolation, SR output, HR target and ``|SR - HR|`` side by side
    (a colour bar on the error); returns its path.

    Images are channel-first and unbatched (``C, H, W`` or ``C, H, W, D``; 3D shows the middle slice of the
    last axis). LR is drawn over the same extent as HR so the panels line up. The figure computes no score
    of its own: the numbers in the panel titles are the caller's (``sr_label``, ``cubic_label``; see
    :func:`logged_labels` for the metrics a validation logged), so they match what was logged.

    Args:
        sr: the network output.
        hr: the target (optional).
        lr: the input (optional).
        path: where to write; a temporary file when ``None``.
        title: the figure title.
        cubic: cubic interpolation of the LR input on the HR grid (optional): the baseline to beat.
        sr_label: text under the SR panel's name (e.g. ``"val/psnr 30.05 dB"``).
        cubic_label: text under the cubic panel's name.
    """
    from matplotlib.figure import Figure

    panels = []
    if lr is not None:
        panels.append(("LR input", _to_2d(lr)))
    sr2 = _to_2d(sr)
    hr2 = _to_2d(hr) if hr is not None else None
    if hr2 is not None and hr2.shape != sr2.shape:
        raise ValueError(f"figure: SR slice {sr2.shape} and HR slice {hr2.shape} differ in shape")
    if cubic is not None:
        panels.append(("cubic" + (f"\n{cubic_label}" if cubic_label else ""), _to_2d(cubic)))
    panels.append(("SR output" + (f"\n{sr_label}" if sr_label else ""), sr2))
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
        # the panel titles as PNG text, so a reader (or a test) sees what the figure shows without OCR
        names = json.dumps([name for name, _ in panels])
        fig.savefig(tmp, format="png", metadata={"Title": title, "Description": names})
    return path


def logged_labels(metrics: Mapping[str, Any], prefix: str = "val_") -> tuple[str, str]:
    """The SR and cubic panel labels from an engine's logged metrics (``engine.state.metrics``), named as in
    MLflow: ``("val/psnr 30.05 dB, val/ssim 0.912", "val/psnr_cubic 24.98 dB, val/ssim_cubic 0.801")``.

    Args:
        metrics: the metric values of the validation that the figure shows.
        prefix: the engine's metric prefix (``val_``).
    """
    from medsr.pipeline.tracking.params import metric_key

    def label(suffix: str) -> str:
        parts = []
        for name, unit in (("psnr", " dB"), ("ssim", "")):
            key = f"{prefix}{name}{suffix}"
            try:
                value = float(metrics[key])
            except (KeyError, TypeError, ValueError):
                continue
            parts.append(f"{metric_key(key, prefix.strip('_'))} {value:.{2 if unit else 3}f}{unit}")
        return ", ".join(parts)

    return label(""), label("_cubic")


def figure_image(path: str | os.PathLike) -> np.ndarray:
    """The RGB pixels (``H, W, 3`` ``uint8``) of a figure PNG, for ``MlflowClient.log_image``."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
