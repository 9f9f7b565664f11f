"""How much a 2D model's output depends on the intensity window its input is normalized with.

``medsr upscale`` maps each image's 0.5th/99.5th percentiles to 0/1 before the network and maps the output
back. A network with biases is not equivariant to that map: another window (0/100, 1/99, 2/98...) gives
another output, not just other units. This script measures by how much. For every model and every image of
the external (out-of-distribution) and held-out sets (antialiased-bicubic LR at the model's scale, as in
``bench_quality.py``), the LR is normalized with each window, the model runs on the whole image, the output
is mapped back and clipped to the LR's value range (as ``medsr upscale`` does), and the gain over cubic
B-spline is printed per window, with the largest change across windows. An intensity-equivariant model
(``RDN(equivariant=True)``: ``f(a * x + b) = a * f(x) + b``) gives the same output for every window.

Run from the repository root (after ``benchmarks/fetch_external.sh``)::

    python benchmarks/bench_intensity.py                          # the x2 and x4 defaults
    python benchmarks/bench_intensity.py --models rdn_x2_multiscale rdn_x2_equivariant --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from bench_quality import EXTERNAL, _read_any, _scores

from medsr.pipeline.data.demo import ensure_demo_dataset
from medsr.pipeline.evaluation.baselines import upsample
from medsr.pipeline.inference import clip_to_input, invert_intensity
from medsr.pipeline.models import load_model, pick_model, shipped_models
from medsr.transforms import MakeSRPaird
from medsr.transforms._utils import percentile_normalize

WINDOWS = ((0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (2.0, 98.0))  # the first is medsr's


def images(sets: list[str]) -> list[tuple[str, str, Path]]:
    """(set, name, path) of the external and/or held-out images."""
    from medsr.pipeline.data.corpus import ensure_corpus_dataset

    out = []
    if "external" in sets:
        folder = Path(ensure_demo_dataset()["cache_root"]) / "external"
        missing = [f for f in EXTERNAL if not (folder / f).is_file()]
        if missing:
            raise SystemExit(f"external set: {folder} lacks {missing}; run benchmarks/fetch_external.sh first")
        out += [("external", Path(f).stem, folder / f) for f in EXTERNAL]
    if "heldout" in sets:
        corpus = ensure_corpus_dataset(progress=False)
        for e in json.loads(Path(corpus["datalist_2d"]).read_text())["validation"]:
            out.append(("heldout", e["source"], Path(corpus["root"]) / e["image"]))
    return out


@torch.no_grad()
def gains(network: torch.nn.Module, scale: int, items: list[tuple[str, str, Path]]) -> list[dict]:
    """One row per image: the gain over cubic (dB) under each window."""
    pair = MakeSRPaird(image_key="image", mask_keys=[], label_keys=[], scale_factor=scale, mode="bicubic")
    rows = []
    for set_name, name, path in items:
        p = pair({"image": _read_any(str(path))})
        lr, hr = p["lr"].as_tensor().float(), p["hr"].as_tensor().float()
        cubic = _scores(upsample(lr, hr.shape[1:], "cubic"), hr)[0]
        row = {"set": set_name, "image": name}
        for lower, upper in WINDOWS:  # medsr upscale's normalization, inverse and clip, with another window
            item = {"image": percentile_normalize(lr, lower, upper, clip=False)}
            out = clip_to_input(invert_intensity(network(item["image"][None])[0], item), item)
            row[f"{lower:g}/{upper:g}"] = _scores(out, hr)[0] - cubic
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", nargs="*", default=None, help="shipped 2D model names (default: the x2 and x4 defaults)"
    )
    ap.add_argument("--models_root", default=None, help="folder of <bundle>/models/*.pt (default: bundles/)")
    ap.add_argument("--sets", nargs="*", default=["external", "heldout"], choices=["external", "heldout"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m for m in shipped_models(args.models_root) if m["spatial_dims"] == 2]
    if args.models is None:
        picked = {pick_model(2, s, models=models)[0]["name"] for s in (2, 4)}
        models = [m for m in models if m["name"] in picked]
    else:
        unknown = sorted(set(args.models) - {m["name"] for m in models})
        if unknown:
            print(f"--models: no shipped 2D model named {unknown}", file=sys.stderr)
            return 2
        models = [m for m in models if m["name"] in args.models]
    items = images(args.sets)
    keys = [f"{lo:g}/{up:g}" for lo, up in WINDOWS]
    print(f"gain over cubic (dB) by normalization window (lower/upper percentile; {keys[0]} is medsr's)")
    for info in models:
        network, info = load_model(info["path"])
        rows = gains(network.eval(), int(info["scale"][0]), items)
        print(f"\n{info['name']} (x{info['scale'][0]})")
        print(f"{'image':<34}" + "".join(f"{k:>10}" for k in keys) + f"{'spread':>10}")
        for r in rows:
            vals = [r[k] for k in keys]
            print(f"{r['set'][:4] + ' ' + r['image']:<34}" + "".join(f"{v:>+10.2f}" for v in vals)
                  + f"{max(vals) - min(vals):>10.2f}")  # fmt: skip
        for set_name in args.sets:
            sub = [r for r in rows if r["set"] == set_name]
            means = [float(np.mean([r[k] for r in sub])) for k in keys]
            print(f"{set_name + ' mean':<34}" + "".join(f"{v:>+10.3f}" for v in means))
    return 0


if __name__ == "__main__":
    sys.exit(main())
