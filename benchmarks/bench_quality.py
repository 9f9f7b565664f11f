"""Quality of the shipped models against interpolation on data they never saw: the demo test split.

For every shipped 2D model and every test image of the demo dataset (MNI T1 slices in three orientations,
fundus and IHC tiles; ``datalist_2d.json`` ``test``), the HR image is degraded to LR with the model's scale
(bicubic pairs and physical pairs: Gaussian slice profile, FWHM = LR spacing), written as NIfTI and upscaled
by ``medsr upscale``'s own code path (:func:`medsr.pipeline.inference.upscale_with_model`), and scored
against the HR image in its own units (data range = the HR image's range), side by side with cubic B-spline
and Lanczos-3 interpolation of the same LR. The 3D model is scored on the test slab of the MNI T1
(``datalist_3d.json``) at its per-axis scale, inside the brain mask, against cubic B-spline.

Run from the repository root::

    python benchmarks/bench_quality.py                 # all shipped models, both degradations
    python benchmarks/bench_quality.py --json benchmarks/results/quality.json

Prints mean and median PSNR/SSIM per modality, scale, degradation and method.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.transforms import EnsureChannelFirst, LoadImage

from medsr.pipeline.data.demo import ensure_demo_dataset
from medsr.pipeline.data.readers import MedicalImageReader
from medsr.pipeline.evaluation.baselines import upsample
from medsr.pipeline.inference import save_nifti, upscale_with_model
from medsr.pipeline.metrics.functional import psnr, region_psnr, region_ssim, ssim
from medsr.pipeline.models import load_model, shipped_models
from medsr.transforms import MakeSRPaird


def lanczos(lr: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Lanczos-3 (PIL) of a one-channel 2D image to ``shape`` (MONAI (x, y) order, half-pixel centres)."""
    from PIL import Image

    arr = lr[0].numpy().astype(np.float32).T
    out = Image.fromarray(arr, mode="F").resize((shape[0], shape[1]), Image.LANCZOS)
    return torch.from_numpy(np.asarray(out, dtype=np.float32).T.copy())[None]


def _read(path: str) -> torch.Tensor:
    img = LoadImage(reader=MedicalImageReader(luminance=True), image_only=True)(path)
    return EnsureChannelFirst()(img)


def _modality(item: dict) -> str:
    return item.get("modality", "?")


def _scores(pred: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, float]:
    rng = float(hr.max() - hr.min()) or 1.0
    p, h = pred.float()[None], hr.float()[None]
    if mask is None:
        return float(psnr(p, h, rng)[0]), float(ssim(p, h, rng)[0])
    regions = {"brain": mask.bool()}
    sd = hr.ndim - 1
    return (
        float(region_psnr(pred.float(), hr.float(), regions, rng, spatial_dims=sd)["brain"].value),
        float(region_ssim(pred.float(), hr.float(), regions, rng, spatial_dims=sd)["brain"].value),
    )


def bench_2d(models: list[dict], root: Path, degradations: list[str], limit: int, tmp: Path) -> list[dict]:
    lists = json.loads((root / "datalist_2d.json").read_text())
    items = lists["test"][:limit] if limit else lists["test"]
    rows = []
    for info in models:
        network, info = load_model(info["path"])
        s = int(info["scale"][0])
        for deg in degradations:
            pair = MakeSRPaird(image_key="image", mask_keys=[], label_keys=[], scale_factor=s, mode=deg)
            for i, item in enumerate(items):
                hr_img = _read(str(root / item["image"]))
                p = pair({"image": hr_img})
                lr, hr = p["lr"], p["hr"]
                lr_path = tmp / f"lr_{i}.nii.gz"
                save_nifti(lr, lr_path)
                start = time.perf_counter()
                rec = upscale_with_model(lr_path, tmp / f"sr_{i}.nii.gz", network=network, info=info, progress=False)
                seconds = time.perf_counter() - start
                sr = _read(rec["output"])
                lr_t, hr_t = lr.as_tensor().float(), hr.as_tensor().float()
                for method, pred in (
                    ("cubic", upsample(lr_t, hr_t.shape[1:], "cubic")),
                    ("lanczos", lanczos(lr_t, tuple(hr_t.shape[1:]))),
                    (info["name"], sr.as_tensor().float()),
                ):
                    ps, ss = _scores(pred, hr_t)
                    rows.append(dict(modality=_modality(item), scale=f"x{s}", degradation=deg, method=method,
                                     model=info["name"], psnr=ps, ssim=ss, seconds=seconds if method == info["name"] else None))  # fmt: skip
    return rows


