"""One line per error (``medsr.pipeline.errors``), override keys checked (``bundles``), outputs that are inputs
refused (``io``), transform errors naming their files (``transforms.compose``)."""

from __future__ import annotations

import os

import pytest

from medsr.pipeline.bundles import argv_overrides, check_overrides, config_keys
from medsr.pipeline.errors import MedsrError, exit_code, format_error, user_error
from medsr.pipeline.io import check_outputs
from medsr.transforms.compose import name_files


def _monai_chain():
    try:
        try:
            raise ValueError("input 'a.nii.gz': read as shape (2, 4, 4, 4)")
        except ValueError as inner:
            raise RuntimeError("applying transform <X>") from inner
    except RuntimeError as mid:
        try:
            raise RuntimeError('Failed to evaluate ConfigExpression: \n"$@runner.run()"') from mid
        except RuntimeError as outer:
            return outer


def test_the_one_line_is_the_innermost_real_error():
    exc = _monai_chain()
    assert str(user_error(exc)).startswith("input 'a.nii.gz'")
    line = format_error(exc, "--debug for the traceback")
    assert line == "error: input 'a.nii.gz': read as shape (2, 4, 4, 4) [--debug for the traceback]"
    assert "\n" not in format_error(ValueError("two\nlines"))
    assert format_error(TypeError("bad")) == "error: TypeError: bad"  # a bug still says what it is
    assert format_error(KeyError("k")) == "error: k"


def test_a_wrapping_medsr_error_with_the_file_name_wins():
    try:
        try:
            raise EOFError("Ran out of input")
        except EOFError as e:
            raise ValueError("checkpoint 'x.pt' could not be read: Ran out of input") from e
    except ValueError as e:
        assert "x.pt" in format_error(e)


def test_name_files_adds_the_item_files_once():
    err = ValueError("image: contains NaN")
    named = name_files(err, ["/d/p07/t1.nii.gz", "/d/p07/mask.nii.gz"])
    assert isinstance(named, MedsrError) and str(named).startswith("datalist item '/d/p07/t1.nii.gz'")
    already = ValueError("'/d/p07/t1.nii.gz': truncated")
    assert name_files(already, ["/d/p07/t1.nii.gz"]) is already


CONFIG = {"epochs": 2, "epoch_length": None, "train": {"trainer": {"max_epochs": 1}}, "lst": [{"a": 1}]}


def test_config_keys_are_override_ids():
    keys = config_keys(CONFIG)
    assert {"epochs", "train#trainer#max_epochs", "lst#0#a"} <= keys


def test_argv_overrides_skip_run_arguments():
    argv = ["run", "training", "--config_file", "x.json", "--epoch_lenght", "1", "--a#b=2", "--flag"]
    assert argv_overrides(argv) == {"epoch_lenght": "1", "a#b": "2", "flag": ""}


def test_unknown_override_names_the_closest_key(tmp_path, monkeypatch):
    import json

    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps(CONFIG))
    monkeypatch.delenv("MEDSR_ALLOW_NEW_KEYS", raising=False)
    with pytest.raises(MedsrError, match=r"--epoch_lenght: no config defines it; did you mean --epoch_length\?"):
        check_overrides(["epoch_lenght"], config_files=str(cfg))
    assert check_overrides(["epochs", "train#trainer#max_epochs"], config_files=str(cfg)) == []
    assert check_overrides(["new_knob"], config_files=str(cfg), allow_new_keys=True) == ["new_knob"]
    monkeypatch.setenv("MEDSR_ALLOW_NEW_KEYS", "1")
    assert check_overrides(["new_knob"], config_files=str(cfg)) == ["new_knob"]
    # from a monai.bundle command line, with --allow_new_keys on it
    argv = ["run", "training", "--config_file", str(cfg), "--new_knob", "3", "--allow_new_keys", "true"]
    monkeypatch.delenv("MEDSR_ALLOW_NEW_KEYS")
    assert check_overrides(argv=argv) == ["new_knob"]
    with pytest.raises(MedsrError, match="did you mean --epochs"):
        check_overrides(argv=["run", "training", "--config_file", str(cfg), "--epoch", "3"])


def test_check_overrides_does_nothing_outside_monai_bundle():
    assert check_overrides() == []  # pytest is not python -m monai.bundle


