"""timm's habit: every registered generator's output on a fixed input is stored, so a refactor that changes the
numbers fails here. Regenerate deliberately, by hand: ``python -m tests.networks.regenerate_references --write``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsr.networks import get_network, list_networks

from .regenerate_references import CASES, LR, REFERENCE, SCALE, reference_output
from .test_networks_table import GEN


def _references() -> dict[str, torch.Tensor]:
    return torch.load(REFERENCE, weights_only=True)


def test_every_registered_generator_has_a_reference():
    refs = _references()
    assert {k.rsplit("-", 1)[0] for k in refs} == set(list_networks("generator"))


@pytest.mark.parametrize("name,dims", CASES)
def test_output_equals_stored_reference(name, dims):
    ref = _references()[f"{name}-{dims}"]
    out = reference_output(name, dims)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(GEN))
@pytest.mark.parametrize("dims", [2, 3])
def test_residual_interp_starts_at_interpolation_and_learns_a_residual(name, dims):
    kwargs, _ = GEN[name]
    net = get_network(
        name, spatial_dims=dims, in_channels=1, out_channels=1, scale_factor=SCALE[dims], residual_interp=True, **kwargs
    )
    x = torch.rand(2, 1, *LR[dims])
    interp = net.upsample_input(x)
    mode = "bicubic" if dims == 2 else "trilinear"  # the default interp_mode, not nearest
    expected = torch.nn.functional.interpolate(x, scale_factor=[float(f) for f in SCALE[dims]], mode=mode)
    torch.testing.assert_close(interp, expected)
    torch.testing.assert_close(net(x), interp)  # zero-initialised output layer: exactly interpolation
    # one optimiser step moves away from interpolation along the learned residual
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    target = interp + 0.1
    loss = (net(x) - target).abs().mean()
    loss.backward()
    opt.step()
    assert (net(x) - target).abs().mean() < loss


@pytest.mark.parametrize("name", sorted(GEN))
def test_init_args_rebuild_the_same_network(name):
    kwargs, _ = GEN[name]
    net = get_network(name, spatial_dims=2, in_channels=1, out_channels=1, scale_factor=(4, 2), **kwargs)
    rebuilt = type(net)(**net.init_args)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.rand(1, 1, 5, 6)
    torch.testing.assert_close(rebuilt.eval()(x), net.eval()(x))
    assert rebuilt.init_args == net.init_args


def test_rrdb_dense_blocks_use_basicsr_initialisation():
    from medsr.networks import ResidualDenseBlock

    blk = ResidualDenseBlock(2, 64, 32)
    # Kaiming normal (std sqrt(2 / fan_in)) scaled by 0.1, zero bias
    fan_in = blk.conv1.weight[0].numel()
    std = float(blk.conv1.weight.std())
    assert 0.07 < std / (0.1 * (2.0 / fan_in) ** 0.5) < 1.3
    assert float(blk.conv1.bias.abs().max()) == 0.0


def test_interp_mode_is_applied_and_checked():
    x = torch.rand(1, 1, 6, 5)
    near = get_network("rdn", spatial_dims=2, scale_factor=2, residual_interp=True, interp_mode="nearest",
                       num_features=4, num_blocks=1, num_layers=1, growth_channels=2)  # fmt: skip
    torch.testing.assert_close(near(x), torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
    with pytest.raises(ValueError, match="interp_mode: 'bicubic' does not work with spatial_dims=3"):
        get_network("rdn", spatial_dims=3, scale_factor=2, residual_interp=True, interp_mode="bicubic")
    flagged = get_network("rdn", spatial_dims=2, scale_factor=2, residual_interp="false", num_features=4,
                          num_blocks=1, num_layers=1, growth_channels=2)  # fmt: skip
    assert flagged.residual_interp is False and flagged.init_args["residual_interp"] is False


# upscale models (selfsr's prior, role "prior", has one head per factor: tests/selfsr/test_prior.py)
SHIPPED = sorted(p for p in Path(__file__).resolve().parents[2].glob("bundles/*/models/*.pt") if p.name != "prior.pt")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_shipped_model_files_rebuild_from_their_recorded_init_args(path):
    """A model file records ``{target, args: net.init_args}``: the generator's constructor must take those
    arguments as they were written, give the same ``init_args`` back and accept the weights (strict keys)."""
    import medsr.networks

    record = torch.load(path, map_location="cpu", weights_only=True)
    target, args = record["network"]["target"], record["network"]["args"]
    net = getattr(medsr.networks, target.rpartition(".")[2])(**args)
    assert net.init_args == args
    net.load_state_dict({k: v.float() for k, v in record["state_dict"].items()})
    x = torch.rand(1, 1, *([6] * net.spatial_dims))
    with torch.no_grad():
        assert net.eval()(x).shape[2:] == net.hr_shape(x.shape[2:])


def test_every_generator_has_a_plain_init():
    """Constructors are written out (BasicSR's ``RRDBNet.__init__``), not assembled: no ``__init_subclass__``."""
    import medsr.networks

    for name in list_networks("generator"):
        cls = type(get_network(name, spatial_dims=2, **GEN[name][0]))
        assert "__init__" in vars(cls) and "__signature__" not in vars(cls.__init__), name
        assert "__init_subclass__" not in vars(medsr.networks.SRGenerator)
