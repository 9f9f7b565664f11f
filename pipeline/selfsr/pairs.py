"""Training pairs from the scan itself: in-plane patches with one in-plane axis degraded by the slice profile.

In-plane slices are sharp along both in-plane axes; degrading one of them with the slice profile and sampling
it at the slice spacing gives an (LR, HR) pair whose LR axis looks like the scan's slice axis. Both in-plane
axes are used (the two orientations are the 90° rotations), with flips along each patch axis; patch centres
are drawn mostly from the foreground.

The degraded axis is always the last patch axis: ``lr`` is ``(B, 1, P, L)``, ``hr`` is ``(B, 1, P, L·s)`` and LR
sample ``m`` of a patch sits at HR index ``(m + 1/2) s - 1/2`` of that patch (the pixel-shuffle convention of
:mod:`medsr.pipeline.selfsr.grid`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from medsr.pipeline.selfsr.grid import SelfSRGrid, apply_axis, degrade_matrix, resample_axis

__all__ = ["SlicePairs", "orient", "working_hr", "foreground_mask"]


def orient(vol: torch.Tensor, grid: SelfSRGrid, degraded: int) -> torch.Tensor:
    """View ``vol`` (3D) as ``(slice, other in-plane, degraded in-plane)``; ``degraded`` is 0 or 1 (which in-plane axis)."""
    a = grid.inplane_axes[degraded]
    b = grid.inplane_axes[1 - degraded]
    return vol.permute(grid.slice_axis, b, a)


def working_hr(vol: torch.Tensor, grid: SelfSRGrid, degraded: int) -> torch.Tensor:
    """The oriented volume with its degraded axis on the working grid (spacing ``h``; resampled when ``h != p``)."""
    x = orient(vol, grid, degraded).contiguous()
    p = grid.inplane_spacing[degraded]
    h = grid.work_spacing
    if abs(p - h) <= 1e-6 * p:
        return x
    n = int(np.floor(x.shape[-1] * p / h + 1e-6))
    pos = (np.arange(n) + 0.5) * h / p - 0.5
    return resample_axis(x, -1, pos).contiguous()


def foreground_mask(vol: torch.Tensor, fraction: float = 0.05) -> torch.Tensor:
    """Voxels brighter than ``fraction`` of the 99th percentile (the body / brain for MR and CT after shifting)."""
    x = vol.float()
    lo = float(x.min())
    hi = float(torch.quantile(x.flatten()[:: max(1, x.numel() // 1_000_000)], 0.99))
    return x > lo + fraction * (hi - lo)


class SlicePairs:
    """An iterable of ``{"lr", "hr"}`` batches drawn from one scan (``len`` batches per pass).

    Each pass is seeded from ``(seed, pass index)`` through :meth:`set_epoch`, so a resumed run draws the
    same batches (``ResumableLoader`` calls it through :attr:`sampler`).

    Args:
        vol: the normalised scan, 3D tensor.
        grid: its :class:`SelfSRGrid`.
        profile: ``"gaussian"``, ``"box"`` or a ``(m, 2)`` table (mm, weight).
        batch_size: patches per batch.
        patch_rows: patch length along the non-degraded axis.
        lr_length: LR patch length along the degraded axis (HR: ``lr_length · s``).
        length: batches per pass.
        foreground: probability of centring a patch on a foreground voxel.
        seed: base seed.
    """

    def __init__(
        self,
        vol: torch.Tensor,
        grid: SelfSRGrid,
        profile: str | np.ndarray = "gaussian",
        batch_size: int = 16,
        patch_rows: int = 48,
        lr_length: int = 12,
        length: int = 100,
        foreground: float = 0.9,
        seed: int = 0,
    ) -> None:
        self.grid, self.batch_size, self.length, self.seed = grid, int(batch_size), int(length), int(seed)
        self.foreground = float(foreground)
        s = grid.scale
        fg = foreground_mask(vol)
        self.hr: list[torch.Tensor] = []
        self.lr: list[list[torch.Tensor]] = []
        self.fg: list[np.ndarray] = []
        for d in (0, 1):
            hr = working_hr(vol.float(), grid, d)
            n = hr.shape[-1]
            phases = []
            for phi in range(s):
                m = (n - phi) // s
                centres = (np.arange(m) + 0.5) * s - 0.5 + phi
                w = degrade_matrix(n, centres, grid.work_spacing, grid.thickness, profile)
                phases.append(apply_axis(hr, w, -1).float().contiguous())
            self.hr.append(hr)
            self.lr.append(phases)
            # foreground voxels of this orientation, in (slice, row, column-on-the-working-grid) indices
            f = orient(fg, grid, d)
            z, r, c = np.nonzero(f.numpy())
            c = np.minimum((c * grid.inplane_spacing[d] / grid.work_spacing).astype(np.int64), n - 1)
            self.fg.append(np.stack([z, r, c], 1) if len(z) else np.zeros((0, 3), np.int64))
        rows = min(h.shape[1] for h in self.hr)
        cols = min(min(p.shape[-1] for p in lrs) for lrs in self.lr)
        self.patch_rows = int(min(patch_rows, rows))
        self.lr_length = int(max(1, min(lr_length, cols)))
        self._rng = np.random.default_rng([self.seed, 0])

    # ResumableLoader reseeds through loader.sampler.set_epoch(pass index)
    @property
    def sampler(self) -> SlicePairs:
        return self

    def set_epoch(self, epoch: int) -> None:
        self._rng = np.random.default_rng([self.seed, int(epoch)])

    def __len__(self) -> int:
        return self.length

    def sample(self, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """One batch ``{"lr": (B, 1, P, L), "hr": (B, 1, P, L·s)}``."""
        rng = self._rng if rng is None else rng
        s, pr, L = self.grid.scale, self.patch_rows, self.lr_length
        lrs, hrs = [], []
        for _ in range(self.batch_size):
            d = int(rng.integers(2))
            hr = self.hr[d]
            nz, nr, _ = hr.shape
            phi = int(rng.integers(s))
            lr = self.lr[d][phi]
            m = lr.shape[-1]
            fg = self.fg[d]
            if len(fg) and rng.random() < self.foreground:
                z, r, c = fg[int(rng.integers(len(fg)))]
            else:
                z, r, c = rng.integers(nz), rng.integers(nr), rng.integers(hr.shape[-1])
            r0 = int(np.clip(r - pr // 2, 0, nr - pr))
            j0 = int(np.clip((c - phi) // s - L // 2, 0, m - L))
            c0 = j0 * s + phi
            x = lr[z, r0 : r0 + pr, j0 : j0 + L]
            y = hr[z, r0 : r0 + pr, c0 : c0 + L * s]
            if rng.random() < 0.5:
                x, y = x.flip(0), y.flip(0)
            if rng.random() < 0.5:  # a flip along the degraded axis keeps the pixel-shuffle alignment
                x, y = x.flip(1), y.flip(1)
            lrs.append(x)
            hrs.append(y)
        return {"lr": torch.stack(lrs)[:, None].contiguous(), "hr": torch.stack(hrs)[:, None].contiguous()}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(self.length):
            yield self.sample()
