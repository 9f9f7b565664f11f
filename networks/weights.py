"""Loading published ESRGAN / BasicSR RRDBNet weights into :class:`medsr.networks.RRDBNet` (2D).

Three key layouts are recognised:

* BasicSR (``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
  ``conv_last``), often wrapped as ``{"params_ema": ...}`` or ``{"params": ...}``: identical to ours;
* the ESRGAN repository (``conv_first``, ``RRDB_trunk.N.RDB1.conv1``, ``trunk_conv``, ``upconv1``,
  ``upconv2``, ``HRconv``, ``conv_last``);
* the ESRGAN "old architecture" (``model.0``, ``model.1.sub.N.RDB1.conv1.0``, ``model.1.sub.{nb}``,
  ``model.3``, ``model.6``, ``model.8``, ``model.10``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from medsr.networks.features import load_torch_weights

__all__ = ["esrgan_key_map", "convert_esrgan_state_dict", "load_esrgan_state_dict"]

_NEW_ARCH = [
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$"), r"body.\1.rdb\2.conv\3.\4"),
    (re.compile(r"^trunk_conv\.(weight|bias)$"), r"conv_body.\1"),
    (re.compile(r"^upconv(\d+)\.(weight|bias)$"), r"conv_up\1.\2"),
    (re.compile(r"^HRconv\.(weight|bias)$"), r"conv_hr.\1"),
]
_OLD_SIMPLE = {"0": "conv_first", "3": "conv_up1", "6": "conv_up2", "8": "conv_hr", "10": "conv_last"}


def _unwrap(state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    for key in ("params_ema", "params", "state_dict"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            return state_dict[key]
    return state_dict


def esrgan_key_map(keys) -> dict[str, str]:
    """Map official ESRGAN/BasicSR RRDBNet key names to :class:`~medsr.networks.RRDBNet` names.

    Args:
        keys: the keys of an official state dict (any of the three layouts).

    Returns:
        ``{official_key: medsr_key}`` for every key.

    Raises:
        ValueError: naming the first key that belongs to none of the layouts.
    """
    keys = list(keys)
    mapping: dict[str, str] = {}
    old = any(k.startswith("model.") for k in keys)
    trunk_index = None
    if old:
        subs = [int(m.group(1)) for k in keys if (m := re.match(r"^model\.1\.sub\.(\d+)\.(weight|bias)$", k))]
        trunk_index = max(subs) if subs else None
    for k in keys:
        new = None
        if old:
            if m := re.match(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", k):
                new = f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"
            elif (m := re.match(r"^model\.1\.sub\.(\d+)\.(weight|bias)$", k)) and int(m.group(1)) == trunk_index:
                new = f"conv_body.{m.group(2)}"
            elif (m := re.match(r"^model\.(\d+)\.(weight|bias)$", k)) and m.group(1) in _OLD_SIMPLE:
                new = f"{_OLD_SIMPLE[m.group(1)]}.{m.group(2)}"
        else:
            for pattern, repl in _NEW_ARCH:
                if pattern.match(k):
                    new = pattern.sub(repl, k)
                    break
            else:
                if re.match(r"^(conv_first|conv_last|conv_body|conv_hr|conv_up\d+)\.(weight|bias)$", k) or re.match(
                    r"^body\.\d+\.rdb\d\.conv\d\.(weight|bias)$", k
                ):
                    new = k
        if new is None:
            raise ValueError(f"state dict key {k!r} is not an ESRGAN/BasicSR RRDBNet key")
        mapping[k] = new
    return mapping


def convert_esrgan_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``state_dict`` (any official layout, possibly wrapped in ``params_ema``) with medsr key names."""
    state_dict = _unwrap(state_dict)
    mapping = esrgan_key_map(state_dict.keys())
    return {mapping[k]: v for k, v in state_dict.items()}


def load_esrgan_state_dict(
    model: nn.Module, state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike, strict: bool = True
):
    """Load official ESRGAN/BasicSR RRDBNet weights into a 2D :class:`~medsr.networks.RRDBNet`.

    Args:
        model: a 2D ``RRDBNet`` whose configuration matches the weights (e.g. 64 features, 23 blocks,
            growth 32, x4, 3 channels for ``RRDB_ESRGAN_x4.pth``).
        state_dict_or_path: a state dict or the path of a ``.pth`` file (never downloaded).
        strict: require an exact key match (``False`` e.g. to initialise an ESRGAN-SE model, whose ``se_hr``
            replaces ``conv_hr``).

    Returns:
        ``torch.nn.modules.module._IncompatibleKeys`` with ``missing_keys`` and ``unexpected_keys``.

    Raises:
        FileNotFoundError: naming a missing path.
        ValueError: for foreign keys, or (with ``strict``) missing/unexpected keys or shape mismatches.
    """
    if isinstance(state_dict_or_path, str | os.PathLike):
        sd = load_torch_weights(state_dict_or_path)
        source = f"'{os.fspath(state_dict_or_path)}'"
    else:
        sd, source = state_dict_or_path, "state dict"
    converted = convert_esrgan_state_dict(sd)
    own = model.state_dict()
    for k, v in converted.items():
        if k in own and own[k].shape != v.shape:
            raise ValueError(
                f"ESRGAN weights {source}: {k} has shape {tuple(v.shape)} but the model expects {tuple(own[k].shape)} "
                "(check spatial_dims=2, num_features, growth_channels, channels and scale)"
            )
    if strict:
        missing = sorted(set(own) - set(converted))
        unexpected = sorted(set(converted) - set(own))
        if missing or unexpected:
            raise ValueError(f"ESRGAN weights {source}: missing keys {missing[:6]}, unexpected keys {unexpected[:6]}")
    return model.load_state_dict(converted, strict=strict)