def bench_3d(models: list[dict], root: Path, tmp: Path) -> list[dict]:
    lists = json.loads((root / "datalist_3d.json").read_text())
    rows = []
    for info in models:
        network, info = load_model(info["path"])
        for item in lists["test"]:
            hr_img, mask_img = _read(str(root / item["image"])), _read(str(root / item["mask"]))
            pair = MakeSRPaird(image_key="image", mask_keys=["mask"], label_keys=[], scale_factor=tuple(info["scale"]),
                               mode="physical")  # fmt: skip
            p = pair({"image": hr_img, "mask": mask_img})
            lr, hr, mask = p["lr"], p["hr"], p["mask"]
            lr_path = tmp / "lr_3d.nii.gz"
            save_nifti(lr, lr_path)
            start = time.perf_counter()
            rec = upscale_with_model(lr_path, tmp / "sr_3d.nii.gz", network=network, info=info, progress=False)
            seconds = time.perf_counter() - start
            sr = _read(rec["output"]).as_tensor().float()
            lr_t, hr_t, m = lr.as_tensor().float(), hr.as_tensor().float(), mask.as_tensor()[0] > 0
            for method, pred in (("cubic", upsample(lr_t, hr_t.shape[1:], "cubic")), (info["name"], sr)):
                ps, ss = _scores(pred, hr_t, m)
                rows.append(dict(modality="MR (3D, inside brain)", scale="x" + "x".join(map(str, info["scale"])),
                                 degradation="physical", method=method, model=info["name"], psnr=ps, ssim=ss,
                                 seconds=seconds if method == info["name"] else None))  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        for modality in (r["modality"], "all"):
            if modality == "all" and r["modality"].startswith("MR (3D"):
                continue
            groups.setdefault((r["model"], r["scale"], r["degradation"], modality, r["method"]), []).append(r)
    out = []
    for (model, scale, deg, modality, method), rs in sorted(groups.items()):
        ps, ss = [r["psnr"] for r in rs], [r["ssim"] for r in rs]
        out.append(dict(model=model, scale=scale, degradation=deg, modality=modality, method=method, n=len(rs),
                        psnr_mean=statistics.fmean(ps), psnr_median=statistics.median(ps),
                        ssim_mean=statistics.fmean(ss), ssim_median=statistics.median(ss)))  # fmt: skip
    return out


def print_table(summary: list[dict]) -> None:
    keyed = {(s["model"], s["scale"], s["degradation"], s["modality"], s["method"]): s for s in summary}
    cases = sorted({k[:4] for k in keyed}, key=lambda k: (k[0], k[2], k[3] != "all", k[3]))
    print(f"{'model':<18} {'pairs':<9} {'modality':<22} {'n':>3}  {'cubic PSNR/SSIM':>16}  {'lanczos':>14}  "
          f"{'model PSNR/SSIM':>16}  {'gain dB (mean/median)':>21}")  # fmt: skip
    for model, scale, deg, modality in cases:
        c = keyed.get((model, scale, deg, modality, "cubic"))
        m = keyed.get((model, scale, deg, modality, model))
        lz = keyed.get((model, scale, deg, modality, "lanczos"))
        if c is None or m is None:
            continue
        lz_txt = f"{lz['psnr_mean']:6.2f}/{lz['ssim_mean']:.4f}" if lz else f"{'-':>14}"
        gain = f"{m['psnr_mean'] - c['psnr_mean']:+.2f}/{m['psnr_median'] - c['psnr_median']:+.2f}"
        print(f"{model:<18} {deg:<9} {modality:<22} {c['n']:>3}  {c['psnr_mean']:6.2f}/{c['ssim_mean']:.4f}  "
              f"{lz_txt:>14}  {m['psnr_mean']:6.2f}/{m['ssim_mean']:.4f}  {gain:>21}")  # fmt: skip