@pytest.mark.parametrize("how", ["same", "dotdot", "hardlink", "symlink", "inside_series"])
def test_outputs_that_are_inputs_are_refused(tmp_path, how):
    src = tmp_path / "in" / "scan.nii.gz"
    src.parent.mkdir()
    src.write_bytes(b"scan")
    out = {
        "same": src,
        "dotdot": tmp_path / "in" / ".." / "in" / "scan.nii.gz",
        "hardlink": tmp_path / "link.nii.gz",
        "symlink": tmp_path / "alias.nii.gz",
        "inside_series": tmp_path / "in" / "sr.nii.gz",
    }[how]
    if how == "hardlink":
        os.link(src, out)
    if how == "symlink":
        out.symlink_to(src)
    inputs = [src.parent] if how == "inside_series" else [src]
    with pytest.raises(MedsrError, match="is the input"):
        check_outputs(inputs, [out])
    assert src.read_bytes() == b"scan"


def test_output_checks_before_work(tmp_path):
    src = tmp_path / "scan.nii.gz"
    src.write_bytes(b"x")
    check_outputs([src], [tmp_path / "new" / "deeper" / "sr.nii.gz"])  # folders to be created are fine
    with pytest.raises(MedsrError, match="is a folder"):
        check_outputs([src], [tmp_path])
    with pytest.raises(MedsrError, match="unsupported output type"):
        check_outputs([src], [tmp_path / "sr.png"])
    check_outputs([src], [tmp_path / "sr_series"], dicom_inputs=[True])  # a new DICOM series folder
    check_outputs([src], [tmp_path / "sr.dcm"], dicom_inputs=[True])
    (tmp_path / "old_series").mkdir()
    with pytest.raises(MedsrError, match="already exists"):
        check_outputs([src], [tmp_path / "old_series"], dicom_inputs=[True])


def test_a_false_flag_written_as_text_is_refused(tmp_path):
    """``python -m monai.bundle`` (fire) passes ``false`` as the string 'false', which a bool key would read as
    true: refused in one line; ``False``/``True``/``true`` pass."""
    import json

    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"augment": False, "net": {"residual_interp": True}, "name": "x"}))
    base = ["run", "training", "--config_file", str(cfg)]
    for text in ("false", "no", "off", "FALSE"):
        with pytest.raises(MedsrError, match=rf"override --augment {text}: .* counts as true; write --augment False"):
            check_overrides(argv=[*base, "--augment", text])
    with pytest.raises(MedsrError, match="--net#residual_interp False"):
        check_overrides(argv=[*base, "--net#residual_interp=false"])
    for ok in ("False", "True", "true", "1"):
        assert check_overrides(argv=[*base, "--augment", ok]) == []
    assert check_overrides(argv=[*base, "--name", "false"]) == []  # a text key may be 'false'


def test_a_medsr_error_inside_a_library_error_is_the_one_shown():
    """The outermost MedsrError wins, even under another library's error; its exit code is the command's."""
    from medsr.pipeline.engines.checkpoint import NetworkMismatchError

    inner = NetworkMismatchError("generator weights 'w.pt' do not fit ESPCN(...)")
    try:
        try:
            raise inner
        except ValueError as err:
            raise TypeError("a library's own wrapper") from err
    except TypeError as outer:
        assert user_error(outer) is inner
        assert format_error(outer) == "error: generator weights 'w.pt' do not fit ESPCN(...)"
        assert exit_code(outer) == 2
    assert exit_code(FileNotFoundError("x")) == 2 and exit_code(MedsrError("x")) == exit_code(TypeError()) == 1


def test_stats_handler_keeps_the_epoch_line_and_leaves_errors_to_the_entry_point():
    """The bundles' StatsHandler (:class:`QuietStatsHandler`) prints MONAI's ``Epoch[1] Metrics -- val_psnr: …``
    line; an error in the run is then printed once, as one line, by the entry point (no traceback logged)."""
    import subprocess
    import sys

    code = """
import logging, sys
from ignite.engine import Engine, Events
from medsr.pipeline.errors import install_excepthook
from medsr.pipeline.handlers import QuietStatsHandler
logging.basicConfig(stream=sys.stdout, level=logging.INFO)  # as a bundle's logging.conf
install_excepthook(force=True)
engine = Engine(lambda e, b: None)
@engine.on(Events.EPOCH_COMPLETED)
def _metrics(e):
    e.state.metrics["val_psnr"] = 31.5
    if e.state.epoch == 2:
        raise ValueError("image 'x.nii.gz': contains NaN")
QuietStatsHandler(iteration_log=False).attach(engine)
engine.run([0], max_epochs=2)
"""
    env = dict(os.environ)
    env.pop("MEDSR_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Epoch[1] Metrics -- val_psnr: 31.5000" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["medsr: error: image 'x.nii.gz': contains NaN [MEDSR_DEBUG=1 for the traceback]"], proc.stderr
