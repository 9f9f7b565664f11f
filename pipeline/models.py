"""The model file: medsr's one format for a trained generator, and the shipped models in
``bundles/<name>/models/``.

A model file (``models/model.pt`` in MONAI's model-zoo convention, and a run's ``best_network.pt``) is a
``torch.save`` of plain types and tensors, so ``torch.load(weights_only=True)`` reads it::

    {"format": "medsr-model/1",
     "name": "rdn_x2", "bundle": "rdn",
     "network": {"target": "medsr.networks.RDN", "args": {...constructor arguments...}},
     "spatial_dims": 2, "scale": [2, 2], "in_channels": 1, "out_channels": 1,
     "normalization": {"transform": "medsr.transforms.PercentileNormalize", "lower": 0.5, "upper": 99.5, ...},
     "degradation": "bicubic", "trained_on": "...", "training_command": "...",
     "metrics": {...}, "metric": {...best validation...}, "stage": ..., "medsr_version": "0.1.0",
     "state_dict": {...fp16 or fp32 tensors...}}

The network is rebuilt from the file alone (every medsr generator records its constructor arguments in
``init_args``), so inference needs no width overrides. A training checkpoint
(:mod:`medsr.pipeline.engines.checkpoint`) carries the same description of its generator (:func:`model_info`),
so everything here that reads a description (:func:`read_model_info`, :func:`load_generator`,
:func:`checkpoint_overrides`) reads both.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsr.pipeline.bundles import BUNDLES_DIR
from medsr.pipeline.errors import MedsrError
from medsr.pipeline.io import atomic_open, sha256_of

__all__ = [
    "MODEL_FORMAT",
    "MODEL_SUFFIX",
    "NORMALIZATION",
    "network_spec",
    "model_info",
    "model_payload",
    "build_network",
    "read_file",
    "save_model",
    "load_model",
    "read_model_info",
    "checkpoint_overrides",
    "load_generator",
    "shipped_models",
    "pick_model",
    "find_model",
    "export_bundle_model",
    "init_network",
    "sha256_of",
    "get_device",
]

MODEL_FORMAT = "medsr-model/1"
MODEL_SUFFIX = ".pt"
#: how the bundles normalise inputs (``PercentileNormalized`` in ``bundles/common/{data,inference}.json``)
NORMALIZATION = {
    "transform": "medsr.transforms.PercentileNormalize",
    "lower": 0.5,
    "upper": 99.5,
    "value_range": [0.0, 1.0],
}
#: entries of a model file or checkpoint that are weights or training state, not its description
_NOT_DESCRIPTION = ("state_dict", "heads", "objects", "rng", "engine")
logger = logging.getLogger(__name__)


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` if given, else CUDA when present, else CPU.

    Args:
        device: ``None``/``"auto"`` to pick, or anything ``torch.device`` accepts.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = "has no CUDA support" if torch.version.cuda is None else "sees no CUDA device"
        raise ValueError(f"--device {device}: this PyTorch ({torch.__version__}) {why}; use --device cpu")
    return dev


def _unwrap(network: nn.Module) -> nn.Module:
    from medsr.pipeline.engines.common import unwrap_model

    return unwrap_model(network)


def network_spec(network: nn.Module | None) -> dict | None:
    """``{"target": "medsr.networks.<Class>", "args": network.init_args}``, or ``None`` when the network
    does not record its constructor arguments (every medsr generator does)."""
    if network is None:
        return None
    net = _unwrap(network)
    args = getattr(net, "init_args", None)
    if not isinstance(args, dict):
        return None
    cls = type(net)
    import medsr.networks

    public = getattr(medsr.networks, cls.__name__, None) is cls
    target = f"medsr.networks.{cls.__name__}" if public else f"{cls.__module__}.{cls.__qualname__}"
    return {"target": target, "args": dict(args)}


def model_info(network: nn.Module | None, normalization: dict | None = None) -> dict:
    """What a model file or checkpoint says about its generator: ``network`` spec, ``scale``, ``spatial_dims``,
    ``in_channels``, ``out_channels``, ``normalization`` and ``medsr_version`` (empty without a network)."""
    spec = network_spec(network)
    if spec is None:
        return {}
    import medsr.pipeline

    net = _unwrap(network)
    return {
        "network": spec,
        "scale": [int(f) for f in getattr(net, "scale_factor", ())],
        "spatial_dims": int(getattr(net, "spatial_dims", spec["args"].get("spatial_dims", 2))),
        "in_channels": int(getattr(net, "in_channels", spec["args"].get("in_channels", 1))),
        "out_channels": int(getattr(net, "out_channels", spec["args"].get("out_channels", 1))),
        "normalization": dict(normalization or NORMALIZATION),
        "medsr_version": medsr.pipeline.__version__,
    }


def model_payload(network: nn.Module, info: Mapping[str, Any] | None = None, half: bool = False) -> dict:
    """A model file's content: ``{"format": "medsr-model/1", **model_info, **info, "state_dict"}``.

    Args:
        network: the generator (DDP wrappers are unwrapped).
        info: what else to record (``name``, ``metric``, ``degradation``, ...); its ``normalization``,
            ``spatial_dims`` and ``scale`` replace the network's.
        half: store floating-point weights as float16 (loaded back as float32).
    """
    net = _unwrap(network)
    info = dict(info or {})
    state = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in net.state_dict().items()
    }
    record = {"format": MODEL_FORMAT, **model_info(net, info.get("normalization")), **info, "state_dict": state}
    if "scale" in info:
        record["scale"] = [int(s) for s in info["scale"]]
    return record


def build_network(spec: dict) -> nn.Module:
    """Build the network a model file describes (``{"target": "medsr.networks.X", "args": {...}}``).

    Only ``medsr.`` targets are built (a model file never imports other code).
    """
    target = str(spec.get("target", ""))
    if not target.startswith("medsr.") or "." not in target:
        raise ValueError(f"network target {target!r}: only medsr networks are built from a checkpoint")
    module, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    if cls is None:
        raise ValueError(f"network target {target!r}: no such class")
    return cls(**dict(spec.get("args") or {}))


def read_file(path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of a model file, checkpoint or state dict; an unreadable file is one
    ``ValueError`` naming it (``what`` says what the file was meant to be)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, not a torch file, or not plain data
        raise MedsrError(
            f"{what} '{path}' could not be read ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
            "the file is truncated or not a PyTorch checkpoint: pick another checkpoint"
        ) from e


def save_model(
    network: nn.Module, path: str | os.PathLike, info: Mapping[str, Any] | None = None, half: bool = True
) -> Path:
    """Write a model file atomically (:func:`model_payload`); returns its path.

    Args:
        network: a medsr generator (its weights and ``init_args`` are stored).
        path: the file, e.g. ``bundles/rdn/models/model.pt`` or a run's ``checkpoints/best_network.pt``.
        info: any of ``name``, ``bundle``, ``degradation``, ``trained_on``, ``training_command``, ``metrics``,
            ``metric``, ``stage``, ``normalization`` (default: percentile 0.5/99.5); a shipped model has a ``name``.
        half: store floating-point weights as float16 (loaded back as float32).
    """
    if network_spec(network) is None:
        raise ValueError(f"{type(_unwrap(network)).__name__}: not a medsr generator (no recorded init_args)")
    record = model_payload(network, info, half=half)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(record, f)
    return path


def _model_record(path: str | os.PathLike) -> dict[str, Any]:
    """The content of a model file; anything else is a ``ValueError`` naming it."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model '{p}': no such file")
    record = read_file(p, "model")
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise MedsrError(f"model '{p}': not a medsr model file (no format {MODEL_FORMAT!r}; a training checkpoint?)")
    return record


