"""One MLflow run shared by the handlers of one workflow, with a local fallback when a server is down.

A :class:`TrackingSession` owns the MLflow client and the run. With a remote URI (``http://…``) every call
is guarded: when the server cannot be reached at the start or fails mid-run, the session warns once,
switches to a local sqlite store in the run's output folder (``<output_dir>/mlruns_offline.db``, artifacts
in ``<output_dir>/mlruns_offline/``), re-logs the params and tags it had sent, and carries on. Training
never stops for tracking. ``medsr mlflow-sync`` sends those local records to the server later.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from monai.utils import path_to_sqlite_uri, path_to_uri

from medsr.pipeline.tracking.params import MAX_VALUE_LENGTH, clip_value

logger = logging.getLogger(__name__)

OFFLINE_DB = "mlruns_offline.db"
OFFLINE_ARTIFACTS = "mlruns_offline"
TAG_OFFLINE = "medsr.offline"
TAG_REMOTE_URI = "medsr.remote_uri"
TAG_REMOTE_RUN_ID = "medsr.remote_run_id"
TAG_SYNCED = "medsr.synced_run_id"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

#: HTTP settings used for remote servers unless the user set them: fail over in seconds, not minutes
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}

_SESSIONS: dict[tuple, TrackingSession] = {}
_LOCK = threading.Lock()


def is_remote(uri: str) -> bool:
    """Return whether ``uri`` names a tracking server (``http(s)://``) rather than a local store."""
    return uri.startswith(("http://", "https://"))


def default_tracking_uri(output_dir: str | os.PathLike) -> str:
    """Return the embedded store of a run folder: ``sqlite:///<output_dir>/mlruns.db`` (absolute)."""
    return path_to_sqlite_uri(os.path.join(os.path.abspath(os.fspath(output_dir)), "mlruns.db"))


def resolve_tracking_uri(tracking_uri: str | None, output_dir: str | os.PathLike | None) -> str:
    """Return the URI a run logs to: ``$MLFLOW_TRACKING_URI`` first, then ``tracking_uri``, then the embedded store.

    Raises:
        ValueError: for a plain path or ``file://`` URI (MLflow 3.17 refuses the file store).
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri
    if not uri:
        uri = default_tracking_uri(output_dir if output_dir is not None else os.getcwd())
    uri = str(uri)
    if uri.startswith("file:") or "://" not in uri:
        raise ValueError(
            f"tracking_uri {uri!r}: MLflow 3.17 has no file store; use sqlite:///<folder>/mlruns.db or http://host:port"
        )
    return uri


def server_alive(uri: str, timeout: float = 3.0) -> bool:
    """Return whether the MLflow server at ``uri`` answers ``GET /health`` within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:  # noqa: S310
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return path_to_uri(Path(uri[len("sqlite:///") :]).parent / "mlruns")
    return None


class TrackingSession:
    """The MLflow run of one workflow, shared by its trainer, validator and evaluator handlers.

    Args:
        tracking_uri: where to log (``$MLFLOW_TRACKING_URI`` wins, as in MLflow and MONAI); ``None`` gives
            ``sqlite:///<output_dir>/mlruns.db``.
        experiment_name: the MLflow experiment (one per bundle).
        run_name: a readable run name; ``None`` gives ``run-<date>-<time>``.
        output_dir: the run folder; holds the embedded store and the offline fallback store.
    """

    def __init__(
        self,
        tracking_uri: str | None,
        experiment_name: str,
        run_name: str | None = None,
        output_dir: str | os.PathLike | None = None,
    ) -> None:
        self.output_dir = Path(output_dir if output_dir is not None else os.getcwd()).absolute()
        self.uri = resolve_tracking_uri(tracking_uri, self.output_dir)
        self.remote_uri = self.uri if is_remote(self.uri) else None
        if not experiment_name:
            raise ValueError("experiment_name: must be a non-empty string")
        self.experiment_name = str(experiment_name)
        self.run_name = run_name or f"run-{time.strftime('%Y%m%d-%H%M%S')}"
        self.offline = False
        self.offline_reason: str | None = None
        self.client: mlflow.MlflowClient | None = None
        self.run_id: str | None = None
        self.remote_run_id: str | None = None
        self.experiment_id: str | None = None
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.closed = False
        if self.remote_uri:
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)

    # ------------------------------------------------------------------ run lifecycle
    def start(self) -> str:
        """Open (or reuse) the run; returns its id. Falls back to the local store if the server is down."""
        if self.run_id is not None:
            return self.run_id
        if self.remote_uri and not server_alive(self.remote_uri):
            self._go_offline(f"no answer from {self.remote_uri}/health")
            return self.run_id  # type: ignore[return-value]
        try:
            self._open(self.uri)
        except Exception as err:  # noqa: BLE001 - any failure of a remote store sends us offline
            if not self.remote_uri:
                raise
            self._go_offline(err)
        return self.run_id  # type: ignore[return-value]

    def _open(self, uri: str, extra_tags: Mapping[str, str] | None = None) -> None:
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(
                    self.experiment_name, artifact_location=_artifact_location(uri)
                )
            except mlflow.exceptions.MlflowException as err:  # another process created it meanwhile
                if "RESOURCE_ALREADY_EXISTS" not in str(err):
                    raise
                experiment_id = client.get_experiment_by_name(self.experiment_name).experiment_id
        else:
            if experiment.lifecycle_stage != "active":
                raise ValueError(
                    f"experiment '{self.experiment_name}' at {uri} is deleted; restore it or pick another name"
                )
            experiment_id = experiment.experiment_id
        if experiment is None or EXPERIMENT_KIND_TAG not in experiment.tags:
            # MLflow 3's UI opens an experiment without this tag in GenAI mode (traces, no charts)
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        run = None
        if not extra_tags:  # reuse a RUNNING run of the same name (e.g. an evaluation after training)
            found = client.search_runs(
                [experiment_id],
                filter_string=f"attributes.run_name = '{self.run_name}' and attributes.status = 'RUNNING'",
                max_results=1,
            )
            run = found[0] if found else None
        if run is None:
            run = client.create_run(experiment_id, run_name=self.run_name, tags=dict(extra_tags or {}))
        self.client, self.experiment_id, self.run_id = client, experiment_id, run.info.run_id

    def _go_offline(self, reason: Any) -> None:
        if self.offline:
            raise RuntimeError(f"local MLflow store failed too: {reason}")
        self.remote_run_id = self.run_id
        self.offline, self.offline_reason = True, str(reason).splitlines()[0][:300] if str(reason) else repr(reason)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        local_uri = path_to_sqlite_uri(str(self.output_dir / OFFLINE_DB))
        tags = {TAG_OFFLINE: "true", TAG_REMOTE_URI: self.remote_uri or ""}
        if self.remote_run_id:
            tags[TAG_REMOTE_RUN_ID] = self.remote_run_id
        self.run_id = None
        self.uri = local_uri
        self._open(local_uri, extra_tags=tags)
        self.client.set_experiment_tag(self.experiment_id, "medsr.offline_store", "true")  # type: ignore[union-attr]
        # a new run in the local store: send again what the remote run already had
        self._batch(params=self.params, tags=self.tags)
        message = (
            f"MLflow server {self.remote_uri} cannot be reached ({self.offline_reason}); training goes on and "
            f"the records are kept locally in {local_uri} (run {self.run_id}). Send them later with:\n"
            f"    medsr mlflow-sync --from {self.output_dir / OFFLINE_DB} --to {self.remote_uri}"
        )
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _guard(self, action: Callable[[], Any]) -> Any:
        """Run ``action``; on a remote failure switch to the local store and run it again there."""
        if self.run_id is None:
            self.start()
        try:
            return action()
        except Exception as err:  # noqa: BLE001
            if not self.remote_uri or self.offline:
                raise
            self._go_offline(err)
            return action()

    # ------------------------------------------------------------------ logging
    def _batch(self, metrics=(), params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None):
        params = [Param(k, v) for k, v in (params or {}).items()]
        tags = [RunTag(k, v) for k, v in (tags or {}).items()]
        for i in range(0, max(len(params), len(tags), 1), 100):
            if params[i : i + 100] or tags[i : i + 100]:
                self.client.log_batch(self.run_id, params=params[i : i + 100], tags=tags[i : i + 100])
        metrics = list(metrics)
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params not logged before in this run (MLflow params cannot change once set)."""
        new = {k: clip_value(v, MAX_VALUE_LENGTH) for k, v in params.items() if k not in self.params}
        if not new:
            return
        self.params.update(new)
        self._guard(lambda: self._batch(params=new))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values cut to MLflow's limit)."""
        new = {k: clip_value(v, MAX_VALUE_LENGTH) for k, v in tags.items()}
        self.tags.update(new)
        self._guard(lambda: self._batch(tags=new))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log scalar metrics at ``step``; non-finite or non-numeric values are skipped."""
        now = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            batch.append(Metric(key, value, now, int(step)))
        if batch:
            self._guard(lambda: self._batch(metrics=batch))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log one file under ``artifact_path``."""
        self._guard(lambda: self.client.log_artifact(self.run_id, os.fspath(path), artifact_path))

    def log_artifacts(self, folder: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log every file of ``folder`` under ``artifact_path``."""
        self._guard(lambda: self.client.log_artifacts(self.run_id, os.fspath(folder), artifact_path))

    def log_image(self, image: Any, key: str, step: int) -> None:
        """Log an image (``numpy`` HxWx3 ``uint8`` or PIL) under ``key`` at ``step``: the UI's step slider."""
        self._guard(lambda: self.client.log_image(self.run_id, image, key=key, step=int(step)))

    def log_dataset(self, items: Sequence[Mapping[str, Any]], name: str, context: str, source: str) -> None:
        """Log a datalist as an MLflow dataset input (the run's Datasets column), one row per item."""
        import pandas as pd
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        frame = pd.DataFrame([{k: str(v) for k, v in dict(item).items()} for item in items])
        dataset = mlflow.data.from_pandas(frame, source=CodeDatasetSource({"medsr.datalist": source}), name=name)
        entity = DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", context)])
        self._guard(lambda: self.client.log_inputs(self.run_id, datasets=[entity]))

    def log_model(self, log: Callable[[], Any]) -> Any:
        """Run ``log`` (an ``mlflow.<flavour>.log_model`` call) with this run active in this store, so the
        model is a logged model of the run (the run page's "Logged models")."""

        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        def action():
            env = os.environ.get("MLFLOW_TRACKING_URI")  # set_tracking_uri writes the variable: put it back
            try:
                with _use_tracking_uri(self.uri), mlflow.start_run(run_id=self.run_id):
                    return log()
            finally:
                if env is None:
                    os.environ.pop("MLFLOW_TRACKING_URI", None)
                else:
                    os.environ["MLFLOW_TRACKING_URI"] = env

        return self._guard(action)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run finished (or ``FAILED``/``KILLED``) and forget this session."""
        if self.closed or self.run_id is None:
            return
        self._guard(lambda: self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.from_string(status))))
        self.closed = True
        with _LOCK:
            for key, session in list(_SESSIONS.items()):
                if session is self:
                    del _SESSIONS[key]
        if self.offline:
            logger.warning(
                "MLflow records of run '%s' are local (%s); send them with: medsr mlflow-sync --from %s --to %s",
                self.run_name,
                self.uri,
                self.output_dir / OFFLINE_DB,
                self.remote_uri,
            )


def get_session(
    tracking_uri: str | None,
    experiment_name: str,
    run_name: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> TrackingSession:
    """Return the open session for these settings, creating it the first time (trainer and validator share it)."""
    key = (
        os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri,
        experiment_name,
        run_name,
        os.path.abspath(os.fspath(output_dir)) if output_dir is not None else None,
    )
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is None or session.closed:
            session = _SESSIONS[key] = TrackingSession(tracking_uri, experiment_name, run_name, output_dir)
        return session
