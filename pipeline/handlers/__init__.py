"""medsr.pipeline.handlers: the ignite/MONAI handlers of medsr, one per module as in ``monai.handlers``.

* :class:`CheckpointHandler` (``checkpoint_handler``): the whole training state, one atomic ``.pt`` file;
* :class:`BestModelSaver` (``best_model``): the best generator of each training stage, a self-describing file;
* :class:`ValidationLog` (``validation_log``): one CSV row per validation;
* :class:`ComparisonImages` (``comparison_images``): a PNG of the first validation case per validation;
* :class:`TrainingStage` (``training_stage``): tells a shared validator which training stage runs it;
* :class:`MLflowTrainerHandler`, :class:`MLflowValidatorHandler`, :class:`MLflowEvaluatorHandler`
  (``mlflow_handler``, on their shared base :class:`MLflowSRHandler`): MLflow tracking, one class per role;
* :class:`EvaluationReportHandler` (``evaluation_report``): the evaluation report when an evaluator completes;
* :class:`SSIMHandler` (``ssim``) and :class:`RegionSSIMHandler` (``region_ssim``): metric handlers.

Names are imported lazily, so a bundle that uses no MLflow handler does not import MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "BestModelSaver": "best_model",
    "CheckpointHandler": "checkpoint_handler",
    "ComparisonImages": "comparison_images",
    "EvaluationReportHandler": "evaluation_report",
    "MLflowEvaluatorHandler": "mlflow_handler",
    "MLflowSRHandler": "mlflow_handler",
    "MLflowTrainerHandler": "mlflow_handler",
    "MLflowValidatorHandler": "mlflow_handler",
    "RegionSSIMHandler": "region_ssim",
    "SSIMHandler": "ssim",
    "TrainingStage": "training_stage",
    "ValidationLog": "validation_log",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'medsr.pipeline.handlers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medsr.pipeline.handlers.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
