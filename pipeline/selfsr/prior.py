"""The learned prior of ``medsr selfsr``: a starting network so a scan's own training needs fewer steps.

The prior is the selfsr generator (:data:`~medsr.pipeline.selfsr.model.DEFAULT_NETWORK`, ``residual_interp=True``)
with one shared body and one output layer (``tail.0``, the sub-pixel conv: a "head") per integer factor
:data:`PRIOR_FACTORS`. It is trained on 2D through-plane-like pairs built by selfsr's own pair code
(:class:`~medsr.pipeline.selfsr.pairs.SlicePairs`: one in-plane axis degraded with the slice profile and sampled
at the slice spacing) from the embedded demo sources only (:data:`PRIOR_SOURCES`): the MNI152 T1's axial
planes, dipy's ``S0_10slices`` and ``t1_coronal_slice`` and nibabel's ``example4d``, at every factor with
Gaussian and box profiles and a thinner Gaussian slice (a gap). The MNI's sagittal and coronal planes and the
external evaluation set (``benchmarks/fetch_external.sh``) are never seen.

The file (``bundles/selfsr/models/prior.pt``) is a medsr model file (:mod:`medsr.pipeline.models`) with
``role: "prior"``, ``factors`` and the per-factor heads under ``heads``; ``shipped_models`` skips it (it is no
upscale model). A scan's model starts from it with :func:`load_prior` (``medsr selfsr --init prior``).

Train it (18 minutes on one thread of a 2-core CPU)::

    python -m medsr.pipeline.selfsr.prior --minutes 18 --threads 1 --batch-size 8 --out bundles/selfsr/models/prior.pt
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medsr.pipeline.bundles import BUNDLES_DIR
from medsr.pipeline.selfsr.model import build_model, generator_of

__all__ = [
    "PRIOR_FILE",
    "PRIOR_FACTORS",
    "PRIOR_SOURCES",
    "PRIOR_VARIANTS",
    "HEAD",
    "prior_planes",
    "PriorPairs",
    "train_prior",
    "save_prior",
    "read_prior",
    "prior_fits",
    "load_prior",
    "prior_network",
    "main",
]

#: the shipped prior
PRIOR_FILE = BUNDLES_DIR / "selfsr" / "models" / "prior.pt"
#: the integer slice-axis factors the prior has a head for
PRIOR_FACTORS = (2, 3, 4, 5, 6)
#: the training sources (demo data only) and how often a batch is drawn from each
PRIOR_SOURCES = {"mni152_t1_axial": 0.55, "nibabel_example4d": 0.2, "dipy_s0_10slices": 0.15, "dipy_t1_coronal": 0.1}
#: slice profiles of the training pairs: (profile, thickness as a fraction of the slice spacing)
PRIOR_VARIANTS = (("gaussian", 1.0), ("box", 1.0), ("gaussian", 0.75))
#: the per-factor output layer of the selfsr generator (``EDSR(upsampler="subpixel")``'s sub-pixel conv)
HEAD = "tail.0"


# ------------------------------------------------------------------------------------------- training data
def prior_planes() -> dict[str, tuple[torch.Tensor, tuple[float, float]]]:
    """The training images of the prior: ``{source: (planes (N, H, W) divided as selfsr divides a scan,
    in-plane spacing)}``, from the files the demo packages ship (no download)."""
    import importlib.resources
    import importlib.util

    import nibabel as nib

    from medsr.pipeline.data.demo import demo_sources
    from medsr.pipeline.errors import MedsrError
    from medsr.pipeline.selfsr.run import intensity_divisor

    def nifti(path: Any) -> tuple[np.ndarray, tuple[float, float]]:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        data = data[..., 0] if data.ndim == 4 else data
        zooms = img.header.get_zooms()
        return np.ascontiguousarray(data.transpose(2, 0, 1)), (float(zooms[0]), float(zooms[1]))

    if importlib.util.find_spec("dipy") is None:
        raise MedsrError("prior: training reads dipy's sample MR files; install it: pip install dipy (or medsr[bench])")
    dipy = importlib.resources.files("dipy") / "data" / "files"
    out: dict[str, tuple[np.ndarray, tuple[float, float]]] = {}
    mni, sp = nifti(demo_sources()["mni_t1"]["path"])  # axial planes only: sagittal/coronal stay unseen
    keep = [k for k in range(mni.shape[0]) if (mni[k] > 0).mean() > 0.1]
    out["mni152_t1_axial"] = (mni[keep[0] : keep[-1] + 1 : 2], sp)
    out["nibabel_example4d"] = nifti(importlib.resources.files("nibabel") / "tests" / "data" / "example4d.nii.gz")
    out["dipy_s0_10slices"] = nifti(dipy / "S0_10slices.nii.gz")
    out["dipy_t1_coronal"] = (np.load(str(dipy / "t1_coronal_slice.npy")).astype(np.float32)[None], (1.0, 1.0))
    res = {}
    for name, (planes, sp) in out.items():
        vol = torch.from_numpy(np.ascontiguousarray(planes))
        res[name] = (vol / intensity_divisor(vol), sp)
    return res


class PriorPairs:
    """Batches ``(factor, {"lr", "hr"})`` for the prior: a factor, a source (by :data:`PRIOR_SOURCES` weight) and a
    profile variant drawn per batch; the pairs of each are selfsr's own (:class:`SlicePairs` on a grid whose slice
    axis is the stack of planes, so both in-plane axes of every plane are degraded in turn).

    Args:
        planes: :func:`prior_planes`.
        factors: the factors.
        batch_size, patch_rows, lr_length: as in selfsr's ``pair_loader``.
        seed: seed of the draws.
    """

    def __init__(
        self,
        planes: dict[str, tuple[torch.Tensor, tuple[float, float]]],
        factors: tuple[int, ...] = PRIOR_FACTORS,
        batch_size: int = 8,
        patch_rows: int = 64,
        lr_length: int = 16,
        seed: int = 0,
    ) -> None:
        from medsr.pipeline.selfsr.grid import plan_grid
        from medsr.pipeline.selfsr.pairs import SlicePairs

        self.factors = tuple(int(f) for f in factors)
        self.names = [n for n in PRIOR_SOURCES if n in planes]
        w = np.array([PRIOR_SOURCES[n] for n in self.names], dtype=np.float64)
        self.weights = w / w.sum()
        self.rng = np.random.default_rng(seed)
        self.pairs: dict[tuple[str, int, int], Any] = {}
        for name in self.names:
            vol, (p0, p1) = planes[name]
            p = min(p0, p1)
            for s in self.factors:
                affine = np.diag([s * p, p0, p1, 1.0])  # the planes stacked along a "slice axis" of s pixels
                for v, (profile, frac) in enumerate(PRIOR_VARIANTS):
                    shape = (max(2, vol.shape[0]), *vol.shape[1:])  # one plane is a stack too (SlicePairs)
                    grid = plan_grid(shape, affine, thickness=max(p, frac * s * p), name=name)
                    self.pairs[name, s, v] = SlicePairs(
                        vol, grid, profile, batch_size=batch_size, patch_rows=patch_rows, lr_length=lr_length,
                        length=1, foreground=0.9, seed=seed,
                    )  # fmt: skip

    def sample(self) -> tuple[int, dict[str, torch.Tensor]]:
        s = int(self.factors[int(self.rng.integers(len(self.factors)))])
        name = self.names[int(self.rng.choice(len(self.names), p=self.weights))]
        v = int(self.rng.integers(len(PRIOR_VARIANTS)))
        return s, self.pairs[name, s, v].sample(self.rng)


# ------------------------------------------------------------------------------------------- the network
def _shared_nets(factors: tuple[int, ...], network: dict[str, Any] | None = None) -> dict[int, nn.Module]:
    """One selfsr generator per factor (float32, channels-last), all sharing every layer but :data:`HEAD`."""
    nets = {int(s): generator_of(build_model(int(s), network, "fp32")) for s in factors}
    first = nets[factors[0]]
    for net in nets.values():
        for name, child in list(first.named_children()):
            if name != "tail":
                setattr(net, name, child)
    return nets


def _parameters(nets: dict[int, nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for net in nets.values():
        for p in net.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def train_prior(
    minutes: float,
    out: str | os.PathLike = PRIOR_FILE,
    threads: int = 1,
    batch_size: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    save_every_minutes: float = 5.0,
    log: Any = print,
) -> dict[str, Any]:
    """Train the prior for ``minutes`` (cosine schedule ending on time, Adam, L1) and write it to ``out``
    (atomically, also every ``save_every_minutes``). Returns what :func:`save_prior` recorded."""
    from medsr.pipeline.selfsr.schedule import BudgetCosine

    started = time.time()
    torch.manual_seed(seed)
    torch.set_num_threads(int(threads))
    planes = prior_planes()
    pairs = PriorPairs(planes, batch_size=batch_size, seed=seed)
    nets = _shared_nets(PRIOR_FACTORS)
    for net in nets.values():
        net.train()
    opt = torch.optim.Adam(_parameters(nets), lr=lr)
    sched = BudgetCosine(opt, steps=10**9, minutes=minutes, started=started)
    loss_fn = nn.L1Loss()
    steps, run_loss, last_save, last_log = 0, 0.0, time.perf_counter(), time.perf_counter()
    options = f"--minutes {minutes:g} --threads {threads} --batch-size {batch_size}"  # recorded in the file
    counts = dict.fromkeys(PRIOR_FACTORS, 0)
    log(
        f"prior: {sum(p.numel() for p in _parameters(nets))} parameters, factors {PRIOR_FACTORS}, sources "
        f"{ {n: tuple(planes[n][0].shape) for n in pairs.names} }, {minutes:g} min on {threads} thread(s)"
    )
    info: dict[str, Any] = {}
    while not sched.done():
        s, batch = pairs.sample()
        x = batch["lr"].contiguous(memory_format=torch.channels_last)
        y = batch["hr"]
        loss = loss_fn(nets[s](x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        steps += 1
        counts[s] += 1
        run_loss += float(loss.detach())
        now = time.perf_counter()
        if now - last_log > 60:
            log(f"prior: step {steps}, {sched.elapsed() / 60:.1f} min, loss {run_loss / max(1, steps):.5f}")
            last_log = now
        if now - last_save > save_every_minutes * 60:
            info = save_prior(nets, out, steps, sched.elapsed(), counts, options)
            last_save = now
    info = save_prior(nets, out, steps, sched.elapsed(), counts, options)
    log(f"prior: {steps} steps in {sched.elapsed() / 60:.1f} min -> {out} ({Path(out).stat().st_size / 1e6:.2f} MB)")
    return info


def save_prior(
    nets: dict[int, nn.Module],
    path: str | os.PathLike,
    steps: int,
    seconds: float,
    counts: dict[int, int],
    options: str,
) -> dict[str, Any]:
    """Write the prior as a medsr model file with ``role: "prior"`` (shared weights in ``state_dict``, the
    per-factor :data:`HEAD` weights in ``heads``); returns its description."""
    from medsr.pipeline.io import atomic_open
    from medsr.pipeline.models import model_payload

    factors = sorted(nets)
    rep = nets[factors[0]]
    info = {
        "name": "selfsr_prior",
        "bundle": "selfsr",
        "role": "prior",
        "factors": factors,
        "head": HEAD,
        "normalization": {"transform": "divided by the 99.5th percentile of the foreground (as medsr selfsr)"},
        "degradation": "selfsr pairs: one in-plane axis degraded with the slice profile "
        + ", ".join(f"{p} (thickness {f:g} x spacing)" for p, f in PRIOR_VARIANTS),
        "trained_on": "demo sources only: "
        + ", ".join(PRIOR_SOURCES)
        + " (never MNI sagittal/coronal planes nor the external evaluation set of benchmarks/)",
        "training_command": f"OMP_NUM_THREADS=1 python -m medsr.pipeline.selfsr.prior {options} --out bundles/selfsr/models/prior.pt",
        "training": {"steps": int(steps), "seconds": round(float(seconds), 1), "steps_per_factor": counts},
    }
    record = model_payload(rep, info)
    record.pop("scale", None)  # one per head: ``factors``
    record["network"]["args"]["scale_factor"] = None
    record["state_dict"] = {k: v for k, v in record["state_dict"].items() if not k.startswith(HEAD + ".")}
    record["heads"] = {
        str(s): {
            k[len(HEAD) + 1 :]: v.detach().cpu().clone()
            for k, v in nets[s].state_dict().items()
            if k.startswith(HEAD + ".")
        }
        for s in factors
    }
    record["training"]["steps_per_factor"] = {str(k): int(v) for k, v in counts.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(record, f)
    return {k: v for k, v in record.items() if k not in ("state_dict", "heads")}


# ------------------------------------------------------------------------------------------- use
def read_prior(path: str | os.PathLike = PRIOR_FILE) -> dict[str, Any]:
    """The prior file's record (weights included); one-line errors for a missing file or another kind of model."""
    from medsr.pipeline.models import _model_record

    record = _model_record(path)
    if record.get("role") != "prior" or not isinstance(record.get("heads"), dict):
        raise ValueError(f"prior '{path}': a medsr model file but not a selfsr prior (no role 'prior' and heads)")
    return record


