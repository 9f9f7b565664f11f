"""The training corpus: real images of installed packages, validation by whole held-out sources."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert err == ["medsr demo: error: --weights reweights the corpus: add --corpus"]


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
