"""Atomic file output: every file medsr writes goes through a temporary file in the target folder and
``os.replace``, so a killed run never leaves a half-written output, checkpoint or report behind.

:func:`check_outputs` refuses, before any work, an output that is an input (same path, ``in/../in/x``, same
inode) or that cannot be written (folder, suffix, type).

Light on purpose (standard library only) so that any module may import it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_open",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "is_temp_file",
    "remove_stale_temps",
    "sha256_of",
    "check_outputs",
    "build_folder_atomic",
]


def _suffix(path: Path) -> str:
    """The file's suffixes as writers read them (``.nii.gz`` stays whole, so nibabel still compresses)."""
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix


def is_temp_file(path: str | os.PathLike) -> bool:
    """True for a temporary file of :func:`atomic_path` (``.<name>.<random>.tmp<suffix>``): never a real output."""
    name = Path(path).name
    return name.startswith(".") and ".tmp" in name


def remove_stale_temps(folder: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder`` (only those of ``target`` when given).

    Call at the start of a run, before anything writes there. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for f in folder.iterdir():
        if not f.is_file() or not is_temp_file(f):
            continue
        if target is not None and not f.name.startswith(f".{target}."):
            continue
        with suppress(FileNotFoundError):
            f.unlink()
            removed.append(f)
    return removed


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); on success it replaces ``path``.

    For writers that want a file name (``nib.save``, ``fig.savefig``, ``torch.jit.save``). On any error the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{_suffix(path)}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files; give the output the usual permissions
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a quota: the message names the file being written
        if str(path) in str(err):
            raise
        raise type(err)(err.errno, f"{err.strerror or err} while writing '{path}'") from err
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False, **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path``.

    Args:
        path: the final file.
        mode: a write mode (``"wb"``, ``"w"``).
        fsync: flush to disk before the rename (checkpoints).
        kwargs: passed to :func:`open` (e.g. ``encoding``).
    """
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(data: Any, path: str | os.PathLike, *, indent: int = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(data, indent=indent) + "\n")


@contextmanager
def build_folder_atomic(folder: str | os.PathLike, prefix: str = ".build-") -> Iterator[Path]:
    """Build a whole folder in a hidden temporary sibling and swap it in when the block ends.

    The previous ``folder`` stays readable until the new one is complete; on an error the temporary folder is
    removed and ``folder`` is left as it was.
    """
    folder = Path(folder)
    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield tmp
        stale = None
        if folder.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}-stale-", dir=root))
            os.replace(folder, stale / folder.name)
        os.replace(tmp, folder)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file (hex), read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    from medsr.pipeline.errors import MedsrError

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
