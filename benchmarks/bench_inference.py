"""Peak memory and throughput of sliding-window SR inference on a 512 x 512 x 300 volume.

Windows run on ``--sw_device`` (CUDA when present) while the input and the blended output stay on the CPU,
so the whole volume is never on the GPU. Memory budget (documented in the bundles' READMEs):

    peak RSS growth <= input + 2 x output (MONAI blends into an output buffer plus a weight map) + 1 GiB

On a CPU the network is a deliberately small ESPCN (4 and 4 features) so the run takes about a minute on 2
cores; pass ``--features 64 32`` for the study's width on a GPU. Prints one table: the measured peak, the budget,
their ratio, and throughput in LR and HR voxels per second.

    python benchmarks/bench_inference.py                      # 512 x 512 x 300, scale (1, 1, 2)
    python benchmarks/bench_inference.py --shape 128 128 60    # quick check
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import threading
import time

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300), help="LR volume shape")
    p.add_argument("--scale", type=int, nargs=3, default=(1, 1, 2))
    p.add_argument("--roi", type=int, nargs=3, default=(128, 128, 32), help="window in LR voxels")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--sw_batch_size", type=int, default=2)
    p.add_argument("--features", type=int, nargs=2, default=(4, 4))
    p.add_argument("--sw_device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
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
