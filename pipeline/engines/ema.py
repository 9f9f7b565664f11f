"""Exponential moving average of a generator's weights (evaluate or export the EMA copy): torch's
:class:`~torch.optim.swa_utils.AveragedModel` with :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from medsr.pipeline.engines.common import unwrap_model

__all__ = ["ModelEMA"]


class ModelEMA(AveragedModel):
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step; buffers are copied.

    torch's ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``, with two differences:

    * the tracked copy counts as the first average (``n_averaged`` starts at 1), so the first :meth:`update`
      blends it with the new weights (BasicSR's and timm's EMA) where ``AveragedModel`` would copy them;
    * ``use_buffers=False``: buffers (batch-norm statistics) are copied from the model, not averaged.

    Args:
        model: the network to track (a DDP wrapper is unwrapped); an eval-mode deep copy is kept in ``module``.
        decay: EMA decay in [0, 1); 0.999 is usual (BasicSR uses 0.999 for ESRGAN).

    Pass ``module`` (or the ``ModelEMA`` itself) to :class:`~medsr.pipeline.engines.SREvaluator` to
    validate the EMA weights. Its state dict holds ``module.*`` and ``n_averaged``; a checkpoint written
    before the move to ``AveragedModel`` (``num_updates``) loads too.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"ModelEMA: decay must be in [0, 1), got {decay}")
        super().__init__(unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=False)
        self.decay = float(decay)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.n_averaged.fill_(1)

    @property
    def num_updates(self) -> int:
        """How many times :meth:`update` ran."""
        return int(self.n_averaged) - 1

    def train(self, mode: bool = True) -> ModelEMA:
        super().train(mode)
        self.module.eval()
        return self

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current parameters into the EMA copy and copy its buffers."""
        src = unwrap_model(model)
        if sum(1 for _ in src.parameters()) != sum(1 for _ in self.module.parameters()):
            raise ValueError("ModelEMA.update: the model's parameters do not match the tracked copy")
        self.update_parameters(src)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # medsr's own ModelEMA counted updates in "num_updates" (n_averaged - 1)
        old = state_dict.pop(prefix + "num_updates", None)
        if old is not None and prefix + "n_averaged" not in state_dict:
            state_dict[prefix + "n_averaged"] = old + 1
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
