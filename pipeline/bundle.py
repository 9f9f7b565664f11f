"""Small helpers that the bundle configs in ``bundles/`` call.

Bundle configs hold the wiring only; every expression longer than one line lives here and is tested in
``tests/bundles/test_bundle_helpers.py``. Nothing here downloads anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medsr.transforms.geometry import expand_size, parse_scale

BUNDLES_DIR = Path(__file__).resolve().parents[1] / "bundles"
BUNDLE_FILES = ("metadata.json", "train.json", "inference.json", "evaluate.json", "logging.conf", "README.md")


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` if given, else CUDA when present, else CPU.

    Args:
        device: ``None``/``"auto"`` to pick, or anything ``torch.device`` accepts.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}': CUDA was asked for but torch.cuda.is_available() is False")
    return dev


def network_scale(scale: Any, spatial_dims: int) -> int | tuple[int, ...]:
    """Return the scale in the form networks take: an int when all axes agree, else the per-axis tuple."""
    factors = parse_scale(scale, spatial_dims)
    return factors[0] if len(set(factors)) == 1 else factors


def hr_patch_size(patch_size: Any, scale: Any, spatial_dims: int) -> tuple[int, ...]:
    """Return the HR training patch size: ``patch_size`` per axis rounded up to a multiple of the scale.

    A patch along an axis with scale 1 keeps its size, so ``(64, 64, 16)`` with scale ``(1, 1, 4)`` stays
    ``(64, 64, 16)`` and ``(30, 30)`` with scale 4 becomes ``(32, 32)``.
    """
    size = expand_size(patch_size, spatial_dims, "patch_size")
    factors = parse_scale(scale, spatial_dims)
    return tuple(int(math.ceil(p / f) * f) for p, f in zip(size, factors))


def lr_roi_size(roi_size: Any, spatial_dims: int) -> tuple[int, ...]:
    """Return the sliding-window ROI in LR voxels (an int becomes one value per axis)."""
    return expand_size(roi_size, spatial_dims, "roi_size")


def ensure_dir(path: str | os.PathLike) -> str:
    """Create ``path`` (and parents) and return it as a string."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return str(path)


def _read_datalist(path: str | os.PathLike, base_dir: str | os.PathLike | None) -> dict[str, list[dict]]:
    """Read the ``training``/``validation``/``test`` sections of a datalist with the data area's reader."""
    import json

    from medsr.pipeline.data.datalist import load_datalist

    try:
        sections = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"datalist '{path}': cannot read it as JSON ({err})") from err
    out = {}
    for key in ("training", "validation", "test"):
        if key == "training" or isinstance(sections, dict) and key in sections:
            out[key] = load_datalist(path, section=key, base_dir=base_dir)
    return out


def resolve_datalist(
    datalist: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    spatial_dims: int = 2,
    val_fraction: float = 0.2,
    progress: bool = True,
) -> dict[str, list[dict]]:
    """Return ``{"training": [...], "validation": [...]}`` for a bundle.

    Order of precedence: an explicit ``datalist`` JSON (paths relative to ``dataset_dir`` when given, else to
    the JSON's folder); else a ``dataset_dir`` scanned for images (with ``masks/``/``labels/`` companions, see
    ``medsr.pipeline.data.datalist.build_datalist``); else the embedded demo dataset, built on first use.

    Args:
        datalist: path of a MONAI-style datalist JSON with a ``training`` (and optionally ``validation``) list.
        dataset_dir: folder of the user's images.
        spatial_dims: 2 or 3; picks the demo datalist (``datalist_2d``/``datalist_3d``).
        val_fraction: share of training items held out when the datalist has no ``validation`` list.
        progress: show the demo builder's progress.

    Raises:
        ValueError: when a path does not exist or the lists are empty.
    """
    if datalist is not None:
        if not Path(datalist).is_file():
            raise ValueError(f"datalist '{datalist}': file not found")
        lists = _read_datalist(datalist, dataset_dir)
    elif dataset_dir is not None:
        if not Path(dataset_dir).is_dir():
            raise ValueError(f"dataset_dir '{dataset_dir}': folder not found")
        from medsr.pipeline.data.datalist import build_datalist

        lists = build_datalist(dataset_dir, output=None, val_fraction=val_fraction, test_fraction=0.0)
    else:
        from medsr.pipeline.data.demo import ensure_demo_dataset

        demo = ensure_demo_dataset(progress=progress)
        key = "datalist_2d" if int(spatial_dims) == 2 else "datalist_3d"
        lists = _read_datalist(demo[key], None)
    return split_datalist(lists, val_fraction, source=str(datalist or dataset_dir or "demo dataset"))


