"""Achieved GFLOP/s of RRDBNet, ESRGAN-SE and EDSR-ISE inference next to the best single convolution of the
same width measured in the same run (the machine's practical convolution peak).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 x multiply-accumulates of the
convolutions; element-wise ops are not counted), so "achieved GFLOP/s" = conv FLOPs / wall time.
Variants: fp32 (contiguous), channels_last, bf16 (CPU autocast) and torch.compile (fp32).

Default (short) run: 2D 64x64 -> x4 and 3D 16^3 -> x2, RRDBNet/ESRGAN-SE with 1 RRDB and EDSR-ISE with
4 blocks (reduced depth and size, stated in the output). ``--full``: the published sizes (2D 128x128 -> x4,
3D 64^3 -> x2, 23 RRDBs, 16 EDSR blocks; slow on CPU).

    python benchmarks/bench_networks.py [--full] [--threads N] [--repeats R] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medsr.networks import conv_nd, get_network


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation, compile)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _flops(model, x) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def _fmt(model, dims):
    return torch.channels_last if dims == 2 else torch.channels_last_3d


def run_variants(model, x, dims, repeats, compile_, bf16_=True):
    """Median seconds per variant for one model and input (bf16 skipped when ``bf16_`` is False)."""
    model = model.eval()
    out = {}
    with torch.no_grad():
        out["fp32"] = _time(lambda: model(x), repeats)
        fmt = _fmt(model, dims)
        m_cl, x_cl = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        out["channels_last"] = _time(lambda: m_cl(x_cl), repeats)
        model.to(memory_format=torch.contiguous_format)

        def bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)

        if bf16_:
            out["bf16"] = _time(bf16, repeats)
        if compile_:
            compiled = torch.compile(model)
            out["compile"] = _time(lambda: compiled(x), repeats)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="published sizes (slow on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.full:
        cases = [(2, (128, 128), 4, 23, 16), (3, (64, 64, 64), 2, 23, 16)]
    else:
        cases = [(2, (64, 64), 4, 1, 4), (3, (16, 16, 16), 2, 1, 4)]
    nf = 64
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu, repeats {args.repeats} (median)")
    print("FLOPs: conv/matmul FLOPs from FlopCounterMode; GFLOP/s = FLOPs / median wall time")
    for dims, size, scale, n_rrdb, n_edsr in cases:
        print(
            f"\n== {dims}D input {size} x{scale}; RRDB blocks {n_rrdb}, EDSR-ISE blocks {n_edsr}"
            + ("" if args.full else " (reduced; --full for published)")
        )
        x = torch.rand(1, 1, *size)
        # practical peak: one 3x3 conv of the same width, on the LR and on the HR grid (the networks work on
        # both), best of the variants and of the two sizes
        conv = conv_nd(dims, nf, nf, 3)
        peak: dict[str, float] = {}
        for grid in (size, tuple(s * scale for s in size)):
            xc = torch.rand(1, nf, *grid)
            peak_flops = _flops(conv, xc)
            # a bf16 conv that is already slow on the LR grid (no native bf16) is not timed again on the HR grid
            probe_bf16 = "bf16" not in peak or peak["bf16"] >= 0.5 * peak["fp32"]
            for k, t in run_variants(conv, xc, dims, args.repeats, False, probe_bf16).items():
                peak[k] = max(peak.get(k, 0.0), peak_flops / t / 1e9)
            del xc
        bf16_ok = peak["bf16"] >= 0.5 * peak["fp32"]
        if not bf16_ok:
            print(
                f"  bf16 single conv runs at {peak.pop('bf16'):.1f} GFLOP/s (no native bf16 on this CPU): bf16 skipped for networks"
            )
        best_peak = max(peak.values())
        print(
            "  single conv 64->64 3x3 GFLOP/s (best of LR and HR grid): "
            + ", ".join(f"{k} {v:.1f}" for k, v in peak.items())
            + f"; peak = {best_peak:.1f}"
        )
        models = {
            "rrdbnet": dict(num_features=nf, num_blocks=n_rrdb, growth_channels=32),
            "esrgan_se": dict(num_features=nf, num_blocks=n_rrdb, growth_channels=32),
            "edsr_ise": dict(num_features=nf, num_blocks=n_edsr),
        }
        print(
            f"  {'network':10s} {'GFLOP':>8s} "
            + " ".join(
                f"{v:>22s}"
                for v in ["fp32", "channels_last"]
                + (["bf16"] if bf16_ok else [])
                + ([] if args.no_compile else ["compile"])
            )
        )
        for name, kw in models.items():
            net = get_network(name, spatial_dims=dims, in_channels=1, out_channels=1, scale_factor=scale, **kw)
            flops = _flops(net, x)
            times = run_variants(net, x, dims, args.repeats, not args.no_compile, bf16_ok)
            cells = []
            for t in times.values():
                g = flops / t / 1e9
                cells.append(f"{g:7.1f} ({100 * g / best_peak:5.1f}% pk)")
            print(f"  {name:10s} {flops / 1e9:8.2f} " + " ".join(f"{c:>22s}" for c in cells))
    print("\n% pk = achieved GFLOP/s / best single-conv GFLOP/s of the same run (target >= 80%)")


if __name__ == "__main__":
    main()
