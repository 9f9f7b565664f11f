"""MONAI ``CumulativeIterationMetric`` versions of the metrics, for evaluators and validation handlers.

Each call takes a batch ``(B, C, *S)`` (or a list of channel-first tensors) and appends one row per sample
to the buffer; ``aggregate()`` returns the mean over samples. Region metrics also take the sample's
``mask`` and/or ``label`` (``(B, 1, *S)``) as keyword arguments; a region absent from a sample is left out
of that region's mean, and a region absent from every sample aggregates to ``None`` with a reason in
:meth:`RegionSSIMMetric.aggregate_regions` (never NaN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from monai.metrics import CumulativeIterationMetric

from medsr.pipeline.metrics._core import check_data_range
from medsr.pipeline.metrics.functional import RegionScore, psnr, region_psnr, region_ssim, ssim
from medsr.pipeline.metrics.regions import DEFAULT_REGIONS, make_regions

__all__ = ["PSNRMetric", "RegionPSNRMetric", "RegionSSIMMetric", "SSIMMetric"]


def _as_batch(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        return torch.stack([torch.as_tensor(i) for i in x])
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a batch-first tensor (B, C, *S), got {type(x).__name__}")
    return x


class _MeanMetric(CumulativeIterationMetric):
    """Buffer one value per sample; aggregate to the mean (a 0-d tensor)."""

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Mean over every sample seen since the last ``reset()``."""
        data = self.get_buffer()
        if data is None or (isinstance(data, torch.Tensor) and data.numel() == 0):
            raise ValueError(f"{type(self).__name__}: nothing to aggregate; call the metric on a batch first")
        return data.to(torch.float64).mean()


class PSNRMetric(_MeanMetric):
    """PSNR with an explicit ``data_range`` (dB), one value per sample.

    Args:
        data_range: intensity range R (required).
        spatial_dims: 2 or 3 (inferred from batched input when omitted).
    """

    def __init__(self, data_range: float, spatial_dims: int | None = None) -> None:
        super().__init__()
        self.data_range = check_data_range(data_range)
        self.spatial_dims = spatial_dims

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("PSNRMetric needs y (the reference image)")
        sd = self.spatial_dims or y_pred.ndim - 2
        return psnr(y_pred, y, self.data_range, spatial_dims=sd).view(-1, 1)


class SSIMMetric(_MeanMetric):
    """SSIM (11-tap Gaussian, sigma 1.5; equals scikit-image) with an explicit ``data_range``.

    Args:
        data_range: intensity range R (required).
        spatial_dims: 2 or 3 (inferred from batched input when omitted).
        win_size: Gaussian window length.
        sigma: Gaussian sigma in voxels.
    """

    def __init__(self, data_range: float, spatial_dims: int | None = None, win_size: int = 11, sigma: float = 1.5):
        super().__init__()
        self.data_range = check_data_range(data_range)
        self.spatial_dims = spatial_dims
        self.win_size, self.sigma = win_size, sigma

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("SSIMMetric needs y (the reference image)")
        sd = self.spatial_dims or y_pred.ndim - 2
        return ssim(y_pred, y, self.data_range, spatial_dims=sd, win_size=self.win_size, sigma=self.sigma).view(-1, 1)