def record(summary: list[dict], models: list[dict]) -> None:
    """Store each model's test-split figures in its model file (``metrics``) and its bundle's ``metadata.json``
    (``eval_metrics``), next to cubic's, so ``medsr models`` and the model-zoo metadata show them."""
    from medsr.pipeline.io import atomic_path, write_text_atomic

    for info in models:
        name = info["name"]
        mine = [s for s in summary if s["model"] == name]
        figures: dict[str, dict] = {}
        for s in mine:
            if s["method"] not in (name, "cubic") or (
                s["modality"] != "all" and not s["modality"].startswith("MR (3D")
            ):
                continue
            entry = figures.setdefault(s["degradation"], {"n": s["n"]})
            tag = "model" if s["method"] == name else "cubic"
            entry[f"psnr_{tag}"] = round(s["psnr_mean"], 3)
            entry[f"psnr_median_{tag}"] = round(s["psnr_median"], 3)
            entry[f"ssim_{tag}"] = round(s["ssim_mean"], 4)
        for entry in figures.values():
            entry["psnr_gain"] = round(entry["psnr_model"] - entry["psnr_cubic"], 3)
        trained = info.get("degradation")
        shown = list(figures) if trained == "mixed" else [trained if trained in figures else next(iter(figures), None)]
        if not figures or shown == [None]:
            continue
        summary_line = "; ".join(
            f"{deg} pairs: {figures[deg]['psnr_model']:.2f} dB vs cubic {figures[deg]['psnr_cubic']:.2f} "
            f"({figures[deg]['psnr_gain']:+.2f} dB), SSIM {figures[deg]['ssim_model']:.4f} vs {figures[deg]['ssim_cubic']:.4f}"
            for deg in shown
        )
        metrics = {"summary": summary_line, "demo_test_split": figures, "command": "python benchmarks/bench_quality.py"}
        path = Path(info["path"])
        rec = torch.load(path, map_location="cpu", weights_only=True)
        rec["metrics"] = metrics
        with atomic_path(path) as tmp:
            torch.save(rec, tmp)
        meta_path = path.parents[1] / "metadata.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            meta.setdefault("eval_metrics", {})[name] = {"file": f"models/{path.name}", **metrics}
            write_text_atomic(meta_path, json.dumps(meta, indent=4) + "\n")
        print(f"recorded {name}: {summary_line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help="shipped model names (default: all)")
    ap.add_argument("--degradations", nargs="*", default=["bicubic", "physical"], choices=["bicubic", "physical"])
    ap.add_argument("--limit", type=int, default=0, help="at most this many 2D test images (0: all)")
    ap.add_argument("--json", default=None, help="also write the per-image rows and the summary here")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--models_root", default=None, help="folder of <bundle>/models/*.pt (default: bundles/)")
    ap.add_argument("--record", action="store_true", help="store the figures in the model files and metadata.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(ensure_demo_dataset()["root"])
    models = [m for m in shipped_models(args.models_root) if args.models is None or m["name"] in args.models]
    if not models:
        print("no shipped models found under bundles/*/models/", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; models: {[m['name'] for m in models]}")
    with tempfile.TemporaryDirectory(prefix="medsr_bench_quality_") as tmp:
        rows = bench_2d([m for m in models if m["spatial_dims"] == 2], root, args.degradations, args.limit, Path(tmp))
        rows += bench_3d([m for m in models if m["spatial_dims"] == 3], root, Path(tmp))
    summary = summarise(rows)
    print_table(summary)
    if args.record:
        record(summary, models)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
