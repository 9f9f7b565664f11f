"""Blocks (N-D pixel shuffle, SE, improved SE), published parameter counts, ESRGAN key maps, registry."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from monai.networks.utils import pixelshuffle as monai_pixelshuffle

from medsr.networks import (
    EDSR,
    RDN,
    VDSR,
    ImprovedSEBlock,
    PixelShuffle,
    RRDBNet,
    SEBlock,
    ensure_scale,
    esrgan_key_map,
    get_network,
    list_networks,
    load_esrgan_state_dict,
    upsample_stages,
)


def test_pixel_shuffle_matches_torch_2d_and_monai_3d():
    x = torch.rand(2, 3 * 6, 4, 5)
    torch.testing.assert_close(PixelShuffle(2, (2, 3))(x), _ref(x, (2, 3)))
    y = torch.rand(2, 2 * 4, 3, 5)
    torch.testing.assert_close(PixelShuffle(2, 2)(y), F.pixel_shuffle(y, 2))
    z = torch.rand(1, 2 * 8, 3, 4, 2)
    torch.testing.assert_close(PixelShuffle(3, 2)(z), monai_pixelshuffle(z, spatial_dims=3, scale_factor=2))


def _ref(x, r):
    """out[b, c, h*r1+i, w*r2+j, ...] = x[b, c*prod(r) + flat(i, j, ...), h, w, ...] by explicit indexing."""
    b, ctot, *spatial = x.shape
    prod = 1
    for f in r:
        prod *= f
    c = ctot // prod
    out = torch.zeros(b, c, *(s * f for s, f in zip(spatial, r)))
    for offsets in itertools.product(*(range(f) for f in r)):
        flat = 0
        for o, f in zip(offsets, r):
            flat = flat * f + o
        index = (slice(None), slice(None)) + tuple(slice(o, None, f) for o, f in zip(offsets, r))
        out[index] = x[:, [ci * prod + flat for ci in range(c)]]
    return out


@pytest.mark.parametrize("spatial_dims,scale", [(3, (1, 1, 4)), (3, (2, 3, 1)), (2, (3, 1)), (1, 5)])
def test_pixel_shuffle_per_axis_factors(spatial_dims, scale):
    factors = ensure_scale(scale, spatial_dims)
    prod = 1
    for f in factors:
        prod *= f
    x = torch.rand(2, 2 * prod, *([3] * spatial_dims))
    out = PixelShuffle(spatial_dims, scale)(x)
    assert out.shape == (2, 2, *(3 * f for f in factors))
    torch.testing.assert_close(out, _ref(x, factors))


def test_pixel_shuffle_errors_name_the_problem():
    with pytest.raises(ValueError, match="not divisible"):
        PixelShuffle(2, (2, 2))(torch.rand(1, 6, 3, 3))
    with pytest.raises(ValueError, match=r"scale_factor: expected an int or 3 values \(spatial_dims=3\), got \(2, 2\)"):
        PixelShuffle(3, (2, 2))


def test_upsample_stages_and_scale_validation():
    assert upsample_stages((4, 4, 1)) == [(2, 2, 1), (2, 2, 1)]
    assert upsample_stages((1, 1, 4)) == [(1, 1, 2), (1, 1, 2)]
    assert upsample_stages((4, 2)) == [(2, 2), (2, 1)]
    assert upsample_stages((3, 3)) == [(3, 3)]
    assert upsample_stages((2, 2, 3)) == [(2, 2, 3)]
    assert upsample_stages((1, 1)) == []
    with pytest.raises(ValueError, match="positive integer"):
        ensure_scale((2, 0), 2)
    with pytest.raises(ValueError, match="scale_factor"):
        RRDBNet(2, 1, 1, scale_factor=(2, 2, 2), num_features=4, num_blocks=1, growth_channels=2)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_se_and_improved_se_gates(spatial_dims):
    se, ise = SEBlock(spatial_dims, 8, reduction=4), ImprovedSEBlock(spatial_dims, 8, reduction=4)
    for block in (se, ise):
        torch.nn.init.zeros_(block.fc2.weight)
        torch.nn.init.zeros_(block.fc2.bias)
    x = torch.rand(2, 8, *([5] * spatial_dims)) + 1.0
    y = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
    torch.testing.assert_close(se(x), x * 0.5)  # sigmoid(0)
    expected_gate = 2.0 * (0.8 * 0.5 + 0.2 * torch.sigmoid(y))
    torch.testing.assert_close(ise(x), x * expected_gate)
    assert (expected_gate > 1.0).all()  # the improved SE amplifies channels, the plain one cannot
    # the gate stays within (0, 2) for any weights
    torch.nn.init.normal_(ise.fc2.weight, std=10.0)
    gate = ise(x) / x
    assert gate.min() > 0 and gate.max() < 2


@pytest.mark.parametrize(
    "build,published",
    [
        (lambda: RRDBNet(2, 3, 3, 4, num_features=64, num_blocks=23, growth_channels=32), 16.70e6),
        (lambda: EDSR(2, 3, 3, 2, num_features=64, num_blocks=16), 1.37e6),
        (lambda: EDSR(2, 3, 3, 2, num_features=256, num_blocks=32, res_scale=0.1), 40.7e6),
        (lambda: VDSR(2, 1, 1, 2, num_features=64, num_layers=20), 0.665e6),
        (lambda: RDN(2, 3, 3, 2, num_features=64, num_blocks=16, num_layers=8, growth_channels=64), 22.1e6),
    ],
    ids=["rrdbnet", "edsr_baseline", "edsr_large", "vdsr", "rdn"],
)
def test_published_parameter_counts(build, published):
    with torch.device("meta"):  # shapes only: no memory, no init time
        net = build()
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - published) / published < 0.01, count


def _official_keys(layout: str, nb: int, up: int = 2) -> list[str]:
    """Key names of the official checkpoints, written out independently of medsr's key map."""
    keys = []
    wb = ("weight", "bias")
    if layout == "basicsr":
        keys += [f"conv_first.{w}" for w in wb]
        keys += [f"body.{i}.rdb{r}.conv{c}.{w}" for i in range(nb) for r in (1, 2, 3) for c in range(1, 6) for w in wb]
        keys += [
            f"{n}.{w}"
            for n in ["conv_body"] + [f"conv_up{k + 1}" for k in range(up)] + ["conv_hr", "conv_last"]
            for w in wb
        ]
    elif layout == "esrgan":
        keys += [f"conv_first.{w}" for w in wb]
        keys += [
            f"RRDB_trunk.{i}.RDB{r}.conv{c}.{w}" for i in range(nb) for r in (1, 2, 3) for c in range(1, 6) for w in wb
        ]
        keys += [f"{n}.{w}" for n in ("trunk_conv", "upconv1", "upconv2", "HRconv", "conv_last") for w in wb]
    else:  # ESRGAN old architecture (RRDB_ESRGAN_x4_old_arch.pth)
        keys += [f"model.0.{w}" for w in wb]
        keys += [
            f"model.1.sub.{i}.RDB{r}.conv{c}.0.{w}"
            for i in range(nb)
            for r in (1, 2, 3)
            for c in range(1, 6)
            for w in wb
        ]
        keys += [f"model.1.sub.{nb}.{w}" for w in wb]
        keys += [f"model.{k}.{w}" for k in (3, 6, 8, 10) for w in wb]
    return keys


