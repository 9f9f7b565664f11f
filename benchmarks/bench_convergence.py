"""Convergence of the training choices, side by side: validation PSNR against iterations and CPU seconds.

Each choice is one run of a bundle's own ``training`` run id (default: ``esrgan_se``'s L1 stage, a light
2-block RRDB-SE at x4 on physical pairs of the demo training split) from the same seed, with the same data,
learning rate and iterations; only the choice differs:

* ``study``: BasicSR's 0.1-scaled Kaiming initialisation of the dense blocks, no residual, constant rate
  (the studies' recipe);
* ``default_init``: the same with PyTorch's default initialisation of the dense blocks (the network is
  written to a model file and the run starts from it through ``--init_weights``);
* ``residual_interp``: the network learns a residual over cubic interpolation (zero-initialised output
  layer: at iteration 0 it *is* cubic);
* ``residual_cosine``: ``residual_interp`` plus a cosine schedule with a linear warm-up (10 % of the
  iterations);
* ``residual_nearest``: ``residual_interp`` over nearest-neighbour instead of bicubic upsampling (what the
  shipped models were trained with, before ``interp_mode`` was applied).

After every epoch the bundle's validation scores the demo validation split; the cubic B-spline baseline of
the same crops (``val_psnr_cubic``, :class:`medsr.pipeline.handlers.CubicBaseline`) is the line to beat.
CPU seconds are the run's process CPU time, apportioned to the epochs by their logged wall times (validation
included). Run from the repository root::

    python benchmarks/bench_convergence.py                       # about 15 min on a 2-core CPU
    python benchmarks/bench_convergence.py --choices study residual_interp --epochs 2
    python benchmarks/bench_convergence.py --json benchmarks/results/convergence.json
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHOICES = {
    "study": ["--residual_interp", "False", "--lr_schedule", "constant"],
    "default_init": ["--residual_interp", "False", "--lr_schedule", "constant"],
    "residual_interp": ["--residual_interp", "True", "--lr_schedule", "constant"],
    "residual_cosine": ["--residual_interp", "True", "--lr_schedule", "cosine"],
    "residual_nearest": ["--residual_interp", "True", "--lr_schedule", "constant", "--interp_mode", "nearest"],
}
EPOCH_LINE = re.compile(r"SRTrainer - INFO - Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")


def default_init_model(bundle: str, width: list[str], path: Path) -> Path:
    """The bundle's generator with PyTorch's default initialisation of its dense blocks, as a model file."""
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    from medsr.networks.generators import ResidualDenseBlock
    from medsr.pipeline.models import save_model

    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / bundle / "train.json"))
    for key, value in zip(width[::2], width[1::2]):
        parser[key.lstrip("-")] = ast.literal_eval(value)
    parser["residual_interp"] = False
    set_determinism(seed=parser.get_parsed_content("seed"))
    net = parser.get_parsed_content("network_def", instantiate=True)
    for module in net.modules():
        if isinstance(module, ResidualDenseBlock):
            for conv in (module.conv1, module.conv2, module.conv3, module.conv4, module.conv5):
                conv.reset_parameters()
    info = {"name": "default_init", "spatial_dims": net.spatial_dims, "scale": list(net.scale_factor)}
    return save_model(net, path, info, half=False)


def run_choice(name: str, args: argparse.Namespace, width: list[str], tmp: Path) -> list[dict]:
    out = tmp / name
    iters = args.epochs * args.epoch_length
    # timed runs: no MLflow store (tracking is on by default), as when these figures were first measured
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
           f"bundles/{args.bundle}/train.json", "--output_dir", str(out), "--run_name", "bench",
           "--scale", str(args.scale), "--degradation", args.degradation, *width, *CHOICES[name],
           "--pretrain_lr", str(args.lr), "--warmup_iters", str(iters // 10 if name == "residual_cosine" else 0),
           "--patch_size", str(args.patch_size), "--batch_size", str(args.batch_size),
           "--pretrain_epochs", str(args.epochs), "--epochs", "0", "--epoch_length", str(args.epoch_length),
           "--max_val_items", str(args.max_val_items), "--val_crop", str(args.val_crop),
           "--mlflow_tracking", "False"]  # fmt: skip
    if name == "default_init":
        cmd += ["--init_weights", str(default_init_model(args.bundle, width, tmp / "default_init.pt"))]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"bench_convergence: choice {name!r} failed: {tail[0]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    epoch_wall = {
        int(m[1]): int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4])
        for m in EPOCH_LINE.finditer(proc.stdout + proc.stderr)
    }
    total = sum(epoch_wall.values()) or 1.0
    with open(out / "bench" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("stage", "pretrain") == "pretrain"]
    result, acc = [], 0.0
    for r in rows:
        acc += epoch_wall.get(int(r["epoch"]), 0.0)
        result.append({"choice": name, "epoch": int(r["epoch"]), "iteration": int(r["epoch"]) * args.epoch_length,
                       "cpu_s": cpu * acc / total, "val_psnr": float(r["val_psnr"]),
                       "val_psnr_cubic": float(r["val_psnr_cubic"]), "val_ssim": float(r["val_ssim"]),
                       "val_ssim_cubic": float(r["val_ssim_cubic"])})  # fmt: skip
    print(f"  {name}: {wall:.0f} s wall, {cpu:.0f} s CPU", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--choices", nargs="+", default=list(CHOICES), choices=list(CHOICES))
    ap.add_argument("--bundle", default="esrgan_se", help="a bundle with an RRDB generator and an L1 stage")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--degradation", default="physical", choices=["physical", "bicubic", "mixed"])
    ap.add_argument("--width", default="num_blocks=2,num_features=32,growth_channels=16",
                    help="network overrides, comma separated key=value")  # fmt: skip
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--epoch_length", type=int, default=50)
    ap.add_argument("--patch_size", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--max_val_items", type=int, default=8)
    ap.add_argument("--val_crop", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    width = []
    for item in filter(None, args.width.split(",")):
        key, _, value = item.partition("=")
        width += [f"--{key.strip()}", value.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="medsr_conv_") as tmp:
        for name in args.choices:
            rows += run_choice(name, args, width, Path(tmp))
    print(f"{args.bundle} x{args.scale} {args.degradation}, {args.width}, lr {args.lr:g}, patch {args.patch_size}, "
          f"batch {args.batch_size}, {args.threads} threads; demo validation split ({args.max_val_items} crops)")  # fmt: skip
    print(f"{'choice':<16} {'iter':>5} {'CPU s':>7} {'PSNR':>7} {'cubic':>7} {'gain':>6} {'SSIM':>7} {'cubic':>7}")
    for r in rows:
        print(f"{r['choice']:<16} {r['iteration']:>5} {r['cpu_s']:>7.0f} {r['val_psnr']:>7.2f} "
              f"{r['val_psnr_cubic']:>7.2f} {r['val_psnr'] - r['val_psnr_cubic']:>+6.2f} {r['val_ssim']:>7.4f} "
              f"{r['val_ssim_cubic']:>7.4f}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
