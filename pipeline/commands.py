"""``medsr train``, ``medsr evaluate``, ``medsr upscale`` and ``medsr bundles``: the common cases without overrides.

Each runs a bundle from ``bundles/`` in-process through :func:`monai.bundle.run` exactly as
``python -m monai.bundle run <id> --config_file bundles/<name>/<file>.json`` would, with the options below
turned into overrides; ``--set key=value`` passes any other override (the value is read as a Python literal
when it is one, else as text).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from medsr.pipeline.bundles import (
    bundle_dir,
    describe_bundle,
    list_bundles,
    model_overrides,
    override_text,
    parse_sets,
    parse_value,
    quiet_monai,
    run_bundle,
)
from medsr.pipeline.io import check_outputs
from medsr.pipeline.literals import Expression, literal_expression

COMMON_OPTIONS = (
    ("--spatial-dims", int, "2 or 3 (default: the bundle's, or the checkpoint's for evaluate/upscale)"),
    ("--scale", str, "scale factor: 4, or per axis '(1,1,4)' for thick slices"),
    ("--output-dir", str, "the bundle's runs folder (default runs/<bundle>); each run writes <output-dir>/<run name>/"),
    ("--device", str, "cpu, cuda, cuda:1 (default: CUDA when present)"),
)


def accept_both_spellings(parser: argparse.ArgumentParser) -> None:
    """Let every ``--long-option`` of ``parser`` and its sub-parsers also be written ``--long_option``.

    The ``medsr`` command shows one style (dashes); the other spelling (``--spatial_dims``, as in
    ``python -m monai.bundle run`` overrides, or an older ``--reuse-memory``) keeps working as a hidden alias.
    """
    for action in list(parser._actions):
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                accept_both_spellings(sub)
            continue
        for flag in list(action.option_strings):
            if not flag.startswith("--"):
                continue
            for other in ("--" + flag[2:].replace("-", "_"), "--" + flag[2:].replace("_", "-")):
                if other not in parser._option_string_actions:
                    parser._option_string_actions[other] = action


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ("scale", "patch_size"):
            value = parse_value(value) if isinstance(value, str) else value
        if name == "device":
            value = Expression(f"$mb.get_device({literal_expression(value)})")
        out[name] = value
    out.update(parse_sets(getattr(args, "set", None)))
    return out


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle name (see `medsr bundles`) or bundle folder")
    for flag, typ, text in COMMON_OPTIONS:
        p.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--dataset-dir", default=None, help="folder of your images (default: the demo dataset)")
    p.add_argument("--datalist", default=None, help="datalist JSON (default: built from --dataset-dir or demo)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other bundle override (repeatable)")


def cmd_bundles(args: argparse.Namespace) -> int:
    """``medsr bundles [NAME]``, ``medsr bundles verify NAME...``, ``medsr bundles export NAME DIR``."""
    name, extra = getattr(args, "name", None), list(getattr(args, "extra", None) or [])
    if name == "verify":
        from medsr.pipeline.zoo import verify_bundle

        names = extra or [b["name"] for b in list_bundles()]
        failed = 0
        for bundle in names:
            try:
                for line in verify_bundle(bundle_dir(bundle), args.checkpoint):
                    print(f"{bundle}: ok: {line}")
            except ValueError as err:
                print(f"medsr bundles verify: {err}", file=sys.stderr)
                failed += 1
        return 1 if failed else 0
    if name == "export":
        from medsr.pipeline.zoo import export_bundle

        if len(extra) != 2:
            print("medsr bundles export: expected NAME DIR", file=sys.stderr)
            return 2
        try:
            dest = export_bundle(bundle_dir(extra[0]), extra[1], args.checkpoint)
        except FileNotFoundError as err:
            print(f"medsr bundles export: {err}", file=sys.stderr)
            return 2
        print(
            f"{dest}: configs/, models/model.pt, docs/, LICENSE; run it with: python -m monai.bundle run inferring "
            f"--config_file {dest}/configs/inference.json --bundle_root {dest} --input_files \"['lr.nii.gz']\""
        )
        return 0
    if extra:
        print(
            f"medsr bundles: unexpected {extra} (try: medsr bundles verify NAME, medsr bundles export NAME DIR)",
            file=sys.stderr,
        )
        return 2
    if name:
        info = describe_bundle(name, args.runs_root)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
            return 0
        print(f"{info['name']} {info['version']}: {info['description']}")
        print(f"  network: {info['network']}  scale: {info['scale']}  spatial_dims: {info['spatial_dims']}")
        print(f"  recipe and every override: {info['readme']}")
        print("  overrides (python -m monai.bundle run ... --KEY VALUE, or medsr train --set KEY=VALUE):")
        for k, v in info["overrides"].items():
            print(f"    --{k} {override_text(v)}")
        print(f"  runs in {info['runs_dir']}: {len(info['runs']) or 'none (train it first)'}")
        for r in info["runs"][:10]:
            mark = " (latest)" if r["latest"] else ""
            files = ", ".join(Path(c).name for c in r["checkpoints"]) or "no checkpoint"
            print(f"    {r['run']}{mark}: {files}")
        print(f"  shipped models: {', '.join(info['models']) or 'none'}")
        return 0
    items = list_bundles()
    if getattr(args, "json", False):
        print(json.dumps(items, indent=2))
        return 0
    for b in items:
        print(f"{b['name']:<14} {b['version']:<8} {b['description']}")
    return 0


TRAIN_FLAGS = ("spatial_dims", "scale", "output_dir", "device", "dataset_dir", "datalist", "epochs", "epoch_length",
               "batch_size", "patch_size", "run_name", "resume_from")  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    """``medsr train BUNDLE``: run the bundle's ``training``."""
    if getattr(args, "resume", None) is not None:
        args.resume_from = args.resume
    run_bundle(args.bundle, "training", "train.json", _overrides(args, TRAIN_FLAGS), args.tracking)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``medsr evaluate BUNDLE``: run the bundle's ``evaluating`` on a trained checkpoint."""
    names = ("spatial_dims", "scale", "output_dir", "device", "dataset_dir", "datalist", "checkpoint", "run")
    overrides = _overrides(args, names)
    overrides.update(
        model_overrides(args.bundle, overrides, getattr(args, "output_dir", None), getattr(args, "run", None))
    )
    run_bundle(args.bundle, "evaluating", "evaluate.json", overrides, args.tracking)
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    """``medsr upscale IN OUT``: super-resolve one file (NIfTI out; DICOM in gives DICOM out; PNG out for PNG).

    Without ``--bundle``/``--checkpoint`` it uses a shipped model (``medsr models``): the one for the input's
    dimension and ``--scale`` (default 2), or ``--model NAME``; with ``--bundle`` it runs that bundle's
    ``inferring`` on the bundle's newest run (or ``--checkpoint``).
    """
    import time

    src = Path(args.input)
    if not src.exists():
        print(f"medsr upscale: input '{src}' does not exist", file=sys.stderr)
        return 2
    from medsr.pipeline.inference import IMAGE_SUFFIXES, NIFTI_SUFFIXES, is_dicom

    suffixes = (*NIFTI_SUFFIXES, *IMAGE_SUFFIXES)  # PNG/TIFF for 2D outputs, bundles included
    check_outputs([src], [Path(args.output)], suffixes=suffixes, dicom_inputs=[is_dicom(src)])
    if getattr(args, "reuse_memory", False):
        from medsr.networks import reuse_freed_memory

        reuse_freed_memory()  # this command is its own process: the setting ends with it
    if args.bundle is None:
        from medsr.pipeline.inference import upscale_with_model

        if args.checkpoint is not None:
            print("medsr upscale: --checkpoint needs --bundle (or give a model file with --model)", file=sys.stderr)
            return 2
        from medsr.pipeline.models import find_model, get_device

        model_file = find_model(args.model) if args.model else None
        device = get_device(args.device)  # a CUDA device on a CPU build is one line, not an AssertionError
        roi = parse_value(args.roi_size) if isinstance(args.roi_size, str) else args.roi_size
        with quiet_monai():  # no nvImageCodec notices around the one result (or error) line
            rec = upscale_with_model(
                src, args.output, model=model_file, scale=args.scale, device=device, roi_size=roi,
                overlap=0.25 if args.overlap is None else args.overlap, progress=not args.quiet,
                clip=not args.raw_values, tta=args.tta, report=args.report,
            )  # fmt: skip
        how = f", slice by slice across axis {rec['slice_axis']}" if rec["slice_axis"] is not None else ""
        how += f", {rec['note']}" if rec.get("note") else ""
        how += f", tta {rec['tta']}" if rec["tta"] > 1 else ""
        print(
            f"medsr upscale: {rec['output']}  shape {rec['shape']}  spacing "
            f"{tuple(round(s, 4) for s in rec['spacing'])} mm  model {rec['model']}{how}  {rec['seconds']:.1f} s"
        )
        if args.report:
            dc = rec["data_consistency"]
            print(
                f"medsr upscale: data consistency (relative RMSE of the degraded output vs the input) "
                f"{dc['medsr_relative']:.4f}, cubic {dc['cubic_relative']:.4f}; report {args.report}"
            )
        return 0
    if args.tta != 1 or args.report:
        print("medsr upscale: --tta and --report apply to the shipped models (not with --bundle)", file=sys.stderr)
        return 2
    overrides = _overrides(
        args, ("spatial_dims", "scale", "device", "checkpoint", "roi_size", "overlap", "output_dir", "run")
    )
    overrides.update(
        model_overrides(args.bundle, overrides, getattr(args, "output_dir", None), getattr(args, "run", None))
    )
    overrides["input_files"] = [str(src)]
    overrides["output_files"] = [str(args.output)]
    overrides["pred_dir"] = str(Path(args.output).parent)
    overrides.setdefault("progress", not args.quiet)
    if getattr(args, "compile", False):
        overrides["compile"] = True
    if getattr(args, "raw_values", False):
        overrides["clip"] = False
    start = time.perf_counter()
    workflow = run_bundle(args.bundle, "inferring", "inference.json", overrides)
    runner = workflow.parser.get_parsed_content("runner")
    model = overrides.get("checkpoint") or workflow.parser.get_parsed_content("checkpoint") or "random weights"
    for rec in getattr(runner, "records", []):
        shape = "x".join(map(str, rec["shape"]))
        spacing = "x".join(f"{s:.3g}" for s in rec["spacing"])
        note = f", {rec['note']}" if rec.get("note") else ""
        print(
            f"{rec['output']}: {shape} at {spacing} mm, model {model}{note}, {time.perf_counter() - start:.1f} s",
            flush=True,
        )
    return 0


