"""Build any medsr network by name: ``get_network("esrgan_se", spatial_dims=2, ...)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from medsr.networks.discriminators import FeatureFusionDiscriminator, PatchDiscriminator, VGGDiscriminator
from medsr.networks.features import MobileNetV2Features, VGG19Features
from medsr.networks.generators import EDSR, ESPCN, RDN, SRCNN, VDSR, RRDBNet, SRDenseNet, SRResNet

__all__ = ["get_network", "list_networks", "register_network", "KINDS"]

KINDS = ("generator", "discriminator", "features")


@dataclass(frozen=True)
class _Entry:
    kind: str
    factory: Callable[..., nn.Module]
    preset: dict = field(default_factory=dict)


_REGISTRY: dict[str, _Entry] = {}


def register_network(name: str, kind: str, factory: Callable[..., nn.Module], **preset) -> None:
    """Register ``factory`` under the lower-case ``name``; ``preset`` keyword arguments are applied first.

    Raises:
        ValueError: for an unknown ``kind`` or a name already registered.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    key = name.lower()
    if key in _REGISTRY:
        raise ValueError(f"network name {name!r} is already registered")
    _REGISTRY[key] = _Entry(kind, factory, dict(preset))


def list_networks(kind: str | None = None) -> list[str]:
    """Sorted registered names, optionally only one ``kind`` (``"generator"``, ``"discriminator"``, ``"features"``)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS} or None, got {kind!r}")
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def get_network(name: str, **kwargs) -> nn.Module:
    """Build the network registered as ``name`` (case-insensitive) with ``kwargs``.

    Aliases preset arguments: ``esrgan_se`` is ``RRDBNet(attention="se")``, ``edsr_ise`` is
    ``EDSR(attention="ise")``, ``slicenet`` is ``EDSR(upsampler="subpixel", num_features=32, num_blocks=4)``; a
    keyword given explicitly overrides the preset.

    Raises:
        ValueError: naming an unknown network and listing the known ones.
    """
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"network name {name!r} is unknown; known networks: {list_networks()}")
    entry = _REGISTRY[key]
    return entry.factory(**{**entry.preset, **kwargs})


for _name, _cls in {
    "srcnn": SRCNN,
    "vdsr": VDSR,
    "espcn": ESPCN,
    "srresnet": SRResNet,
    "edsr": EDSR,
    "rdn": RDN,
    "srdensenet": SRDenseNet,
    "rrdbnet": RRDBNet,
}.items():
    register_network(_name, "generator", _cls)
register_network("esrgan_se", "generator", RRDBNet, attention="se")
register_network("edsr_ise", "generator", EDSR, attention="ise")
register_network("slicenet", "generator", EDSR, upsampler="subpixel", num_features=32, num_blocks=4)
register_network("vgg_discriminator", "discriminator", VGGDiscriminator)
register_network("patch_discriminator", "discriminator", PatchDiscriminator)
register_network("fusion_discriminator", "discriminator", FeatureFusionDiscriminator)
register_network("vgg19_features", "features", VGG19Features)
register_network("mobilenetv2_features", "features", MobileNetV2Features)
