"""Validate (and keep as ``best_network.pt``) the EMA weights instead of the raw ones."""

from __future__ import annotations

import copy

import torch
from ignite.engine import Engine, Events

from medsr.pipeline.engines.common import unwrap_model

__all__ = ["EMAValidation"]


class EMAValidation:
    """Load the EMA copy into the validated network while a validation runs, then put the raw weights back.

    Attach it to the validator **after** :class:`~medsr.pipeline.handlers.BestModelSaver` (last in
    ``validate#handlers``): the best-model file, the metrics and the comparison images then all come from the
    EMA weights, and the trainer continues from its raw weights. With ``ema=None`` it does nothing.

    Args:
        network: the network the trainer optimises and the validator runs (DDP wrappers are unwrapped).
        ema: a :class:`~medsr.pipeline.engines.ModelEMA` (its ``module`` holds the averaged weights), or ``None``.
    """

    def __init__(self, network: torch.nn.Module, ema: torch.nn.Module | None) -> None:
        self.network, self.ema = network, ema
        self._raw: dict[str, torch.Tensor] | None = None

    def attach(self, engine: Engine) -> None:
        if self.ema is None:
            return
        engine.add_event_handler(Events.STARTED, self.swap_in)
        engine.add_event_handler(Events.COMPLETED, self.swap_out)

    @torch.no_grad()
    def swap_in(self, engine: Engine | None = None) -> None:
        """Keep the raw weights aside and load the EMA weights."""
        net = unwrap_model(self.network)
        self._raw = copy.deepcopy(net.state_dict())
        net.load_state_dict(unwrap_model(self.ema.module).state_dict())

    @torch.no_grad()
    def swap_out(self, engine: Engine | None = None) -> None:
        """Put the raw weights back (the trainer goes on from them)."""
        if self._raw is not None:
            unwrap_model(self.network).load_state_dict(self._raw)
            self._raw = None
