"""MLflow tracking of a medsr workflow: one handler class per role, on MONAI's ``MLFlowHandler``.

:class:`MLflowTrainerHandler`, :class:`MLflowValidatorHandler` and :class:`MLflowEvaluatorHandler` extend
MONAI's :class:`~monai.handlers.MLFlowHandler` (same attach points, same ``engine.state.metrics`` epoch
logging) through its public ``epoch_logger``/``iteration_logger`` arguments and its public ``start``,
``complete`` and ``close`` hooks, with what an SR run needs:

* trainer: the bundle's top-level knobs as params (:func:`~medsr.pipeline.tracking.params.bundle_params`:
  two runs differ in exactly the params that were changed) and the full executed config as an artifact,
  the datalist as an MLflow dataset input, MLflow's standard source/user/git tags; per iteration
  ``train/loss`` and every ``train/loss_<term>`` (``pretrain/...`` for a pre-training stage), each
  optimizer's learning rate when it changes, ``perf/time_per_iteration_s``; at the end the best model file
  of the run (the whole training state only with ``log_training_state``), the generator as a logged model
  (``mlflow.pytorch.log_model``, signature and scale in its metadata) and as TorchScript;
* validator: per-epoch metrics in the ``val/`` section (``val/psnr``, ``val/ssim``, ``val/region_ssim_inside``)
  at the trainer's epoch, and the run folder's comparison figure (``images/epoch_N.png``: LR | cubic | SR |
  HR | error, titled with the logged ``val/`` numbers) logged with ``log_image(key="val/comparison",
  step=epoch)`` (the UI's step slider);
* evaluator: the metrics (``eval/``), and the evaluation report (``summary.json`` and its PNG figures).

Trainer, validator and evaluator handlers of one workflow share one :class:`TrackingSession` (one run).
The bundles carry these handlers themselves (tracking is on unless ``mlflow_tracking`` is false), so a second
handler of the same role on the same engine (from ``--tracking mlflow/tracking.json``) stands aside, and
MONAI's plain ``MLFlowHandler`` (``--tracking mlflow``) is detached when the engine starts: one run, medsr's.
With a remote server the session falls back to a local store when the server is down (see
:mod:`medsr.pipeline.tracking.session`); tracking never stops training.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler

from medsr.pipeline.engines.checkpoint import find_checkpoint
from medsr.pipeline.handlers.comparison_images import FIGURE_ATTR
from medsr.pipeline.handlers.training_stage import OFFSET_ATTR
from medsr.pipeline.handlers.utils import first_sample
from medsr.pipeline.io import atomic_open
from medsr.pipeline.tracking.export import export_torchscript, log_pytorch_model
from medsr.pipeline.tracking.figures import comparison_figure, figure_image, logged_labels
from medsr.pipeline.tracking.params import (
    bundle_params,
    code_version,
    datalist_digest,
    executed_config_path,
    metric_key,
    running_workflow_config,
    to_mlflow_params,
)
from medsr.pipeline.tracking.session import TrackingSession, get_session, resolve_tracking_uri

logger = logging.getLogger(__name__)

INPUT_KEYS = ("lr", "image")
#: engine attribute: the roles whose medsr MLflow handler is attached to that engine
ATTACHED_ATTR = "_medsr_mlflow_roles"
TARGET_KEYS = ("label", "hr")


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _pick(item: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in item and isinstance(item[key], torch.Tensor):
            return item[key]
    return None


class MLflowSRHandler(MLFlowHandler):
    """What the three MLflow role handlers share (see the module docstring); use a role class.

    Args:
        tracking_uri: ``$MLFLOW_TRACKING_URI`` wins; ``None`` gives ``sqlite:///<output_dir>/mlruns.db``.
        experiment_name: the MLflow experiment (``medsr/<bundle>`` from :func:`default_experiment_name`).
        run_name: a readable name; handlers with the same settings share one run.
        output_dir: the run folder (embedded store, offline fallback, exported files).
        config: the executed bundle config (file or dict), logged as params and as ``config/`` artifact;
            ``True``: the config of the MONAI bundle workflow that builds this handler (what the bundles' own
            tracking uses: no ``--tracking`` settings needed).
        tags: extra run tags.
        log_figures: write a comparison figure at each validation (validator/evaluator).
        input_keys / pred_key / target_keys: output keys of the input, the SR output and the target.
        close_on_complete: end the MLflow run when the engine completes (default: the role's).
        iteration_log / epoch_log / state_attributes / global_epoch_transform / experiment_param /
        optimizer_param_names: as in MONAI's MLFlowHandler. ``iteration_log`` defaults to the role's.
        metric_prefix: the section of this engine's metrics (``"pretrain_"`` puts a GAN's pixel-loss
            pre-training under ``pretrain/``); default: ``train/``, ``val/`` or ``eval/`` by role.
    """

    role = "evaluator"
    #: the role's defaults for ``iteration_log`` and ``close_on_complete``
    log_iterations, close_run = False, True
    #: the role's metric section in the MLflow UI
    group = "eval"

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "medsr",
        run_name: str | None = None,
        output_dir: str | os.PathLike | None = None,
        config: str | os.PathLike | Mapping | None = None,
        tags: Mapping[str, Any] | None = None,
        log_figures: bool = True,
        input_keys: Sequence[str] = INPUT_KEYS,
        pred_key: str = "pred",
        target_keys: Sequence[str] = TARGET_KEYS,
        close_on_complete: bool | None = None,
        iteration_log: bool | Callable[[Engine, int], bool] | None = None,
        epoch_log: bool | Callable[[Engine, int], bool] = True,
        state_attributes: Sequence[str] | None = None,
        global_epoch_transform: Callable = lambda x: x,
        experiment_param: dict | None = None,
        optimizer_param_names: str | Sequence[str] = "lr",
        metric_prefix: str = "",
    ) -> None:
        self.output_dir = Path(output_dir if output_dir is not None else os.getcwd()).absolute()
        super().__init__(
            tracking_uri=resolve_tracking_uri(tracking_uri, self.output_dir),
            iteration_log=self.log_iterations if iteration_log is None else iteration_log,
            epoch_log=epoch_log,
            epoch_logger=self._log_epoch,
            iteration_logger=self._log_iteration,
            global_epoch_transform=global_epoch_transform,
            state_attributes=state_attributes,
            experiment_name=experiment_name,
            run_name=run_name,
            experiment_param=experiment_param,
            optimizer_param_names=optimizer_param_names,
            close_on_complete=self.close_run if close_on_complete is None else close_on_complete,
        )
        self.tracking_uri = tracking_uri
        self.metric_prefix = metric_prefix
        self.metric_group = metric_prefix.strip("_/.") or self.group
        self._last_logged: dict[str, float] = {}
        self._workflow_config = config is True
        if config is True:  # the config of the bundle workflow that builds (or, at start, runs) this handler
            config = running_workflow_config()
        elif config is not None and not isinstance(config, Mapping):
            found = executed_config_path(config)
            if found is None:
                raise ValueError(f"config '{config}': file not found")
            config = found
        self.config = config
        self.extra_tags = dict(tags or {})
        self.log_figures = log_figures
        self.input_keys, self.pred_key, self.target_keys = tuple(input_keys), pred_key, tuple(target_keys)
        self.session: TrackingSession | None = None
        self._t0 = time.time()
        self._iter_start: float | None = None
        self._epoch_start: float | None = None
        self._sample: Mapping[str, Any] | None = None
        self._engine: Engine | None = None

    # ------------------------------------------------------------------ wiring
    def attach(self, engine: Engine) -> None:
        """Attach to the engine of this handler's role, unless a medsr handler of this role is attached already."""
        roles = engine.__dict__.setdefault(ATTACHED_ATTR, set())
        if self.role in roles:
            logger.debug(
                "a medsr MLflow %s handler is attached to this engine already; this one stands aside", self.role
            )
            return
        roles.add(self.role)
        self._engine = engine
        engine.add_event_handler(Events.STARTED, _detach_plain_mlflow_handlers)
        super().attach(engine)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        if self.log_figures:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._capture_sample)

    def _session(self) -> TrackingSession:
        if self.session is None or self.session.closed:
            self.session = get_session(self.tracking_uri, self.experiment_name, self.run_name, self.output_dir)
        return self.session

    def _params_to_session(self, params: dict[str, Any]) -> None:
        self._session().log_params(to_mlflow_params(params))

    def _to_session(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        flat: dict[str, Any] = {}
        for key, value in metrics.items():
            if isinstance(value, Mapping):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        values = {metric_key(k, self.metric_group): _scalar(v) for k, v in flat.items()}
        self._session().log_metrics({k: v for k, v in values.items() if v is not None}, step=step or 0)

    def start(self, engine: Engine) -> None:
        """Open the shared run (the first handler also tags it), log the role's params and the datalist."""
        if self.config is None and self._workflow_config:
            self.config = running_workflow_config()
        session = self._session()
        first = session.run_id is None
        session.start()
        self.experiment = session.experiment_id
        self.cur_run = session.run_id
        self._sample = None
        if first or self.role == "trainer":
            tags = {
                **_standard_tags(),
                "medsr.role": self.role,
                **code_version(),
                **{k: str(v) for k, v in self.extra_tags.items()},
            }
            if self.config is not None and not isinstance(self.config, Mapping):
                tags["medsr.config_file"] = os.fspath(self.config)
            session.set_tags(tags)
        self._log_start_params(engine, session)
        self._log_datalist(engine)

    def _log_start_params(self, engine: Engine, session: TrackingSession) -> None:
        if self.experiment_param:
            self._params_to_session(dict(self.experiment_param))

    def _log_datalist(self, engine: Engine) -> None:
        """The engine's datalist as an MLflow dataset input (context ``training``/``validation``/``evaluation``)."""
        dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
        data = getattr(dataset, "data", None)
        if data is None or self.metric_group == "pretrain":
            return
        context = {"trainer": "training", "validator": "validation", "evaluator": "evaluation"}[self.role]
        try:
            items = [i if isinstance(i, Mapping) else {"image": i} for i in data]
            digest = datalist_digest(items)
            self._session().log_dataset(
                items, f"{self.experiment_name}-{context}", context, f"datalist:{digest['sha256']}"
            )
        except Exception as err:  # noqa: BLE001 - a datalist that pandas cannot hold must not stop tracking
            logger.warning("datalist not logged as an MLflow dataset: %s", err)

    # ------------------------------------------------------------------ per iteration / epoch
    def _iteration_started(self, engine: Engine) -> None:
        self._iter_start = time.perf_counter()

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_start = time.perf_counter()
        self._sample = None

    def _log_iteration(self, engine: Engine) -> None:
        """``iteration_logger``: ``loss`` and every ``loss_<term>``, each optimizer's learning rate, the time."""
        item = first_sample(engine.state.output)
        metrics: dict[str, float] = {}
        if item is not None:
            for key, value in item.items():
                if key == "loss" or str(key).startswith("loss_"):
                    scalar = _scalar(value)
                    if scalar is not None:
                        metrics[str(key)] = scalar
        for attr, value in vars(engine).items():
            if isinstance(value, torch.optim.Optimizer):
                base = (
                    "lr" if attr == "optimizer" else f"lr_{attr.removeprefix('optimizer_').removesuffix('_optimizer')}"
                )
                for i, group in enumerate(value.param_groups):
                    for name in self.optimizer_param_names:
                        if name in group:
                            label = base if name == "lr" else f"{base}_{name}"
                            label = label if i == 0 else f"{label}_group{i}"
                            if self._last_logged.get(label) != float(group[name]):  # only when it changes
                                metrics[label] = self._last_logged[label] = float(group[name])
        if self._iter_start is not None:
            metrics["time_per_iteration_s"] = time.perf_counter() - self._iter_start
        self._to_session(metrics, step=engine.state.iteration)

    def _capture_sample(self, engine: Engine) -> None:
        if self._sample is None:
            item = first_sample(engine.state.output)
            if item is not None and isinstance(item.get(self.pred_key), torch.Tensor):
                self._sample = {
                    "sr": item[self.pred_key].detach().cpu(),
                    "hr": None if (t := _pick(item, self.target_keys)) is None else t.detach().cpu(),
                    "lr": None if (t := _pick(item, self.input_keys)) is None else t.detach().cpu(),
                }

    def _log_epoch(self, engine: Engine) -> None:
        """``epoch_logger``: ``engine.state.metrics`` (and ``state_attributes``) at the epoch, then the figure.

        A validator shared by two training stages (:class:`~medsr.pipeline.handlers.TrainingStage`) logs at
        the global epoch (earlier stages' epochs + this one), so steps do not repeat.
        """
        offset = int(getattr(engine.state, OFFSET_ATTR, 0) or 0)
        epoch = self.global_epoch_transform(engine.state.epoch) + offset
        if engine.state.metrics:
            self._to_session(engine.state.metrics, step=epoch)
            if self.state_attributes is not None:
                self._to_session({a: getattr(engine.state, a, None) for a in self.state_attributes}, step=epoch)
        self._log_epoch_extra(engine, epoch)
        shown = getattr(engine.state, FIGURE_ATTR, None)
        if self.log_figures and shown is not None and Path(shown).is_file():  # the run folder's figure
            self._session().log_image(figure_image(shown), key=f"{self.group}/comparison", step=epoch)
        elif self._sample is not None:  # no ComparisonImages on this engine: draw one, with the logged numbers
            sr_label, cubic_label = logged_labels(engine.state.metrics or {}, prefix=f"{self.group}_")
            with tempfile.TemporaryDirectory() as tmp:
                path = comparison_figure(
                    **self._sample,
                    path=Path(tmp) / f"{self.role}_epoch_{epoch:04d}.png",
                    title=f"{self.run_name or self._session().run_name} - {self.role} epoch {epoch}",
                    sr_label=sr_label,
                    cubic_label=cubic_label,
                )
                self._session().log_image(figure_image(path), key=f"{self.group}/comparison", step=epoch)
        self._sample = None

    def _log_epoch_extra(self, engine: Engine, epoch: int) -> None:
        """What a role logs per epoch besides the metrics (nothing here)."""

    # ------------------------------------------------------------------ end of run
    def _newest(self, folders: Sequence[Path], patterns: Sequence[str]) -> list[Path]:
        found = [
            p
            for folder in folders
            if folder.is_dir()
            for pattern in patterns
            for p in folder.rglob(pattern)
            if p.is_file() and p.stat().st_mtime >= self._t0 - 1 and not p.name.startswith(".")
        ]
        return sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)

    def _network(self, engine: Engine) -> torch.nn.Module | None:
        net = getattr(engine, "network", None)
        return getattr(net, "module", net) if isinstance(net, torch.nn.Module) else None

    def _example(self, engine: Engine) -> torch.Tensor | None:
        batch = getattr(engine.state, "batch", None)
        if isinstance(batch, Mapping):
            tensor = _pick(batch, self.input_keys)
            return None if tensor is None else torch.as_tensor(tensor[:1]).detach().cpu().float()
        return None

    def complete(self, engine: Engine | None = None) -> None:
        """Log the role's end-of-run artifacts (checkpoint and model for a trainer, report for an evaluator)."""
        engine = engine or self._engine
        session = self._session()
        if session.run_id is None or engine is None:
            return
        self._log_end(engine, session)

    def _log_end(self, engine: Engine, session: TrackingSession) -> None:
        """The role's end-of-run artifacts (nothing here)."""

    def close(self) -> None:
        """End the shared MLflow run."""
        if self.session is not None:
            self.session.end("FINISHED")
        self.cur_run = None


