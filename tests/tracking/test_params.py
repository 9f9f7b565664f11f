"""Config flattening, MLflow limits, datalist hashing, code version, and the mlflow/ settings file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsr.pipeline.tracking import datalist_digest, flatten_config, resolve_tracking_uri, to_mlflow_params
from medsr.pipeline.tracking.params import (
    MAX_KEY_LENGTH,
    MAX_VALUE_LENGTH,
    TRUNCATION_MARK,
    code_version,
    default_experiment_name,
    executed_config_path,
)

ROOT = Path(__file__).resolve().parents[2]


def test_flatten_resolves_references_and_arithmetic_only():
    config = {
        "lr": 1e-3,
        "kernel_sizes": [9, 5, 5],
        "train": {"optimizer": {"lr": "@lr", "warm": "$@lr * 10", "k": "@kernel_sizes"}, "max_epochs": "$max(1, 3)"},
        "net": {"_target_": "medsr.networks.SRCNN", "features": "$@train::optimizer::warm / 2"},
    }
    flat = flatten_config(config)
    assert flat["train.optimizer.lr"] == 1e-3
    assert flat["train.optimizer.warm"] == pytest.approx(1e-2)
    assert flat["net.features"] == pytest.approx(5e-3)  # chained, with the "::" separator
    assert flat["train.optimizer.k"] == [9, 5, 5]
    assert flat["kernel_sizes.1"] == 5
    assert flat["train.max_epochs"] == "$max(1, 3)"  # calls are never evaluated
    assert flat["net._target_"] == "medsr.networks.SRCNN"


def test_flatten_reads_config_file_and_names_missing_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"a": {"b": [1, 2]}, "long": list(range(40))}))
    flat = flatten_config(path)
    assert flat["a.b.0"] == 1 and json.loads(flat["long"]) == list(range(40))
    with pytest.raises(ValueError, match="nope.json': file not found"):
        flatten_config(tmp_path / "nope.json")


def test_params_fit_mlflow_limits():
    params = to_mlflow_params({"x#" + "k" * 400: "v", "big": "a" * 10_000, "ok": 3}, max_params=2)
    assert all(len(k) <= MAX_KEY_LENGTH and "#" not in k for k in params)
    assert len(params["big"]) == MAX_VALUE_LENGTH and params["big"].endswith(TRUNCATION_MARK)
    assert params["medsr.params_dropped"] == "1"


def test_datalist_digest_tracks_content():
    data = [{"image": "a.nii.gz", "mask": "m.nii.gz"}, {"image": "b.nii.gz"}]
    first = datalist_digest(data)
    assert first["size"] == 2 and len(first["sha256"]) == 16
    assert datalist_digest([dict(d) for d in data]) == first
    assert datalist_digest([data[0], {"image": "c.nii.gz"}])["sha256"] != first["sha256"]
    with pytest.raises(ValueError, match="datalist"):
        datalist_digest("a.json")


def test_code_version_reports_versions(tmp_path):
    tags = code_version(tmp_path)  # not a git checkout
    assert tags["medsr.version"] and tags["medsr.monai_version"].startswith("1.")
    assert "mlflow.source.git.commit" not in tags and "none" in tags["medsr.git_commit"]


def test_tracking_uri_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlruns.db"
    with pytest.raises(ValueError, match="no file store"):
        resolve_tracking_uri(str(tmp_path), tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert resolve_tracking_uri("sqlite:///x.db", tmp_path) == "http://127.0.0.1:9"


def test_executed_config_path_repairs_monai_text(tmp_path):
    (tmp_path / "config_1.json").write_text("{}")
    assert executed_config_path(f"{tmp_path} + '/config_1.json'") == tmp_path / "config_1.json"
    assert executed_config_path(tmp_path / "config_1.json") == tmp_path / "config_1.json"
    assert executed_config_path(f"{tmp_path} + '/missing.json'") is None


def test_settings_file_matches_monai_format_and_bundles():
    settings = json.loads((ROOT / "mlflow" / "tracking.json").read_text())
    assert set(settings) >= {"handlers_id", "configs"}
    for role, ids in settings["handlers_id"].items():
        handler = settings["configs"][role]
        role_class = "Trainer" if role in ("trainer", "pretrainer") else role.title()
        assert handler["_target_"] == f"medsr.pipeline.handlers.MLflow{role_class}Handler"
        assert set(ids) == {"id", "handlers"}
    assert default_experiment_name("bundles/esrgan_se") == "medsr/esrgan_se"
