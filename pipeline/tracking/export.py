"""Export a trained generator for tracking: TorchScript and the MLflow PyTorch flavour, both offline."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from monai.networks.utils import convert_to_torchscript

from medsr.pipeline.io import atomic_path

logger = logging.getLogger(__name__)


def export_torchscript(network: torch.nn.Module, example: torch.Tensor | None, path: str | os.PathLike) -> Path:
    """Save ``network`` as TorchScript (scripted, else traced on ``example``) atomically; returns the path.

    MONAI's :func:`~monai.networks.utils.convert_to_torchscript` converts and saves; the saved module's output on
    ``example`` is checked against the network's here (MONAI's own ``verify`` re-seeds the global RNGs).

    Raises:
        ValueError: when the network can be neither scripted nor traced (tracing needs ``example``), or the
            exported module disagrees with the network on ``example`` (no file is written then).
    """
    net = copy.deepcopy(network).cpu().eval()
    path = Path(path)
    x = example.detach().cpu().float() if example is not None else None
    with atomic_path(path) as tmp:
        try:
            module = convert_to_torchscript(net, str(tmp))
        except Exception as script_err:  # noqa: BLE001 - many modules do not script; tracing is the fallback
            if x is None:
                raise ValueError(
                    f"torchscript '{path}': cannot script the network and no example to trace: {script_err}"
                ) from None
            module = convert_to_torchscript(net, str(tmp), use_trace=True, inputs=[x], check_trace=False)
        if x is not None:
            with torch.no_grad():
                expected, got = net(x), module(x)
            if not torch.allclose(torch.as_tensor(expected), torch.as_tensor(got), atol=1e-4, rtol=1e-4):
                raise ValueError(f"torchscript '{path}': exported module disagrees with the network on the example")
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
        # torch.export notes that the batch axis of the example is specialised: expected (the graph is traced at
        # one example shape, as the docstring says), and printed at the end of every tracked training otherwise
        export_log = logging.getLogger("torch._export.non_strict_utils")
        level = export_log.level
        export_log.setLevel(logging.ERROR)
        try:  # the safe format: torch.export graph, no pickle (specialised to the example's shape)
            return mlflow.pytorch.log_model(net, input_example=x.numpy(), serialization_format="pt2", **common)
        except Exception as err:  # noqa: BLE001 - a network torch.export cannot trace falls back to pickle
            logger.warning("torch.export of the network failed (%s); logging the MLflow model with pickle", err)
        finally:
            export_log.setLevel(level)
    return mlflow.pytorch.log_model(net, serialization_format="pickle", **common)
