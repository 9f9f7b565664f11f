"""medsr.networks: SR generators, discriminators, blocks and feature extractors, 2D and 3D."""

from medsr.networks.blocks import (
    ImprovedSEBlock,
    PixelShuffle,
    SEBlock,
    channels_last_format,
    conv_nd,
    ensure_scale,
    make_attention,
    upsample_stages,
)
from medsr.networks.discriminators import FeatureFusionDiscriminator, PatchDiscriminator, VGGDiscriminator
from medsr.networks.features import VGG19_LAYERS, MobileNetV2Features, VGG19Features, load_torch_weights
from medsr.networks.generators import (
    EDSR,
    ESPCN,
    RDN,
    RRDB,
    SRCNN,
    VDSR,
    ResidualDenseBlock,
    RRDBNet,
    SliceWise,
    SRDenseNet,
    SRGenerator,
    SRResNet,
)
from medsr.networks.optimize import optimize_for_inference, reuse_freed_memory
from medsr.networks.registry import KINDS, get_network, list_networks, register_network
from medsr.networks.weights import convert_esrgan_state_dict, esrgan_key_map, load_esrgan_state_dict

__all__ = [
    "EDSR",
    "ESPCN",
    "KINDS",
    "RDN",
    "RRDB",
    "SRCNN",
    "VDSR",
    "VGG19_LAYERS",
    "FeatureFusionDiscriminator",
    "ImprovedSEBlock",
    "MobileNetV2Features",
    "PatchDiscriminator",
    "PixelShuffle",
    "RRDBNet",
    "ResidualDenseBlock",
    "SEBlock",
    "SRDenseNet",
    "SRGenerator",
    "SliceWise",
    "SRResNet",
    "VGG19Features",
    "VGGDiscriminator",
    "channels_last_format",
    "conv_nd",
    "convert_esrgan_state_dict",
    "ensure_scale",
    "esrgan_key_map",
    "get_network",
    "list_networks",
    "load_esrgan_state_dict",
    "load_torch_weights",
    "make_attention",
    "optimize_for_inference",
    "register_network",
    "reuse_freed_memory",
    "upsample_stages",
]
