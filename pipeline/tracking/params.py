"""Turn a bundle config, a datalist and the code checkout into MLflow params and tags.

MLflow params are flat ``key -> str`` pairs with limits (key <= 250 characters, value <= 6000, at most 100
per batch); keys may hold letters, digits, ``_ - . / : `` and spaces. A MONAI bundle config is a nested
dict with ``#``/``::`` separated ids, ``@id`` references and ``$`` expressions. :func:`flatten_config`
flattens it, resolves plain references and arithmetic on references (never calling anything), and
:func:`to_mlflow_params` makes the result fit MLflow's limits.
"""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MAX_KEY_LENGTH = 250
MAX_VALUE_LENGTH = 6000
#: lists longer than this are logged as one JSON param instead of one param per item
MAX_LIST_ITEMS = 16
#: at most this many config params per run (a pasted-in datalist could otherwise add thousands)
MAX_PARAMS = 1500
TRUNCATION_MARK = "...[truncated]"

_REF = re.compile(r"@([\w#:.\-]+)")
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /:]")
_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def load_config(config: str | os.PathLike | Mapping | None) -> dict:
    """Return a bundle config as a dict: ``config`` is a dict, a JSON/YAML file path, or ``None`` (empty).

    Raises:
        ValueError: when the path does not exist or does not hold a mapping.
    """
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if not path.is_file():
        raise ValueError(f"config '{path}': file not found")
    from monai.bundle import ConfigParser

    content = ConfigParser.load_config_file(path)
    if not isinstance(content, Mapping):
        raise ValueError(f"config '{path}': expected a mapping at the top level, got {type(content).__name__}")
    return dict(content)


def _norm_id(config_id: str) -> str:
    return config_id.replace("::", "#")


def _flatten(node: Any, prefix: str, out: dict[str, Any], nodes: dict[str, Any] | None = None) -> None:
    if nodes is not None and prefix:
        nodes[prefix] = node
    if isinstance(node, Mapping):
        if not node and prefix:
            out[prefix] = "{}"
        for key, value in node.items():
            _flatten(value, f"{prefix}#{key}" if prefix else str(key), out, nodes)
    elif isinstance(node, (list, tuple)):
        if len(node) > MAX_LIST_ITEMS or not node:
            out[prefix] = json.dumps(node, default=str)
        else:
            for i, value in enumerate(node):
                _flatten(value, f"{prefix}#{i}", out, nodes)
    else:
        out[prefix] = node


