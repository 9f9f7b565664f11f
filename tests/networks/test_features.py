"""VGG19 / MobileNetV2 feature extractors: torchvision-compatible keys, weights from a path only, frozen."""

from __future__ import annotations

import pytest
import torch

from medsr.networks import VGG19_LAYERS, MobileNetV2Features, VGG19Features

# torchvision facts written out: conv indices of vgg19().features and the parameter counts of the
# `features` stacks (vgg19: 143,667,240 in total minus 123,642,856 in the classifier; mobilenet_v2:
# 3,504,872 minus 1,281,000).
VGG19_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_vgg19_layout_matches_torchvision():
    with pytest.warns(UserWarning, match="random weights"):
        net = VGG19Features(layers=("pool5",))
    keys = {k for k in net.state_dict()}
    assert keys == {f"features.{i}.{w}" for i in VGG19_CONV_INDICES for w in ("weight", "bias")}
    assert _count(net) == 20_024_384
    assert VGG19_LAYERS["conv5_4"] == 34 and VGG19_LAYERS["relu5_4"] == 35 and VGG19_LAYERS["relu2_2"] == 8


def test_mobilenetv2_layout_matches_torchvision():
    with pytest.warns(UserWarning):
        net = MobileNetV2Features()
    keys = set(net.state_dict())
    for k in (
        "features.0.0.weight",
        "features.0.1.running_mean",
        "features.1.conv.0.0.weight",
        "features.1.conv.1.weight",
        "features.1.conv.2.weight",
        "features.2.conv.0.0.weight",
        "features.2.conv.1.0.weight",
        "features.2.conv.2.weight",
        "features.2.conv.3.bias",
        "features.17.conv.3.weight",
        "features.18.0.weight",
    ):
        assert k in keys, k
    assert _count(net) == 2_223_872


@pytest.mark.parametrize(
    "cls,layers,channels",
    [(VGG19Features, ("relu1_2", "relu2_2"), (64, 128)), (MobileNetV2Features, ("features.3", "features.6"), (24, 32))],
)
def test_weights_load_from_a_torchvision_style_file(cls, layers, channels, tmp_path):
    with pytest.warns(UserWarning):
        donor = cls(layers=layers)
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in donor.state_dict().items()}
    sd = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in sd.items()}
    sd["classifier.1.weight"] = torch.zeros(1000, 7)  # torchvision files carry the classifier: ignored
    path = tmp_path / "backbone.pth"
    torch.save(sd, path)
    net = cls(weights_path=path, layers=layers)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training and not any(m.training for m in net.modules())  # BN stays in eval
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    out = net(x)
    assert list(out) == list(layers)
    assert [o.shape[1] for o in out.values()] == list(channels)
    sum(o.square().mean() for o in out.values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # usable as a loss network


def test_one_channel_input_is_replicated_and_normalised():
    with pytest.warns(UserWarning):
        net = VGG19Features(layers=("conv1_1",), input_range=(0.0, 255.0))
    x = torch.rand(1, 1, 8, 8) * 255
    rgb = (x / 255).expand(-1, 3, -1, -1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = net.features[0]((rgb - mean) / std)
    torch.testing.assert_close(net(x)["conv1_1"], expected)


def test_errors_name_the_path_and_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_vgg19.pth"):
        VGG19Features(weights_path=tmp_path / "missing_vgg19.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="partial.pth.*missing keys"):
        VGG19Features(weights_path=tmp_path / "partial.pth", layers=("relu1_2",))
    with pytest.raises(ValueError, match="layers: unknown VGG19 layer names \\['relu9_9'\\]"):
        VGG19Features(layers=("relu9_9",))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"expected \(B, 1, H, W\)"):
        MobileNetV2Features(layers=("features.1",))(torch.rand(1, 1, 4, 4, 4))