class MLflowTrainerHandler(MLflowSRHandler):
    """Track a medsr trainer: config as params and artifact, per-iteration losses, learning rates and times,
    time per epoch, and at the end the checkpoint and the exported generator.

    Args:
        checkpoint_dirs: folders searched for the newest ``.pt`` written during the run; when none is found
            the network's weights are saved to ``<output_dir>/tracking/final_checkpoint.pt``.
        export_model: log the generator as a logged model (``mlflow.pytorch.log_model``) and as TorchScript
            (``model_torchscript/``) at the end of training.
        log_training_state: also log the newest whole training-state checkpoint (optimizers, EMA, RNG: large);
            by default only the best model file(s) of the run are logged.
        export_dir: where the exported files are written before logging (default ``<output_dir>/tracking``;
            the bundles' tracking settings use ``<run folder>/tracking``).
        kwargs: the arguments of :class:`MLflowSRHandler` (no figures: a trainer's output is a training patch).
    """

    role = "trainer"
    log_iterations, close_run = True, True
    group = "train"

    def __init__(
        self,
        checkpoint_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        export_model: bool = True,
        log_training_state: bool = False,
        export_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("log_figures", False)
        super().__init__(**kwargs)
        self.export_dir = Path(export_dir) if export_dir is not None else self.output_dir / "tracking"
        self.checkpoint_dirs = [Path(p) for p in _as_paths(checkpoint_dirs)]
        self.export_model = export_model
        self.log_training_state = log_training_state
        self._example_input: torch.Tensor | None = None

    def _iteration_started(self, engine: Engine) -> None:
        super()._iteration_started(engine)
        if self._example_input is None:
            self._example_input = self._example(engine)

    def _log_start_params(self, engine: Engine, session: TrackingSession) -> None:
        params = bundle_params(self.config) if self.config is not None else {}
        params.update(self.experiment_param or {})
        self._params_to_session(params)
        if isinstance(self.config, Mapping):
            path = self.export_dir / "config.json"
            with atomic_open(path, "w", encoding="utf-8") as fh:
                json.dump(dict(self.config), fh, indent=2, default=str)
            session.log_artifact(path, "config")
        elif self.config is not None:
            session.log_artifact(self.config, "config")

    def _log_epoch_extra(self, engine: Engine, epoch: int) -> None:
        if self._epoch_start is not None:
            self._to_session({"time_per_epoch_s": time.perf_counter() - self._epoch_start}, step=epoch)

    def _log_end(self, engine: Engine, session: TrackingSession) -> None:
        self._log_checkpoint(engine, session)
        if self.export_model:
            self._log_model(engine, session)

    def _log_checkpoint(self, engine: Engine, session: TrackingSession) -> None:
        found: dict[bool, list[Path]] = {False: [], True: []}  # newest / best, written during this run
        for folder in self.checkpoint_dirs:
            for prefer_best, out in found.items():
                with suppress(FileNotFoundError):
                    out.append(Path(find_checkpoint(folder, None, prefer_best, self._t0 - 1, (".pt", ".pth"))))
        bests = sorted(
            {b for folder in self.checkpoint_dirs for b in self._newest([folder], ("best*.pt",))}, key=lambda p: p.name
        )
        if bests:  # the model files of the run (best_network.pt, best_pretrain.pt): small, self-describing
            for best in bests:
                session.log_artifact(best, "checkpoints")
            path = next((b for b in bests if b.name == "best_network.pt"), bests[0])
            if self.log_training_state and found[False]:
                newest = max(found[False], key=lambda p: p.stat().st_mtime)
                if newest not in bests:
                    session.log_artifact(newest, "training_state")
            session.set_tags({"medsr.checkpoint": str(path.resolve())})
            return
        if found[False]:
            path = max(found[False], key=lambda p: p.stat().st_mtime)
        else:
            net = self._network(engine)
            if net is None:
                return
            path = self.export_dir / "final_checkpoint.pt"
            with atomic_open(path, "wb") as fh:
                torch.save({"network": net.state_dict(), "epoch": engine.state.epoch}, fh)
        session.log_artifact(path, "checkpoints")
        session.set_tags({"medsr.checkpoint": str(path)})

    def _log_model(self, engine: Engine, session: TrackingSession) -> None:
        net = self._network(engine)
        if net is None:
            return
        example = self._example(engine)
        example = self._example_input if example is None else example
        folder = self.export_dir
        try:
            ts = export_torchscript(net, example, folder / "model.ts")
            session.log_artifact(ts, "model_torchscript")
        except Exception as err:  # noqa: BLE001 - export problems must not lose the run
            logger.warning("TorchScript export failed, not logged: %s", err)
            session.set_tags({"medsr.torchscript_error": str(err)[:500]})
        try:
            session.log_model(lambda: log_pytorch_model(net, example, name="model"))
        except Exception as err:  # noqa: BLE001 - an export problem must not lose the run
            logger.warning("logging the generator as an MLflow model failed: %s", err)
            session.set_tags({"medsr.model_error": str(err)[:500]})


class MLflowValidatorHandler(MLflowSRHandler):
    """Track the validator of a training run: its metrics at the trainer's epoch and a comparison figure per
    validation; it leaves the run open for the trainer to close. Arguments: :class:`MLflowSRHandler`'s."""

    role = "validator"
    log_iterations, close_run = False, False
    group = "val"


class MLflowEvaluatorHandler(MLflowSRHandler):
    """Track an evaluation run: its metrics, a comparison figure, and the evaluation report.

    Args:
        summary_dirs: folders searched for ``summary.json`` (and sibling ``*.png``/``*.csv``) written during
            the run; its numbers are logged as ``eval.*`` metrics.
        kwargs: the arguments of :class:`MLflowSRHandler`.
    """

    role = "evaluator"
    log_iterations, close_run = False, True

    def __init__(
        self, summary_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.summary_dirs = [Path(p) for p in _as_paths(summary_dirs)]

    def _log_end(self, engine: Engine, session: TrackingSession) -> None:
        if self.summary_dirs:
            self._log_summary(session, engine)

    def _log_summary(self, session: TrackingSession, engine: Engine) -> None:
        import json

        summaries = self._newest(self.summary_dirs, ("summary.json",))
        if not summaries:  # no medsr report: log MONAI MetricsSaver's summaries
            for path in self._newest(self.summary_dirs, ("*summary*.csv", "*_raw.csv"))[:20]:
                session.log_artifact(path, "evaluation")
            return
        summary = summaries[0]
        for path in sorted(summary.parent.iterdir()):
            if path.is_file() and path.suffix in (".json", ".png", ".csv"):
                session.log_artifact(path, "evaluation")
        for path in sorted((summary.parent / "figures").glob("*.png"))[:50]:  # the report's comparison figures
            session.log_artifact(path, "evaluation/figures")
        try:
            content = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        flat: dict[str, float] = {}

        def walk(node: Any, prefix: str) -> None:
            if isinstance(node, Mapping):
                for k, v in node.items():
                    walk(v, f"{prefix}.{k}" if prefix else str(k))
            elif (value := _scalar(node)) is not None:
                flat[f"eval/{prefix}"] = value

        walk(content, "")
        session.log_metrics(dict(list(flat.items())[:500]), step=int(getattr(engine.state, "epoch", 0) or 0))


def _detach_plain_mlflow_handlers(engine: Engine) -> None:
    """Remove MONAI's own ``MLFlowHandler`` (``--tracking mlflow``'s) from ``engine``: the medsr handler of the
    same role logs the same numbers in medsr's sections, into the same run; two handlers would log them twice."""
    found = 0
    for items in engine._event_handlers.values():  # ignite lists handlers only there
        kept = [item for item in items if type(getattr(item[0], "__self__", None)) is not MLFlowHandler]
        found += len(items) - len(kept)
        items[:] = kept  # in place: STARTED's list is being run (MONAI's handlers come after this one)
    if found:
        logger.info("MONAI's MLFlowHandler detached: medsr's MLflow handlers track this run")


def _as_paths(value: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list:
    return [] if value is None else [value] if isinstance(value, (str, os.PathLike)) else list(value)


def _standard_tags() -> dict[str, str]:
    """MLflow's own run tags (``mlflow.user``, ``mlflow.source.name``/``type``, git) from its context
    registry, with the source named by the command that ran (``python -m monai.bundle run training ...``)."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = {k: str(v) for k, v in resolve_tags().items()}
    argv = list(sys.argv)
    if argv:
        head = (
            "python -m monai.bundle"
            if argv[0].replace(os.sep, "/").endswith("monai/bundle/__main__.py")
            else Path(argv[0]).name
        )
        tags["mlflow.source.name"] = " ".join([head, *argv[1:]])[:500]
    return tags
