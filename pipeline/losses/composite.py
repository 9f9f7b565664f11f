"""Composite generator losses of the studies: the fusion loss (EDSR + improved SE, retina) and the SRGAN loss.

A composite loss is called as ``loss(pred, target, fake_logits=None, real_logits=None)`` and returns a dict:
``"loss"`` is the weighted total and every other key a weighted term (``"l1"``, ``"vgg"``, ...), which the
trainers log as ``loss_<name>``. ``adversarial`` (a :class:`GANLoss`, or ``None`` when the adversarial
weight is 0) is also what the GAN trainer's discriminator step uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medsr.pipeline.losses.gan import GANLoss
from medsr.pipeline.losses.perceptual import PerceptualLoss
from medsr.pipeline.losses.pixel import TVLoss, check_same_shape

__all__ = ["CompositeLoss", "FusionLoss", "SRGANLoss", "ESRGANLoss"]


class CompositeLoss(nn.Module):
    """Base class: a weighted sum of named terms, optionally with an adversarial term.

    Subclasses fill ``self.weights`` (term name -> weight) and implement :meth:`term`. Terms with weight 0
    are never computed (so their networks are never built).
    """

    adversarial_term = "adv"

    def __init__(self, gan_kind: str | None = "vanilla") -> None:
        super().__init__()
        self.weights: dict[str, float] = {}
        self.adversarial: GANLoss | None = GANLoss(gan_kind) if gan_kind is not None else None

    @property
    def uses_adversarial(self) -> bool:
        """True when the adversarial term has a non-zero weight (the trainer then needs D's logits)."""
        return self.adversarial is not None and self.weights.get(self.adversarial_term, 0.0) != 0.0

    @property
    def needs_real_logits(self) -> bool:
        """True when the generator's adversarial term also needs D's logits on the HR batch (relativistic)."""
        return self.uses_adversarial and self.adversarial.needs_real_logits_for_generator

    def term(self, name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        fake_logits: torch.Tensor | Sequence[torch.Tensor] | None = None,
        real_logits: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        check_same_shape(pred, target, type(self).__name__)
        out: dict[str, torch.Tensor] = {}
        total = pred.new_zeros((), dtype=torch.float32)
        for name, w in self.weights.items():
            if w == 0.0:
                continue
            if name == self.adversarial_term:
                if fake_logits is None:
                    raise ValueError(
                        f"{type(self).__name__}: the adversarial term (weight {w}) needs fake_logits; "
                        "train it with GANTrainer or set its weight to 0"
                    )
                value = self.adversarial.generator(fake_logits, real_logits)
            else:
                value = self.term(name, pred, target)
            out[name] = w * value.float()
            total = total + out[name]
        out["loss"] = total
        return out


def _perceptual(
    module: nn.Module | None,
    name: str,
    weights_path: str | os.PathLike | None,
    layers: Sequence[str] | None,
    criterion: str,
    pretrained: bool,
    slices_3d: int,
    switch_off: str,
) -> nn.Module:
    if module is not None:
        return module
    return PerceptualLoss(
        name,
        weights_path=weights_path,
        layers=layers,
        criterion=criterion,
        pretrained=pretrained,
        slices_3d=slices_3d,
        switch_off=switch_off,
    )


class FusionLoss(CompositeLoss):
    """Fusion loss ``L = w_vgg·L_VGG + w1·L1 + w_rg·L_RG + w_mse·L_MSE`` (EDSR + improved SE, retina study).

    Args:
        w_vgg: weight of the VGG perceptual loss (1 in the study; 0 switches it off, no weights needed).
        w1: weight of the L1 pixel loss (1).
        w_rg: weight of the relativistic GAN generator loss (0.005).
        w_mse: weight of the MSE pixel loss (0.5).
        perceptual: a ready perceptual loss module; otherwise one is built from ``vgg_weights_path``.
        vgg_weights_path: local VGG19 state dict for ``L_VGG``.
        vgg_layers: VGG19 layers (default: the extractor's).
        vgg_criterion: ``"l1"`` or ``"mse"`` between feature maps.
        gan_kind: adversarial loss kind (``"ragan"`` in the study).
        pretrained: ``False`` allows a randomly initialised VGG (tests only).
        slices_3d: slices per axis for the perceptual loss on 3D images.
    """

    adversarial_term = "rg"

    def __init__(
        self,
        w_vgg: float = 1.0,
        w1: float = 1.0,
        w_rg: float = 0.005,
        w_mse: float = 0.5,
        perceptual: nn.Module | None = None,
        vgg_weights_path: str | os.PathLike | None = None,
        vgg_layers: Sequence[str] | None = None,
        vgg_criterion: str = "l1",
        gan_kind: str = "ragan",
        pretrained: bool = True,
        slices_3d: int = 4,
    ) -> None:
        super().__init__(gan_kind)
        self.weights = {"vgg": float(w_vgg), "l1": float(w1), "rg": float(w_rg), "mse": float(w_mse)}
        self.perceptual = (
            _perceptual(
                perceptual, "vgg19", vgg_weights_path, vgg_layers, vgg_criterion, pretrained, slices_3d, "set w_vgg=0"
            )
            if w_vgg
            else None
        )

    def term(self, name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if name == "vgg":
            return self.perceptual(pred, target)
        if name == "l1":
            return F.l1_loss(pred.float(), target.float())
        return F.mse_loss(pred.float(), target.float())


class ESRGANLoss(FusionLoss):
    """ESRGAN generator loss ``L_percep + λ·L_G^Ra + η·L1`` (λ = 5e-3, η = 1e-2; Wang et al. 2018).

    The fusion loss with ``w_mse=0``; the perceptual term is VGG19 ``conv5_4`` features before activation
    in the paper (pass ``vgg_layers`` to match the extractor's layer names).
    """

    def __init__(
        self,
        w_percep: float = 1.0,
        w_gan: float = 5e-3,
        w_l1: float = 1e-2,
        perceptual: nn.Module | None = None,
        vgg_weights_path: str | os.PathLike | None = None,
        vgg_layers: Sequence[str] | None = None,
        pretrained: bool = True,
        slices_3d: int = 4,
    ) -> None:
        super().__init__(
            w_vgg=w_percep,
            w1=w_l1,
            w_rg=w_gan,
            w_mse=0.0,
            perceptual=perceptual,
            vgg_weights_path=vgg_weights_path,
            vgg_layers=vgg_layers,
            gan_kind="ragan",
            pretrained=pretrained,
            slices_3d=slices_3d,
        )


class SRGANLoss(CompositeLoss):
    """SRGAN / SwiftSRGAN generator loss ``mse + content + adversarial + TV`` (chest X-ray, colonoscopy studies).

    Args:
        mse_weight: image (pixel MSE) loss weight.
        content_weight: content loss weight (0.006: SRGAN's VGG feature rescaling).
        adversarial_weight: adversarial loss weight (1e-3).
        tv_weight: total variation weight (2e-8).
        content_extractor: ``"vgg19"`` (SRGAN) or ``"mobilenetv2"`` (SwiftSRGAN).
        content_weights_path: local weights of the content network.
        content_layers: VGG19 layers for the content loss (default: the extractor's).
        content: a ready content-loss module instead of building one.
        gan_kind: ``"vanilla"`` (SRGAN) or ``"lsgan"``/``"ragan"``.
        tv_p: TV exponent (1: absolute differences as in the study).
        pretrained: ``False`` allows a randomly initialised extractor (tests only).
        slices_3d: slices per axis for the content loss on 3D images.
    """

    def __init__(
        self,
        mse_weight: float = 1.0,
        content_weight: float = 0.006,
        adversarial_weight: float = 1e-3,
        tv_weight: float = 2e-8,
        content_extractor: str = "vgg19",
        content_weights_path: str | os.PathLike | None = None,
        content_layers: Sequence[str] | None = None,
        content: nn.Module | None = None,
        gan_kind: str = "vanilla",
        tv_p: int = 1,
        pretrained: bool = True,
        slices_3d: int = 4,
    ) -> None:
        super().__init__(gan_kind)
        self.weights = {
            "mse": float(mse_weight),
            "content": float(content_weight),
            "adv": float(adversarial_weight),
            "tv": float(tv_weight),
        }
        self.content = (
            _perceptual(
                content,
                content_extractor,
                content_weights_path,
                content_layers,
                "mse",
                pretrained,
                slices_3d,
                "set content_weight=0",
            )
            if content_weight
            else None
        )
        self.tv = TVLoss(p=tv_p)

    def term(self, name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if name == "mse":
            return F.mse_loss(pred.float(), target.float())
        if name == "content":
            return self.content(pred, target)
        return self.tv(pred.float())
