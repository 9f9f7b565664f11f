"""Super-resolution inference on files: sliding windows, HR geometry, NIfTI and DICOM writers.

The generator maps an LR image to an HR one ``scale`` times larger per axis. Large 2D/3D inputs go through
:class:`~medsr.pipeline.inferer.SRSlidingWindowInferer` (MONAI's sliding-window inference, outputs on a scaled
grid) with Gaussian overlap blending; windows run on ``sw_device`` (the GPU when there is one) while the full volume
and the blended output stay on ``device`` (the CPU by default), so the whole volume never sits on the GPU.

Geometry: the output affine is :func:`medsr.transforms.geometry.sr_affine` of the input's (the inverse of the
pairing transform's LR affine), so the physical extent (field of view) is kept.

The shipped-model path (:func:`upscale_with_model`, :func:`upscale_array` behind ``medsr.upscale``) never
imports MONAI (~430 modules, seconds of start-up): it reads photos and NIfTI with
:func:`medsr.pipeline.data.files.read_image`, normalises with
:func:`medsr.transforms._utils.percentile_normalize` and carries images as
:class:`~medsr.transforms._utils.ImageTensor`. Everything here takes MONAI MetaTensors too (the bundles'
``inferring``, DICOM inputs) and then returns MetaTensors, as before.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsr.networks.optimize import optimize_for_inference
from medsr.pipeline.errors import MedsrError, name_files
from medsr.pipeline.inferer import SRSlidingWindowInferer
from medsr.pipeline.io import atomic_path, check_outputs
from medsr.transforms._utils import (
    ImageTensor,
    as_image,
    image_like,
    invert_normalization,
    is_image,
    is_meta_tensor,
    percentile_normalize,
)
from medsr.transforms.geometry import squeeze_spatial, sr_affine

__all__ = [
    "SRSlidingWindowInferer",
    "DihedralTTA",
    "save_image_2d",
    "inference_preprocessing",
    "read_normalized",
    "upscale_with_model",
    "save_nifti",
    "save_dicom",
    "derived_dataset",
    "is_dicom",
    "SRFileInference",
    "output_path_for",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


class DihedralTTA(torch.nn.Module):
    """Test-time augmentation of a 2D SR network: the mean of its outputs over the 8 flips and 90° rotations
    of the input (``n=8``), or over the 4 flips (``n=4``), or over identity and one flip (``n=2``), each mapped
    back. ``spatial_dims`` and ``scale_factor`` are the wrapped network's (equal in-plane factors for the
    rotations), so it replaces the network anywhere, :class:`medsr.networks.SliceWise` included.

    Args:
        network: a 2D SR network, input ``(B, C, H, W)``.
        n: 1, 2, 4 or 8 transforms.
    """

    def __init__(self, network: torch.nn.Module, n: int = 8) -> None:
        super().__init__()
        if n not in (1, 2, 4, 8):
            raise ValueError(f"--tta: expected 1, 2, 4 or 8, got {n}")
        if int(getattr(network, "spatial_dims", 2)) != 2:
            raise ValueError("--tta: test-time flips and rotations need a 2D model")
        self.network, self.n = network, int(n)
        self.spatial_dims, self.scale_factor = 2, network.scale_factor
        self.in_channels = getattr(network, "in_channels", 1)
        self.out_channels = getattr(network, "out_channels", self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for k in range(self.n):
            rot, flip = k // 2, k % 2  # (0,0) identity, (0,1) flip W, (1,0) rot 90, ...
            y = x.flip(-1) if flip else x
            y = self.network(torch.rot90(y, rot, (-2, -1)))
            y = torch.rot90(y, -rot, (-2, -1))
            y = y.flip(-1) if flip else y
            out = y if out is None else out + y
        return out / self.n


def save_nifti(image: torch.Tensor | np.ndarray, path: str | os.PathLike, affine: Any | None = None) -> str:
    """Write a channel-first image (``C, *S``) as NIfTI, atomically (temp file + ``os.replace``).

    One channel is written as a plain 2D/3D image; several channels go to the 5th NIfTI axis
    (``X, Y, Z, 1, C``). The affine is ``affine`` or the MetaTensor's own; 2D images get a 3D affine with
    their in-plane geometry.
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise ValueError(f"output '{path}': NIfTI output needs a .nii or .nii.gz name")
    if affine is None:
        affine = image.affine if is_image(image) else np.eye(4)
    aff = np.asarray(torch.as_tensor(np.asarray(affine)).double())
    data = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    data = data.astype(np.float32, copy=False)
    if data.ndim not in (3, 4):
        raise ValueError(f"output '{path}': expected a channel-first 2D or 3D image, got shape {data.shape}")
    if data.shape[0] == 1:
        data = data[0]
    else:
        data = np.moveaxis(data, 0, -1)
        data = data[:, :, None, None, :] if data.ndim == 3 else data[:, :, :, None, :]
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return str(path)


