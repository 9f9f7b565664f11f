"""Helpers shared by the handlers (as ``monai.handlers.utils``): reading samples out of an engine's output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["first_sample"]


def first_sample(output: Any) -> Mapping[str, Any] | None:
    """Return the first sample of an engine output: a decollated list of dicts, or one batched dict.

    In a batched dict, tensors with a batch axis (``B, C, *spatial``: 4 or more dims) are cut to their first
    item; other values are kept. ``None`` when the output holds no dict.
    """
    if isinstance(output, (list, tuple)):
        return output[0] if output and isinstance(output[0], Mapping) else None
    if isinstance(output, Mapping):
        return {k: v[0] if isinstance(v, torch.Tensor) and v.ndim >= 4 else v for k, v in output.items()}
    return None
