"""Adversarial losses for SR GANs: vanilla (SRGAN), least squares and relativistic average (ESRGAN).

Both forms take the discriminator's logits for the real (HR) and the fake (SR) batch, because the
relativistic average loss compares each with the mean of the other (Jolicoeur-Martineau 2018, ESRGAN):

    D_Ra(x_r, x_f) = sigmoid(C(x_r) - E[C(x_f)])
    L_D = -E[log D_Ra(x_r, x_f)] - E[log(1 - D_Ra(x_f, x_r))]
    L_G = -E[log(1 - D_Ra(x_r, x_f))] - E[log D_Ra(x_f, x_r)]

Here every expectation is a mean over the batch and the two terms are averaged (BasicSR's scaling).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GANLoss", "as_logits"]

GAN_KINDS = ("vanilla", "lsgan", "ragan")


def as_logits(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The logits of a discriminator output: the tensor itself, or the last item of a list (MONAI PatchDiscriminator)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)) and output and isinstance(output[-1], torch.Tensor):
        return output[-1]
    raise TypeError(f"discriminator output must be a tensor or a list of tensors, got {type(output).__name__}")


class GANLoss(nn.Module):
    """Generator and discriminator adversarial losses.

    Args:
        kind: ``"vanilla"`` (binary cross-entropy on logits), ``"lsgan"`` (least squares) or ``"ragan"``
            (relativistic average, ESRGAN).
        real_label: target for real samples (e.g. 0.9 for one-sided label smoothing).
        fake_label: target for fake samples.

    Use :meth:`generator` in the G step and :meth:`discriminator` in the D step; ``forward`` is
    :meth:`generator`.
    """

    def __init__(self, kind: str = "ragan", real_label: float = 1.0, fake_label: float = 0.0) -> None:
        super().__init__()
        kind = str(kind).lower()
        if kind not in GAN_KINDS:
            raise ValueError(f"GANLoss: kind must be one of {GAN_KINDS}, got {kind!r}")
        self.kind = kind
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    @property
    def needs_real_logits_for_generator(self) -> bool:
        """Whether the generator loss uses the real logits (true for the relativistic loss)."""
        return self.kind == "ragan"

    def _criterion(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        value = self.real_label if target_is_real else self.fake_label
        target = torch.full_like(logits, value)
        if self.kind == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def generator(self, fake_logits, real_logits=None) -> torch.Tensor:
        """Generator loss from the discriminator's logits on the SR batch (and the HR batch for ``ragan``).

        Args:
            fake_logits: D's logits on G's output (gradients flow to G through them).
            real_logits: D's logits on the HR batch; required for ``ragan``, ignored otherwise.
        """
        fake = as_logits(fake_logits).float()
        if self.kind != "ragan":
            return self._criterion(fake, True)
        if real_logits is None:
            raise ValueError("GANLoss(kind='ragan').generator needs real_logits (D's logits on the HR batch)")
        real = as_logits(real_logits).float()
        return 0.5 * (self._criterion(real - fake.mean(), False) + self._criterion(fake - real.mean(), True))

    def discriminator(self, real_logits, fake_logits) -> torch.Tensor:
        """Discriminator loss from its logits on the HR batch and on the (detached) SR batch."""
        real = as_logits(real_logits).float()
        fake = as_logits(fake_logits).float()
        if self.kind == "ragan":
            return 0.5 * (self._criterion(real - fake.mean(), True) + self._criterion(fake - real.mean(), False))
        return 0.5 * (self._criterion(real, True) + self._criterion(fake, False))

    def forward(self, fake_logits, real_logits=None) -> torch.Tensor:
        return self.generator(fake_logits, real_logits)
