"""medsr.pipeline.handlers: the ignite/MONAI handlers of medsr, one per module as in ``monai.handlers``.

* :class:`CheckpointHandler` (``checkpoint_handler``): the whole training state, one atomic ``.pt`` file;
* :class:`BestModelSaver` (``best_model``): the best generator of each training stage, a self-describing file;
* :class:`ValidationLog` (``validation_log``): one CSV row per validation;
* :class:`ComparisonImages` (``comparison_images``): a PNG of the first validation case per validation;
* :class:`CubicBaseline` (``cubic_baseline``): cubic interpolation's PSNR/SSIM on the validation crops;
* :class:`TrainingStage` (``training_stage``): tells a shared validator which training stage runs it;
* :class:`MLflowTrainerHandler`, :class:`MLflowValidatorHandler`, :class:`MLflowEvaluatorHandler`
  (``mlflow_handler``, on their shared base :class:`MLflowSRHandler`): MLflow tracking, one class per role;
* :class:`EvaluationReportHandler` (``evaluation_report``): the evaluation report when an evaluator completes;
* :class:`SSIMHandler` (``ssim``) and :class:`RegionSSIMHandler` (``region_ssim``): metric handlers;
* :class:`EMAValidation` (``ema_validation``): validate and keep the EMA weights instead of the raw ones;
* :class:`QuietStatsHandler` (``stats``): MONAI's ``StatsHandler`` that leaves an error's report to the entry point;
* :class:`StopAtBudget` (``stop_at_budget``): ends a run when its wall-time budget is spent (``medsr selfsr``);
* :class:`BudgetProgress` (``budget_progress``): a progress bar of elapsed time against that budget;
* :class:`FollowLoad` (``follow_load``): CPU threads that follow the machine's load during a run.

Names are imported lazily, so a bundle that uses no MLflow handler does not import MLflow.
"""

from __future__ import annotations

from medsr.pipeline._lazy import lazy_exports

_EXPORTS = {
    "best_model": ("BestModelSaver",),
    "budget_progress": ("BudgetProgress",),
    "checkpoint_handler": ("CheckpointHandler",),
    "comparison_images": ("ComparisonImages",),
    "cubic_baseline": ("CubicBaseline",),
    "ema_validation": ("EMAValidation",),
    "evaluation_report": ("EvaluationReportHandler",),
    "follow_load": ("FollowLoad",),
    "mlflow_handler": ("MLflowSRHandler", "MLflowTrainerHandler", "MLflowValidatorHandler", "MLflowEvaluatorHandler"),
    "region_ssim": ("RegionSSIMHandler",),
    "ssim": ("SSIMHandler",),
    "stats": ("QuietStatsHandler",),
    "stop_at_budget": ("StopAtBudget",),
    "training_stage": ("TrainingStage",),
    "validation_log": ("ValidationLog",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