def split_datalist(lists: dict[str, list[dict]], val_fraction: float = 0.2, source: str = "datalist") -> dict:
    """Hold out the last ``val_fraction`` of ``training`` as ``validation`` when no validation list exists.

    With one training item, that item is used for both (a smoke run on a single image still validates).
    """
    train = list(lists.get("training") or [])
    val = list(lists.get("validation") or [])
    if not train:
        raise ValueError(f"{source}: no training items")
    if not val:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
        n_val = int(round(len(train) * val_fraction))
        if len(train) == 1 or n_val == 0:
            val = train[-1:]
        else:
            val, train = train[-n_val:], train[:-n_val]
    out = dict(lists)
    out["training"], out["validation"] = train, val
    return out


def limit(items: Sequence, n: int | None) -> list:
    """Return the first ``n`` items (all of them when ``n`` is ``None`` or not positive)."""
    items = list(items)
    return items if n is None or int(n) <= 0 else items[: int(n)]


def find_checkpoint(path: str | os.PathLike) -> str:
    """Return a checkpoint file: ``path`` itself, or the newest ``*.pt`` under the folder ``path``.

    A folder is searched recursively; the ``best`` checkpoint (file name containing ``best``) wins over the
    newest when both exist, since it is the one validation picked.

    Raises:
        FileNotFoundError: naming the path when nothing is found.
    """
    p = Path(path)
    if p.is_file():
        return str(p)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint '{path}': no such file or folder (train the bundle first)")
    files = [f for f in p.rglob("*.pt") if f.is_file()]
    if not files:
        raise FileNotFoundError(f"checkpoint '{path}': folder holds no .pt file (train the bundle first)")
    best = [f for f in files if "best" in f.name]
    pool = best or files
    return str(max(pool, key=lambda f: (f.stat().st_mtime, f.name)))


def load_generator(network: torch.nn.Module, checkpoint: str | os.PathLike | None, use_ema: bool = False):
    """Load generator weights into ``network`` from a checkpoint file or run folder; return the network.

    ``checkpoint`` is a file (medsr checkpoint, MONAI ``CheckpointSaver`` file or plain state dict) or a
    folder searched with :func:`find_checkpoint`; the loading itself is
    :func:`medsr.pipeline.engines.checkpoint.load_generator_weights`. ``None`` or ``""`` returns the network
    untouched (random weights: tests and dry runs).
    """
    if checkpoint is None or str(checkpoint) == "":
        return network
    from medsr.pipeline.engines.checkpoint import load_generator_weights

    return load_generator_weights(network, find_checkpoint(checkpoint), use_ema=use_ema)


