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
    """``medsr upscale IN OUT --bundle NAME``: super-resolve one file (NIfTI out; DICOM in gives DICOM out)."""
    src = Path(args.input)
    if not src.exists():
        print(f"medsr upscale: input '{src}' does not exist", file=sys.stderr)
        return 2
    from medsr.pipeline.inference import NIFTI_SUFFIXES, is_dicom

    check_outputs([src], [Path(args.output)], suffixes=NIFTI_SUFFIXES, dicom_inputs=[is_dicom(src)])
    overrides = _overrides(args, ("spatial_dims", "scale", "device", "checkpoint", "roi_size", "overlap"))
    overrides["input_files"] = [str(src)]
    overrides["output_files"] = [str(args.output)]
    overrides["output_dir"] = str(Path(args.output).parent)
    if getattr(args, "compile", False):
        overrides["compile"] = True
    if getattr(args, "reuse_memory", False):
        from medsr.networks import reuse_freed_memory

        reuse_freed_memory()  # this command is its own process: the setting ends with it
    run_bundle(args.bundle, "inferring", "inference.json", overrides)
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

    p = subparsers.add_parser("upscale", help="super-resolve an image file with a bundle's generator")
    p.add_argument("input", help="LR image: NIfTI, DICOM file or series folder, PNG/JPEG, …")
    p.add_argument("output", help="output: .nii.gz (or, for a DICOM input, .dcm / a folder name)")
    p.add_argument("--bundle", required=True, help="bundle name, e.g. esrgan_se")
    p.add_argument("--checkpoint", default=None, help="checkpoint file or folder (default: runs/<bundle>)")
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