def _safe_eval(expr: str) -> Any:
    """Evaluate literals and arithmetic on them only; anything else raises ``ValueError``."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [ev(e) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        raise ValueError("not a literal expression")

    return ev(ast.parse(expr, mode="eval"))


def _resolve(value: Any, flat: Mapping[str, Any], nodes: Mapping[str, Any], depth: int = 0) -> Any:
    """Resolve ``@id`` and ``$`` arithmetic on literals/references; return ``value`` unchanged otherwise."""
    if not isinstance(value, str) or depth > 8:
        return value
    text = value.strip()
    if text.startswith("@") and _REF.fullmatch(text):
        target = _norm_id(text[1:])
        if target in flat:
            return _resolve(flat[target], flat, nodes, depth + 1)
        node = nodes.get(target)
        if isinstance(node, (list, tuple)) and all(not isinstance(v, (list, tuple, Mapping)) for v in node):
            return [_resolve(v, flat, nodes, depth + 1) for v in node]
        return value
    if text.startswith("$"):
        expr = text[1:]
        try:

            def sub(match: re.Match) -> str:
                target = _norm_id(match.group(1))
                if target not in flat:
                    raise KeyError(target)
                resolved = _resolve(flat[target], flat, nodes, depth + 1)
                if isinstance(resolved, str) and resolved.lstrip().startswith(("$", "@")):
                    raise ValueError(target)
                return repr(resolved)

            result = _safe_eval(_REF.sub(sub, expr))
        except (KeyError, ValueError, SyntaxError, TypeError, ZeroDivisionError, OverflowError):
            return value
        return list(result) if isinstance(result, tuple) else result
    return value


def flatten_config(config: str | os.PathLike | Mapping | None) -> dict[str, Any]:
    """Flatten a bundle config to ``{"train.trainer.max_epochs": 2, ...}`` with references resolved.

    Nested ids are joined with ``.`` (MLflow keys may not hold ``#``). Values that are plain references
    (``"@lr"``) or arithmetic on literals and references (``"$@lr * 2"``) are replaced by their value;
    other expressions are kept as written (nothing is imported or called). Lists longer than
    :data:`MAX_LIST_ITEMS` stay one JSON value.

    Args:
        config: the config dict or a JSON/YAML file (e.g. the executed config MONAI saves with ``--tracking``).
    """
    flat: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    _flatten(load_config(config), "", flat, nodes)
    resolved = {key: _resolve(value, flat, nodes) for key, value in flat.items()}
    return {key.replace("#", "."): value for key, value in resolved.items()}


#: top-level keys that are wiring or tracking settings, not a recipe's knobs
NOT_PARAMS = frozenset(
    {"imports", "bundle_root", "save_execute_config", "tracking_uri", "experiment_name", "run_name", "run_dir",
     "is_not_rank0", "handlers_id", "configs", "mlflow_tracking"}
)  # fmt: skip


def bundle_params(config: str | os.PathLike | Mapping | None) -> dict[str, Any]:
    """The params of a tracked run: the bundle's user-facing overrides
    (:func:`medsr.pipeline.bundles.user_overrides`: ``lr``, ``epochs``, ``num_features``, ``scale``, ...) with
    the tracking settings (:data:`NOT_PARAMS`) left out, so two runs differ exactly in what was changed. Lists
    are logged as JSON."""
    from medsr.pipeline.bundles import user_overrides

    return {
        key: json.dumps(list(value)) if isinstance(value, (list, tuple)) else value
        for key, value in user_overrides(load_config(config)).items()
        if key not in NOT_PARAMS
    }


def metric_key(name: str, group: str) -> str:
    """MLflow metric name in the UI's sections: ``val_psnr`` -> ``val/psnr``, ``loss_l1`` -> ``train/loss_l1``,
    ``time_per_iteration_s`` -> ``perf/time_per_iteration_s``; names that already hold ``/`` are kept.

    Args:
        name: the engine's metric or output name.
        group: the section of this engine's metrics (``train``, ``pretrain``, ``val``, ``eval``).
    """
    name = str(name)
    if "/" in name:
        return name
    if name.startswith("time_"):
        return f"perf/{name}" if group in ("train", "val", "eval") else f"perf/{group}_{name}"
    for prefix in ("val_", "eval_", "eval."):
        if name.startswith(prefix):
            return f"{prefix[:-1]}/{name[len(prefix) :]}"
    return f"{group}/{name}"


def _clip_key(key: str) -> str:
    key = _BAD_KEY_CHARS.sub("_", key)
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return f"{key[: MAX_KEY_LENGTH - 10]}..{digest}"


def clip_value(value: Any, limit: int = MAX_VALUE_LENGTH) -> str:
    """Return ``str(value)`` cut to ``limit`` characters, ending with ``...[truncated]`` when cut."""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, default=str)
        if isinstance(value, (list, dict))
        else str(value)
    )
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def to_mlflow_params(params: Mapping[str, Any], max_params: int = MAX_PARAMS) -> dict[str, str]:
    """Make ``params`` fit MLflow: valid keys of at most 250 characters, values of at most 6000.

    Keys are sorted; beyond ``max_params`` the rest are dropped and ``medsr.params_dropped`` says how many.
    """
    out: dict[str, str] = {}
    keys = sorted(params)
    for key in keys[:max_params]:
        out[_clip_key(str(key))] = clip_value(params[key])
    if len(keys) > max_params:
        out["medsr.params_dropped"] = str(len(keys) - max_params)
    return out


def datalist_digest(data: Sequence[Any]) -> dict[str, Any]:
    """Return ``{"sha256": <16 hex>, "size": n}`` for a datalist (a list of dicts or paths).

    The hash is over the canonical JSON of the items (sorted keys; tensors and paths as text), so the same
    list of files in the same order always hashes the same and any changed path or label changes it.

    Raises:
        ValueError: when ``data`` is not a sequence.
    """
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise ValueError(f"datalist: expected a sequence of items, got {type(data).__name__}")
    text = json.dumps(list(data), sort_keys=True, default=str)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest()[:16], "size": len(data)}


def code_version(path: str | os.PathLike | None = None) -> dict[str, str]:
    """Return version tags: ``mlflow.source.git.commit`` (when ``path`` is in a git checkout with commits),
    ``medsr.git_dirty`` and the versions of medsr, monai, torch and mlflow.

    Args:
        path: a folder in the checkout; defaults to the medsr source folder.
    """
    import mlflow
    import monai
    import torch

    import medsr.pipeline

    folder = Path(path) if path is not None else Path(medsr.pipeline.__file__).resolve().parents[1]
    tags = {
        "medsr.version": medsr.pipeline.__version__,
        "medsr.monai_version": monai.__version__,
        "medsr.torch_version": torch.__version__,
        "medsr.mlflow_version": mlflow.__version__,
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=False
        )
        if commit.returncode == 0 and commit.stdout.strip():
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            tags["medsr.git_dirty"] = str(bool(status.stdout.strip())).lower()
        else:
            tags["medsr.git_commit"] = "none (not a git checkout with commits)"
    except (OSError, subprocess.TimeoutExpired):
        tags["medsr.git_commit"] = "unknown (git not available)"
    return tags


def bundle_name(bundle_root: str | os.PathLike | None) -> str:
    """Return the bundle's name: the folder name of ``bundle_root`` (``bundles/esrgan_se`` -> ``esrgan_se``)."""
    if bundle_root is None:
        return "bundle"
    name = Path(os.path.abspath(os.fspath(bundle_root))).name
    return name or "bundle"


def default_experiment_name(bundle_root: str | os.PathLike | None = None, prefix: str = "medsr") -> str:
    """Return the experiment of a bundle, ``medsr/<bundle name>``: one experiment per bundle."""
    return f"{prefix}/{bundle_name(bundle_root)}"


def default_run_name(bundle_root: str | os.PathLike | None = None, label: str | None = None) -> str:
    """Return a readable run name, ``<bundle>-<label>-<YYYYmmdd-HHMMSS>`` (``label`` optional)."""
    parts = [bundle_name(bundle_root)] + ([str(label)] if label else []) + [time.strftime("%Y%m%d-%H%M%S")]
    return "-".join(parts)


def executed_config_path(value: str | os.PathLike | None) -> Path | None:
    """Return the executed-config file MONAI wrote for ``--tracking`` (its ``save_execute_config``).

    MONAI builds that value as the text ``<output_dir> + '/config_<time>.json'``, which only evaluates when
    ``output_dir`` is a ``$`` expression; with a plain ``--output_dir /x`` the text reaches handlers
    unevaluated. This returns the real path in both cases (``None`` when there is none).
    """
    if value is None or value is False:
        return None
    text = os.fspath(value)
    if os.path.isfile(text):
        return Path(text)
    match = re.fullmatch(r"\$?(.*?)\s*\+\s*['\"](/?[^'\"]+)['\"]", text.strip())
    if match and os.path.isfile(match.group(1) + match.group(2)):
        return Path(match.group(1) + match.group(2))
    return None


def running_workflow_config() -> dict | None:
    """The raw config (overrides applied, as MONAI's ``--tracking`` saves it) of the MONAI
    :class:`~monai.bundle.ConfigWorkflow` whose ``initialize``/``run`` is calling this code, found on the call
    stack; ``None`` outside a bundle workflow.

    The bundles track themselves (no ``--tracking`` settings, so MONAI writes no executed-config file): their
    trainer handler reads the recipe here, for ``python -m monai.bundle run``, ``medsr train`` and
    ``ConfigWorkflow`` alike.
    """
    import inspect

    from monai.bundle import ConfigWorkflow

    from medsr.pipeline.literals import restore_literals

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, ConfigWorkflow):  # medsr's command-line values as given, not as literal expressions
                return restore_literals(dict(owner.parser.get()))
            frame = frame.f_back
    finally:
        del frame
    return None
