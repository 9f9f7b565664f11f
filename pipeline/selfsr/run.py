"""The functions the ``selfsr`` bundle configs call: read the scan, build the pairs and model, write the result,
the data-consistency report, the comparison PNG, and score against a reference."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsr.pipeline.io import atomic_path, write_json_atomic
from medsr.pipeline.selfsr.grid import SelfSRGrid, load_profile, plan_grid, resample_axis
from medsr.pipeline.selfsr.model import build_model, generator_of, resolve_precision, with_precision
from medsr.pipeline.selfsr.pairs import SlicePairs, foreground_mask
from medsr.pipeline.selfsr.recon import cubic_output, degrade_output, reconstruct

__all__ = [
    "load_scan",
    "prepare",
    "intensity_divisor",
    "pair_loader",
    "model_for",
    "INITS",
    "auto_threads",
    "set_threads",
    "save_model",
    "load_trained",
    "write_result",
    "consistency_report",
    "save_comparison_png",
    "score_against",
]


def load_scan(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D volume (NIfTI, or anything :func:`medsr.pipeline.data.readers.load_image` reads) as float32
    with its affine; a 4D file with one frame counts as 3D; one-line errors otherwise."""
    from medsr.pipeline.data.readers import load_image

    path = Path(path)
    if not path.exists():
        raise ValueError(f"input '{path}': no such file")
    img = load_image(path)  # channel-first: (frames, *spatial)
    data = np.asarray(img.array, dtype=np.float32)
    shape = tuple(data.shape[1:]) if data.shape[0] == 1 else (*data.shape[1:], data.shape[0])
    if len(shape) < 3:
        raise ValueError(f"input '{path}': a {len(shape)}D image {shape}; selfsr needs a 3D volume with thick slices")
    if len(shape) > 3:
        raise ValueError(
            f"input '{path}': a {len(shape)}D image {shape}; selfsr needs one 3D volume (extract a frame first)"
        )
    data = data[0]
    if not np.all(np.isfinite(data)):
        raise ValueError(f"input '{path}': contains NaN or infinite values")
    return data, np.asarray(img.affine, dtype=np.float64)


def prepare(
    input: str | os.PathLike,
    thickness: float | None = None,
    gap: float = 0.0,
    profile: str = "gaussian",
    target_spacing: float | None = None,
) -> dict[str, Any]:
    """Read and check the scan; returns ``{"vol", "raw", "scale", "grid", "profile", "affine", "path"}``.

    ``vol`` is the scan divided by ``scale`` (the 99.5th percentile of the foreground), so the networks see
    values around 0..1 whatever the units; outputs are multiplied back. The last scan prepared is kept, so
    the reconstruction after training in one process does not read and normalise it again.
    """
    key = (str(input), _stamp(input), thickness, gap, profile, target_spacing)
    if _LAST_SCAN.get("key") == key:
        return _LAST_SCAN["scan"]
    data, affine = load_scan(input)
    grid = plan_grid(
        data.shape, affine, thickness=thickness, gap=gap, target_spacing=target_spacing, name=f"input '{input}'"
    )
    prof = load_profile(profile)
    vol = torch.from_numpy(data)
    scale = intensity_divisor(vol)
    scan = {
        "vol": vol / scale,
        "raw": vol,
        "scale": scale,
        "grid": grid,
        "profile": prof,
        "affine": affine,
        "path": str(input),
    }
    _LAST_SCAN.update(key=key, scan=scan)
    return scan


_LAST_SCAN: dict[str, Any] = {}


