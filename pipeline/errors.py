"""One clear line per error at the user's entry points, and checks that refuse bad input before any work.

Entry points are ``medsr …`` (:func:`run_command`, called by :mod:`medsr.pipeline.cli`) and
``python -m monai.bundle run …`` through the medsr configs (:func:`install_excepthook`, installed when a config
imports :mod:`medsr.pipeline.bundle`). Both print the one line that says what is wrong: the innermost error
that is not a framework wrapper (MONAI's ``RuntimeError: Failed to evaluate ConfigExpression``, ``applying
transform …``), which in medsr names the file or argument and what to do. The full traceback comes back with
``--debug`` (``medsr --debug …``) or ``MEDSR_DEBUG=1``.

Also here, because both entry points need them before any work starts:

* :func:`check_overrides`: an override key that no config defines is an error naming the closest known key
  (``--epoch_lenght`` -> ``epoch_length``), unless new keys are allowed (``--allow_new_keys true`` or
  ``MEDSR_ALLOW_NEW_KEYS=1``);
* :func:`check_outputs`: an output that is an input (same path, ``in/../in/x``, same inode) is refused, and
  an output's folder, suffix and type are checked before inference.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "MedsrError",
    "debug_enabled",
    "error_chain",
    "user_error",
    "format_error",
    "run_command",
    "install_excepthook",
    "check_overrides",
    "quiet_logging",
    "config_keys",
    "argv_overrides",
    "check_outputs",
    "item_files",
    "name_files",
    "NamedCompose",
    "DEBUG_ENV",
    "ALLOW_NEW_KEYS_ENV",
]

DEBUG_ENV = "MEDSR_DEBUG"
ALLOW_NEW_KEYS_ENV = "MEDSR_ALLOW_NEW_KEYS"
_TRUE = ("1", "true", "yes", "on")

#: message starts of exceptions that only wrap another one (MONAI config evaluation, transforms, workflows)
_WRAPPER_PREFIXES = (
    "Failed to evaluate",
    "Failed to instantiate",
    "applying transform",
    "Component to instantiate must represent a valid class",
)


class MedsrError(ValueError):
    """A user-facing error: its message is the one line shown (the file or argument, what is wrong, what to do).

    A ``ValueError``, so code that catches ``ValueError`` keeps working.
    """


_FALSE = ("false", "no", "off")  # text that means false but is truthy when a config uses it as a bool


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in _TRUE


def debug_enabled(argv: Sequence[str] | None = None) -> bool:
    """True when ``MEDSR_DEBUG`` is set (``1``/``true``) or ``--debug`` is on the command line."""
    if _truthy(os.environ.get(DEBUG_ENV, "")):
        return True
    args = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(args):
        if a == "--debug":
            nxt = args[i + 1] if i + 1 < len(args) else ""
            return nxt.startswith("-") or nxt == "" or nxt.lower() not in ("0", "false", "no", "off")
        if a.startswith("--debug="):
            return _truthy(a.split("=", 1)[1])
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


def _is_wrapper(exc: BaseException) -> bool:
    if type(exc) is not RuntimeError:
        return False
    text = str(exc).lstrip()
    return text.startswith(_WRAPPER_PREFIXES)


def user_error(exc: BaseException) -> BaseException:
    """The exception whose message the user should see: the outermost one in the chain that is not a wrapper.

    A medsr error that wraps a library error adds the file name (``checkpoint 'x.pt' could not be read: …``),
    so the outermost non-wrapper is the most informative; MONAI's evaluation wrappers carry no information.
    """
    chain = error_chain(exc)
    for e in chain:
        if not _is_wrapper(e):
            return e
    return chain[-1]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def format_error(exc: BaseException, hint: str | None = None) -> str:
    """One line for ``exc``: the message of :func:`user_error`, its type named when it is not self-explaining."""
    err = user_error(exc)
    if isinstance(err, KeyError) and len(err.args) == 1:
        msg = str(err.args[0])
    else:
        msg = str(err)
    msg = _one_line(msg) or "(no message)"
    if type(err) not in (ValueError, KeyError) and not isinstance(err, (MedsrError, OSError)):
        if not type(err).__name__.endswith("ReadError"):
            msg = f"{type(err).__name__}: {msg}"
    line = f"error: {msg}"
    if hint:
        line += f" [{hint}]"
    return line


#: log messages that repeat an error on its way up (ignite engines, MONAI ``StatsHandler``)
_ERROR_ECHOES = (
    "Exception: ",
    "Engine run is terminating due to exception",
    "Current run is terminating due to exception",
)
#: loggers that get their own handlers later (MONAI ``StatsHandler``): filtered at the logger
_ECHO_LOGGERS = ("StatsHandler", "monai.handlers.StatsHandler")


class _QuietTracebacks(logging.Filter):
    """Drop MONAI/ignite's echoes of an error on its way up; other records keep their message, not the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if debug_enabled():
            return True
        if str(record.msg).startswith(_ERROR_ECHOES):
            return False
        if record.exc_info:  # another logged error: its message stays, its traceback goes
            record.exc_info, record.exc_text = None, None
        return True


