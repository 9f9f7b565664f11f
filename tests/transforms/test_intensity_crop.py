"""Intensity normalization (mask, meta, inversion) and mask-aware cropping (ratio, multiples, affine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor, list_data_collate

from medsr.transforms import (
    CTWindow,
    CTWindowd,
    InvertNormalizationd,
    MaskAwareCropd,
    PercentileNormalize,
    PercentileNormalized,
    ZScoreNormalize,
    invert_normalization,
)


def affine(sd):
    a = torch.eye(4, dtype=torch.float64)
    a[0, 0], a[1, 1], a[2, 2] = 0.8, 1.2, 2.5
    a[0, 1] = 0.3
    a[:3, 3] = torch.tensor([-40.0, 12.0, 5.0])
    return a


SHAPES = [pytest.param((20, 24), id="2d"), pytest.param((10, 12, 14), id="3d")]


@pytest.mark.parametrize("shape", SHAPES)
def test_percentile_inside_mask_and_inversion(shape):
    sd = len(shape)
    x = torch.rand(1, *shape) * 100.0
    mask = torch.zeros(1, *shape)
    mask[(0,) + tuple(slice(2, s // 2) for s in shape)] = 1
    x[mask.bool()] += 1000.0  # the masked region lives at very different intensities
    img = MetaTensor(x, affine=affine(sd))
    y = PercentileNormalize(lower=1, upper=99)(img, MetaTensor(mask, affine=affine(sd)))
    inside = x[mask.bool()].numpy()
    lo, hi = np.percentile(inside, [1, 99])
    p = y.meta["medsr_norm"]
    assert p["kind"] == "percentile" and p["lower_value"][0] == pytest.approx(lo, rel=1e-5)
    inner = y[mask.bool()]
    assert float(inner.min()) == 0.0 and float(inner.max()) == 1.0
    assert torch.allclose(y.affine, img.affine)
    back = invert_normalization(y)
    keep = (x >= lo) & (x <= hi)
    torch.testing.assert_close(back[keep], x[keep], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shape", SHAPES)
def test_zscore_and_ct_window(shape):
    sd = len(shape)
    x = MetaTensor(torch.randn(2, *shape) * 30.0 + 50.0, affine=affine(sd))
    z = ZScoreNormalize(channel_wise=True)(x)
    for c in range(2):
        assert float(z[c].mean()) == pytest.approx(0.0, abs=1e-4)
        assert float(z[c].std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    torch.testing.assert_close(invert_normalization(z).as_tensor(), x.as_tensor(), rtol=1e-4, atol=1e-3)
    hu = MetaTensor(torch.tensor([-1000.0, -160.0, 40.0, 240.0, 3000.0]).reshape(1, 5, 1, *([1] * (sd - 2))))
    w = CTWindow(level=40, width=400)(hu)
    np.testing.assert_allclose(w.flatten().numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    back = invert_normalization(w).flatten().numpy()
    np.testing.assert_allclose(back, [-160.0, -160.0, 40.0, 240.0, 240.0], atol=1e-3)  # clipped values stay clipped
    d = CTWindowd("image", 40, 400, mask_key="mask", outside=-1.0)(
        {"image": hu, "mask": MetaTensor(torch.tensor([0, 1, 1, 1, 0.0]).reshape(hu.shape))}
    )
    np.testing.assert_allclose(d["image"].flatten().numpy(), [-1.0, 0.0, 0.5, 1.0, -1.0], atol=1e-6)


def test_invert_batched_prediction_from_collated_meta():
    items = []
    for k in range(2):
        img = MetaTensor(torch.rand(1, 8, 8) * (k + 1) * 100.0 + 10.0)
        items.append(PercentileNormalized("image", lower=0, upper=100)({"image": img}))
    batch = next(iter(DataLoader(items, batch_size=2, collate_fn=list_data_collate)))
    pred = batch["image"].clone()
    out = InvertNormalizationd("pred", meta_src_key="image")({"pred": pred, "image": batch["image"]})["pred"]
    for k in range(2):
        torch.testing.assert_close(out[k].as_tensor(), items[k]["image"].as_tensor() * 0 + invert_normalization(
            items[k]["image"]).as_tensor(), rtol=1e-5, atol=1e-3)  # fmt: skip


def test_normalization_errors():
    img = MetaTensor(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match=r"mask: spatial shape \(8, 9\) does not match image \(8, 8\)"):
        PercentileNormalize()(img, torch.ones(1, 8, 9))
    shifted = MetaTensor(torch.ones(1, 8, 8), affine=torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match="mask: affine does not match image"):
        PercentileNormalize()(img, shifted)
    with pytest.raises(ValueError, match="mask: is empty"):
        ZScoreNormalize()(img, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="contains NaN"):
        ZScoreNormalize()(torch.full((1, 4, 4), float("nan")))


@pytest.mark.parametrize("shape,patch,scale", [((40, 36), (12, 9), (2, 3)), ((20, 18, 24), (8, 6, 8), (1, 1, 4))],
                         ids=["2d", "3d"])  # fmt: skip
def test_mask_aware_crop_ratio_multiples_affine(shape, patch, scale):
    sd = len(shape)
    img = MetaTensor(torch.rand(1, *shape), affine=affine(sd))
    mask = torch.zeros(1, *shape)
    lesion = tuple(slice(s // 2, s // 2 + 2) for s in shape)
    mask[(0,) + lesion] = 1
    body = torch.zeros(1, *shape)
    body[(0,) + tuple(slice(1, s - 1) for s in shape)] = 1
    img = img * body + 0.0
    t = MaskAwareCropd(("image", "mask"), "mask", patch_size=[p + 1 for p in patch], pos_ratio=0.75,
                       scale_factor=scale, num_samples=100, foreground=0.0)  # fmt: skip
    t.set_random_state(0)
    out = t({"image": img, "mask": MetaTensor(mask, affine=affine(sd))})
    assert len(out) == 100
    patch = tuple(((p + 1) // s) * s for p, s in zip(patch, scale))  # rounded down to multiples of the scale
    pos = [o["mask"].meta["medsr_crop"]["positive"] for o in out]
    assert 0.6 < np.mean(pos) < 0.9
    for o in out:
        assert tuple(o["image"].shape[1:]) == patch and all(p % s == 0 for p, s in zip(patch, scale))
        start = o["image"].meta["medsr_crop"]["start"]
        expected = img.affine.clone()
        expected[:sd, 3] = img.affine[:sd, 3] + img.affine[:sd, :sd] @ torch.tensor(start, dtype=torch.float64)
        torch.testing.assert_close(o["image"].affine, expected)
        torch.testing.assert_close(o["mask"].affine, expected)
        ref = img[(slice(None),) + tuple(slice(a, a + p) for a, p in zip(start, patch))]
        assert torch.equal(o["image"].as_tensor(), ref.as_tensor())
        if o["mask"].meta["medsr_crop"]["positive"]:
            assert float(o["mask"].sum()) > 0
        else:  # negatives are centred inside the body
            centre = tuple(a + p // 2 for a, p in zip(start, patch))
            assert float(body[(0,) + centre]) == 1.0 or any(a in (0, s - p) for a, p, s in zip(start, patch, shape))
    t2 = MaskAwareCropd(("image", "mask"), "mask", patch_size=patch, num_samples=3)
    t2.set_random_state(5)
    a = t2({"image": img, "mask": mask})
    t2.set_random_state(5)
    b = t2({"image": img, "mask": mask})
    assert [x["image"].meta["medsr_crop"]["start"] for x in a] == [x["image"].meta["medsr_crop"]["start"] for x in b]


def test_crop_errors():
    img = MetaTensor(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match=r"patch_size: axis 1 size 9 is not a multiple of scale_factor 4"):
        MaskAwareCropd(("image",), None, patch_size=(8, 9), scale_factor=4, force_multiple=False)({"image": img})
    with pytest.raises(ValueError, match="larger than image"):
        MaskAwareCropd(("image",), None, patch_size=(32, 8))({"image": img})
    with pytest.raises(ValueError, match=r"mask 'mask': spatial shape \(8, 8\) does not match 'image' \(16, 16\)"):
        MaskAwareCropd(("image", "mask"), "mask", patch_size=8)({"image": img, "mask": torch.ones(1, 8, 8)})
