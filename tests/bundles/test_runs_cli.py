"""Run folders end to end: two runs of a bundle, ``medsr upscale --bundle`` without overrides, the CLI's help."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_bundles import ROOT, SHAPES, train_overrides, write_cases  # noqa: E402

from medsr.pipeline.cli import build_parser, main  # noqa: E402


def test_every_command_explains_itself_and_takes_both_spellings(capsys):
    parser = build_parser()
    for name in ("train", "evaluate", "upscale", "bundles"):
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text and "medsr " + name in text
    args = parser.parse_args(["train", "espcn", "--epoch_length", "3", "--batch-size", "2", "--spatial_dims", "3"])
    assert (args.epoch_length, args.batch_size, args.spatial_dims) == (3, 2, 3)
    args = parser.parse_args(["upscale", "a", "b", "--bundle", "espcn", "--reuse-memory", "--roi_size", "16"])
    assert args.reuse_memory and args.roi_size == 16
    assert "--epoch-length" in parser._subparsers._group_actions[0].choices["train"].format_help()


@pytest.mark.slow
def test_two_runs_two_folders_and_upscale_needs_no_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MEDSR_RUN_NAME", raising=False)
    datalist = write_cases(tmp_path / "cases", 2)
    runs = tmp_path / "runs" / "espcn"
    wide = {"num_features": [12, 6]}  # not the bundle's default widths (64, 32)
    base = train_overrides("espcn", datalist, runs)
    base.update(wide)
    base.pop("output_dir")
    base.pop("mlflow_tracking")
    sets = [x for k, v in base.items() for x in ("--set", f"{k}={v!r}")]
    assert main(["train", "espcn", "--output-dir", str(runs), *sets, "--tracking", "none"]) == 0
    assert main(["train", "espcn", "--output-dir", str(runs), *sets, "--set", "lr=0.0005", "--tracking", "none"]) == 0
    assert not (runs / "mlruns.db").exists()  # --tracking none: no MLflow run
    folders = sorted(p for p in runs.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(folders) == 2, folders
    for f in folders:  # each run complete
        assert (f / "checkpoints" / "best_network.pt").is_file() and (f / "metrics.csv").is_file()
        assert list((f / "checkpoints").glob("checkpoint_*.pt")) and list((f / "images").glob("*.png"))
    assert os.readlink(runs / "latest") == max(folders, key=lambda p: p.stat().st_mtime).name

    capsys.readouterr()
    src = datalist.parent / "case2d_2.nii.gz"
    out = tmp_path / "sr.nii.gz"
    assert (
        main(["upscale", str(src), str(out), "--bundle", "espcn", "--output-dir", str(runs), "--roi-size", "16"]) == 0
    )
    assert nib.load(str(out)).shape == tuple(2 * s for s in SHAPES[2])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(str(out)) and "80x72" in last and "best_network.pt" in last

    capsys.readouterr()
    assert main(["bundles", "espcn", "--runs-root", str(tmp_path / "runs")]) == 0
    shown = capsys.readouterr().out
    assert "ESPCN" in shown and "runs in" in shown and shown.count("best_network.pt") == 2 and "(latest)" in shown
    # an explicit width that contradicts a weights-only file: one line, exit code 2
    import torch

    from medsr.networks import ESPCN

    torch.save(ESPCN(2, 1, 1, 2, num_features=(12, 6)).state_dict(), tmp_path / "w.pt")
    capsys.readouterr()
    code = main(["upscale", str(src), str(out), "--bundle", "espcn", "--checkpoint", str(tmp_path / "w.pt"),
                 "--scale", "2"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "do not fit ESPCN" in err[0]


def test_tracking_settings_default_mlflow_none_and_other_files():
    """``medsr train`` tracks by default with the bundle's own handlers; ``mlflow`` and ``mlflow/tracking.json``
    mean the same; ``none`` switches it off; another settings file replaces it; evaluate.json has none of its own."""
    from medsr.pipeline.bundles import TRACKING_SETTINGS, tracking_settings

    train, evaluate = ROOT / "bundles" / "srcnn" / "train.json", ROOT / "bundles" / "srcnn" / "evaluate.json"
    for given in (None, "mlflow", str(TRACKING_SETTINGS)):
        overrides: dict = {}
        assert tracking_settings(train, given, overrides) is None and overrides == {}
    overrides = {}
    assert tracking_settings(train, "none", overrides) is None and overrides == {"mlflow_tracking": False}
    overrides = {}
    assert tracking_settings(train, "my_settings.json", overrides) == "my_settings.json"
    assert overrides == {"mlflow_tracking": False}
    assert tracking_settings(evaluate, "mlflow", {}) == str(TRACKING_SETTINGS)
    assert tracking_settings(evaluate, None, {}) is None and tracking_settings(evaluate, "none", {}) is None


def test_bundles_name_lists_user_overrides_in_the_spelling_the_bundle_accepts(capsys):
    """``medsr bundles NAME`` lists top-level knobs only (no run ids, no wiring), each value written so that
    ``python -m monai.bundle run ... --KEY VALUE`` (fire) reads back the config's value: ``--augment False``."""
    import shlex

    from fire.parser import DefaultParseValue

    from medsr.pipeline.bundles import describe_bundle, list_bundles, override_text

    for bundle in list_bundles():
        listed = describe_bundle(bundle["name"])["overrides"]
        assert listed and not {"initialize", "training", "inferring", "imports", "bundle_root"} & set(listed)
        for key, value in listed.items():
            (text,) = shlex.split(override_text(value))
            assert DefaultParseValue(text) == value, (bundle["name"], key, text)
    assert main(["bundles", "esrgan_se"]) == 0
    out = capsys.readouterr().out
    assert "    --augment False\n" in out and "    --betas '[0.9, 0.99]'\n" in out and "--initialize" not in out
