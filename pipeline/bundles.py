"""The bundle library: find, describe and run the SR bundles in ``bundles/``.

:func:`run_bundle` runs a bundle in-process through MONAI exactly as
``python -m monai.bundle run <id> --config_file bundles/<name>/<file>.json`` would; :func:`parse_sets` reads
``KEY=VALUE`` overrides (the value is a Python literal when it is one, else text); :func:`model_overrides`
takes dims, scale and channels from the checkpoint a run will use. The ``medsr`` command is argparse
on top of this module; nothing here imports the command line.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

from medsr.pipeline.errors import check_overrides
from medsr.pipeline.literals import config_overrides

__all__ = [
    "REPO_ROOT",
    "BUNDLES_DIR",
    "BUNDLE_FILES",
    "list_bundles",
    "bundle_dir",
    "parse_value",
    "parse_sets",
    "run_bundle",
    "inline_references",
    "runs_folder",
    "model_overrides",
    "describe_bundle",
]

#: the medsr checkout (or, installed from a wheel, the ``medsr`` package folder, which carries ``bundles/`` and
#: ``mlflow/`` next to ``pipeline/``); the one place that says where the bundles are
REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"
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


def parse_value(text: str) -> Any:
    """An override value: ``true``/``false`` as booleans, a Python literal as itself, anything else as text."""
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
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
        out[key.strip()] = parse_value(value)
    return out


def _truthy_value(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


def inline_references(node: Any, root: str | os.PathLike = REPO_ROOT) -> Any:
    """Replace every ``"%path/file.json#key"`` value by that part of the file, with paths relative to ``root``.

    MONAI reads such references relative to the working directory, so the bundles' ``%bundles/common/...``
    parts are found only from the folder holding ``bundles/``; inlined against :data:`REPO_ROOT`, a bundle
    runs from any folder, in a clone or installed. ``%#key`` references (same file) are kept.
    """
    if isinstance(node, dict):
        return {k: inline_references(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [inline_references(v, root) for v in node]
    if isinstance(node, str) and node.startswith("%") and ".json" in node:
        path, _, key = node[1:].partition("#")
        part: Any = json.loads((Path(root) / path).read_text(encoding="utf-8"))
        for k in filter(None, key.replace("::", "#").split("#")):
            part = part[int(k)] if isinstance(part, list) else part[k]
        return inline_references(part, root)
    return node


def run_bundle(name: str, run_id: str, config: str, overrides: dict[str, Any], tracking: str | None = None):
    """Run ``run_id`` of ``bundles/<name>/<config>`` in this process, as ``python -m monai.bundle run`` does
    (metadata and logging from the bundle), from any working directory (:func:`inline_references`); returns
    the finished :class:`~monai.bundle.ConfigWorkflow`."""
    from monai.bundle import ConfigWorkflow

    folder = bundle_dir(name)
    allow = overrides.get("allow_new_keys")
    check_overrides(
        list(overrides),
        config_files=str(folder / config),
        meta_file=str(folder / "metadata.json"),
        allow_new_keys=None if allow is None else _truthy_value(allow),
    )
    workflow = ConfigWorkflow(  # what monai.bundle's create_workflow builds, before it initializes
        config_file=str(folder / config),
        meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"),
        run_id=run_id,
        tracking=tracking or None,
        **config_overrides(overrides),  # user text reaches the config as literals, never as expressions
    )
    workflow.parser.set(inline_references(workflow.parser.get()))
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def runs_folder(bundle: str, output_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding a bundle's runs: ``output_dir`` when given, else ``runs/<bundle>``."""
    return Path(output_dir or f"runs/{bundle_dir(bundle).name}")


def model_overrides(
    bundle: str, overrides: dict[str, Any], output_dir: str | os.PathLike | None = None, run: str | None = None
) -> dict[str, Any]:
    """Dims, scale and channels from the checkpoint that will be used, unless given: a self-describing
    checkpoint (see :mod:`medsr.pipeline.models`) needs no network overrides.

    The checkpoint is ``overrides["checkpoint"]``, else the best one of ``run`` (default: the newest) in the
    bundle's runs folder (:func:`runs_folder`).
    """
    from medsr.pipeline.engines.checkpoint import find_checkpoint
    from medsr.pipeline.models import checkpoint_overrides, read_model_info
    from medsr.pipeline.runs import run_checkpoints

    given = overrides.get("checkpoint")
    if given == "":
        return {}
    try:
        path = find_checkpoint(given or run_checkpoints(runs_folder(bundle, output_dir), run))
        info = read_model_info(path)
    except (FileNotFoundError, ValueError, OSError):
        return {}  # the bundle run itself reports a missing checkpoint
    return {"checkpoint": path, **checkpoint_overrides(info, overrides)}


def _checkpoints_of(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.pt")) if folder.is_dir() else []


def describe_bundle(name: str, runs_root: str | os.PathLike = "runs") -> dict[str, Any]:
    """What ``medsr bundles NAME`` shows: recipe, scale, network, overrides, runs with checkpoints, models."""
    from medsr.pipeline.runs import LATEST, list_runs

    folder = bundle_dir(name)
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    train = json.loads((folder / "train.json").read_text(encoding="utf-8"))
    overrides = {
        k: v
        for k, v in train.items()
        if not isinstance(v, (dict, list)) or (isinstance(v, list) and all(not isinstance(i, (dict, list)) for i in v))
    }
    overrides = {
        k: v
        for k, v in overrides.items()
        if k not in ("imports", "bundle_name", "bundle_root")
        and not (isinstance(v, str) and v.startswith(("$", "@", "%")))
    }
    runs_dir = Path(runs_root) / folder.name
    latest = runs_dir / LATEST
    runs = [
        {
            "run": r.name,
            "checkpoints": _checkpoints_of(r / "checkpoints"),
            "latest": latest.exists() and latest.resolve() == r.resolve(),
        }
        for r in list_runs(runs_dir)
    ]
    return {
        "name": folder.name,
        "description": meta.get("description", ""),
        "version": meta.get("version", ""),
        "network": train.get("network_def", {}).get("_target_"),
        "scale": train.get("scale"),
        "spatial_dims": train.get("spatial_dims"),
        "overrides": overrides,
        "runs_dir": str(runs_dir),
        "runs": runs,
        "models": sorted(str(p) for p in (folder / "models").glob("*")) if (folder / "models").is_dir() else [],
        "readme": str(folder / "README.md"),
    }
