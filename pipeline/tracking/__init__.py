"""MLflow tracking for medsr: handlers, a server-down fallback, offline sync and a static comparison report.

Use it from a bundle with ``--tracking mlflow/tracking.json`` (see ``mlflow/README.md``), or attach
the role handlers of :mod:`medsr.pipeline.handlers.mlflow_handler` to any MONAI/ignite engine.
"""

from medsr.pipeline.tracking.params import (
    bundle_name,
    bundle_params,
    code_version,
    datalist_digest,
    default_experiment_name,
    default_run_name,
    executed_config_path,
    flatten_config,
    metric_key,
    to_mlflow_params,
)
from medsr.pipeline.tracking.session import (
    TrackingSession,
    default_tracking_uri,
    get_session,
    resolve_tracking_uri,
    server_alive,
)

__all__ = [
    "TrackingSession",
    "bundle_name",
    "bundle_params",
    "metric_key",
    "code_version",
    "datalist_digest",
    "default_experiment_name",
    "default_run_name",
    "executed_config_path",
    "default_tracking_uri",
    "flatten_config",
    "get_session",
    "resolve_tracking_uri",
    "server_alive",
    "to_mlflow_params",
]