def read_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """The description of a model file or checkpoint, without its weights, plus ``path``.

    ``path`` is a model file, a training checkpoint, a plain state dict, or a folder (searched with
    :func:`~medsr.pipeline.engines.checkpoint.find_checkpoint`). A file that does not describe its network (a
    plain state dict) gives only ``path``.
    """
    from medsr.pipeline.engines.checkpoint import find_checkpoint

    file = find_checkpoint(path)
    record = read_file(file)
    spec = record.get("network") if isinstance(record, dict) else None
    if not isinstance(spec, dict) or "target" not in spec:
        return {"path": file}
    info = {k: v for k, v in record.items() if k not in _NOT_DESCRIPTION}
    info["path"] = file
    return info


def checkpoint_overrides(info: Mapping[str, Any], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The bundle overrides a checkpoint's description (:func:`read_model_info`) implies: ``spatial_dims``,
    ``scale`` and ``in_channels``, except those already ``given``; empty when it records no scale."""
    given = given or {}
    if not info.get("scale"):
        return {}
    out: dict[str, Any] = {}
    if "spatial_dims" not in given:
        out["spatial_dims"] = int(info["spatial_dims"])
    if "scale" not in given:
        out["scale"] = [int(f) for f in info["scale"]]
    if "in_channels" not in given and "in_channels" in info:
        out["in_channels"] = int(info["in_channels"])
    return out


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a model file, load its weights (float32) and put it in eval mode.

    Returns:
        ``(network, info)`` where ``info`` is the file's description (without the weights) plus ``path``.
    """
    record = _model_record(path)
    network = build_network(record["network"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in record["state_dict"].items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"model '{path}': weights do not fit its network ({first})") from None
    info = {k: v for k, v in record.items() if k not in _NOT_DESCRIPTION}
    info["path"] = str(path)
    return network.to(device).eval(), info


def load_generator(
    network: nn.Module, checkpoint: str | os.PathLike | None, use_ema: bool = False, require_ema: bool = False
) -> nn.Module:
    """Load generator weights into ``network`` from a checkpoint file or run folder; return the network.

    When the checkpoint describes its network (:func:`model_info`) and that differs from ``network`` (other
    widths, another class), the network is rebuilt from the checkpoint: the file is the truth, so a run
    trained with non-default widths needs no overrides at inference. ``checkpoint`` is a file (model file,
    medsr checkpoint, MONAI ``CheckpointSaver`` file or plain state dict) or a folder searched with
    :func:`~medsr.pipeline.engines.checkpoint.find_checkpoint`; the loading itself is
    :func:`~medsr.pipeline.engines.checkpoint.load_generator_weights`. ``None`` or ``""`` returns the network
    untouched (random weights: tests and dry runs). ``use_ema``/``require_ema``: as in
    :func:`~medsr.pipeline.engines.checkpoint.load_generator_weights`.
    """
    from medsr.pipeline.engines.checkpoint import find_checkpoint, load_generator_weights

    if checkpoint is None or str(checkpoint) == "":
        return network
    path = find_checkpoint(checkpoint)
    spec = read_model_info(path).get("network")
    if spec is not None and spec != network_spec(network):
        ours = network_spec(network) or {}
        if ours and ours.get("target") == spec["target"]:
            diff = {k: v for k, v in spec["args"].items() if ours["args"].get(k) != v}
            logger.info(f"checkpoint '{path}' records {spec['target']} with {diff}: built from the checkpoint")
        else:
            logger.info(f"checkpoint '{path}' records {spec['target']}: built from the checkpoint")
        param = next(iter(network.parameters()), None)
        network = build_network(spec)
        if param is not None:
            network = network.to(param.device)
    return load_generator_weights(network, path, use_ema=use_ema, require_ema=require_ema)


def shipped_models(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every model file under ``<root>/*/models/*.pt`` (default: the repository's ``bundles/``), described by
    :func:`read_model_info` plus its ``sha256``, sorted by name. Files with a ``role`` other than an upscale model
    (``"prior"``: selfsr's starting network, :mod:`medsr.pipeline.selfsr.prior`) are not listed."""
    base = Path(root) if root is not None else BUNDLES_DIR
    out = []
    for path in sorted(base.glob(f"*/models/*{MODEL_SUFFIX}")):
        info = {k: v for k, v in _model_record(path).items() if k not in _NOT_DESCRIPTION}
        if info.get("role", "upscale") != "upscale":
            continue
        info["path"] = str(path)
        info["sha256"] = sha256_of(path)
        out.append(info)
    return sorted(out, key=lambda m: m["name"])


def find_model(name_or_path: str | os.PathLike) -> str:
    """A model file: ``name_or_path`` itself when it is a file, else the shipped model of that name.

    Raises:
        ValueError: listing the shipped models when there is no such file or name.
    """
    if Path(name_or_path).is_file():
        return str(name_or_path)
    models = shipped_models()
    for m in models:
        if m["name"] == str(name_or_path):
            return m["path"]
    names = ", ".join(m["name"] for m in models) or "none"
    raise ValueError(f"--model {str(name_or_path)!r}: no such file or shipped model; shipped: {names}")


def _scale_tuple(scale: Any, spatial_dims: int) -> tuple[int, ...]:
    from medsr.transforms.geometry import parse_scale

    return tuple(int(s) for s in parse_scale(scale, spatial_dims))


def pick_model(
    spatial_dims: int,
    scale: Any = 2,
    name: str | None = None,
    models: Sequence[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Choose a shipped model for an input with ``spatial_dims`` spatial axes and the wanted ``scale``.

    * ``name`` given: that model (a 2D model on a 3D input runs slice by slice).
    * A 2D input: the 2D model with scale ``(s, s)``.
    * A 3D input and a per-axis scale such as ``(1, 1, 4)``: the 3D model with that scale; a 3D input and a
      single factor ``s``: the 2D model with ``(s, s)``, run slice by slice across the thickest axis.
    * GAN-stage models (``"gan": true``) are only used when named.
    * When several models fit, one exported as the default (``"default": true``, ``medsr models export
      --default``) is preferred; then one trained on the realistic mix (``"degradation": "realistic"``: bicubic, PSFs,
      noise; the defaults that are measured out of distribution) is preferred, then one trained on both
      degradations (``"mixed"``).

    Returns:
        ``(model info, slice_wise)``.

    Raises:
        ValueError: naming what was asked and listing the shipped models.
    """
    models = list(shipped_models() if models is None else models)
    listing = ", ".join(f"{m['name']} ({m['spatial_dims']}D x{'x'.join(map(str, m['scale']))})" for m in models)
    if name is not None:
        for m in models:
            if m["name"] == name:
                if m["spatial_dims"] > spatial_dims:
                    raise ValueError(
                        f"--model {name}: a {m['spatial_dims']}D model cannot upscale a {spatial_dims}D image"
                    )
                return m, m["spatial_dims"] < spatial_dims
        raise ValueError(f"--model {name!r}: no such shipped model; shipped: {listing or 'none'}")
    factors = scale if isinstance(scale, (tuple, list)) else None
    if isinstance(scale, str) and scale.strip().startswith(("(", "[")):
        factors = _scale_tuple(scale, 3 if scale.count(",") == 2 else 2)
    preference = {"realistic": 0, "mixed": 1}
    pool = sorted(
        (m for m in models if not m.get("gan")),
        key=lambda m: (not m.get("default"), preference.get(m.get("degradation"), 2)),
    )
    if factors is not None and len(factors) == 3:
        if spatial_dims != 3:
            raise ValueError(
                f"--scale {tuple(factors)}: a per-axis 3D scale needs a 3D input, got a {spatial_dims}D image"
            )
        for m in pool:
            if m["spatial_dims"] == 3 and tuple(m["scale"]) == tuple(int(f) for f in factors):
                return m, False
        raise ValueError(f"--scale {tuple(factors)}: no shipped 3D model with that scale; shipped: {listing or 'none'}")
    s = int(factors[0]) if factors is not None else int(scale)
    if factors is not None and len(set(int(f) for f in factors)) != 1:
        raise ValueError(f"--scale {tuple(factors)}: 2D models upscale both in-plane axes by one factor")
    for m in pool:
        if m["spatial_dims"] == 2 and tuple(m["scale"]) == (s, s):
            return m, spatial_dims == 3
    raise ValueError(f"--scale {s}: no shipped 2D model for x{s}; shipped: {listing or 'none'}")


def export_bundle_model(
    bundle: str,
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    name: str,
    overrides: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    half: bool = True,
    use_ema: bool = False,
) -> Path:
    """Package a bundle's trained generator as a self-describing model file.

    The network is built from ``bundles/<bundle>/train.json`` with the training run's ``overrides`` (widths,
    scale, dims, ``residual_interp``...), its weights loaded from ``checkpoint`` (a medsr checkpoint, a
    ``best_network.pt`` or a folder, see :func:`load_generator`); ``use_ema``: the EMA of the weights a medsr
    checkpoint holds (an error naming the file when it has none).
    """
    from monai.bundle import ConfigParser

    from medsr.pipeline.bundles import bundle_dir, inline_references
    from medsr.pipeline.literals import config_overrides

    parser = ConfigParser()
    parser.read_config(inline_references(json.loads((bundle_dir(bundle) / "train.json").read_text(encoding="utf-8"))))
    for key, value in config_overrides(overrides or {}).items():  # user text as literals, never expressions
        parser[key] = value
    network = parser.get_parsed_content("network_def", instantiate=True)
    # the checkpoint may rebuild it (its recorded widths win); a file without EMA weights is an error with --ema
    network = load_generator(network, checkpoint, use_ema=use_ema, require_ema=use_ema)
    record = {
        "name": name,
        "bundle": bundle,
        "spatial_dims": int(network.spatial_dims),
        "scale": list(network.scale_factor),
        "degradation": parser.get_parsed_content("degradation"),
        **(info or {}),
    }
    return save_model(network, output, record, half=half)


def init_network(network: nn.Module, weights: str | os.PathLike | None = None) -> nn.Module:
    """The network a training run starts from (bundle key ``init_weights``).

    ``None``: ``network`` as configured (random initialisation). A medsr model file (``models/model.pt``):
    the network it describes, with its weights, so fine-tuning a shipped model needs no width overrides (a
    warning names any configured argument that differs). Any other checkpoint: its weights loaded into
    ``network`` (:func:`load_generator`).
    """
    if weights is None or str(weights) == "":
        return network
    try:
        record_net, info = load_model(weights)
    except ValueError as exc:
        if "not a medsr model file" not in str(exc):
            raise
        return load_generator(network, weights)
    configured = getattr(network, "init_args", {})
    differ = {k: (configured[k], v) for k, v in record_net.init_args.items() if k in configured and configured[k] != v}
    if differ:
        import warnings

        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differ.items())
        warnings.warn(
            f"init_weights '{weights}': the model's architecture replaces the configured one ({listed})", stacklevel=2
        )
    return record_net.train()
