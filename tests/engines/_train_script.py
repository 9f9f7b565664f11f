"""Training script run as a subprocess (kill-and-resume) and under torchrun (DDP) by test_trainers.py.

Tiny 2D ESRGAN-SE GAN on fixed random pairs with a random flip, shuffled, deterministic mode. Writes one
line ``iteration loss`` per iteration to ``<out>/losses_rank<R>.txt`` (flushed and fsynced).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.data import Dataset
from monai.transforms import RandFlipd

from medsr.networks.discriminators import VGGDiscriminator
from medsr.networks.generators import RRDBNet
from medsr.pipeline.engines import (
    GANTrainer,
    cleanup_distributed,
    distributed_loader,
    get_rank,
    init_distributed,
    wrap_ddp,
)
from medsr.pipeline.handlers import CheckpointHandler
from medsr.pipeline.losses import FusionLoss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--pause-at", type=int, default=0, help="after this iteration write 'paused' and sleep")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ckpt-every", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    distributed = init_distributed("gloo")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(123)
    hr = torch.rand(8, 1, 16, 16, generator=gen)
    lr = F.avg_pool2d(hr, 2)
    data = [{"lr": lr[i], "hr": hr[i]} for i in range(len(hr))]
    ds = Dataset(data, transform=RandFlipd(keys=["lr", "hr"], prob=0.5, spatial_axis=0))
    loader = distributed_loader(ds, batch_size=2, shuffle=True, seed=7, num_workers=0)
    torch.manual_seed(0)  # identical initial weights on every rank
    g = wrap_ddp(
        RRDBNet(2, 1, 1, 2, num_features=8, num_blocks=1, growth_channels=4, attention="se", reduction=4), "cpu"
    )
    d = wrap_ddp(VGGDiscriminator(2, 1, num_features=4, num_stages=2), "cpu")
    g_opt = torch.optim.Adam(g.parameters(), 1e-3)
    d_opt = torch.optim.Adam(d.parameters(), 1e-3)
    trainer = GANTrainer(
        "cpu",
        args.epochs,
        loader,
        g,
        d,
        g_opt,
        d_opt,
        FusionLoss(w_vgg=0),
        g_scheduler=torch.optim.lr_scheduler.StepLR(g_opt, 3, 0.5),
        d_scheduler=torch.optim.lr_scheduler.StepLR(d_opt, 3, 0.5),
        ema_decay=0.9,
        deterministic=True,
        seed=0,
        data_seed=11,
        resume_from=out / "ckpt" if args.resume else None,
        train_handlers=[CheckpointHandler(out / "ckpt", every_n_iterations=args.ckpt_every, keep_last=2)],
    )
    rank = get_rank()
    log = open(out / f"losses_rank{rank}.txt", "a")

    @trainer.on(Events.ITERATION_COMPLETED)
    def _log(engine):
        o = engine.state.output[0]
        log.write(f"{engine.state.iteration} {o['loss']!r} {o['loss_d']!r}\n")
        log.flush()
        os.fsync(log.fileno())
        if args.pause_at and engine.state.iteration == args.pause_at:
            (out / "paused").write_text(str(engine.state.iteration))
            while True:
                time.sleep(1)

    trainer.run()
    if distributed:
        torch.save(
            {k: v.detach().clone() for k, v in g.module.state_dict().items()}
            | {f"d.{k}": v.detach().clone() for k, v in d.module.named_parameters()},
            out / f"weights_rank{rank}.pt",
        )
    cleanup_distributed()


if __name__ == "__main__":
    main()
