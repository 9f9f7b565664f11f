"""torch.distributed glue for ``torchrun``: process group, DDP wrapping, distributed loaders, reductions.

Launch: ``torchrun --nproc_per_node N script.py`` (gloo on CPU, nccl on CUDA). In a bundle:
``"$medsr.pipeline.engines.init_distributed()"`` in ``initialize``, the networks wrapped with
``wrap_ddp``, the loader built with ``distributed_loader``; checkpoints (``CheckpointHandler``) are
written on rank 0 only and the trainers all-reduce their logged loss terms; MONAI metric handlers
gather across ranks themselves. Put logging handlers behind ``is_main_process()``.

Built on :mod:`ignite.distributed` (the engines' own library): the process group is ignite's
(``idist.initialize``/``idist.finalize``), rank and world size are ``idist.get_rank``/``idist.get_world_size``,
DDP wrapping is ``idist.auto_model`` and the reduction ``idist.all_reduce``. The loader stays a MONAI
``DataLoader`` with a ``DistributedSampler``: ``idist.auto_dataloader`` divides ``batch_size`` by the world size
and builds torch's ``DataLoader`` (no MONAI collate or per-worker seeding), which would change what a bundle's
``batch_size`` means.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import ignite.distributed as idist
import torch
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "init_distributed",
    "cleanup_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "ddp_backend",
    "ddp_device",
    "wrap_ddp",
    "distributed_loader",
    "all_reduce_mean",
]


def is_distributed() -> bool:
    """True when running with more than one process (``idist.get_world_size() > 1``)."""
    return idist.get_world_size() > 1


#: this process's rank (0 when not distributed)
get_rank = idist.get_rank
#: the number of processes (1 when not distributed)
get_world_size = idist.get_world_size


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed): log and save only there."""
    return idist.get_rank() == 0


def init_distributed(backend: str | None = None) -> bool:
    """Initialise ignite's process group from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ...).

    Args:
        backend: ``"gloo"``/``"nccl"``; default nccl when CUDA is available, else gloo.

    Returns:
        True when running distributed (``WORLD_SIZE`` > 1 or already initialised), False for a single process.
    """
    if is_distributed():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"init_distributed: WORLD_SIZE={world} but {var} is not set; launch with torchrun")
    idist.initialize(backend or ddp_backend())  # nccl: also selects cuda:LOCAL_RANK
    return True


def cleanup_distributed() -> None:
    """Destroy the process group if one exists."""
    if idist.model_name() != "serial":
        idist.finalize()


def ddp_backend() -> str:
    """``nccl`` with CUDA, ``gloo`` on CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def ddp_device() -> torch.device:
    """This process's device under ``torchrun``: ``cuda:LOCAL_RANK`` with CUDA, else CPU."""
    if torch.cuda.is_available():
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(rank)
        return torch.device(f"cuda:{rank}")
    return torch.device("cpu")


def wrap_ddp(
    model: nn.Module, device: torch.device | str | None = None, sync_batchnorm: bool = False, **kwargs
) -> nn.Module:
    """Move ``model`` to ``device`` and wrap it in ``DistributedDataParallel`` with ``idist.auto_model`` (unchanged
    when not distributed, and for a frozen model).

    Args:
        model: the network.
        device: default :func:`ddp_device`.
        sync_batchnorm: convert BatchNorm layers to SyncBatchNorm (CUDA only in torch).
        kwargs: passed to ``DistributedDataParallel``.
    """
    device = torch.device(device) if device is not None else ddp_device()
    model = model.to(device)
    if not is_distributed():
        return model
    if not any(p.requires_grad for p in model.parameters()):
        return model  # frozen (e.g. a distillation teacher): nothing to synchronise
    return idist.auto_model(model, sync_bn=sync_batchnorm, **kwargs)


def distributed_loader(
    dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = True, **kwargs
):
    """A MONAI ``DataLoader`` over this rank's shard (``DistributedSampler``; a plain loader when not distributed)."""
    from monai.data import DataLoader

    if not is_distributed():
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **kwargs)
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **kwargs)


def all_reduce_mean(values: Mapping[str, float]) -> dict[str, float]:
    """Average a dict of floats over ranks in one collective (identity when not distributed)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    t = idist.all_reduce(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
    return dict(zip(keys, (t / idist.get_world_size()).tolist()))
