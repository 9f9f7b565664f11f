"""The bundle library: find, describe and run the SR bundles in ``bundles/``, and check their overrides.

:func:`run_bundle` runs a bundle in-process through MONAI exactly as
``python -m monai.bundle run <id> --config_file bundles/<name>/<file>.json`` would; :func:`parse_sets` reads
``KEY=VALUE`` overrides (the value is a Python literal when it is one, else text); :func:`model_overrides`
takes dims, scale and channels from the checkpoint a run will use. The ``medsr`` command is argparse
on top of this module; nothing here imports the command line. :func:`check_overrides` refuses an override key
that no config defines, naming the closest known key (``--epoch_lenght`` -> ``epoch_length``), unless new keys
are allowed (``--allow_new_keys true`` or ``MEDSR_ALLOW_NEW_KEYS=1``); ``medsr`` runs it before a run, a bundle's
``initialize`` (``mb.check_overrides()``) under ``python -m monai.bundle``.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medsr.pipeline.errors import MedsrError, in_monai_bundle, truthy
from medsr.pipeline.literals import Expression, config_overrides

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
    "TRACKING_KEY",
    "TRACKING_SETTINGS",
    "tracking_settings",
    "runs_folder",
    "model_overrides",
    "describe_bundle",
    "user_overrides",
    "override_text",
    "check_overrides",
    "config_keys",
    "argv_overrides",
    "ALLOW_NEW_KEYS_ENV",
]

#: the medsr checkout (or, installed from a wheel, the ``medsr`` package folder, which carries ``bundles/`` and
#: ``mlflow/`` next to ``pipeline/``); the one place that says where the bundles are
REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"
BUNDLE_FILES = ("metadata.json", "train.json", "inference.json", "evaluate.json", "logging.conf", "README.md")
ALLOW_NEW_KEYS_ENV = "MEDSR_ALLOW_NEW_KEYS"
_FALSE = ("false", "no", "off")  # text that means false but is truthy when a config uses it as a bool


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


#: medsr's tracking settings (``--tracking mlflow`` means these, not MONAI's default ``MLFlowHandler``)
TRACKING_SETTINGS = REPO_ROOT / "mlflow" / "tracking.json"
#: the bundle key that switches the MLflow tracking the training configs carry (``bundles/common/tracking.json``)
TRACKING_KEY = "mlflow_tracking"


def tracking_settings(config_file: str | os.PathLike, tracking: str | None, overrides: dict[str, Any]) -> str | None:
    """The ``tracking`` argument for MONAI's workflow, given ``medsr train/evaluate --tracking``.

    A config that tracks itself (it has ``mlflow_tracking``: every bundle's train.json) needs none for the
    default, ``mlflow`` or ``mlflow/tracking.json``; ``none`` sets ``mlflow_tracking`` false in ``overrides``;
    other settings files replace the bundle's own tracking. A config without it gets medsr's settings for
    ``mlflow`` and nothing by default.
    """
    text = (tracking or "").strip()
    own = TRACKING_KEY in json.loads(Path(config_file).read_text(encoding="utf-8"))
    medsr = text in ("", "mlflow") or (Path(text).is_file() and Path(text).resolve() == TRACKING_SETTINGS)
    if text.lower() == "none":
        if own:
            overrides[TRACKING_KEY] = False
        return None
    if own:
        if medsr:
            return None
        overrides.setdefault(TRACKING_KEY, False)  # the given settings track the run instead
        return text
    return str(TRACKING_SETTINGS) if text == "mlflow" else (text or None)


def run_bundle(name: str, run_id: str, config: str, overrides: dict[str, Any], tracking: str | None = None):
    """Run ``run_id`` of ``bundles/<name>/<config>`` in this process, as ``python -m monai.bundle run`` does
    (metadata and logging from the bundle), from any working directory (:func:`inline_references`); returns
    the finished :class:`~monai.bundle.ConfigWorkflow`. ``tracking``: see :func:`tracking_settings` (training
    runs are tracked unless it is ``"none"``)."""
    from monai.bundle import ConfigWorkflow

    folder = bundle_dir(name)
    overrides = dict(overrides)
    tracking = tracking_settings(folder / config, tracking, overrides)
    allow = overrides.get("allow_new_keys")
    check_overrides(
        list(overrides),
        config_files=str(folder / config),
        meta_file=str(folder / "metadata.json"),
        allow_new_keys=None if allow is None else truthy(allow),
        values=overrides,
    )
    with quiet_monai():
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


#: MONAI loggers whose notes ``medsr`` commands do not print, and their level meanwhile: the logging-config note
#: (``monai.bundle.workflows``, INFO; :func:`run_bundle` builds the ``ConfigWorkflow`` itself, so MONAI's input
#: summary is never written) and the nvImageCodec notice of MONAI's DICOM reader (a WARNING on every read: medsr
#: reads DICOM with pydicom and ITK). ``python -m monai.bundle`` still prints them.
_CHATTY = {"monai.bundle.workflows": logging.WARNING, "monai.data.nvimgcodec_pydicom_plugin": logging.ERROR}


@contextlib.contextmanager
def quiet_monai():
    """Inside: no logging-config note, no nvImageCodec notices, no "parsing config_file … eval()" warning.

    ``medsr`` runs only the bundles it ships; the one line a user sees on an error is then alone. The loggers
    of :data:`_CHATTY` run at a higher level inside and get their own level back after (no filters).
    """
    saved = {name: logging.getLogger(name).level for name in _CHATTY}
    for name, level in _CHATTY.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="parsing config_file")
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


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


#: top-level keys that are wiring, not a user's knob
WIRING_KEYS = frozenset({"imports", "bundle_name", "bundle_root"})


def _is_wiring(value: Any) -> bool:
    if isinstance(value, str):
        return value.lstrip().startswith(("$", "@", "%"))
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, (list, tuple, dict)) or _is_wiring(v) for v in value)
    return isinstance(value, dict)


def user_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """The user-facing overrides of a bundle config: its top-level keys with a literal value (``lr``, ``epochs``,
    ``num_features``, ``augment``, ...). Wiring is left out: dicts, ``$`` expressions, ``@`` references, ``%``
    includes, lists of them (the ``initialize``/``training`` run ids), keys starting with ``_`` and
    :data:`WIRING_KEYS`. The MLflow params of a run are these (:func:`medsr.pipeline.tracking.bundle_params`).
    """
    return {
        str(k): v
        for k, v in config.items()
        if not str(k).startswith("_") and k not in WIRING_KEYS and not _is_wiring(v)
    }


def override_text(value: Any) -> str:
    """``value`` spelled as ``python -m monai.bundle run ... --KEY VALUE`` reads it back (Python literals:
    ``True``/``False``/``None``, ``'[64, 32]'``), shell-quoted when needed; ``medsr train --set KEY=VALUE``
    reads the same text."""
    import shlex

    text = value if isinstance(value, str) else repr(value)
    return shlex.quote(text)


def describe_bundle(name: str, runs_root: str | os.PathLike = "runs") -> dict[str, Any]:
    """What ``medsr bundles NAME`` shows: recipe, scale, network, overrides, runs with checkpoints, models."""
    from medsr.pipeline.runs import LATEST, list_runs

    folder = bundle_dir(name)
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    train = json.loads((folder / "train.json").read_text(encoding="utf-8"))
    overrides = user_overrides(train)
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


# ------------------------------------------------------------------------------------------ overrides
#: ``monai.bundle run``'s own arguments (never config keys)
RUN_ARGUMENTS = frozenset(
    {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}
)
#: keys that are accepted everywhere: switches, not config keys
OWN_KEYS = frozenset({"allow_new_keys", "debug"})


def config_keys(config: Any, prefix: str = "") -> set[str]:
    """Every id of a (merged) config: ``a``, ``a#b``, ``a#0#c`` …, as ``monai.bundle`` overrides address them."""
    out: set[str] = set()
    if isinstance(config, Mapping):
        items: Iterable = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return out
    for k, v in items:
        key = f"{prefix}{k}"
        out.add(key)
        out |= config_keys(v, key + "#")
    return out


def argv_overrides(argv: Sequence[str]) -> dict[str, str]:
    """The ``--key value`` / ``--key=value`` pairs of a ``monai.bundle run`` command line (run's own excluded)."""
    out: dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("--") or a == "--":
            continue
        key, eq, value = a[2:].partition("=")
        if not eq and i < len(args) and not args[i].startswith("--"):
            value = args[i]
            i += 1
        key = key.replace("-", "_") if key.replace("-", "_") in RUN_ARGUMENTS else key
        if key in RUN_ARGUMENTS:
            continue
        out[key] = value
    return out


def _load_configs(config_files: Any, meta_file: Any = None) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files)
    if meta_file:
        try:
            parser.read_meta(meta_file)
        except Exception:  # noqa: BLE001 - a missing metadata file is MONAI's to report
            pass
    return parser.get()