@pytest.mark.parametrize("layout", ["basicsr", "esrgan", "old"])
def test_official_rrdbnet_state_dict_loads(layout, tmp_path):
    net = RRDBNet(2, 3, 3, 4, num_features=8, num_blocks=2, growth_channels=4)
    keys = _official_keys(layout, nb=2)
    assert len(keys) == len(net.state_dict())
    mapping = esrgan_key_map(keys)
    own = net.state_dict()
    sd = {k: torch.randn(own[mapping[k]].shape) for k in keys}
    wrapped = {"params_ema": sd} if layout == "basicsr" else sd
    path = tmp_path / f"{layout}.pth"
    torch.save(wrapped, path)
    result = load_esrgan_state_dict(net, path)
    assert not result.missing_keys and not result.unexpected_keys
    for k in keys:
        torch.testing.assert_close(net.state_dict()[mapping[k]], sd[k])


def test_full_size_official_key_list_matches_published_rrdbnet():
    with torch.device("meta"):
        net = RRDBNet(2, 3, 3, 4)
    keys = _official_keys("old", nb=23)
    assert sorted(esrgan_key_map(keys).values()) == sorted(net.state_dict())


def test_esrgan_weights_errors(tmp_path):
    net = RRDBNet(2, 3, 3, 4, num_features=8, num_blocks=1, growth_channels=4)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_esrgan_state_dict(net, tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="'foo.weight' is not an ESRGAN"):
        load_esrgan_state_dict(net, {"foo.weight": torch.zeros(1)})
    sd = {k: torch.zeros(v.shape) for k, v in net.state_dict().items()}
    sd["conv_first.weight"] = torch.zeros(8, 1, 3, 3)
    with pytest.raises(ValueError, match="conv_first.weight has shape"):
        load_esrgan_state_dict(net, sd)
    # ESRGAN-SE: everything but conv_hr loads from ESRGAN weights with strict=False
    se = get_network(
        "esrgan_se", spatial_dims=2, in_channels=3, out_channels=3, num_features=8, num_blocks=1, growth_channels=4
    )
    full = {k: torch.zeros(v.shape) for k, v in net.state_dict().items()}
    res = load_esrgan_state_dict(se, full, strict=False)
    assert res.unexpected_keys == ["conv_hr.weight", "conv_hr.bias"]
    assert all(k.startswith("se_hr.") for k in res.missing_keys)


