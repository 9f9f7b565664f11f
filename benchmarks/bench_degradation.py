"""Benchmark: 1×1×4 mm thick-slice degradation of one 256³ volume (1 mm isotropic), in one run.

Compares, on the same volume and thread count, medsr ``SimulateLowResolution`` (Gaussian and box slice
profiles, anti-aliased, straight to the LR grid; and followed by a trilinear resample back to 256³, which is
what torchio returns) with torchio ``RandomAnisotropy`` (nearest-neighbour downsampling + resample back) and
MONAI ``Resize(mode="area")``. Prints medians of ``--repeats`` runs and ratios, plus the residual amplitude of
a sinusoid above the LR Nyquist frequency (period 3 mm along the thick axis): ~0 means anti-aliased.

Usage: ``OMP_NUM_THREADS=2 python benchmarks/bench_degradation.py [--size 256] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Resize

from medsr.transforms import SimulateLowResolution


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def alias_amplitude(out: torch.Tensor, n_lr: int) -> float:
    """Amplitude of the strongest non-DC frequency along the last axis of the LR output (input amplitude 1)."""
    prof = out.reshape(-1, out.shape[-1]).mean(0).double()
    spec = torch.fft.rfft(prof - prof.mean()).abs() * 2.0 / prof.numel()
    return float(spec.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = args.size
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    vol = MetaTensor(torch.rand(1, n, n, n, generator=gen), affine=torch.eye(4, dtype=torch.float64))
    z = torch.arange(n, dtype=torch.float32)
    wave = MetaTensor((1.0 + torch.cos(2 * np.pi * z / 3.0)).expand(1, 8, 8, n).contiguous())

    gauss = SimulateLowResolution((None, None, 4.0), profile="gaussian")
    box = SimulateLowResolution((None, None, 4.0), profile="box")
    area = Resize(spatial_size=(n, n, n // 4), mode="area")

    def gauss_back():
        lr = gauss(vol)
        return F.interpolate(lr.as_tensor()[None], size=(n, n, n), mode="trilinear", align_corners=False)[0]

    rows = [
        ("medsr SimulateLowResolution gaussian (LR grid)", lambda: gauss(vol), lambda: gauss(wave)),
        ("medsr SimulateLowResolution box (LR grid)", lambda: box(vol), lambda: box(wave)),
        ("medsr gaussian + trilinear back to 256^3", gauss_back, None),
        ("MONAI Resize(mode='area')", lambda: area(vol), lambda: Resize((8, 8, n // 4), mode="area")(wave)),
    ]
    try:
        import torchio as tio

        aniso = tio.RandomAnisotropy(axes=(2,), downsampling=(4, 4), image_interpolation="linear")
        subj = tio.Subject(img=tio.ScalarImage(tensor=vol.as_tensor(), affine=np.eye(4)))
        wsub = tio.Subject(img=tio.ScalarImage(tensor=wave.as_tensor(), affine=np.eye(4)))

        def tio_wave():
            out = aniso(wsub)["img"].data  # back on the HR grid: sample the LR grid's centres (every 4th)
            return out[..., 1::4]

        rows.append(("torchio RandomAnisotropy (4 mm, nearest + back)", lambda: aniso(subj), tio_wave))
    except ImportError:  # pragma: no cover - torchio is an optional benchmark dependency
        print("torchio not installed: pip install 'medsr[bench]'")

    print(f"volume 1x{n}x{n}x{n} float32, 1 mm -> 1x1x4 mm, torch threads={threads}, repeats={args.repeats}")
    results = {}
    for name, fn, wave_fn in rows:
        t = median_time(fn, args.repeats)
        alias = alias_amplitude(wave_fn(), n // 4) if wave_fn is not None else float("nan")
        results[name] = t
        print(f"{name:52s} median {t * 1000:9.1f} ms   alias amplitude {alias:.3f}")
    ref = results[rows[0][0]]
    print("ratios (time / medsr gaussian LR grid):")
    for name, t in results.items():
        print(f"  {name:52s} {t / ref:7.2f}x")


if __name__ == "__main__":
    main()
