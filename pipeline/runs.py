"""Run folders: each training run of a bundle writes its own folder, with a ``latest`` pointer.

``output_dir`` names a bundle's *runs folder* (default ``runs/<bundle>``); a run writes into
``<output_dir>/<run_name>/`` (``checkpoints/``, ``metrics.csv``, ``images/``, ``eval/``) and points
``<output_dir>/latest`` at itself when it starts. The run name is the MLflow run name
(``<bundle>-<YYYYmmdd-HHMMSS>``), so a folder and its MLflow run are found from each other.

Resume, evaluation, inference (``medsr upscale --bundle NAME``) and the MONAI Label app take the newest run
by default and address one by name (``esrgan_se-20260101-120000``) or by path. A runs folder from before
run folders (``<output_dir>/checkpoints`` directly) is still found.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

__all__ = [
    "LATEST",
    "checkpoint_written",
    "find_run",
    "list_runs",
    "new_run_name",
    "resume_path",
    "run_checkpoints",
    "run_dir",
    "run_subdir",
]

LATEST = "latest"
#: folders of a runs folder that are not runs (the layout before run folders, tracking stores)
NOT_RUNS = frozenset({"checkpoints", "images", "eval", "predictions", "tracking", "mlruns", "mlartifacts"})
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
#: runs of this process waiting for their first checkpoint: ``checkpoints`` folder -> (runs folder, run name)
_PENDING: dict[str, tuple[Path, str]] = {}


def _start_time() -> float:
    """The run's start time, the same on every rank of a ``torchrun`` job (its launcher's start)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        try:  # /proc/<launcher>/stat field 22: start time in clock ticks after boot
            fields = Path(f"/proc/{os.getppid()}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[19]) / os.sysconf("SC_CLK_TCK")
            boot = next(
                float(line.split()[1])
                for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime")
            )
            return boot + ticks
        except (OSError, ValueError, IndexError, StopIteration):
            pass
    return time.time()


def new_run_name(
    bundle: str, output_dir: str | os.PathLike | None = None, resume_from: str | os.PathLike | None = None
) -> str:
    """Return the name of a new run, ``<bundle>-<YYYYmmdd-HHMMSS>``; a resumed run keeps its own name.

    ``$MEDSR_RUN_NAME`` wins when set. When ``resume_from`` names a run of ``output_dir`` (by name, path or
    ``latest``), that run's name is returned, so the resumed run goes on in its own folder. A name already
    taken in ``output_dir`` gets a ``-2``, ``-3``, ... suffix.
    """
    if os.environ.get("MEDSR_RUN_NAME"):
        return os.environ["MEDSR_RUN_NAME"]
    if resume_from not in (None, "") and output_dir is not None:
        try:
            folder = find_run(output_dir, resume_from, trained=True)
        except FileNotFoundError:
            folder = None
        if folder is not None and Path(folder).resolve().parent == Path(output_dir).resolve():
            return Path(folder).resolve().name
    name = f"{bundle}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(_start_time()))}"
    if output_dir is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return name
    candidate, i = name, 1
    while (Path(output_dir) / candidate).exists():
        i += 1
        candidate = f"{name}-{i}"
    return candidate


def run_dir(output_dir: str | os.PathLike, run_name: str) -> str:
    """Create ``<output_dir>/<run_name>`` and return it; ``<output_dir>/latest`` points at it (rank 0) once
    it holds a checkpoint (at once for a resumed run, else at its first checkpoint: :func:`checkpoint_written`).

    Raises:
        ValueError: for a run name that is not a plain folder name.
    """
    if not _NAME_RE.fullmatch(str(run_name)) or str(run_name) == LATEST:
        raise ValueError(f"run_name: {run_name!r} is not a plain folder name (letters, digits, '_', '-', '.', '+')")
    root = Path(output_dir)
    folder = root / str(run_name)
    folder.mkdir(parents=True, exist_ok=True)
    if os.environ.get("RANK", "0") == "0":
        if _has_checkpoint(folder):  # a resumed run
            _point_latest(root, str(run_name))
        else:  # ``latest`` moves when this run has written its first checkpoint (checkpoint_written)
            _PENDING[str((folder / "checkpoints").resolve())] = (root, str(run_name))
    return str(folder)


def checkpoint_written(save_dir: str | os.PathLike) -> None:
    """Point ``latest`` at the run whose ``checkpoints`` folder is ``save_dir``, the first time a training
    checkpoint lands there (called by :class:`medsr.pipeline.handlers.CheckpointHandler`). A run that fails
    before its first checkpoint never moves ``latest``; other folders are left alone."""
    folder = Path(save_dir).resolve()
    for cand in (folder, folder.parent):  # checkpoints/ or a stage's checkpoints/pretrain/
        entry = _PENDING.pop(str(cand), None)
        if entry is not None:
            _point_latest(*entry)
            return


def _point_latest(root: Path, name: str) -> None:
    link = root / LATEST
    if link.is_symlink() and os.readlink(link) == name:
        return
    tmp = root / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:  # no symlinks here (some Windows setups): a one-line text file
        tmp.unlink(missing_ok=True)
        if link.is_dir() and not link.is_symlink():
            return  # a real folder called "latest": leave it alone
        link.write_text(name + "\n", encoding="utf-8")


def list_runs(output_dir: str | os.PathLike) -> list[Path]:
    """The run folders of a runs folder, newest first (``latest`` and hidden entries excluded)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    runs = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and not p.is_symlink()
        and p.name != LATEST
        and p.name not in NOT_RUNS
        and _NAME_RE.fullmatch(p.name)
    ]
    return sorted(runs, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)


def _latest(root: Path) -> Path | None:
    link = root / LATEST
    if link.is_symlink():
        target = root / os.readlink(link)
        return target if target.is_dir() else None
    if link.is_file():
        target = root / link.read_text(encoding="utf-8").strip()
        return target if target.is_dir() else None
    return None


def _has_checkpoint(folder: Path) -> bool:
    ckpts = folder / "checkpoints"
    return ckpts.is_dir() and any(f.suffix == ".pt" and not f.name.startswith(".") for f in ckpts.rglob("*.pt"))


def find_run(output_dir: str | os.PathLike, run: str | os.PathLike | None = None, trained: bool = False) -> str:
    """Return a run folder of the runs folder ``output_dir``.

    Args:
        output_dir: the bundle's runs folder (``runs/<bundle>``).
        run: ``None``/``""``/``"latest"`` for the newest run, a run name (a folder of ``output_dir``) or a path.
        trained: with ``run=None``, the newest run that holds a checkpoint (a run that failed at its start
            does not hide the one before it).

    A runs folder without run folders but with ``checkpoints/`` (the layout before run folders) is itself
    returned.

    Raises:
        FileNotFoundError: naming what was looked for.
    """
    root = Path(output_dir)
    if run not in (None, "", LATEST):
        for cand in (Path(run), root / str(run)):
            if cand.is_dir():
                return str(cand)
        known = ", ".join(p.name for p in list_runs(root)[:5]) or "none"
        raise FileNotFoundError(f"run '{run}': not a folder, nor a run of '{root}' (newest runs: {known})")
    latest = _latest(root)
    runs = list_runs(root)
    if latest is not None and (not trained or _has_checkpoint(latest)):
        return str(latest)
    for folder in runs:
        if not trained or _has_checkpoint(folder):
            return str(folder)
    if (root / "checkpoints").is_dir():
        return str(root)
    raise FileNotFoundError(
        f"runs folder '{root}': no {'trained ' if trained else ''}run found (train the bundle first)"
    )


def run_checkpoints(output_dir: str | os.PathLike, run: str | os.PathLike | None = None) -> str:
    """Return the ``checkpoints`` folder of a run (the newest trained one by default); see :func:`find_run`.

    A path to a checkpoint file or to a folder of checkpoints is returned as it is, so ``--checkpoint``-style
    values pass through. Without any trained run it returns ``<output_dir>/checkpoints`` (which then does not
    exist: the checkpoint search names it and says to train first).
    """
    if run not in (None, "", LATEST):
        p = Path(run)
        if p.is_file() or (p.is_dir() and p.name == "checkpoints"):
            return str(p)
        return str(Path(find_run(output_dir, run)) / "checkpoints")
    try:
        return str(Path(find_run(output_dir, run, trained=True)) / "checkpoints")
    except FileNotFoundError:  # nothing trained yet: the search that follows says "train the bundle first"
        return str(Path(output_dir) / "checkpoints")


def resume_path(output_dir: str | os.PathLike, resume_from: str | os.PathLike | None) -> str | None:
    """Resolve ``resume_from`` for a trainer: ``None`` stays ``None``; a checkpoint file or folder of
    checkpoints is kept; a run name, a run folder or ``latest`` gives that run's ``checkpoints`` folder
    (``latest``: the newest run that holds a checkpoint, so a run that failed at its start never hides it)."""
    if resume_from in (None, ""):
        return None
    p = Path(resume_from)
    if p.is_file() or (p.is_dir() and any(p.glob("checkpoint_*.pt"))):
        return str(p)
    if p.is_dir() and (p / "checkpoints").is_dir():
        return str(p / "checkpoints")
    return str(Path(find_run(output_dir, resume_from, trained=True)) / "checkpoints")


def run_subdir(output_dir: str | os.PathLike, run: str | os.PathLike | None, name: str) -> str:
    """``<run folder>/<name>`` of the newest trained run (or of ``run``); ``<output_dir>/<name>`` without runs.

    Where evaluation (``eval``) and inference (``predictions``) write their outputs.
    """
    try:
        folder = find_run(output_dir, run, trained=run in (None, "", LATEST))
    except FileNotFoundError:
        if run not in (None, "", LATEST):
            raise
        folder = str(output_dir)
    return str(Path(folder) / name)
