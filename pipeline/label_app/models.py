"""Read the shipped models and the SR bundles into model specs for the MONAI Label app (no MONAI Label import).

Two kinds of served model:

* a shipped model file (``bundles/*/models/*.pt``, :mod:`medsr.pipeline.models`), served under the name it
  records (``rdn_x2``): network, dimension, scale and channels from the file (:func:`shipped_model_spec`);
* a bundle's trained run: its ``inference.json`` parsed with :class:`monai.bundle.ConfigParser`, with the run's
  ``output_dir`` pointed at ``<runs_dir>/<model name>`` and optional config overrides (e.g.
  ``{"spatial_dims": 3, "scale": [2, 2, 2]}``: the bundles' 2D/3D variants are overrides of one file), and the
  checkpoint the bundle's ``checkpoint`` entry names (a file or a run folder searched for the best/newest
  ``.pt``). A self-describing checkpoint's recorded dimension and scale win over the config's unless the
  overrides set them, so ``/info`` states the scale of the network that runs.

``models="all"`` (the default) serves every shipped model and every bundle that has a trained run; bundles
without a fixed network (``selfsr`` trains one per scan) are left out. Missing checkpoint policy: a bundle
whose checkpoint does not exist is **skipped** (a log line says why) unless ``allow_untrained`` is set, in
which case it is served with random weights and ``/info`` marks it ``"weights": "random (untrained)"``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medsr.pipeline.bundles import BUNDLES_DIR, REPO_ROOT
from medsr.transforms.geometry import per_axis

__all__ = [
    "SRModelSpec",
    "parse_models_arg",
    "load_model_spec",
    "shipped_model_spec",
    "discover_models",
    "BUNDLES_DIR",
    "RUNS_DIR",
]

logger = logging.getLogger(__name__)

RUNS_DIR = REPO_ROOT / "runs"
_CWD_LOCK = threading.Lock()


@dataclass
class SRModelSpec:
    """One served SR model.

    Attributes:
        name: the model name in ``/info`` and ``/infer/<name>``.
        bundle: the bundle folder it comes from.
        spatial_dims: 2 or 3 (a 2D model runs slice by slice on a 3D volume).
        scale: integer factor per spatial axis of the network.
        in_channels: network input channels.
        roi_size: sliding-window size in LR voxels per axis.
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        checkpoint: weights file, or ``None`` for random weights (``allow_untrained``).
        use_ema: take EMA weights from a medsr checkpoint.
        description: the bundle's description.
        version: the bundle's version.
        build_network: returns a fresh network (random weights).
        build_preprocessing: returns the bundle's preprocessing transform (``{"image": path}`` in, a
            channel-first normalized MetaTensor out), or ``None``.
    """

    name: str
    bundle: Path
    spatial_dims: int
    scale: tuple[int, ...]
    in_channels: int
    roi_size: tuple[int, ...]
    overlap: float
    sw_batch_size: int
    checkpoint: str | None
    use_ema: bool = False
    description: str = ""
    version: str = ""
    build_network: Callable[[], torch.nn.Module] | None = field(default=None, repr=False)
    build_preprocessing: Callable[[], Any] | None = field(default=None, repr=False)

    def info(self) -> dict[str, Any]:
        """JSON-ready summary for ``/info``."""
        return {
            "bundle": self.bundle.name,
            "spatial_dims": self.spatial_dims,
            "scale": list(self.scale),
            "in_channels": self.in_channels,
            "roi_size": list(self.roi_size),
            "checkpoint": self.checkpoint,
            "weights": "trained" if self.checkpoint else "random (untrained)",
            "version": self.version,
        }

    def load_network(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """Build the network, load the checkpoint (when there is one) and put it in eval mode on ``device``."""
        from medsr.pipeline.models import load_generator

        if self.build_network is None:
            raise ValueError(f"model '{self.name}': the spec has no network builder")
        net = load_generator(self.build_network(), self.checkpoint, self.use_ema)
        return net.to(device).eval()


def parse_models_arg(models: str | None) -> list[tuple[str, str]]:
    """Parse ``"espcn,srcnn,espcn3d=espcn"`` into ``[(name, bundle), ...]``; ``None``/``""``/``"all"`` -> ``[]``.

    Raises:
        ValueError: for an empty or malformed entry.
    """
    if models is None or str(models).strip().lower() in ("", "all"):
        return []
    out = []
    for entry in str(models).split(","):
        entry = entry.strip()
        name, _, bundle = entry.partition("=")
        name, bundle = name.strip(), (bundle.strip() or name.strip())
        if not name or not bundle or any(c in name for c in "/ \\"):
            raise ValueError(f"models: bad entry {entry!r} (expected 'name' or 'name=bundle', comma separated)")
        out.append((name, bundle))
    return out


@contextlib.contextmanager
def _working_dir(path: Path):
    """Bundle configs reference ``%bundles/common/…`` relative to the working directory (the repo root)."""
    with _CWD_LOCK:
        old = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(old)


def _tuple(value: Any, n: int, what: str) -> tuple[int, ...]:
    return tuple(int(v) for v in per_axis(value, n, what, allow_none=False))


def load_model_spec(
    name: str,
    bundle: str | os.PathLike,
    runs_dir: str | os.PathLike = RUNS_DIR,
    overrides: Mapping[str, Any] | None = None,
    allow_untrained: bool = False,
) -> SRModelSpec | None:
    """Parse one bundle's ``inference.json`` into a spec; ``None`` (with a log line) when it has no checkpoint.

    Args:
        name: the served model's name (also the run folder name under ``runs_dir``).
        bundle: the bundle folder (holding ``inference.json`` and ``metadata.json``).
        runs_dir: the bundle's ``output_dir`` becomes ``<runs_dir>/<name>``; its ``checkpoint`` entry then
            points inside it (``runs/<name>/checkpoints`` for the medsr bundles).
        overrides: config ids to replace before parsing (``{"spatial_dims": 3}``, ``{"checkpoint": "x.pt"}``).
        allow_untrained: serve a model without checkpoint with random weights instead of skipping it.

    Raises:
        ValueError: naming the bundle when its config is missing or declares no usable SR network.
    """
    from monai.bundle import ConfigParser

    from medsr.pipeline.engines.checkpoint import find_checkpoint
    from medsr.pipeline.literals import config_overrides

    bundle = Path(bundle).resolve()
    cfg_file = bundle / "inference.json"
    if not cfg_file.is_file():
        raise ValueError(f"bundle '{bundle}': no inference.json")
    meta: dict[str, Any] = {}
    if (bundle / "metadata.json").is_file():
        meta = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))
    repo = bundle.parent.parent if bundle.parent.name == "bundles" else REPO_ROOT

    parser = ConfigParser()
    parser.read_config(str(cfg_file))
    given = {"output_dir": str(Path(runs_dir).resolve() / name), "device": "cpu", **(overrides or {})}
    for key, value in config_overrides(given).items():  # user text as literals, never expressions
        parser[key] = value
    with _working_dir(repo):
        parser.parse(True)
        try:
            spatial_dims = int(parser.get_parsed_content("spatial_dims"))
            scale = _tuple(
                parser.get_parsed_content("scale_factors" if "scale_factors" in parser else "scale"),
                spatial_dims,
                "scale",
            )
            in_channels = int(parser.get_parsed_content("in_channels")) if "in_channels" in parser else 1
            roi = _tuple(
                parser.get_parsed_content("roi_size") if "roi_size" in parser else 64, spatial_dims, "roi_size"
            )
            overlap = float(parser.get_parsed_content("overlap")) if "overlap" in parser else 0.25
            sw_batch = int(parser.get_parsed_content("sw_batch_size")) if "sw_batch_size" in parser else 1
            use_ema = bool(parser.get_parsed_content("use_ema")) if "use_ema" in parser else False
            ckpt_entry = parser.get_parsed_content("checkpoint") if "checkpoint" in parser else None
            net_cfg = parser.get("network_def")
        except Exception as err:  # a config error is reported with the bundle's name
            raise ValueError(f"bundle '{bundle.name}' (model '{name}'): cannot read its inference.json: {err}") from err
    if net_cfg is None:
        raise ValueError(f"bundle '{bundle.name}': inference.json declares no 'network_def'")

    checkpoint = None
    if ckpt_entry:
        try:
            checkpoint = find_checkpoint(ckpt_entry)
        except FileNotFoundError as err:
            if not allow_untrained:
                logger.warning(f"model '{name}' skipped: {err}")
                return None
            logger.warning(f"model '{name}' served with RANDOM weights: {err}")
    elif not allow_untrained:
        logger.warning(f"model '{name}' skipped: bundle '{bundle.name}' names no checkpoint")
        return None
    if checkpoint is not None:  # a self-describing checkpoint knows its dims and scale (unless overridden)
        from medsr.pipeline.models import checkpoint_overrides, read_model_info

        implied = checkpoint_overrides(read_model_info(checkpoint), given=overrides or {})
        spatial_dims = int(implied.get("spatial_dims", spatial_dims))
        scale = tuple(implied["scale"]) if "scale" in implied else scale
        scale = scale if len(scale) == spatial_dims else (scale[0],) * spatial_dims
        in_channels = int(implied.get("in_channels", in_channels))
        roi = roi if len(roi) == spatial_dims else (roi[0],) * spatial_dims

    def build_network() -> torch.nn.Module:
        with _working_dir(repo):
            return parser.get_parsed_content("network_def", instantiate=True, lazy=False)

    def build_preprocessing():
        if "preprocessing" not in parser:
            return None
        with _working_dir(repo):
            return parser.get_parsed_content("preprocessing", instantiate=True, lazy=False)

    return SRModelSpec(
        name=name,
        bundle=bundle,
        spatial_dims=spatial_dims,
        scale=scale,
        in_channels=in_channels,
        roi_size=roi,
        overlap=overlap,
        sw_batch_size=sw_batch,
        checkpoint=checkpoint,
        use_ema=use_ema,
        description=str(meta.get("description", "")) or f"medsr SR bundle {bundle.name}",
        version=str(meta.get("version", "")),
        build_network=build_network,
        build_preprocessing=build_preprocessing,
    )


#: the knobs a served shipped model takes from ``overrides`` (its network, dims and scale are the file's)
SHIPPED_OVERRIDES = ("roi_size", "overlap", "sw_batch_size")


def shipped_model_spec(path: str | os.PathLike, name: str | None = None, overrides: Mapping[str, Any] | None = None):
    """A spec serving a self-describing model file (``bundles/*/models/*.pt``, :mod:`medsr.pipeline.models`):
    network, dimension, scale and channels from the file, the same preprocessing and windows as ``medsr upscale``.

    Args:
        path: the model file.
        name: the served name (default: the name the file records, e.g. ``rdn_x2``).
        overrides: ``roi_size``, ``overlap`` or ``sw_batch_size`` only.

    Raises:
        ValueError: for other overrides, or a file that is not a medsr model file.
    """
    from medsr.pipeline.inference import inference_preprocessing
    from medsr.pipeline.models import build_network, read_model_info

    info = read_model_info(path)
    if "network" not in info or not info.get("scale"):
        raise ValueError(f"model '{path}': not a self-describing medsr model file")
    bad = sorted(set(overrides or {}) - set(SHIPPED_OVERRIDES))
    if bad:
        raise ValueError(f"model '{name or info['name']}': a shipped model takes only {SHIPPED_OVERRIDES}, not {bad}")
    given = dict(overrides or {})
    dims = int(info["spatial_dims"])
    roi = _tuple(given.get("roi_size", 128 if dims == 2 else 64), dims, "roi_size")
    metrics = info.get("metrics", {}) if isinstance(info.get("metrics"), Mapping) else {}
    return SRModelSpec(
        name=str(name or info["name"]),
        bundle=Path(path).resolve().parent.parent,
        spatial_dims=dims,
        scale=tuple(int(f) for f in info["scale"]),
        in_channels=int(info["network"].get("args", {}).get("in_channels", 1)),
        roi_size=roi,
        overlap=float(given.get("overlap", 0.25)),
        sw_batch_size=int(given.get("sw_batch_size", 1)),
        checkpoint=str(Path(path).resolve()),
        description=" ".join(
            part for part in (f"medsr shipped model {info['name']}", str(metrics.get("summary", ""))) if part
        ),
        version=str(info.get("medsr_version", "")),
        build_network=lambda: build_network(info["network"]),
        build_preprocessing=inference_preprocessing,
    )


def discover_models(
    bundles_dir: str | os.PathLike = BUNDLES_DIR,
    models: str | None = None,
    runs_dir: str | os.PathLike = RUNS_DIR,
    overrides: Mapping[str, Mapping[str, Any]] | str | None = None,
    allow_untrained: bool = False,
) -> dict[str, SRModelSpec]:
    """Specs of the models to serve, by name.

    Args:
        bundles_dir: folder holding the bundles (``<name>/inference.json``).
        models: ``"all"``/``None`` (every bundle with an ``inference.json``) or ``"a,b,c=bundle"``.
        runs_dir: where each model's run output (checkpoints) lives: ``<runs_dir>/<model>``.
        overrides: per model name, config overrides; a JSON string is parsed.
        allow_untrained: serve models without checkpoint with random weights.

    Raises:
        ValueError: for a missing bundles folder, an unknown bundle or bad ``overrides``.
    """
    bundles_dir = Path(bundles_dir).resolve()
    if not bundles_dir.is_dir():
        raise ValueError(f"bundles_dir '{bundles_dir}': no such folder")
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except ValueError as err:
            raise ValueError(f"overrides: not valid JSON ({err}): {overrides!r}") from err
    overrides = dict(overrides or {})
    if not all(isinstance(v, Mapping) for v in overrides.values()):
        raise ValueError(f"overrides: expected {{model: {{config id: value}}}}, got {overrides!r}")
    from medsr.pipeline.models import shipped_models

    shipped = {m["name"]: m["path"] for m in shipped_models(bundles_dir)}
    known = sorted(p.parent.name for p in bundles_dir.glob("*/inference.json") if p.parent.name != "common")
    entries = parse_models_arg(models)
    serve_all = not entries
    if serve_all:  # every shipped model, then every bundle's trained run that exists
        entries = [(n, n) for n in sorted(shipped)] + [(b, b) for b in known if b not in shipped]
    unknown_overrides = set(overrides) - {n for n, _ in entries}
    if unknown_overrides:
        raise ValueError(
            f"overrides: models {sorted(unknown_overrides)} are not served (served: {[n for n, _ in entries]})"
        )
    specs: dict[str, SRModelSpec] = {}
    for name, source in entries:
        if source in shipped and source not in known:
            specs[name] = shipped_model_spec(shipped[source], name, overrides.get(name))
            continue
        if source not in known:
            raise ValueError(
                f"model '{name}': no bundle or shipped model '{source}' under {bundles_dir} "
                f"(bundles: {', '.join(known)}; shipped models: {', '.join(sorted(shipped)) or 'none'})"
            )
        if serve_all and not _has_network(bundles_dir / source):
            logger.info(f"bundle '{source}' not served: its inference.json has no fixed network (trained per scan)")
            continue
        spec = load_model_spec(name, bundles_dir / source, runs_dir, overrides.get(name), allow_untrained)
        if spec is not None:
            specs[name] = spec
    return specs


def _has_network(bundle: Path) -> bool:
    """Whether a bundle's inference.json defines a network (``selfsr`` trains one per scan: it does not)."""
    return "network_def" in json.loads((bundle / "inference.json").read_text(encoding="utf-8"))
