"""Evaluation runs for SR: interpolation baselines, region metrics, hallucination checks, reports, downstream check."""

from medsr.pipeline.evaluation.baselines import BASELINE_MODES, resolve_scale, upsample
from medsr.pipeline.evaluation.consistency import data_consistency
from medsr.pipeline.evaluation.downstream import downstream_accuracy, load_classifier
from medsr.pipeline.evaluation.report import CSV_COLUMNS, METRICS, evaluate_cases, save_figure

__all__ = [
    "BASELINE_MODES",
    "CSV_COLUMNS",
    "METRICS",
    "data_consistency",
    "downstream_accuracy",
    "evaluate_cases",
    "load_classifier",
    "resolve_scale",
    "save_figure",
    "upsample",
]
