"""``medsr report`` (static HTML comparison of runs) and ``medsr mlflow-sync`` (send local records to a server)."""

from __future__ import annotations

import argparse
import sys


def _report(args: argparse.Namespace) -> int:
    from medsr.pipeline.tracking.report import render_report

    try:
        path = render_report(
            args.tracking_uri,
            args.runs,
            args.output,
            experiment=args.experiment,
            metrics=args.metrics,
            title=args.title,
        )
    except ValueError as err:
        print(f"medsr report: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _sync(args: argparse.Namespace) -> int:
    from medsr.pipeline.tracking.session import server_alive
    from medsr.pipeline.tracking.sync import sync

    if args.to and args.to.startswith(("http://", "https://")) and not server_alive(args.to, timeout=10):
        print(f"medsr mlflow-sync: no MLflow server answers at {args.to}/health; nothing sent", file=sys.stderr)
        return 3
    try:
        done = sync(args.source, args.to, run_ids=args.run_id, force=args.force)
    except ValueError as err:
        print(f"medsr mlflow-sync: {err}", file=sys.stderr)
        return 2
    for local, remote in done.items():
        print(f"{local} -> {remote}")
    print(f"{len(done)} run(s) sent")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report`` and ``mlflow-sync`` to the ``medsr`` command."""
    report = subparsers.add_parser(
        "report",
        help="static HTML comparison of MLflow runs (metric curves, param differences)",
        description="Render one self-contained HTML page comparing runs from any tracking URI.",
    )
    report.add_argument("runs", nargs="+", help="run ids or run names")
    report.add_argument(
        "--tracking-uri",
        default=None,
        help="sqlite:///runs/<bundle>/mlruns.db or http://host:port (default: $MLFLOW_TRACKING_URI)",
    )
    report.add_argument("--experiment", default=None, help="look run names up in this experiment only")
    report.add_argument("--metrics", nargs="+", default=None, help="metrics to draw (default: all)")
    report.add_argument("-o", "--output", default="medsr_report.html", help="HTML file to write")
    report.add_argument("--title", default="medsr run comparison")
    report.set_defaults(func=_report)

    sync = subparsers.add_parser(
        "mlflow-sync",
        help="send MLflow records kept locally while a server was down",
        description="Copy runs of a local store (mlruns_offline.db in a run folder) to a tracking server.",
    )
    sync.add_argument(
        "--from", dest="source", required=True, help="mlruns_offline.db, a run folder holding it, or a tracking URI"
    )
    sync.add_argument("--to", default=None, help="http://host:port (default: $MLFLOW_TRACKING_URI, else the run's own)")
    sync.add_argument("--run-id", nargs="+", default=None, help="only these local runs (default: all not yet sent)")
    sync.add_argument("--force", action="store_true", help="send runs again that were sent before")
    sync.set_defaults(func=_sync)
