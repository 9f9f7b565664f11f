"""The MONAI Label infer task for one SR bundle (runs inside the label env: imports ``monailabel``).

``SRInferTask`` reads the image the viewer sends with the bundle's own preprocessing (reader + intensity
normalization), runs :class:`medsr.pipeline.inference.SRSlidingWindowInferer` with the bundle's generator,
maps intensities back to the input's units, and writes a NIfTI with the HR affine
(:func:`medsr.transforms.geometry.sr_affine`: spacing divided by the scale, physical extent kept) and no
channel axis. A 2D model given a 3D volume upscales it slice by slice along the last axis (scale
``(s, s, 1)``), which is what a viewer such as 3D Slicer sends for a 2D modality.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from medsr.pipeline.inference import SRSlidingWindowInferer, clip_to_input, invert_intensity, save_nifti
from medsr.pipeline.label_app.models import SRModelSpec
from medsr.transforms.geometry import sr_affine

__all__ = ["SRInferTask", "InputError"]

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """The request's image cannot be used (unreadable, wrong dimension or channels); maps to HTTP 422."""


class _Prepare:
    """Pre-transform: ``data["image"]`` (a path) -> channel-first normalized MetaTensor; keeps the item."""

    def __init__(self, task: SRInferTask) -> None:
        self.task = task

    def __call__(self, data: dict) -> dict:
        path = data.get("image")
        if not isinstance(path, str) or not path:
            raise InputError(f"image {path!r}: no image file given")
        try:
            item = self.task.preprocessing()({"image": path})
        except Exception as err:  # any reader error means "not an image we can read"
            root = err
            while root.__cause__ is not None:  # MONAI wraps the reader's error in "applying transform …"
                root = root.__cause__
            reason = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
            raise InputError(
                f"image '{path}': cannot be read as an image ({type(root).__name__}: {reason[:300]})"
            ) from err
        img = item["image"]
        if not isinstance(img, MetaTensor):
            img = MetaTensor(img)
        spec = self.task.spec
        while img.ndim - 1 > 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if spec.spatial_dims == 3 and img.ndim - 1 == 2:
            raise InputError(
                f"image '{path}': a 2D image (shape {tuple(img.shape[1:])}) sent to the 3D model '{spec.name}'"
            )
        if img.ndim - 1 not in (2, 3):
            raise InputError(f"image '{path}': read as shape {tuple(img.shape)}, not a 2D or 3D image")
        if img.shape[0] != spec.in_channels:
            raise InputError(
                f"image '{path}': {img.shape[0]} channel(s), model '{spec.name}' expects {spec.in_channels}"
            )
        item["image"] = img
        data["image"] = img
        data["medsr_item"] = item
        return data


class SRInferTask(BasicInferTask):
    """Infer task serving one SR bundle (see the module docstring).

    Args:
        spec: the model spec from :func:`medsr.pipeline.label_app.models.load_model_spec`.
    """

    def __init__(self, spec: SRModelSpec) -> None:
        self.spec = spec
        super().__init__(
            path=spec.checkpoint,
            network=None,
            type=InferType.OTHERS,
            labels=None,
            dimension=spec.spatial_dims,
            description=f"{spec.description} (x{'x'.join(str(s) for s in spec.scale)} super-resolution)",
            config={"sw_overlap": spec.overlap, "sw_batch_size": spec.sw_batch_size},
        )
        self._lock = threading.Lock()
        self._preprocessing: Callable | None = None

    def info(self) -> dict[str, Any]:
        """MONAI Label's model info plus ``scale``, ``spatial_dims``, ``checkpoint`` and ``weights``."""
        out = super().info()
        out.update(self.spec.info())
        return out

    def is_valid(self) -> bool:
        """The spec was built only for a usable model (checkpoint found, or untrained allowed)."""
        return True

    def preprocessing(self) -> Callable:
        """The bundle's preprocessing (built once), or LoadImaged + channel first + percentile normalization."""
        with self._lock:
            if self._preprocessing is None:
                pre = self.spec.build_preprocessing() if self.spec.build_preprocessing else None
                if pre is None:
                    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

                    from medsr.transforms import PercentileNormalized

                    pre = Compose(
                        [
                            LoadImaged(keys="image", image_only=True),
                            EnsureChannelFirstd(keys="image"),
                            PercentileNormalized(keys="image", lower=0.5, upper=99.5, clip=False),
                        ]
                    )
                self._preprocessing = pre
            return self._preprocessing

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        """One step: read + normalize with the bundle's preprocessing (see :class:`_Prepare`)."""
        return [_Prepare(self)]

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        """None: the writer maps intensities back and sets the HR geometry."""
        return []

    def inferer(self, data: dict | None = None) -> SRSlidingWindowInferer:
        """Sliding windows of the bundle's ``roi_size`` with Gaussian blending."""
        data = data or {}
        return SRSlidingWindowInferer(
            roi_size=self.spec.roi_size,
            scale=self.spec.scale,
            sw_batch_size=int(data.get("sw_batch_size", self.spec.sw_batch_size)),
            overlap=float(data.get("sw_overlap", self.spec.overlap)),
            device="cpu",
        )

    def _get_network(self, device, data):
        with self._lock:
            cached = self._networks.get(str(device))
            if cached is None:
                cached = self.spec.load_network(device)
                self._networks[str(device)] = cached
            return cached

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict:
        """Upscale ``data["image"]`` into ``data["pred"]`` (channel first, HR affine, network units)."""
        img: MetaTensor = data["image"]
        net = self._get_network(device, data)
        inferer = self.inferer(data)
        spec = self.spec
        with torch.no_grad():
            x = img.as_tensor().float().to(device)
            if spec.spatial_dims == 2 and x.ndim == 4:  # 3D volume, 2D model: slices along the last axis
                batch = x.permute(3, 0, 1, 2)  # (D, C, H, W)
                out = inferer(batch, net).permute(1, 2, 3, 0)  # (C, sH, sW, D)
                scale = (*spec.scale, 1)
            else:
                out = inferer(x[None], net)[0]
                scale = spec.scale
        expected = tuple(int(s) * f for s, f in zip(img.shape[1:], scale))
        if tuple(out.shape[1:]) != expected:
            raise RuntimeError(f"model '{spec.name}': output shape {tuple(out.shape[1:])}, expected {expected}")
        data["pred"] = MetaTensor(out.cpu(), affine=sr_affine(img.affine, scale))
        data["medsr_scale"] = scale
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[str, dict]:
        """Write the SR image (input intensity units clipped to the input's range, HR affine, no channel axis) to a
        temporary NIfTI."""
        pred: MetaTensor = data["pred"]
        item = data.get("medsr_item", {})
        out = clip_to_input(invert_intensity(pred, item), item)  # as medsr upscale: within the input's range
        affine = pred.affine
        fd = tempfile.NamedTemporaryFile(suffix=".nii.gz", prefix="medsr_sr_", delete=False)
        fd.close()
        save_nifti(torch.as_tensor(np.asarray(out)), fd.name, affine=affine)
        spacing = torch.linalg.norm(torch.as_tensor(affine, dtype=torch.float64)[:3, : out.ndim - 1], dim=0)
        result = {
            "model": self.spec.name,
            "scale": [int(s) for s in data["medsr_scale"]],
            "shape": [int(s) for s in out.shape[1:]],
            "spacing": [round(float(s), 6) for s in spacing],
            "weights": self.spec.info()["weights"],
        }
        return fd.name, result
