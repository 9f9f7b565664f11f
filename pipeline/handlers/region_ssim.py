"""``RegionSSIMHandler``: region SSIM (MONAI ``IgniteMetricHandler``) for evaluators and ``validate#handlers``.

``RegionSSIMHandler`` reads ``(pred, label)`` through ``output_transform`` like MONAI's handlers, and the
batch's ``mask`` (and ``label_map``) keys from ``engine.state.batch``, so a bundle adds, e.g.::

    {"_target_": "medsr.pipeline.handlers.RegionSSIMHandler", "data_range": 1.0, "region": "inside",
     "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}

and gets ``engine.state.metrics["region_ssim_inside"]`` (the name given in ``key_val_metric`` /
``additional_metrics``, or attached by hand). When the region is absent from every sample, no number is
stored and the reason is logged (never NaN).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from ignite.engine import Engine
from monai.handlers import IgniteMetricHandler

from medsr.pipeline.metrics.monai_metrics import RegionSSIMMetric
from medsr.pipeline.metrics.regions import DEFAULT_REGIONS

__all__ = ["RegionSSIMHandler"]

logger = logging.getLogger(__name__)


def _identity(x: Any) -> Any:
    return x


class RegionSSIMHandler(IgniteMetricHandler):
    """Region SSIM handler: mean of ``region`` over the evaluation (see :class:`RegionSSIMMetric`).

    Args:
        data_range: intensity range R.
        region: reported region (``inside``, ``outside``, ``whole``, ``boundary`` or a label name).
        regions: regions built from the mask.
        mask_key: batch key of the binary mask (``None``: no mask, ``whole`` only).
        label_key: batch key of a label map (each value is a region).
        boundary_width: ring half-width for ``boundary``.
        units: ``"voxel"`` or ``"mm"``.
        label_names: names for label values.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: keep per-sample values.
        metric_kwargs: passed to the metric (``rule``, ``spatial_dims``).
    """

    def __init__(
        self,
        data_range: float,
        region: str = "inside",
        regions: Sequence[str] = DEFAULT_REGIONS,
        mask_key: str | None = "mask",
        label_key: str | None = None,
        boundary_width: float | None = None,
        units: Literal["voxel", "mm"] = "voxel",
        label_names: Mapping[int, str] | None = None,
        output_transform: Callable = _identity,
        save_details: bool = True,
        **metric_kwargs: Any,
    ) -> None:
        metric = RegionSSIMMetric(
            data_range,
            region,
            regions=regions,
            boundary_width=boundary_width,
            units=units,
            label_names=label_names,
            **metric_kwargs,
        )
        super().__init__(metric, output_transform=output_transform, save_details=save_details)
        self.mask_key, self.label_key = mask_key, label_key
        self._batch: Any = None

    def iteration_completed(self, engine: Engine) -> None:
        """Remember the batch's mask/label, then update from ``output_transform(engine.state.output)``."""
        self._batch = engine.state.batch
        super().iteration_completed(engine)

    def _from_batch(self, key: str | None) -> torch.Tensor | None:
        if key is None:
            return None
        batch = self._batch
        if isinstance(batch, list) and batch and isinstance(batch[0], Mapping):  # decollated
            if key not in batch[0]:
                raise KeyError(f"{type(self).__name__}: batch has no key {key!r} (keys: {sorted(batch[0])})")
            return torch.stack([torch.as_tensor(b[key]) for b in batch])
        if isinstance(batch, Mapping):
            if key not in batch:
                raise KeyError(f"{type(self).__name__}: batch has no key {key!r} (keys: {sorted(batch)})")
            return batch[key]
        raise TypeError(f"{type(self).__name__}: engine.state.batch must be a dict to read {key!r}")

    def update(self, output: Sequence[torch.Tensor]) -> None:
        """Update the metric from ``(y_pred, y)`` and the batch's mask/label."""
        if len(output) != 2:
            raise ValueError(f"output must have length 2 (y_pred, y), got {len(output)}")
        y_pred, y = output
        if isinstance(y_pred, (list, tuple)):
            y_pred, y = torch.stack(list(y_pred)), torch.stack(list(y))
        self.metric_fn(y_pred, y, mask=self._from_batch(self.mask_key), label=self._from_batch(self.label_key))

    def completed(self, engine: Engine, name: str) -> None:
        """Store the region mean, or log why the region is absent (no NaN enters ``engine.state.metrics``)."""
        result = self.compute()
        if result is None:
            logger.warning("%s: no value for %r: %s", name, self.metric_fn.region, self.metric_fn.reason())
            engine.state.metrics.pop(name, None)
            return
        engine.state.metrics[name] = result
