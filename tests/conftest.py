"""Shared pytest fixtures: seeding, CPU threads, CUDA marker handling, log handlers of in-process runs."""

from __future__ import annotations

import logging
import random
import sys

import numpy as np
import pytest
import torch

# Tests use tiny tensors: one intra-op thread avoids OpenMP spin overhead (measured 4x faster here).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    """Seed python, numpy and torch before every test."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _drop_captured_log_handlers() -> None:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in list(lg.handlers):
            stream = getattr(h, "stream", None)
            if isinstance(h, logging.StreamHandler) and stream not in (sys.__stdout__, sys.__stderr__):
                lg.removeHandler(h)


@pytest.fixture
def own_logging():
    """An in-process bundle run points log handlers at the captured streams of the test that made them: drop
    them before this test (an earlier test's closed stream) and after it."""
    _drop_captured_log_handlers()
    yield
    _drop_captured_log_handlers()