_QUIET = _QuietTracebacks()


def _quiet_logging() -> None:
    """Attach the traceback filter to the handlers of every logger that exists now (root included)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in lg.handlers:
            if _QUIET not in h.filters:
                h.addFilter(_QUIET)
    if logging.lastResort is not None and _QUIET not in logging.lastResort.filters:
        logging.lastResort.addFilter(_QUIET)
    for name in _ECHO_LOGGERS:
        if name not in logging.root.manager.loggerDict:
            # create it as MONAI's StatsHandler does (its own stdout handler, no propagation): a bare logger
            # made here would make StatsHandler skip its handler and its epoch lines would go nowhere
            from monai.apps.utils import get_logger

            get_logger(name)
        lg = logging.getLogger(name)
        if _QUIET not in lg.filters:
            lg.addFilter(_QUIET)


def quiet_logging() -> None:
    """Keep tracebacks that MONAI/ignite log while an error propagates out of the log (unless debugging).

    The error is then reported once, as one line, by :func:`run_command` or the excepthook. Run by
    :func:`check_overrides` (every bundle's ``initialize``), i.e. after the bundle's ``logging.conf``.
    """
    if not debug_enabled():
        _quiet_logging()


def run_command(func: Any, args: Any, prog: str = "medsr", debug: bool | None = None) -> int:
    """Run a sub-command; on an error print one line to stderr and return 1 (traceback with ``--debug``)."""
    debug = debug_enabled([]) if debug is None else debug
    if not debug:
        _quiet_logging()
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
        _quiet_logging()
        print(f"{prog}: {format_error(exc, None if debug else '--debug for the traceback')}", file=sys.stderr)
        return 1


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if debug_enabled() or not isinstance(exc, Exception):
        sys.__excepthook__(exc_type, exc, tb)
        return
    sys.stderr.flush()
    print(f"medsr: {format_error(exc, f'{DEBUG_ENV}=1 for the traceback')}", file=sys.stderr)


def _bundle_main() -> bool:
    """True when this process is ``python -m monai.bundle …`` (also under torchrun)."""
    parts = Path(sys.argv[0] if sys.argv else "").parts
    return tuple(parts[-2:]) == ("bundle", "__main__.py") and "monai" in parts[-3:-2]


def install_excepthook(force: bool = False) -> bool:
    """Print uncaught errors as one line (``MEDSR_DEBUG=1`` keeps tracebacks); only under ``python -m monai.bundle``.

    Called when a bundle config imports :mod:`medsr.pipeline.bundle`. Returns whether the hook is installed.
    """
    if not (force or _bundle_main()):
        return False
    if sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
    _quiet_logging()
    return True


# ------------------------------------------------------------------------------------------ overrides
#: ``monai.bundle run``'s own arguments (never config keys)
RUN_ARGUMENTS = frozenset(
    {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}
)
#: keys that are accepted everywhere: the switches of this module
OWN_KEYS = frozenset({"allow_new_keys", "debug"})


def config_keys(config: Any, prefix: str = "") -> set[str]:
    """Every id of a (merged) config: ``a``, ``a#b``, ``a#0#c`` …, as ``monai.bundle`` overrides address them."""
    out: set[str] = set()
    if isinstance(config, Mapping):
        items: Iterable = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return out
    for k, v in items:
        key = f"{prefix}{k}"
        out.add(key)
        out |= config_keys(v, key + "#")
    return out


def argv_overrides(argv: Sequence[str]) -> dict[str, str]:
    """The ``--key value`` / ``--key=value`` pairs of a ``monai.bundle run`` command line (run's own excluded)."""
    out: dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("--") or a == "--":
            continue
        key, eq, value = a[2:].partition("=")
        if not eq and i < len(args) and not args[i].startswith("--"):
            value = args[i]
            i += 1
        key = key.replace("-", "_") if key.replace("-", "_") in RUN_ARGUMENTS else key
        if key in RUN_ARGUMENTS:
            continue
        out[key] = value
    return out


def _load_configs(config_files: Any, meta_file: Any = None) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files)
    if meta_file:
        try:
            parser.read_meta(meta_file)
        except Exception:  # noqa: BLE001 - a missing metadata file is MONAI's to report
            pass
    return parser.get()


