"""Peak memory and throughput of sliding-window SR inference on a 512 x 512 x 300 volume; with ``--cli``, what
``medsr upscale`` costs end to end against its own compute, ``import torch`` and PIL bicubic.

Windows run on ``--sw_device`` (CUDA when present) while the input and the blended output stay on the CPU,
so the whole volume is never on the GPU. Memory budget (documented in the bundles' READMEs):

    peak RSS growth <= input + 2 x output (MONAI blends into an output buffer plus a weight map) + 1 GiB

On a CPU the network is a deliberately small ESPCN (4 and 4 features) so the run takes about a minute on 2
cores; pass ``--features 64 32`` for the study's width on a GPU. Prints one table: the measured peak, the budget,
their ratio, and throughput in LR and HR voxels per second.

    python benchmarks/bench_inference.py                      # 512 x 512 x 300, scale (1, 1, 2)
    python benchmarks/bench_inference.py --shape 128 128 60    # quick check
    python benchmarks/bench_inference.py --cli                 # medsr upscale of 256^2 and 1024^2 PNGs, x2

``--cli`` runs, in fresh processes: ``medsr --help``, ``python -c "import torch"``, and ``medsr upscale IN.png
OUT.png --quiet`` with the default shipped x2 model (its wall time, and the compute time it reports itself:
read, windows, write), next to PIL's bicubic resize of the same file in this process. The inputs are the
scikit-image fundus photograph (``retina.jpg``, green channel) resized to each size. Start-up = wall - compute;
the aim is start-up <= ``import torch`` + 1 s, which holds because this path imports no MONAI
(``python -c "import monai"`` is printed for scale; ``tests/api/test_startup.py`` checks the imports).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from monai.data import MetaTensor

from medsr.networks import ESPCN
from medsr.pipeline.inference import SRSlidingWindowInferer


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS(threading.Thread):
    """Sample RSS every 20 ms in the background and keep the maximum."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_bytes()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.02)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return max(self.peak, rss_bytes())


def _wall(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return time.perf_counter() - start, done.stdout


def cli_table(sizes: list[int], repeats: int, threads: int) -> None:
    """``medsr upscale`` end to end vs its own compute, ``import torch`` and PIL bicubic (fresh processes with
    ``OMP_NUM_THREADS=threads``)."""
    import numpy as np
    import skimage
    from PIL import Image

    medsr = [sys.executable, "-m", "medsr.pipeline.cli"]
    retina = Image.open(Path(skimage.__file__).parent / "data" / "retina.jpg").getchannel("G")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    best = lambda cmd: min(_wall(cmd, env)[0] for _ in range(repeats))  # noqa: E731
    torch_s = best([sys.executable, "-c", "import torch"])
    help_s = best([*medsr, "--help"])
    monai_s = best([sys.executable, "-c", "import monai"])
    print(f"python -c 'import torch': {torch_s:.2f} s   python -c 'import monai': {monai_s:.2f} s   "
          f"medsr --help: {help_s:.2f} s   (best of {repeats}, {threads} thread(s), load {os.getloadavg()[0]:.2f})")  # fmt: skip
    print(
        f"{'input':>10} | {'medsr wall':>10} | {'compute':>8} | {'start-up':>8} | {'- torch':>8} | {'PIL bicubic':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            src, dst = Path(tmp) / f"in{n}.png", Path(tmp) / f"out{n}.png"
            retina.resize((n, n), Image.Resampling.LANCZOS).save(src)
            runs = []
            for _ in range(repeats):
                wall, out = _wall([*medsr, "upscale", str(src), str(dst), "--quiet"], env)
                compute = float(re.search(r"([0-9.]+) s\s*$", out.strip()).group(1))
                runs.append((wall, compute))
            wall, compute = min(runs)
            start = time.perf_counter()
            with Image.open(src) as im:
                im.resize((2 * n, 2 * n), Image.Resampling.BICUBIC).save(Path(tmp) / "pil.png")
            pil = time.perf_counter() - start
            assert np.asarray(Image.open(dst)).shape == (2 * n, 2 * n)
            print(f"{f'{n}x{n}':>10} | {wall:9.2f}s | {compute:7.2f}s | {wall - compute:7.2f}s | "
                  f"{wall - compute - torch_s:+7.2f}s | {pil:10.3f}s")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300), help="LR volume shape")
    p.add_argument("--scale", type=int, nargs=3, default=(1, 1, 2))
    p.add_argument("--roi", type=int, nargs=3, default=(128, 128, 32), help="window in LR voxels")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--sw_batch_size", type=int, default=2)
    p.add_argument("--features", type=int, nargs=2, default=(4, 4))
    p.add_argument("--sw_device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (--cli: OMP_NUM_THREADS of the runs)")
    p.add_argument("--cli", action="store_true", help="time medsr upscale end to end instead (see above)")
    p.add_argument("--sizes", type=int, nargs="+", default=(256, 1024), help="--cli: PNG sizes")
    p.add_argument("--repeats", type=int, default=1, help="--cli: runs per measurement (the best is shown)")
    args = p.parse_args()
    if args.cli:
        return cli_table(list(args.sizes), args.repeats, args.threads)
    torch.set_num_threads(args.threads)

    net = ESPCN(3, 1, 1, tuple(args.scale), num_features=tuple(args.features)).to(args.sw_device).eval()
    x = MetaTensor(torch.rand(1, 1, *args.shape), affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])))
    in_bytes = x.numel() * 4
    out_bytes = in_bytes * int(torch.tensor(args.scale).prod())
    inferer = SRSlidingWindowInferer(args.roi, tuple(args.scale), args.sw_batch_size, args.overlap, "gaussian",
                                     sw_device=args.sw_device, device="cpu")  # fmt: skip
    gc.collect()
    base = rss_bytes()
    if args.sw_device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    monitor = PeakRSS()
    monitor.start()
    start = time.perf_counter()
    with torch.no_grad():
        y = inferer(x, net)
    seconds = time.perf_counter() - start
    peak = monitor.stop() - base
    budget = in_bytes + 2 * out_bytes + 2**30
    gib = 2**30
    print(f"volume {tuple(args.shape)} x{tuple(args.scale)} -> {tuple(y.shape[2:])}, ESPCN{tuple(args.features)}, "
          f"roi {tuple(args.roi)}, overlap {args.overlap}, sw_device {args.sw_device}, {args.threads} threads")  # fmt: skip
    print(f"{'input':>22}: {in_bytes / gib:7.2f} GiB   output: {out_bytes / gib:.2f} GiB")
    print(
        f"{'peak RSS growth':>22}: {peak / gib:7.2f} GiB   (ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)"
    )
    print(
        f"{'budget':>22}: {budget / gib:7.2f} GiB   peak / budget = {peak / budget:.2f}  -> {'OK' if peak <= budget else 'OVER'}"
    )
    print(f"{'peak / output size':>22}: {peak / out_bytes:7.2f}")
    if args.sw_device.startswith("cuda"):
        print(
            f"{'peak GPU memory':>22}: {torch.cuda.max_memory_allocated() / gib:7.2f} GiB (whole output would be {out_bytes / gib:.2f} GiB)"
        )
    print(f"{'time':>22}: {seconds:7.1f} s   throughput {x.numel() / seconds / 1e6:.2f} M LR voxels/s, "
          f"{y.numel() / seconds / 1e6:.2f} M HR voxels/s")  # fmt: skip


if __name__ == "__main__":
    main()
