"""One clear line per error, printed once, at the user's entry points.

Entry points are ``medsr …`` (:func:`run_command`, called by :mod:`medsr.pipeline.cli`) and
``python -m monai.bundle run …`` through the medsr configs (:func:`install_excepthook`, installed when a config
imports :mod:`medsr.pipeline.bundle`). Both print :func:`format_error`: the message of the error the user
should see (:func:`user_error`), found by exception type along the ``__cause__``/``__context__`` chain:

1. the outermost :class:`MedsrError`: medsr's errors name the file or argument and what to do
   (:class:`~medsr.pipeline.data.ImageReadError`, :class:`~medsr.pipeline.engines.checkpoint.NetworkMismatchError`,
   the override and output checks, ...);
2. else the outermost error that is not a bare ``RuntimeError`` raised from another one, the type MONAI wraps
   errors in (``Failed to evaluate ConfigExpression``, ``applying transform …``).

Nothing here touches logging: MONAI's ``StatsHandler`` logs an error's traceback before re-raising it, so the
bundles use :class:`medsr.pipeline.handlers.QuietStatsHandler`, which only re-raises. The full traceback
comes back with ``--debug`` (``medsr --debug …``) or ``MEDSR_DEBUG=1``. Standard library only: importing this
module is cheap.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "MedsrError",
    "DEBUG_ENV",
    "truthy",
    "debug_enabled",
    "error_chain",
    "user_error",
    "format_error",
    "name_files",
    "exit_code",
    "run_command",
    "in_monai_bundle",
    "install_excepthook",
]

DEBUG_ENV = "MEDSR_DEBUG"
_TRUE = ("1", "true", "yes", "on")


class MedsrError(ValueError):
    """A user-facing error: its message is the one line shown (the file or argument, what is wrong, what to do).

    A ``ValueError``, so code that catches ``ValueError`` keeps working. ``exit_code`` is what ``medsr`` exits
    with (2: the input does not fit, as argparse's usage errors; 1: it failed).
    """

    exit_code = 1


def truthy(value: Any) -> bool:
    """``1``/``true``/``yes``/``on`` (any case) as true, anything else as false."""
    return value is True or str(value).strip().lower() in _TRUE


def debug_enabled(argv: Sequence[str] | None = None) -> bool:
    """True when ``MEDSR_DEBUG`` is set (``1``/``true``) or ``--debug`` is on the command line."""
    if truthy(os.environ.get(DEBUG_ENV, "")):
        return True
    args = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(args):
        if a == "--debug":
            nxt = args[i + 1] if i + 1 < len(args) else ""
            return nxt.startswith("-") or nxt == "" or nxt.lower() not in ("0", "false", "no", "off")
        if a.startswith("--debug="):
            return truthy(a.split("=", 1)[1])
    return False


def error_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first (``__cause__``, else ``__context__``)."""
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ if cur.__cause__ is not None else (None if cur.__suppress_context__ else cur.__context__)
    return out


def user_error(exc: BaseException) -> BaseException:
    """The exception whose message the user should see: the outermost :class:`MedsrError` of the chain, else
    the outermost one that is not a library's bare ``RuntimeError`` wrapper (see the module docstring)."""
    chain = error_chain(exc)
    for e in chain:
        if isinstance(e, MedsrError):
            return e
    for e in chain[:-1]:
        if type(e) is not RuntimeError:
            return e
    return chain[-1]


def name_files(exc: BaseException, files: Sequence[str], what: str = "datalist item") -> BaseException:
    """``exc`` itself when its message already names one of ``files``, else a :class:`MedsrError` that does."""
    if not files:
        return exc
    inner = user_error(exc)
    msg = " ".join(str(inner.args[0] if isinstance(inner, KeyError) and inner.args else inner).split())
    if any(f in msg or Path(f).name in msg for f in files):
        return exc
    kind = "" if type(inner) is ValueError or isinstance(inner, MedsrError) else f"{type(inner).__name__}: "
    return MedsrError(f"{what} {', '.join(repr(f) for f in files)}: {kind}{msg}")


def format_error(exc: BaseException, hint: str | None = None) -> str:
    """One line for ``exc``: the message of :func:`user_error`, its type named when it is not self-explaining."""
    err = user_error(exc)
    msg = str(err.args[0]) if isinstance(err, KeyError) and len(err.args) == 1 else str(err)
    msg = " ".join(msg.split()) or "(no message)"
    if type(err) not in (ValueError, KeyError) and not isinstance(err, (MedsrError, OSError)):
        msg = f"{type(err).__name__}: {msg}"
    return f"error: {msg}" + (f" [{hint}]" if hint else "")


def exit_code(exc: BaseException) -> int:
    """``medsr``'s exit status for ``exc``: the :class:`MedsrError`'s ``exit_code``, 2 for a missing file, else 1."""
    err = user_error(exc)
    if isinstance(err, MedsrError):
        return err.exit_code
    return 2 if isinstance(err, FileNotFoundError) else 1


def run_command(func: Any, args: Any, prog: str = "medsr", debug: bool | None = None) -> int:
    """Run a sub-command; on an error print one line to stderr and return :func:`exit_code` (with ``--debug``
    the traceback first)."""
    debug = debug_enabled([]) if debug is None else debug
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the entry point: every error becomes one line
        if debug:
            traceback.print_exception(exc)
        sys.stdout.flush()
        print(f"{prog}: {format_error(exc, None if debug else '--debug for the traceback')}", file=sys.stderr)
        return exit_code(exc)


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if debug_enabled() or not isinstance(exc, Exception):
        sys.__excepthook__(exc_type, exc, tb)
        return
    sys.stdout.flush()
    print(f"medsr: {format_error(exc, f'{DEBUG_ENV}=1 for the traceback')}", file=sys.stderr)


def in_monai_bundle() -> bool:
    """True when this process is ``python -m monai.bundle …`` (also under torchrun)."""
    parts = Path(sys.argv[0] if sys.argv else "").parts
    return tuple(parts[-2:]) == ("bundle", "__main__.py") and "monai" in parts[-3:-2]


def install_excepthook(force: bool = False) -> bool:
    """Print uncaught errors as one line (``MEDSR_DEBUG=1`` keeps tracebacks); only under ``python -m monai.bundle``.

    Called when a bundle config imports :mod:`medsr.pipeline.bundle`. Returns whether the hook is installed.
    """
    if not (force or in_monai_bundle()):
        return False
    sys.excepthook = _excepthook
    return True
