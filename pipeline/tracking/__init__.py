"""MLflow tracking for medsr: handlers, a server-down fallback, offline sync and a static comparison report.

Use it from a bundle with ``--tracking mlflow/tracking.json`` (see ``mlflow/README.md``), or attach
the role handlers of :mod:`medsr.pipeline.handlers.mlflow_handler` to any MONAI/ignite engine.
"""

from medsr.pipeline._lazy import lazy_exports

# imported on first use, so that ``medsr --help`` (which registers ``medsr tracking``) does not import mlflow
_EXPORTS = {
    "params": (
        "bundle_name",
        "bundle_params",
        "code_version",
        "datalist_digest",
        "default_experiment_name",
        "default_run_name",
        "executed_config_path",
        "flatten_config",
        "metric_key",
        "to_mlflow_params",
    ),
    "session": ("TrackingSession", "default_tracking_uri", "get_session", "resolve_tracking_uri", "server_alive"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
