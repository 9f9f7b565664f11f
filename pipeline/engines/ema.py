"""Exponential moving average of a generator's weights (evaluate or export the EMA copy)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from medsr.pipeline.engines.common import unwrap_model

__all__ = ["ModelEMA"]


class ModelEMA(nn.Module):
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step; buffers are copied.

    Args:
        model: the network to track (a DDP wrapper is unwrapped); an eval-mode deep copy is kept in ``module``.
        decay: EMA decay in [0, 1); 0.999 is usual (BasicSR uses 0.999 for ESRGAN).

    Pass ``module`` (or the ``ModelEMA`` itself) to :class:`~medsr.pipeline.engines.SREvaluator` to
    validate the EMA weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"ModelEMA: decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> ModelEMA:
        super().train(mode)
        self.module.eval()
        return self

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current parameters into the EMA copy and copy its buffers."""
        src = unwrap_model(model)
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in src.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("ModelEMA.update: the model's parameters do not match the tracked copy")
        torch._foreach_lerp_(ema_params, [p.to(e.dtype) for p, e in zip(params, ema_params)], 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), src.buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