def _parse_file_list(value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith("["):
        import ast

        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def check_overrides(
    keys: Iterable[str] | None = None,
    config_files: Any = None,
    meta_file: Any = None,
    allow_new_keys: bool | None = None,
    argv: Sequence[str] | None = None,
) -> list[str]:
    """Refuse override keys that no config defines, naming the closest known key.

    Called with no arguments from a bundle's ``initialize`` list, it checks the ``--key value`` pairs of a
    ``python -m monai.bundle run …`` command line against the ``--config_file`` files (and does nothing in
    other processes: ``medsr train`` checks its overrides itself, before the run).

    Args:
        keys: override keys (default: read from ``argv``).
        config_files: the config file(s) the keys must exist in (default: ``--config_file`` of ``argv``).
        meta_file: the metadata file, whose keys count too.
        allow_new_keys: accept unknown keys (default: ``--allow_new_keys`` / ``MEDSR_ALLOW_NEW_KEYS``).
        argv: the command line (default ``sys.argv[1:]``).

    Returns:
        The unknown keys that were allowed (empty when all are known).

    Raises:
        MedsrError: ``--key: no config defines it (did you mean --closest?) …``.
    """
    quiet_logging()
    pairs: dict[str, str] = {}
    if keys is None:
        if argv is None:
            if not _bundle_main():
                return []
            argv = sys.argv[1:]
        pairs = argv_overrides(argv)
        keys = list(pairs)
        if allow_new_keys is None and "allow_new_keys" in pairs:
            allow_new_keys = _truthy(pairs["allow_new_keys"] or "true")
        if config_files is None:
            found = _argv_value(argv, "config_file")
            config_files = _parse_file_list(found) if found is not None else None
        if meta_file is None:
            meta_file = _parse_file_list(_argv_value(argv, "meta_file"))
    if allow_new_keys is None:
        allow_new_keys = _truthy(os.environ.get(ALLOW_NEW_KEYS_ENV, ""))
    keys = [k for k in keys if k not in OWN_KEYS]
    if not keys or config_files is None:
        return []
    from monai.bundle import ConfigParser

    config = _load_configs(config_files, meta_file)
    known = config_keys(config)
    for k, v in pairs.items():
        text = str(v).strip()
        if text != "False" and text.lower() in _FALSE and isinstance(ConfigParser(config).get(k), bool):
            raise MedsrError(
                f"override --{k} {v}: python -m monai.bundle passes {v!r} as text, which counts as true; "
                f"write --{k} False (or True)"
            )
    unknown = [k for k in keys if k not in known]
    if unknown and not allow_new_keys:
        k = unknown[0]
        close = difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean --{close[0]}? " if close else ""
        more = f" (also unknown: {', '.join('--' + u for u in unknown[1:])})" if len(unknown) > 1 else ""
        raise MedsrError(
            f"override --{k}: no config defines it{more}; {hint}"
            f"to add a new key on purpose pass --allow_new_keys true (medsr: --set allow_new_keys=true) or set {ALLOW_NEW_KEYS_ENV}=1"
        )
    return unknown


def _argv_value(argv: Sequence[str], name: str) -> str | None:
    args = list(argv)
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


# -------------------------------------------------------------------------------------------- outputs
def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_outputs(
    inputs: Sequence[str | os.PathLike],
    outputs: Sequence[str | os.PathLike],
    suffixes: Sequence[str] = (".nii", ".nii.gz"),
    dicom_inputs: Sequence[bool] | None = None,
) -> None:
    """Refuse outputs that would overwrite an input or cannot be written, before any work starts.

    Each output must not resolve to any input (same path after ``..``/symlinks, or the same inode), nor lie
    inside an input folder (a DICOM series); its folder must be creatable and writable; a file output must
    not be an existing folder and must end in one of ``suffixes`` (a DICOM input may also be written as
    ``.dcm`` or as a new series folder).

    Raises:
        MedsrError: naming the output and what to do.
    """
    ins = [Path(i) for i in inputs]
    dicom_inputs = list(dicom_inputs) if dicom_inputs is not None else [False] * len(ins)
    for n, out in enumerate(Path(o) for o in outputs):
        for src in ins:
            if _same_file(out, src) or (src.is_dir() and _inside(out, src)):
                raise MedsrError(
                    f"output '{out}': is the input '{src}' (it would be overwritten); choose another output name"
                )
        is_dicom_out = dicom_inputs[n] if n < len(dicom_inputs) else False
        name = out.name.lower()
        nifti = name.endswith(tuple(s.lower() for s in suffixes))
        if is_dicom_out and not nifti:
            if out.suffix and out.suffix.lower() not in (".dcm", ".dicom", ".ima"):
                raise MedsrError(
                    f"output '{out}': unsupported output type for a DICOM input; use a .dcm name, a new folder "
                    f"name (a series) or {' / '.join(suffixes)}"
                )
            if out.is_dir():
                raise MedsrError(
                    f"output '{out}': folder already exists; a DICOM series is written to a new folder, "
                    "remove it or choose another name"
                )
        else:
            if out.is_dir():
                raise MedsrError(f"output '{out}': is a folder; give a file name such as '{out / 'sr.nii.gz'}'")
            if not nifti:
                raise MedsrError(
                    f"output '{out}': unsupported output type; use a name ending in {' or '.join(suffixes)}"
                    + (" (or .dcm / a new folder name for DICOM)" if is_dicom_out else "")
                )
        parent = out.parent if str(out.parent) else Path(".")
        probe = parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise MedsrError(f"output '{out}': '{probe}' is a file, not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise MedsrError(f"output '{out}': folder '{probe}' is not writable; choose another output folder")


# ------------------------------------------------------------------------------------ datalist items
def item_files(item: Any) -> list[str]:
    """The file names a datalist item (or a loaded one: MetaTensors keep ``filename_or_obj``) refers to."""
    from monai.data import MetaTensor

    values = item.values() if isinstance(item, Mapping) else [item]
    out: list[str] = []
    for v in values:
        if isinstance(v, (str, os.PathLike)):
            name = str(v)
        elif isinstance(v, MetaTensor):
            name = v.meta.get("filename_or_obj", "")
            name = name if isinstance(name, (str, os.PathLike)) else ""
        else:
            continue
        name = str(name)
        if name and name not in out and (os.sep in name or "." in Path(name).name):
            out.append(name)
    return out


def name_files(exc: BaseException, files: Sequence[str], what: str = "datalist item") -> BaseException:
    """``exc`` itself when its message already names one of ``files``, else a :class:`MedsrError` that does."""
    if not files:
        return exc
    msg = _one_line(str(user_error(exc)) if not isinstance(user_error(exc), KeyError) else user_error(exc).args[0])
    if any(f in msg or Path(f).name in msg for f in files):
        return exc
    inner = user_error(exc)
    kind = "" if type(inner) in (ValueError, MedsrError) else f"{type(inner).__name__}: "
    return MedsrError(f"{what} {', '.join(repr(f) for f in files)}: {kind}{msg}")


def _compose_base() -> type:
    from monai.transforms import Compose

    return Compose


class NamedCompose(_compose_base()):  # type: ignore[misc]
    """MONAI ``Compose`` whose errors name the datalist item's file(s) (``image``, ``mask``, ``label``).

    With hundreds of cases, ``image: contains NaN`` does not say which case; this says
    ``datalist item 'p07/t1.nii.gz', 'p07/mask.nii.gz': image: contains NaN …``. Works for cached datasets
    too (the loaded MetaTensors keep their file names). Same arguments as ``Compose``, plus ``what``: how the
    message calls the item (``"datalist item"``, ``"input"``).
    """

    def __init__(self, *args: Any, what: str = "datalist item", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.what = what

    def __call__(self, input_, *args, **kwargs):  # noqa: D102 - as Compose
        try:
            return super().__call__(input_, *args, **kwargs)
        except Exception as exc:
            named = name_files(exc, item_files(input_), getattr(self, "what", "datalist item"))
            if named is exc:
                raise
            raise named from exc