class _RegionMetric(CumulativeIterationMetric):
    """Shared region bookkeeping: one column per region, NaN in the buffer marks "absent in this sample"."""

    def __init__(
        self,
        data_range: float,
        region: str = "inside",
        regions: Sequence[str] = DEFAULT_REGIONS,
        boundary_width: float | None = None,
        units: Literal["voxel", "mm"] = "voxel",
        label_names: Mapping[int, str] | None = None,
        spatial_dims: int | None = None,
    ) -> None:
        super().__init__()
        self.data_range = check_data_range(data_range)
        self.region = region
        self.include = tuple(regions)
        self.boundary_width = boundary_width
        self.units = units
        self.label_names = dict(label_names or {})
        self.spatial_dims = spatial_dims
        self.region_names: list[str] = []
        self._reasons: dict[str, str] = {}

    def _regions_for(self, b: int, y: torch.Tensor, mask, label) -> dict[str, torch.Tensor]:
        return make_regions(
            None if mask is None else mask[b],
            None if label is None else label[b],
            include=self.include if mask is not None else [n for n in self.include if n == "whole"] or ["whole"],
            spatial_shape=tuple(y.shape[2:]),
            boundary_width=self.boundary_width,
            units=self.units,
            spacing=None,
            label_names=self.label_names,
        )

    def _score(self, p: torch.Tensor, t: torch.Tensor, regions: dict[str, torch.Tensor]) -> dict[str, RegionScore]:
        raise NotImplementedError

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError(f"{type(self).__name__} needs y (the reference image)")
        mask, label = kwargs.get("mask"), kwargs.get("label")
        if mask is not None:
            mask = _as_batch(mask, "mask")
        if label is not None:
            label = _as_batch(label, "label")
        rows = []
        for b in range(y_pred.shape[0]):
            regs = self._regions_for(b, y, mask, label)
            if mask is None:  # a datalist without masks: only "whole"; the others report why they are absent
                for n in self.include:
                    if n not in regs:
                        self._reasons.setdefault(n, "no mask")
            scores = self._score(y_pred[b], y[b], regs)
            for n in scores:
                if n not in self.region_names:
                    self.region_names.append(n)
            row = []
            for n in self.region_names:
                s = scores.get(n)
                if s is None or s.value is None:
                    self._reasons.setdefault(n, s.reason if s is not None else f"region {n!r} not in this sample")
                    row.append(float("nan"))
                else:
                    row.append(s.value)
            rows.append(row)
        width = len(self.region_names)
        return torch.tensor([r + [float("nan")] * (width - len(r)) for r in rows], dtype=torch.float64)

    def aggregate_regions(self) -> dict[str, RegionScore]:
        """``region -> RegionScore(mean over samples where present, count = such samples)``."""
        data = self.get_buffer()
        if data is None:
            raise ValueError(f"{type(self).__name__}: nothing to aggregate; call the metric on a batch first")
        rows = [list(r.tolist()) for r in (data if isinstance(data, torch.Tensor) else torch.stack(list(data)))]
        out = {}
        for j, n in enumerate(self.region_names):
            vals = [r[j] for r in rows if j < len(r) and r[j] == r[j]]
            if vals:
                out[n] = RegionScore(sum(vals) / len(vals), len(vals), 0)
            else:
                out[n] = RegionScore(None, 0, 0, self._reasons.get(n, f"region {n!r} absent in every sample"))
        return out

    def aggregate(self) -> torch.Tensor | None:  # type: ignore[override]
        """Mean of ``region`` over the samples where it is present; ``None`` when absent from all."""
        scores = self.aggregate_regions()
        if self.region not in scores:
            if self._reasons.get(self.region) == "no mask":
                return None
            raise ValueError(f"region {self.region!r} was never computed; regions seen: {list(scores)}")
        v = scores[self.region].value
        return None if v is None else torch.tensor(v, dtype=torch.float64)

    def reason(self, region: str | None = None) -> str | None:
        """Why ``region`` (default: the reported one) is absent, if it is."""
        return self._reasons.get(region or self.region)

    def reset(self) -> None:
        super().reset()
        self.region_names = []
        self._reasons = {}

    def _sync(self):
        # rows may grow columns as new regions appear: pad before MONAI concatenates them
        if self._buffers:
            width = len(self.region_names)
            for buf in self._buffers:
                for i, row in enumerate(buf):
                    if row.numel() < width:
                        buf[i] = torch.cat([row, row.new_full((width - row.numel(),), float("nan"))])
        return super()._sync()


class RegionSSIMMetric(_RegionMetric):
    """Region SSIM per sample; ``aggregate()`` gives ``region``'s mean, ``aggregate_regions()`` all of them.

    Call as ``metric(y_pred, y, mask=mask, label=label)``.

    Args:
        data_range: intensity range R (required).
        region: the region ``aggregate()`` reports (``inside``, ``outside``, ``whole``, ``boundary``, a label name).
        regions: regions built from ``mask`` (see :func:`medsr.pipeline.metrics.make_regions`).
        boundary_width: ring half-width for ``boundary``.
        units: ``"voxel"`` or ``"mm"`` for ``boundary_width``.
        label_names: names of label values for ``label`` maps.
        spatial_dims: 2 or 3.
        rule: ``"inside"`` (windows fully inside the region) or ``"centre"``.
    """

    def __init__(self, data_range: float, region: str = "inside", *args: Any, rule: str = "inside", **kwargs: Any):
        super().__init__(data_range, region, *args, **kwargs)
        self.rule = rule

    def _score(self, p, t, regions):
        sd = self.spatial_dims or p.ndim - 1
        return region_ssim(p, t, regions, self.data_range, spatial_dims=sd, rule=self.rule)  # type: ignore[arg-type]


class RegionPSNRMetric(_RegionMetric):
    """Region PSNR per sample (voxels of the region); same call and arguments as :class:`RegionSSIMMetric`."""

    def _score(self, p, t, regions):
        sd = self.spatial_dims or p.ndim - 1
        return region_psnr(p, t, regions, self.data_range, spatial_dims=sd)  # type: ignore[return-value]
