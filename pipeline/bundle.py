"""The one-line helpers that the bundle configs in ``bundles/`` call as ``mb.<name>`` (``import ... as mb``).

Bundle configs hold the wiring only. Helpers that belong to an area live there and are imported here under
the names the configs use: datalists (:mod:`medsr.pipeline.data.datalist`), checkpoints
(:mod:`medsr.pipeline.engines.checkpoint`), model files (:mod:`medsr.pipeline.models`), run folders (:mod:`medsr.pipeline.runs`), DDP (:mod:`medsr.pipeline.engines.distributed`), geometry
(:mod:`medsr.transforms.geometry`) and augmentations (:mod:`medsr.transforms.augment`). Tested in
``tests/bundles/test_bundle_helpers.py``. Nothing here downloads anything.

Every config imports this module, so importing it under ``python -m monai.bundle`` installs the one-line error
report of :mod:`medsr.pipeline.errors` (``MEDSR_DEBUG=1`` keeps the traceback); each ``initialize`` list
starts with ``mb.check_overrides()``, which refuses a misspelt ``--key``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medsr.pipeline.bundles import check_overrides
from medsr.pipeline.data.datalist import inference_inputs, label_names, limit, resolve_datalist, split_datalist
from medsr.pipeline.engines.checkpoint import find_checkpoint, teacher_weights
from medsr.pipeline.engines.distributed import ddp_backend, ddp_device
from medsr.pipeline.errors import install_excepthook
from medsr.pipeline.losses.distillation import feature_channels
from medsr.pipeline.losses.perceptual import perceptual_weight
from medsr.pipeline.models import get_device, init_network, load_generator
from medsr.pipeline.runs import find_run, new_run_name, resume_path, run_checkpoints, run_dir, run_subdir
from medsr.transforms.augment import augmentations
from medsr.transforms.geometry import expand_size, parse_scale
from medsr.transforms.pairing import eval_degradation, pair_transform

__all__ = [  # the config-facing names, defined here or imported from their area
    "augmentations",
    "check_overrides",
    "ddp_backend",
    "ddp_device",
    "ensure_dir",
    "eval_degradation",
    "expand_size",
    "feature_channels",
    "find_checkpoint",
    "find_run",
    "fit_stages",
    "get_device",
    "hr_patch_size",
    "inference_inputs",
    "key_if_present",
    "label_names",
    "limit",
    "load_generator",
    "init_network",
    "lr_roi_size",
    "network_scale",
    "new_run_name",
    "pair_transform",
    "parse_scale",
    "perceptual_weight",
    "resolve_datalist",
    "resume_path",
    "run_checkpoints",
    "run_dir",
    "run_subdir",
    "split_datalist",
    "teacher_weights",
]


install_excepthook()


def network_scale(scale: Any, spatial_dims: int) -> int | tuple[int, ...]:
    """Return the scale in the form networks take: an int when all axes agree, else the per-axis tuple."""
    factors = parse_scale(scale, spatial_dims)
    return factors[0] if len(set(factors)) == 1 else factors


def hr_patch_size(patch_size: Any, scale: Any, spatial_dims: int) -> tuple[int, ...]:
    """Return the HR training patch size: ``patch_size`` per axis rounded up to a multiple of the scale.

    A patch along an axis with scale 1 keeps its size, so ``(64, 64, 16)`` with scale ``(1, 1, 4)`` stays
    ``(64, 64, 16)`` and ``(30, 30)`` with scale 4 becomes ``(32, 32)``.
    """
    size = expand_size(patch_size, spatial_dims, "patch_size")
    factors = parse_scale(scale, spatial_dims)
    return tuple(int(math.ceil(p / f) * f) for p, f in zip(size, factors))


def lr_roi_size(roi_size: Any, spatial_dims: int) -> tuple[int, ...]:
    """Return the sliding-window ROI in LR voxels (an int becomes one value per axis)."""
    return expand_size(roi_size, spatial_dims, "roi_size")


def ensure_dir(path: str | os.PathLike) -> str:
    """Create ``path`` (and parents) and return it as a string."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return str(path)


def fit_stages(patch_size: Sequence[int], stages: int) -> int:
    """Largest number of stride-2 discriminator stages (at most ``stages``) that the HR patch allows."""
    smallest = min(int(p) for p in patch_size)
    if smallest < 2:
        raise ValueError(f"patch_size: {tuple(patch_size)} is too small for a discriminator (every axis needs >= 2)")
    return max(1, min(int(stages), int(math.floor(math.log2(smallest)))))


def key_if_present(items: Sequence[Mapping], key: str) -> str | None:
    """``key`` when every item of a datalist has it, else ``None`` (e.g. a region metric's ``mask_key``)."""
    items = list(items)
    return key if items and all(isinstance(i, Mapping) and i.get(key) for i in items) else None
