"""The learned prior of ``medsr selfsr``: the shipped file, its heads, ``--init`` and the upscale model list."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from medsr.pipeline.selfsr.model import DEFAULT_NETWORK, build_model
from medsr.pipeline.selfsr.prior import (
    HEAD,
    PRIOR_FACTORS,
    PRIOR_FILE,
    PRIOR_SOURCES,
    load_prior,
    prior_fits,
    prior_network,
    read_prior,
)

pytestmark = pytest.mark.skipif(not PRIOR_FILE.is_file(), reason="bundles/selfsr/models/prior.pt is not shipped")


@pytest.fixture(scope="module")
def record():
    return read_prior(PRIOR_FILE)


def test_shipped_prior_is_small_self_describing_and_has_every_head(record):
    assert PRIOR_FILE.stat().st_size <= 25 * 1024 * 1024
    assert record["format"] == "medsr-model/1" and record["role"] == "prior" and record["bundle"] == "selfsr"
    assert record["factors"] == list(PRIOR_FACTORS) == [2, 3, 4, 5, 6]
    assert sorted(int(k) for k in record["heads"]) == [2, 3, 4, 5, 6]
    assert record["network"]["target"] == "medsr.networks.EDSR"
    assert {k: record["network"]["args"][k] for k in ("num_features", "num_blocks")} == {
        k: DEFAULT_NETWORK[k] for k in ("num_features", "num_blocks")
    }
    assert "python -m medsr.pipeline.selfsr.prior" in record["training_command"]
    assert all(source in record["trained_on"] for source in PRIOR_SOURCES) and record["training"]["steps"] > 1000
    assert "never MNI sagittal/coronal planes nor the external evaluation set" in record["trained_on"]
    assert not any(k.startswith(HEAD + ".") for k in record["state_dict"])  # heads live apart from the body
    for s in PRIOR_FACTORS:
        net = prior_network(record, s)
        with torch.no_grad():
            y = net(torch.rand(1, 1, 8, 6))
        assert y.shape == (1, 1, 8, 6 * s)
        torch.testing.assert_close(net.state_dict()[f"{HEAD}.weight"], record["heads"][str(s)]["weight"].float())


def test_a_factor_without_a_head_warns_and_starts_at_the_interpolation(record):
    net = build_model(7, None, "fp32")
    assert prior_fits(net, record)
    with pytest.warns(UserWarning, match="no head for x7"):
        load_prior(net, record, 7)
    state = net.state_dict()
    assert float(state[f"{HEAD}.weight"].abs().sum()) == 0.0 and float(state[f"{HEAD}.bias"].abs().sum()) == 0.0
    body = next(k for k in record["state_dict"] if k.startswith("body."))
    torch.testing.assert_close(state[body], record["state_dict"][body].float())
    x = torch.rand(1, 1, 6, 5)
    with torch.no_grad():  # a zero sub-pixel conv adds nothing to the cubic residual base
        y = net.eval()(x)
    base = torch.nn.functional.interpolate(x, scale_factor=(1, 7), mode="bicubic", align_corners=False)
    assert y.shape == base.shape and float((y - base).abs().max()) < 1e-4


def test_the_prior_is_not_an_upscale_model(tmp_path, record):
    from medsr.pipeline.models import shipped_models
    from medsr.pipeline.zoo import verify_model_file

    assert "selfsr_prior" not in [m["name"] for m in shipped_models()]
    (tmp_path / "selfsr" / "models").mkdir(parents=True)
    shutil.copy(PRIOR_FILE, tmp_path / "selfsr" / "models" / "prior.pt")
    assert shipped_models(tmp_path) == []
    assert "selfsr prior" in verify_model_file(tmp_path / "selfsr" / "models" / "prior.pt")


@pytest.fixture(scope="module")
def tiny_mni(tmp_path_factory):
    """A real crop of the demo MNI T1 (64 x 64 x 40 at 1 mm) and the same degraded to 1 x 1 x 4 mm."""
    from monai.data import MetaTensor

    from medsr.pipeline.data.demo import demo_sources
    from medsr.transforms import SimulateLowResolution

    tmp_path = tmp_path_factory.mktemp("mni")
    img = nib.load(demo_sources()["mni_t1"]["path"])
    data = np.asarray(img.dataobj, dtype=np.float32)[66:130, 76:140, 74:114]
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), str(ref))
    lr = SimulateLowResolution((None, None, 4.0), profile="gaussian")(
        MetaTensor(torch.from_numpy(data)[None], affine=torch.as_tensor(img.affine))
    )
    src = tmp_path / "lr.nii.gz"
    nib.save(nib.Nifti1Image(lr[0].numpy(), lr.affine.numpy()), str(src))
    return src, ref


def test_init_prior_starts_better_than_scratch_after_no_training(tmp_path, capsys, tiny_mni):
    from medsr.pipeline.selfsr.run import model_for, prepare, score_against, write_result

    src, ref = tiny_mni
    scan = prepare(src)
    assert scan["grid"].scale == 4
    scores = {}
    for init in ("prior", "scratch"):
        torch.manual_seed(0)
        model = model_for(scan, None, "fp32", init=init)
        assert f"selfsr: init {init}" in capsys.readouterr().out
        with torch.no_grad():
            rep = write_result(scan, model.eval(), tmp_path / f"{init}.nii.gz", threads=1)
        scores[init] = (score_against(tmp_path / f"{init}.nii.gz", ref)["psnr_brain"], rep["data_consistency"])
    assert scores["prior"][0] > scores["scratch"][0] + 0.5, scores
    assert scores["prior"][1]["medsr_rmse"] < scores["scratch"][1]["medsr_rmse"], scores


def test_init_falls_back_to_scratch_for_another_network_and_rejects_bad_values(tmp_path, capsys, tiny_mni):
    from medsr.pipeline.cli import main
    from medsr.pipeline.selfsr.run import model_for, prepare

    src, _ = tiny_mni
    scan = prepare(src)
    model_for(scan, {"name": "slicenet", "num_features": 8, "num_blocks": 1}, "fp32", init="prior")
    assert "selfsr: init scratch (the network is not the prior's" in capsys.readouterr().out
    with pytest.raises(ValueError, match="^init: expected 'prior' or 'scratch', got 'warm'$"):
        model_for(scan, None, "fp32", init="warm")
    with pytest.raises(ValueError, match="no such file"):
        model_for(scan, None, "fp32", init="prior", prior=tmp_path / "missing.pt")
    with pytest.raises(SystemExit) as exc:
        main(["selfsr", str(src), str(tmp_path / "o.nii.gz"), "--init", "warm"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "argument --init: invalid choice: 'warm'" in err[-1]


def test_the_prior_trainer_writes_a_loadable_prior_and_refuses_bad_options(tmp_path, capsys):
    from medsr.pipeline.selfsr.prior import main

    out = tmp_path / "prior.pt"
    assert main(["--minutes", "0.05", "--threads", "1", "--batch-size", "2", "--out", str(out)]) == 0
    rec = read_prior(out)
    # the budget counts from the start, data loading included: a 3 s budget may end before the first step
    assert rec["training"]["steps"] >= 0 and "--minutes 0.05 --threads 1 --batch-size 2" in rec["training_command"]
    net = prior_network(rec, 4)
    assert net(torch.rand(1, 1, 16, 8)).shape[-2:] == (16, 32)
    assert main(["--minutes", "0", "--out", str(tmp_path / "other.pt")]) == 2
    assert "--minutes must be > 0" in capsys.readouterr().err and not (tmp_path / "other.pt").exists()
