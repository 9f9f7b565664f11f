"""Knowledge distillation losses for SR (chest X-ray study): a large frozen teacher, a small student.

``L = w_gt·crit(S(x), y) + w_output·crit(S(x), T(x)) + w_feature·Σ_i crit(A_i(s_i), t_i)`` where ``s_i``/``t_i``
are paired intermediate feature maps and ``A_i`` a 1×1 convolution adapter when the widths differ
(identity otherwise). The adapters are trainable: their parameters belong in the student's optimizer
(:class:`medsr.pipeline.engines.DistillationTrainer` adds them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from torch import nn

from medsr.pipeline.losses.pixel import check_same_shape, get_pixel_loss

__all__ = ["DistillationLoss", "default_feature_pairs"]


def default_feature_pairs(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pair student feature ``i`` with the teacher feature at the same relative depth (last with last)."""
    if n_student < 1 or n_teacher < 1:
        return []
    return [(i, max(0, round((i + 1) * n_teacher / n_student) - 1)) for i in range(n_student)]


class DistillationLoss(nn.Module):
    """Output and intermediate-feature distillation with 1×1 conv adapters.

    Args:
        spatial_dims: 2 or 3 (for the adapters).
        student_channels: widths of the student's feature maps, in order (``()`` for output-only distillation).
        teacher_channels: widths of the teacher's feature maps, in order.
        feature_pairs: ``(student_index, teacher_index)`` pairs; default pairs equal relative depths.
        w_gt: weight of the ground-truth (HR) term.
        w_output: weight of the teacher-output term.
        w_feature: weight of the feature term (summed over pairs, averaged).
        criterion: ``"l1"``, ``"mse"``, ``"charbonnier"`` or a module, for all three terms.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        student_channels: Sequence[int] = (),
        teacher_channels: Sequence[int] = (),
        feature_pairs: Sequence[tuple[int, int]] | None = None,
        w_gt: float = 1.0,
        w_output: float = 1.0,
        w_feature: float = 1.0,
        criterion: str | nn.Module = "l1",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"DistillationLoss: spatial_dims must be 2 or 3, got {spatial_dims}")
        self.student_channels = [int(c) for c in student_channels]
        self.teacher_channels = [int(c) for c in teacher_channels]
        pairs = (
            default_feature_pairs(len(self.student_channels), len(self.teacher_channels))
            if feature_pairs is None
            else [(int(s), int(t)) for s, t in feature_pairs]
        )
        for s, t in pairs:
            if not (0 <= s < len(self.student_channels)) or not (0 <= t < len(self.teacher_channels)):
                raise ValueError(
                    f"DistillationLoss: feature pair ({s}, {t}) is out of range for {len(self.student_channels)} "
                    f"student and {len(self.teacher_channels)} teacher feature maps"
                )
        if w_feature and not pairs:
            raise ValueError(
                "DistillationLoss: w_feature > 0 needs student_channels and teacher_channels (feature widths); "
                "set w_feature=0 for output-only distillation"
            )
        self.feature_pairs = pairs
        conv = Conv[Conv.CONV, spatial_dims]
        self.adapters = nn.ModuleList(
            nn.Identity()
            if self.student_channels[s] == self.teacher_channels[t]
            else conv(self.student_channels[s], self.teacher_channels[t], kernel_size=1)
            for s, t in pairs
        )
        self.w_gt, self.w_output, self.w_feature = float(w_gt), float(w_output), float(w_feature)
        self.criterion: Callable = get_pixel_loss(criterion)

    def forward(
        self,
        student_out: torch.Tensor,
        teacher_out: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        student_features: Sequence[torch.Tensor] = (),
        teacher_features: Sequence[torch.Tensor] = (),
    ) -> dict[str, torch.Tensor]:
        """Weighted terms ``gt``, ``output``, ``feature`` and their total ``loss`` (zero-weight terms skipped)."""
        out: dict[str, torch.Tensor] = {}
        if self.w_gt:
            if target is None:
                raise ValueError("DistillationLoss: w_gt > 0 needs the HR target; set w_gt=0 to distil without it")
            check_same_shape(student_out, target, "DistillationLoss (student vs HR)")
            out["gt"] = self.w_gt * self.criterion(student_out.float(), target.float())
        if self.w_output:
            if teacher_out is None:
                raise ValueError("DistillationLoss: w_output > 0 needs the teacher's output")
            check_same_shape(student_out, teacher_out, "DistillationLoss (student vs teacher)")
            out["output"] = self.w_output * self.criterion(student_out.float(), teacher_out.detach().float())
        if self.w_feature:
            if len(student_features) != len(self.student_channels) or len(teacher_features) != len(
                self.teacher_channels
            ):
                raise ValueError(
                    f"DistillationLoss: got {len(student_features)} student / {len(teacher_features)} teacher feature maps, "
                    f"configured for {len(self.student_channels)} / {len(self.teacher_channels)}"
                )
            feat = student_out.new_zeros((), dtype=torch.float32)
            for adapter, (s, t) in zip(self.adapters, self.feature_pairs):
                fs, ft = adapter(student_features[s]), teacher_features[t].detach()
                if fs.shape[2:] != ft.shape[2:]:
                    fs = F.interpolate(fs, size=ft.shape[2:], mode="nearest")
                feat = feat + self.criterion(fs.float(), ft.float())
            out["feature"] = self.w_feature * feat / len(self.feature_pairs)
        out["loss"] = sum(out.values()) if out else student_out.new_zeros(())
        return out


def feature_channels(network: torch.nn.Module, spatial_dims: int, in_channels: int, size: int = 8) -> list[int]:
    """Channel widths of the feature maps ``network(x, return_features=True)`` returns (one tiny forward)."""
    net = network.module if hasattr(network, "module") else network
    param = next(net.parameters())
    x = torch.zeros(1, in_channels, *([size] * spatial_dims), device=param.device)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        _, feats = net(x, return_features=True)
    net.train(was_training)
    return [int(f.shape[1]) for f in feats]