def save_image_2d(image: torch.Tensor, path: str | os.PathLike, reference: str | os.PathLike | None = None) -> str:
    """Write a one-channel 2D SR result as PNG/TIFF (atomically), in the reference image's bit depth: 8-bit
    when the reference is 8-bit (or no reference and values fit 0..255), else 16-bit; values are rounded and
    clipped to that range. The array is transposed back from MONAI's (x, y) order to the image's rows."""
    from PIL import Image

    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"output '{path}': a PNG/TIFF holds one 2D channel, got shape {tuple(arr.shape)}")
    eight_bit = float(np.nanmax(arr)) <= 255.0
    if reference is not None:
        with Image.open(reference) as ref:
            eight_bit = ref.mode in ("L", "RGB", "RGBA", "P", "LA")
    dtype, top = (np.uint8, 255) if eight_bit else (np.uint16, 65535)
    out = np.clip(np.rint(arr), 0, top).astype(dtype).T
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(out).save(tmp, format="PNG" if path.suffix.lower() == ".png" else "TIFF")
    return str(path)


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a DICOM file or a folder whose files are DICOM (checks the ``DICM`` preamble)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file())[:3] if p.is_dir() else []
    for f in files:
        try:
            with open(f, "rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def _dicom_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(f for f in path.iterdir() if f.is_file() and is_dicom(f))


#: elements of the reference that describe its pixels or one instance, never copied to the derived series
_INSTANCE_TAGS = (
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "NumberOfFrames",
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
    "PlanarConfiguration",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "IconImageSequence",
    "SourceImageSequence",
    "ReferencedImageSequence",
    "DerivationCodeSequence",
    "SpacingBetweenSlices",
    "SliceLocation",
    "AcquisitionNumber",
    "ImageComments",
)


def derived_dataset(ref: Any, description: str = "medsr super-resolution") -> Any:
    """A clean dataset for a series derived from the DICOM dataset ``ref`` (patient, study, equipment kept).

    Dropped: command-set elements (group 0000, which ``dcmwrite`` refuses), file-meta elements misplaced in
    the body (group 0002), private and retired elements, and everything that describes the reference's
    pixels or instance (:data:`_INSTANCE_TAGS`). Set: ``ImageType`` ``DERIVED\\SECONDARY``,
    ``DerivationDescription``, ``SeriesDescription``, a ``SourceImageSequence`` pointing at the reference,
    and a ``SeriesNumber`` of the reference's + 1000. Geometry and UIDs are the caller's.
    """
    from pydicom.datadict import dictionary_is_retired, keyword_for_tag
    from pydicom.dataset import Dataset

    ds = Dataset()
    for elem in ref:
        tag = elem.tag
        if tag.group in (0x0000, 0x0002) or tag.is_private:
            continue
        try:
            if dictionary_is_retired(tag):
                continue
        except KeyError:
            continue  # not in the dictionary at all: drop rather than copy an element we cannot vouch for
        if keyword_for_tag(tag) in _INSTANCE_TAGS:
            continue
        ds.add(copy.deepcopy(elem))
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = f"{description} (medsr) of series {ref.get('SeriesInstanceUID', '?')}"[:1024]
    ds.SeriesDescription = str(description)[:64]
    try:
        ds.SeriesNumber = int(ref.get("SeriesNumber") or 0) + 1000
    except (TypeError, ValueError):
        ds.SeriesNumber = 1000
    if "SOPClassUID" in ref and "SOPInstanceUID" in ref:
        src = Dataset()
        src.ReferencedSOPClassUID = ref.SOPClassUID
        src.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        ds.SourceImageSequence = [src]
    return ds


def _file_meta(ds: Any, sop_uid: str) -> Any:
    """A fresh file meta group (explicit VR little endian) for one derived instance."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")  # else Secondary Capture
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def save_dicom(
    image: torch.Tensor,
    path: str | os.PathLike,
    reference: str | os.PathLike,
    affine: Any | None = None,
    description: str = "medsr super-resolution",
    slice_factor: int | None = None,
) -> list[str]:
    """Write an SR result as DICOM next to the geometry of the ``reference`` DICOM input, atomically.

    ``image`` is channel-first (one channel), on MONAI's RAS grid as read by ``LoadImage`` (axis 0 = DICOM
    column, axis 1 = row, axis 2 = slice). A 2D image (or a 3D one with one slice) is written as the single
    file ``path``; a 3D image as a series ``path/IM00001.dcm …`` (written to a temporary folder first, then
    moved into place). Intensities go back to stored values through the reference's rescale slope/intercept;
    geometry tags (``PixelSpacing``, ``ImagePositionPatient``, ``ImageOrientationPatient``, ``SliceLocation``,
    ``SliceThickness``) come from the HR affine, per slice; new Series/SOP instance UIDs are generated. The
    files are a derived series built from a clean copy of the reference (:func:`derived_dataset`: no
    command-set, private or retired elements, ``ImageType`` DERIVED, ``DerivationDescription``), which
    viewers open and ``dcmwrite`` accepts even when the input carried network command elements.

    ``SliceThickness`` is the reference's when the slice axis was not upscaled (``slice_factor`` 1, in-plane
    SR; a 2D image), else the new slice spacing; ``None`` tells it from the output's slice count.
    """
    import pydicom
    from pydicom.uid import generate_uid

    ref_files = _dicom_files(Path(reference))
    if not ref_files:
        raise ValueError(f"reference '{reference}': no DICOM file found")
    ref = pydicom.dcmread(str(ref_files[0]), stop_before_pixels=True)
    if affine is None:
        affine = image.affine if is_image(image) else None
    if affine is None:
        raise ValueError(f"output '{path}': an affine is needed to write DICOM geometry")
    aff = np.asarray(torch.as_tensor(np.asarray(affine)).double()).copy()
    aff[:2] *= -1.0  # RAS (MONAI) -> LPS (DICOM)
    data = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if data.shape[0] != 1:
        raise ValueError(f"output '{path}': DICOM output needs a single-channel image, got shape {data.shape}")
    data = data[0]
    if data.ndim == 2:
        data = data[:, :, None]
    slope = float(getattr(ref, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ref, "RescaleIntercept", 0.0) or 0.0)
    signed = int(getattr(ref, "PixelRepresentation", 0)) == 1
    bits = 16
    dtype = np.int16 if signed else np.uint16
    info = np.iinfo(dtype)
    stored = np.clip(np.rint((data - intercept) / slope), info.min, info.max).astype(dtype)
    col_dir = aff[:3, 0] / np.linalg.norm(aff[:3, 0])
    row_dir = aff[:3, 1] / np.linalg.norm(aff[:3, 1])
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    series_uid = generate_uid()
    n_slices = stored.shape[2]
    if slice_factor is None:
        slice_factor = max(1, n_slices // max(1, len(ref_files)))
    thickness = f"{spacing[2]:.6g}"
    if int(slice_factor) == 1 and ref.get("SliceThickness") not in (None, ""):
        thickness = str(ref.SliceThickness)  # in-plane SR: the acquired slice thickness is unchanged
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    single = n_slices == 1
    normal = np.cross(col_dir, row_dir)
    base = derived_dataset(ref, description)
    target_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    written = []
    try:
        for k in range(n_slices):
            ds = copy.deepcopy(base)
            sop_uid = generate_uid()
            ds.SOPInstanceUID = sop_uid
            ds.file_meta = _file_meta(ds, sop_uid)
            ds.SeriesInstanceUID = series_uid
            ds.InstanceNumber = k + 1
            pixels = np.ascontiguousarray(stored[:, :, k].T)  # rows = axis 1, columns = axis 0
            ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
            ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
            ds.ImageOrientationPatient = [f"{v:.6g}" for v in (*col_dir, *row_dir)]
            position = aff[:3, :3] @ np.array([0.0, 0.0, k]) + aff[:3, 3]
            ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
            ds.SliceLocation = f"{float(position @ normal):.6g}"
            ds.SliceThickness = thickness
            if not single:
                ds.SpacingBetweenSlices = f"{spacing[2]:.6g}"
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = bits
            ds.BitsStored = bits
            ds.HighBit = bits - 1
            ds.PixelRepresentation = 1 if signed else 0
            ds.RescaleSlope = f"{slope:.6g}"
            ds.RescaleIntercept = f"{intercept:.6g}"
            ds.PixelData = pixels.tobytes()
            ds["PixelData"].VR = "OW"
            name = target_dir / f"IM{k + 1:05d}.dcm"
            ds.save_as(str(name), enforce_file_format=True)
            written.append(name)
        if single:
            os.replace(written[0], out)
            return [str(out)]
        if out.exists():
            raise FileExistsError(f"output '{out}': already exists; remove it or pick another name")
        os.replace(target_dir, out)
        return [str(out / f.name) for f in written]
    finally:
        if target_dir.exists():
            for f in target_dir.iterdir():
                f.unlink()
            target_dir.rmdir()


def output_path_for(
    input_path: str | os.PathLike, output_dir: str | os.PathLike, postfix: str = "sr", keep_image_format: bool = False
) -> Path:
    """Default output name: ``<output_dir>/<input stem>_<postfix>.nii.gz`` (a DICOM input keeps DICOM; with
    ``keep_image_format`` a PNG/TIFF input keeps its suffix and a JPEG/BMP one becomes PNG)."""
    p = Path(input_path)
    name = p.name
    for suf in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".mha", ".nrrd", ".mat", ".h5"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    if is_dicom(p):
        return Path(output_dir) / (f"{name}_{postfix}.dcm" if p.is_file() else f"{name}_{postfix}")
    suffix = p.suffix.lower()
    if keep_image_format and suffix in (*IMAGE_SUFFIXES, ".jpg", ".jpeg", ".bmp"):
        return Path(output_dir) / f"{name}_{postfix}{suffix if suffix in IMAGE_SUFFIXES else '.png'}"
    return Path(output_dir) / f"{name}_{postfix}.nii.gz"


@torch.no_grad()
def super_resolve(
    image: Any,
    network: Callable[..., torch.Tensor],
    inferer: SRSlidingWindowInferer,
    postprocessing: Callable[[torch.Tensor, dict], torch.Tensor] | None = None,
    item: dict | None = None,
    clip: bool = False,
    scale: Sequence[int] | None = None,
    name: Any = "image",
) -> tuple[Any, str | None]:
    """The SR image of one prepared (channel-first, normalized) ``image`` and a note (or ``None``).

    ``inferer`` windows through ``network``, the HR affine is :func:`~medsr.transforms.geometry.sr_affine`'s,
    then ``postprocessing(out, item)`` (the inverse of the normalization, :func:`invert_intensity`; ``item``
    defaults to ``{"image": image}``) and, with ``clip``, :func:`clip_to_input`. A per-axis ``scale`` that
    upscales another axis than the image's thickest is applied to the thickest (:func:`thick_axis_swap`; the
    note says so, and a warning naming ``name``).
    """
    item = {"image": image} if item is None else item
    swap = thick_axis_swap(image, scale, name)
    if swap is not None:
        logger.warning(f"input '{name}': {swap[2]}")
        image = swap_axes(image, *swap[:2])
    if isinstance(network, torch.nn.Module):
        network.eval()
    batch = image.unsqueeze(0)
    if hasattr(batch, "is_batch"):
        batch.is_batch = True
    out = inferer(batch, network)[0]
    if not is_image(out):
        out = image_like(out, image, meta={})
    out.affine = sr_affine(image.affine, tuple(o // i for o, i in zip(out.shape[1:], image.shape[1:])))
    if swap is not None:
        out = swap_axes(out, *swap[:2])
    if postprocessing is not None:
        mapped = postprocessing(out, item)
        out = mapped if is_image(mapped) else image_like(mapped, out, affine=out.affine)
    if clip:
        out = clip_to_input(out, item)
    return out, None if swap is None else swap[2]


def write_image(image: Any, target: str | os.PathLike, source: str | os.PathLike, slice_factor: int = 1) -> list[str]:
    """Write an SR result of the input file ``source`` to ``target``: DICOM next to a DICOM input (unless the
    target is NIfTI; ``slice_factor``: HR slices per input slice), PNG/TIFF in the source's bit depth, else
    NIfTI; returns the files written."""
    target = Path(target)
    if is_dicom(source) and not target.name.endswith(NIFTI_SUFFIXES):
        return save_dicom(image, target, source, slice_factor=slice_factor)
    if target.suffix.lower() in IMAGE_SUFFIXES:
        photo = Path(source).suffix.lower() in (*IMAGE_SUFFIXES, ".jpg", ".jpeg")
        return [save_image_2d(image, target, source if photo else None)]
    return [save_nifti(image, target)]


def remove_stale_outputs(target: str | os.PathLike) -> list[Path]:
    """Remove what a killed write of ``target`` left behind (its hidden temp files and DICOM temp folders),
    as checkpoint temps are removed at the start of a training run. Returns the removed paths."""
    import shutil

    from medsr.pipeline.io import remove_stale_temps

    target = Path(target)
    removed = remove_stale_temps(target.parent, target.name)
    if target.parent.is_dir():
        for d in target.parent.glob(f".{target.name}.*.tmp"):
            if d.is_dir():
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    return removed


def swap_axes(img: Any, a: int, b: int) -> Any:
    """Swap spatial axes ``a`` and ``b`` of a channel-first image, its affine's columns with them (the world
    position of every voxel is unchanged)."""
    perm = [0, *range(1, img.ndim)]
    perm[1 + a], perm[1 + b] = perm[1 + b], perm[1 + a]
    aff = torch.as_tensor(img.affine, dtype=torch.float64).clone()
    aff[:, [a, b]] = aff[:, [b, a]]
    meta = {k: v for k, v in img.meta.items() if k != "affine"}
    return image_like(img.as_tensor().permute(*perm).contiguous(), img, affine=aff, meta=meta)


def thick_axis_swap(img: torch.Tensor, scale: Sequence[int] | None, name: str) -> tuple[int, int, str] | None:
    """For a per-axis scale that upscales one axis: ``(that axis, the input's thickest axis, a note saying
    so)`` when they differ (the axes to swap), else ``None``.

    Raises:
        MedsrError: naming the axis, when the thickest axis is ambiguous (two axes share the largest spacing).
    """
    from medsr.transforms.geometry import spacing_of

    if scale is None or len(set(scale)) == 1:
        return None
    up = [a for a, f in enumerate(scale) if f > min(scale)]
    if len(up) != 1:
        return None
    spacing = spacing_of(img)
    thick = max(spacing)
    axis = up[0]
    if spacing[axis] >= thick * 0.999:
        return None
    thickest = [a for a, s in enumerate(spacing) if s >= thick * 0.999]
    if len(thickest) > 1:
        raise MedsrError(
            f"input '{name}': --scale {tuple(scale)} upscales axis {axis} ({spacing[axis]:g} mm), but axes "
            f"{thickest} are thicker ({thick:g} mm); give the factor on the axis to upscale"
        )
    return (
        axis,
        thickest[0],
        (
            f"reoriented: --scale {tuple(scale)} applied to axis {thickest[0]} ({thick:g} mm, the thick one), "
            f"not axis {axis} ({spacing[axis]:g} mm)"
        ),
    )


def clip_to_input(output: torch.Tensor, item: dict, key: str = "image") -> torch.Tensor:
    """Clip ``output`` to the value range of the input in ``item`` (before its normalization).

    The normalization (:mod:`medsr.transforms.intensity`) stores the input's range as ``min``/``max`` in
    ``meta["medsr_norm"]``; without it the output is returned as it is.
    """
    from medsr.transforms._utils import NORM_KEY

    src = item.get(key)
    params = getattr(src, "meta", {}).get(NORM_KEY) if src is not None else None
    if not isinstance(params, dict) or params.get("input_min") is None or params.get("input_max") is None:
        return output
    lo, hi = float(params["input_min"]), float(params["input_max"])
    clipped = output.clamp(lo, hi)
    if is_image(output) and not is_image(clipped):  # an ImageTensor's data (a MetaTensor stays one)
        meta = {k: v for k, v in output.meta.items() if k != "affine"} if isinstance(output, ImageTensor) else {}
        clipped = image_like(clipped, output, affine=output.affine, meta=meta)
    return clipped


class SRFileInference:
    """Upscale image files with a trained generator: read, normalize, sliding windows, map back, write.

    Args:
        network: the generator (LR in, HR out), already holding its weights.
        files: input paths (a file, a DICOM folder) or datalist items with an ``image`` key.
        output_dir: where outputs go when ``outputs`` does not name them.
        preprocessing: dictionary transform turning ``{"image": path}`` into a channel-first normalized
            MetaTensor under ``image`` (LoadImage + channel-first + intensity normalization).
        postprocessing: callable mapping ``(output, preprocessed_item)`` back to the input's intensity
            units (the inverse of the normalization); ``None`` keeps network units.
        inferer: an :class:`SRSlidingWindowInferer`.
        device: where the network runs.
        outputs: explicit output paths, one per input (``.nii``/``.nii.gz`` or, for DICOM inputs, ``.dcm``
            or a folder name); default ``output_path_for(input, output_dir)``.
        spatial_dims: 2 or 3; a 3D read of a 2D image with one slice is squeezed to 2D.
        progress: a tqdm bar over files.
        channels_last: run the network in channels-last memory format (faster convolutions on CPU and GPU;
            same values), see :func:`medsr.networks.optimize_for_inference`.
        compile: also ``torch.compile`` the network with frozen weights; pays off for many windows of one
            size (each new window shape compiles once).
        clip: clip outputs to the input's value range (:func:`clip_to_input`; magnitude images gain no
            negative values or overshoot); ``False`` keeps the network's raw values.

    A per-axis scale that upscales one axis (``(1, 1, 4)``) is applied to the input's thickest axis: when
    that is another axis, the two axes are swapped for the network and back for the output, and the record
    says so (``note``).

    ``run()`` returns one dict per input: ``input``, ``output`` (path), ``shape``, ``spacing``, ``seconds``.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        files: Sequence[str | os.PathLike | dict] | str,
        output_dir: str | os.PathLike,
        preprocessing: Callable[[dict], dict],
        inferer: SRSlidingWindowInferer,
        postprocessing: Callable[[torch.Tensor, dict], torch.Tensor] | None = None,
        device: str | torch.device = "cpu",
        outputs: Sequence[str | os.PathLike] | None = None,
        spatial_dims: int = 2,
        progress: bool = True,
        channels_last: bool = True,
        compile: bool = False,
        clip: bool = True,
    ) -> None:
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        self.files = [str(f["image"]) if isinstance(f, dict) else str(f) for f in files]
        if not self.files:
            raise ValueError("files: no input images given")
        for f in self.files:
            if not Path(f).exists():
                raise ValueError(f"input '{f}': no such file or folder")
        if outputs is not None and len(outputs) != len(self.files):
            raise ValueError(f"outputs: {len(outputs)} names for {len(self.files)} inputs")
        self.outputs = [Path(o) for o in outputs] if outputs is not None else None
        self.output_dir = Path(output_dir)
        # before any work: an output that is an input, a folder given as a file, a read-only folder
        check_outputs(
            self.files,
            [self.target_for(i, f) for i, f in enumerate(self.files)],
            suffixes=(*NIFTI_SUFFIXES, *IMAGE_SUFFIXES) if int(spatial_dims) == 2 else NIFTI_SUFFIXES,
            dicom_inputs=[is_dicom(f) for f in self.files],
        )
        self.spatial_dims = int(spatial_dims)
        self.network = optimize_for_inference(
            network, self.spatial_dims, compile=bool(compile), channels_last=bool(channels_last)
        )
        self.preprocessing = preprocessing
        self.postprocessing = postprocessing
        self.inferer = inferer
        self.device = torch.device(device)
        self.progress = progress
        self.clip = bool(clip)
        self.notes: dict[str, str | None] = {}
        self.records: list[dict[str, Any]] = []

    def target_for(self, index: int, path: str) -> Path:
        """The output path of input number ``index`` (``outputs[index]``, else a name in ``output_dir``)."""
        return self.outputs[index] if self.outputs is not None else output_path_for(path, self.output_dir)

    def _prepare(self, path: str) -> tuple[Any, dict]:
        try:
            item = self.preprocessing({"image": path})
        except Exception as exc:
            named = name_files(exc, [path], "input")
            if named is exc:
                raise
            raise named from exc
        img = as_image(item["image"])
        img = squeeze_spatial(img, self.spatial_dims)
        if img.ndim == 4 and img.shape[0] > 1 and img.meta.get("source_format") == "nifti":
            n = int(img.shape[0])
            raise MedsrError(
                f"input '{path}': a 4D image ({n} volumes of {tuple(img.shape[1:])}); medsr upscales one 2D or 3D "
                'image at a time: extract one volume first, e.g. python -c "import nibabel as nib; '
                f"i = nib.load('{path}'); nib.save(i.slicer[..., 0], 'volume0.nii.gz')\", then upscale "
                "volume0.nii.gz (a 3D volume needs a bundle run with --spatial_dims 3)"
            )
        if img.ndim - 1 != self.spatial_dims:
            if img.ndim - 1 == 3 and self.spatial_dims == 2:
                todo = "a 3D volume needs a model trained in 3D: add --spatial_dims 3 (and a 3D checkpoint)"
            else:
                todo = f"use a model trained in {img.ndim - 1}D (--spatial_dims {img.ndim - 1} and its checkpoint)"
            raise MedsrError(
                f"input '{path}': read as shape {tuple(img.shape)} (channel first), which is not a "
                f"{self.spatial_dims}D image; {todo}"
            )
        item["image"] = img
        return img, item

    def upscale(self, path: str) -> tuple[Any, dict]:
        """Return the SR image (channel first, input units, HR affine) for one input and its prepared item."""
        img, item = self._prepare(path)
        out, self.notes[path] = super_resolve(
            img, self.network, self.inferer, self.postprocessing, item, self.clip, self._scale(img.ndim - 1), path
        )
        return out, item

    def _scale(self, spatial_dims: int) -> tuple[int, ...] | None:
        """The network's factor per axis (from the network, else the inferer), ``None`` when unknown."""
        factors = getattr(self.network, "scale_factor", None) or getattr(self.inferer, "scale", None)
        if factors is None:
            return None
        if isinstance(factors, int):
            return (int(factors),) * spatial_dims
        factors = tuple(int(f) for f in factors)
        return factors if len(factors) == spatial_dims else None

    def run(self) -> list[dict[str, Any]]:
        """Upscale every input and write it; returns one record per input."""
        from tqdm import tqdm

        records = []
        for i, path in enumerate(tqdm(self.files, desc="upscale", disable=not self.progress)):
            start = time.perf_counter()
            remove_stale_outputs(self.target_for(i, path))
            out, item = self.upscale(path)
            target = self.target_for(i, path)
            src = item["image"]
            factor = int(out.shape[3] // src.shape[3]) if out.ndim == 4 and src.ndim == 4 else 1
            write_image(out, target, path, slice_factor=factor)
            spacing = torch.linalg.norm(torch.as_tensor(out.affine)[:3, : self.spatial_dims], dim=0)
            records.append(
                {
                    "input": path,
                    "output": str(target),
                    "shape": tuple(int(s) for s in out.shape[1:]),
                    "spacing": tuple(float(s) for s in spacing),
                    "seconds": time.perf_counter() - start,
                    "note": self.notes.get(path),
                }
            )
        self.records = records
        return records


def invert_intensity(output: torch.Tensor, item: dict, key: str = "image") -> torch.Tensor:
    """Map a network output back to the input's units with the normalization stored on ``item[key]``.

    The normalization transforms (:mod:`medsr.transforms.intensity`) store ``meta["medsr_norm"]``; without
    it the output is returned unchanged.
    """
    from medsr.transforms._utils import NORM_KEY

    src = item.get(key)
    params = getattr(src, "meta", {}).get(NORM_KEY) if src is not None else None
    if params is None:
        return output
    out = invert_normalization(output, params)
    if is_image(output) and not is_image(out):
        out = image_like(out, output, affine=output.affine)
    elif is_image(out) and is_image(output):
        out.affine = output.affine
    return out


def inference_normalization(key: str = "image") -> Callable[[dict], dict]:
    """The intensity normalization of every bundle's ``inferring``: percentile 0.5/99.5, not clipped; its
    parameters stay on the image (``meta["medsr_norm"]``), so :func:`invert_intensity` maps outputs back."""
    from medsr.transforms import PercentileNormalized

    return PercentileNormalized(keys=key, lower=0.5, upper=99.5, clip=False)


def read_normalized(item: dict, luminance: bool = True) -> dict:
    """``{"image": path}`` -> ``{"image": the image, channel first, normalized}``: :func:`inference_preprocessing`
    without MONAI for photos and 2D/3D NIfTI (:func:`medsr.pipeline.data.files.read_image`, then
    :func:`medsr.transforms._utils.percentile_normalize`, the same values and ``meta["medsr_norm"]``); other
    formats are read by MONAI's readers. The shipped-model path's preprocessing."""
    from medsr.pipeline.data.files import read_image

    image = read_image(str(item["image"]), luminance=luminance)
    return {**item, "image": normalize_for_inference(image)}


def normalize_for_inference(image: Any) -> Any:
    """:func:`inference_normalization` of one image without MONAI (percentile 0.5/99.5, not clipped)."""
    return percentile_normalize(image, lower=0.5, upper=99.5, clip=False)


def inference_preprocessing(luminance: bool = True) -> Callable[[dict], dict]:
    """The read-and-normalize transform of every bundle's ``inferring`` (``bundles/common/inference.json``):
    ``LoadImaged`` with :class:`~medsr.pipeline.data.readers.MedicalImageReader`, channel first, then
    :func:`inference_normalization`."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from medsr.pipeline.data.readers import MedicalImageReader

    return Compose(
        [
            LoadImaged(keys="image", reader=MedicalImageReader(luminance=luminance), image_only=True),
            EnsureChannelFirstd(keys="image"),
            inference_normalization(),
        ]
    )


def check_model_fits(network: torch.nn.Module, info: dict, spatial_dims: int, scale: Any, name: Any) -> None:
    """Refuse a named model that cannot do what was asked: a 3D model on a 2D image, or a ``--scale`` that
    contradicts the model's own factors (the model would silently give its own scale).

    Raises:
        MedsrError: one sentence naming the model, the input and what to do.
    """
    from medsr.transforms.geometry import parse_scale

    model = info.get("name") or info.get("path") or "the model"
    nd = int(network.spatial_dims)
    if nd > spatial_dims:
        raise MedsrError(
            f"--model {model}: a {nd}D model cannot upscale the {spatial_dims}D image '{name}'; choose a "
            f"{spatial_dims}D model (medsr models) or give a {nd}D volume"
        )
    if scale is None:
        return
    own = tuple(int(f) for f in network.scale_factor)
    try:
        text = str(scale).strip()
        axes = 3 if text.startswith(("(", "[")) and text.count(",") == 2 else nd
        wanted = tuple(int(f) for f in parse_scale(scale, axes))
    except ValueError as err:
        raise MedsrError(f"--scale {scale!r}: {err}") from err
    if len(wanted) == 3 and nd == 2:  # a 2D model on a volume: its factors in-plane, 1 across
        fits = sorted(wanted) == sorted((*own, 1))
    else:
        fits = wanted == own or (len(set(wanted)) == 1 and len(set(own)) == 1 and wanted[0] == own[0])
    if not fits:
        raise MedsrError(
            f"--model {model} upscales by {'x'.join(map(str, own))}, but --scale {scale} asks for "
            f"{'x'.join(map(str, wanted))}: drop --scale, or choose a model with that scale (medsr models)"
        )


def model_for_image(
    image: Any,
    model: str | os.PathLike | None = None,
    scale: Any = 2,
    device: str | torch.device = "cpu",
    network: torch.nn.Module | None = None,
    info: dict[str, Any] | None = None,
    name: Any = "image",
    tta: int = 1,
) -> tuple[torch.nn.Module, dict[str, Any], int | None]:
    """The generator for a channel-first ``image``: ``network``/``info``, the model file or shipped name
    ``model`` (which must fit the image and ``scale``, :func:`check_model_fits`; ``name`` names the image in
    its errors), else the shipped model that :func:`medsr.pipeline.models.pick_model` chooses for the image's
    dimension and ``scale`` (default 2). A 2D model on a 3D image runs in-plane, slice by slice across the
    thickest axis (largest spacing; the last axis on ties) with :class:`medsr.networks.SliceWise`. ``tta`` > 1
    wraps the 2D network in :class:`DihedralTTA` (flips and 90° rotations averaged).

    Returns:
        ``(network, info, slice_axis)``; ``slice_axis`` is ``None`` unless slice by slice.
    """
    from medsr.pipeline.models import find_model, load_model, pick_model
    from medsr.transforms.geometry import spacing_of

    sd = image.ndim - 1
    if network is None:
        if model is not None:
            network, info = load_model(find_model(model), device)
            check_model_fits(network, info, sd, scale, name)
        else:
            choice, _ = pick_model(sd, 2 if scale is None else scale)
            network, info = load_model(choice["path"], device)
    info = dict(info or {})
    if tta and int(tta) > 1:
        network = DihedralTTA(network, int(tta))
    if network.spatial_dims >= sd:
        return network, info, None
    from medsr.networks.generators import SliceWise

    spacing = spacing_of(image)
    slice_axis = max(range(3), key=lambda a: (round(spacing[a], 4), a))
    return SliceWise(network, slice_axis), info, slice_axis


def _inferer(
    image: Any, net: Any, slice_axis: int | None, device: Any, roi_size: Any, overlap: float, progress: bool
) -> SRSlidingWindowInferer:
    """Windows of 128 (2D, or in-plane slice by slice; 16 slices) or 64 (3D) LR voxels unless ``roi_size``;
    a progress bar over windows when ``progress`` and the image holds more than one window."""
    sd = image.ndim - 1
    if roi_size is None:
        roi_size = tuple(
            16 if a == slice_axis else (128 if sd == 2 or slice_axis is not None else 64) for a in range(sd)
        )
    roi = (roi_size,) * sd if isinstance(roi_size, int) else tuple(roi_size)
    several = any(int(s) > int(r) for s, r in zip(image.shape[1:], roi))
    factors = tuple(int(f) for f in net.scale_factor)
    return SRSlidingWindowInferer(
        roi_size,
        factors,
        overlap=overlap,
        mode="gaussian",
        sw_device=device,
        device="cpu",
        progress=progress and several,
    )


def upscale_with_model(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    network: torch.nn.Module | None = None,
    info: dict[str, Any] | None = None,
    model: str | os.PathLike | None = None,
    scale: Any = None,
    device: str | torch.device = "cpu",
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.25,
    progress: bool = False,
    channels_last: bool = True,
    clip: bool = True,
    tta: int = 1,
    report: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Super-resolve one file with a self-describing model (a shipped one by default), no bundle overrides.

    The model is chosen by :func:`model_for_image` (``network``/``info``, the file or name ``model``, or the
    shipped model for the input's dimension and ``scale``); ``progress`` shows a bar over windows.

    ``tta`` > 1 averages the 2D model over flips and 90° rotations (:class:`DihedralTTA`). ``report``: a JSON
    file for the data consistency of the output (:func:`medsr.pipeline.evaluation.data_consistency`: the output
    degraded with the model's evaluation degradation, against the input, next to cubic's).

    Returns:
        The record of :meth:`SRFileInference.run` plus ``model`` (name), ``model_path``, ``slice_axis``, ``tta``
        and, with ``report``, ``data_consistency``.
    """
    prep = read_normalized
    try:
        item = prep({"image": str(input_path)})
    except Exception as exc:  # a NaN, a bad header ...: the message names the input
        named = name_files(exc, [str(input_path)], "input")
        if named is exc:
            raise
        raise named from exc
    img = item["image"]
    img = squeeze_spatial(img, 2)  # a single-slice 3D read (one DICOM file, a 2D NIfTI) is 2D
    item["image"] = img
    sd = img.ndim - 1
    if sd not in (2, 3):
        raise ValueError(
            f"input '{input_path}': read as shape {tuple(img.shape)} (channel first); expected a 2D or 3D image"
        )
    net, info, slice_axis = model_for_image(img, model, scale, device, network, info, name=input_path, tta=tta)
    factors = tuple(int(f) for f in net.scale_factor)
    cached = {str(input_path): item}
    runner = SRFileInference(
        net,
        [str(input_path)],
        Path(output_path).parent,
        preprocessing=lambda d: cached.pop(str(d["image"])) if str(d["image"]) in cached else prep(d),
        inferer=_inferer(img, net, slice_axis, device, roi_size, overlap, progress),
        postprocessing=invert_intensity,
        device=device,
        outputs=[output_path],
        spatial_dims=sd,
        progress=False,
        channels_last=channels_last and slice_axis is None,
        clip=clip,
    )
    record = runner.run()[0]
    record.update(model=info.get("name", "?"), model_path=info.get("path"), slice_axis=slice_axis, tta=int(tta or 1))
    if report is not None:
        record["data_consistency"] = _upscale_consistency(input_path, record["output"], factors, info)
        from medsr.pipeline.io import write_json_atomic

        write_json_atomic({k: (str(v) if isinstance(v, Path) else v) for k, v in record.items()}, report)
    return record


def _upscale_consistency(
    input_path: str | os.PathLike, output_path: str | os.PathLike, factors: Sequence[int], info: dict[str, Any]
) -> dict[str, Any]:
    """:func:`medsr.pipeline.evaluation.data_consistency` of an ``upscale`` output, in the input's units."""
    from medsr.pipeline.data.readers import load_image
    from medsr.pipeline.evaluation.consistency import data_consistency
    from medsr.transforms.pairing import PairDegradation, eval_degradation

    lr, sr = load_image(input_path, luminance=True), load_image(output_path, luminance=True)
    while lr.ndim > sr.ndim and lr.shape[-1] == 1:
        lr = lr[..., 0]
    mode = eval_degradation(info.get("degradation") or "bicubic")
    return data_consistency(
        lr.as_tensor(), sr.as_tensor(), PairDegradation(scale_factor=tuple(factors), mode=mode),
        f"RMSE over the input's foreground between the output degraded with {mode} x{'x'.join(map(str, factors))} "
        "(the model's evaluation degradation, noise off) and the input",
    )  # fmt: skip


def upscale_array(
    image: np.ndarray | torch.Tensor,
    scale: Any = None,
    spacing: Sequence[float] | None = None,
    model: str | os.PathLike | torch.nn.Module | None = None,
    device: str | torch.device | None = None,
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.25,
    progress: bool = False,
    clip: bool = True,
) -> tuple[Any, tuple[float, ...]]:
    """Super-resolve an image in memory; see :func:`medsr.upscale` (the public name)."""
    from medsr.pipeline.models import get_device
    from medsr.transforms.geometry import spacing_of

    device = get_device(device)
    meta = is_meta_tensor(image)
    if meta:  # MONAI's convention: channel first, geometry in the affine
        img = image.detach().clone().float()
        if spacing is not None:
            sd = img.ndim - 1
            if len(spacing) != sd:
                raise ValueError(f"spacing: expected {sd} values for a {sd}D image, got {tuple(spacing)}")
            img.affine = _spacing_affine(spacing, img.affine)
    else:  # a plain 2D or 3D array, no channel axis
        data = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image.detach().cpu())
        if data.ndim not in (2, 3):
            raise ValueError(
                f"image: expected a 2D (H, W) or 3D (X, Y, Z) array, got shape {tuple(data.shape)} (pass a "
                "MetaTensor for channel-first data)"
            )
        spacing = (1.0,) * data.ndim if spacing is None else tuple(float(s) for s in spacing)
        if len(spacing) != data.ndim:
            raise ValueError(f"spacing: expected {data.ndim} values for a {data.ndim}D image, got {spacing}")
        img = ImageTensor(data.float()[None], affine=_spacing_affine(spacing))
    if img.ndim - 1 not in (2, 3):
        raise ValueError(f"image: expected a 2D or 3D image (channel first), got shape {tuple(img.shape)}")
    given = model if isinstance(model, torch.nn.Module) else None
    if given is not None:
        given = given.to(device).eval()
    path = None if given is not None else model
    item = {"image": normalize_for_inference(img)}
    norm = item["image"]
    net, _, slice_axis = model_for_image(norm, path, scale, device, given, {} if given is not None else None)
    inferer = _inferer(norm, net, slice_axis, device, roi_size, overlap, progress)
    out, _ = super_resolve(norm, net, inferer, invert_intensity, item, clip, tuple(int(f) for f in net.scale_factor))
    hr_spacing = tuple(float(s) for s in spacing_of(out))
    if meta:
        return out, hr_spacing
    return out[0].detach().cpu().numpy(), hr_spacing


def _spacing_affine(spacing: Sequence[float], affine: Any = None) -> torch.Tensor:
    """``affine`` (default: identity) with its first ``len(spacing)`` axes scaled to ``spacing`` mm."""
    aff = torch.eye(4, dtype=torch.float64) if affine is None else torch.as_tensor(affine, dtype=torch.float64).clone()
    for axis, s in enumerate(spacing):
        norm = torch.linalg.norm(aff[:3, axis])
        aff[:3, axis] = aff[:3, axis] * (float(s) / float(norm)) if norm > 0 else 0.0
        if norm == 0:
            aff[axis, axis] = float(s)
    return aff
