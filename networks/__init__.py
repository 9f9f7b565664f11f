"""medsr.networks: SR generators, discriminators, blocks and feature extractors, 2D and 3D.

The names load lazily (PEP 562): ``from medsr.networks import RDN`` imports the generators only, so building a
shipped model imports neither MONAI nor the discriminators and feature extractors.
"""

from medsr.pipeline._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "blocks": (
            "ImprovedSEBlock",
            "PixelShuffle",
            "SEBlock",
            "channels_last_format",
            "conv_nd",
            "ensure_scale",
            "layer_type",
            "make_attention",
            "upsample_stages",
        ),
        "discriminators": ("FeatureFusionDiscriminator", "PatchDiscriminator", "VGGDiscriminator"),
        "features": ("VGG19_LAYERS", "MobileNetV2Features", "VGG19Features", "load_torch_weights"),
        "generators": (
            "EDSR",
            "ESPCN",
            "RDN",
            "RRDB",
            "SRCNN",
            "VDSR",
            "ResidualDenseBlock",
            "RRDBNet",
            "SliceWise",
            "SRDenseNet",
            "SRGenerator",
            "SRResNet",
        ),
        "optimize": ("optimize_for_inference", "reuse_freed_memory"),
        "registry": ("KINDS", "get_network", "list_networks", "register_network"),
        "weights": ("convert_esrgan_state_dict", "esrgan_key_map", "load_esrgan_state_dict"),
    },
)
