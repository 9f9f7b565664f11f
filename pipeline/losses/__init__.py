"""medsr.pipeline.losses: pixel, SSIM, TV, perceptual/content, GAN, fusion, SRGAN and distillation losses (2D/3D)."""

from medsr.pipeline.losses.composite import CompositeLoss, ESRGANLoss, FusionLoss, SRGANLoss
from medsr.pipeline.losses.distillation import DistillationLoss, default_feature_pairs
from medsr.pipeline.losses.gan import GANLoss, as_logits
from medsr.pipeline.losses.perceptual import PerceptualLoss, build_feature_extractor, missing_weights_error
from medsr.pipeline.losses.pixel import CharbonnierLoss, SSIMLoss, TVLoss, get_pixel_loss

__all__ = [
    "CharbonnierLoss",
    "TVLoss",
    "SSIMLoss",
    "get_pixel_loss",
    "PerceptualLoss",
    "build_feature_extractor",
    "missing_weights_error",
    "GANLoss",
    "as_logits",
    "CompositeLoss",
    "FusionLoss",
    "ESRGANLoss",
    "SRGANLoss",
    "DistillationLoss",
    "default_feature_pairs",
]
