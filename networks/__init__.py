"""medsr.networks: SR generators, discriminators, blocks and feature extractors, 2D and 3D."""
