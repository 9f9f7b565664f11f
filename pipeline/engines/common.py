"""Shared pieces of the SR engines: batch preparation, AMP/channels_last resolution, deterministic mode."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from monai.data import MetaTensor

__all__ = [
    "SRPrepareBatch",
    "resolve_amp",
    "resolve_channels_last",
    "enable_deterministic",
    "get_rng_state",
    "set_rng_state",
    "plain",
    "unwrap_model",
]


def plain(x: torch.Tensor) -> torch.Tensor:
    """A plain ``torch.Tensor`` view of ``x`` (drops MetaTensor overhead in the training step)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (or the module itself)."""
    return (
        model.module if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else model
    )


class SRPrepareBatch:
    """``prepare_batch`` for MONAI engines: returns ``(batch[input_key], batch[target_key])`` on ``device``.

    Args:
        input_key: key of the LR input (``"lr"``).
        target_key: key of the HR target (``"hr"``); ``None`` for inference-only batches.
    """

    def __init__(self, input_key: str = "lr", target_key: str | None = "hr") -> None:
        self.input_key = input_key
        self.target_key = target_key

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs):
        if not isinstance(batchdata, Mapping):
            raise TypeError(
                f"SR engines expect dict batches with keys '{self.input_key}'/'{self.target_key}', got {type(batchdata).__name__}"
            )
        for key in (self.input_key, self.target_key):
            if key is not None and key not in batchdata:
                raise KeyError(
                    f"batch has no key '{key}' (keys: {sorted(map(str, batchdata))}); SR engines read 'lr' and 'hr'"
                )
        lr = batchdata[self.input_key].to(device=device, non_blocking=non_blocking, **kwargs)
        hr = (
            None
            if self.target_key is None
            else batchdata[self.target_key].to(device=device, non_blocking=non_blocking, **kwargs)
        )
        return lr, hr


_AMP_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_amp(amp: bool | str | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (``True``/``"fp16"``, ``"bf16"``; ``False``/``None`` off), CUDA only.

    On a non-CUDA device a requested AMP is ignored with a warning and ``None`` is returned.
    """
    if amp in (None, False, "none", "off", "fp32", "float32"):
        return None
    dtype = torch.float16 if amp is True else _AMP_DTYPES.get(str(amp).lower())
    if dtype is None:
        raise ValueError(f"amp must be False, True, 'fp16' or 'bf16', got {amp!r}")
    if torch.device(device).type != "cuda":
        warnings.warn(
            f"amp={amp!r} is ignored on device '{device}': mixed precision is used on CUDA only", stacklevel=3
        )
        return None
    return dtype


def resolve_channels_last(flag: bool, device: torch.device | str) -> bool:
    """Whether to use channels_last memory format: only on CUDA (warning otherwise)."""
    if not flag:
        return False
    if torch.device(device).type != "cuda":
        warnings.warn(f"channels_last is ignored on device '{device}': it is used on CUDA only", stacklevel=3)
        return False
    return True


def memory_format_for(ndim: int) -> torch.memory_format:
    """``channels_last`` for 4D tensors, ``channels_last_3d`` for 5D."""
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def enable_deterministic(seed: int = 0) -> None:
    """Deterministic mode: seed python/numpy/torch (MONAI ``set_determinism``), deterministic algorithms, no cuDNN benchmark."""
    from monai.utils import set_determinism

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_determinism(seed=seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def get_rng_state() -> dict:
    """RNG states of python, numpy, torch (CPU) and every CUDA device (tensors, tuples and numbers only, so
    a checkpoint holding them loads with ``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # numpy's array as a tensor: the state loads with torch.load(weights_only=True)
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    """Restore the states saved by :func:`get_rng_state`."""
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), *rest))
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu() for s in state["cuda"]])
