"""3D SSIM side by side: medsr region SSIM vs MONAI ``SSIMMetric`` vs scikit-image, on a real brain volume.

Volume: the MNI ICBM152 2009a T1 template shipped by nilearn, centre-cropped to 181x217x181 and scaled to
[0, 1]; the prediction is a degraded copy (Gaussian blur along the last axis, as a thick slice would, plus
mild Rician-like noise). Regions for medsr: whole image, brain (T1 > 0), outside, and a synthetic spherical
"lesion" in the right hemisphere.

Each method runs in a fresh subprocess so its peak memory is its own: the child loads the two float32
volumes from .npy files, resets the kernel's RSS high-water mark (``/proc/self/clear_refs``), runs the
method ``--repeats`` times and reports the median time and the peak RSS above the post-load baseline
(``VmHWM`` minus ``VmRSS``). torch's allocations are native, so tracemalloc would miss them.

Run: ``OMP_NUM_THREADS=2 python benchmarks/bench_ssim.py [--repeats 3] [--monai-repeats 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPE = (181, 217, 181)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_volumes(folder: Path) -> dict:
    """Write hr.npy, sr.npy, brain.npy, lesion.npy (float32 / bool) under ``folder``; return a description."""
    import nibabel as nib
    import nilearn
    import numpy as np
    from scipy import ndimage

    path = Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not path.exists():
        raise FileNotFoundError(f"nilearn's MNI T1 template not found at {path}")
    vol = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    starts = [(s - t) // 2 for s, t in zip(vol.shape, SHAPE)]
    if any(s < 0 for s in starts):
        raise ValueError(f"template shape {vol.shape} is smaller than {SHAPE}")
    hr = vol[tuple(slice(s, s + t) for s, t in zip(starts, SHAPE))]
    hr = (hr - hr.min()) / (hr.max() - hr.min())
    rng = np.random.default_rng(0)
    blurred = ndimage.gaussian_filter1d(hr, sigma=1.5, axis=2)
    noise = 0.02 * rng.standard_normal((2, *SHAPE)).astype(np.float32)
    sr = np.sqrt((blurred + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)
    brain = hr > 0
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    centre = (SHAPE[0] * 0.35, SHAPE[1] * 0.5, SHAPE[2] * 0.55)
    lesion = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= 18**2
    lesion &= brain
    for name, arr in (("hr", hr), ("sr", sr), ("brain", brain), ("lesion", lesion)):
        np.save(folder / f"{name}.npy", np.ascontiguousarray(arr))
    return {
        "source": str(path),
        "shape": list(SHAPE),
        "brain_voxels": int(brain.sum()),
        "lesion_voxels": int(lesion.sum()),
    }


def child(method: str, folder: Path, repeats: int) -> dict:
    """Run one method in this (fresh) process and return its timings and memory."""
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    hr = np.load(folder / "hr.npy")
    sr = np.load(folder / "sr.npy")
    brain = np.load(folder / "brain.npy")
    lesion = np.load(folder / "lesion.npy")
    if method == "medsr":
        from medsr.pipeline.metrics import region_ssim

        t_hr, t_sr = torch.from_numpy(hr), torch.from_numpy(sr)
        regions = {
            "whole": torch.ones(SHAPE, dtype=torch.bool),
            "brain": torch.from_numpy(brain),
            "outside": torch.from_numpy(~brain),
            "lesion": torch.from_numpy(lesion),
        }

        def run():
            res = region_ssim(t_sr[None], t_hr[None], regions, 1.0, spatial_dims=3)
            return {k: v.value for k, v in res.items()}
    elif method == "monai":
        from monai.metrics import SSIMMetric

        t_hr, t_sr = torch.from_numpy(hr)[None, None], torch.from_numpy(sr)[None, None]
        metric = SSIMMetric(spatial_dims=3, data_range=1.0)

        def run():
            with torch.no_grad():
                return {"whole": float(metric(t_sr, t_hr).mean())}
    elif method == "skimage":
        from skimage.metrics import structural_similarity

        def run():
            v = structural_similarity(
                hr, sr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
            )
            return {"whole": float(v)}
    else:
        raise ValueError(f"unknown method {method!r}")
    import gc

    gc.collect()
    # first call (cold: one-time costs such as thread pools and lazy imports count), then the repeats (warm)
    base_kib = _status_kib("VmRSS")
    exact = _reset_peak()
    t0 = time.perf_counter()
    run()
    first_s = time.perf_counter() - t0
    cold_kib = _status_kib("VmHWM") - base_kib
    gc.collect()
    base_kib = _status_kib("VmRSS")
    exact = _reset_peak() and exact
    times, values = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        values = run()
        times.append(time.perf_counter() - t0)
    peak_kib = _status_kib("VmHWM")
    return {
        "method": method,
        "first_s": first_s,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_extra_mib": (peak_kib - base_kib) / 1024,
        "cold_extra_mib": cold_kib / 1024,
        "peak_exact": exact,
        "values": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="repeats for medsr and scikit-image (median)")
    parser.add_argument("--monai-repeats", type=int, default=1, help="repeats for MONAI (about 9 s each)")
    parser.add_argument("--child", choices=["medsr", "monai", "skimage"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        info = make_volumes(folder)
        vol_mib = 4 * SHAPE[0] * SHAPE[1] * SHAPE[2] / 2**20
        results = {}
        for method, reps in (("medsr", args.repeats), ("skimage", args.repeats), ("monai", args.monai_repeats)):
            cmd = [sys.executable, __file__, "--child", method, "--folder", str(folder), "--repeats", str(reps)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if out.returncode:
                raise RuntimeError(f"{method} failed:\n{out.stderr}")
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"volume: {info['source']}\n  cropped to {SHAPE}, float32 size {vol_mib:.1f} MiB; brain {info['brain_voxels']} voxels, lesion {info['lesion_voxels']}"
    )
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cpus={os.cpu_count()}")
    print("time: median of the repeats after one first call; memory: peak RSS above the starting RSS, after the")
    print("first call (warm) and during it (cold, one-time costs included), in MiB and x the volume's float32 size")
    print(f"{'method':<10}{'median s':>10}{'runs':>6}{'peak extra MiB':>16}{'x volume':>10}{'cold x vol':>12}  SSIM")
    for name, r in results.items():
        vals = ", ".join(f"{k}={v:.5f}" if v is not None else f"{k}=absent" for k, v in r["values"].items())
        print(
            f"{name:<10}{r['median_s']:>10.3f}{len(r['times_s']):>6}{r['peak_extra_mib']:>16.1f}"
            f"{r['peak_extra_mib'] / vol_mib:>10.2f}{r['cold_extra_mib'] / vol_mib:>12.2f}  {vals}"
        )
    m, s, mo = results["medsr"], results["skimage"], results["monai"]
    print(f"speed-up vs MONAI:        {mo['median_s'] / m['median_s']:.1f}x (target >= 10x)")
    print(f"speed-up vs scikit-image: {s['median_s'] / m['median_s']:.2f}x (target >= 1x)")
    print(f"medsr peak extra memory:  {m['peak_extra_mib'] / vol_mib:.2f}x the volume (target <= 4x)")
    print(f"|medsr whole - skimage|:  {abs(m['values']['whole'] - s['values']['whole']):.2e}")
    print(f"|medsr whole - MONAI|:    {abs(m['values']['whole'] - mo['values']['whole']):.2e}")


if __name__ == "__main__":
    main()