def _parse_file_list(value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith("["):
        import ast

        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def check_overrides(
    keys: Iterable[str] | None = None,
    config_files: Any = None,
    meta_file: Any = None,
    allow_new_keys: bool | None = None,
    argv: Sequence[str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> list[str]:
    """Refuse override keys that no config defines, naming the closest known key, and values whose type
    contradicts the config's default (:func:`check_override_types`), before anything is created.

    Called with no arguments from a bundle's ``initialize`` list, it checks the ``--key value`` pairs of a
    ``python -m monai.bundle run …`` command line against the ``--config_file`` files (and does nothing in
    other processes: ``medsr train`` checks its overrides itself, before the run).

    Args:
        keys: override keys (default: read from ``argv``).
        config_files: the config file(s) the keys must exist in (default: ``--config_file`` of ``argv``).
        meta_file: the metadata file, whose keys count too.
        allow_new_keys: accept unknown keys (default: ``--allow_new_keys`` / ``MEDSR_ALLOW_NEW_KEYS``).
        argv: the command line (default ``sys.argv[1:]``).
        values: the override values (default: read from ``argv``, as ``python -m monai.bundle`` parses them).

    Returns:
        The unknown keys that were allowed (empty when all are known).

    Raises:
        MedsrError: ``--key: no config defines it (did you mean --closest?) …``.
    """
    pairs: dict[str, str] = {}
    if keys is None:
        if argv is None:
            if not in_monai_bundle():
                return []
            argv = sys.argv[1:]
        pairs = argv_overrides(argv)
        keys = list(pairs)
        if allow_new_keys is None and "allow_new_keys" in pairs:
            allow_new_keys = truthy(pairs["allow_new_keys"] or "true")
        if config_files is None:
            found = _argv_value(argv, "config_file")
            config_files = _parse_file_list(found) if found is not None else None
        if meta_file is None:
            meta_file = _parse_file_list(_argv_value(argv, "meta_file"))
    if allow_new_keys is None:
        allow_new_keys = truthy(os.environ.get(ALLOW_NEW_KEYS_ENV, ""))
    keys = [k for k in keys if k not in OWN_KEYS]
    if not keys or config_files is None:
        return []
    from monai.bundle import ConfigParser

    config = _load_configs(config_files, meta_file)
    known = config_keys(config)
    for k, v in pairs.items():
        text = str(v).strip()
        if text != "False" and text.lower() in _FALSE and isinstance(ConfigParser(config).get(k), bool):
            raise MedsrError(
                f"override --{k} {v}: python -m monai.bundle passes {v!r} as text, which counts as true; "
                f"write --{k} False (or True)"
            )
    if values is None and pairs:
        values = {k: parse_value(str(v)) for k, v in pairs.items()}
    check_override_types(values or {}, ConfigParser(config))
    unknown = [k for k in keys if k not in known]
    if unknown and not allow_new_keys:
        k = unknown[0]
        close = difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean --{close[0]}? " if close else ""
        more = f" (also unknown: {', '.join('--' + u for u in unknown[1:])})" if len(unknown) > 1 else ""
        raise MedsrError(
            f"override --{k}: no config defines it{more}; {hint}"
            f"to add a new key on purpose pass --allow_new_keys true (medsr: --set allow_new_keys=true) or set {ALLOW_NEW_KEYS_ENV}=1"
        )
    return unknown


def _type_error(value: Any, default: Any) -> str | None:
    """What is wrong with ``value`` for a key whose config default is ``default`` (``None``: nothing)."""
    if isinstance(value, Expression) or default is None:
        return None
    if isinstance(default, str) and default.startswith(("$", "@", "%")):
        return None  # an expression or reference: its value is not known before the run
    ints = (int,) if not isinstance(value, bool) else ()
    if isinstance(default, bool):
        ok = isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))  # fire reads --flag 1 as 1
        return None if ok else "expected true or false"
    if isinstance(default, int):
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return None  # one value per axis (scale, patch_size, roi_size)
        return None if ints and isinstance(value, ints) else "expected an integer"
    if isinstance(default, float):
        return None if not isinstance(value, bool) and isinstance(value, (int, float)) else "expected a number"
    return None


def check_override_types(values: Mapping[str, Any], parser: Any) -> None:
    """Refuse an override whose value cannot be what its config default is (``--epochs abc`` where the
    default is ``100``): numbers and booleans are checked; defaults that are expressions, ``null`` or text
    accept anything.

    Raises:
        MedsrError: ``override --epochs 'abc': expected an integer (the config's default is 100)``.
    """
    for key, value in values.items():
        if key in OWN_KEYS or key not in parser:
            continue
        default = parser.get(key)
        problem = _type_error(value, default)
        if problem:
            raise MedsrError(f"override --{key} {value!r}: {problem} (the config's default is {default!r})")


def _argv_value(argv: Sequence[str], name: str) -> str | None:
    args = list(argv)
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None
