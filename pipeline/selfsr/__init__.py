"""Self-supervised thick-slice super-resolution (SMORE/ECLARE class): isotropic volumes from one scan.

``medsr selfsr IN OUT`` learns a 2D model from the scan's own in-plane slices (one in-plane axis degraded with
the slice profile) and applies it along the slice axis in both orthogonal views. See :mod:`.grid` for the
grid conventions, :mod:`.pairs` for the training pairs, :mod:`.recon` for the reconstruction.
"""
