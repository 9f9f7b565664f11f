"""Run folders (``medsr.pipeline.runs``) and self-describing checkpoints (``engines/checkpoint.py``, ``models.py``)."""

from __future__ import annotations

import io
import os

import pytest
import torch

from medsr.networks import ESPCN, RRDBNet
from medsr.pipeline.engines.checkpoint import NetworkMismatchError, find_checkpoint, save_checkpoint
from medsr.pipeline.engines.common import get_rng_state, set_rng_state
from medsr.pipeline.models import load_generator, model_payload, read_model_info
from medsr.pipeline.runs import (
    checkpoint_written,
    find_run,
    new_run_name,
    resume_path,
    run_checkpoints,
    run_dir,
    run_subdir,
)


def test_run_dir_points_latest_and_names_are_unique(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSR_RUN_NAME", raising=False)
    a = new_run_name("espcn", tmp_path)
    assert a.startswith("espcn-") and len(a) == len("espcn-20260101-120000")
    first = run_dir(tmp_path, a)
    b = new_run_name("espcn", tmp_path)  # same second: a suffix, never the same folder
    assert b != a
    second = run_dir(tmp_path, b)
    assert not (tmp_path / "latest").exists()  # latest moves with a run's first checkpoint
    checkpoint_written(os.path.join(second, "checkpoints"))
    assert os.readlink(tmp_path / "latest") == b and find_run(tmp_path) == second
    assert find_run(tmp_path, a) == first and find_run(tmp_path, first) == first
    with pytest.raises(FileNotFoundError, match="run 'nope'"):
        find_run(tmp_path, "nope")
    with pytest.raises(ValueError, match="plain folder name"):
        run_dir(tmp_path, "../x")
    monkeypatch.setenv("MEDSR_RUN_NAME", "mine")
    assert new_run_name("espcn", tmp_path) == "mine"


def test_newest_trained_run_is_found_and_resume_keeps_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSR_RUN_NAME", raising=False)
    trained = run_dir(tmp_path, "espcn-20260101-100000")
    (tmp_path / "espcn-20260101-100000" / "checkpoints").mkdir()
    torch.save({}, tmp_path / "espcn-20260101-100000" / "checkpoints" / "checkpoint_00000004.pt")
    run_dir(tmp_path, "espcn-20260101-110000")  # started later, failed before any checkpoint
    assert find_run(tmp_path) == str(tmp_path / "espcn-20260101-110000")
    assert run_checkpoints(tmp_path) == os.path.join(trained, "checkpoints")
    assert run_subdir(tmp_path, None, "eval") == os.path.join(trained, "eval")
    assert resume_path(tmp_path, "espcn-20260101-100000") == os.path.join(trained, "checkpoints")
    assert resume_path(tmp_path, None) is None
    # resuming a run by name goes on in that run's folder
    assert new_run_name("espcn", tmp_path, "espcn-20260101-100000") == "espcn-20260101-100000"
    assert find_checkpoint(tmp_path).endswith("checkpoint_00000004.pt")


def test_layout_before_run_folders_is_still_found(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({}, tmp_path / "checkpoints" / "best_network.pt")
    assert find_run(tmp_path) == str(tmp_path)
    assert run_checkpoints(tmp_path) == str(tmp_path / "checkpoints")
    assert run_subdir(tmp_path / "empty", None, "eval") == str(tmp_path / "empty" / "eval")


@pytest.mark.parametrize("dims", [2, 3])
def test_checkpoint_rebuilds_its_network_and_loads_weights_only(dims, tmp_path):
    trained = RRDBNet(dims, 1, 1, scale_factor=2, num_features=8, num_blocks=1, growth_channels=4, attention="se")
    path = save_checkpoint(
        model_payload(trained, {"metric": {"name": "val_psnr", "value": 30.0}}), tmp_path / "best_network.pt"
    )
    torch.load(path, weights_only=True)  # numbers, tensors and dicts only
    info = read_model_info(tmp_path)
    assert info["network"]["target"] == "medsr.networks.RRDBNet" and info["scale"] == [2] * dims
    assert info["spatial_dims"] == dims and info["normalization"]["lower"] == 0.5
    default = RRDBNet(dims, 1, 1, scale_factor=4)  # the config's defaults: other widths and scale
    net = load_generator(default, tmp_path)
    assert isinstance(net, RRDBNet) and net.init_args["num_features"] == 8 and net.scale_factor == (2,) * dims
    x = torch.rand(1, 1, *([6] * dims))
    torch.testing.assert_close(net.eval()(x), trained.eval()(x))


def test_weights_only_file_with_other_widths_is_a_one_line_error(tmp_path):
    torch.save(ESPCN(2, 1, 1, 2, num_features=(8, 4)).state_dict(), tmp_path / "w.pt")
    with pytest.raises(NetworkMismatchError) as err:
        load_generator(ESPCN(2, 1, 1, 2), tmp_path / "w.pt")
    message = str(err.value)
    assert "\n" not in message and "w.pt" in message and "in the file but" in message


def test_rng_state_is_weights_only_safe_and_restores():
    import numpy as np

    state = get_rng_state()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    a = (np.random.rand(3), torch.rand(3))
    set_rng_state(loaded)
    b = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
