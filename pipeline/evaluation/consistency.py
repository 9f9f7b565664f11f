"""Data consistency of an SR output: the output degraded back to the input grid, against the input.

A check that needs no ground truth (``medsr upscale --report``): if the model's degradation explains the
input, ``degrade(SR)`` should reproduce it. Cubic interpolation's figure on the same input is the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medsr.pipeline.evaluation.baselines import upsample

__all__ = ["data_consistency"]


def data_consistency(
    lr: torch.Tensor, sr: torch.Tensor, degrade: Callable[[torch.Tensor], torch.Tensor], what: str
) -> dict[str, Any]:
    """RMSE over the input's foreground between ``degrade(SR)`` and the input, next to cubic's.

    Args:
        lr: the input, channel first ``(C, *S)``, in its own units.
        sr: the SR output ``(C, *S·scale)`` in the same units.
        degrade: HR->LR callable (e.g. :class:`medsr.transforms.PairDegradation`): ``degrade(sr)`` has the
            input's shape (or a crop of it, to a multiple of the scale).
        what: a sentence naming the degradation, stored in the report.

    Returns:
        ``{"what", "medsr_rmse", "cubic_rmse", "medsr_relative", "cubic_relative"}`` (relative: over the RMS of
        the input's foreground), as ``medsr selfsr``'s report.
    """
    from medsr.pipeline.selfsr.pairs import foreground_mask

    x = lr.float()
    cubic = upsample(x, tuple(sr.shape[1:]), "cubic")

    def residual(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        deg = torch.as_tensor(degrade(out.float())).float()
        ref = x[(slice(None),) + tuple(slice(0, n) for n in deg.shape[1:])]
        return deg - ref, ref

    d_sr, ref = residual(sr)
    d_cub, _ = residual(cubic)
    fg = foreground_mask(ref)
    if not bool(fg.any()):
        fg = torch.ones_like(ref, dtype=torch.bool)
    ref_rms = float(ref[fg].double().square().mean().sqrt()) or 1.0
    e_sr = float(d_sr[fg].double().square().mean().sqrt())
    e_cub = float(d_cub[fg].double().square().mean().sqrt())
    return {
        "what": what,
        "medsr_rmse": e_sr,
        "cubic_rmse": e_cub,
        "medsr_relative": e_sr / ref_rms,
        "cubic_relative": e_cub / ref_rms,
    }