def _spec_args(net: nn.Module) -> dict[str, Any]:
    from medsr.pipeline.models import network_spec

    spec = network_spec(generator_of(net)) or {"target": None, "args": {}}
    return {"target": spec["target"], **{k: v for k, v in spec["args"].items() if k != "scale_factor"}}


def prior_fits(net: nn.Module, record: dict[str, Any]) -> bool:
    """Whether the prior ``record`` describes ``net``'s generator (same class and arguments but the scale)."""
    spec = record["network"]
    want = {"target": spec["target"], **{k: v for k, v in spec["args"].items() if k != "scale_factor"}}
    return _spec_args(net) == want


def load_prior(net: nn.Module, record: dict[str, Any], scale: int) -> nn.Module:
    """Load the prior into ``net`` (a selfsr generator of ``scale`` that :func:`prior_fits`): the shared weights,
    and the head of ``scale``; a scale without a head gets a zero head (the network starts as cubic
    interpolation) and a warning. Returns ``net``."""
    gen = generator_of(net)
    state = {k: v.float() for k, v in record["state_dict"].items()}
    head = record["heads"].get(str(int(scale)))
    if head is None:
        warnings.warn(
            f"selfsr prior: no head for x{int(scale)} (it has {sorted(int(k) for k in record['heads'])}); "
            "that output layer starts at zero (cubic interpolation), the rest from the prior",
            stacklevel=2,
        )
        head = {
            k[len(HEAD) + 1 :]: torch.zeros_like(v) for k, v in gen.state_dict().items() if k.startswith(HEAD + ".")
        }
    state.update({f"{HEAD}.{k}": v.float() for k, v in head.items()})
    gen.load_state_dict(state)
    return net


def prior_network(record: dict[str, Any], scale: int) -> nn.Module:
    """The generator the prior ``record`` describes, built for ``(1, scale)`` with the prior's weights (eval mode)."""
    from medsr.pipeline.models import build_network

    spec = {
        "target": record["network"]["target"],
        "args": dict(record["network"]["args"], scale_factor=(1, int(scale))),
    }
    return load_prior(build_network(spec), record, scale).eval()


# ------------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m medsr.pipeline.selfsr.prior --minutes M --threads T --batch-size B --out FILE``."""
    p = argparse.ArgumentParser(prog="python -m medsr.pipeline.selfsr.prior", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=18.0, help="training time (default 18)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="pairs per step (default 8)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine to 0 on time; default 0.002)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(PRIOR_FILE), help=f"the prior file (default {PRIOR_FILE})")
    a = p.parse_args(argv)
    for name in ("minutes", "threads", "batch_size", "lr"):
        if not getattr(a, name) > 0:
            print(f"prior: --{name.replace('_', '-')} must be > 0, got {getattr(a, name)}", file=sys.stderr)
            return 2
    from medsr.pipeline.errors import MedsrError

    try:
        train_prior(a.minutes, a.out, threads=a.threads, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
    except MedsrError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
