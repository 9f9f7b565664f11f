"""``medsr datalist`` and ``medsr demo`` (registered by :mod:`medsr.pipeline.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``datalist`` and ``demo`` sub-commands."""
    p = subparsers.add_parser(
        "datalist",
        help="build an MSD-style datalist from a folder or glob, split by patient",
        description="Scan SOURCE (a folder or a quoted glob) for NIfTI, DICOM, PNG/JPEG/TIFF and figshare .mat "
        "files and write {'training', 'validation', 'test'} with no patient in two splits.",
    )
    p.add_argument("source", help="folder (scanned recursively) or glob, e.g. 'data/**/*.png'")
    p.add_argument("-o", "--output", required=True, type=Path, help="datalist JSON to write")
    p.add_argument("--mask-pattern", default=None, help="mask path relative to the image, e.g. '{stem}_mask{suffix}'")
    p.add_argument("--label-pattern", default=None, help="label-map path relative to the image")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of patients for validation")
    p.add_argument("--test-fraction", type=float, default=0.1, help="fraction of patients for test")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument(
        "--group-by", default="patient", help="'patient' (default), 'file', 'folder' or a regex capturing the ID"
    )
    p.add_argument("--modality", default=None, help="modality for entries whose files do not say")
    p.set_defaults(func=run_datalist)

    d = subparsers.add_parser(
        "demo",
        help="build the embedded demo dataset (real images from installed packages) and print its summary",
        description="Build the demo dataset under ROOT/demo (default $MEDSR_DATA or ~/.cache/medsr); "
        "a second run finds it complete and does nothing.",
    )
    d.add_argument("--root", type=Path, default=None, help="cache folder (default $MEDSR_DATA or ~/.cache/medsr)")
    d.add_argument("--force", action="store_true", help="rebuild even if the dataset is complete")
    d.add_argument("--verify", action="store_true", help="re-hash every file when checking an existing dataset")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument(
        "--corpus", action="store_true",
        help="also build the training corpus ROOT/corpus (every real image installed packages ship; validation = "
        "held-out sources) and print its 2D datalist path last",
    )  # fmt: skip
    d.add_argument(
        "--weights", default=None, metavar="SOURCE=W,...",
        help="with --corpus: also write the 2D datalist with these training sources reweighted (shares of the "
        "training items; sources not named keep theirs; normalised to 1), e.g. "
        "'mni152_2009a_t1=0.1,photos=0.43', and print its path last",
    )  # fmt: skip
    d.add_argument(
        "--multiscale", default=None, metavar="F,...",
        help="with --corpus: also write the 2D datalist with a copy of every training image downscaled by each "
        "factor (antialiased bicubic; e.g. 1.5,2), each copy sampled as often as its original (after "
        "--weights when given), and print its path last",
    )  # fmt: skip
    d.set_defaults(func=run_demo)


def run_datalist(args: argparse.Namespace) -> int:
    """Build the datalist and print its counts; returns the exit code."""
    from medsr.pipeline.data.datalist import build_datalist

    try:
        datalist = build_datalist(
            args.source,
            args.output,
            mask_pattern=args.mask_pattern,
            label_pattern=args.label_pattern,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
            group_by=args.group_by,
            modality=args.modality,
        )
    except ValueError as err:
        print(f"medsr datalist: error: {err}", file=sys.stderr)
        return 2
    patients = {s: len({e["patient"] for e in datalist[s]}) for s in ("training", "validation", "test")}
    print(
        f"wrote {args.output}: training {datalist['numTraining']} ({patients['training']} patients), "
        f"validation {datalist['numValidation']} ({patients['validation']}), "
        f"test {datalist['numTest']} ({patients['test']})"
    )
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Build (or find) the demo dataset and print where it is and its summary; returns the exit code."""
    from medsr.pipeline.data.demo import ensure_demo_dataset

    weights, factors = getattr(args, "weights", None), getattr(args, "multiscale", None)
    for option, value in (("--weights", weights), ("--multiscale", factors)):
        if value is not None and not getattr(args, "corpus", False):
            print(f"medsr demo: error: {option} builds on the corpus: add --corpus", file=sys.stderr)
            return 2
    if weights is not None or factors is not None:
        from medsr.pipeline.data.corpus import parse_factors, parse_weights

        try:
            weights = parse_weights(weights) if weights is not None else None
            factors = parse_factors(factors) if factors is not None else None
        except ValueError as err:
            print(f"medsr demo: error: {err}", file=sys.stderr)
            return 2
    result = ensure_demo_dataset(args.root, progress=not args.no_progress, force=args.force, verify=args.verify)
    summary = result["summary"]
    print(f"medsr demo dataset: {result['root']} ({'built' if result['built'] else 'already complete'})")
    print(f"  2D datalist: {result['datalist_2d']}")
    print(f"  3D datalist: {result['datalist_3d']}")
    for dim in ("2d", "3d"):
        for split, counts in summary["counts"][dim].items():
            detail = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "total")
            print(f"  {dim} {split:<10} {counts['total']:>4}  ({detail})")
    print(json.dumps({"summary": summary}, indent=1, default=str))
    if getattr(args, "corpus", False):
        from medsr.pipeline.data.corpus import ensure_corpus_dataset

        corpus = ensure_corpus_dataset(args.root, progress=not args.no_progress, force=args.force)
        print(f"medsr corpus: {corpus['root']} ({'built' if corpus['built'] else 'already complete'})")
        for name, src in corpus["manifest"]["sources"].items():
            print(f"  {name:<24} {src['split']:<10} items {src['items']:>4} x{src['repeats']:<3} "
                  f"share {src['training_share']:.3f}  {src['licence']}")  # fmt: skip
        from medsr.pipeline.data.corpus import multiscale_datalist, weighted_datalist

        path = corpus["datalist_2d"]
        try:
            if weights is not None:
                path = weighted_datalist(path, weights)
            if factors is not None:
                path = multiscale_datalist(path, factors)
        except ValueError as err:
            print(f"medsr demo: error: {err}", file=sys.stderr)
            return 2
        print(path)
    return 0
