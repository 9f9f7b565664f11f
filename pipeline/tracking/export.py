"""Export a trained generator for tracking: TorchScript and the MLflow PyTorch flavour, both offline."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch

from medsr.pipeline.io import atomic_path

logger = logging.getLogger(__name__)


def export_torchscript(network: torch.nn.Module, example: torch.Tensor | None, path: str | os.PathLike) -> Path:
    """Save ``network`` as TorchScript (scripted, else traced on ``example``) atomically; returns the path.

    The saved module's output on ``example`` is checked against the network's.

    Raises:
        ValueError: when the network can be neither scripted nor traced (tracing needs ``example``).
    """
    net = copy.deepcopy(network).cpu().eval()
    path = Path(path)
    try:
        module = torch.jit.script(net)
    except Exception as script_err:  # noqa: BLE001 - many modules do not script; tracing is the fallback
        if example is None:
            raise ValueError(
                f"torchscript '{path}': cannot script the network and no example to trace: {script_err}"
            ) from None
        with torch.no_grad():
            module = torch.jit.trace(net, example.detach().cpu().float(), check_trace=False)
    if example is not None:
        with torch.no_grad():
            x = example.detach().cpu().float()
            expected, got = net(x), module(x)
        if not torch.allclose(torch.as_tensor(expected), torch.as_tensor(got), atol=1e-4, rtol=1e-4):
            raise ValueError(f"torchscript '{path}': exported module disagrees with the network on the example")
    with atomic_path(path) as tmp:
        torch.jit.save(module, str(tmp))
    return path


def log_pytorch_model(network: torch.nn.Module, example: torch.Tensor | None, name: str = "model"):
    """Log ``network`` as a logged model of the active MLflow run (``mlflow.pytorch.log_model``); returns its info.

    With an example input the model is saved in MLflow's safe ``pt2`` format (a ``torch.export`` graph at the
    example's shape; no pickle), else (or when export fails) as a pickle, which MLflow only loads with
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``. The signature comes from the example (LR in, HR out) and the
    model's metadata holds the scale, dims and the network description (see
    :func:`medsr.pipeline.models.model_info`). Requirements are given explicitly (no pip
    inference, nothing contacted). Load it with ``mlflow.pytorch.load_model("models:/<model id>")``.
    """
    import mlflow.pytorch
    import monai
    from mlflow.models import infer_signature

    from medsr.pipeline.models import model_info

    net = copy.deepcopy(network).cpu().eval()
    info = model_info(net)
    metadata = {k: info[k] for k in ("scale", "spatial_dims", "in_channels", "out_channels", "network") if k in info}
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"monai=={monai.__version__}", "medsr"]
    common = {"name": name, "pip_requirements": requirements, "metadata": metadata or None}
    if example is not None:
        x = example.detach().cpu().float()
        with torch.no_grad():
            y = net(x)
        common["signature"] = infer_signature(x.numpy(), torch.as_tensor(y).numpy())
        try:  # the safe format: torch.export graph, no pickle (specialised to the example's shape)
            return mlflow.pytorch.log_model(net, input_example=x.numpy(), serialization_format="pt2", **common)
        except Exception as err:  # noqa: BLE001 - a network torch.export cannot trace falls back to pickle
            logger.warning("torch.export of the network failed (%s); logging the MLflow model with pickle", err)
    return mlflow.pytorch.log_model(net, serialization_format="pickle", **common)
