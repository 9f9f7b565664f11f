"""The MONAI Label app end to end: build (or reuse) its env, serve real bundles on loopback, call the API.

The first run on a machine builds the env (minutes, cached in ~/.cache/medsr or $MEDSR_LABEL_ENV); later
runs reuse it. The datastore holds crops of the MNI152 T1 template (nilearn) with non-identity affines,
a file that is not an image, and the checkpoints are written here from the bundles' own network
definitions, so the server's output can be compared with the same model run in this process.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

MODELS = "espcn,espcn3d=espcn,vdsr"  # vdsr gets no checkpoint: it must be skipped
OVERRIDES = {"espcn3d": {"spatial_dims": 3, "scale": [2, 2, 1], "roi_size": 16}}
TRAINED = ("espcn", "espcn3d")
#: an image id that runs ``touch $MEDSR_MARKER`` if any part of the server evaluates it as Python
HOSTILE = "$__import__('os').system('touch $MEDSR_MARKER') or 'x' #a::b"


def _mni_t1() -> np.ndarray:
    import nilearn

    path = Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)


def _extent(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates of the outer voxel corners (edges, not centres): the physical field of view."""
    nd = len(shape)
    lo = np.full(3, 0.0)
    hi = np.full(3, 0.0)
    lo[:nd] = -0.5
    hi[:nd] = np.asarray(shape) - 0.5
    pts = np.stack([lo, hi], 1)  # (3, 2)
    return (affine[:3, :3] @ pts + affine[:3, 3:4]).T


