"""Benchmark: self-supervised thick-slice SR on the demo MNI T1: cubic B-spline, ``medsr selfsr`` and ECLARE.

The 1 mm MNI ICBM152 T1 (nilearn) is degraded along its last axis to 1×1×S mm (Gaussian slice profile,
FWHM = S, sampled at the slice centres: ``medsr.transforms.SimulateLowResolution``) for each ``--spacings``
value. Each method runs as its own process on that file; the script prints PSNR and SSIM inside the brain
(reference T1 > 0) on the 1 mm grid, the gain over cubic B-spline, the wall time and the peak resident memory
of the process (``wait4`` in a small runner process), and the load average before and after (quote it).

* cubic: ``scipy.ndimage.map_coordinates(order=3, mode="nearest")`` onto the output grid;
* medsr: ``medsr selfsr LR OUT`` (training + reconstruction, default recipe; ``--steps`` to change);
* ECLARE 1.0.1 (``--eclare``): installed by this script into ``.bench_env/eclare`` (its own venv: torch 2.13.0
  first, then ``eclare==1.0.1``), run with the known profile (``--relative-slice-thickness S``, gaussian),
  ``--n-patches`` (one value, or one per spacing) and ``--gpu-id -1``; ``--skip-medsr`` runs cubic and ECLARE only.

Before the table, ``--speed`` (default on) measures the training step of the chosen ``--precision`` on the first
input: steps/s, its GFLOP/s (FLOPs counted by ``torch.utils.flop_counter``) and the ratio to the machine's
convolution peak measured in the same run (a 64 -> 64 3×3 convolution, channels-last, batch 8 of 64×64, same
precision and threads): quote the ratio, the absolute figures move with the machine and its load.

``--curve --init prior scratch``: the learned prior against training from scratch. For each ``--init`` and spacing,
one training run of ``--minutes`` (the bundle's recipe: its pairs, Adam at 0.002 and the cosine schedule ending
on time, in this process), whose weights are kept at ``--curve-at`` minutes of training and at the end; each
snapshot reconstructs the volume (the bundle's reconstruction) and is scored inside the brain against cubic
B-spline: PSNR gain against minutes, to ``--json`` and ``--curve-png``. A snapshot before the end has not
annealed its learning rate: the curve shows how fast a run gets there, the end what a run of that budget gives.

``--prior-2d``: the prior with no training on the external ITK MR slices (evaluation only;
``benchmarks/fetch_external.sh``), each degraded along one axis (either axis in turn) at each ``--spacings`` factor
with selfsr's own degradation (Gaussian profile, FWHM = factor): PSNR over the foreground against the network's
base interpolation (zero head) and an untrained scratch network.

Usage: ``python benchmarks/bench_selfsr.py [--precision float32] [--spacings 4 5] [--threads 2] [--minutes 8.5]
[--eclare] [--real] [--json FILE]``; ``... --curve --init prior scratch --source inia19 --spacings 4 --minutes 4
--json FILE --curve-png FILE``; ``... --prior-2d --spacings 4 5 --json FILE``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from medsr.pipeline.data.demo import demo_sources
from medsr.pipeline.selfsr.run import auto_threads, score_against
from medsr.transforms import SimulateLowResolution

ROOT = Path(__file__).resolve().parents[1]
ECLARE_ENV = ROOT / ".bench_env" / "eclare"


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# started by run_timed: runs the command and records its peak RSS. A child that this (large) process forks or
# vforks keeps this process's peak RSS as its own ru_maxrss across exec; a child of this small runner does not.
_RUNNER = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_timed(cmd: list[str], env: dict | None = None, log: Path | None = None) -> tuple[float, float, int]:
    """Run ``cmd``; returns (wall seconds, peak RSS in MB of the command's process, exit code)."""
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "rusage"
        t0 = time.perf_counter()
        with open(log, "w") if log else open(os.devnull, "w") as fh:
            subprocess.run(
                [sys.executable, "-c", _RUNNER, str(rec), *cmd], stdout=fh, stderr=subprocess.STDOUT, env=env
            )
        wall = time.perf_counter() - t0
        maxrss, code = rec.read_text().split() if rec.is_file() else ("0", "-1")
    return wall, int(maxrss) / 1024.0, int(code)


#: --precision values -> the selfsr bundle's ``precision``
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16", "auto": "auto"}


def conv_peak(threads: int, precision: str, reps: int = 5) -> tuple[float, float]:
    """GFLOP per second of wall time and per CPU second of a 64 -> 64 3×3 convolution forward (batch 8 of
    64×64, channels-last): the machine's peak for the convolutions a training step is made of (best of
    ``reps``). On a loaded machine the CPU-time figure is the steadier one."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 64, 64).contiguous(memory_format=torch.channels_last)
    flops = 2 * 8 * 64 * 64 * 64 * 64 * 9
    best, best_cpu = float("inf"), float("inf")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        conv(x)
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            conv(x)
            best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return flops / best / 1e9, flops / best_cpu / 1e9


def train_speed(lr: Path, threads: int, precision: str, seconds: float = 20.0) -> dict:
    """Steps/s and GFLOP/s of the selfsr training step (default recipe, ``precision``) on ``lr`` for
    ``seconds``, against :func:`conv_peak` measured just before."""
    from torch.utils.flop_counter import FlopCounterMode

    from medsr.pipeline.selfsr.model import Autocast
    from medsr.pipeline.selfsr.run import model_for, pair_loader, prepare

    n = threads or auto_threads()
    peak, peak_cpu = conv_peak(n, precision)
    torch.set_num_threads(n)
    scan = prepare(lr)
    pairs = pair_loader(scan, 10**6)
    model = model_for(scan, None, precision)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, fused=True)

    def step() -> None:
        b = pairs.sample()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.l1_loss(model(b["lr"]), b["hr"]).backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(20):
        step()
    steps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gflops = flops * steps / wall / 1e9
    return {
        "precision": "bf16" if isinstance(model, Autocast) else "fp32",
        "threads": n,
        "steps_per_s": round(steps / wall, 2),
        "cpu_ms_per_step": round(1e3 * cpu / steps, 2),
        "gflop_per_step": round(flops / 1e9, 3),
        "gflop_per_s": round(gflops, 1),
        "conv_peak_gflop_per_s": round(peak, 1),
        "ratio_to_peak": round(gflops / peak, 3),
        "gflop_per_cpu_s": round(flops / 1e6 / (1e3 * cpu / steps), 1),
        "conv_peak_gflop_per_cpu_s": round(peak_cpu, 1),
        "ratio_to_peak_cpu": round(flops / 1e6 / (1e3 * cpu / steps) / peak_cpu, 3),
    }


#: inia19 (0.5 mm macaque T1 template, evaluation only), cached by benchmarks/fetch_external.sh
INIA19 = Path(os.environ.get("MEDSR_DATA", Path.home() / ".cache" / "medsr")) / "external" / "inia19-t1-brain.nii.gz"


def make_inputs(work: Path, spacings: list[float], source: str = "mni") -> tuple[Path, dict[float, tuple[str, Path]]]:
    """The reference and, per ratio in ``spacings``, ``(tag, LR file)``: the source degraded along its last axis
    to ``ratio`` times its voxel size (Gaussian profile)."""
    if source == "inia19":
        if not INIA19.is_file():
            raise SystemExit(f"{INIA19}: missing; run benchmarks/fetch_external.sh first")
        src, name = str(INIA19), "inia19"
    else:
        src, name = demo_sources()["mni_t1"]["path"], "mni_t1"
    img = nib.load(src)
    voxel = float(img.header.get_zooms()[2])
    ref = work / f"{name}_ref.nii.gz"
    data = np.asarray(img.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(data, img.affine), str(ref))
    mt = MetaTensor(torch.from_numpy(data)[None], affine=torch.as_tensor(img.affine))
    out = {}
    for s in spacings:
        lr = SimulateLowResolution((None, None, float(s) * voxel), profile="gaussian")(mt)
        tag = f"{voxel:g}x{voxel:g}x{s * voxel:g}"
        path = work / f"{name}_{tag}.nii.gz"
        nib.save(nib.Nifti1Image(lr[0].numpy().astype(np.float32), lr.affine.numpy()), str(path))
        out[s] = (tag if source == "mni" else f"{name} {tag}", path)
    return ref, out


BUSY = "while True: pass"


CUBIC = """
import sys, nibabel as nib, numpy as np, torch
from medsr.pipeline.selfsr.grid import plan_grid
from medsr.pipeline.selfsr.recon import cubic_output
img = nib.load(sys.argv[1]); vol = torch.from_numpy(np.asarray(img.dataobj, dtype=np.float32))
g = plan_grid(vol.shape, img.affine)
nib.save(nib.Nifti1Image(cubic_output(vol, g).numpy(), g.out_affine(img.affine)), sys.argv[2])
"""


def ensure_eclare() -> Path:
    exe = ECLARE_ENV / "bin" / "run-eclare"
    if exe.exists():
        return exe
    print(f"installing ECLARE 1.0.1 into {ECLARE_ENV} (torch 2.13.0 first) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(ECLARE_ENV)], check=True)
    pip = [str(ECLARE_ENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "eclare==1.0.1"], check=True)
    return exe


def real_scans(work: Path) -> dict[str, Path]:
    """Real anisotropic scans that pip packages ship: dipy's ``aniso_vox`` (if installed) and the first frame of
    nibabel's ``example4d`` (2 × 2 × 2.2 mm EPI)."""
    out = {}
    try:
        from dipy.data import get_fnames

        out["dipy aniso_vox (4x4x5 mm)"] = Path(get_fnames(name="aniso_vox"))
    except Exception:  # dipy not installed, or an older API
        pass
    img = nib.load(str(Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"))
    path = work / "example4d_frame0.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj[..., 0], dtype=np.float32), img.affine), str(path))
    out["nibabel example4d frame 0 (2x2x2.2 mm)"] = path
    return out


def slice_extent(img: nib.Nifti1Image, ax: int) -> float:
    """World distance between the outer edges of the first and last slice along axis ``ax``."""
    lo, hi = np.zeros(4), np.zeros(4)
    lo[3] = hi[3] = 1.0
    lo[ax], hi[ax] = -0.5, img.shape[ax] - 0.5
    return float(np.linalg.norm((img.affine @ hi)[:3] - (img.affine @ lo)[:3]))


def check_real(work: Path, env: dict, threads: int, minutes: float | None, extra: str) -> list[dict]:
    """Target spacing, world extent and data consistency (medsr vs cubic) on real anisotropic scans."""
    records = []
    for name, src in real_scans(work).items():
        out = work / f"real_{src.name.split('.')[0]}_selfsr.nii.gz"
        cmd = [sys.executable, "-m", "medsr.pipeline.cli", "selfsr", str(src), str(out), "--threads", str(threads)]
        if minutes:
            cmd += ["--minutes", str(minutes)]
        t, mem, rc = run_timed(cmd + extra.split(), env, work / f"real_{src.name.split('.')[0]}.log")
        if rc != 0:
            print(f"{name}: failed (exit {rc}), see the log in {work}")
            continue
        a, b = nib.load(str(src)), nib.load(str(out))
        ax = int(np.argmax(a.header.get_zooms()[:3]))
        ext_in, ext_out = slice_extent(a, ax), slice_extent(b, ax)
        rep = json.loads((out.parent / (out.name.split(".")[0] + "_selfsr") / "report.json").read_text())
        dc = rep["data_consistency"]
        print(
            f"{name}: {a.shape[:3]} at {tuple(round(float(z), 3) for z in a.header.get_zooms()[:3])} mm -> "
            f"{b.shape} at {tuple(round(float(z), 3) for z in b.header.get_zooms()[:3])} mm; slice-axis extent "
            f"{ext_in:.2f} -> {ext_out:.2f} mm; data consistency RMSE medsr {dc['medsr_rmse']:.4g} vs cubic "
            f"{dc['cubic_rmse']:.4g}; {t:.0f} s, {mem:.0f} MB"
        )
        records.append(
            {
                "scan": name,
                "input_shape": list(a.shape[:3]),
                "input_spacing": [round(float(z), 4) for z in a.header.get_zooms()[:3]],
                "output_shape": list(b.shape),
                "output_spacing": [round(float(z), 4) for z in b.header.get_zooms()[:3]],
                "slice_extent_mm": [round(ext_in, 3), round(ext_out, 3)],
                "dc_rmse_medsr": dc["medsr_rmse"],
                "dc_rmse_cubic": dc["cubic_rmse"],
                "wall_s": round(t, 1),
                "peak_rss_mb": round(mem),
            }
        )
    return records


def curve(
    lr: Path, ref: Path, work: Path, init: str, minutes: float, at: list[float], threads: int, precision: str
) -> dict:
    """One training run of ``minutes`` from ``init`` (the bundle's recipe, see the module docstring), its weights
    kept at ``at`` minutes of training and at the end, each reconstructed and scored inside the brain."""
    import copy

    from medsr.pipeline.selfsr.run import model_for, pair_loader, prepare, write_result
    from medsr.pipeline.selfsr.schedule import BudgetCosine

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    scan = prepare(lr)
    pairs = pair_loader(scan, 10**9, batch_size=4, patch_rows=64, lr_length=16, seed=0)
    model = model_for(scan, None, precision, init=init)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, fused=True)
    sched = BudgetCosine(opt, steps=10**9, minutes=minutes)
    marks = sorted(t for t in at if t < minutes)
    snaps: list[tuple[float, int, dict]] = []
    steps = 0
    model.train()
    while True:
        t = sched.elapsed() / 60.0
        while marks and t >= marks[0]:
            snaps.append((marks.pop(0), steps, copy.deepcopy(model.state_dict())))
        if sched.done():
            break
        b = pairs.sample()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.l1_loss(model(b["lr"]), b["hr"]).backward()
        opt.step()
        sched.step()
        steps += 1
    snaps.append((minutes, steps, copy.deepcopy(model.state_dict())))
    points = []
    for t, n, state in snaps:
        model.load_state_dict(state)
        model.eval()
        out = work / f"curve_{lr.name.split('.')[0]}_{init}_{t:g}min.nii.gz"
        with torch.no_grad():
            rep = write_result(scan, model, out, threads=threads)
        sc = score_against(out, ref)
        dc = rep["data_consistency"]
        points.append(
            {"minutes": t, "steps": n, "psnr_brain": sc["psnr_brain"], "ssim_brain": sc["ssim_brain"],
             "dc_rmse_medsr": dc["medsr_rmse"], "dc_rmse_cubic": dc["cubic_rmse"]}
        )  # fmt: skip
        print(f"  {init:8} {t:5g} min ({n:6d} steps): PSNR brain {sc['psnr_brain']:.2f}", flush=True)
        out.unlink(missing_ok=True)
    return {"init": init, "minutes": minutes, "points": points}


def curve_png(curves: list[dict], path: str) -> None:
    """PSNR gain over cubic B-spline against minutes of training, one line per input and init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for c in curves:
        xs = [p["minutes"] for p in c["points"]]
        ys = [p["gain_vs_cubic"] for p in c["points"]]
        ax.plot(xs, ys, "o-" if c["init"] == "prior" else "s--", label=f"{c['input']}, {c['init']}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("minutes of training (snapshots of one run)")
    ax.set_ylabel("PSNR gain over cubic B-spline, brain (dB)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prior_2d(spacings: list[float], threads: int) -> list[dict]:
    """The prior with no training on the external ITK MR slices, degraded along either axis at each factor."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_quality import EXTERNAL, _read_any

    from medsr.pipeline.selfsr.grid import apply_axis, degrade_matrix
    from medsr.pipeline.selfsr.model import build_model
    from medsr.pipeline.selfsr.pairs import foreground_mask
    from medsr.pipeline.selfsr.prior import PRIOR_FILE, load_prior, prior_network, read_prior
    from medsr.pipeline.selfsr.run import intensity_divisor

    torch.set_num_threads(threads)
    folder = INIA19.parent
    if not all((folder / n).is_file() for n in EXTERNAL):
        raise SystemExit(f"{folder}: the ITK example slices are missing; run benchmarks/fetch_external.sh first")
    record = read_prior(PRIOR_FILE)
    rows = []
    for s in [int(round(x)) for x in spacings]:
        prior = prior_network(record, s)
        zero = dict(record, heads={})  # the prior's base: a zero head is the network's interpolation
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            base = load_prior(build_model(s, None, "fp32"), zero, s).eval()
        torch.manual_seed(0)
        scratch = build_model(s, None, "fp32").eval()
        for name in EXTERNAL:
            img = torch.from_numpy(np.asarray(_read_any(str(folder / name)))[0].astype(np.float32).copy())
            img = img / intensity_divisor(img)
            for axis in (0, 1):
                hr = img if axis == 1 else img.T
                n = (hr.shape[-1] // s) * s
                hr = hr[:, :n].contiguous()
                w = degrade_matrix(n, (np.arange(n // s) + 0.5) * s - 0.5, 1.0, float(s), "gaussian")
                lr = apply_axis(hr.double(), w, -1).float()
                fg = foreground_mask(hr)
                rng = float(hr.max() - hr.min())
                row = {"image": name.split(".")[0], "factor": s, "degraded_axis": axis}
                with torch.no_grad():
                    for key, net in (("cubic", base), ("prior", prior), ("scratch_untrained", scratch)):
                        y = net(lr[None, None].contiguous(memory_format=torch.channels_last))[0, 0]
                        mse = float(((y - hr)[fg]).double().square().mean())
                        row[key] = 10 * np.log10(rng * rng / mse)
                rows.append(row)
    return rows


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    extra = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(extra)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacings", type=float, nargs="+", default=[4.0, 5.0])
    parser.add_argument(
        "--precision", choices=sorted(PRECISIONS), default="auto",
        help="medsr's precision (float32: the path of a CPU without native bfloat16; auto: bf16 where native)",
    )  # fmt: skip
    parser.add_argument("--source", choices=("mni", "inia19"), default="mni",
                        help="mni: the demo MNI T1; inia19: the external macaque template (evaluation only)")  # fmt: skip
    parser.add_argument("--busy-spacings", type=float, nargs="*", default=None,
                        help="run medsr at these --spacings values next to one busy process (a shared CPU)")  # fmt: skip
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the training step against the convolution peak first (default on)")  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=0,
        help="threads of the speed line, cubic and ECLARE (0: the idle cores); medsr runs its default (the idle "
        "cores, following the load) unless --medsr-threads is given",
    )  # fmt: skip
    parser.add_argument("--medsr-threads", type=int, default=None, help="pass --threads N to medsr selfsr")
    parser.add_argument("--steps", type=int, default=None, help="medsr training steps (default: the bundle's)")
    parser.add_argument("--minutes", type=float, default=None, help="medsr training time budget (--minutes)")
    parser.add_argument("--medsr-args", default="", help="extra arguments for `medsr selfsr` (one string)")
    parser.add_argument("--skip-medsr", action="store_true", help="cubic (and ECLARE) only")
    parser.add_argument("--eclare", action="store_true", help="also run ECLARE 1.0.1 (installs its venv once)")
    parser.add_argument(
        "--eclare-patches", type=int, nargs="+", default=[7680],
        help="ECLARE training patches: one value, or one per --spacings value (to match medsr's wall time)",
    )  # fmt: skip
    parser.add_argument("--eclare-spacings", type=float, nargs="*", default=None, help="run ECLARE only for these")
    parser.add_argument("--real", action="store_true", help="also check real anisotropic scans (dipy, nibabel)")
    parser.add_argument("--real-minutes", type=float, default=2.0, help="medsr training budget on the real scans")
    parser.add_argument("--curve", action="store_true", help="PSNR against minutes of training for each --init")
    parser.add_argument("--init", nargs="+", choices=("prior", "scratch"), default=None,
                        help="medsr selfsr --init (with --curve: the curves to draw, default prior scratch)")  # fmt: skip
    parser.add_argument("--curve-at", type=float, nargs="+", default=[0, 0.25, 0.5, 1, 1.5, 2, 3],
                        help="minutes of training at which --curve scores the weights (and at the end)")  # fmt: skip
    parser.add_argument("--curve-png", default=None, help="--curve: also plot the curves here")
    parser.add_argument("--prior-2d", action="store_true", help="the prior untrained on the external ITK MR slices")
    parser.add_argument("--work", default=str(ROOT / ".bench_env" / "selfsr_work"))
    parser.add_argument("--png", default=str(ROOT / "benchmarks" / "results" / "selfsr_mni_1x1x5.png"))
    parser.add_argument(
        "--json", default=None, help="also write the command, load averages, table and real-scan checks here"
    )
    args = parser.parse_args()
    if len(args.eclare_patches) not in (1, len(args.spacings)):
        parser.error("--eclare-patches: give one value or one per --spacings value")
    patches = dict(zip(args.spacings, args.eclare_patches * len(args.spacings)))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    started = load()
    print(f"load average at start: {started}  (threads {args.threads}, {os.cpu_count()} CPUs)", flush=True)
    if args.prior_2d or args.curve:
        return special(args, work, started)
    ref, inputs = make_inputs(work, args.spacings, args.source)
    speed = []
    if args.speed:  # one thread, and the --threads setting (0: the idle cores)
        for n in sorted({1, args.threads or auto_threads()}):
            sp = train_speed(next(iter(inputs.values()))[1], n, PRECISIONS[args.precision])
            speed.append(sp)
            print(
                f"training step ({sp['precision']}, {sp['threads']} threads): {sp['steps_per_s']} steps/s, "
                f"{sp['gflop_per_step']} GFLOP a step, {sp['gflop_per_s']} GFLOP/s = {sp['ratio_to_peak']:.0%} "
                f"of the convolution peak ({sp['conv_peak_gflop_per_s']} GFLOP/s); per CPU second "
                f"{sp['gflop_per_cpu_s']} against {sp['conv_peak_gflop_per_cpu_s']} ({sp['ratio_to_peak_cpu']:.0%}); "
                f"load average {load()}",
                flush=True,
            )
    if args.precision != "auto":
        args.medsr_args = f"{args.medsr_args} --set precision={PRECISIONS[args.precision]}".strip()
    rows = []
    for s, (tag, lr) in inputs.items():
        res = {}
        notes = {}
        stem = tag.replace(" ", "_")
        out = work / f"cubic_{stem}.nii.gz"
        res["cubic B-spline"] = (*run_timed([sys.executable, "-c", CUBIC, str(lr), str(out)], env), out)
        out = work / f"medsr_{stem}.nii.gz"
        cmd = [sys.executable, "-m", "medsr.pipeline.cli", "selfsr", str(lr), str(out)]
        if args.medsr_threads is not None:
            cmd += ["--threads", str(args.medsr_threads)]
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        if args.minutes:
            cmd += ["--minutes", str(args.minutes)]
        if args.init:
            cmd += ["--init", args.init[0]]
        cmd += args.medsr_args.split()
        if not args.skip_medsr:
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if s in (args.busy_spacings or []) else None
            try:
                res["medsr selfsr"] = (*run_timed(cmd, env, work / f"medsr_{stem}.log"), out)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            log = (work / f"medsr_{stem}.log").read_text(errors="replace")
            m = re.search(r"after (\d+) iterations", log)
            note = [f"{m.group(1)} steps in the time budget"] if m else []
            changes = re.findall(r"threads: (\d+) -> (\d+) at iteration", log)
            if busy is not None:
                note.append("CPU shared with one busy process")
            if changes:
                note.append(f"threads changed {len(changes)} times, last to {changes[-1][1]}")
            notes[(tag, "medsr selfsr")] = "; ".join(note)
        if args.eclare and (args.eclare_spacings is None or s in args.eclare_spacings):
            exe = ensure_eclare()
            d = work / f"eclare_{stem}"
            shutil.rmtree(d, ignore_errors=True)
            cmd = [
                str(exe), "--in-fpath", str(lr), "--out-dir", str(d), "--relative-slice-thickness", f"{s:g}",
                "--relative-slice-profile-type", "gaussian", "--n-patches", str(patches[s]), "--gpu-id", "-1",
            ]  # fmt: skip
            # the same thread rule as medsr (idle cores, at least 1): 2 threads on a busy 2-core CPU run 6x slower
            n = args.threads or auto_threads()
            eenv = dict(env, OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
            t, mem, rc = run_timed(cmd, eenv, work / f"eclare_{stem}.log")
            found = sorted(d.glob("*_eclare.nii*")) if d.is_dir() else []
            res[f"ECLARE ({patches[s]} patches)"] = (t, mem, rc, found[0] if found else d / "missing")
        base = None
        for name, (t, mem, rc, path) in res.items():
            if rc != 0 or not Path(path).is_file():
                rows.append((tag, name, None, None, None, t, mem, f"failed (exit {rc})"))
                continue
            sc = score_against(path, ref)
            if base is None:
                base = sc["psnr_brain"]
            note = notes.get((tag, name), "")
            rows.append((tag, name, sc["psnr_brain"], sc["psnr_brain"] - base, sc["ssim_brain"], t, mem, note))
        print(f"done {tag}; load average {load()}", flush=True)
        if s == max(args.spacings):
            png = work / f"medsr_{stem}_selfsr" / "through_plane.png"
            if png.is_file():
                Path(args.png).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(png, args.png)
    print()
    print(
        f"{'input':20} {'method':28} {'PSNR brain':>10} {'vs cubic':>9} {'SSIM brain':>10} {'time s':>8} {'peak MB':>8}"
    )
    for tag, name, p, d, ssim, t, mem, note in rows:
        if p is None:
            print(f"{tag:20} {name:28} {'':>10} {'':>9} {'':>10} {t:8.0f} {mem:8.0f}  {note}")
        else:
            print(f"{tag:20} {name:28} {p:10.2f} {d:+9.2f} {ssim:10.4f} {t:8.0f} {mem:8.0f}  {note}")
    real = []
    if args.real:
        print()
        real = check_real(work, env, args.threads, args.real_minutes, args.medsr_args)
    ended = load()
    print(f"\nload average at end: {ended}")
    keys = ("input", "method", "psnr_brain", "psnr_vs_cubic", "ssim_brain", "wall_s", "peak_rss_mb", "note")
    result = {
        "command": " ".join(["python", "benchmarks/bench_selfsr.py", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "precision": args.precision,
        "cpu": _cpu_name(),
        "speed": speed,
        "load_average_start": started,
        "load_average_end": ended,
        "rows": [dict(zip(keys, r)) for r in rows],
        "real_scans": real,
    }
    (work / "results.json").write_text(json.dumps(result, indent=1, default=str))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


def special(args: argparse.Namespace, work: Path, started: str) -> int:
    """``--prior-2d`` and ``--curve`` (see the module docstring)."""
    result: dict = {
        "command": " ".join(["python", "benchmarks/bench_selfsr.py", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "cpu": _cpu_name(),
        "load_average_start": started,
    }
    if args.prior_2d:
        rows = prior_2d(args.spacings, args.threads or auto_threads())
        result["prior_2d"] = rows
        print(f"{'factor':>6} {'cubic':>7} {'prior':>7} {'untrained':>9}   (mean PSNR over the foreground, dB)")
        for s in sorted({r["factor"] for r in rows}):
            sel = [r for r in rows if r["factor"] == s]
            m = {k: float(np.mean([r[k] for r in sel])) for k in ("cubic", "prior", "scratch_untrained")}
            wins = sum(r["prior"] > r["cubic"] for r in sel)
            result.setdefault("prior_2d_mean", {})[str(s)] = {**m, "prior_beats_cubic": f"{wins}/{len(sel)}"}
            print(
                f"{s:>6} {m['cubic']:7.2f} {m['prior']:7.2f} {m['scratch_untrained']:9.2f}   prior > cubic on {wins}/{len(sel)}"
            )
    if args.curve:
        threads = args.medsr_threads or args.threads or auto_threads()
        ref, inputs = make_inputs(work, args.spacings, args.source)
        curves = []
        for tag, lr in inputs.values():
            out = work / f"cubic_{tag.replace(' ', '_')}.nii.gz"
            subprocess.run([sys.executable, "-c", CUBIC, str(lr), str(out)], check=True)
            cubic = score_against(out, ref)["psnr_brain"]
            print(f"{tag}: cubic B-spline PSNR brain {cubic:.2f}", flush=True)
            for init in args.init or ["prior", "scratch"]:
                c = curve(lr, ref, work, init, args.minutes or 4.0, args.curve_at, threads, PRECISIONS[args.precision])
                for p in c["points"]:
                    p["gain_vs_cubic"] = p["psnr_brain"] - cubic
                curves.append({"input": tag, "cubic_psnr_brain": cubic, **c})
        result["curves"] = curves
        print(f"\n{'input':22} {'init':8} " + " ".join(f"{p['minutes']:>6g}" for p in curves[0]["points"]) + "  (min)")
        for c in curves:
            print(f"{c['input']:22} {c['init']:8} " + " ".join(f"{p['gain_vs_cubic']:+6.2f}" for p in c["points"]))
        if args.curve_png:
            curve_png(curves, args.curve_png)
    result["load_average_end"] = load()
    print(f"load average at end: {result['load_average_end']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
