"""MONAI model-zoo conventions for the medsr bundles: checking what a bundle declares, exporting a bundle.

* :func:`verify_bundle` (``medsr bundles verify NAME``): the network's output shape is the declared scale
  times the input (``network_data_format``), the output spacing is the input spacing divided by the scale,
  channels and dtype as declared, and the metadata passes the local schema
  (``bundles/common/meta_schema.json``, no download). MONAI's own ``verify_net_in_out`` checks channels and
  dtype only, so a 4x network declared 2x passed it; here it fails.
* :func:`export_bundle` (``medsr bundles export NAME DIR``): a self-contained model-zoo bundle, ``configs/``
  (every ``%bundles/common/...`` reference inlined), ``models/model.pt`` (a self-describing model file),
  ``docs/README.md`` and ``LICENSE``, that runs ``inferring`` from any folder with
  ``--bundle_root DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from medsr.pipeline.bundles import BUNDLES_DIR, inline_references
from medsr.pipeline.io import atomic_open
from medsr.pipeline.models import load_generator, read_model_info, save_model

__all__ = [
    "SCHEMA",
    "described_model",
    "export_bundle",
    "inline_references",
    "metadata_for_model",
    "verify_bundle",
    "verify_model_file",
]

SCHEMA = BUNDLES_DIR / "common" / "meta_schema.json"


def _shape(spec: list, n: int = 1) -> list[int]:
    out = []
    for item in spec:
        if isinstance(item, int):
            out.append(item)
        elif isinstance(item, str) and item.endswith("*n") and item[:-2].isdigit():
            out.append(int(item[:-2]) * n)
        elif item == "*":
            out.append(8 * n)
        else:
            raise ValueError(f"spatial_shape item {item!r}: expected an integer, '*' or 'K*n'")
    return out


def _check_maps(
    label: str,
    net: torch.nn.Module,
    lr_shapes: list[list[int]],
    scale: list[int],
    channels: tuple[int, int],
    dtype: str,
) -> None:
    """Run ``net`` on each LR shape: the output must be ``scale`` x input, with ``channels[1]`` channels of
    ``dtype`` and the spacing divided by the scale (same physical extent)."""
    from monai.data import MetaTensor

    from medsr.pipeline.inference import SRSlidingWindowInferer

    for lr_shape in lr_shapes:
        if len(scale) != len(lr_shape):
            raise ValueError(f"{label}: scale {scale} has not one factor per axis of {lr_shape}")
        hr_shape = [a * s for a, s in zip(lr_shape, scale)]
        spacing = [0.7 + 0.1 * i for i in range(len(lr_shape))]
        affine = torch.diag(torch.tensor([*spacing, *([1.0] * (3 - len(spacing))), 1.0], dtype=torch.float64))
        x = MetaTensor(torch.rand(1, channels[0], *lr_shape, dtype=getattr(torch, dtype)))
        x.affine = affine
        with torch.no_grad():
            y = SRSlidingWindowInferer(roi_size=lr_shape, scale=scale, device="cpu")(x, net)
        got = list(y.shape[2:])
        if got != hr_shape:
            raise ValueError(f"{label}: {type(net).__name__} maps {lr_shape} to {got}, not scale {scale} x input")
        if int(y.shape[1]) != channels[1] or str(y.dtype).removeprefix("torch.") != dtype:
            raise ValueError(
                f"{label}: output has {y.shape[1]} channels of {y.dtype}, expected {channels[1]} of {dtype}"
            )
        out_spacing = torch.linalg.norm(torch.as_tensor(y.affine)[:3, : len(lr_shape)], dim=0).tolist()
        want = [s / f for s, f in zip(spacing, scale)]
        if any(abs(a - b) > 1e-6 for a, b in zip(out_spacing, want)):
            raise ValueError(f"{label}: output spacing {out_spacing} is not input {spacing} / {scale}")


def _model_file_channels(info: dict) -> tuple[int, int]:
    args = info.get("network", {}).get("args", {})
    return int(args.get("in_channels", 1)), int(args.get("out_channels", args.get("in_channels", 1)))


def described_model(folder: str | os.PathLike, meta: dict | None = None) -> Path | None:
    """The shipped model file that a bundle's ``metadata.json`` describes: its ``model_file`` (relative to the
    bundle), else ``models/model.pt`` when it exists (MONAI's model-zoo convention), else ``None`` (the metadata
    then describes the bundle's configured network)."""
    folder = Path(folder)
    if meta is None:
        meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    path = folder / str(meta.get("model_file", "models/model.pt"))
    return path if path.is_file() else None


def verify_model_file(path: str | os.PathLike) -> str:
    """Check a shipped model file against its own record: the network it rebuilds maps an LR input to its
    recorded scale x input (8 and 16 voxels per axis), spacing / scale; returns what was checked.

    Raises:
        ValueError: naming the file when it is unreadable or its network does not do what it records.
    """
    from medsr.pipeline.models import load_model, read_model_info

    if read_model_info(path).get("role") == "prior":  # selfsr's starting network: one head per factor
        from medsr.pipeline.selfsr.prior import prior_network, read_prior

        record = read_prior(path)
        for s in record["factors"]:
            net = prior_network(record, int(s))
            _check_maps(
                f"model '{path}' (x{s} head)", net, [[8 * n] * 2 for n in (1, 2)], [1, int(s)], (1, 1), "float32"
            )
        return f"{Path(path).parent.name}/{Path(path).name} ({record.get('name')}): selfsr prior, 2D, output = (1, s) x input for s in {record['factors']}"
    net, info = load_model(path)
    scale, dims = [int(s) for s in info["scale"]], int(info["spatial_dims"])
    _check_maps(f"model '{path}'", net, [[8 * n] * dims for n in (1, 2)], scale, _model_file_channels(info), "float32")
    return f"{Path(path).parent.name}/{Path(path).name} ({info.get('name')}): {dims}D, output = {scale} x input as recorded"


def verify_bundle(bundle: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> list[str]:
    """Check a bundle's declared data format against its network, and its shipped model files; returns what was
    checked.

    The metadata describes ``checkpoint`` when given, else the shipped model file it names
    (:func:`described_model`: the recorded scale and dimension must be the declared ones), else the config's
    ``network_def`` (random weights: shapes do not depend on weights). Every other ``models/*.pt`` is checked
    against its own recorded scale (:func:`verify_model_file`), so a new model file needs no metadata edit. A
    bundle whose ``scale`` is text (``selfsr``: a network trained per scan) has its schema checked only.

    Args:
        bundle: a bundle folder (with ``metadata.json`` and ``inference.json``).
        checkpoint: weights to build the network from (a self-describing checkpoint gives its own network).

    Raises:
        ValueError: naming the first declaration that does not hold.
    """
    import jsonschema
    from monai.bundle import ConfigParser

    folder = Path(bundle)
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    checked = []
    try:
        jsonschema.validate(meta, json.loads(SCHEMA.read_text(encoding="utf-8")))
    except jsonschema.ValidationError as err:
        raise ValueError(
            f"bundle '{folder.name}': metadata.json: {err.message} (at {list(err.absolute_path)})"
        ) from None
    checked.append("metadata matches bundles/common/meta_schema.json")
    fmt = meta["network_data_format"]
    (in_name, inp), (out_name, out) = next(iter(fmt["inputs"].items())), next(iter(fmt["outputs"].items()))
    described = None if checkpoint else described_model(folder, meta)
    if isinstance(out["scale"], str):  # no fixed network (selfsr): nothing to run
        checked.append(f"scale: {out['scale']}")
    else:
        scale = [int(s) for s in out["scale"]]
        lr_shapes = [_shape(inp["spatial_shape"], n) for n in (1, 2)]
        for n, lr_shape in zip((1, 2), lr_shapes):
            hr_shape = _shape(out["spatial_shape"], n)
            if len(scale) != len(lr_shape):
                raise ValueError(f"bundle '{folder.name}': scale {scale} has not one factor per axis of {lr_shape}")
            if [a * s for a, s in zip(lr_shape, scale)] != hr_shape:
                raise ValueError(
                    f"bundle '{folder.name}': declared output shape {hr_shape} is not scale {scale} x input {lr_shape}"
                )
        if described is not None:
            from medsr.pipeline.models import load_model

            net, info = load_model(described)
            recorded = [int(s) for s in info["scale"]]
            if recorded != scale or int(info["spatial_dims"]) != len(scale):
                raise ValueError(
                    f"bundle '{folder.name}': metadata.json declares {out_name} scale {scale} ({len(scale)}D), but "
                    f"{described.relative_to(folder)} ({info.get('name')}) records {recorded} "
                    f"({info['spatial_dims']}D)"
                )
            what = f"{described.relative_to(folder)} ({info.get('name')})"
        else:
            parser = ConfigParser()
            parser.read_config(str(folder / "inference.json"))
            parser["device"] = "cpu"
            with _cwd(folder.parent.parent):
                net = parser.get_parsed_content("network_def", instantiate=True, lazy=False)
            net = load_generator(net, checkpoint) if checkpoint else net
            what = type(net).__name__
        try:
            _check_maps(
                f"bundle '{folder.name}'",
                net.eval(),
                lr_shapes,
                scale,
                (int(inp["num_channels"]), int(out["num_channels"])),
                inp["dtype"],
            )
        except ValueError as err:
            raise ValueError(f"{err} (metadata declares {in_name} -> {out_name}, scale {scale})") from None
        checked.append(f"{what}: output shape = {scale} x input, spacing = input / {scale}, channels, dtype")
    for path in sorted((folder / "models").glob("*.pt")) if (folder / "models").is_dir() else []:
        if described is None or path.resolve() != described.resolve():
            checked.append(verify_model_file(path))
    return checked


class _cwd:
    def __init__(self, path: Path) -> None:
        self.path, self.old = path, None

    def __enter__(self):
        self.old = os.getcwd()
        os.chdir(self.path)

    def __exit__(self, *exc):
        os.chdir(self.old)


def metadata_for_model(meta: dict[str, Any], info: dict[str, Any], model_file: str = "models/model.pt") -> dict:
    """A copy of bundle metadata whose ``network_data_format`` describes the model file ``info`` (its recorded
    dimension and scale; input shapes kept when the dimension is the same) and names it (``model_file``)."""
    meta = json.loads(json.dumps(meta))
    scale, dims = [int(s) for s in info["scale"]], int(info["spatial_dims"])
    fmt = meta["network_data_format"]
    inp, out = next(iter(fmt["inputs"].values())), next(iter(fmt["outputs"].values()))
    if len(inp["spatial_shape"]) != dims:
        inp["spatial_shape"] = ["8*n"] * dims

    def times(item: Any, factor: int) -> Any:
        if isinstance(item, int):
            return item * factor
        if isinstance(item, str) and item.endswith("*n") and item[:-2].isdigit():
            return f"{int(item[:-2]) * factor}*n"
        return item

    out["spatial_shape"] = [times(i, f) for i, f in zip(inp["spatial_shape"], scale)]
    out["scale"] = scale
    meta["model_file"] = model_file
    return meta


def export_bundle(
    bundle: str | os.PathLike, dest: str | os.PathLike, checkpoint: str | os.PathLike | None = None
) -> Path:
    """Write a self-contained model-zoo bundle of ``bundle`` into ``dest``; returns ``dest``.

    ``configs/`` holds ``inference.json``, ``train.json``, ``evaluate.json`` (shared parts inlined),
    ``metadata.json`` and ``logging.conf``; ``models/model.pt`` is ``checkpoint`` (default: the newest run's
    best model, else the bundle's shipped ``models/model.pt``) as a self-describing model file; the
    inference config loads it from ``$@bundle_root + '/models/model.pt'``. Run it with
    ``python -m monai.bundle run inferring --config_file DEST/configs/inference.json --bundle_root DEST``.

    Raises:
        FileNotFoundError: when there is no checkpoint to ship.
    """
    from medsr.pipeline.engines.checkpoint import find_checkpoint
    from medsr.pipeline.runs import run_checkpoints

    src = Path(bundle)
    repo = src.parent.parent
    dest = Path(dest)
    if checkpoint is None:
        shipped = src / "models" / "model.pt"
        try:
            checkpoint = find_checkpoint(run_checkpoints(repo / "runs" / src.name))
        except FileNotFoundError:
            if not shipped.is_file():
                raise FileNotFoundError(
                    f"bundle '{src.name}': no trained run in runs/{src.name} and no models/model.pt to export "
                    "(train it first, or pass a checkpoint)"
                ) from None
            checkpoint = shipped
    checkpoint = find_checkpoint(checkpoint)
    for sub in ("configs", "models", "docs"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    info = read_model_info(checkpoint)
    if info.get("network"):  # already self-describing: copy as it is
        shutil.copyfile(checkpoint, dest / "models" / "model.pt")
    else:  # weights only: describe it with the bundle's network
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(src / "inference.json"))
        with _cwd(repo):
            net = parser.get_parsed_content("network_def", instantiate=True, lazy=False)
        save_model(load_generator(net, checkpoint), dest / "models" / "model.pt", half=False)
    for name in ("inference.json", "train.json", "evaluate.json"):
        if not (src / name).is_file():
            continue
        config = inline_references(json.loads((src / name).read_text(encoding="utf-8")), repo)
        config["bundle_root"] = "."
        if name == "inference.json":
            config["checkpoint"] = "$@bundle_root + '/models/model.pt'"
            config["ckpt_dir"] = "$@bundle_root + '/models'"
        (dest / "configs" / name).write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    meta = json.loads((src / "metadata.json").read_text(encoding="utf-8"))
    meta = metadata_for_model(meta, read_model_info(dest / "models" / "model.pt"))
    with atomic_open(dest / "configs" / "metadata.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(meta, indent=4) + "\n")
    shutil.copyfile(src / "logging.conf", dest / "configs" / "logging.conf")
    if (src / "README.md").is_file():
        shutil.copyfile(src / "README.md", dest / "docs" / "README.md")
    for lic in (src / "LICENSE", repo / "LICENSE"):
        if lic.is_file():
            shutil.copyfile(lic, dest / "LICENSE")
            break
    return dest
