"""Achieved GFLOP/s of RRDBNet, ESRGAN-SE and EDSR-ISE inference next to the best single convolution of the
same width measured in the same run (the machine's practical convolution peak).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 x multiply-accumulates of the
convolutions and matmuls; element-wise ops are not counted), so "achieved GFLOP/s" = network conv FLOPs /
median wall time of one forward pass, batch 1, no gradients. Each variant is timed at least ``--repeats``
times after a warm-up call, and more often (up to 15) when a call is short, so that about 3 s are timed.

Variants, each timed for the networks and for the single convolution (the networks always with the fast
forwards of :func:`medsr.networks.optimize.use_fast_forwards`, which :func:`optimize_for_inference` swaps in):
- ``fp32``: contiguous (NCHW / NCDHW) tensors, eager;
- ``channels_last``: the model and input in channels-last memory format, eager;
- ``bf16``: CPU/CUDA autocast to bfloat16, channels-last (skipped when a single bf16 convolution runs at less
  than half the fp32 speed, i.e. the hardware has no native bf16);
- ``compile``: :func:`medsr.networks.optimize_for_inference` (channels-last + ``torch.compile`` with
  inductor weight freezing, which pre-packs convolution weights and fuses element-wise ops into them).

Allocator: by default the process calls :func:`medsr.networks.reuse_freed_memory` first, so HR-grid feature
maps above 32 MiB are reused from the heap instead of being page-faulted from fresh ``mmap`` pages on every
forward pass; ``--allocator default`` keeps glibc's behaviour (run both to see the effect).

The peak is the best single 64 -> 64 3x3 convolution over the same variants, on the LR and on the HR grid
(the networks run on both); the LR-grid convolution is timed at least 9 times.

Sizes (those of the issue): 2D 128x128 -> x4 and 3D 64^3 -> x2. In 2D the networks have their published depth
(23 RRDBs, 16 EDSR-ISE blocks). In 3D a published-depth RRDBNet is about 26 TFLOP per forward pass (minutes
on a CPU), so the default uses 1 RRDB and 4 EDSR-ISE blocks there (``--depth3d full`` for published depth).
``--quick``: 2D 64x64 and 3D 16^3 with reduced depth, for a smoke run.

    python benchmarks/bench_networks.py [--quick] [--threads N] [--repeats R] [--device cpu|cuda]
        [--variants fp32,channels_last,bf16,compile] [--depth3d reduced|full] [--only 2d|3d]
        [--allocator reuse|default]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medsr.networks import channels_last_format, conv_nd, get_network, optimize_for_inference, reuse_freed_memory
from medsr.networks.optimize import use_fast_forwards

ALL_VARIANTS = ("fp32", "channels_last", "bf16", "compile")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MIN_SECONDS = 3.0  # per variant: a fast network gets more timed calls than ``--repeats``, up to MAX_REPEATS
MAX_REPEATS = 15


def _time(fn, repeats: int, device: torch.device, pair=None) -> tuple[float, list[tuple[float, float]]]:
    """Median seconds of ``fn`` over at least ``repeats`` calls (more for a fast ``fn``, so that about
    ``MIN_SECONDS`` are timed), after one warm-up call (oneDNN primitives, compile). With ``pair`` (a
    callable returning the peak convolution's GFLOP/s now), also the list of ``(seconds, pair GFLOP/s)``
    of every timed call, ``pair`` measured just before it."""
    fn()
    _sync(device)
    times, paired = [], []
    first = None
    n = repeats
    while len(times) < n:
        g = pair() if pair is not None else float("nan")
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
        paired.append((times[-1], g))
        if first is None:
            first = times[0]
            n = max(repeats, min(MAX_REPEATS, int(MIN_SECONDS / max(first, 1e-6))))
    return statistics.median(times), paired if pair is not None else []


def _flops(model, x) -> int:
    x = x.to(next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def _prepare(model, x, dims, variant, device):
    """A no-argument callable running ``model`` on ``x`` in ``variant`` (model already eval, on ``device``)."""
    fmt = channels_last_format(dims)
    use_fast_forwards(model)  # every variant runs the inference forwards of medsr.networks.optimize
    if variant == "fp32":
        model.to(memory_format=torch.contiguous_format)
        return lambda: model(x)
    m_cl, x_cl = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
    if variant == "channels_last":
        return lambda: m_cl(x_cl)
    if variant == "bf16":

        def bf16():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return m_cl(x_cl)

        return bf16
    if variant == "compile":
        compiled = optimize_for_inference(model, spatial_dims=dims, compile=True)
        return lambda: compiled(x_cl)
    raise ValueError(f"variant: unknown {variant!r}")


def run_variants(model, x, dims, repeats, variants, device, pair=None) -> dict[str, tuple[float, list[float]]]:
    """Per variant: median seconds of one call of ``model(x)``, and the GFLOP/s of ``pair()`` (the peak
    convolution) measured right before each timed call (empty without ``pair``)."""
    model = model.eval().to(device)
    x = x.to(device)
    out = {}
    with torch.no_grad():
        for variant in variants:
            out[variant] = _time(_prepare(model, x, dims, variant, device), repeats, device, pair)
    model.to(memory_format=torch.contiguous_format)
    return out


def peak_probe(conv, grid, dims, variant, device, nf):
    """A callable giving the GFLOP/s of the peak convolution now (median of 3 calls): the network timings are
    paired with it, so a machine that slows down for a while slows both sides of the ratio."""
    xc = torch.rand(1, nf, *grid, device=device)
    flops = _flops(conv, xc)
    with torch.no_grad():
        fn = _prepare(conv.eval().to(device), xc, dims, variant, device)
        fn()

    def probe() -> float:
        with torch.no_grad():
            times = []
            while len(times) < 3 and sum(times) < 0.5:  # one call when it is slow (a 3D HR-grid conv)
                _sync(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - t)
        return flops / statistics.median(times) / 1e9

    return probe


def _cases(args):
    if args.quick:
        cases = [(2, (64, 64), 4, 1, 4), (3, (16, 16, 16), 2, 1, 4)]
    else:
        full3d = args.depth3d == "full"
        cases = [(2, (128, 128), 4, 23, 16), (3, (64, 64, 64), 2, 23 if full3d else 1, 16 if full3d else 4)]
    if args.only:
        cases = [c for c in cases if f"{c[0]}d" == args.only]
    return cases


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and reduced depth (smoke run)")
    parser.add_argument("--depth3d", choices=("reduced", "full"), default="reduced", help="3D network depth")
    parser.add_argument("--only", choices=("2d", "3d"), default=None, help="run one of the two cases")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help=f"timed calls per variant at least (median; up to {MAX_REPEATS} when fast)",
    )
    parser.add_argument(
        "--allocator",
        choices=("reuse", "default"),
        default="reuse",
        help="reuse: medsr.networks.reuse_freed_memory() (glibc heap keeps freed HR maps); default: glibc's",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--variants", default=",".join(ALL_VARIANTS), help="comma-separated subset of " + ",".join(ALL_VARIANTS)
    )
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(ALL_VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(ALL_VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    allocator = "glibc default"
    if args.allocator == "reuse" and device.type == "cpu":
        allocator = "freed memory reused (reuse_freed_memory)" if reuse_freed_memory() else "not glibc: default"
    torch.manual_seed(0)
    nf = 64
    name_dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__}, device {name_dev}, threads {torch.get_num_threads()}, "
        f"repeats {args.repeats} (median), batch 1, no grad, allocator: {allocator}"
    )
    print("FLOPs: conv/matmul FLOPs from FlopCounterMode; GFLOP/s = FLOPs / median wall time")
    summary = []
    for dims, size, scale, n_rrdb, n_edsr in _cases(args):
        published = (n_rrdb, n_edsr) == (23, 16)
        print(
            f"\n== {dims}D input {size} x{scale}; RRDB blocks {n_rrdb}, EDSR-ISE blocks {n_edsr}"
            + (" (published depth)" if published else " (reduced depth)")
        )
        x = torch.rand(1, 1, *size)
        conv = conv_nd(dims, nf, nf, 3)
        net_variants = list(variants)
        if "bf16" in variants:
            # a small probe first: without native bf16 a full-size bf16 conv takes minutes in 3D
            xp = torch.rand(1, nf, *([16] * dims))
            probe_flops = _flops(conv, xp)
            small = run_variants(conv, xp, dims, 1, ["channels_last", "bf16"], device)
            g_bf16, g_fp32 = probe_flops / small["bf16"][0] / 1e9, probe_flops / small["channels_last"][0] / 1e9
            if g_bf16 < 0.5 * g_fp32:
                print(
                    f"  bf16 probe conv (16^{dims}) runs at {g_bf16:.1f} GFLOP/s against {g_fp32:.1f} in fp32 "
                    "(no native bf16 on this device): bf16 skipped"
                )
                net_variants.remove("bf16")
        peak: dict[str, float] = {}
        peak_grid: dict[str, tuple[int, ...]] = {}
        for grid in (size, tuple(s * scale for s in size)):
            xc = torch.rand(1, nf, *grid)
            conv_flops = _flops(conv, xc)
            reps = max(args.repeats, 9 if grid == size else 5)  # the LR-grid conv is cheap: more samples
            times = run_variants(conv, xc, dims, reps, net_variants, device)
            for k, (t, _) in times.items():
                if conv_flops / t / 1e9 > peak.get(k, 0.0):
                    peak[k] = conv_flops / t / 1e9
                    peak_grid[k] = grid
            del xc
        best_peak = max(peak.values())
        best_variant = max(peak, key=peak.get)
        probe = peak_probe(conv, peak_grid[best_variant], dims, best_variant, device, nf)
        print(
            "  single conv 64->64 3x3 GFLOP/s (best of LR and HR grid): "
            + ", ".join(f"{k} {v:.1f}" for k, v in peak.items())
            + f"; peak = {best_peak:.1f} ({best_variant}, {'x'.join(map(str, peak_grid[best_variant]))} grid)"
        )
        models = {
            "rrdbnet": dict(num_features=nf, num_blocks=n_rrdb, growth_channels=32),
            "esrgan_se": dict(num_features=nf, num_blocks=n_rrdb, growth_channels=32),
            "edsr_ise": dict(num_features=nf, num_blocks=n_edsr),
        }
        print(f"  {'network':10s} {'GFLOP':>8s} " + " ".join(f"{v:>22s}" for v in net_variants))
        for name, kw in models.items():
            net = get_network(name, spatial_dims=dims, in_channels=1, out_channels=1, scale_factor=scale, **kw)
            flops = _flops(net, x)
            times = run_variants(net, x, dims, args.repeats, net_variants, device, pair=probe)
            cells = []
            for variant, (t, paired) in times.items():
                g = flops / t / 1e9
                frac = statistics.median(flops / tn / 1e9 / gp for tn, gp in paired)
                cells.append(f"{g:7.1f} ({100 * frac:5.1f}% pk)")
                summary.append((dims, name, variant, frac))
            print(f"  {name:10s} {flops / 1e9:8.2f} " + " ".join(f"{c:>22s}" for c in cells))
            del net
    print(
        "\n% pk = median over the timed calls of (network GFLOP/s / peak-conv GFLOP/s measured just before that"
        " call), the peak conv being the best variant and grid above (target >= 80%)"
    )
    best: dict[tuple[int, str], tuple[str, float]] = {}
    for dims, name, variant, frac in summary:
        if (dims, name) not in best or frac > best[(dims, name)][1]:
            best[(dims, name)] = (variant, frac)
    print("best variant per network: " + "; ".join(f"{d}D {n} {100 * f:.0f}% ({v})" for (d, n), (v, f) in best.items()))


if __name__ == "__main__":
    main()
