"""The training corpus: real images of installed packages, validation by whole held-out sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsr.pipeline.data import load_datalist
from medsr.pipeline.data.corpus import SOURCES, ensure_corpus_dataset

pytestmark = pytest.mark.slow  # builds the demo and the corpus (about 10 s on a quiet core)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return ensure_corpus_dataset(tmp_path_factory.mktemp("medsr_cache"), progress=False)


def test_sources_are_held_out_whole_and_the_demo_test_split_stays_out(corpus):
    path = corpus["datalist_2d"]
    train, val, test = (load_datalist(path, s) for s in ("training", "validation", "test"))
    held_out = {n for n, s in SOURCES.items() if s["split"] == "validation"}
    assert {e["source"] for e in val} == held_out
    assert not held_out & {e["source"] for e in train}
    demo_sources = {"mni152_2009a_t1", "skimage_retina", "skimage_ihc"}  # demo entries keep their own source
    expected = {n for n, s in SOURCES.items() if s["split"] == "training" and s["path"] is not None} | demo_sources
    assert {e["source"] for e in train} == expected
    files = lambda entries: {e["image"] for e in entries}  # noqa: E731
    assert not files(train) & files(val) and not files(train) & files(test)
    demo_test = load_datalist(Path(corpus["root"]).parent / "demo" / "datalist_2d.json", "test")
    assert files(test) == files(demo_test)  # the in-distribution test split, untouched
    assert all(Path(e["image"]).is_file() and Path(e["mask"]).is_file() for e in train + val)


def test_manifest_lists_licence_split_and_weight_and_shares_follow_the_weights(corpus):
    sources = corpus["manifest"]["sources"]
    assert set(sources) == set(SOURCES)
    for name, s in sources.items():
        assert s["licence"] and s["split"] in ("training", "validation") and s["items"] >= 1
        if s["split"] == "training":
            assert s["training_share"] == pytest.approx(SOURCES[name]["weight"], abs=0.03)
    train = json.loads(Path(corpus["datalist_2d"]).read_text())["training"]
    assert sum(s["training_share"] for s in sources.values()) == pytest.approx(1.0, abs=0.01)
    assert len(train) == sum(s["items"] * s["repeats"] for s in sources.values() if s["split"] == "training")


def test_second_call_is_a_no_op(corpus):
    again = ensure_corpus_dataset(Path(corpus["root"]).parent, progress=False)
    assert not again["built"] and again["datalist_2d"] == corpus["datalist_2d"]


def test_weighted_datalist_follows_the_weights_and_keeps_validation_and_test(corpus, capsys):
    from collections import Counter

    from medsr.pipeline.data.corpus import WEIGHTED_ITEMS, weighted_datalist

    base = json.loads(Path(corpus["datalist_2d"]).read_text())
    weights = {"mni152_2009a_t1": 0.1, "photos": 0.45}
    path = weighted_datalist(corpus["datalist_2d"], weights)
    assert path.parent == Path(corpus["datalist_2d"]).parent and path.name.startswith("datalist_2d_weighted_")
    data = json.loads(path.read_text())
    assert data["validation"] == base["validation"] and data["test"] == base["test"]
    share = {k: v / len(data["training"]) for k, v in Counter(e["source"] for e in data["training"]).items()}
    old = {k: v / len(base["training"]) for k, v in Counter(e["source"] for e in base["training"]).items()}
    assert share.keys() == old.keys()
    # each source's items repeat a whole number of times, so a share lands within a few hundredths of its weight
    assert share["mni152_2009a_t1"] == pytest.approx(0.1, abs=0.05) and share["photos"] == pytest.approx(0.45, abs=0.05)
    rest = 1 - old["mni152_2009a_t1"] - old["photos"]  # the unnamed sources keep their relative shares
    for name in share.keys() - weights.keys():
        assert share[name] == pytest.approx(old[name] * (1 - 0.55) / rest, abs=0.03), name
    assert abs(len(data["training"]) - WEIGHTED_ITEMS) < 0.15 * WEIGHTED_ITEMS
    assert weighted_datalist(corpus["datalist_2d"], dict(weights)) == path  # same weights, same file
    assert json.loads(path.read_text()) == data
    from medsr.pipeline.cli import main

    root = str(Path(corpus["root"]).parent)
    assert (
        main(["demo", "--root", root, "--corpus", "--no-progress", "--weights", "photos=0.45,mni152_2009a_t1=0.1"]) == 0
    )
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(path)  # the command prints the same file last
    with pytest.raises(ValueError, match="'mni152' is not a training source"):
        weighted_datalist(corpus["datalist_2d"], {"mni152": 0.1})
    with pytest.raises(ValueError, match="'skimage_camera' is not a training source"):  # held out stays held out
        weighted_datalist(corpus["datalist_2d"], {"skimage_camera": 0.5})


@pytest.mark.parametrize("text", ["photos", "photos=", "=0.2", "photos=-1", "photos=inf", "photos=0.1,photos=0.2",
                                  "photos=__import__('os').getcwd()"])  # fmt: skip
def test_weights_parser_rejects_anything_but_plain_numbers(text):
    from medsr.pipeline.data.corpus import parse_weights

    with pytest.raises(ValueError, match="--weights: "):
        parse_weights(text)


def test_cli_weights_without_corpus_is_one_line(capsys):
    from medsr.pipeline.cli import main

    assert main(["demo", "--weights", "photos=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["medsr demo: error: --weights builds on the corpus: add --corpus"]


def test_no_two_corpus_images_share_their_pixels(corpus):
    # corpus version 1 held out nibabel's 0.dcm and 1.dcm: one synthetic ramp image twice, which outweighed the
    # real held-out images in the checkpoint choice
    import hashlib

    from medsr.pipeline.data.files import read_array

    data = json.loads(Path(corpus["datalist_2d"]).read_text())
    folder = Path(corpus["datalist_2d"]).parent
    # the MNI template is left-right symmetric, so its sagittal slices mirrored about the midline are equal
    images = {e["image"] for split in ("training", "validation") for e in data[split] if e.get("plane") != "sagittal"}
    seen: dict[str, str] = {}
    for image in sorted(images):
        arr, _ = read_array(folder / image)
        digest = hashlib.sha256(arr.tobytes()).hexdigest()
        assert digest not in seen, f"{image} has the same pixels as {seen[digest]}"
        seen[digest] = image
    assert "nibabel_dicom" not in {e["source"] for split in ("training", "validation") for e in data[split]}


def test_multiscale_datalist_adds_antialiased_downscaled_copies_after_each_entry(corpus, capsys):
    import nibabel as nib
    import torch
    import torch.nn.functional as F

    from medsr.pipeline.data.corpus import MIN_SIZE, multiscale_datalist
    from medsr.pipeline.data.files import read_array

    base = Path(corpus["datalist_2d"])
    data = json.loads(base.read_text())
    by_source = {}
    for e in data["training"]:
        by_source.setdefault(e["source"], e)
    picked = [by_source["mni152_2009a_t1"], by_source["photos"], by_source["dipy_s0_10slices"]]  # 2D NIfTI, PNG, EPI
    small = {**data, "training": picked + picked[:1], "numTraining": 4}  # a repeated entry keeps its repeats
    mini = base.with_name("datalist_2d_mini.json")
    mini.write_text(json.dumps(small))
    path = multiscale_datalist(mini, (1.5, 2.0))
    out = json.loads(path.read_text())
    assert out["validation"] == data["validation"] and out["test"] == data["test"]
    sizes = [read_array(base.parent / e["image"], luminance=True)[0].shape[:2] for e in picked]
    kept = [[f for f in (1.5, 2.0) if min(round(n / f) for n in s) >= MIN_SIZE] for s in sizes]
    assert kept[2] == [] and kept[0] and kept[1] == [1.5, 2.0]  # no copy of the small EPI slice; the photo has two
    expected = []
    for e, fs in zip(picked + picked[:1], kept + kept[:1]):
        expected += [(e["image"], None)] + [(e["image"], f) for f in fs]
    got = [(e["image"], None) if "downscale" not in e else (None, e["downscale"]) for e in out["training"]]
    assert [g[1] for g in got] == [x[1] for x in expected]
    for entry, (src, f) in zip(out["training"], expected):
        if f is None:
            assert entry == next(p for p in picked if p["image"] == src)
            continue
        original = next(p for p in picked if p["image"] == src)
        assert (
            "label" not in entry and entry["source"] == original["source"] and entry["patient"] == original["patient"]
        )
        hr, _ = read_array(base.parent / original["image"], luminance=True)
        hr = torch.as_tensor(np.asarray(hr, dtype=np.float32)).reshape(1, 1, *hr.shape[:2])
        size = tuple(round(n / f) for n in hr.shape[-2:])
        want = F.interpolate(hr, size=size, mode="bicubic", antialias=True, align_corners=False)[0, 0]
        img = nib.load(str(path.parent / entry["image"]))
        assert img.shape[:2] == size
        assert np.allclose(
            np.asarray(img.dataobj, dtype=np.float32).reshape(size), want.numpy(), atol=1e-3 * float(want.max())
        )
        zooms = img.header.get_zooms()[:2]
        ref = (
            nib.load(str(base.parent / original["image"])).header.get_zooms()[:2]
            if original["image"].endswith(".gz")
            else (1.0, 1.0)
        )
        assert np.allclose(zooms, [r * n / s for r, n, s in zip(ref, hr.shape[-2:], size)], rtol=1e-4)
        mask = nib.load(str(path.parent / entry["mask"]))
        assert mask.shape[:2] == size and set(np.unique(np.asarray(mask.dataobj))) <= {0.0, 1.0}
    stamp = path.stat().st_mtime_ns
    assert multiscale_datalist(mini, (1.5, 2.0)) == path and path.stat().st_mtime_ns == stamp  # reused
    assert multiscale_datalist(mini, (2.0,)) != path
    with pytest.raises(ValueError, match="--multiscale: give at least one factor"):
        multiscale_datalist(mini, ())
    from medsr.pipeline.cli import main

    root = str(Path(corpus["root"]).parent)
    assert main(["demo", "--root", root, "--corpus", "--no-progress", "--multiscale", "2"]) == 0
    printed = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == multiscale_datalist(base, (2.0,))  # the command writes the same file and prints it last
    assert len(json.loads(printed.read_text())["training"]) > len(data["training"])


@pytest.mark.parametrize("text", ["1", "0.5", "x", "2,2", "nan", "9", "__import__('os').getcwd()", ""])
def test_multiscale_parser_takes_plain_factors_above_one(text):
    from medsr.pipeline.data.corpus import parse_factors

    with pytest.raises(ValueError, match="--multiscale: "):
        parse_factors(text)
    assert parse_factors("1.5, 2") == (1.5, 2.0)


def test_cli_multiscale_needs_the_corpus_and_plain_factors(capsys):
    from medsr.pipeline.cli import main

    assert main(["demo", "--multiscale", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "medsr demo: error: --multiscale builds on the corpus: add --corpus"
    ]
    assert main(["demo", "--corpus", "--multiscale", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medsr demo: error: --multiscale: '0.5' is not a downscaling factor")