def list_bundles(root: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """List the bundles under ``root`` (default: the repo's ``bundles/``) with name, version and description."""
    import json

    root = Path(root) if root is not None else BUNDLES_DIR
    out = []
    for meta in sorted(root.glob("*/metadata.json")):
        info = json.loads(meta.read_text(encoding="utf-8"))
        out.append(
            {
                "name": meta.parent.name,
                "version": str(info.get("version", "")),
                "description": str(info.get("description", "")),
                "path": str(meta.parent),
            }
        )
    return out


def bundle_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Return the folder of bundle ``name`` (or ``name`` itself when it is a bundle folder)."""
    p = Path(name)
    if (p / "train.json").is_file():
        return p
    root = Path(root) if root is not None else BUNDLES_DIR
    cand = root / name
    if not (cand / "train.json").is_file():
        names = [b["name"] for b in list_bundles(root)]
        raise ValueError(f"bundle '{name}': not found under {root} (known: {', '.join(names) or 'none'})")
    return cand


def ddp_backend() -> str:
    """``nccl`` with CUDA, ``gloo`` on CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def ddp_device() -> torch.device:
    """This process's device under ``torchrun``: ``cuda:LOCAL_RANK`` with CUDA, else CPU."""
    if torch.cuda.is_available():
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(rank)
        return torch.device(f"cuda:{rank}")
    return torch.device("cpu")


def fit_stages(patch_size: Sequence[int], stages: int) -> int:
    """Largest number of stride-2 discriminator stages (at most ``stages``) that the HR patch allows."""
    smallest = min(int(p) for p in patch_size)
    if smallest < 2:
        raise ValueError(f"patch_size: {tuple(patch_size)} is too small for a discriminator (every axis needs >= 2)")
    return max(1, min(int(stages), int(math.floor(math.log2(smallest)))))


def perceptual_weight(weight: float, weights_path: str | os.PathLike | None, name: str = "perceptual") -> float:
    """``weight`` when a local weights file is given, else 0 with a warning (nothing is downloaded).

    The studies' VGG19/MobileNetV2 content losses need ImageNet weights; medsr never downloads them, so a
    bundle run without ``--vgg_weights`` trains without that term and says so.
    """
    import warnings

    if weights_path:
        if not Path(weights_path).is_file():
            raise ValueError(f"{name} weights '{weights_path}': file not found")
        return float(weight)
    if float(weight) != 0.0:
        warnings.warn(
            f"{name} loss is off: no local weights were given (pass --vgg_weights /path/to/weights.pth to use "
            "the study's full loss; nothing is downloaded)",
            stacklevel=2,
        )
    return 0.0


def augmentations(
    enabled: bool,
    spatial_dims: int,
    patch_size: Sequence[int],
    scale: Any,
    keys: Sequence[str] = ("image", "mask", "label"),
) -> list:
    """Random flips on every spatial axis and in-plane 90° rotations (when the in-plane patch is square).

    Used on the HR patch before pairing (the edsr_ise_gan study's "random flip & rotations"); an empty list
    when ``enabled`` is false.
    """
    from monai.transforms import RandFlipd, RandRotate90d

    if not enabled:
        return []
    out: list = [
        RandFlipd(keys=list(keys), prob=0.5, spatial_axis=ax, allow_missing_keys=True) for ax in range(spatial_dims)
    ]
    factors = parse_scale(scale, spatial_dims)
    if patch_size[0] == patch_size[1] and factors[0] == factors[1]:
        out.append(RandRotate90d(keys=list(keys), prob=0.5, spatial_axes=(0, 1), allow_missing_keys=True))
    return out


def feature_channels(network: torch.nn.Module, spatial_dims: int, in_channels: int, size: int = 8) -> list[int]:
    """Channel widths of the feature maps ``network(x, return_features=True)`` returns (one tiny forward)."""
    net = network.module if hasattr(network, "module") else network
    param = next(net.parameters())
    x = torch.zeros(1, in_channels, *([size] * spatial_dims), device=param.device)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        _, feats = net(x, return_features=True)
    net.train(was_training)
    return [int(f.shape[1]) for f in feats]


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


def inference_inputs(
    input_files: Any = None,
    datalist: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    spatial_dims: int = 2,
    limit_n: int | None = None,
) -> list[str]:
    """Files to upscale: ``input_files`` (a path or list), else the validation images of the bundle's data.

    A folder given as ``input_files`` is one input when it is a DICOM series, else its image files.
    """
    from medsr.pipeline.inference import is_dicom

    if input_files:
        items = [input_files] if isinstance(input_files, (str, os.PathLike)) else list(input_files)
        out = []
        for item in items:
            p = Path(item)
            if not p.exists():
                raise ValueError(f"input_files: '{item}' does not exist")
            if p.is_dir() and not is_dicom(p):
                out += sorted(str(f) for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            else:
                out.append(str(p))
        return out
    lists = resolve_datalist(datalist, dataset_dir, spatial_dims)
    return limit([item["image"] for item in lists["validation"]], limit_n)


class PairDegradation:
    """The training pairs' HR->LR degradation as an image callable, for the evaluation report's ``degrade=``.

    It applies :class:`medsr.transforms.SimulateLowResolution` with the settings of a
    :class:`medsr.transforms.MakeSRPaird` (its scale factor, profile, k-space and window; noise off, so the
    data-consistency check is deterministic) on a unit-spacing grid, i.e. in voxel units: the factor per axis
    is the pair's ``scale_factor`` whatever affine the image carries (an SR output's affine may be the LR
    one). ``degrade(hr)`` therefore reproduces the pair's LR exactly, on the same grid (LR voxel ``j`` at the
    centre of HR block ``j``, ``floor(n / f)`` voxels).

    Args:
        pair: the bundle's ``MakeSRPaird`` (``@data#pair``); or ``None`` with ``scale_factor``/``mode``.
        scale_factor: per-axis integer factor when no ``pair`` is given.
        mode: ``"physical"`` or ``"bicubic"`` when no ``pair`` is given.
    """

    def __init__(self, pair: Any = None, scale_factor: Any = None, mode: str = "physical") -> None:
        if pair is not None:
            if getattr(pair, "scale_factor", None) is None:
                raise ValueError("PairDegradation: the pair must be built with scale_factor (not target_spacing)")
            kwargs = dict(pair.degrade_kwargs)
            scale_factor = pair.scale_factor
        else:
            if scale_factor is None:
                raise ValueError("PairDegradation: give pair (a MakeSRPaird) or scale_factor")
            if mode not in ("physical", "bicubic"):
                raise ValueError(f"PairDegradation mode: expected 'physical' or 'bicubic', got {mode!r}")
            kwargs = {"profile": "bicubic" if mode == "bicubic" else "gaussian"}
        if kwargs.get("thickness") is not None or any(float(g) != 0 for g in _as_list(kwargs.get("gap", 0.0))):
            raise ValueError("PairDegradation: slice thickness/gap are in mm; evaluate with the default thickness")
        kwargs.pop("thickness", None)
        kwargs.pop("gap", None)
        kwargs.update(noise=None, noise_std=0.0, photons=None)
        self.scale_factor, self.kwargs = scale_factor, kwargs

    def __call__(self, img: Any) -> torch.Tensor:
        from monai.data import MetaTensor

        from medsr.transforms import SimulateLowResolution

        x = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        if x.ndim not in (3, 4):
            raise ValueError(f"PairDegradation: expected a channel-first 2D/3D image, got shape {tuple(x.shape)}")
        factors = parse_scale(self.scale_factor, x.ndim - 1)
        target = tuple(float(f) if f > 1 else None for f in factors)
        lr = SimulateLowResolution(target, **self.kwargs)(MetaTensor(x.float(), affine=torch.eye(4)))
        return lr.as_tensor()


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def key_if_present(items: Sequence[Mapping], key: str) -> str | None:
    """``key`` when every item of a datalist has it, else ``None`` (e.g. a region metric's ``mask_key``)."""
    items = list(items)
    return key if items and all(isinstance(i, Mapping) and i.get(key) for i in items) else None


def label_names(
    names: Any = None, datalist: str | os.PathLike | None = None, dataset_dir: str | os.PathLike | None = None
) -> dict[int, str] | None:
    """Names of label-map values for the evaluation report (``{1: "tumour", 2: "healthy"}``).

    Order of precedence: ``names`` (a dict, or its JSON text; keys are label values); else a ``label_names``
    (or ``label_classes``) mapping in the datalist JSON; else, for the embedded demo dataset (no datalist
    and no dataset_dir), its tissue classes; else ``None`` (regions are named ``label_<v>``).

    Raises:
        ValueError: naming the value when a key is not an integer label.
    """
    import json

    source = "label_names"
    if names is None and datalist is not None:
        try:
            content = json.loads(Path(datalist).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"datalist '{datalist}': cannot read it as JSON ({err})") from err
        if isinstance(content, Mapping):
            names = content.get("label_names", content.get("label_classes"))
            source = f"datalist '{datalist}' label_names"
    elif names is None and dataset_dir is None:
        from medsr.pipeline.data.demo import ensure_demo_dataset

        names = ensure_demo_dataset(progress=False)["summary"].get("label_classes")
        source = "demo dataset label_classes"
    if names is None:
        return None
    if isinstance(names, str):
        try:
            names = json.loads(names)
        except json.JSONDecodeError as err:
            raise ValueError(f'{source}: expected a JSON object such as \'{{"1": "tumour"}}\', got {names!r}') from err
    if not isinstance(names, Mapping):
        raise ValueError(f"{source}: expected a mapping of label value to name, got {type(names).__name__}")
    out = {}
    for k, v in names.items():
        try:
            out[int(k)] = str(v)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: key {k!r} is not an integer label value") from err
    return out
