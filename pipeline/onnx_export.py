"""ONNX export of a medsr model (``medsr models export-onnx NAME OUT.onnx``), checked against PyTorch.

The exported graph takes one normalized LR image ``lr`` (``1, C, *spatial``, any spatial size) and returns
``sr`` (``1, C, *(spatial * scale)``). The model's description (name, scale,
dimension, the input normalization to apply before and invert after, the SHA-256 of the model file) is in the
ONNX ``metadata_props`` under ``medsr``. Needs the optional ``onnx`` package (``pip install "medsr[onnx]"``);
the check runs the file with onnxruntime when installed, else with ONNX's reference evaluator.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["export_onnx", "run_onnx"]

#: the ONNX operator set written (opset 17 is read by onnxruntime >= 1.13 and every current runtime)
OPSET = 17


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ValueError(
            'medsr models export-onnx: needs the onnx package (pip install "medsr[onnx]", or pip install onnx)'
        ) from None
    return onnx


def run_onnx(path: str | os.PathLike, lr: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Run the exported file on ``lr``; returns the output and what ran it (``onnxruntime`` or ``onnx.reference``)."""
    feed = {"lr": lr.detach().cpu().float().numpy()}
    try:
        import onnxruntime
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        return torch.from_numpy(ReferenceEvaluator(str(path)).run(None, feed)[0]), "onnx.reference"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, feed)[0]), f"onnxruntime {onnxruntime.__version__}"


def export_onnx(
    model: str | os.PathLike, output: str | os.PathLike, check: bool = True, tolerance: float = 1e-4
) -> dict[str, Any]:
    """Export a shipped model (by name) or a model file to ONNX, atomically.

    With ``check``, the file is run on an input of another size than the traced one and compared with the
    PyTorch network before it is moved into place.

    Returns:
        ``output``, ``model`` (name), ``scale``, ``spatial_dims``, and with ``check`` the ``max_abs_diff``
        and what ran the file (``checked_with``).

    Raises:
        ValueError: no onnx package, an unknown model, or an export that differs from PyTorch by more than
            ``tolerance`` (in the normalized 0..1 intensity range).
    """
    onnx = _onnx()
    from medsr.pipeline.io import atomic_path, sha256_of
    from medsr.pipeline.models import find_model, load_model

    path = find_model(model)
    network, info = load_model(path)
    sd = int(info["spatial_dims"])
    channels = int(info.get("in_channels", 1))
    # spatial axes are dynamic; the batch is one image (an attention block that scales the last convolution's
    # weights per image, as in esrgan_se, has no ONNX form for a dynamic batch)
    axes = {"lr": {2 + a: f"lr_{a}" for a in range(sd)}, "sr": {2 + a: f"sr_{a}" for a in range(sd)}}
    example = torch.rand(1, channels, *((24,) * sd))
    description = {
        k: info[k] for k in ("name", "bundle", "scale", "spatial_dims", "normalization", "degradation") if k in info
    }
    description["model_sha256"] = sha256_of(path)
    record: dict[str, Any] = {
        "output": str(output),
        "model": info.get("name", str(model)),
        "scale": info["scale"],
        "spatial_dims": sd,
    }
    output = Path(output)
    with atomic_path(output) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
            try:
                torch.onnx.export(
                    network, (example,), str(tmp), input_names=["lr"], output_names=["sr"], dynamic_axes=axes,
                    opset_version=OPSET, dynamo=False,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the exporter's messages run to pages: keep the first line
                first = " ".join(str(exc).split())[:300]
                raise ValueError(f"model '{path}': ONNX export failed ({type(exc).__name__}: {first})") from exc
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "medsr", json.dumps(description, default=str)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        if check:
            lr = torch.rand(1, channels, *(13 + 3 * a for a in range(sd)))  # not the traced size
            with torch.no_grad():
                want = network(lr)
            got, runner = run_onnx(tmp, lr)
            if tuple(got.shape) != tuple(want.shape):
                raise ValueError(f"{output}: ONNX output shape {tuple(got.shape)}, PyTorch {tuple(want.shape)}")
            diff = float((got - want).abs().max())
            if diff > tolerance:
                raise ValueError(f"{output}: ONNX output differs from PyTorch by {diff:.2e} (> {tolerance:g})")
            record.update(max_abs_diff=diff, checked_with=runner)
    return record
