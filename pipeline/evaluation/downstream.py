"""Downstream check (colonoscopy study): does SR restore a classifier's accuracy lost to low resolution?

``downstream_accuracy(classifier, cases, labels)`` classifies HR, SR and each interpolation baseline of every
case with the same classifier and returns the accuracy per image source.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medsr.pipeline.evaluation.baselines import upsample
from medsr.pipeline.metrics._core import as_plain, check_finite

__all__ = ["downstream_accuracy", "load_classifier"]


def load_classifier(
    checkpoint: str | os.PathLike,
    network: str | type[nn.Module] | Callable[..., nn.Module],
    network_kwargs: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> nn.Module:
    """Build ``network`` and load ``checkpoint`` into it (a medsr checkpoint, MONAI CheckpointSaver file or state dict).

    Args:
        checkpoint: weights file.
        network: a name registered in :func:`medsr.networks.get_network`, a name in ``monai.networks.nets``, a
            dotted path ``"package.module.Class"``, or a class/factory.
        network_kwargs: constructor arguments.
        key: checkpoint entry holding the weights (default: the usual ``network``/``model``/... keys).
    """
    kwargs = dict(network_kwargs or {})
    if isinstance(network, str):
        model = _build_by_name(network, kwargs)
    elif callable(network):
        model = network(**kwargs)
    else:
        raise TypeError(f"network must be a name, a class or a factory, got {type(network).__name__}")
    from medsr.pipeline.engines.checkpoint import load_generator_weights

    return load_generator_weights(model, checkpoint, key=key)


def _build_by_name(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        from medsr.networks import get_network

        return get_network(name, **kwargs)
    except (ImportError, ValueError):
        pass
    import importlib

    import monai.networks.nets as nets

    if hasattr(nets, name):
        return getattr(nets, name)(**kwargs)
    if "." in name:
        mod, _, attr = name.rpartition(".")
        try:
            return getattr(importlib.import_module(mod), attr)(**kwargs)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"network {name!r}: cannot import it ({err})") from err
    raise ValueError(f"network {name!r} is neither a medsr network, a monai.networks.nets name nor a dotted path")


@torch.no_grad()
def downstream_accuracy(
    classifier: nn.Module | str | os.PathLike,
    cases: Sequence[Mapping[str, Any]],
    labels: Sequence[int],
    *,
    network: str | type[nn.Module] | Callable[..., nn.Module] | None = None,
    network_kwargs: Mapping[str, Any] | None = None,
    methods: Sequence[str] = ("hr", "sr", "nearest", "linear", "cubic"),
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Classification accuracy on HR, SR and baseline images of the same cases.

    Args:
        classifier: a module mapping ``(B, C, *S)`` to logits ``(B, K)`` (or ``(B,)`` / ``(B, 1)`` binary
            logits), or a checkpoint path (then ``network`` is required).
        cases: dicts with ``hr``, ``sr`` (HR grid) and ``lr`` (channel-first); baselines come from ``lr``.
        labels: the class index of each case.
        network: name/class of the classifier when ``classifier`` is a path (see :func:`load_classifier`).
        network_kwargs: its constructor arguments.
        methods: image sources: ``hr``, ``sr``, ``lr`` (only if the classifier accepts LR size) and any baseline
            mode of :func:`medsr.pipeline.evaluation.upsample`.
        preprocess: applied to each channel-first image before batching (e.g. the classifier's normalization).
        batch_size: images per forward pass.
        device: where the classifier runs.

    Returns:
        ``{"accuracy": {method: float}, "correct": {method: int}, "n": N, "predictions": {method: [int]}}``.
    """
    if len(cases) != len(labels):
        raise ValueError(f"labels has {len(labels)} entries but cases has {len(cases)}")
    if not cases:
        raise ValueError("cases is empty")
    if isinstance(classifier, (str, os.PathLike)):
        if network is None:
            raise ValueError("classifier is a checkpoint path: pass network (a name or class) to build it")
        classifier = load_classifier(classifier, network, network_kwargs)
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be an nn.Module or a checkpoint path, got {type(classifier).__name__}")
    model = classifier.to(device).eval()
    y = torch.as_tensor(list(labels), dtype=torch.long)
    acc, correct, preds = {}, {}, {}
    for method in methods:
        imgs = [_source(case, method, i) for i, case in enumerate(cases)]
        if preprocess is not None:
            imgs = [preprocess(im) for im in imgs]
        out = []
        for s in range(0, len(imgs), batch_size):
            logits = model(torch.stack(imgs[s : s + batch_size]).to(device))
            logits = logits[-1] if isinstance(logits, (list, tuple)) else logits
            logits = logits.float().cpu()
            if logits.ndim == 1 or logits.shape[-1] == 1:
                out.append((logits.reshape(-1) > 0).long())
            else:
                out.append(logits.argmax(dim=1))
        p = torch.cat(out)
        correct[method] = int((p == y).sum())
        acc[method] = correct[method] / len(cases)
        preds[method] = p.tolist()
    return {"accuracy": acc, "correct": correct, "n": len(cases), "predictions": preds}


def _source(case: Mapping[str, Any], method: str, i: int) -> torch.Tensor:
    if method in ("hr", "sr", "lr"):
        if case.get(method) is None:
            raise ValueError(f"case {i} has no {method!r} image")
        t = as_plain(case[method]).detach().cpu().to(torch.float32)
        check_finite(t, f"case {i} {method}")
        return t
    if case.get("lr") is None or case.get("hr") is None:
        raise ValueError(f"case {i}: baseline {method!r} needs 'lr' and 'hr' (for the output grid)")
    return upsample(case["lr"], tuple(case["hr"].shape[1:]), method)
