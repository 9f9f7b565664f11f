"""Validation engine for SR: a ``monai.engines.SupervisedEvaluator`` reading ``lr``/``hr`` batches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from monai.data import MetaTensor
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils import CommonKeys as Keys
from torch import nn

from medsr.pipeline.engines.common import SRPrepareBatch, memory_format_for, plain, resolve_amp, resolve_channels_last
from medsr.pipeline.engines.ema import ModelEMA
from medsr.pipeline.inferer import SRSlidingWindowInferer

__all__ = ["SREvaluator"]


class SREvaluator(SupervisedEvaluator):
    """Run a generator over ``lr`` and compare with ``hr``; ``pred`` carries the HR image's metadata.

    Args:
        device: evaluation device.
        val_data_loader: loader of dict batches with ``lr`` and ``hr``.
        network: the generator, or a :class:`ModelEMA` (its EMA weights are evaluated).
        inferer: a MONAI inferer; default whole-image. ``roi_size`` builds a sliding-window inferer instead
            (SR-aware: MONAI scales the output windows by the HR/LR size ratio).
        roi_size: LR window size for sliding-window inference.
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        amp: ``"bf16"``/``"fp16"``/``True`` on CUDA (ignored with a warning elsewhere).
        channels_last: CUDA only.
        clip_range: clamp ``pred`` to ``(min, max)`` (e.g. ``(0, 1)`` for images normalised to [0, 1]).
        input_key: LR key. target_key: HR key.
        kwargs: ``key_val_metric``, ``additional_metrics``, ``val_handlers``, ``postprocessing`` ... of
            ``SupervisedEvaluator`` (metrics: ``medsr.pipeline.metrics`` or MONAI's PSNR/SSIM handlers).
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: nn.Module,
        inferer: Inferer | None = None,
        roi_size: Sequence[int] | int | None = None,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        amp: bool | str = False,
        channels_last: bool = False,
        clip_range: tuple[float, float] | None = None,
        input_key: str = "lr",
        target_key: str = "hr",
        **kwargs,
    ) -> None:
        if isinstance(network, ModelEMA):
            network = network.module
        if inferer is not None and roi_size is not None:
            raise ValueError("SREvaluator: give either inferer or roi_size, not both")
        if roi_size is not None:
            inferer = SRSlidingWindowInferer(roi_size, sw_batch_size=sw_batch_size, overlap=overlap, device=None)
        device = torch.device(device)
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            network=network,
            prepare_batch=SRPrepareBatch(input_key, target_key),
            inferer=inferer or SimpleInferer(),
            amp=False,
            **kwargs,
        )
        self.amp_dtype = resolve_amp(amp, device)
        self.use_channels_last = resolve_channels_last(channels_last, device)
        self.clip_range = clip_range

    def _iteration(self, engine: SREvaluator, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        lr, hr = self.prepare_batch(batchdata, self.state.device, self.non_blocking, **self.to_kwargs)
        x = plain(lr)
        if self.use_channels_last:
            fmt = memory_format_for(x.ndim)
            self.network.to(memory_format=fmt)
            x = x.contiguous(memory_format=fmt)
        self.state.output = {Keys.IMAGE: lr, Keys.LABEL: hr}
        with self.mode(self.network):
            if self.amp_dtype is not None:
                with torch.autocast("cuda", dtype=self.amp_dtype):
                    pred = self.inferer(x, self.network)
            else:
                pred = self.inferer(x, self.network)
        pred = plain(pred).float().contiguous()
        if self.clip_range is not None:
            pred = pred.clamp(*self.clip_range)
        if isinstance(hr, MetaTensor):
            if tuple(pred.shape) != tuple(hr.shape):
                raise ValueError(
                    f"SREvaluator: prediction shape {tuple(pred.shape)} does not match hr {tuple(hr.shape)}"
                )
            pred = MetaTensor(pred, meta=dict(hr.meta), applied_operations=[])
            pred.is_batch = hr.is_batch
        self.state.output[Keys.PRED] = pred
        self.fire_event(IterationEvents.FORWARD_COMPLETED)
        self.fire_event(IterationEvents.MODEL_COMPLETED)
        return self.state.output
