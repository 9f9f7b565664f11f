"""Light image files: PNG/JPEG/TIFF/BMP and NIfTI read without MONAI, as the upscale path needs them.

:func:`read_image` gives what ``LoadImage`` with :class:`~medsr.pipeline.data.readers.MedicalImageReader` and
``EnsureChannelFirst`` give (``tests/data/test_light_files.py`` compares them on real files): the same float32
array in MONAI's axis order (a 2D image ``I[row, col]`` as ``arr[col, row]``), the same affine (NIfTI: the
sform when its code is set, else the qform, :func:`nifti_affine`; photos: the identity), channel first, as an
:class:`~medsr.transforms._utils.ImageTensor` with ``meta["source_format"]``/``["spacing_source"]``. Other
formats (DICOM files and series, Analyze, ``.mat``, 4D NIfTI) are read by MONAI's readers as before
(:func:`medsr.pipeline.data.readers.load_image`), which imports MONAI.

Also the one home of the format detection (:func:`detect_format`), :class:`ImageReadError` and the helpers the
MONAI readers (:mod:`medsr.pipeline.data.readers`) share with this module. numpy, nibabel and Pillow only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medsr.pipeline.errors import MedsrError

__all__ = [
    "ImageReadError",
    "detect_format",
    "nifti_affine",
    "read_image",
    "read_array",
    "LIGHT_FORMATS",
    "LUMINANCE_WEIGHTS",
    "NIFTI_SUFFIXES",
    "DICOM_SUFFIXES",
    "PHOTO_SUFFIXES",
    "MAT_SUFFIXES",
]

_logger = logging.getLogger("medsr.pipeline.data.readers")  # the readers' logger, as before the move

#: ITU-R BT.601 luma weights (R, G, B), the ones PIL's ``convert("L")`` uses.
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".img.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAT_SUFFIXES = (".mat",)
#: fields of the figshare ``cjdata`` struct that are images on the image grid
MAT_IMAGE_FIELDS = ("image", "tumorMask")
_MAT_ALIASES = {"mask": "tumorMask", "tumormask": "tumorMask", "image": "image"}
_FIGSHARE_FIELDS = ("image", "tumorMask", "tumorBorder", "label", "PID")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class ImageReadError(MedsrError):
    """A file could not be read; the message names the file and the problem.

    Attributes:
        path: the offending file or folder.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path!r}: {problem}")