def test_registry_names_aliases_and_errors():
    assert list_networks("features") == ["mobilenetv2_features", "vgg19_features"]
    assert "esrgan_se" in list_networks("generator") and "fusion_discriminator" in list_networks("discriminator")
    net = get_network(
        "ESRGAN_SE",
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        scale_factor=2,
        num_features=8,
        num_blocks=1,
        growth_channels=4,
    )
    assert isinstance(net, RRDBNet) and net.attention == "se" and hasattr(net, "se_hr") and not hasattr(net, "conv_hr")
    ise = get_network("edsr_ise", spatial_dims=2, num_features=8, num_blocks=1, scale_factor=4)
    assert isinstance(ise, EDSR) and sum(isinstance(m, ImprovedSEBlock) for m in ise.modules()) == 1 + 1 + 2
    with pytest.raises(ValueError, match="'nope' is unknown"):
        get_network("nope")
    with pytest.raises(ValueError, match="kind"):
        list_networks("loss")
    with pytest.raises(ValueError, match="attention"):
        get_network("edsr", spatial_dims=2, attention="cbam")


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_layer_type_gives_monai_factories_classes(spatial_dims):
    from monai.networks.layers import Conv, Norm, Pool

    from medsr.networks import layer_type

    expected = {
        "conv": Conv[Conv.CONV, spatial_dims],
        "convtrans": Conv[Conv.CONVTRANS, spatial_dims],
        "batch": Norm[Norm.BATCH, spatial_dims],
        "instance": Norm[Norm.INSTANCE, spatial_dims],
        "max": Pool[Pool.MAX, spatial_dims],
        "avg": Pool[Pool.AVG, spatial_dims],
        "adaptivemax": Pool[Pool.ADAPTIVEMAX, spatial_dims],
        "adaptiveavg": Pool[Pool.ADAPTIVEAVG, spatial_dims],
    }
    for kind, cls in expected.items():
        assert layer_type(kind, spatial_dims) is cls, kind
    with pytest.raises(ValueError, match="layer kind"):
        layer_type("conv2", spatial_dims)
    with pytest.raises(ValueError, match="spatial_dims"):
        layer_type("conv", 4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_vdsr_hidden_activations_keep_their_scale_through_the_depth(spatial_dims):
    """VDSR's hidden convolutions start with He weights: the last hidden layer's activations keep about half the
    first one's spread (with PyTorch's default initialisation 0.06 to 0.12 of it, mostly its biases, and under the zero
    output layer those ReLUs then died in training), and about half of them are active."""
    torch.manual_seed(0)
    net = VDSR(spatial_dims, 1, 1, 2, num_features=48, num_layers=16)
    x = torch.rand(2, 1, *([24 if spatial_dims == 2 else 12] * spatial_dims))
    with torch.no_grad():
        _, feats = net(x, return_features=True)
    first, last = feats[0], feats[-1]
    assert 0.25 < float(last.std() / first.std()) < 4.0  # He: 0.52 (2D), 0.53 (3D); default init: 0.09, 0.06
    assert 0.2 < float((last > 0).float().mean()) < 0.8


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_equivariant_rdn_follows_any_intensity_window(spatial_dims, tmp_path):
    """``RDN(equivariant=True)``: bias-free with a zero-mean, replicate-padded first layer, so with its residual over
    interpolation ``f(a * x + b) = a * f(x) + b`` for ``a > 0`` (a window or a normalization changes nothing but the
    units), borders included; the plain RDN with the same weights does not follow a window."""
    torch.manual_seed(0)
    kw = dict(num_features=8, num_blocks=2, num_layers=2, growth_channels=4, residual_interp=True)
    eq = RDN(spatial_dims, 1, 1, 2, equivariant=True, **kw)
    plain = RDN(spatial_dims, 1, 1, 2, **kw)
    assert not [k for k, _ in eq.named_parameters() if k.endswith("bias")]
    assert eq.init_args["equivariant"] is True and "equivariant" not in plain.init_args  # plain files as before
    with torch.no_grad():
        for net in (eq, plain):
            for p in net.parameters():  # the output layer starts at zero: give every layer weight
                p.normal_(0.0, 0.1)
    x = torch.rand(1, 1, *([10] * spatial_dims))
    with torch.no_grad():
        y = eq(x)
        interp = F.interpolate(x, scale_factor=2, mode="bicubic" if spatial_dims == 2 else "trilinear")
        assert float((y - interp).abs().max()) > 0.01  # the residual is not zero
        for a, b in ((0.5, -1.0), (3.0, 2.0), (1.0, 100.0)):
            torch.testing.assert_close(eq(a * x + b), a * y + b, atol=1e-4 * (1 + abs(b)), rtol=1e-4)
        assert float((plain(3.0 * x + 2.0) - (3.0 * plain(x) + 2.0)).abs().max()) > 0.1
        const = torch.full((1, 1, *([6] * spatial_dims)), 7.0)
        assert float(eq.SFENet1(const).abs().max()) < 1e-5  # blind to an offset, borders included
    from medsr.pipeline.models import load_model, save_model

    back, _ = load_model(save_model(eq, tmp_path / "eq.pt", {"name": "eq", "spatial_dims": spatial_dims}, half=False))
    assert back.init_args["equivariant"] is True  # the model file rebuilds it
    with torch.no_grad():
        torch.testing.assert_close(back(x), y)


def test_equivariant_rdn_needs_the_interpolation_residual():
    with pytest.raises(ValueError, match="equivariant=True needs residual_interp=True"):
        RDN(2, 1, 1, 2, num_features=8, num_blocks=1, num_layers=1, growth_channels=4, equivariant=True)
    with pytest.raises(ValueError, match="equivariant: expected true or false"):
        RDN(2, 1, 1, 2, num_features=8, num_blocks=1, num_layers=1, growth_channels=4, equivariant="maybe")
