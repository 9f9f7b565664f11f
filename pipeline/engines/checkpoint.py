"""One-file checkpoints of the whole training state, written atomically, and resuming from them.

A checkpoint is a ``dict`` saved with ``torch.save``::

    {"format": "medsr-checkpoint", "version": 1,
     "objects": {"generator": ..., "discriminator": ..., "g_optimizer": ..., "ema": ..., "data": ..., ...},
     "engine": {"iteration", "epoch", "epoch_length", "max_epochs"},
     "rng": {"python", "numpy", "torch", "cuda"}}

``objects`` holds the ``state_dict()`` of everything the trainer lists in ``checkpoint_objects()``
(models unwrapped from DDP, optimizers, schedulers, grad scalers, EMA, the loss's trainable adapters and
the :class:`~medsr.pipeline.engines.ResumableLoader` position).

Every checkpoint also describes its generator (:func:`medsr.pipeline.models.model_info`, the model file's
description), so inference, evaluation and MONAI Label rebuild the network from the file alone
(:func:`medsr.pipeline.models.load_generator`). The model-file format itself (the best-model files
``best_network.pt``/``best_pretrain.pt``, shipped models) belongs to :mod:`medsr.pipeline.models`. The RNG
states hold tensors, tuples and numbers only, so checkpoints are read with ``torch.load(weights_only=True)``
(:func:`medsr.pipeline.models.read_file`), as model files are.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from medsr.pipeline.engines.common import get_rng_state, set_rng_state, unwrap_model
from medsr.pipeline.errors import MedsrError
from medsr.pipeline.io import atomic_open
from medsr.pipeline.models import MODEL_FORMAT, model_info, read_file
from medsr.pipeline.runs import LATEST, run_checkpoints

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "resume",
    "checkpoint_payload",
    "restore_pending_rng",
    "load_generator_weights",
    "find_checkpoint",
    "checkpoint_problem",
    "teacher_weights",
    "NetworkMismatchError",
    "FORMAT",
    "BEST_FILE",
]

FORMAT = "medsr-checkpoint"
#: the best model of a run's final stage (the one inference serves); earlier stages: ``best_<stage>.pt``
BEST_FILE = "best_network.pt"
logger = logging.getLogger(__name__)


def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` (atomic on POSIX)."""
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(obj, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict:
    """Load a checkpoint file written by :func:`save_checkpoint` (errors name the path)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    ckpt = read_file(path, "checkpoint", map_location)
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint '{path}' holds a {type(ckpt).__name__}, not a dict")
    return ckpt


_ITER_RE = re.compile(r"_(\d+)\.pt$")


def resume(trainer, path: str | os.PathLike, restore_rng: bool = True) -> int:
    """Restore ``trainer`` (one of the medsr trainers) from a checkpoint file, or the latest one in a folder.

    Models, optimizers, schedulers, scalers, EMA, data position and the engine's iteration/epoch are
    restored now; the RNG states when the run starts (``Events.STARTED``), so nothing built in between
    disturbs them. Returns the restored iteration (0 when ``path`` is a folder without checkpoints).
    """
    path = Path(path)
    if path.is_dir():
        try:
            path = Path(find_checkpoint(path, prefix="checkpoint"))
        except FileNotFoundError:
            logger.info(f"resume: no checkpoint in '{path}', starting from scratch")
            return 0
    ckpt = load_checkpoint(path, map_location=trainer.state.device)
    if ckpt.get("format") != FORMAT:
        raise ValueError(f"checkpoint '{path}' is not a medsr training checkpoint (format {ckpt.get('format')!r})")
    objects = trainer.checkpoint_objects()
    missing = [k for k in objects if k not in ckpt["objects"]]
    if missing:
        raise KeyError(f"checkpoint '{path}' has no state for {missing} (it holds {sorted(ckpt['objects'])})")
    for name, obj in objects.items():
        obj.load_state_dict(ckpt["objects"][name])
    eng = ckpt["engine"]
    if trainer.state.epoch_length is not None and eng.get("epoch_length") not in (None, trainer.state.epoch_length):
        raise ValueError(
            f"checkpoint '{path}': epoch_length {eng['epoch_length']} differs from this run's {trainer.state.epoch_length}"
        )
    trainer.state.iteration = int(eng["iteration"])
    # ignite counts completed epochs before a run and increments at EPOCH_STARTED: a mid-epoch checkpoint
    # (saved while epoch e was running) resumes with e - 1 completed epochs
    length = eng.get("epoch_length") or trainer.state.epoch_length
    trainer.state.epoch = trainer.state.iteration // length if length else int(eng["epoch"])
    if restore_rng and "rng" in ckpt:
        trainer._pending_rng_state = ckpt["rng"]
    logger.info(f"resumed from '{path}' at iteration {trainer.state.iteration}, epoch {trainer.state.epoch}")
    return trainer.state.iteration


def checkpoint_payload(trainer) -> dict:
    """The dict :class:`medsr.pipeline.handlers.CheckpointHandler` saves for ``trainer``."""
    objects = {name: obj.state_dict() for name, obj in trainer.checkpoint_objects().items()}
    s = trainer.state
    return {
        "format": FORMAT,
        "version": 1,
        "objects": objects,
        "engine": {
            "iteration": s.iteration,
            "epoch": s.epoch,
            "epoch_length": s.epoch_length,
            "max_epochs": s.max_epochs,
        },
        "rng": get_rng_state(),
        **model_info(_trainer_generator(trainer)),
    }


def _trainer_generator(trainer) -> torch.nn.Module | None:
    for attr in ("generator", "network", "student"):
        net = getattr(trainer, attr, None)
        if isinstance(net, torch.nn.Module):
            return unwrap_model(net)
    return None


class NetworkMismatchError(MedsrError):
    """A checkpoint's weights do not fit the network built for them (the message is one line; ``medsr`` exits 2)."""

    exit_code = 2


def restore_pending_rng(engine) -> None:
    """``Events.STARTED`` hook: restore RNG states stashed by :func:`resume`."""
    state = getattr(engine, "_pending_rng_state", None)
    if state is not None:
        set_rng_state(state)
        engine._pending_rng_state = None


_MODEL_KEYS = ("generator", "network", "student", "net", "model", "state_dict")


def load_generator_weights(
    model: torch.nn.Module,
    path: str | os.PathLike,
    key: str | None = None,
    use_ema: bool = False,
    strict: bool = True,
    require_ema: bool = False,
) -> torch.nn.Module:
    """Warm-start ``model`` from a file: a medsr checkpoint, a MONAI ``CheckpointSaver`` file or a plain state dict.

    Args:
        model: the generator (DDP wrappers are unwrapped).
        path: the weights file (e.g. the PSNR-oriented pretraining of the ESRGAN two-stage recipe).
        key: which entry holds the weights; default: the first of ``generator``, ``network``, ``student``,
            ``net``, ``model``, ``state_dict`` that exists, else the file itself.
        use_ema: with a medsr checkpoint, take the EMA weights when present.
        strict: as in ``load_state_dict``.
        require_ema: with ``use_ema``, a file without EMA weights is an error naming it (else the raw weights).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"generator weights '{path}' do not exist (set g_pretrained=None to train from scratch)"
        )
    ckpt = read_file(path, "generator weights")
    has_ema = isinstance(ckpt, dict) and ckpt.get("format") == FORMAT and "ema" in ckpt.get("objects", {})
    if use_ema and require_ema and not has_ema:
        raise ValueError(f"--ema: '{path}' is not a medsr training checkpoint with EMA weights")
    if isinstance(ckpt, dict) and ckpt.get("format") == MODEL_FORMAT and key is None:
        sd = ckpt["state_dict"]
    elif isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        objects = ckpt["objects"]
        if use_ema and "ema" in objects:
            sd = {k[len("module.") :]: v for k, v in objects["ema"].items() if k.startswith("module.")}
        else:
            name = key or next((k for k in _MODEL_KEYS if k in objects), None)
            if name is None or name not in objects:
                raise KeyError(f"generator weights '{path}': no entry {key or _MODEL_KEYS} among {sorted(objects)}")
            sd = objects[name]
    elif isinstance(ckpt, dict):
        name = key or next((k for k in _MODEL_KEYS if k in ckpt and isinstance(ckpt[k], dict)), None)
        if key is not None and key not in ckpt:
            raise KeyError(f"generator weights '{path}': no entry '{key}' (entries: {sorted(map(str, ckpt))})")
        sd = ckpt[name] if name is not None else ckpt
    else:
        raise ValueError(f"generator weights '{path}' hold a {type(ckpt).__name__}, not a state dict")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    net = unwrap_model(model)
    own = net.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if wrong or (strict and set(sd) != set(own)):
        if wrong:
            k, theirs, ours = wrong[0]
            what = f"{k} is {list(theirs)} in the file but {list(ours)} in the network ({len(wrong)} tensors differ)"
        else:
            missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
            what = f"{len(missing)} tensors missing (e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]})"
        described = ", ".join(
            f"{k}={v}" for k, v in (getattr(net, "init_args", None) or {}).items() if k != "spatial_dims"
        )
        raise NetworkMismatchError(
            f"generator weights '{path}' do not fit {type(net).__name__}({described}): {what}; give the training "
            "widths as overrides, or use a checkpoint that records its network"
        )
    net.load_state_dict(sd, strict=strict)
    return model


def find_checkpoint(
    path: str | os.PathLike,
    prefix: str | None = None,
    prefer_best: bool = True,
    newer_than: float | None = None,
    suffixes: Sequence[str] = (".pt",),
) -> str:
    """Return the checkpoint to use: ``path`` itself when it is a file, else the one found in the folder ``path``.

    The one place that searches for checkpoints (bundles, resume, the label app, MLflow tracking). In a folder:

    * with ``prefix``: the training-state series that :class:`~medsr.pipeline.handlers.CheckpointHandler`
      writes, ``{prefix}_{iteration}.pt`` directly in the folder; the highest iteration wins (resume);
    * else every file below the folder (recursively) ending in one of ``suffixes``; the ``best`` checkpoint
      (file name containing ``best``, the one validation picked; ``best_network.pt`` first) wins when
      ``prefer_best``, then the newest. A runs folder (with a ``latest`` pointer, see
      :mod:`medsr.pipeline.runs`) is searched in its newest trained run.

    Hidden files (an atomic write's temporary file) never count. A file that fails to load (truncated by a
    kill, a text file) is skipped with a warning, and the next one in that order (the newest intact) is used.

    Args:
        path: a checkpoint file or a folder.
        prefix: pick from the ``{prefix}_{iteration}.pt`` series instead (see above).
        prefer_best: prefer a ``best`` file over a newer one.
        newer_than: only files modified at or after this time (seconds since the epoch) count.
        suffixes: file endings that count.

    Raises:
        FileNotFoundError: naming the path when nothing is found.
    """
    p = Path(path)
    if p.is_file():
        return str(p)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint '{path}': no such file or folder (train the bundle first)")
    if prefix is None and (p / LATEST).exists():  # a runs folder (runs/<bundle>): its newest trained run
        p = Path(run_checkpoints(p))
    if prefix is not None:
        files = [f for f in p.glob(f"{prefix}_*.pt") if f.is_file() and _ITER_RE.search(f.name)]
        what = f"{prefix}_<iteration>.pt file"
    else:
        files = [f for f in p.rglob("*") if f.suffix in suffixes and f.is_file() and not f.name.startswith(".")]
        what = f"{'/'.join(suffixes)} file"
    if newer_than is not None:
        files = [f for f in files if f.stat().st_mtime >= newer_than]
    if not files:
        raise FileNotFoundError(f"checkpoint '{path}': folder holds no {what} (train the bundle first)")
    if prefix is not None:
        order = sorted(files, key=lambda f: int(_ITER_RE.search(f.name).group(1)), reverse=True)
    else:
        newest = sorted(files, key=lambda f: (f.stat().st_mtime, f.name), reverse=True)
        best = [f for f in newest if "best" in f.name] if prefer_best else []
        order = best + [f for f in newest if f not in best]
    broken = []
    for f in order:
        problem = checkpoint_problem(f)
        if problem is None:
            if broken:
                logger.warning(
                    f"checkpoint search in '{path}': skipped {', '.join(broken)}; using '{f}', the newest intact one"
                )
            return str(f)
        broken.append(f"'{f}' ({problem})")
        logger.warning(f"checkpoint '{f}': {problem}; skipped")
    raise ValueError(
        f"checkpoint '{path}': no intact {what}: {'; '.join(broken)} (a run was killed while writing? train again "
        "or resume from an older copy)"
    )


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a checkpoint (truncated, not a PyTorch file), or ``None`` when it looks intact.

    Cheap for ``torch.save``'s zip format (reads the archive's directory, not the tensors); other files are
    loaded.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            if not any(n.endswith("data.pkl") for n in names):
                return "a zip archive without a PyTorch data.pkl"
            return None
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head[:1] != b"\x80":  # a legacy torch.save file is a pickle (protocol >= 2 starts with 0x80)
            return "not a PyTorch checkpoint (truncated or another kind of file)"
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        return f"unreadable: {type(e).__name__}: {' '.join(str(e).split())[:120]}"
    return None


def teacher_weights(path: str | os.PathLike | None) -> str | None:
    """The distillation teacher's checkpoint: a file, the best/newest one in a run folder, or ``None``."""
    if path is None or str(path) == "":
        return None
    try:
        return find_checkpoint(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"teacher_checkpoint: {err} (train the teacher bundle first, e.g. `medsr train rdn`)"
        ) from err