def _suffix_of(path: str | os.PathLike) -> str:
    """Lower-case suffix, with ``.gz`` kept together with the one before it (``.nii.gz``)."""
    name = Path(path).name.lower()
    for suffix in sorted(NIFTI_SUFFIXES + DICOM_SUFFIXES + PHOTO_SUFFIXES + MAT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def _split_mat_field(path: str | os.PathLike) -> tuple[str, str | None]:
    """Split ``"x.mat#tumorMask"`` into ``("x.mat", "tumorMask")`` unless a file with the full name exists."""
    text = str(path)
    if "#" in text and not os.path.exists(text):
        base, _, fld = text.rpartition("#")
        if base.lower().endswith(MAT_SUFFIXES):
            return base, fld
    return text, None


def detect_format(path: str | os.PathLike) -> str:
    """Return the medsr format of a path: ``nifti``, ``dicom``, ``dicom-series``, ``image`` or ``mat``.

    The suffix decides; files without a known suffix are sniffed by their magic bytes.

    Raises:
        ImageReadError: the path does not exist or its type is not supported.
    """
    base, _ = _split_mat_field(path)
    p = Path(base)
    if p.is_dir():
        return "dicom-series"
    suffix = _suffix_of(p)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in PHOTO_SUFFIXES:
        return "image"
    if suffix in MAT_SUFFIXES:
        return "mat"
    if not p.exists():
        raise ImageReadError(p, "no such file or folder")
    with open(p, "rb") as fh:
        head = fh.read(1024)
    if head[128:132] == b"DICM":
        return "dicom"
    if head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff" or head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image"
    if head[:8] == _HDF5_SIGNATURE or head[512:520] == _HDF5_SIGNATURE or head[:10] == b"MATLAB 5.0":
        return "mat"
    raise ImageReadError(
        p,
        f"unsupported file type (suffix {suffix!r}, unknown magic bytes); medsr reads NIfTI {NIFTI_SUFFIXES}, "
        f"DICOM {DICOM_SUFFIXES} or DICOM series folders, images {PHOTO_SUFFIXES} and figshare .mat files",
    )


def _require_file(path: str) -> None:
    if os.path.isdir(path):
        raise ImageReadError(path, "is a folder, expected a file")
    if not os.path.exists(path):
        raise ImageReadError(path, "no such file")


def _to_luminance(arr: np.ndarray, channel_dim: int = -1) -> np.ndarray:
    """RGB(A) along ``channel_dim`` to one float32 luminance channel (alpha dropped)."""
    arr = np.moveaxis(arr, channel_dim, -1)
    if arr.shape[-1] not in (3, 4):
        raise ValueError(f"luminance needs 3 (RGB) or 4 (RGBA) channels, got {arr.shape[-1]}")
    weights = np.asarray(LUMINANCE_WEIGHTS, dtype=np.float32)
    return (arr[..., :3].astype(np.float32) @ weights).astype(np.float32)


def _normalise_pil_mode(img: Any) -> Any:
    """Palette/bilevel/CMYK/YCbCr images to RGB or L so the array is grey or RGB(A)."""
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    if img.mode in ("1",):
        return img.convert("L")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    return img


def nifti_affine(path: str | os.PathLike, tolerance: float = 1e-3) -> tuple[np.ndarray | None, str]:
    """The affine of a NIfTI file as nibabel (and FSL) choose it: the sform when its code is set, else the qform.

    Logs a warning naming the file when both are set and differ by more than ``tolerance`` (mm, any entry).
    Returns ``(None, "")`` for files that are not NIfTI-1/2 (Analyze).
    """
    import nibabel as nib

    try:
        hdr = nib.load(str(path)).header
        s_code, q_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    except Exception:  # noqa: BLE001 - Analyze and friends: MONAI's affine stands
        return None, ""
    sform, qform = hdr.get_sform(), hdr.get_qform()
    if s_code and q_code and not np.allclose(sform, qform, atol=tolerance, rtol=0):
        worst = float(np.max(np.abs(sform - qform)))
        _logger.warning(
            f"{str(path)!r}: qform and sform disagree (largest difference {worst:.4g} mm); using the sform "
            f"(code {s_code}), as nibabel and FSL do; check the header if the image looks misplaced"
        )
    if s_code:
        return np.asarray(sform, dtype=np.float64), "sform"
    if q_code:
        return np.asarray(qform, dtype=np.float64), "qform"
    return np.asarray(hdr.get_base_affine(), dtype=np.float64), "base"


# ------------------------------------------------------------------------------------------ light reading
#: what :func:`read_array` reads itself: photos and single-file NIfTI-1/2 (``.nii``, ``.nii.gz``) in 2D or 3D
LIGHT_FORMATS = ("image", "nifti")


def _read_photo(path: str, luminance: bool) -> tuple[np.ndarray, dict]:
    """:class:`~medsr.pipeline.data.readers.PhotoReader` (PIL, MONAI's ``PILReader`` axis order) without MONAI."""
    from PIL import Image

    _require_file(path)
    try:
        img = _normalise_pil_mode(Image.open(path))
        img.load()  # decode now, so a truncated file fails here with its name
    except Exception as err:
        raise ImageReadError(path, f"not a readable image file ({type(err).__name__}: {err})") from err
    arr = np.moveaxis(np.asarray(img), 0, 1)  # PIL rows/columns -> MONAI's (x, y)
    spatial = tuple(img.size)
    channel_dim: Any = float("nan") if arr.ndim == len(spatial) else -1
    arr, channel_dim = photo_channels(arr, channel_dim, luminance)
    meta = {"affine": np.eye(4), "spatial_shape": np.asarray(spatial), "original_channel_dim": channel_dim}
    return arr, meta


def photo_channels(arr: np.ndarray, channel_dim: Any, luminance: bool) -> tuple[np.ndarray, Any]:
    """A decoded photo's channels as medsr reads them: RGB(A) to one luminance channel when ``luminance``,
    grey + alpha to grey; returns the array and its ``original_channel_dim`` (NaN: no channel axis)."""
    if luminance and arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return _to_luminance(arr, -1), float("nan")
    if arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha: drop alpha
        return arr[..., 0], float("nan")
    return arr, channel_dim


def _read_nifti(path: str) -> tuple[np.ndarray, dict] | None:
    """A 2D/3D NIfTI-1/2 file as :class:`~medsr.pipeline.data.readers.NiftiReader` reads it (``None`` for
    anything else: 4D+ images and Analyze files go to MONAI's reader)."""
    import nibabel as nib

    _require_file(path)
    try:
        img = nib.load(path)
    except Exception as err:
        raise ImageReadError(path, f"not a readable NIfTI file ({type(err).__name__}: {err})") from err
    if len(img.shape) not in (2, 3) or not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return None
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as err:
        raise ImageReadError(
            path, f"NIfTI image data cannot be read, the file is truncated or corrupt ({type(err).__name__}: {err})"
        ) from err
    affine, source = nifti_affine(path)
    if affine is None:
        return None
    meta = {"affine": affine, "affine_source": source, "spatial_shape": np.asarray(arr.shape),
            "original_channel_dim": float("nan")}  # fmt: skip
    return arr, meta


def read_array(path: str | os.PathLike, luminance: bool = False) -> tuple[np.ndarray, dict] | None:
    """``(array, meta)`` of a photo or 2D/3D NIfTI file as the medsr readers give them (array not yet
    channel first, the file's dtype), or ``None`` when the file needs MONAI's readers.

    Raises:
        ImageReadError: a missing, unsupported or broken file (the message names it).
    """
    path = str(path)
    fmt = detect_format(path)
    if fmt == "image":
        arr, meta = _read_photo(path, luminance)
    elif fmt == "nifti" and Path(path).name.lower().endswith((".nii", ".nii.gz")):
        read = _read_nifti(path)
        if read is None:
            return None
        arr, meta = read
    else:
        return None
    meta.update(source_format=fmt, spacing_source="header" if fmt == "nifti" else "default", filename_or_obj=path)
    meta["original_affine"] = np.asarray(meta["affine"]).copy()
    return arr, meta


def read_image(path: str | os.PathLike, luminance: bool = False, dtype: Any = np.float32) -> Any:
    """One image file, channel first, with its affine: what ``LoadImage(image_only=True,
    ensure_channel_first=True, dtype=dtype)`` with :class:`~medsr.pipeline.data.readers.MedicalImageReader`
    gives, as an :class:`~medsr.transforms._utils.ImageTensor` for photos and 2D/3D NIfTI (no MONAI import),
    else (DICOM, Analyze, ``.mat``, 4D NIfTI) as that MONAI ``MetaTensor``.

    Raises:
        ImageReadError: a missing, unsupported or broken file (the message names it).
    """
    import torch

    from medsr.transforms._utils import ImageTensor

    read = read_array(path, luminance)
    if read is None:
        from medsr.pipeline.data.readers import load_image

        return load_image(path, luminance=luminance, dtype=dtype)
    arr, meta = read
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    data = torch.as_tensor(np.ascontiguousarray(arr))
    cdim = meta["original_channel_dim"]
    data = data[None] if isinstance(cdim, float) and np.isnan(cdim) else torch.movedim(data, int(cdim), 0)
    return ImageTensor(data, affine=meta["affine"], meta=meta)