def intensity_divisor(vol: torch.Tensor) -> float:
    """What selfsr divides a scan by: the 99.5th percentile of its foreground (:func:`foreground_mask`), so the
    networks see values around 0..1 whatever the units (the learned prior's training images too)."""
    fg = foreground_mask(vol)
    vals = vol[fg] if bool(fg.any()) else vol.flatten()
    scale = float(torch.quantile(vals[:: max(1, vals.numel() // 1_000_000)].float(), 0.995))
    if not scale > 0:
        scale = float(vol.abs().max()) or 1.0
    return scale


def _stamp(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def pair_loader(
    scan: dict[str, Any],
    steps: int,
    batch_size: int = 4,
    patch_rows: int = 64,
    lr_length: int = 16,
    seed: int = 0,
) -> SlicePairs:
    """The training pairs of ``scan`` as a loader of ``steps`` batches (one pass = the whole training)."""
    return SlicePairs(
        scan["vol"], scan["grid"], scan["profile"], batch_size=batch_size, patch_rows=patch_rows,
        lr_length=lr_length, length=steps, seed=seed,
    )  # fmt: skip


#: how a scan's network starts: the learned prior (:mod:`medsr.pipeline.selfsr.prior`) or random weights
INITS = ("prior", "scratch")


def model_for(
    scan: dict[str, Any],
    network: dict[str, Any] | str | None = None,
    precision: str = "auto",
    device: str | torch.device = "cpu",
    init: str = "scratch",
    prior: str | os.PathLike | None = None,
) -> torch.nn.Module:
    """The generator (``residual_interp=True``, scale ``(1, s)``) for the scan's integer scale, on ``device``.

    Args:
        init: ``"prior"``: start from the learned prior (``prior``, default the shipped
            ``bundles/selfsr/models/prior.pt``) when it describes this network, else from scratch (said in the
            log); ``"scratch"``: random weights (seeded by the bundle's ``set_determinism``).
        prior: another prior file.
    """
    if init not in INITS:
        raise ValueError(f"init: expected 'prior' or 'scratch', got {init!r}")
    scale = int(scan["grid"].scale)
    model = build_model(scale, network, resolve_precision(precision, device), device)
    if init == "prior":
        from medsr.pipeline.selfsr.prior import PRIOR_FILE, load_prior, prior_fits, read_prior

        path = Path(prior) if prior else PRIOR_FILE
        if not path.is_file():
            if prior:
                raise ValueError(f"prior '{path}': no such file")
            print(f"selfsr: init scratch (the prior {path} is not installed)")
        else:
            record = read_prior(path)
            if prior_fits(model, record):
                load_prior(model, record, scale)
                head = f"its x{scale} head" if str(scale) in record["heads"] else f"a zero x{scale} head"
                print(f"selfsr: init prior ({path.name}: {record['training']['steps']} steps on demo data; {head})")
            else:
                print(f"selfsr: init scratch (the network is not the prior's {record['network']['target']} "
                      f"{ {k: v for k, v in record['network']['args'].items() if k.startswith('num_')} })")  # fmt: skip
    else:
        print("selfsr: init scratch")
    return model.to(device)


def auto_threads() -> int:
    """CPU threads for this process: the cores the other processes leave idle, at least 1
    (:func:`medsr.pipeline.handlers.follow_load.idle_threads`; during training
    :class:`~medsr.pipeline.handlers.FollowLoad` keeps following the load).

    On a shared CPU a 2-thread convolution whose threads are descheduled waits at every OpenMP barrier: with
    a load average of 8 on 2 cores, one thread ran a training step 6.5 times faster than two (0.27 s against
    1.79 s). With the machine to itself every core is used.
    """
    from medsr.pipeline.handlers.follow_load import idle_threads

    return idle_threads()


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads (0 or None: :func:`auto_threads`); returns the number in use."""
    torch.set_num_threads(int(threads) if threads else auto_threads())
    return torch.get_num_threads()


def save_model(model: torch.nn.Module, scan: dict[str, Any], network: Any, path: str | os.PathLike) -> Path:
    """Write the trained generator as a medsr model file (:func:`medsr.pipeline.models.save_model`) with what it
    was trained for: the grid, the slice profile, the intensity divisor and the input."""
    from medsr.pipeline.models import save_model as save_model_file

    prof = scan["profile"]
    grid: SelfSRGrid = scan["grid"]
    info = {
        "name": "selfsr",
        "bundle": "selfsr",
        "normalization": {"transform": "divided by the 99.5th percentile of the foreground", "divisor": scan["scale"]},
        "degradation": f"slice profile {prof if isinstance(prof, str) else 'table'}, thickness {grid.thickness:g} mm",
        "trained_on": scan["path"],
        "grid": grid.to_dict(),
        "profile": prof if isinstance(prof, str) else np.asarray(prof).tolist(),
    }
    return save_model_file(generator_of(model), path, info, half=False)


def load_trained(
    scan: dict[str, Any], path: str | os.PathLike, precision: str = "auto", device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """The generator of the model file ``path`` (written by :func:`save_model`), checked against the scan's scale."""
    from medsr.pipeline.models import load_model

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model '{path}': not found; run the bundle's training first")
    net, info = load_model(path, device)
    want = [1, int(scan["grid"].scale)]
    if [int(f) for f in info.get("scale", [])] != want:
        raise ValueError(f"model '{path}': scale {info.get('scale')} does not fit this scan's {want}")
    return with_precision(net, precision, device).to(device)


def write_result(
    scan: dict[str, Any],
    model: torch.nn.Module,
    output: str | os.PathLike,
    tta: int = 1,
    bp_iters: int = 1,
    report: str | os.PathLike | None = None,
    png: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    threads: int = 0,
) -> dict[str, Any]:
    """Reconstruct, write ``output`` (atomically; never the input), the JSON report and the PNG.

    With ``threads=0`` the CPU threads follow the load during the reconstruction too
    (:class:`~medsr.pipeline.handlers.FollowLoad`): two threads on a busy 2-core CPU reconstructed 3.8 slices/s
    where one thread makes about 35. Returns the report (data consistency of medsr and cubic, grid, timings).
    """
    import time

    from medsr.pipeline.handlers.follow_load import FollowLoad
    from medsr.pipeline.inference import save_nifti

    out = Path(output)
    if out.resolve() == Path(scan["path"]).resolve():
        raise ValueError(f"output '{out}': is the input; choose another path (the input is never overwritten)")
    grid: SelfSRGrid = scan["grid"]
    model = model.to(device)
    t0 = time.perf_counter()
    total = sum(grid.shape[a] for a in grid.inplane_axes)
    bar = _progress(total, "selfsr reconstruct")
    follow, done = FollowLoad(threads if torch.device(device).type == "cpu" else 1), [0]

    def progress(n: int) -> None:
        done[0] += n
        follow.tick(done[0])
        if bar:
            bar.update(n)

    y = reconstruct(model, scan["vol"], grid, scan["profile"], tta=tta, bp_iters=bp_iters, progress=progress)
    y = y * scan["scale"]
    if bar:
        bar.close()
    seconds = time.perf_counter() - t0
    save_nifti(y[None], out, grid.out_affine(scan["affine"]))
    rep = consistency_report(scan, y)
    rep["reconstruct_seconds"] = round(seconds, 2)
    rep["output"] = str(out)
    if report:
        write_json_atomic(rep, report)
    if png:
        save_comparison_png(scan, y, png)
    return rep


def _progress(total: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, leave=False)


def consistency_report(scan: dict[str, Any], y: torch.Tensor) -> dict[str, Any]:
    """The output degraded with the slice profile against the input (foreground RMSE, relative), next to cubic's."""
    grid: SelfSRGrid = scan["grid"]
    raw = scan["raw"]
    fg = foreground_mask(raw)
    ref_rms = float(raw[fg].double().square().mean().sqrt()) if bool(fg.any()) else 1.0

    def err(vol: torch.Tensor) -> float:
        d = degrade_output(vol, grid, scan["profile"]) - raw
        d = d[fg] if bool(fg.any()) else d
        return float(d.double().square().mean().sqrt())

    cub = cubic_output(raw, grid)
    e_sr, e_cub = err(y), err(cub)
    return {
        "input": scan["path"],
        "grid": grid.to_dict(),
        "output_shape": list(grid.out_shape),
        "data_consistency": {
            "what": "RMSE over the foreground between the output degraded with the slice profile and the input",
            "medsr_rmse": e_sr,
            "cubic_rmse": e_cub,
            "medsr_relative": e_sr / ref_rms,
            "cubic_relative": e_cub / ref_rms,
        },
    }


def save_comparison_png(
    scan: dict[str, Any], y: torch.Tensor, path: str | os.PathLike, index: int | None = None
) -> Path:
    """A through-plane view (the middle slice across the first in-plane axis): input (nearest), cubic, medsr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid: SelfSRGrid = scan["grid"]
    raw = scan["raw"]
    cut = grid.inplane_axes[0]
    i = raw.shape[cut] // 2 if index is None else int(index)
    pos = grid.out_positions()
    cut_raw = raw.select(cut, i)  # the slice axis of the cut: one less if it came after ``cut``
    ax = grid.slice_axis - (grid.slice_axis > cut)
    nearest = torch.index_select(
        cut_raw, ax, torch.as_tensor(np.clip(np.round(pos), 0, raw.shape[grid.slice_axis] - 1).astype(np.int64))
    )
    cub = resample_axis(cut_raw.double(), ax, pos).float()  # cubic B-spline, as cubic_output, on this cut only
    titles = ["input (nearest)", "cubic B-spline", "medsr selfsr"]
    sp = list(grid.spacing)
    sp[grid.slice_axis] = grid.target_spacing
    other = grid.inplane_axes[1]
    imgs = [nearest.numpy(), cub.numpy(), y.select(cut, i).numpy()]
    if other > grid.slice_axis:  # rows: the slice axis
        imgs = [im.T for im in imgs]
    hi = float(np.percentile(imgs[0], 99.5)) or 1.0
    aspect = sp[other] / sp[grid.slice_axis]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.5))
    for ax, im, t in zip(axes, imgs, titles):
        ax.imshow(im.T[::-1], cmap="gray", vmin=0, vmax=hi, aspect=1.0 / aspect, interpolation="nearest")
        ax.set_title(t)
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=100, format="png")
    plt.close(fig)
    return path


def score_against(
    output: str | os.PathLike, reference: str | os.PathLike, report: str | os.PathLike | None = None
) -> dict[str, Any]:
    """PSNR/SSIM of ``output`` against ``reference`` inside ``reference > 0`` (the brain for a skull-stripped T1),
    on the reference voxels that the output's grid covers (world coordinates, nearest voxel; the grids must
    share their spacing)."""
    from skimage.metrics import structural_similarity

    y, out_affine = load_scan(output)
    r, ref_affine = load_scan(reference)
    y, r = y.astype(np.float64), r.astype(np.float64)
    # where output voxel 0 falls in the reference (integer offset when the grids are aligned)
    m = np.linalg.solve(ref_affine, out_affine)
    if not np.allclose(m[:3, :3], np.eye(3), atol=1e-3):
        raise ValueError(f"reference '{reference}': its grid differs from the output's (spacing or orientation)")
    off = np.round(m[:3, 3]).astype(int)
    lo = np.maximum(off, 0)
    hi = np.minimum(off + np.array(y.shape), np.array(r.shape))
    rs = r[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    ys = y[lo[0] - off[0] : hi[0] - off[0], lo[1] - off[1] : hi[1] - off[1], lo[2] - off[2] : hi[2] - off[2]]
    mask = rs > 0
    rng = float(rs.max() - rs.min())
    mse = float(np.mean((ys - rs)[mask] ** 2))
    _, smap = structural_similarity(
        rs, ys, data_range=rng, full=True, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    res = {
        "output": str(output),
        "reference": str(reference),
        "psnr_brain": 10 * math.log10(rng * rng / mse) if mse > 0 else math.inf,
        "ssim_brain": float(smap[mask].mean()),
        "voxels": int(mask.sum()),
    }
    if report:
        write_json_atomic(res, report)
    return res


def summary(rep: dict[str, Any]) -> str:
    """One line for the console."""
    dc = rep["data_consistency"]
    return (
        f"data consistency (RMSE of the degraded output vs the input): medsr {dc['medsr_rmse']:.4g}, "
        f"cubic {dc['cubic_rmse']:.4g}"
    )
