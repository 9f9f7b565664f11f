"""``medsr train``, ``medsr evaluate``, ``medsr upscale`` and ``medsr bundles``: the common cases without overrides.

Each runs a bundle from ``bundles/`` in-process through :func:`monai.bundle.run` exactly as
``python -m monai.bundle run <id> --config_file bundles/<name>/<file>.json`` would, with the options below
turned into overrides; ``--set key=value`` passes any other override (the value is read as a Python literal
when it is one, else as text).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path
from typing import Any

from medsr.pipeline.errors import check_outputs, check_overrides

BUNDLES_DIR = Path(__file__).resolve().parents[1] / "bundles"
BUNDLE_FILES = ("metadata.json", "train.json", "inference.json", "evaluate.json", "logging.conf", "README.md")


def list_bundles(root: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """List the bundles under ``root`` (default: the repo's ``bundles/``) with name, version and description."""
    root = Path(root) if root is not None else BUNDLES_DIR
    out = []
    for meta in sorted(root.glob("*/metadata.json")):
        info = json.loads(meta.read_text(encoding="utf-8"))
        out.append(
            {
                "name": meta.parent.name,
                "version": str(info.get("version", "")),
                "description": str(info.get("description", "")),
                "path": str(meta.parent),
            }
        )
    return out


def bundle_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Return the folder of bundle ``name`` (or ``name`` itself when it is a bundle folder)."""
    p = Path(name)
    if (p / "train.json").is_file():
        return p
    root = Path(root) if root is not None else BUNDLES_DIR
    cand = root / name
    if not (cand / "train.json").is_file():
        names = [b["name"] for b in list_bundles(root)]
        raise ValueError(f"bundle '{name}': not found under {root} (known: {', '.join(names) or 'none'})")
    return cand


COMMON_OPTIONS = (
    ("--spatial_dims", int, "2 or 3"),
    ("--scale", str, "scale factor: 4 or per axis '(1,1,4)'"),
    ("--output_dir", str, "run folder (default runs/<bundle>)"),
    ("--device", str, "cpu, cuda, cuda:1 (default: CUDA when present)"),
)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """Turn ``["a=1", "train#x='y'"]`` into overrides; errors name the bad item."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set '{item}': expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = _literal(value)
    return out


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "scale":
            value = _literal(value)
        if name == "device":
            value = f"$mb.get_device({value!r})"
        out[name] = value
    out.update(parse_sets(getattr(args, "set", None)))
    return out


def _truthy_value(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


def run_bundle(name: str, run_id: str, config: str, overrides: dict[str, Any], tracking: str | None = None) -> None:
    """Run ``run_id`` of ``bundles/<name>/<config>`` in this process (metadata and logging from the bundle)."""
    from monai.bundle import run

    folder = bundle_dir(name)
    kwargs: dict[str, Any] = dict(overrides)
    allow = kwargs.get("allow_new_keys")
    check_overrides(
        list(kwargs),
        config_files=str(folder / config),
        meta_file=str(folder / "metadata.json"),
        allow_new_keys=None if allow is None else _truthy_value(allow),
    )
    if tracking:
        kwargs["tracking"] = tracking
    run(
        run_id,
        config_file=str(folder / config),
        meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"),
        **kwargs,
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle name (see `medsr bundles`) or bundle folder")
    for flag, typ, text in COMMON_OPTIONS:
        p.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--dataset_dir", default=None, help="folder of your images (default: the demo dataset)")
    p.add_argument("--datalist", default=None, help="datalist JSON (default: built from --dataset_dir or demo)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other bundle override (repeatable)")


def cmd_bundles(args: argparse.Namespace) -> int:
    """Print the bundles (name, version, description)."""
    items = list_bundles()
    if getattr(args, "json", False):
        print(json.dumps(items, indent=2))
        return 0
    for b in items:
        print(f"{b['name']:<14} {b['version']:<8} {b['description']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``medsr train BUNDLE``: run the bundle's ``training``."""
    names = ("spatial_dims", "scale", "output_dir", "device", "dataset_dir", "datalist", "epochs")
    run_bundle(args.bundle, "training", "train.json", _overrides(args, names), args.tracking)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``medsr evaluate BUNDLE``: run the bundle's ``evaluating`` on a trained checkpoint."""
    names = ("spatial_dims", "scale", "output_dir", "device", "dataset_dir", "datalist", "checkpoint")
    run_bundle(args.bundle, "evaluating", "evaluate.json", _overrides(args, names), args.tracking)
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    """``medsr upscale IN OUT``: super-resolve one file (NIfTI out; DICOM in gives DICOM out; PNG out for PNG).

    Without ``--bundle``/``--checkpoint`` it uses a shipped model (``medsr models``): the one for the input's
    dimension and ``--scale`` (default 2), or ``--model NAME``; with ``--bundle`` it runs that bundle's
    ``inferring`` on the bundle's newest run (or ``--checkpoint``).
    """
    src = Path(args.input)
    if not src.exists():
        print(f"medsr upscale: input '{src}' does not exist", file=sys.stderr)
        return 2
    from medsr.pipeline.inference import IMAGE_SUFFIXES, NIFTI_SUFFIXES, is_dicom

    suffixes = NIFTI_SUFFIXES if args.bundle else (*NIFTI_SUFFIXES, *IMAGE_SUFFIXES)
    check_outputs([src], [Path(args.output)], suffixes=suffixes, dicom_inputs=[is_dicom(src)])
    if getattr(args, "reuse_memory", False):
        from medsr.networks import reuse_freed_memory

        reuse_freed_memory()  # this command is its own process: the setting ends with it
    if args.bundle is None:
        from medsr.pipeline.inference import upscale_with_model

        if args.checkpoint is not None:
            print("medsr upscale: --checkpoint needs --bundle (or give a model file with --model)", file=sys.stderr)
            return 2
        from medsr.pipeline.models import find_model

        model_file = find_model(args.model) if args.model else None
        device = args.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
        roi = _literal(args.roi_size) if isinstance(args.roi_size, str) else args.roi_size
        rec = upscale_with_model(
            src, args.output, model=model_file, scale=args.scale or 2, device=device, roi_size=roi,
            overlap=0.25 if args.overlap is None else args.overlap, progress=True,
        )  # fmt: skip
        how = f", slice by slice across axis {rec['slice_axis']}" if rec["slice_axis"] is not None else ""
        print(
            f"medsr upscale: {rec['output']}  shape {rec['shape']}  spacing "
            f"{tuple(round(s, 4) for s in rec['spacing'])} mm  model {rec['model']}{how}  {rec['seconds']:.1f} s"
        )
        return 0
    overrides = _overrides(args, ("spatial_dims", "scale", "device", "checkpoint", "roi_size", "overlap"))
    overrides["input_files"] = [str(src)]
    overrides["output_files"] = [str(args.output)]
    overrides["output_dir"] = str(Path(args.output).parent)
    if getattr(args, "compile", False):
        overrides["compile"] = True
    run_bundle(args.bundle, "inferring", "inference.json", overrides)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``medsr models``: the shipped models with their scale, dimension and measured figures;
    ``medsr models export BUNDLE CHECKPOINT OUTPUT --name NAME --set k=v ...``: package a trained generator."""
    from medsr.pipeline.models import export_bundle_model, shipped_models

    if args.action == "export":
        if not (args.bundle and args.checkpoint and args.output and args.name):
            print("medsr models export: needs BUNDLE CHECKPOINT OUTPUT and --name", file=sys.stderr)
            return 2
        info = {"training_command": args.training_command} if args.training_command else {}
        if args.trained_on:
            info["trained_on"] = args.trained_on
        if args.gan:
            info["gan"] = True  # a GAN-stage model: used only when named (--model)
        path = export_bundle_model(args.bundle, args.checkpoint, args.output, args.name, parse_sets(args.set), info)
        print(f"medsr models export: wrote {path}")
        return 0

    models = shipped_models()
    if args.json:
        print(json.dumps(models, indent=2, default=str))
        return 0
    if not models:
        print("no shipped models under bundles/*/models/")
        return 0
    print(f"{'name':<22} {'bundle':<12} {'dims':<4} {'scale':<8} {'pairs':<9} quality (demo test split)")
    for m in models:
        q = m.get("metrics", {}).get("summary", "")
        scale = "x".join(str(f) for f in m["scale"])
        print(
            f"{m['name']:<22} {m.get('bundle', ''):<12} {m['spatial_dims']}D   {scale:<8} {m.get('degradation', ''):<9} {q}"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate``, ``upscale`` and ``bundles`` to the ``medsr`` command."""
    p = subparsers.add_parser("bundles", help="list the SR bundles")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bundles)

    p = subparsers.add_parser("train", help="train a bundle (default: on the demo dataset)")
    _add_common(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--tracking", default=None, help="'mlflow' to track the run")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="evaluate a trained bundle (metrics.csv, summary.json, figures)")
    _add_common(p)
    p.add_argument("--checkpoint", default=None, help="checkpoint file or folder (default: the run's folder)")
    p.add_argument("--tracking", default=None, help="'mlflow' to track the run")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "models",
        help="list the shipped models (scale, dimension, measured quality), or export a trained one",
        description="List the shipped models, or package a bundle's trained generator as a self-describing "
        "model file. Example: medsr models export rdn runs/rdn/checkpoints/best_network.pt "
        "bundles/rdn/models/model.pt --name rdn_x2 --set scale=2 --set num_features=32",
    )
    p.add_argument("action", nargs="?", choices=("list", "export"), default="list")
    p.add_argument("bundle", nargs="?", help="export: the bundle that trained the generator")
    p.add_argument("checkpoint", nargs="?", help="export: its checkpoint (best_network.pt, a checkpoint, a folder)")
    p.add_argument("output", nargs="?", help="export: the model file to write (bundles/<name>/models/model.pt)")
    p.add_argument("--name", default=None, help="export: the model's name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="export: the training run's overrides")
    p.add_argument("--training-command", default=None, help="export: the exact training command (stored)")
    p.add_argument("--trained-on", default=None, help="export: what it was trained on (stored)")
    p.add_argument("--gan", action="store_true", help="export: a GAN-stage model (chosen only by name)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)

    p = subparsers.add_parser(
        "upscale",
        help="super-resolve an image file (a shipped model by default, or a bundle's trained generator)",
        description="Super-resolve one image. Without --bundle a shipped model is used (see `medsr models`): "
        "the one for the input's dimension and --scale; a 3D volume with a 2D model is upscaled in-plane, slice "
        "by slice across its thickest axis. Example: medsr upscale scan.nii.gz scan_sr.nii.gz --scale 2",
    )
    p.add_argument("input", help="LR image: NIfTI, DICOM file or series folder, PNG/JPEG, …")
    p.add_argument("output", help="output: .nii.gz, .png (2D), or for a DICOM input .dcm / a folder name")
    p.add_argument("--model", default=None, help="shipped model name (`medsr models`) or a model file")
    p.add_argument("--bundle", default=None, help="use this bundle's trained generator instead, e.g. esrgan_se")
    p.add_argument(
        "--checkpoint", default=None, help="with --bundle: checkpoint file or folder (default: runs/<bundle>)"
    )
    for flag, typ, text in COMMON_OPTIONS:
        if flag != "--output_dir":
            p.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--roi_size", type=_literal, default=None, help="sliding window in LR voxels")
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
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other bundle override (repeatable)")
    p.set_defaults(func=cmd_upscale)
