"""``MLflowSRHandler``: track a medsr trainer, validator or evaluator in MLflow.

:class:`MLflowSRHandler` extends MONAI's :class:`~monai.handlers.MLFlowHandler` (same attach points, same
``engine.state.metrics`` epoch logging) with what an SR run needs:

* trainer: the resolved config as params (flattened, cut to MLflow's limits) and as an artifact, the
  datalist's hash and size, the code version; per iteration ``loss`` and every ``loss_<term>``, the
  learning rate of every optimizer on the engine and the time per iteration; at the end the final
  checkpoint, the generator as TorchScript and in the MLflow PyTorch flavour;
* validator: per-epoch metrics (PSNR, SSIM, region SSIM, whatever the evaluator computes) at the trainer's
  epoch, and a comparison figure (LR | SR | HR | error) at each validation;
* evaluator: the metrics, and the evaluation report (``summary.json`` and its PNG figures).

Trainer, validator and evaluator handlers of one workflow share one :class:`TrackingSession` (one run).
With a remote server the session falls back to a local store when the server is down (see
:mod:`medsr.pipeline.tracking.session`); tracking never stops training.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler

from medsr.pipeline.io import atomic_open
from medsr.pipeline.tracking.export import export_torchscript, save_pytorch_flavour
from medsr.pipeline.tracking.figures import comparison_figure, first_item
from medsr.pipeline.tracking.params import (
    code_version,
    datalist_digest,
    executed_config_path,
    flatten_config,
    to_mlflow_params,
)
from medsr.pipeline.tracking.session import TrackingSession, get_session, resolve_tracking_uri

logger = logging.getLogger(__name__)

ROLES = ("trainer", "validator", "evaluator")
INPUT_KEYS = ("lr", "image")
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
    """Track a medsr trainer, validator or evaluator in MLflow (see the module docstring for what is logged).

    Args:
        role: ``"trainer"``, ``"validator"`` or ``"evaluator"``; ``None`` picks trainer for a
            ``monai.engines.Trainer`` and evaluator otherwise.
        tracking_uri: ``$MLFLOW_TRACKING_URI`` wins; ``None`` gives ``sqlite:///<output_dir>/mlruns.db``.
        experiment_name: the MLflow experiment (``medsr/<bundle>`` from :func:`default_experiment_name`).
        run_name: a readable name; handlers with the same settings share one run.
        output_dir: the run folder (embedded store, offline fallback, exported files).
        config: the executed bundle config (file or dict), logged as params and as ``config/`` artifact.
        tags: extra run tags.
        log_figures: write a comparison figure at each validation (validator/evaluator).
        input_keys / pred_key / target_keys: output keys of the input, the SR output and the target.
        checkpoint_dirs: folders searched for the newest ``.pt`` written during the run (trainer); when
            none is found the network's weights are saved to ``<output_dir>/tracking/final_checkpoint.pt``.
        export_model: log the generator as TorchScript (``model_torchscript/``) and in the MLflow PyTorch
            flavour (``model/``) at the end of training.
        summary_dirs: folders searched for ``summary.json`` (and sibling ``*.png``/``*.csv``) written during
            an evaluation run (evaluator); its numbers are logged as ``eval_*`` metrics.
        close_on_complete: end the MLflow run when the engine completes; default True for trainer and
            evaluator, False for a validator (the trainer ends the run).
        iteration_log / epoch_log / state_attributes / global_epoch_transform / experiment_param /
        optimizer_param_names: as in MONAI's MLFlowHandler. ``iteration_log`` defaults to True for a
            trainer and False otherwise.
        metric_prefix: put before every metric name (``"pretrain_"`` for a GAN's pixel-loss pre-training).
    """

    def __init__(
        self,
        role: str | None = None,
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
        checkpoint_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        export_model: bool = True,
        summary_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        close_on_complete: bool | None = None,
        iteration_log: bool | Callable[[Engine, int], bool] | None = None,
        epoch_log: bool | Callable[[Engine, int], bool] = True,
        state_attributes: Sequence[str] | None = None,
        global_epoch_transform: Callable = lambda x: x,
        experiment_param: dict | None = None,
        optimizer_param_names: str | Sequence[str] = "lr",
        metric_prefix: str = "",
    ) -> None:
        if role is not None and role not in ROLES:
            raise ValueError(f"role: expected one of {ROLES}, got {role!r}")
        self.role = role
        self.output_dir = Path(output_dir if output_dir is not None else os.getcwd()).absolute()
        uri = resolve_tracking_uri(tracking_uri, self.output_dir)
        super().__init__(
            tracking_uri=uri,
            iteration_log=True if iteration_log is None else iteration_log,
            epoch_log=epoch_log,
            global_epoch_transform=global_epoch_transform,
            state_attributes=state_attributes,
            experiment_name=experiment_name,
            run_name=run_name,
            experiment_param=experiment_param,
            optimizer_param_names=optimizer_param_names,
            close_on_complete=False,
        )
        self._iteration_log_arg = iteration_log
        self._close_arg = close_on_complete
        self.tracking_uri = tracking_uri
        self.metric_prefix = metric_prefix
        if config is not None and not isinstance(config, Mapping):
            found = executed_config_path(config)
            if found is None:
                raise ValueError(f"config '{config}': file not found")
            config = found
        self.config = config
        self.extra_tags = dict(tags or {})
        self.log_figures = log_figures
        self.input_keys, self.pred_key, self.target_keys = tuple(input_keys), pred_key, tuple(target_keys)
        as_list = lambda v: [] if v is None else [v] if isinstance(v, (str, os.PathLike)) else list(v)  # noqa: E731
        self.checkpoint_dirs = [Path(p) for p in as_list(checkpoint_dirs)]
        self.summary_dirs = [Path(p) for p in as_list(summary_dirs)]
        self.export_model = export_model
        self.session: TrackingSession | None = None
        self._t0 = time.time()
        self._iter_start: float | None = None
        self._epoch_start: float | None = None
        self._sample: Mapping[str, Any] | None = None
        self._engine: Engine | None = None
        self._example_input: torch.Tensor | None = None

    # ------------------------------------------------------------------ wiring
    def attach(self, engine: Engine) -> None:
        """Attach to a trainer, validator or evaluator engine."""
        if self.role is None:
            from monai.engines import Trainer

            self.role = "trainer" if isinstance(engine, Trainer) else "evaluator"
        if self._iteration_log_arg is None:
            self.iteration_log = self.role == "trainer"
        self.close_on_complete = self._close_arg if self._close_arg is not None else self.role != "validator"
        self._engine = engine
        super().attach(engine)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        if self.role != "trainer" and self.log_figures:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._capture_sample)

    def _session(self) -> TrackingSession:
        if self.session is None or self.session.closed:
            self.session = get_session(self.tracking_uri, self.experiment_name, self.run_name, self.output_dir)
        return self.session

    # ------------------------------------------------------------------ MONAI hooks, routed to the session
    def _set_experiment(self) -> None:
        session = self._session()
        session.start()
        self.experiment = session.experiment_id

    def _log_params(self, params: dict[str, Any]) -> None:
        self._session().log_params(to_mlflow_params(params))

    def _log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        flat: dict[str, Any] = {}
        for key, value in metrics.items():
            if isinstance(value, Mapping):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        values = {f"{self.metric_prefix}{k}": _scalar(v) for k, v in flat.items()}
        self._session().log_metrics({k: v for k, v in values.items() if v is not None}, step=step or 0)

    def start(self, engine: Engine) -> None:
        """Open the shared run; the trainer logs config, datalist and code version once."""
        session = self._session()
        first = session.run_id is None
        session.start()
        self.experiment = session.experiment_id
        self.cur_run = session.run_id
        self._sample = None
        if first or self.role == "trainer":
            tags = {"medsr.role": self.role, **code_version(), **{k: str(v) for k, v in self.extra_tags.items()}}
            if self.config is not None and not isinstance(self.config, Mapping):
                tags["medsr.config_file"] = os.fspath(self.config)
            session.set_tags(tags)
        if self.role == "trainer":
            params = {attr: getattr(engine.state, attr, None) for attr in self.default_tracking_params}
            params.update(flatten_config(self.config) if self.config is not None else {})
            params.update(self.experiment_param or {})
            self._log_params(params)
            if self.config is not None and not isinstance(self.config, Mapping):
                session.log_artifact(self.config, "config")
        elif self.experiment_param:
            self._log_params(dict(self.experiment_param))
        self._log_datalist(engine)

    def _log_datalist(self, engine: Engine) -> None:
        dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
        if dataset is None:
            return
        name = {"trainer": "train", "validator": "validate", "evaluator": "evaluate"}[self.role or "evaluator"]
        data = getattr(dataset, "data", None)
        try:
            digest = datalist_digest(data) if data is not None else {"size": len(dataset)}
        except (ValueError, TypeError):
            return
        self._log_params({f"datalist.{name}.{k}": v for k, v in digest.items()})

    # ------------------------------------------------------------------ per iteration / epoch
    def _iteration_started(self, engine: Engine) -> None:
        self._iter_start = time.perf_counter()
        if self.role == "trainer" and self._example_input is None:
            self._example_input = self._example(engine)

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_start = time.perf_counter()
        self._sample = None

    def _default_iteration_log(self, engine: Engine) -> None:
        item = first_item(engine.state.output)
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
                            metrics[label if i == 0 else f"{label}_group{i}"] = float(group[name])
        if self._iter_start is not None:
            metrics["time_per_iteration_s"] = time.perf_counter() - self._iter_start
        self._log_metrics(metrics, step=engine.state.iteration)

    def _capture_sample(self, engine: Engine) -> None:
        if self._sample is None:
            item = first_item(engine.state.output)
            if item is not None and isinstance(item.get(self.pred_key), torch.Tensor):
                self._sample = {
                    "sr": item[self.pred_key].detach().cpu(),
                    "hr": None if (t := _pick(item, self.target_keys)) is None else t.detach().cpu(),
                    "lr": None if (t := _pick(item, self.input_keys)) is None else t.detach().cpu(),
                }

    def _default_epoch_log(self, engine: Engine) -> None:
        # two-stage training (medsr.pipeline.handlers.TrainingStage): a validator shared by the pretrain and GAN
        # trainers logs at the global epoch (earlier stages' epochs + this one), so steps do not repeat
        offset = int(getattr(engine.state, "medsr_epoch_offset", 0) or 0)
        transform = self.global_epoch_transform
        if offset:
            self.global_epoch_transform = lambda e: transform(e) + offset
        try:
            self._epoch_log_at(engine)
        finally:
            self.global_epoch_transform = transform

    def _epoch_log_at(self, engine: Engine) -> None:
        epoch = self.global_epoch_transform(engine.state.epoch)
        super()._default_epoch_log(engine)
        if self.role == "trainer" and self._epoch_start is not None:
            self._log_metrics({"time_per_epoch_s": time.perf_counter() - self._epoch_start}, step=epoch)
        if self._sample is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = comparison_figure(
                    **self._sample,
                    path=Path(tmp) / f"{self.role}_epoch_{epoch:04d}.png",
                    title=f"{self.run_name or self._session().run_name} - {self.role} epoch {epoch}",
                )
                self._session().log_artifact(path, "figures")
            self._sample = None

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
        """Log the end-of-run artifacts: checkpoint and exported model (trainer), evaluation report (evaluator)."""
        engine = engine or self._engine
        session = self._session()
        if session.run_id is None or engine is None:
            return
        if self.role == "trainer":
            self._log_checkpoint(engine, session)
            if self.export_model:
                self._log_model(engine, session)
        if self.summary_dirs:
            self._log_summary(session, engine)

    def _log_checkpoint(self, engine: Engine, session: TrackingSession) -> None:
        found = self._newest(self.checkpoint_dirs, ("*.pt", "*.pth"))
        if found:
            path = found[0]
            for best in [p for p in found[1:] if "best" in p.name][:1]:
                session.log_artifact(best, "checkpoints")
        else:
            net = self._network(engine)
            if net is None:
                return
            path = self.output_dir / "tracking" / "final_checkpoint.pt"
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
        folder = self.output_dir / "tracking"
        try:
            ts = export_torchscript(net, example, folder / "model.ts")
            session.log_artifact(ts, "model_torchscript")
        except Exception as err:  # noqa: BLE001 - export problems must not lose the run
            logger.warning("TorchScript export failed, not logged: %s", err)
            session.set_tags({"medsr.torchscript_error": str(err)[:500]})
        flavour = save_pytorch_flavour(net, example, folder / "mlflow_model")
        session.log_artifacts(flavour, "model")

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
                flat[f"eval.{prefix}"] = value

        walk(content, "")
        session.log_metrics(dict(list(flat.items())[:500]), step=int(getattr(engine.state, "epoch", 0) or 0))

    def close(self) -> None:
        """End the shared MLflow run."""
        if self.session is not None:
            self.session.end("FINISHED")
        self.cur_run = None
