"""User values reach MONAI configs as literals, never as expressions.

MONAI's :class:`~monai.bundle.ConfigParser` evaluates a string that starts with ``$`` as Python, resolves
``@id`` references and ``%file#id`` macros, and rewrites ``#``/``::`` in ids. A path, a name or a request
field that comes from a user, a datalist or a network request must therefore never be written into a
config as text. :func:`config_overrides` keeps every value that holds text in this process and puts a fixed
expression in its place that returns the value as given (:func:`value`); numbers and booleans pass as they
are. medsr's own expressions (written by medsr code, not by a user) are marked with :class:`Expression`.

Nothing here imports MONAI or torch.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["Expression", "config_overrides", "literal_expression", "restore_literals", "value"]

_VALUES: dict[int, Any] = {}
_LITERAL = re.compile(r"\$__import__\('medsr\.pipeline\.literals', fromlist=\['value'\]\)\.value\((\d+)\)")
_COUNTER = itertools.count()


class Expression(str):
    """A config expression written by medsr itself (``"$mb.get_device(...)"``): passed to the parser as it is."""


def _holds_text(obj: Any) -> bool:
    if isinstance(obj, str):
        return True
    if isinstance(obj, Mapping):
        return any(_holds_text(k) or _holds_text(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set)):
        return any(_holds_text(v) for v in obj)
    return not isinstance(obj, (int, float, bool, type(None)))


def literal_expression(obj: Any) -> str:
    """A Python expression (no leading ``$``) that returns a copy of ``obj``, kept in this process."""
    key = next(_COUNTER)
    _VALUES[key] = copy.deepcopy(obj)
    return f"__import__('medsr.pipeline.literals', fromlist=['value']).value({key})"


def restore_literals(obj: Any) -> Any:
    """``obj`` (a config or part of one) with each ``"$"`` + :func:`literal_expression` put back as the value it
    stands for, so a record of the run (executed config, tracked params) shows what the user gave."""
    if isinstance(obj, str):
        match = _LITERAL.fullmatch(obj.strip())
        return value(int(match.group(1))) if match and int(match.group(1)) in _VALUES else obj
    if isinstance(obj, Mapping):
        return {k: restore_literals(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(restore_literals(v) for v in obj)
    return obj


def value(key: int) -> Any:
    """The value that :func:`literal_expression` kept under ``key`` (a copy: configs may change it)."""
    return copy.deepcopy(_VALUES[key])


def config_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` made safe for a MONAI config: each value holding text becomes a literal expression.

    An :class:`Expression` is medsr's own and stays as it is; numbers, booleans and ``None`` pass unchanged.
    """
    out: dict[str, Any] = {}
    for key, obj in overrides.items():
        if isinstance(obj, Expression):
            out[key] = str(obj)
        elif _holds_text(obj):
            out[key] = "$" + literal_expression(obj)
        else:
            out[key] = obj
    return out
