"""medsr's model zoo: self-describing model files, the shipped models in ``bundles/<name>/models/``, and
choosing one for an input.

A model file (``models/model.pt`` in MONAI's model-zoo convention) is a ``torch.save`` of plain types and
tensors, so ``torch.load(weights_only=True)`` reads it::

    {"format": "medsr-model/1",
     "name": "rdn_x2", "bundle": "rdn",
     "network": {"target": "medsr.networks.RDN", "args": {...constructor arguments...}},
     "spatial_dims": 2, "scale": [2, 2],
     "normalization": {"transform": "medsr.transforms.PercentileNormalize", "lower": 0.5, "upper": 99.5, ...},
     "degradation": "bicubic", "trained_on": "...", "training_command": "...",
     "metrics": {...}, "medsr_version": "0.1.0",
     "state_dict": {...fp16 or fp32 tensors...}}

The network is rebuilt from the file alone (every medsr generator records its constructor arguments in
``init_args``), so inference needs no width overrides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsr.pipeline.commands import BUNDLES_DIR
from medsr.pipeline.engines.checkpoint import build_network, model_info, network_spec
from medsr.pipeline.io import atomic_path, sha256_of

__all__ = [
    "MODEL_FORMAT",
    "MODEL_SUFFIX",
    "save_model",
    "load_model",
    "read_model_info",
    "build_network",
    "shipped_models",
    "pick_model",
    "find_model",
    "export_bundle_model",
    "init_network",
    "sha256_of",
]

MODEL_FORMAT = "medsr-model/1"
MODEL_SUFFIX = ".pt"


def save_model(network: nn.Module, path: str | os.PathLike, info: dict[str, Any], half: bool = True) -> Path:
    """Write a self-describing model file atomically; returns its path.

    Args:
        network: a medsr generator (its weights and ``init_args`` are stored).
        path: the file, e.g. ``bundles/rdn/models/model.pt``.
        info: ``name``, ``spatial_dims``, ``scale`` and any of ``bundle``, ``degradation``, ``trained_on``,
            ``training_command``, ``metrics``, ``normalization`` (default: percentile 0.5/99.5).
        half: store floating-point weights as float16 (loaded back as float32).
    """
    for key in ("name", "spatial_dims", "scale"):
        if key not in info:
            raise ValueError(f"save_model: info needs {key!r}")
    state = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in network.state_dict().items()
    }
    if network_spec(network) is None:
        raise ValueError(f"{type(network).__name__}: not a medsr generator (no recorded init_args)")
    record = {
        "format": MODEL_FORMAT,
        **model_info(network, info.get("normalization")),
        **info,
        "scale": [int(s) for s in info["scale"]],
        "state_dict": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return path


def _load_record(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model '{p}': no such file")
    try:
        record = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise ValueError(f"model '{p}': cannot be read as a medsr model ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise ValueError(f"model '{p}': not a medsr model file (no format {MODEL_FORMAT!r}; a training checkpoint?)")
    return record


def read_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """The model file's description without its weights (plus ``path``)."""
    info = {k: v for k, v in _load_record(path).items() if k != "state_dict"}
    info["path"] = str(path)
    return info


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a model file, load its weights (float32) and put it in eval mode.

    Returns:
        ``(network, info)`` where ``info`` is the file's description (without the weights) plus ``path``.
    """
    record = _load_record(path)
    network = build_network(record["network"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in record["state_dict"].items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"model '{path}': weights do not fit its network ({first})") from None
    info = {k: v for k, v in record.items() if k != "state_dict"}
    info["path"] = str(path)
    return network.to(device).eval(), info


def shipped_models(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every model file under ``<root>/*/models/*.pt`` (default: the repository's ``bundles/``), described by
    :func:`read_model_info` plus its ``sha256``, sorted by name."""
    base = Path(root) if root is not None else BUNDLES_DIR
    out = []
    for path in sorted(base.glob(f"*/models/*{MODEL_SUFFIX}")):
        info = read_model_info(path)
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
    * When several models fit, one trained on the realistic mix (``"degradation": "realistic"``: bicubic, PSFs,
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
    pool = sorted((m for m in models if not m.get("gan")), key=lambda m: preference.get(m.get("degradation"), 2))
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
) -> Path:
    """Package a bundle's trained generator as a self-describing model file.

    The network is built from ``bundles/<bundle>/train.json`` with the training run's ``overrides`` (widths,
    scale, dims, ``residual_interp``...), its weights loaded from ``checkpoint`` (a medsr checkpoint, a
    ``best_network.pt`` or a folder, see :func:`medsr.pipeline.engines.checkpoint.load_generator`).
    """
    from monai.bundle import ConfigParser

    from medsr.pipeline.commands import bundle_dir
    from medsr.pipeline.engines.checkpoint import load_generator

    parser = ConfigParser()
    parser.read_config(str(bundle_dir(bundle) / "train.json"))
    for key, value in (overrides or {}).items():
        parser[key] = value
    network = parser.get_parsed_content("network_def", instantiate=True)
    network = load_generator(network, checkpoint)  # the checkpoint may rebuild it (its recorded widths win)
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
    ``network`` (:func:`medsr.pipeline.engines.checkpoint.load_generator`).
    """
    if weights is None or str(weights) == "":
        return network
    try:
        record_net, info = load_model(weights)
    except ValueError as exc:
        if "not a medsr model file" not in str(exc):
            raise
        from medsr.pipeline.engines.checkpoint import load_generator

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
