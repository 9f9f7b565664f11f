"""``medsr selfsr IN OUT``: self-supervised thick-slice SR of one scan (runs the ``selfsr`` bundle).

Runs ``training`` (train.json), then ``inferring`` (inference.json), then, with ``--reference``, ``evaluating``
(evaluate.json) of ``bundles/selfsr`` in this process, as ``python -m monai.bundle run`` would.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "cmd_selfsr", "default_output_dir"]


def default_output_dir(output: str | Path) -> Path:
    """``OUT``'s folder + ``<OUT name without extension>_selfsr`` (checkpoints, model, report, PNG)."""
    out = Path(output)
    stem = out.name[: -len(".nii.gz")] if out.name.endswith(".nii.gz") else out.stem
    return out.parent / f"{stem}_selfsr"


def _network(text: str | None) -> Any:
    if text is None:
        return None
    text = text.strip()
    return json.loads(text) if text.startswith("{") else {"name": text}


def cmd_selfsr(args: argparse.Namespace) -> int:
    """Check the input (one-line errors), then train, reconstruct and optionally score."""
    started = time.time()
    from medsr.pipeline.bundles import parse_sets, run_bundle
    from medsr.pipeline.io import check_outputs
    from medsr.pipeline.literals import Expression, literal_expression
    from medsr.pipeline.models import get_device
    from medsr.pipeline.selfsr.grid import load_profile, plan_grid
    from medsr.pipeline.selfsr.run import load_scan
    from medsr.pipeline.selfsr.schedule import default_budget

    src, out = Path(args.input), Path(args.output)
    try:
        if out.exists() and out.resolve() == src.resolve():
            raise ValueError(f"output '{out}' is the input; the input is never overwritten")
        # before training: a NIfTI name in a writable folder, for the output and the run folder
        check_outputs([src], [out], suffixes=(".nii", ".nii.gz"))
        run_folder = Path(args.output_dir) if args.output_dir else default_output_dir(out)
        check_outputs([src], [run_folder / "report.json"], suffixes=(".json",))
        data, affine = load_scan(src)
        grid = plan_grid(data.shape, affine, args.thickness, args.gap, args.target_spacing, name=f"input '{src}'")
        load_profile(args.profile)
        if args.steps is not None and args.steps < 1:
            raise ValueError(f"--steps: must be >= 1, got {args.steps}")
        if args.minutes is not None and not args.minutes > 0:
            raise ValueError(f"--minutes: must be > 0, got {args.minutes}")
        extra = parse_sets(args.set)
        steps, minutes = default_budget(args.steps, args.minutes, get_device(args.device))
    except ValueError as err:
        print(f"medsr selfsr: {err}", file=sys.stderr)
        return 2
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(out)
    common: dict[str, Any] = {
        "input": str(src),
        "output": str(out),
        "output_dir": str(out_dir),
        "thickness": args.thickness,
        "gap": args.gap,
        "profile": args.profile,
        "target_spacing": args.target_spacing,
        "device": Expression(f"$mb.get_device({literal_expression(args.device)})"),
        "threads": args.threads,
    }
    net = _network(args.network)
    if net is not None:
        common["network"] = net
    sp = " x ".join(f"{s:g}" for s in grid.spacing)
    print(
        f"medsr selfsr: {src} {tuple(grid.shape)} at {sp} mm, slice axis {grid.slice_axis}, thickness "
        f"{grid.thickness:g} mm -> {tuple(grid.out_shape)} at {grid.target_spacing:g} mm (network scale {grid.scale})"
    )
    if minutes:
        budget = f"{minutes:g} min" + (f" or {steps} steps, whichever comes first" if args.steps else "")
    else:
        budget = f"{steps} steps"
    how = "the default on a CPU, from the command's start" if minutes and args.minutes is None else "as asked"
    how = "the default on this device" if not minutes and args.steps is None else how
    print(f"medsr selfsr: training for {budget} ({how}), then the reconstruction")
    train = dict(common, steps=steps, minutes=minutes, init=args.init)
    if args.steps is None and args.minutes is None and minutes:  # the default budget includes the set-up
        train["budget_started"] = started
    if args.resume and (out_dir / "checkpoints").is_dir():
        train["resume_from"] = str(out_dir / "checkpoints")
    train.update(extra)
    t0 = time.perf_counter()
    run_bundle("selfsr", "training", "train.json", train, args.tracking)
    t1 = time.perf_counter()
    from medsr.networks import reuse_freed_memory

    reuse_freed_memory()  # this command is its own process: freed feature maps are reused, not page-faulted again
    infer = dict(common, tta=args.tta, bp_iters=args.bp_iters)
    infer.update({k: v for k, v in extra.items() if k in ("tta", "bp_iters", "report", "png", "precision")})
    run_bundle("selfsr", "inferring", "inference.json", infer)
    t2 = time.perf_counter()
    print(
        f"medsr selfsr: wrote {out} (training {t1 - t0:.0f} s, reconstruction {t2 - t1:.0f} s); report and PNG in {out_dir}"
    )
    if args.reference:
        run_bundle(
            "selfsr", "evaluating", "evaluate.json",
            {"output": str(out), "reference": str(args.reference), "output_dir": str(out_dir)},
        )  # fmt: skip
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``selfsr`` to the ``medsr`` command."""
    from medsr.pipeline.selfsr.schedule import CPU_MINUTES, GPU_STEPS

    p = subparsers.add_parser(
        "selfsr",
        help="self-supervised thick-slice SR of one anisotropic scan (no training data)",
        description="Learn from the scan's own in-plane slices and super-resolve its slice axis (SMORE/ECLARE class).",
    )
    p.add_argument("input", help="anisotropic 3D NIfTI (never overwritten)")
    p.add_argument("output", help="output NIfTI (written atomically)")
    p.add_argument("--thickness", type=float, default=None, help="slice thickness in mm (default: slice spacing - gap)")
    p.add_argument("--gap", type=float, default=0.0, help="slice gap in mm (default 0)")
    p.add_argument("--profile", default="gaussian", help="slice profile: gaussian (FWHM = thickness), box, or a file")
    p.add_argument("--target-spacing", dest="target_spacing", type=float, default=None,
                   help="output spacing along the slice axis in mm (default: the in-plane spacing)")  # fmt: skip
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training iterations (default: {GPU_STEPS} on a GPU; on a CPU the time budget of --minutes)",
    )
    p.add_argument("--minutes", type=float, default=None,
                   help=f"training time budget; the cosine schedule ends on time (default on a CPU: {CPU_MINUTES:g}, so "
                   "that training and reconstruction of a brain MRI end within 10 minutes; with --steps: whichever "
                   "comes first)")  # fmt: skip
    p.add_argument("--network", default=None, help="a registered generator name or JSON '{\"name\": ..., ...}'")
    p.add_argument(
        "--init",
        default="scratch",
        choices=("prior", "scratch"),
        help="how the scan's network starts: 'scratch' (default: random weights, a zero output layer), or 'prior', "
        "the learned prior shipped as bundles/selfsr/models/prior.pt (pretrained on demo data; a head start for "
        "the first ~1,000 steps, behind scratch after ~3,000: for budgets of a minute or two; used when --network "
        "is the default one, else scratch, said in the log)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto (default cpu)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads (default 0: the cores the current load leaves idle, at least 1)",
    )
    p.add_argument("--tta", type=int, default=1, choices=(1, 2, 4), help="flips per view at test time")
    p.add_argument(
        "--bp-iters", dest="bp_iters", type=int, default=1, help="back-projection iterations (default 1; 0: off)"
    )
    p.add_argument("--output-dir", dest="output_dir", default=None, help="run folder (default OUT_selfsr/ beside OUT)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--reference", default=None, help="an HR reference to score against (evaluate.json)")
    p.add_argument("--tracking", default=None, help="'mlflow' to track the training run")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other bundle override")
    p.set_defaults(func=cmd_selfsr)