def _post(url: str, timeout: float = 180.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _get_json(url: str, timeout: float = 60.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


@pytest.fixture(scope="module")
def label_env():
    from medsr.pipeline.label_app.env import ensure_label_env

    return ensure_label_env()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Datastore (two real MNI crops + a non-image), run folders with checkpoints, reference models."""
    from medsr.pipeline.label_app.models import discover_models

    root = tmp_path_factory.mktemp("label")
    store = root / "datastore"
    store.mkdir()
    t1 = _mni_t1()
    vol = t1[80:104, 100:120, 90:96]  # 24 x 20 x 6 of real brain
    aff3 = np.array([[0.0, 0.0, -2.5, 40.0], [0.0, 1.2, 0.0, -30.0], [1.5, 0.0, 0.0, 12.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(vol, aff3), str(store / "brain3d.nii.gz"))
    sl = t1[70:94, 90:110, 95]  # one axial slice, 24 x 20
    aff2 = np.diag([0.8, 0.6, 1.0, 1.0])
    aff2[:3, 3] = (-10.0, 5.0, 0.0)
    nib.save(nib.Nifti1Image(sl, aff2), str(store / "brain2d.nii.gz"))
    (store / "notes.nii.gz").write_text("this is a radiology note, not an image\n")
    nib.save(nib.Nifti1Image(sl, aff2), str(store / f"{HOSTILE}.nii.gz"))
    os.environ["MEDSR_MARKER"] = str(root / "MARKER")  # inherited by the server process

    runs = root / "runs"
    torch.manual_seed(0)
    specs = discover_models(models=MODELS, runs_dir=runs, overrides=OVERRIDES, allow_untrained=True)
    for name in TRAINED:
        net = specs[name].build_network()
        for p in net.parameters():  # distinct, non-default weights so a wrong load shows
            p.data.normal_(0.0, 0.1)
        ckpt = runs / name / "checkpoints"
        ckpt.mkdir(parents=True)
        torch.save(net.state_dict(), ckpt / "model_best.pt")
    return {"root": root, "store": store, "runs": runs, "aff3": aff3, "aff2": aff2}


@pytest.fixture(scope="module")
def server(label_env, workspace):
    from medsr.pipeline.label_app.server import free_port, start_server, stop_server, wait_ready

    port = free_port()
    work = workspace["root"] / "work"
    conf = {"models": MODELS, "overrides": OVERRIDES, "runs_dir": str(workspace["runs"])}
    log = work / "server.log"
    proc = start_server(workspace["store"], port, work, label_env, "127.0.0.1", conf, log)
    try:
        url = f"http://127.0.0.1:{port}"
        info = wait_ready(url, proc, timeout=240, log_file=log)
        yield {"url": url, "info": info, "log": log, "proc": proc}
    finally:
        code = stop_server(proc, timeout=20)
        assert code is not None, "server process did not stop"
        with pytest.raises(urllib.error.URLError):  # nothing answers on the port any more
            urllib.request.urlopen(f"http://127.0.0.1:{port}/info/", timeout=5)


def _reference(workspace, name: str, image: str) -> np.ndarray:
    """The same model, checkpoint and preprocessing, run here with medsr.pipeline.inference."""
    from medsr.pipeline.inference import SRFileInference, SRSlidingWindowInferer, invert_intensity
    from medsr.pipeline.label_app.models import discover_models

    spec = discover_models(models=MODELS, runs_dir=workspace["runs"], overrides=OVERRIDES)[name]
    runner = SRFileInference(
        spec.load_network(),
        [str(workspace["store"] / image)],
        workspace["root"] / "ref",
        spec.build_preprocessing(),
        SRSlidingWindowInferer(spec.roi_size, spec.scale, spec.sw_batch_size, spec.overlap),
        postprocessing=invert_intensity,
        spatial_dims=spec.spatial_dims,
        progress=False,
    )
    out, _ = runner.upscale(str(workspace["store"] / image))
    return np.asarray(out[0])


def _infer(server, workspace, model: str, image: str) -> nib.Nifti1Image:
    code, body = _post(f"{server['url']}/infer/{model}?image={image}&output=image")
    assert code == 200, body[:500]
    path = workspace["root"] / f"result_{model}_{image}.nii.gz"
    path.write_bytes(body)
    return nib.load(str(path))


def test_info_lists_models_with_scale_and_dimension(server):
    models = server["info"]["models"]
    assert set(models) == set(TRAINED), models.keys()  # vdsr has no checkpoint: skipped, not served
    assert models["espcn"]["dimension"] == 2 and models["espcn"]["scale"] == [4, 4]
    assert models["espcn3d"]["dimension"] == 3 and models["espcn3d"]["scale"] == [2, 2, 1]
    assert all(m["weights"] == "trained" and m["checkpoint"].endswith("model_best.pt") for m in models.values())
    assert "model 'vdsr' skipped" in server["log"].read_text()


@pytest.mark.parametrize(
    "model,image,scale",
    [("espcn", "brain2d", (4, 4)), ("espcn3d", "brain3d", (2, 2, 1)), ("espcn", "brain3d", (4, 4, 1))],
    ids=["2d", "3d", "2d-model-on-3d-volume"],
)
def test_infer_returns_hr_geometry(server, workspace, model, image, scale):
    src = nib.load(str(workspace["store"] / f"{image}.nii.gz"))
    out = _infer(server, workspace, model, image)
    nd = len(src.shape)
    assert out.shape == tuple(s * f for s, f in zip(src.shape, scale))  # scaled, no channel axis
    np.testing.assert_allclose(out.header.get_zooms()[:nd], np.asarray(src.header.get_zooms()[:nd]) / scale, rtol=1e-5)
    np.testing.assert_allclose(_extent(out.affine, out.shape), _extent(src.affine, src.shape), atol=1e-4)
    data = out.get_fdata()
    assert np.isfinite(data).all() and data.std() > 0


@pytest.mark.parametrize("model,image", [("espcn", "brain2d"), ("espcn3d", "brain3d")], ids=["2d", "3d"])
def test_infer_matches_local_model_with_same_checkpoint(server, workspace, model, image):
    out = _infer(server, workspace, model, image).get_fdata()
    ref = _reference(workspace, model, f"{image}.nii.gz")
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3 * (np.abs(ref).max() + 1))


def test_bad_requests_get_clear_errors_and_server_keeps_serving(server, workspace):
    url = server["url"]
    code, body = _post(f"{url}/infer/no_such_model?image=brain2d&output=image")
    assert code == 404
    detail = json.loads(body)["detail"]
    assert "no_such_model" in detail and "espcn" in detail

    code, body = _post(f"{url}/infer/espcn?image=notes&output=image")
    assert code == 422
    detail = json.loads(body)["detail"]
    assert "notes.nii.gz" in detail and "cannot be read as an image" in detail

    code, body = _post(f"{url}/infer/espcn?image=missing_scan&output=image")
    assert code == 404 and "missing_scan" in json.loads(body)["detail"]

    code, body = _post(f"{url}/infer/espcn3d?image=brain2d&output=image")
    assert code == 422 and "2D image" in json.loads(body)["detail"]

    assert server["proc"].poll() is None
    assert set(_get_json(f"{url}/info/")["models"]) == set(TRAINED)
    assert _infer(server, workspace, "espcn", "brain2d").shape == (96, 80)


def test_hostile_image_id_is_read_literally(server, workspace):
    """An image id holding ``$…``, ``#`` and ``::`` is a file name to the server, never code or a config id."""
    code, body = _post(f"{server['url']}/infer/espcn?image={urllib.parse.quote(HOSTILE, safe='')}&output=image")
    assert code == 200, body[:500]
    path = workspace["root"] / "result_hostile.nii.gz"
    path.write_bytes(body)
    assert nib.load(str(path)).shape == (96, 80)
    assert not (workspace["root"] / "MARKER").exists(), "the image id was evaluated as code"


@pytest.fixture(scope="module")
def default_server(label_env, workspace):
    """``medsr label serve --datastore D`` with its defaults (the app config the command builds), another port."""
    from medsr.pipeline.cli import build_parser
    from medsr.pipeline.label_app.commands import _serve_conf
    from medsr.pipeline.label_app.server import free_port, start_server, stop_server, wait_ready

    args = build_parser().parse_args(["label", "serve", "--datastore", str(workspace["store"])])
    port = free_port()
    work = workspace["root"] / "work_default"
    log = work / "server.log"
    proc = start_server(workspace["store"], port, work, label_env, "127.0.0.1", _serve_conf(args), log)
    try:
        url = f"http://127.0.0.1:{port}"
        yield {"url": url, "info": wait_ready(url, proc, timeout=240, log_file=log), "log": log}
    finally:
        stop_server(proc, timeout=20)


def test_default_serve_lists_every_shipped_model_with_its_true_scale(default_server):
    from medsr.pipeline.models import shipped_models

    models = default_server["info"]["models"]
    shipped = shipped_models()
    assert {m["name"] for m in shipped} <= set(models), sorted(models)
    for m in shipped:
        served = models[m["name"]]
        assert served["scale"] == m["scale"] and served["dimension"] == m["spatial_dims"], (m["name"], served)
        assert served["type"] == "others" and served["checkpoint"].endswith(Path(m["path"]).name)


def _slicer_console_http_part():
    """The README's 3D Slicer console snippet up to ``import slicer``: the part that talks to the server."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- slicer-console -->\n```python\n", 1)[1].split("```", 1)[0]
    code = block.split("\nimport slicer\n", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md (slicer console)", "exec"), namespace)  # noqa: S102 - our own README
    return namespace["medsr_infer"]


@pytest.mark.parametrize(
    "model,image,scale",
    [("rdn_x2", "brain2d", (2, 2)), ("rdn_3d_x1x1x4", "brain3d", (1, 1, 4)), ("rdn_x2", "brain3d", (2, 2, 1))],
    ids=["2d", "3d", "2d-model-on-3d-volume"],
)
def test_readme_slicer_snippet_posts_a_file_and_gets_hr_geometry(
    default_server, workspace, tmp_path, model, image, scale
):
    """What the README's Slicer snippet sends (a file upload to /infer/<model>) comes back scaled, with the
    spacing divided by the model's scale and the same field of view."""
    medsr_infer = _slicer_console_http_part()
    src_path = workspace["store"] / f"{image}.nii.gz"
    out = nib.load(medsr_infer(default_server["url"], model, str(src_path), str(tmp_path / "sr.nii.gz")))
    src = nib.load(str(src_path))
    nd = len(src.shape)
    assert out.shape == tuple(s * f for s, f in zip(src.shape, scale))
    np.testing.assert_allclose(out.header.get_zooms()[:nd], np.asarray(src.header.get_zooms()[:nd]) / scale, rtol=1e-5)
    np.testing.assert_allclose(_extent(out.affine, out.shape), _extent(src.affine, src.shape), atol=1e-4)
    assert np.isfinite(out.get_fdata()).all() and out.get_fdata().std() > 0
    with pytest.raises(RuntimeError, match="HTTP 404"):
        medsr_infer(default_server["url"], "no_such_model", str(src_path), str(tmp_path / "x.nii.gz"))