def batch_inputs(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The images in ``folder`` that ``medsr upscale`` reads (files, and sub-folders holding a DICOM series),
    and the entries it skips with the reason."""
    from medsr.pipeline.data.files import ImageReadError, detect_format
    from medsr.pipeline.inference import is_dicom

    inputs, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            (inputs.append(path) if is_dicom(path) else skipped.append((path, "a folder without DICOM files")))
            continue
        try:
            detect_format(path)
        except ImageReadError as err:
            skipped.append((path, str(err).split(": ", 1)[-1]))
            continue
        inputs.append(path)
    return inputs, skipped


def cmd_upscale_files(args: argparse.Namespace) -> int:
    """``medsr upscale IN OUT`` for one image, or ``medsr upscale DIR OUT_DIR`` for every image in ``DIR``
    (:func:`batch_inputs`): each goes through :func:`cmd_upscale` to ``OUT_DIR/<name>_sr.<suffix>`` (PNG/TIFF
    keep their format, DICOM stays DICOM, the rest becomes NIfTI); one line per file, then the count."""
    from medsr.pipeline.errors import format_error
    from medsr.pipeline.inference import is_dicom, output_path_for

    src = Path(args.input)
    if not src.is_dir() or is_dicom(src):
        return cmd_upscale(args)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"medsr upscale: output '{out_dir}': a folder of inputs needs an output folder", file=sys.stderr)
        return 2
    inputs, skipped = batch_inputs(src)
    for path, why in skipped:
        print(f"medsr upscale: skipped '{path}': {why}", file=sys.stderr)
    if not inputs:
        print(f"medsr upscale: input '{src}': no image to upscale in this folder", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in inputs:
        one = argparse.Namespace(**vars(args))
        one.input, one.output = str(path), str(output_path_for(path, out_dir, keep_image_format=True))
        if args.report:  # one report per file, next to its output
            one.report = str(out_dir / f"{path.name.split('.')[0]}_report.json")
        try:
            code = cmd_upscale(one)
        except Exception as err:  # noqa: BLE001 - one bad file is one line; the others go on
            print(f"medsr upscale: {format_error(err)}", file=sys.stderr)
            code = 1
        if code:
            failed.append(path.name)
    done = len(inputs) - len(failed)
    tail = f"; failed: {', '.join(failed)}" if failed else ""
    print(f"medsr upscale: {done} of {len(inputs)} images upscaled into {out_dir}{tail}")
    return 1 if failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    """``medsr models``: the shipped models with their scale, dimension and measured figures;
    ``medsr models export BUNDLE CHECKPOINT OUTPUT --name NAME --set k=v ...``: package a trained generator."""
    from medsr.pipeline.models import export_bundle_model, shipped_models

    if args.action == "export-onnx":
        from medsr.pipeline.onnx_export import export_onnx

        if not (args.bundle and args.checkpoint) or args.output:
            print("medsr models export-onnx: expected NAME OUT.onnx (a shipped model or a model file)", file=sys.stderr)
            return 2
        rec = export_onnx(args.bundle, args.checkpoint)
        scale = "x".join(map(str, rec["scale"]))
        print(
            f"medsr models export-onnx: wrote {rec['output']} ({rec['model']}, {rec['spatial_dims']}D x{scale}); "
            f"{rec['checked_with']} vs PyTorch: max abs diff {rec['max_abs_diff']:.1e}"
        )
        return 0
    if args.action == "export":
        if not (args.bundle and args.checkpoint and args.output and args.name):
            print("medsr models export: needs BUNDLE CHECKPOINT OUTPUT and --name", file=sys.stderr)
            return 2
        info = {"training_command": args.training_command} if args.training_command else {}
        if args.trained_on:
            info["trained_on"] = args.trained_on
        if args.gan:
            info["gan"] = True  # a GAN-stage model: used only when named (--model)
        if args.default:
            info["default"] = True  # the model `medsr upscale` picks for its dims and scale
        path = export_bundle_model(
            args.bundle, args.checkpoint, args.output, args.name, parse_sets(args.set), info, use_ema=args.ema
        )
        print(f"medsr models export: wrote {path}")
        return 0

    models = shipped_models()
    if args.json:
        print(json.dumps(models, indent=2, default=str))
        return 0
    if not models:
        print("no shipped models under bundles/*/models/")
        return 0
    from medsr.pipeline.models import pick_model

    defaults = set()  # what `medsr upscale` picks with no --model, for each scale a shipped model offers
    for m in models:
        try:
            dims, scale = (2, m["scale"][0]) if m["spatial_dims"] == 2 else (3, tuple(m["scale"]))
            defaults.add(pick_model(dims, scale, models=models)[0]["name"])
        except ValueError:
            pass
    head = "quality vs cubic, mean PSNR (external = out-of-distribution, first; each figure names its set)"
    print(f"{'name':<20} {'dims':<4} {'scale':<7} {'pairs':<9} {'sha256':<13} {head}")
    for m in models:
        q = m.get("metrics", {}).get("summary", "")
        scale = "x".join(str(f) for f in m["scale"])
        name = m["name"] + (" *" if m["name"] in defaults else "")
        print(f"{name:<20} {m['spatial_dims']}D   {scale:<7} {m.get('degradation', ''):<9} {m['sha256'][:12]:<13} {q}")
    print("* the default for its scale (medsr upscale without --model)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate``, ``upscale`` and ``bundles`` to the ``medsr`` command."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "bundles",
        help="list the SR bundles, or show one (recipe, scale, overrides, runs and checkpoints)",
        description="Without NAME: one line per bundle. With NAME: its network, scale, every top-level override "
        "and the runs (with their checkpoints) and shipped models that exist.",
        epilog="examples:\n  medsr bundles\n  medsr bundles esrgan_se\n  medsr bundles esrgan_se --json\n"
        "  medsr bundles verify              # every bundle: output = scale x input, spacing / scale, schema\n"
        "  medsr bundles verify esrgan_se --checkpoint runs/esrgan_se/latest/checkpoints/best_network.pt\n"
        "  medsr bundles export esrgan_se /tmp/esrgan_se_bundle   # configs/, models/model.pt, docs/, LICENSE",
        formatter_class=fmt,
    )
    p.add_argument("name", nargs="?", default=None, help="a bundle to show, or 'verify' / 'export'")
    p.add_argument("extra", nargs="*", help="verify: bundle names (default all); export: NAME DIR")
    p.add_argument("--checkpoint", default=None, help="verify/export: the weights to use (default: newest run)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--runs-root", default="runs", help="folder holding runs/<bundle>/ (default: runs)")
    p.set_defaults(func=cmd_bundles)

    p = subparsers.add_parser(
        "train",
        help="train a bundle (default: on the demo dataset)",
        description="Run the bundle's `training` (python -m monai.bundle run training --config_file "
        "bundles/<bundle>/train.json). Each run writes runs/<bundle>/<run name>/ (checkpoints/, metrics.csv, "
        "images/) and points runs/<bundle>/latest at it.",
        epilog="examples:\n"
        "  medsr train espcn --epochs 2 --epoch-length 10 --batch-size 4 --patch-size 32\n"
        "  medsr train esrgan_se --set num_blocks=2 --set num_features=16 --tracking none   # no MLflow run\n"
        "  medsr train espcn --spatial-dims 3 --scale '(1,1,4)' --patch-size '(64,64,32)'\n"
        "  medsr train espcn --resume            # go on with the newest run, in its own folder",
        formatter_class=fmt,
    )
    _add_common(p)
    p.add_argument("--epochs", type=int, default=None, help="training epochs (GAN bundles: of the GAN stage)")
    p.add_argument("--epoch-length", type=int, default=None, help="iterations per epoch (default: the whole dataset)")
    p.add_argument("--batch-size", type=int, default=None, help="training patches per iteration")
    p.add_argument("--patch-size", type=str, default=None, help="LR training patch: 32, or per axis '(64,64,16)'")
    p.add_argument("--run-name", default=None, help="name of the run folder and MLflow run (default <bundle>-<time>)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN",
        help="resume a run: its name or folder, or a checkpoint (default: the newest run)",
    )
    p.add_argument(
        "--tracking",
        default=None,
        help="MLflow tracking (on by default: an MLflow run in <output-dir>/mlruns.db); 'none' to switch it off, "
        "or a MONAI tracking settings file",
    )
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained bundle (metrics.csv, summary.json, figures)",
        description="Run the bundle's `evaluating` on the validation list with the newest run's best checkpoint "
        "(or --run / --checkpoint); the report goes to <run folder>/eval/. The network is rebuilt from the "
        "checkpoint: no width overrides needed.",
        epilog="examples:\n  medsr evaluate espcn\n  medsr evaluate esrgan_se --run esrgan_se-20260101-120000",
        formatter_class=fmt,
    )
    _add_common(p)
    p.add_argument("--run", default=None, help="run name or folder (default: the newest trained run)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file or folder (default: the run's best)")
    p.add_argument("--tracking", default=None, help="'mlflow' to track the evaluation (medsr's mlflow/tracking.json)")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "models",
        help="list the shipped models (scale, dimension, measured quality), export a trained one, or to ONNX",
        description="List the shipped models, or package a bundle's trained generator as a self-describing "
        "model file. Example: medsr models export rdn runs/rdn/latest/checkpoints/best_network.pt "
        "bundles/rdn/models/model.pt --name rdn_x2 --set scale=2 --set num_features=32. "
        "medsr models export-onnx NAME OUT.onnx writes a model (shipped name or file) as ONNX, checked against "
        "PyTorch (needs: pip install onnx).",
    )
    p.add_argument("action", nargs="?", choices=("list", "export", "export-onnx"), default="list")
    p.add_argument("bundle", nargs="?", help="export: the bundle that trained the generator; export-onnx: NAME")
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="export: its checkpoint (best_network.pt, a checkpoint, a folder); export-onnx: OUT",
    )
    p.add_argument("output", nargs="?", help="export: the model file to write (bundles/<name>/models/model.pt)")
    p.add_argument("--name", default=None, help="export: the model's name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="export: the training run's overrides")
    p.add_argument("--training-command", default=None, help="export: the exact training command (stored)")
    p.add_argument("--trained-on", default=None, help="export: what it was trained on (stored)")
    p.add_argument("--gan", action="store_true", help="export: a GAN-stage model (chosen only by name)")
    p.add_argument(
        "--default", action="store_true", help="export: the model medsr upscale picks for its dims and scale"
    )
    p.add_argument(
        "--ema", action="store_true", help="export: take the EMA of the weights from a medsr training checkpoint"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)

    p = subparsers.add_parser(
        "upscale",
        help="super-resolve an image file (a shipped model by default, or a bundle's trained generator)",
        description="Super-resolve INPUT. Without --bundle a shipped model is used (`medsr models`): the one for "
        "the input's dimension and --scale (default 2); a 3D volume with a 2D model is upscaled in-plane, slice by "
        "slice across its thickest axis. With --bundle: the newest run's best generator of that bundle (or --run / "
        "--checkpoint). The network, scale and dims come from the checkpoint. Windows show a progress bar; "
        "the last line gives output path, shape, spacing, model and time.",
        epilog="examples:\n"
        "  medsr upscale scan.nii.gz scan_sr.nii.gz --scale 2\n"
        "  medsr upscale t1_thick.nii.gz t1_iso.nii.gz --scale '(1,1,4)'\n"
        "  medsr upscale lr.nii.gz sr.nii.gz --bundle esrgan_se\n"
        "  medsr upscale scans/ scans_sr/          # every image in scans/ (one line each, then the count)\n"
        "  medsr upscale dicom_dir/ sr_dir/ --bundle espcn --checkpoint runs/espcn/latest/checkpoints/best_network.pt\n"
        "  medsr upscale big.nii.gz sr.nii.gz --bundle rdn --roi-size 96 --compile --reuse-memory",
        formatter_class=fmt,
    )
    p.add_argument("input", help="LR image: NIfTI, DICOM file or series folder, PNG/JPEG, …; or a folder of them")
    p.add_argument(
        "output", help="output: .nii.gz, .png (2D), or for a DICOM input .dcm / a folder name; a folder for a folder"
    )
    p.add_argument("--model", default=None, help="shipped model name (`medsr models`) or a model file")
    p.add_argument("--bundle", default=None, help="use this bundle's trained generator instead, e.g. esrgan_se")
    p.add_argument("--run", default=None, help="run name or folder (default: the newest trained run)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file or folder (default: the run's best)")
    for flag, typ, text in COMMON_OPTIONS:
        p.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--roi-size", type=parse_value, default=None, help="sliding window in LR voxels")
    p.add_argument("--overlap", type=float, default=None, help="window overlap in [0, 1)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the generator with frozen weights (pays off for large volumes: many windows)",
    )
    p.add_argument(
        "--reuse-memory",
        action="store_true",
        help="keep freed HR feature maps in the heap for the next window (CPU, glibc; the process keeps its peak memory)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--raw-values",
        "--no-clip",
        dest="raw_values",
        action="store_true",
        help="keep the network's raw values (default: clipped to the input's value range)",
    )
    p.add_argument(
        "--tta", type=int, default=1, choices=(1, 2, 4, 8),
        help="2D models: average over this many flips/90-degree rotations of the input (8: all; slower by as much)",
    )  # fmt: skip
    p.add_argument(
        "--report", default=None, metavar="JSON",
        help="write the data consistency of the output (degraded back to the input grid vs the input, next to cubic's) "
        "to this JSON (a folder input: OUT_DIR/<name>_report.json per file)",
    )  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other bundle override (repeatable)")
    p.set_defaults(func=cmd_upscale_files)
