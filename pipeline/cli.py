"""The ``medsr`` console command.

Each area of the pipeline adds its sub-commands through a module that exposes ``register(subparsers)``;
the modules are listed in :data:`COMMAND_MODULES` and imported lazily, so a broken optional area (say,
MONAI Label not installed) never takes the whole command down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "medsr.pipeline.data.commands",
    "medsr.pipeline.commands",
    "medsr.pipeline.tracking.commands",
    "medsr.pipeline.label_app.commands",
    "medsr.pipeline.selfsr.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``medsr`` parser with every available sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="medsr",
        description="Super-resolution for medical images (MONAI). Errors are one line; --debug (anywhere on "
        "the command line) or MEDSR_DEBUG=1 shows the full traceback.",
    )
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # an area that is not there yet (or not installed) adds nothing
            if err.name is not None and name.startswith(err.name):
                continue
            raise
        module.register(subparsers)
    from medsr.pipeline.commands import accept_both_spellings

    accept_both_spellings(parser)  # --spatial-dims and --spatial_dims alike
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medsr`` command; returns the exit code.

    An error is printed as one line naming the file or argument (:func:`medsr.pipeline.errors.run_command`);
    ``--debug`` anywhere on the command line (or ``MEDSR_DEBUG=1``) prints the full traceback instead.
    """
    from medsr.pipeline.errors import debug_enabled, run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.func, args, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
