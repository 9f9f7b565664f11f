"""Quality of the shipped 2D models against interpolation, on up to four sets side by side.

1. **external (out-of-distribution)**: the 8 MR slices of ITK's example data (``benchmarks/fetch_external.sh``,
   evaluation only: never used for training, recipe tuning or checkpoint choice). Antialiased-bicubic LR at
   the model's scale (the protocol of issue 23), upscaled by ``medsr upscale``'s own code path. The 3D model:
   the 0.5 mm inia19 macaque T1 template (same script), degraded at its per-axis scale with the physical
   (Gaussian slice profile) model, scored inside the brain.
2. **held-out sources**: the corpus' validation sources (``medsr.pipeline.data.corpus``: matplotlib's MR
   slice, scikit-image's microaneurysms and camera), whole sources no model saw in
   training, same protocol. They picked the checkpoint, so this is a leave-sources-out figure, not a blind one.
3. **leave-one-source-out** (``--sets loso``): models that ``benchmarks/train_loso.sh`` trained (short runs)
   on the corpus without one demo source, each scored on that source's demo test images (bicubic pairs).
4. **in-distribution**: the demo test split (MNI T1 slices in three orientations, fundus and IHC tiles:
   slabs of the same template and bands of the same photographs as the training split), bicubic and physical
   pairs (Gaussian slice profile, FWHM = LR spacing). The 3D model is scored on the test slab of the MNI T1
   (``datalist_3d.json``) at its per-axis scale, inside the brain mask.

Each image: HR degraded to LR, written as NIfTI, upscaled by
:func:`medsr.pipeline.inference.upscale_with_model` (``--tta 8``: also with flips and rotations averaged),
scored against HR in its own units (data range = the HR image's range), next to cubic B-spline and Lanczos-3.

Run from the repository root::

    python benchmarks/bench_quality.py                                  # all shipped models, all sets
    python benchmarks/bench_quality.py --defaults --tta 8 --json benchmarks/results/quality.json --record

Prints per-image external figures, then mean and median PSNR/SSIM per set, scale, degradation and method.
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
from medsr.pipeline.inference import DihedralTTA, save_nifti, upscale_with_model
from medsr.pipeline.metrics.functional import psnr, region_psnr, region_ssim, ssim
from medsr.pipeline.models import load_model, pick_model, read_model_info, shipped_models
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


EXTERNAL = (
    "FatMRISlice.png", "BrainMidSagittalSlice.png", "VisibleWomanHeadSlice.png", "VisibleWomanEyeSlice.png",
    "BrainT1Slice.png", "BrainProtonDensitySlice256x256.png", "RatLungSlice1.mha", "RatLungSlice2.mha",
)  # fmt: skip
EXTERNAL_3D = "inia19-t1-brain.nii.gz"  # 0.5 mm macaque T1 template (fetch_external.sh), evaluation only
SET_LABELS = {
    "external": "external (out-of-distribution)",
    "heldout": "held-out sources (leave-sources-out)",
    "loso": "leave-one-source-out (short runs)",
    "indist": "demo test split (in-distribution)",
}


def _read_mha(path: Path) -> torch.Tensor:
    """A 2D MetaImage (``.mha`` header + ``.raw``, uncompressed, as ITK's example data), channel first."""
    from monai.data import MetaTensor

    head = dict(line.split(" = ", 1) for line in path.read_text().splitlines() if " = " in line)
    dtype = {"MET_UCHAR": np.uint8, "MET_USHORT": np.uint16, "MET_SHORT": np.int16, "MET_FLOAT": np.float32}
    size = [int(v) for v in head["DimSize"].split()]
    arr = np.fromfile(path.parent / head["ElementDataFile"], dtype=dtype[head["ElementType"]])
    arr = arr.reshape(size[::-1]).T.astype(np.float32)  # (x, y) as MONAI's readers
    return MetaTensor(torch.from_numpy(arr.copy())[None], affine=torch.eye(4))


def external_items(folder: Path) -> list[dict]:
    """The external images (fetched by ``benchmarks/fetch_external.sh`` when missing)."""
    import subprocess

    if not all((folder / name).is_file() for name in EXTERNAL + (EXTERNAL_3D,)):
        script = Path(__file__).with_name("fetch_external.sh")
        subprocess.run(["bash", str(script)], check=True, env={**__import__("os").environ,
                       "MEDSR_DATA": str(folder.parent)})  # fmt: skip
    return [{"image": str(folder / name), "name": name.split(".")[0], "modality": "MR"} for name in EXTERNAL]


def _read_any(path: str) -> torch.Tensor:
    return _read_mha(Path(path)) if path.endswith(".mha") else _read(path)


def score_2d(models: list[dict], items: list[dict], degradations: list[str], tmp: Path, set_name: str,
             tta: int = 1) -> list[dict]:  # fmt: skip
    """Per-image rows for every model, degradation and item: cubic, Lanczos, the model (and with ``tta``)."""
    rows = []
    for info in models:
        network, info = load_model(info["path"])
        s = int(info["scale"][0])
        variants = [(info["name"], network)] + (
            [(f"{info['name']}+tta{tta}", DihedralTTA(network, tta))] if tta > 1 else []
        )
        for deg in degradations:
            pair = MakeSRPaird(image_key="image", mask_keys=[], label_keys=[], scale_factor=s, mode=deg)
            for i, item in enumerate(items):
                p = pair({"image": _read_any(item["image"])})
                lr, hr = p["lr"], p["hr"]
                lr_path = tmp / f"lr_{i}.nii.gz"
                save_nifti(lr, lr_path)
                lr_t, hr_t = lr.as_tensor().float(), hr.as_tensor().float()
                preds = [("cubic", upsample(lr_t, hr_t.shape[1:], "cubic"), None),
                         ("lanczos", lanczos(lr_t, tuple(hr_t.shape[1:])), None)]  # fmt: skip
                for method, net in variants:
                    start = time.perf_counter()
                    rec = upscale_with_model(lr_path, tmp / f"sr_{i}.nii.gz", network=net, info=info, progress=False)
                    preds.append((method, _read(rec["output"]).as_tensor().float(), time.perf_counter() - start))
                for method, pred, seconds in preds:
                    ps, ss = _scores(pred, hr_t)
                    rows.append(dict(set=set_name, image=item.get("name") or Path(item["image"]).name,
                                     modality=_modality(item), scale=f"x{s}", degradation=deg, method=method,
                                     model=info["name"], psnr=ps, ssim=ss, seconds=seconds))  # fmt: skip
    return rows


def bench_3d(models: list[dict], root: Path, tmp: Path, external: Path | None = None,
             indist: bool = True) -> list[dict]:  # fmt: skip
    """3D rows: the demo's MNI test slab (in-distribution) and, with ``external``, the inia19 macaque template
    (external, out-of-distribution; skull-stripped, so the brain is its non-zero voxels), each degraded at the
    model's per-axis scale with the physical (Gaussian slice profile) model and scored inside the brain."""
    items = []
    if indist:
        lists = json.loads((root / "datalist_3d.json").read_text())
        items += [("indist", str(root / e["image"]), str(root / e["mask"])) for e in lists["test"]]
    if external is not None:
        items.append(("external", str(external), None))
    rows = []
    for info in models:
        network, info = load_model(info["path"])
        for set_name, image, mask_path in items:
            hr_img = _read(image)
            mask_img = _read(mask_path) if mask_path else (hr_img > 0).to(torch.uint8)
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
                rows.append(dict(set=set_name, image=Path(image).name, modality="MR (3D, inside brain)", scale="x" + "x".join(map(str, info["scale"])),
                                 degradation="physical", method=method, model=info["name"], psnr=ps, ssim=ss,
                                 seconds=seconds if method == info["name"] else None))  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean/median per (set, model, scale, degradation, modality or "all", method), with the worst per-image
    PSNR gain over cubic (``worst_gain``) for the model rows."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        for modality in (r["modality"], "all"):
            if modality == "all" and r["modality"].startswith("MR (3D"):
                continue
            groups.setdefault((r["set"], r["model"], r["scale"], r["degradation"], modality, r["method"]), []).append(r)
    out = []
    for (set_name, model, scale, deg, modality, method), rs in sorted(groups.items()):
        ps, ss = [r["psnr"] for r in rs], [r["ssim"] for r in rs]
        cubic = groups.get((set_name, model, scale, deg, modality, "cubic"), [])
        gains = [r["psnr"] - c["psnr"] for r, c in zip(rs, cubic)] if len(cubic) == len(rs) else []
        out.append(dict(set=set_name, model=model, scale=scale, degradation=deg, modality=modality, method=method,
                        n=len(rs), psnr_mean=statistics.fmean(ps), psnr_median=statistics.median(ps),
                        ssim_mean=statistics.fmean(ss), ssim_median=statistics.median(ss),
                        worst_gain=min(gains) if gains else None))  # fmt: skip
    return out


def print_images(rows: list[dict], set_name: str = "external") -> None:
    """Per-image PSNR of the external set: cubic, Lanczos and each model, with the gain over cubic."""
    mine = [r for r in rows if r["set"] == set_name]
    if not mine:
        return
    print(f"\n== {SET_LABELS[set_name]}: per image, PSNR dB (gain over cubic) ==")
    cases = sorted({(r["model"], r["scale"], r["degradation"]) for r in mine}, key=lambda k: (k[1], k[0]))
    for model, scale, deg in cases:
        rs = [r for r in mine if (r["model"], r["scale"], r["degradation"]) == (model, scale, deg)]
        methods = list(dict.fromkeys(r["method"] for r in rs))
        print(f"{model} {scale} {deg}: " + "  ".join(f"{m:>14}" for m in methods))
        for image in dict.fromkeys(r["image"] for r in rs):
            by = {r["method"]: r["psnr"] for r in rs if r["image"] == image}
            cells = [
                f"{by[m]:6.2f} ({by[m] - by['cubic']:+.2f})" if m != "cubic" else f"{by[m]:14.2f}" for m in methods
            ]
            print(f"  {image:<34} " + "  ".join(f"{c:>14}" for c in cells))


def print_table(summary: list[dict]) -> None:
    """Mean (and median) per set, side by side for each model: cubic, Lanczos, the model, the gain."""
    keyed = {(s["set"], s["model"], s["scale"], s["degradation"], s["modality"], s["method"]): s for s in summary}
    print("\n== mean PSNR/SSIM per set (gain = model - cubic, dB: mean/median; worst = lowest per-image gain) ==")
    print(f"{'set':<38} {'model (method)':<26} {'pairs':<9} {'modality':<20} {'n':>3}  {'cubic':>14}  {'lanczos':>14}  "
          f"{'model':>14}  {'gain mean/med':>13}  {'worst':>6}")  # fmt: skip
    order = {k: i for i, k in enumerate(SET_LABELS)}
    cases = sorted({(k[0], k[1], k[2], k[3], k[4], k[5]) for k in keyed if k[5] not in ("cubic", "lanczos")},
                   key=lambda k: (k[2], k[1], order.get(k[0], 9), k[3], k[4] != "all", k[4], k[5]))  # fmt: skip
    for set_name, model, scale, deg, modality, method in cases:
        c = keyed.get((set_name, model, scale, deg, modality, "cubic"))
        m = keyed[(set_name, model, scale, deg, modality, method)]
        lz = keyed.get((set_name, model, scale, deg, modality, "lanczos"))
        if c is None:
            continue
        lz_txt = f"{lz['psnr_mean']:6.2f}/{lz['ssim_mean']:.4f}" if lz else f"{'-':>14}"
        gain = f"{m['psnr_mean'] - c['psnr_mean']:+.2f}/{m['psnr_median'] - c['psnr_median']:+.2f}"
        worst = f"{m['worst_gain']:+.2f}" if m["worst_gain"] is not None else "-"
        print(f"{SET_LABELS.get(set_name, set_name):<38} {method:<26} {deg:<9} {modality:<20} {c['n']:>3}  "
              f"{c['psnr_mean']:6.2f}/{c['ssim_mean']:.4f}  {lz_txt:>14}  {m['psnr_mean']:6.2f}/{m['ssim_mean']:.4f}  "
              f"{gain:>13}  {worst:>6}")  # fmt: skip


def _figures(summary: list[dict], name: str, set_name: str) -> dict[str, dict]:
    figures: dict[str, dict] = {}
    for s in summary:
        if s["set"] != set_name or s["model"] != name or s["method"] not in (name, "cubic", f"{name}+tta8"):
            continue
        if s["modality"] != "all" and not s["modality"].startswith("MR (3D"):
            continue
        entry = figures.setdefault(s["degradation"], {"n": s["n"]})
        tag = {name: "model", "cubic": "cubic"}.get(s["method"], "model_tta8")
        entry[f"psnr_{tag}"] = round(s["psnr_mean"], 3)
        entry[f"psnr_median_{tag}"] = round(s["psnr_median"], 3)
        entry[f"ssim_{tag}"] = round(s["ssim_mean"], 4)
        if tag != "cubic" and s["worst_gain"] is not None:
            entry[f"worst_gain_{tag}"] = round(s["worst_gain"], 3)
    for entry in figures.values():
        entry["psnr_gain"] = round(entry["psnr_model"] - entry["psnr_cubic"], 3)
        if "psnr_model_tta8" in entry:
            entry["psnr_gain_tta8"] = round(entry["psnr_model_tta8"] - entry["psnr_cubic"], 3)
    return figures


def record(summary: list[dict], models: list[dict]) -> None:
    """Store each model's figures in its model file (``metrics``) and its bundle's ``metadata.json``
    (``eval_metrics``), next to cubic's and labelled by set, so ``medsr models`` and the model-zoo metadata show
    them: the external (out-of-distribution) figure first, then the held-out sources, then the demo test split
    (in-distribution)."""
    from medsr.pipeline.io import atomic_path, write_text_atomic

    for info in models:
        name = info["name"]
        sets = {k: _figures(summary, name, k) for k in SET_LABELS}
        parts = []
        ext = sets["external"].get("bicubic")
        if ext:
            parts.append(f"external (out-of-distribution, {ext['n']} ITK MR slices, bicubic): {ext['psnr_gain']:+.2f} dB "
                         f"vs cubic (mean; worst image {ext.get('worst_gain_model', float('nan')):+.2f})")  # fmt: skip
        ext3d = sets["external"].get("physical")  # the 3D model: the macaque template (EXTERNAL_3D)
        if ext3d:
            parts.append(f"external (out-of-distribution, the 0.5 mm macaque T1 template of benchmarks/, physical, "
                         f"inside the brain): "
                         f"{ext3d['psnr_gain']:+.2f} dB vs cubic")  # fmt: skip
        held = sets["heldout"].get("bicubic")
        if held:
            parts.append(f"held-out sources: {held['psnr_gain']:+.2f} dB")
        ind = sets["indist"]
        for deg in ("bicubic", "physical"):
            if deg in ind:
                parts.append(f"demo test split (in-distribution) {deg}: {ind[deg]['psnr_gain']:+.2f} dB")
        if not parts:
            continue
        summary_line = "; ".join(parts)
        metrics = {"summary": summary_line, "external_ood": sets["external"], "heldout_sources": sets["heldout"],
                   "demo_test_split": sets["indist"], "command": "python benchmarks/bench_quality.py --record"}  # fmt: skip
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
    ap.add_argument("--defaults", action="store_true", help="only the models `medsr upscale` picks (x2, x4, 3D)")
    ap.add_argument("--sets", nargs="*", default=list(SET_LABELS), choices=list(SET_LABELS))
    ap.add_argument("--degradations", nargs="*", default=["bicubic", "physical"], choices=["bicubic", "physical"],
                    help="in-distribution pairs (the external and held-out sets use bicubic)")  # fmt: skip
    ap.add_argument("--tta", type=int, default=1, choices=(1, 2, 4, 8), help="also score the models with this TTA")
    ap.add_argument("--limit", type=int, default=0, help="at most this many images per set (0: all)")
    ap.add_argument("--json", default=None, help="also write the per-image rows and the summary here")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--models_root", default=None, help="folder of <bundle>/models/*.pt (default: bundles/)")
    ap.add_argument("--record", action="store_true", help="store the figures in the model files and metadata.json")
    ap.add_argument("--loso_dir", default="runs/loso", help="loso_<source>_x2.pt files of benchmarks/train_loso.sh")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    demo = ensure_demo_dataset()
    root = Path(demo["root"])
    models = [m for m in shipped_models(args.models_root) if args.models is None or m["name"] in args.models]
    if args.defaults:
        picked = {pick_model(2, s, models=models)[0]["name"] for s in (2, 4)}
        picked |= {m["name"] for m in models if m["spatial_dims"] == 3}
        models = [m for m in models if m["name"] in picked]
    if not models:
        print("no shipped models found under bundles/*/models/", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; models: {[m['name'] for m in models]}")
    cut = (lambda xs: xs[: args.limit]) if args.limit else (lambda xs: xs)
    models_2d = [m for m in models if m["spatial_dims"] == 2]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="medsr_bench_quality_") as tmp:
        models_3d = [m for m in models if m["spatial_dims"] == 3]
        if "external" in args.sets:
            items = cut(external_items(Path(demo["cache_root"]) / "external"))
            rows += score_2d(models_2d, items, ["bicubic"], Path(tmp), "external", args.tta)
            inia19 = Path(demo["cache_root"]) / "external" / EXTERNAL_3D
            rows += bench_3d(models_3d, root, Path(tmp), external=inia19, indist=False)
        if "heldout" in args.sets:
            from medsr.pipeline.data.corpus import ensure_corpus_dataset

            corpus = ensure_corpus_dataset(progress=False)
            lists = json.loads(Path(corpus["datalist_2d"]).read_text())
            items = [dict(e, image=str(Path(corpus["root"]) / e["image"]), name=e["source"] + "/" + Path(e["image"]).name)
                     for e in lists["validation"]]  # fmt: skip
            rows += score_2d(models_2d, cut(items), ["bicubic"], Path(tmp), "heldout", args.tta)
        loso = sorted(Path(args.loso_dir).glob("loso_*_x2.pt")) if "loso" in args.sets else []
        if "loso" in args.sets and not loso:
            print(f"leave-one-source-out: no {args.loso_dir}/loso_*_x2.pt (run benchmarks/train_loso.sh): not measured")
        demo_test = json.loads((root / "datalist_2d.json").read_text())["test"]
        for path in loso:
            source = path.stem[len("loso_") : -len("_x2")]
            items = [dict(e, image=str(root / e["image"])) for e in demo_test if e.get("source") == source]
            info = dict(read_model_info(path), path=str(path))
            rows += score_2d([info], cut(items), ["bicubic"], Path(tmp), "loso")
        if "indist" in args.sets:
            lists = json.loads((root / "datalist_2d.json").read_text())
            items = [dict(e, image=str(root / e["image"])) for e in cut(lists["test"])]
            rows += score_2d(models_2d, items, args.degradations, Path(tmp), "indist")
            rows += bench_3d(models_3d, root, Path(tmp))
    print_images(rows, "external")
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
