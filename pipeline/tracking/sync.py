"""Send MLflow records kept locally (while a server was down) to a tracking server: ``medsr mlflow-sync``.

Runs are copied with their params, tags, every metric point (with its step and time), artifacts and
status. A run that started on the server and fell back to the local store mid-run carries the remote run
id in ``medsr.remote_run_id``; its local records are appended to that remote run. Each synced local run
is tagged ``medsr.synced_run_id`` so syncing twice copies nothing twice.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag
from monai.utils import path_to_sqlite_uri

from medsr.pipeline.tracking.session import OFFLINE_DB, TAG_OFFLINE, TAG_REMOTE_RUN_ID, TAG_REMOTE_URI, TAG_SYNCED

logger = logging.getLogger(__name__)


def source_uri(source: str | os.PathLike) -> str:
    """Return a tracking URI for ``source``: a URI, a ``.db`` file, or a run folder holding ``mlruns_offline.db``.

    Raises:
        ValueError: when a path does not exist or the folder has no offline store.
    """
    text = os.fspath(source)
    if "://" in text:
        return text
    path = Path(text)
    if path.is_dir():
        candidates = [path / OFFLINE_DB] + sorted(path.rglob(OFFLINE_DB))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ValueError(f"--from '{path}': no {OFFLINE_DB} in this folder or below")
        path = found
    if not path.is_file():
        raise ValueError(f"--from '{path}': not a file, folder or tracking URI")
    return path_to_sqlite_uri(str(path.absolute()))


def _remote_run(target: mlflow.MlflowClient, run, experiment_id: str) -> str:
    remote_id = run.data.tags.get(TAG_REMOTE_RUN_ID)
    if remote_id:
        try:
            target.get_run(remote_id)
            return remote_id
        except mlflow.exceptions.MlflowException:
            logger.warning("remote run %s of local run %s is gone; creating a new one", remote_id, run.info.run_id)
    created = target.create_run(experiment_id, start_time=run.info.start_time, run_name=run.info.run_name)
    return created.info.run_id


def sync_run(source: mlflow.MlflowClient, target: mlflow.MlflowClient, run_id: str) -> str:
    """Copy one local run to ``target``; returns the target run id."""
    run = source.get_run(run_id)
    experiment = source.get_experiment(run.info.experiment_id)
    remote_exp = target.get_experiment_by_name(experiment.name)
    experiment_id = remote_exp.experiment_id if remote_exp else target.create_experiment(experiment.name)
    target_id = _remote_run(target, run, experiment_id)

    existing = target.get_run(target_id).data.params
    params = [Param(k, v) for k, v in run.data.params.items() if k not in existing]
    clashes = [k for k, v in run.data.params.items() if k in existing and existing[k] != v]
    if clashes:
        logger.warning("params %s differ on the server and were kept as they are there", clashes[:10])
    skip_tags = {TAG_OFFLINE, TAG_REMOTE_RUN_ID, TAG_SYNCED, "mlflow.runName"}
    tags = [
        RunTag(k, v) for k, v in run.data.tags.items() if k not in skip_tags and not k.startswith("mlflow.log-model")
    ]
    tags.append(RunTag("medsr.synced_from", f"{source.tracking_uri} run {run_id}"))
    for i in range(0, max(len(params), len(tags)), 100):
        target.log_batch(target_id, params=params[i : i + 100], tags=tags[i : i + 100])

    metrics: list[Metric] = []
    for key in run.data.metrics:
        metrics += [Metric(m.key, m.value, m.timestamp, m.step) for m in source.get_metric_history(run_id, key)]
    for i in range(0, len(metrics), 1000):
        target.log_batch(target_id, metrics=metrics[i : i + 1000])

    with tempfile.TemporaryDirectory() as tmp:
        if source.list_artifacts(run_id):
            local = source.download_artifacts(run_id, "", tmp)
            for entry in sorted(Path(local).iterdir()):
                if entry.is_dir():
                    target.log_artifacts(target_id, str(entry), entry.name)
                else:
                    target.log_artifact(target_id, str(entry))
    if run.info.status != "RUNNING":
        target.set_terminated(target_id, run.info.status, end_time=run.info.end_time)
    source.set_tag(run_id, TAG_SYNCED, target_id)
    return target_id


def sync(
    source: str | os.PathLike, target: str | None = None, run_ids: Sequence[str] | None = None, force: bool = False
) -> dict[str, str]:
    """Send local runs to a tracking server; returns ``{local run id: server run id}``.

    Args:
        source: the local store (``mlruns_offline.db``, a run folder holding it, or any tracking URI).
        target: the server (``http://host:port``); default ``$MLFLOW_TRACKING_URI``, else the
            ``medsr.remote_uri`` the runs were meant for.
        run_ids: only these local runs; default every run marked offline and not yet synced.
        force: copy runs already marked synced again.

    Raises:
        ValueError: when there is no target or a given run is not in the source.
    """
    src = mlflow.MlflowClient(tracking_uri=source_uri(source))
    experiments = [e.experiment_id for e in src.search_experiments()]
    runs = src.search_runs(experiments, max_results=50000) if experiments else []
    if run_ids:
        wanted = set(run_ids)
        missing = wanted - {r.info.run_id for r in runs}
        if missing:
            raise ValueError(f"--run-id {sorted(missing)}: not in {src.tracking_uri}")
        runs = [r for r in runs if r.info.run_id in wanted]
    else:
        runs = [r for r in runs if r.data.tags.get(TAG_OFFLINE) == "true"]
    if not force:
        runs = [r for r in runs if TAG_SYNCED not in r.data.tags]
    done: dict[str, str] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        uri = target or os.environ.get("MLFLOW_TRACKING_URI") or run.data.tags.get(TAG_REMOTE_URI)
        if not uri:
            raise ValueError(f"--to: no target for run {run.info.run_id}; give --to http://host:port")
        done[run.info.run_id] = sync_run(src, mlflow.MlflowClient(tracking_uri=uri), run.info.run_id)
    return done
