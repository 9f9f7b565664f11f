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

import torch

from medsr.pipeline.bundles import BUNDLES_DIR, inline_references
from medsr.pipeline.models import load_generator, read_model_info, save_model

__all__ = ["SCHEMA", "export_bundle", "inline_references", "verify_bundle"]

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


def verify_bundle(bundle: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> list[str]:
    """Check a bundle's declared data format against its network; returns what was checked.

    Args:
        bundle: a bundle folder (with ``metadata.json`` and ``inference.json``).
        checkpoint: weights to build the network from (a self-describing checkpoint gives its own network);
            default: the config's ``network_def`` with random weights (shapes do not depend on weights).

    Raises:
        ValueError: naming the first declaration that does not hold.
    """
    import jsonschema
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    from medsr.pipeline.inference import SRSlidingWindowInferer

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
    parser = ConfigParser()
    parser.read_config(str(folder / "inference.json"))
    parser["device"] = "cpu"
    with _cwd(folder.parent.parent):
        net = parser.get_parsed_content("network_def", instantiate=True, lazy=False)
    net = load_generator(net, checkpoint).eval() if checkpoint else net.eval()
    fmt = meta["network_data_format"]
    (in_name, inp), (out_name, out) = next(iter(fmt["inputs"].items())), next(iter(fmt["outputs"].items()))
    scale = [int(s) for s in out["scale"]]
    for n in (1, 2):
        lr_shape, hr_shape = _shape(inp["spatial_shape"], n), _shape(out["spatial_shape"], n)
        if len(scale) != len(lr_shape):
            raise ValueError(f"bundle '{folder.name}': scale {scale} has not one factor per axis of {lr_shape}")
        if [a * s for a, s in zip(lr_shape, scale)] != hr_shape:
            raise ValueError(
                f"bundle '{folder.name}': declared output shape {hr_shape} is not scale {scale} x input {lr_shape}"
            )
        spacing = [0.7 + 0.1 * i for i in range(len(lr_shape))]
        affine = torch.diag(torch.tensor([*spacing, *([1.0] * (3 - len(spacing))), 1.0], dtype=torch.float64))
        x = MetaTensor(torch.rand(1, int(inp["num_channels"]), *lr_shape, dtype=getattr(torch, inp["dtype"])))
        x.affine = affine
        with torch.no_grad():
            y = SRSlidingWindowInferer(roi_size=lr_shape, scale=scale, device="cpu")(x, net)
        got = list(y.shape[2:])
        if got != hr_shape:
            raise ValueError(
                f"bundle '{folder.name}': {type(net).__name__} maps {in_name} {lr_shape} to {got}, but metadata "
                f"declares {out_name} {hr_shape} (scale {scale})"
            )
        if int(y.shape[1]) != int(out["num_channels"]) or str(y.dtype).removeprefix("torch.") != out["dtype"]:
            raise ValueError(
                f"bundle '{folder.name}': output has {y.shape[1]} channels of {y.dtype}, metadata declares "
                f"{out['num_channels']} of {out['dtype']}"
            )
        out_spacing = torch.linalg.norm(torch.as_tensor(y.affine)[:3, : len(lr_shape)], dim=0).tolist()
        want = [s / f for s, f in zip(spacing, scale)]
        if any(abs(a - b) > 1e-6 for a, b in zip(out_spacing, want)):
            raise ValueError(f"bundle '{folder.name}': output spacing {out_spacing} is not input {spacing} / {scale}")
    checked.append(f"{type(net).__name__}: output shape = {scale} x input, spacing = input / {scale}, channels, dtype")
    return checked


class _cwd:
    def __init__(self, path: Path) -> None:
        self.path, self.old = path, None

    def __enter__(self):
        self.old = os.getcwd()
        os.chdir(self.path)

    def __exit__(self, *exc):
        os.chdir(self.old)


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
    for name in ("metadata.json", "logging.conf"):
        shutil.copyfile(src / name, dest / "configs" / name)
    if (src / "README.md").is_file():
        shutil.copyfile(src / "README.md", dest / "docs" / "README.md")
    for lic in (src / "LICENSE", repo / "LICENSE"):
        if lic.is_file():
            shutil.copyfile(lic, dest / "LICENSE")
            break
    return dest
