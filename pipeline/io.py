"""Atomic file output: every file medsr writes goes through a temporary file in the target folder and
``os.replace``, so a killed run never leaves a half-written output, checkpoint or report behind.

Light on purpose (standard library only) so that any module may import it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
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


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file (hex), read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
