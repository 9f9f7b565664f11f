"""``SSIMHandler``: SSIM with an explicit ``data_range`` as a MONAI ``IgniteMetricHandler``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai.handlers import IgniteMetricHandler

from medsr.pipeline.metrics.monai_metrics import SSIMMetric

__all__ = ["SSIMHandler"]


def _identity(x: Any) -> Any:
    return x


class SSIMHandler(IgniteMetricHandler):
    """SSIM (scikit-image equivalent, fast in 3D) with an explicit ``data_range``."""

    def __init__(self, data_range: float, output_transform: Callable = _identity, save_details: bool = True) -> None:
        super().__init__(SSIMMetric(data_range), output_transform=output_transform, save_details=save_details)
