"""medsr.transforms: medical-aware transforms (intensity, cropping, degradation, pairing), 2D and 3D."""
