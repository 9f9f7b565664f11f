"""Training throughput of the ESRGAN-SE GAN step (GANTrainer + FusionLoss without VGG) in 2D and 3D.

Prints iterations per second and the share of wall time spent waiting for data (ignite's
GET_BATCH_STARTED -> GET_BATCH_COMPLETED), target < 10 %. Data: a real MONAI DataLoader over
synthetic LR/HR pairs with a MONAI random flip (medsr.transforms pairing is not used here).

    OMP_NUM_THREADS=2 python benchmarks/bench_training.py --iters 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.transforms import RandFlipd

from medsr.networks.discriminators import VGGDiscriminator
from medsr.networks.generators import RRDBNet
from medsr.pipeline.engines import GANTrainer
from medsr.pipeline.losses import FusionLoss


def bench(dims: int, iters: int, size: int, workers: int) -> dict:
    hr = torch.rand(iters * 2, 1, *([size] * dims))
    lr = F.avg_pool2d(hr, 2) if dims == 2 else F.avg_pool3d(hr, 2)
    ds = Dataset([{"lr": lr[i], "hr": hr[i]} for i in range(len(hr))], transform=RandFlipd(["lr", "hr"], prob=0.5))
    loader = DataLoader(ds, batch_size=2, shuffle=True, num_workers=workers)
    g = RRDBNet(dims, 1, 1, 2, num_features=16, num_blocks=2, growth_channels=8, attention="se", reduction=4)
    d = VGGDiscriminator(dims, 1, num_features=8, num_stages=3)
    trainer = GANTrainer(
        "cpu", 1, loader, g, d, torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters()), FusionLoss(w_vgg=0)
    )
    marks: dict[str, list[float]] = {"wait": [], "iter": []}
    t: dict[str, float] = {}
    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: t.__setitem__("b", time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: marks["wait"].append(time.perf_counter() - t["b"]))
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: t.__setitem__("i", time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: marks["iter"].append(time.perf_counter() - t["i"]))
    start = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    wait, step = marks["wait"][1:], marks["iter"][1:]  # drop the first (warm-up) iteration
    return {
        "it_s": len(step) / (sum(wait) + sum(step)),
        "median_step_ms": 1000 * statistics.median(step),
        "data_wait_share": sum(wait) / (sum(wait) + sum(step)),
        "wall": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    print("data: synthetic LR/HR pairs through a MONAI DataLoader + RandFlipd")
    for dims, size in ((2, 64), (3, 24)):
        r = bench(dims, args.iters, size, args.workers)
        print(
            f"{dims}D HR {size}^{dims} batch 2: {r['it_s']:.2f} it/s, median step {r['median_step_ms']:.1f} ms, "
            f"data wait {100 * r['data_wait_share']:.1f} % (target < 10 %)"
        )


if __name__ == "__main__":
    main()
