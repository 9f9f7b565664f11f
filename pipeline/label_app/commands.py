"""``medsr label …``: build the MONAI Label env and serve the SR bundles (importable without MONAI Label).

- ``medsr label setup-env [--env-dir D] [--force]``: build (or find) the separate env; prints its folder.
- ``medsr label serve --datastore DIR [--port P] [--host 127.0.0.1] [--models all|a,b] [--runs-dir R]
  [--bundles B] [--overrides JSON] [--allow-untrained] [--workdir W]``: build the env if needed and run the
  server in the foreground until Ctrl-C (the server is stopped on exit).
- ``medsr label env-path``: print the env folder (no build).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from medsr.pipeline.label_app.env import ensure_label_env, is_ready, label_env_dir

__all__ = ["register", "cmd_setup_env", "cmd_serve", "cmd_env_path"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``label`` with its sub-commands ``setup-env``, ``serve`` and ``env-path``."""
    label = subparsers.add_parser("label", help="MONAI Label server for the SR bundles (separate env)")
    sub = label.add_subparsers(dest="label_command", metavar="LABEL_COMMAND")
    label.set_defaults(func=lambda args: (label.print_help(), 2)[1])

    setup = sub.add_parser("setup-env", help="build (once) the virtual env that runs MONAI Label 0.8.5")
    setup.add_argument(
        "--env-dir", default=None, help="env folder (default $MEDSR_LABEL_ENV or ~/.cache/medsr/label-env-<hash>)"
    )
    setup.add_argument("--force", action="store_true", help="rebuild even a finished env")
    setup.set_defaults(func=cmd_setup_env)

    path = sub.add_parser("env-path", help="print the env folder and whether it is ready")
    path.add_argument("--env-dir", default=None)
    path.set_defaults(func=cmd_env_path)

    serve = sub.add_parser("serve", help="serve the SR bundles to 3D Slicer / OHIF on a loopback address")
    serve.add_argument("--datastore", required=True, help="folder of images (NIfTI …) the viewer browses")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1", help="loopback address only (127.0.0.1, localhost, ::1)")
    serve.add_argument(
        "--models",
        default="all",
        help="'all' (every shipped model and every bundle with a trained run) or 'rdn_x2,espcn,espcn3d=espcn'",
    )
    serve.add_argument("--bundles", default=None, help="bundles folder (default: the repo's bundles/)")
    serve.add_argument("--runs-dir", default=None, help="run outputs, <runs-dir>/<model>/checkpoints (default: runs/)")
    serve.add_argument("--overrides", default=None, help='JSON per model: \'{"espcn3d": {"spatial_dims": 3}}\'')
    serve.add_argument(
        "--allow-untrained", action="store_true", help="serve models without checkpoint (random weights)"
    )
    serve.add_argument(
        "--workdir", default=None, help="runtime folder for the app copy and server.log (default: a temp dir)"
    )
    serve.add_argument("--env-dir", default=None)
    serve.set_defaults(func=cmd_serve)


def cmd_setup_env(args: argparse.Namespace) -> int:
    """Build or find the env; print its folder."""
    print(ensure_label_env(args.env_dir, force=args.force))
    return 0


def cmd_env_path(args: argparse.Namespace) -> int:
    """Print the env folder; exit code 0 when it is ready, 1 when it still has to be built."""
    env = label_env_dir(args.env_dir)
    ready = is_ready(env)
    print(f"{env} ({'ready' if ready else 'not built: run `medsr label setup-env`'})")
    return 0 if ready else 1


def _serve_conf(args: argparse.Namespace) -> dict:
    conf: dict = {"models": args.models}
    if args.bundles:
        conf["bundles"] = str(Path(args.bundles).resolve())
    if args.runs_dir:
        conf["runs_dir"] = str(Path(args.runs_dir).resolve())
    if args.overrides:
        conf["overrides"] = args.overrides
    if args.allow_untrained:
        conf["allow_untrained"] = "true"
    return conf


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground; Ctrl-C stops it."""
    from medsr.pipeline.label_app.server import start_server, stop_server, wait_ready

    env = ensure_label_env(args.env_dir)
    workdir = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="medsr-label-"))
    log = workdir / "server.log"
    proc = start_server(args.datastore, args.port, workdir, env, args.host, _serve_conf(args), log)
    url = f"http://{'[::1]' if args.host == '::1' else args.host}:{args.port}"
    try:
        info = wait_ready(url, proc, timeout=300, log_file=log)
        models = {k: f"{v.get('spatial_dims')}D x{v.get('scale')}" for k, v in info.get("models", {}).items()}
        print(f"MONAI Label serving {models or 'no models (no checkpoints found)'} at {url} (log: {log})", flush=True)
        return int(proc.wait() or 0)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as err:
        print(f"medsr label serve: {err}", file=sys.stderr)
        return 1
    finally:
        stop_server(proc)
