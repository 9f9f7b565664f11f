"""Image-quality metrics for SR: PSNR, MSE, NRMSE, SSIM, MS-SSIM, region SSIM/PSNR, MONAI metric wrappers.

Every metric takes an explicit ``data_range``; SSIM equals scikit-image's Gaussian-window SSIM and is fast
and memory-bounded in 3D. Region scores average over the windows lying inside lesion/normal-tissue regions.
"""

from medsr.pipeline.metrics.functional import (
    MS_SSIM_WEIGHTS,
    RegionScore,
    ms_ssim,
    mse,
    nrmse,
    psnr,
    region_mse,
    region_psnr,
    region_ssim,
    ssim,
    ssim_map,
)
from medsr.pipeline.metrics.monai_metrics import PSNRMetric, RegionPSNRMetric, RegionSSIMMetric, SSIMMetric
from medsr.pipeline.metrics.regions import DEFAULT_REGIONS, make_regions

__all__ = [
    "DEFAULT_REGIONS",
    "MS_SSIM_WEIGHTS",
    "PSNRMetric",
    "RegionPSNRMetric",
    "RegionSSIMMetric",
    "RegionScore",
    "SSIMMetric",
    "make_regions",
    "ms_ssim",
    "mse",
    "nrmse",
    "psnr",
    "region_mse",
    "region_psnr",
    "region_ssim",
    "ssim",
    "ssim_map",
]
