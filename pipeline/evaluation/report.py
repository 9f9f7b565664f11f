"""Evaluation reports: SR vs interpolation baselines per region, hallucination checks, CSV/JSON/PNG.

``evaluate_cases(cases, output_dir, data_range=1.0, ...)`` writes

- ``metrics.csv``: one row per case x method x region (x grid), columns :data:`CSV_COLUMNS`;
- ``summary.json``: ``protocol`` (normalization, data range, border crop, regions, window, rule, scale) and
  ``results[scale][method][region][metric] = {mean, std, n}``, plus ``absent`` (why a region had no value);
- ``figures/<case>.png``: LR, baseline, SR, HR, |SR - HR|, with the mask contour (middle slice in 3D).

Methods: ``sr`` and each baseline against HR; ``sr_dc``/``hr_dc`` (data consistency: ``degrade(SR)`` or
``degrade(HR)`` against the LR input, on the LR grid); ``sr_vs_<baseline>`` (how far SR departs from the
baseline in each region, e.g. inside lesions).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from medsr.pipeline.evaluation.baselines import resolve_scale, upsample
from medsr.pipeline.io import write_bytes_atomic
from medsr.pipeline.metrics._core import as_plain, check_data_range, check_finite, check_pair
from medsr.pipeline.metrics.functional import region_mse, region_ssim
from medsr.pipeline.metrics.regions import make_regions

__all__ = ["CSV_COLUMNS", "METRICS", "evaluate_cases", "save_figure"]

CSV_COLUMNS = (
    "case",
    "scale",
    "method",
    "grid",
    "region",
    "voxels",
    "windows",
    "psnr",
    "ssim",
    "mse",
    "nrmse",
    "mae",
    "note",
)
METRICS = ("psnr", "ssim", "mse", "nrmse", "mae")


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _json_safe(x.item())
    return x


def _image(x: Any, name: str, case_id: str) -> torch.Tensor:
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"case {case_id!r}: {name} must be a tensor or array, got {type(x).__name__}")
    t = as_plain(x).detach().cpu()
    if t.ndim == 2:
        t = t[None]
    if t.ndim not in (3, 4):
        raise ValueError(
            f"case {case_id!r}: {name} must be channel-first (C, H, W) or (C, D, H, W), got {tuple(t.shape)}"
        )
    check_finite(t, f"case {case_id!r} {name}")
    return t.to(torch.float32)


def _normalise(case: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    if how == "none":
        return case
    hr = case["hr"]
    if how == "minmax":
        lo, hi = float(hr.min()), float(hr.max())
    elif how == "percentile":
        lo, hi = (float(v) for v in np.percentile(hr.numpy(), [0.5, 99.5]))
    else:
        raise ValueError(f"normalization must be 'none', 'minmax' or 'percentile', got {how!r}")
    span = hi - lo if hi > lo else 1.0
    out = dict(case)
    for k in ("hr", "lr", "sr"):
        v = (case[k] - lo) / span
        out[k] = v.clamp(0, 1) if how == "percentile" else v
    return out


def _crop(x: torch.Tensor | None, border: int) -> torch.Tensor | None:
    if x is None or border <= 0:
        return x
    sl = (slice(None),) + tuple(slice(border, s - border) for s in x.shape[1:])
    return x[sl]


def _scale_key(sf: Sequence[float]) -> str:
    vals = [int(s) if float(s).is_integer() else round(float(s), 3) for s in sf]
    return f"x{vals[0]}" if len(set(vals)) == 1 else "x" + "x".join(str(v) for v in vals)


def _region_rows(
    pred: torch.Tensor,
    ref: torch.Tensor,
    regions: dict[str, torch.Tensor],
    data_range: float,
    rule: str,
    with_ssim: bool = True,
) -> dict[str, dict[str, Any]]:
    """Per region: voxels, windows, psnr, ssim, mse, nrmse, mae, note (None for absent values)."""
    sd = pred.ndim - 1
    mse_r = region_mse(pred, ref, regions, spatial_dims=sd)
    can_ssim = with_ssim and all(s >= 11 for s in pred.shape[1:])
    ssim_r = region_ssim(pred, ref, regions, data_range, spatial_dims=sd, rule=rule) if can_ssim else None
    diff = (pred.to(torch.float64) - ref.to(torch.float64)).abs().mean(0)
    ref_sq = ref.to(torch.float64).square().mean(0)
    rows = {}
    for name, m in regions.items():
        mr = mse_r[name]
        row: dict[str, Any] = {"voxels": mr.voxels, "windows": 0, "note": ""}
        if mr.value is None:
            row.update(psnr=None, ssim=None, mse=None, nrmse=None, mae=None, note=mr.reason)
            rows[name] = row
            continue
        mask = m.to(torch.bool)
        denom = math.sqrt(float(ref_sq[mask].mean()))
        row["mse"] = mr.value
        row["psnr"] = math.inf if mr.value == 0 else 10 * math.log10(data_range**2 / mr.value)
        row["nrmse"] = math.sqrt(mr.value) / denom if denom > 0 else None
        row["mae"] = float(diff[mask].mean()) / data_range
        if ssim_r is None:
            row["ssim"] = None
            row["note"] = "image smaller than the 11-voxel SSIM window" if with_ssim else ""
        else:
            sr_ = ssim_r[name]
            row["ssim"], row["windows"] = sr_.value, sr_.count
            if sr_.value is None:
                row["note"] = sr_.reason
        rows[name] = row
    return rows


def _to_lr_grid(mask: torch.Tensor, lr_shape: Sequence[int]) -> torch.Tensor:
    return F.interpolate(mask[None].to(torch.float32), size=tuple(lr_shape), mode="area")[0] > 0.5


def evaluate_cases(
    cases: Iterable[Mapping[str, Any]],
    output_dir: str | os.PathLike,
    *,
    data_range: float,
    regions: Sequence[str] = ("whole", "inside", "outside"),
    scale_factor: int | float | Sequence[float] | None = None,
    border: int = 0,
    baselines: Sequence[str] = ("nearest", "linear", "cubic"),
    degrade: Callable[[torch.Tensor], torch.Tensor] | None = None,
    figures: bool = True,
    normalization: Literal["none", "minmax", "percentile"] = "none",
    boundary_width: float | None = None,
    units: Literal["voxel", "mm"] = "voxel",
    label_names: Mapping[int, str] | None = None,
    rule: Literal["inside", "centre"] = "inside",
    reference: str | None = None,
) -> dict[str, Any]:
    """Evaluate SR outputs against HR and interpolation baselines; write CSV, JSON and PNG reports.

    Args:
        cases: dicts with ``hr``, ``lr``, ``sr`` (channel-first tensors/MetaTensors; ``sr`` on the HR grid),
            optional ``mask`` (binary, HR grid), ``mask_lr`` (LR grid; else derived by area-averaging),
            ``label`` (label map, HR grid) and ``id`` (else ``case_<i>``).
        output_dir: folder for ``metrics.csv``, ``summary.json`` and ``figures/``.
        data_range: intensity range of the (normalized) images; required.
        regions: region names built from the mask (``whole``, ``inside``, ``outside``, ``boundary``); each label
            value of a ``label`` map is added as a region.
        scale_factor: per-axis LR->HR factor (int or tuple such as ``(1, 1, 4)``); ``None``: HR shape / LR shape.
        border: voxels cropped from each side of every HR-grid image before metrics (e.g. the scale).
        baselines: interpolation modes (``nearest``, ``linear``, ``cubic``, ``bicubic`` (2D)).
        degrade: HR->LR degradation (e.g. a ``medsr.transforms.SimulateLowResolution`` instance); enables the
            data-consistency rows ``sr_dc`` and ``hr_dc``.
        figures: write comparison PNGs.
        normalization: ``none`` (images already in the data range), ``minmax`` or ``percentile`` (0.5-99.5,
            clipped): from each case's HR, applied to HR, LR and SR alike.
        boundary_width: ring half-width for the ``boundary`` region.
        units: ``voxel`` or ``mm`` for ``boundary_width``.
        label_names: names of label values.
        rule: region SSIM rule, ``inside`` (windows fully inside) or ``centre``.
        reference: baseline used in figures and for the ``sr_vs_<baseline>`` rows (default: the last one).

    Returns:
        The summary dict also written to ``summary.json`` (with ``files`` listing what was written).
    """
    dr = check_data_range(data_range)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    for b in baselines:
        if b not in ("nearest", "linear", "cubic", "bicubic"):
            raise ValueError(f"baselines: unknown mode {b!r}; choose from nearest, linear, cubic, bicubic")
    reference = reference or (baselines[-1] if baselines else None)
    if reference is not None and reference not in baselines:
        raise ValueError(f"reference {reference!r} is not among baselines {tuple(baselines)}")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    figure_files: list[str] = []
    scales_seen: list[str] = []
    n_cases = 0
    for i, case in enumerate(cases):
        if not isinstance(case, Mapping):
            raise TypeError(f"case {i} must be a dict with hr, lr, sr, got {type(case).__name__}")
        cid = str(case.get("id", f"case_{i}"))
        for key in ("hr", "lr", "sr"):
            if key not in case or case[key] is None:
                raise ValueError(f"case {cid!r} has no {key!r} (keys: {sorted(case)})")
        check_pair(case["sr"], case["hr"], f"case {cid!r} sr", f"case {cid!r} hr", check_finite_values=False)
        data = {k: _image(case[k], k, cid) for k in ("hr", "lr", "sr")}
        if data["lr"].shape[0] != data["hr"].shape[0]:
            raise ValueError(f"case {cid!r}: lr has {data['lr'].shape[0]} channels, hr {data['hr'].shape[0]}")
        hr_shape = tuple(data["hr"].shape[1:])
        sf = resolve_scale(data["lr"].shape[1:], hr_shape, scale_factor)
        skey = _scale_key(sf)
        if skey not in scales_seen:
            scales_seen.append(skey)
        mask = case.get("mask")
        label = case.get("label")
        for name, m in (("mask", mask), ("label", label)):
            _check_affine(m, case["hr"], f"case {cid!r} {name}", f"case {cid!r} hr")
        data = _normalise(data, normalization)
        mask_t = None if mask is None else _image(mask, "mask", cid)[:1] != 0
        label_t = None if label is None else _image(label, "label", cid)[:1]
        if mask_t is not None and tuple(mask_t.shape[1:]) != hr_shape:
            raise ValueError(f"case {cid!r}: mask spatial shape {tuple(mask_t.shape[1:])} does not match hr {hr_shape}")
        if label_t is not None and tuple(label_t.shape[1:]) != hr_shape:
            raise ValueError(
                f"case {cid!r}: label spatial shape {tuple(label_t.shape[1:])} does not match hr {hr_shape}"
            )
        base_imgs = {b: upsample(data["lr"], hr_shape, b) for b in baselines}

        # regions on the (cropped) HR grid
        want = [r for r in regions if r == "whole" or mask_t is not None]
        missing = [r for r in regions if r not in want]
        cm, cl = _crop(mask_t, border), _crop(label_t, border)
        spacing = _spacing(case["hr"], len(hr_shape))
        regs = make_regions(
            None if cm is None else cm[0],
            None if cl is None else cl[0],
            include=want,
            spatial_shape=tuple(_crop(data["hr"], border).shape[1:]),
            boundary_width=boundary_width if mask_t is not None else None,
            units=units,
            spacing=spacing,
            label_names=label_names,
        )
        hr_c = _crop(data["hr"], border)
        methods = {"sr": data["sr"], **base_imgs}
        for method, img in methods.items():
            for region, vals in _region_rows(_crop(img, border), hr_c, regs, dr, rule).items():
                rows.append({"case": cid, "scale": skey, "method": method, "grid": "hr", "region": region, **vals})
            for r in missing:
                rows.append(
                    _absent_row(cid, skey, method, "hr", r, f"case {cid!r} has no mask; region {r!r} needs one")
                )
        if reference is not None:
            for region, vals in _region_rows(
                _crop(data["sr"], border), _crop(base_imgs[reference], border), regs, dr, rule
            ).items():
                rows.append(
                    {"case": cid, "scale": skey, "method": f"sr_vs_{reference}", "grid": "hr", "region": region, **vals}
                )
        if degrade is not None:
            lr_regs = _lr_regions(case, mask_t, data["lr"], want)
            for method, src in (("sr_dc", "sr"), ("hr_dc", "hr")):
                deg = _degrade(degrade, case[src], data[src], normalization, cid)
                if tuple(deg.shape) != tuple(data["lr"].shape):
                    raise ValueError(
                        f"case {cid!r}: degrade({src}) has shape {tuple(deg.shape)}, but lr is {tuple(data['lr'].shape)}"
                    )
                for region, vals in _region_rows(deg, data["lr"], lr_regs, dr, rule).items():
                    rows.append({"case": cid, "scale": skey, "method": method, "grid": "lr", "region": region, **vals})
        if figures:
            fig_path = out_dir / "figures" / f"{_safe(cid)}.png"
            save_figure(
                fig_path,
                lr=data["lr"],
                baseline=base_imgs.get(reference) if reference else None,
                baseline_name=reference or "",
                sr=data["sr"],
                hr=data["hr"],
                mask=mask_t,
                scale=sf,
                data_range=dr,
                title=f"{cid} ({skey})",
            )
            figure_files.append(str(fig_path.relative_to(out_dir)))
        n_cases += 1
    if n_cases == 0:
        raise ValueError("cases is empty: nothing to evaluate")
    csv_path = _write_csv(out_dir / "metrics.csv", rows)
    summary = _summarise(rows)
    summary = {
        "n_cases": n_cases,
        "protocol": {
            "normalization": normalization,
            "data_range": dr,
            "border_crop": border,
            "regions": list(regions) + (["labels"] if any(c for c in [label_names] if c) else []),
            "rule": rule,
            "window": {
                "type": "gaussian",
                "size": 11,
                "sigma": 1.5,
                "k1": 0.01,
                "k2": 0.03,
                "covariance": "population",
            },
            "scales": scales_seen,
            "baselines": list(baselines),
            "reference_baseline": reference,
            "boundary_width": boundary_width,
            "boundary_units": units,
            "data_consistency": degrade is not None,
            "ssim_equivalent": "skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)",
        },
        **summary,
        "files": {"csv": str(csv_path.name), "summary": "summary.json", "figures": figure_files},
    }
    summary = _json_safe(summary)  # infinite PSNR (identical images) becomes "inf"
    write_bytes_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False).encode())
    return summary


def _check_affine(a: Any, b: Any, a_name: str, b_name: str) -> None:
    fa, fb = getattr(a, "affine", None), getattr(b, "affine", None)
    if isinstance(fa, torch.Tensor) and isinstance(fb, torch.Tensor) and fa.shape == fb.shape:
        if not torch.allclose(fa.double().cpu(), fb.double().cpu(), atol=1e-4):
            raise ValueError(f"{a_name} affine does not match {b_name} affine (different grids)")


def _spacing(x: Any, sd: int) -> tuple[float, ...] | None:
    pixdim = getattr(x, "pixdim", None)
    if pixdim is None:
        return None
    vals = torch.as_tensor(pixdim).flatten().tolist()[:sd]
    return tuple(float(v) for v in vals) if len(vals) == sd else None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "case"


def _absent_row(cid, skey, method, grid, region, note) -> dict[str, Any]:
    return {"case": cid, "scale": skey, "method": method, "grid": grid, "region": region, "voxels": 0, "windows": 0,
            "psnr": None, "ssim": None, "mse": None, "nrmse": None, "mae": None, "note": note}  # fmt: skip


def _lr_regions(case: Mapping[str, Any], mask_t: torch.Tensor | None, lr: torch.Tensor, want: Sequence[str]):
    lr_shape = tuple(lr.shape[1:])
    m = None
    if case.get("mask_lr") is not None:
        m = as_plain(case["mask_lr"]).detach().cpu()
        m = (m[None] if m.ndim == len(lr_shape) else m)[:1] != 0
        if tuple(m.shape[1:]) != lr_shape:
            raise ValueError(f"mask_lr spatial shape {tuple(m.shape[1:])} does not match lr {lr_shape}")
    elif mask_t is not None:
        m = _to_lr_grid(mask_t, lr_shape)
    return make_regions(
        None if m is None else m[0], include=[w for w in want if w != "boundary"], spatial_shape=lr_shape
    )


def _degrade(fn: Callable, original: Any, normalised: torch.Tensor, normalization: str, cid: str) -> torch.Tensor:
    """Apply the degradation to the (normalised) image, keeping a MetaTensor's affine when there is one."""
    src = original
    if normalization != "none" or not isinstance(original, torch.Tensor):
        src = normalised
        if hasattr(original, "affine"):
            from monai.data import MetaTensor

            src = MetaTensor(normalised, affine=original.affine, meta=dict(original.meta))
    elif not hasattr(original, "affine"):
        src = normalised
    try:
        out = fn(src)
    except Exception as err:  # a user callable: say which case and image failed
        raise RuntimeError(f"case {cid!r}: degrade failed on the image: {err}") from err
    if isinstance(out, Mapping):
        raise TypeError("degrade must map an image tensor to an LR tensor (an array transform, not a dict transform)")
    out = as_plain(out).detach().cpu().to(torch.float32)
    check_finite(out, f"case {cid!r} degrade output")
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])) for k in CSV_COLUMNS}
        )
    return write_bytes_atomic(path, buf.getvalue().encode())


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``results[scale][method][region][metric] = {mean, std, n}`` and ``absent`` messages."""
    results: dict[str, Any] = {}
    absent: list[dict[str, str]] = []
    for r in rows:
        node = results.setdefault(r["scale"], {}).setdefault(r["method"], {}).setdefault(r["region"], {})
        for m in METRICS:
            v = r.get(m)
            if v is not None:
                node.setdefault(m, []).append(float(v))
        if r.get("note") and r.get("ssim") is None:
            absent.append({"case": r["case"], "method": r["method"], "region": r["region"], "reason": r["note"]})
    for scale in results.values():
        for method in scale.values():
            for region, metrics in list(method.items()):
                stats = {}
                for m, vals in metrics.items():
                    arr = np.asarray(vals, dtype=np.float64)
                    if np.isinf(arr).any():
                        stats[m] = {"mean": float(arr.mean()), "std": None, "n": len(vals)}
                    else:
                        stats[m] = {"mean": float(arr.mean()), "std": float(arr.std()), "n": len(vals)}
                method[region] = stats
    return {"results": results, "absent": absent}


def _middle_slice(x: torch.Tensor, axis: int, index: int) -> np.ndarray:
    img = x[0] if x.ndim in (3, 4) else x
    if img.ndim == 2:
        return img.numpy()
    return img.select(axis, index).numpy()


def save_figure(
    path: str | os.PathLike,
    *,
    lr: torch.Tensor,
    sr: torch.Tensor,
    hr: torch.Tensor,
    baseline: torch.Tensor | None = None,
    baseline_name: str = "baseline",
    mask: torch.Tensor | None = None,
    scale: Sequence[float] = (1.0,),
    data_range: float = 1.0,
    title: str = "",
) -> Path:
    """Write a comparison PNG: LR, baseline, SR, HR, |SR - HR| (mask contour on SR and HR); 3D: one slice.

    The slice is taken across the least-scaled axis (so the up-sampled direction shows) through the mask's
    centre, or the middle of the volume without a mask.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sd = hr.ndim - 1
    axis, index = 0, 0
    lr_show = upsample(lr, tuple(hr.shape[1:]), "nearest")
    if sd == 3:
        axis = int(np.argmin(np.asarray(scale, dtype=float)))
        if mask is not None and bool(mask.any()):
            idx = torch.nonzero(mask[0])[:, axis].to(torch.float64)
            index = int(round(float(idx.mean())))
        else:
            index = hr.shape[1 + axis] // 2
    panels = [("LR (nearest)", lr_show)]
    if baseline is not None:
        panels.append((baseline_name, baseline))
    panels += [("SR", sr), ("HR", hr)]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3.4))
    m2 = _middle_slice(mask.to(torch.float32), axis, index) if mask is not None else None
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(
            _middle_slice(img, axis, index), cmap="gray", vmin=0, vmax=None if data_range is None else float(hr.max())
        )
        if m2 is not None and name in ("SR", "HR") and m2.any() and not m2.all():
            ax.contour(m2, levels=[0.5], colors="r", linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    err = np.abs(_middle_slice(sr, axis, index) - _middle_slice(hr, axis, index))
    im = axes[-1].imshow(err, cmap="magma", vmin=0, vmax=max(float(err.max()), 1e-12))
    if m2 is not None and m2.any() and not m2.all():
        axes[-1].contour(m2, levels=[0.5], colors="c", linewidths=0.8)
    axes[-1].set_title("|SR - HR|", fontsize=9)
    axes[-1].axis("off")
    fig.colorbar(im, ax=axes[-1], fraction=0.046)
    if title:
        fig.suptitle(title + (f", slice {index} of axis {axis}" if sd == 3 else ""), fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())
