"""Export a trained generator for tracking: TorchScript and the MLflow PyTorch flavour, both offline."""

from __future__ import annotations

import copy
import logging
import os
import shutil
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


def save_pytorch_flavour(network: torch.nn.Module, example: torch.Tensor | None, folder: str | os.PathLike) -> Path:
    """Save ``network`` with ``mlflow.pytorch.save_model`` into ``folder`` (replaced if present).

    With an example input the model is saved in MLflow's safe ``pt2`` format (a ``torch.export`` graph at the
    example's shape; no pickle), else (or when export fails) as a pickle, which MLflow only loads with
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``. Requirements are given explicitly (no pip inference,
    nothing contacted). Load it with ``mlflow.pytorch.load_model(folder_or_runs_uri)``.
    """
    import mlflow.pytorch
    import monai
    from mlflow.models import infer_signature

    net = copy.deepcopy(network).cpu().eval()
    folder = Path(folder)
    signature = None
    if example is not None:
        x = example.detach().cpu().float()
        with torch.no_grad():
            y = net(x)
        signature = infer_signature(x.numpy(), torch.as_tensor(y).numpy())
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"monai=={monai.__version__}", "medsr"]
    if example is not None:
        try:  # the safe format: torch.export graph, no pickle (specialised to the example's shape)
            mlflow.pytorch.save_model(
                net,
                str(tmp),
                signature=signature,
                input_example=example.detach().cpu().float().numpy(),
                serialization_format="pt2",
                pip_requirements=requirements,
            )
        except Exception as err:  # noqa: BLE001 - a network torch.export cannot trace falls back to pickle
            logger.warning("torch.export of the network failed (%s); saving the MLflow model with pickle", err)
            shutil.rmtree(tmp, ignore_errors=True)
    if not tmp.exists():  # pickle: loading needs MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true
        mlflow.pytorch.save_model(
            net, str(tmp), signature=signature, serialization_format="pickle", pip_requirements=requirements
        )
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder
