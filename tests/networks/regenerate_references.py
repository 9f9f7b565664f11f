"""Regenerate ``tests/networks/reference_outputs.pt``, by hand, after a change meant to alter generator numbers.

``test_reference_outputs.py`` compares every registered generator's output on a fixed input with this file, so a
refactor that changes the numbers fails there. When a change of numbers is intended, run from the repository
root::

    python -m tests.networks.regenerate_references          # show which references would change, write nothing
    python -m tests.networks.regenerate_references --write  # write the file (commit it with the reason)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medsr.networks import get_network

from .test_networks_table import GEN

REFERENCE = Path(__file__).with_name("reference_outputs.pt")
CASES = [(name, dims) for name in sorted(GEN) for dims in (2, 3)]
SCALE = {2: (2, 2), 3: (1, 1, 2)}
LR = {2: (6, 5), 3: (4, 4, 3)}


def reference_output(name: str, dims: int) -> torch.Tensor:
    """The output of generator ``name`` (tiny, seeded) on a fixed seeded input, in eval mode."""
    torch.manual_seed(1234)
    kwargs, _ = GEN[name]
    net = get_network(name, spatial_dims=dims, in_channels=1, out_channels=1, scale_factor=SCALE[dims], **kwargs)
    net.eval()
    gen = torch.Generator().manual_seed(99)
    x = torch.rand(1, 1, *LR[dims], generator=gen)
    with torch.no_grad():
        return net(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {REFERENCE.name} (default: only compare)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    old = torch.load(REFERENCE, weights_only=True) if REFERENCE.is_file() else {}
    new = {f"{n}-{d}": reference_output(n, d) for n, d in CASES}
    for key, out in new.items():
        before = old.get(key)
        if before is None or before.shape != out.shape:
            print(f"{key}: new")
        else:
            print(f"{key}: max |change| {float((out - before).abs().max()):.3g}")
    for key in sorted(set(old) - set(new)):
        print(f"{key}: removed")
    if args.write:
        torch.save(new, REFERENCE)
        print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
