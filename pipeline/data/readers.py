"""Medical image readers for MONAI ``LoadImage``/``LoadImaged``.

Every reader here is a :class:`monai.data.ImageReader`, so a bundle uses it as
``LoadImaged(keys=["image", "mask"], reader=MedicalImageReader(luminance=True))`` or by dotted name
(``"reader": "medsr.pipeline.data.MedicalImageReader"``). They build on MONAI's readers
(:class:`~monai.data.NibabelReader`, :class:`~monai.data.PydicomReader`, :class:`~monai.data.ITKReader`;
photos are decoded by :mod:`medsr.pipeline.data.files`, the same code as the MONAI-free path) and add what medsr
needs:

* errors that name the file and the problem (:class:`ImageReadError`, a ``ValueError``);
* physical spacing as the affine for every format that has it, and ``meta["spacing_source"]`` saying where
  it came from (``"header"``, ``"PixelSpacing"``, ``"ImagerPixelSpacing"``, ``"UltrasoundRegions"``, or
  ``"default"`` when the format has none and 1.0 was used);
* ``meta["source_format"]`` (``"nifti"``, ``"dicom"``, ``"dicom-series"``, ``"image"``, ``"mat-figshare"``);
* RGB to one luminance channel on request (ITU-R BT.601 weights, as PIL's ``"L"`` mode, but in float);
* the figshare brain-tumour ``.mat`` (MATLAB v7.3 / HDF5 struct ``cjdata``), image and tumour mask on the
  same grid, ``label`` and ``PID`` in metadata.

Array convention (as MONAI's readers): spatial axis 0 runs along image columns (x), axis 1 along rows (y),
so a 2D image ``I[row, col]`` comes back as ``arr[col, row]``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader, ITKReader, NibabelReader, PydicomReader
from monai.data.meta_tensor import MetaTensor
from monai.utils import ensure_tuple

from medsr.pipeline.data.files import (
    _FIGSHARE_FIELDS,
    _HDF5_SIGNATURE,
    _MAT_ALIASES,
    DICOM_SUFFIXES,
    LUMINANCE_WEIGHTS,
    MAT_IMAGE_FIELDS,
    MAT_SUFFIXES,
    NIFTI_SUFFIXES,
    PHOTO_SUFFIXES,
    ImageReadError,
    _read_photo,
    _require_file,
    _split_mat_field,
    _suffix_of,
    _to_luminance,
    detect_format,
    nifti_affine,
)

__all__ = [
    "ImageReadError",
    "NiftiReader",
    "DicomReader",
    "DicomSeriesReader",
    "PhotoReader",
    "FigshareMatReader",
    "MedicalImageReader",
    "load_image",
    "nifti_affine",
    "read_figshare_mat",
    "detect_format",
    "LUMINANCE_WEIGHTS",
    "NIFTI_SUFFIXES",
    "DICOM_SUFFIXES",
    "PHOTO_SUFFIXES",
    "MAT_SUFFIXES",
]

_logger = logging.getLogger(__name__)


@dataclass
class _Loaded:
    """One file's data and metadata, as the medsr readers pass them between ``read`` and ``get_data``."""

    path: str
    obj: Any = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- helpers
def _spacing_affine(spacing: Sequence[float]) -> np.ndarray:
    affine = np.eye(4)
    for i, s in enumerate(spacing[:3]):
        affine[i, i] = float(s)
    return affine


def _finish_meta(meta: dict, arr: np.ndarray, *, source_format: str, spacing_source: str, path: str) -> dict:
    """Fill the metadata keys every medsr reader guarantees."""
    meta["source_format"] = source_format
    meta["spacing_source"] = spacing_source
    meta.setdefault("filename_or_obj", path)
    if "affine" not in meta:
        meta["affine"] = np.eye(4)
    meta.setdefault("original_affine", np.asarray(meta["affine"]).copy())
    if "spatial_shape" not in meta:
        meta["spatial_shape"] = np.asarray(arr.shape)
    if "original_channel_dim" not in meta:
        meta["original_channel_dim"] = float("nan") if arr.ndim == len(meta["spatial_shape"]) else -1
    return meta


def _stack(items: list[tuple[np.ndarray, dict]], paths: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Stack several files as channels (MONAI's convention), after checking they share a grid."""
    if len(items) == 1:
        return items[0]
    _, meta0 = items[0]
    for (_arr, meta), path in zip(items[1:], paths[1:]):
        if tuple(meta["spatial_shape"]) != tuple(meta0["spatial_shape"]):
            raise ImageReadError(
                path,
                f"spatial shape {tuple(meta['spatial_shape'])} differs from {paths[0]!r} "
                f"({tuple(meta0['spatial_shape'])}); cannot stack them as channels",
            )
        if not np.allclose(meta["affine"], meta0["affine"], atol=1e-4):
            raise ImageReadError(path, f"affine differs from {paths[0]!r}; cannot stack them as channels")
    meta = dict(meta0)
    cdim = meta0.get("original_channel_dim")
    if isinstance(cdim, (int, np.integer)) or (isinstance(cdim, float) and not math.isnan(cdim)):
        return np.concatenate([a for a, _ in items], axis=int(cdim)), meta
    meta["original_channel_dim"] = 0
    return np.stack([a for a, _ in items], axis=0), meta


class _MedsrReader(ImageReader):
    """Shared plumbing: one ``_Loaded`` per file in ``read``, per-file extraction and stacking in ``get_data``."""

    source_format = "?"

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs) -> Any:
        """Open every file (headers only where the format allows) and return handles for ``get_data``."""
        loaded = [self._open(str(name), **kwargs) for name in ensure_tuple(data)]
        return loaded if len(loaded) > 1 else loaded[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Return ``(array, metadata)``; several files are stacked as channels."""
        items = list(img) if isinstance(img, (list, tuple)) else [img]
        return _stack([self._extract(item) for item in items], [item.path for item in items])

    def _open(self, path: str, **kwargs) -> _Loaded:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extract(self, item: _Loaded) -> tuple[np.ndarray, dict]:  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------- NIfTI
class NiftiReader(_MedsrReader):
    """NIfTI-1/2 (and Analyze) through MONAI's :class:`~monai.data.NibabelReader`.

    Spacing and orientation come from the header affine (``spacing_source="header"``): the sform when its
    code is set, else the qform, as nibabel and FSL choose (:func:`nifti_affine`; ``meta["affine_source"]``
    says which), with a warning when both are set and disagree. Truncated or corrupt files raise
    :class:`ImageReadError` naming the file.

    Args:
        geometry_tolerance: largest qform/sform difference (mm) accepted without a warning.
        kwargs: passed to :class:`~monai.data.NibabelReader` (e.g. ``as_closest_canonical=True``).
    """

    source_format = "nifti"

    def __init__(self, geometry_tolerance: float = 1e-3, **kwargs):
        super().__init__()
        self.geometry_tolerance = float(geometry_tolerance)
        self._reader = NibabelReader(**kwargs)

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True when every name ends in a NIfTI/Analyze suffix."""
        return all(_suffix_of(f) in NIFTI_SUFFIXES for f in ensure_tuple(filename))

    def _open(self, path: str, **kwargs) -> _Loaded:
        _require_file(path)
        try:
            obj = self._reader.read(path, **kwargs)
        except Exception as err:
            raise ImageReadError(path, f"not a readable NIfTI file ({type(err).__name__}: {err})") from err
        return _Loaded(path, obj)

    def _extract(self, item: _Loaded) -> tuple[np.ndarray, dict]:
        try:
            arr, meta = self._reader.get_data(item.obj)
        except Exception as err:
            raise ImageReadError(
                item.path,
                f"NIfTI image data cannot be read, the file is truncated or corrupt ({type(err).__name__}: {err})",
            ) from err
        if not self._reader.as_closest_canonical:
            affine, source = nifti_affine(item.path, self.geometry_tolerance)
            if affine is not None:
                meta["affine"], meta["original_affine"] = affine, affine.copy()
                meta["affine_source"] = source
        return arr, _finish_meta(meta, arr, source_format="nifti", spacing_source="header", path=item.path)


# ----------------------------------------------------------------------------------------------- DICOM
def _dicom_spacing(ds: Any) -> tuple[tuple[float, float] | None, str]:
    """(row spacing, column spacing) in mm and where it came from; ``None`` when the file has none."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        value = ds.get(tag)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return (float(value[0]), float(value[1])), tag
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        region = regions[0]
        # PhysicalUnits 3 = cm; DICOM PS3.3 C.8.5.5.1.15
        if region.get("PhysicalUnitsXDirection") == 3 and region.get("PhysicalUnitsYDirection") == 3:
            dx, dy = float(region.PhysicalDeltaX) * 10.0, float(region.PhysicalDeltaY) * 10.0
            if dx > 0 and dy > 0:
                return (dy, dx), "UltrasoundRegions"
    return None, "default"


class DicomReader(_MedsrReader):
    """Single DICOM files through MONAI's :class:`~monai.data.PydicomReader`.

    pydicom decodes uncompressed, RLE, JPEG baseline and JPEG-2000 (with Pillow or pylibjpeg-openjpeg);
    transfer syntaxes pydicom cannot decode here (JPEG-lossless, JPEG-LS) fall back to ITK, whose wheel
    carries GDCM. Spacing comes from ``ImagePositionPatient``/``ImageOrientationPatient`` and ``PixelSpacing``;
    files without orientation still get their ``PixelSpacing``, ``ImagerPixelSpacing`` (X-ray) or ultrasound
    region spacing on a diagonal affine; ``meta["spacing_source"]`` says which. ``meta["modality"]`` and
    ``meta["patient_id"]`` are copied from the header.

    Args:
        luminance: turn RGB/YBR colour images into one luminance channel.
        kwargs: passed to :class:`~monai.data.PydicomReader`.
    """

    source_format = "dicom"

    def __init__(self, luminance: bool = False, **kwargs):
        super().__init__()
        self.luminance = luminance
        self._reader = PydicomReader(**kwargs)

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True for ``.dcm``/``.dicom``/``.ima`` names and for files with a DICOM preamble."""
        try:
            return all(detect_format(f) == "dicom" for f in ensure_tuple(filename))
        except ImageReadError:
            return False

    def _open(self, path: str, **kwargs) -> _Loaded:
        import pydicom
        from pydicom.errors import InvalidDicomError

        _require_file(path)
        try:
            ds = self._reader.read(path, **kwargs)
        except InvalidDicomError as err:
            raise ImageReadError(path, f"not a DICOM file (no DICOM preamble or header: {err})") from err
        except Exception as err:
            raise ImageReadError(path, f"DICOM header cannot be read ({type(err).__name__}: {err})") from err
        if not isinstance(ds, pydicom.Dataset):
            raise ImageReadError(path, "expected one DICOM file")
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise ImageReadError(path, f"DICOM file has no pixel data (SOP class {ds.get('SOPClassUID', '?')})")
        return _Loaded(path, ds)

    def _extract(self, item: _Loaded) -> tuple[np.ndarray, dict]:
        ds = item.obj
        self._reader.filenames = [item.path]
        self._reader.has_series = False
        try:
            arr, meta = self._reader.get_data(ds)
            decoder = "pydicom"
        except Exception as err:  # transfer syntaxes pydicom cannot decode here: ITK (GDCM) can
            try:
                arr, meta = _itk_single_file(item.path)
                decoder = "itk"
            except Exception as itk_err:
                raise ImageReadError(
                    item.path,
                    f"DICOM pixel data cannot be decoded (transfer syntax {_transfer_syntax(ds)}): "
                    f"pydicom: {type(err).__name__}: {err}; ITK: {type(itk_err).__name__}: {itk_err}",
                ) from err
        if int(ds.get("SamplesPerPixel", 1)) > 1 and arr.ndim == len(meta["spatial_shape"]):
            # PydicomReader counts the colour samples as a spatial axis: they are channels (last axis)
            meta["spatial_shape"] = np.asarray(arr.shape[:-1])
            meta["original_channel_dim"] = -1
        spatial = len(meta["spatial_shape"])
        has_geometry = "ImageOrientationPatient" in ds and "ImagePositionPatient" in ds
        spacing, source = _dicom_spacing(ds)
        if has_geometry and source == "PixelSpacing":
            source = "ImagePositionPatient"
        elif spacing is not None and decoder == "pydicom":
            # no orientation/position: keep the pixel spacing on a diagonal affine (axis 0 runs along columns)
            affine = _spacing_affine((spacing[1], spacing[0], 1.0)[: max(spatial, 2)] + (1.0,) * (3 - spatial))
            meta["affine"], meta["original_affine"] = affine, affine.copy()
        elif spacing is None and not has_geometry:
            source = "default"
        if self.luminance and arr.ndim == spatial + 1 and arr.shape[-1] in (3, 4):
            arr = _to_luminance(arr, -1)
            meta["original_channel_dim"] = float("nan")
        meta["modality"] = str(ds.get("Modality", ""))
        meta["patient_id"] = str(ds.get("PatientID", ""))
        meta["dicom_decoder"] = decoder
        return arr, _finish_meta(meta, arr, source_format="dicom", spacing_source=source, path=item.path)


def _transfer_syntax(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return f"{uid.name} ({uid})" if uid is not None else "unknown"


def _itk_single_file(path: str) -> tuple[np.ndarray, dict]:
    """Read one DICOM file with ITK and drop the singleton slice axis ITK adds to 2D images."""
    reader = ITKReader()
    arr, meta = reader.get_data(reader.read(path))
    shape = list(meta["spatial_shape"])
    if len(shape) == 3 and shape[-1] == 1 and arr.ndim == 3:
        arr = arr[..., 0]
        meta["spatial_shape"] = np.asarray(shape[:2])
    meta = {k: v for k, v in meta.items() if "|" not in str(k)}  # the raw tag dump is large; keep geometry
    return arr, meta


def _check_slice_sizes(path: str, uid: str, files: Sequence[str]) -> None:
    """Refuse a series whose slices differ in size (rows x columns), naming the sizes and a file of each."""
    import pydicom

    sizes: dict[tuple[int, int], str] = {}
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        except Exception:  # noqa: BLE001 - an unreadable file is ITK's to report
            continue
        sizes.setdefault((int(ds.get("Rows", 0)), int(ds.get("Columns", 0))), f)
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c} ({Path(f).name})" for (r, c), f in sizes.items())
        raise ImageReadError(
            path,
            f"DICOM series {uid} mixes slice sizes (rows x columns: {listed}); a series must have one size: "
            "move the odd slices to their own folder",
        )


class DicomSeriesReader(_MedsrReader):
    """A folder holding one DICOM series, read with ITK (GDCM: also JPEG-lossless and JPEG-LS).

    Slices are ordered by position and the slice spacing is the distance between positions, so the affine
    carries the true 3D spacing. A folder with more than one ``SeriesInstanceUID`` raises
    :class:`ImageReadError` listing them (pass ``series_uid`` to choose one).

    Args:
        series_uid: the series to read when the folder holds several.
        kwargs: passed to :class:`~monai.data.ITKReader`.
    """

    source_format = "dicom-series"

    def __init__(self, series_uid: str | None = None, **kwargs):
        super().__init__()
        self.series_uid = series_uid
        self._reader = ITKReader(**kwargs)

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True when every name is a folder."""
        return all(os.path.isdir(f) for f in ensure_tuple(filename))

    def _open(self, path: str, **kwargs) -> _Loaded:
        import itk

        if not os.path.isdir(path):
            raise ImageReadError(path, "a DICOM series must be a folder")
        names = itk.GDCMSeriesFileNames.New()
        names.SetUseSeriesDetails(False)  # group by SeriesInstanceUID only
        names.SetDirectory(path)
        uids = [str(u) for u in names.GetSeriesUIDs()]
        if not uids:
            raise ImageReadError(path, "folder holds no readable DICOM files")
        if self.series_uid is not None:
            if self.series_uid not in uids:
                raise ImageReadError(path, f"series {self.series_uid!r} not in folder (found {uids})")
            uid = self.series_uid
        elif len(uids) > 1:
            counts = ", ".join(f"{u} ({len(names.GetFileNames(u))} files)" for u in uids)
            raise ImageReadError(
                path,
                f"folder holds {len(uids)} DICOM series: {counts}; put each series in its own folder "
                "or pass series_uid",
            )
        else:
            uid = uids[0]
        files = [str(f) for f in names.GetFileNames(uid)]
        _check_slice_sizes(path, uid, files)
        try:
            obj = itk.imread(files if len(files) > 1 else files[0], **{**self._reader.kwargs, **kwargs})
        except Exception as err:
            raise ImageReadError(path, f"DICOM series {uid} cannot be read ({type(err).__name__}: {err})") from err
        return _Loaded(path, obj, {"series_uid": uid, "files": files})

    def _extract(self, item: _Loaded) -> tuple[np.ndarray, dict]:
        import pydicom

        arr, meta = self._reader.get_data(item.obj)
        meta = {k: v for k, v in meta.items() if "|" not in str(k)}
        first = pydicom.dcmread(item.extra["files"][0], stop_before_pixels=True)
        meta["series_uid"] = item.extra["series_uid"]
        meta["num_files"] = len(item.extra["files"])
        meta["modality"] = str(first.get("Modality", ""))
        meta["patient_id"] = str(first.get("PatientID", ""))
        source = "ImagePositionPatient" if "ImagePositionPatient" in first else _dicom_spacing(first)[1]
        return arr, _finish_meta(meta, arr, source_format="dicom-series", spacing_source=source, path=item.path)


# ---------------------------------------------------------------------------------------- PNG/JPEG/TIFF
class PhotoReader(_MedsrReader):
    """PNG, JPEG, TIFF and BMP, decoded by the light reader of :mod:`medsr.pipeline.data.files` (PIL, in MONAI's
    ``PILReader`` axis order): one decoding path for photos, with or without MONAI.

    These formats carry no physical spacing: the affine is the identity and ``meta["spacing_source"]`` is
    ``"default"``. Palette images become RGB; with ``luminance=True`` RGB(A) becomes one float32 channel
    ``0.299 R + 0.587 G + 0.114 B``.

    Args:
        luminance: turn colour images into one luminance channel.
    """

    source_format = "image"

    def __init__(self, luminance: bool = False):
        super().__init__()
        self.luminance = luminance

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True for PNG/JPEG/TIFF/BMP names."""
        return all(_suffix_of(f) in PHOTO_SUFFIXES for f in ensure_tuple(filename))

    def _open(self, path: str, **kwargs) -> _Loaded:
        return _Loaded(path, _read_photo(path, self.luminance))  # decoded now: a truncated file fails with its name

    def _extract(self, item: _Loaded) -> tuple[np.ndarray, dict]:
        arr, meta = item.obj
        return arr, _finish_meta(dict(meta), arr, source_format="image", spacing_source="default", path=item.path)


# -------------------------------------------------------------------------------------- figshare .mat
def _mat_field_name(name: str) -> str:
    resolved = _MAT_ALIASES.get(name.lower(), name)
    if resolved not in MAT_IMAGE_FIELDS:
        raise ValueError(f"mat_field {name!r}: expected one of {MAT_IMAGE_FIELDS} (or 'mask')")
    return resolved


def _read_mat_struct(path: str) -> dict[str, Any]:
    """Read the figshare ``cjdata`` struct into numpy, arrays in MONAI order (axis 0 = columns)."""
    _require_file(path)
    with open(path, "rb") as fh:
        head = fh.read(1024)
    is_hdf5 = head[:8] == _HDF5_SIGNATURE or _HDF5_SIGNATURE in head[:1024]
    if is_hdf5:
        return _read_mat_v73(path)
    if head[:10] == b"MATLAB 5.0":
        return _read_mat_v5(path)
    raise ImageReadError(path, "not a MATLAB .mat file (neither v7.3/HDF5 nor v5 header)")


def _read_mat_v73(path: str) -> dict[str, Any]:
    import h5py

    try:
        fh = h5py.File(path, "r")
    except Exception as err:
        raise ImageReadError(path, f"MATLAB v7.3 (HDF5) file cannot be opened ({type(err).__name__}: {err})") from err
    with fh:
        if "cjdata" not in fh:
            found = sorted(k for k in fh.keys() if not k.startswith("#"))
            raise ImageReadError(
                path,
                f"no struct 'cjdata' (found {found}); expected the figshare brain-tumour layout "
                f"with fields {_FIGSHARE_FIELDS}",
            )
        group = fh["cjdata"]
        missing = [k for k in ("image", "tumorMask") if k not in group]
        if missing:
            raise ImageReadError(path, f"struct 'cjdata' lacks field(s) {missing} (has {sorted(group.keys())})")
        # MATLAB v7.3 stores column-major arrays, so h5py sees them transposed: (cols, rows) = MONAI order.
        out: dict[str, Any] = {"image": np.asarray(group["image"][()]), "tumorMask": np.asarray(group["tumorMask"][()])}
        if "tumorBorder" in group:
            out["tumorBorder"] = np.asarray(group["tumorBorder"][()], dtype=np.float64).ravel()
        if "label" in group:
            out["label"] = int(np.asarray(group["label"][()]).ravel()[0])
        if "PID" in group:
            out["PID"] = _mat_string(group["PID"][()])
    return out


def _read_mat_v5(path: str) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as err:
        raise ImageReadError(path, f"MATLAB v5 file cannot be read ({type(err).__name__}: {err})") from err
    if "cjdata" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ImageReadError(path, f"no struct 'cjdata' (found {found}); expected the figshare brain-tumour layout")
    cj = mat["cjdata"]
    missing = [k for k in ("image", "tumorMask") if not hasattr(cj, k)]
    if missing:
        raise ImageReadError(path, f"struct 'cjdata' lacks field(s) {missing}")
    # v5 arrays come back in MATLAB (row, col) order: transpose to MONAI order
    out: dict[str, Any] = {"image": np.asarray(cj.image).T, "tumorMask": np.asarray(cj.tumorMask).T}
    if hasattr(cj, "tumorBorder"):
        out["tumorBorder"] = np.asarray(cj.tumorBorder, dtype=np.float64).ravel()
    if hasattr(cj, "label"):
        out["label"] = int(np.asarray(cj.label).ravel()[0])
    if hasattr(cj, "PID"):
        out["PID"] = str(cj.PID)
    return out


def _mat_string(value: Any) -> str:
    """MATLAB v7.3 char arrays are uint16 code points; numbers become their text."""
    arr = np.asarray(value)
    if arr.dtype.kind in "SU":
        return "".join(str(x.decode() if isinstance(x, bytes) else x) for x in arr.ravel())
    if arr.dtype.kind in "ui" and arr.size and arr.dtype.itemsize <= 2:
        return "".join(chr(int(c)) for c in arr.ravel() if int(c) != 0)
    flat = arr.ravel()
    return str(int(flat[0])) if flat.size == 1 and float(flat[0]).is_integer() else str(flat.tolist())


class FigshareMatReader(_MedsrReader):
    """The figshare brain-tumour ``.mat`` (Cheng et al.): struct ``cjdata`` with ``image``, ``tumorMask``,
    ``tumorBorder``, ``label`` and ``PID``.

    MATLAB v7.3 files (HDF5) are read with h5py (v5 files with scipy). ``mat_field`` picks the image
    (``"image"``) or the tumour mask (``"tumorMask"``, alias ``"mask"``); both come back on the same grid,
    and a path may name the field itself: ``"1.mat#tumorMask"``. ``meta["label"]`` (1 meningioma,
    2 glioma, 3 pituitary), ``meta["PID"]``/``meta["patient_id"]`` and ``meta["tumor_border"]`` are filled.
    The files carry no spacing: identity affine, ``spacing_source="default"``.

    Args:
        mat_field: the field returned when the path names none.
    """

    source_format = "mat-figshare"

    def __init__(self, mat_field: str = "image"):
        super().__init__()
        self.mat_field = _mat_field_name(mat_field)

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True for ``.mat`` names (with or without a ``#field``)."""
        return all(_split_mat_field(f)[0].lower().endswith(MAT_SUFFIXES) for f in ensure_tuple(filename))

    def _open(self, path: str, **kwargs) -> _Loaded:
        base, fld = _split_mat_field(path)
        fld = _mat_field_name(fld) if fld is not None else self.mat_field
        struct = _read_mat_struct(base)
        if struct["image"].shape != struct["tumorMask"].shape:
            raise ImageReadError(
                base,
                f"cjdata.image shape {struct['image'].shape} differs from cjdata.tumorMask {struct['tumorMask'].shape}",
            )
        return _Loaded(base, struct, {"field": fld})

    def _extract(self, item: _Loaded) -> tuple[np.ndarray, dict]:
        struct, fld = item.obj, item.extra["field"]
        arr = struct[fld]
        arr = arr.astype(np.uint8) if fld == "tumorMask" else arr
        meta: dict[str, Any] = {"mat_field": fld, "affine": np.eye(4), "spatial_shape": np.asarray(arr.shape)}
        if "label" in struct:
            meta["label"] = struct["label"]
        if "PID" in struct:
            meta["PID"] = meta["patient_id"] = struct["PID"]
        if "tumorBorder" in struct:
            meta["tumor_border"] = struct["tumorBorder"]
        meta["original_channel_dim"] = float("nan")
        return arr, _finish_meta(meta, arr, source_format="mat-figshare", spacing_source="default", path=item.path)


# ------------------------------------------------------------------------------------------- dispatcher
class MedicalImageReader(ImageReader):
    """One reader for every medsr format, chosen per path by :func:`detect_format`.

    Use it as ``LoadImaged(keys=["image", "mask"], reader=MedicalImageReader(luminance=True))`` or from a
    bundle config as ``"reader": "medsr.pipeline.data.MedicalImageReader"``. NIfTI, single DICOM files,
    DICOM series folders, PNG/JPEG/TIFF/BMP and figshare ``.mat`` files (``"x.mat#tumorMask"`` for the mask)
    are read by :class:`NiftiReader`, :class:`DicomReader`, :class:`DicomSeriesReader`,
    :class:`PhotoReader` and :class:`FigshareMatReader`.

    Nothing is read in :meth:`read`: errors (a missing or bad file) are raised from :meth:`get_data`, so
    ``LoadImage`` does not quietly fall back to another reader (MONAI's ITK reader would, for instance,
    read the first of two series in a folder).

    Args:
        luminance: colour (RGB/RGBA/YBR) images become one luminance channel.
        mat_field: ``.mat`` field for paths that name none: ``"image"`` or ``"tumorMask"``/``"mask"``.
        series_uid: the DICOM series to read from folders holding several.
        nifti_kwargs: extra arguments for :class:`~monai.data.NibabelReader`.
    """

    def __init__(
        self,
        luminance: bool = False,
        mat_field: str = "image",
        series_uid: str | None = None,
        nifti_kwargs: dict | None = None,
    ):
        super().__init__()
        self.luminance = luminance
        self.mat_field = _mat_field_name(mat_field)
        self.readers: dict[str, _MedsrReader] = {
            "nifti": NiftiReader(**(nifti_kwargs or {})),
            "dicom": DicomReader(luminance=luminance),
            "dicom-series": DicomSeriesReader(series_uid=series_uid),
            "image": PhotoReader(luminance=luminance),
            "mat": FigshareMatReader(mat_field=mat_field),
        }

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True when every path is a supported file type or a folder."""
        try:
            return all(detect_format(f) for f in ensure_tuple(filename))
        except ImageReadError:
            return False

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs) -> Any:
        """Remember the paths; reading happens in :meth:`get_data` (see the class docstring)."""
        items = [_Loaded(str(name), None, {"kwargs": kwargs}) for name in ensure_tuple(data)]
        return items if len(items) > 1 else items[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Read every path with the reader for its format and return ``(array, metadata)``."""
        items = list(img) if isinstance(img, (list, tuple)) else [img]
        results = []
        for item in items:
            reader = self.readers[detect_format(item.path)]
            opened = reader._open(item.path, **item.extra.get("kwargs", {}))
            results.append(reader._extract(opened))
        return _stack(results, [i.path for i in items])


def load_image(
    path: str | os.PathLike,
    *,
    luminance: bool = False,
    mat_field: str = "image",
    series_uid: str | None = None,
    ensure_channel_first: bool = True,
    dtype: Any = np.float32,
) -> MetaTensor:
    """Load one image (or DICOM series folder) as a channel-first MetaTensor with its affine.

    Args:
        path: a NIfTI, DICOM, PNG/JPEG/TIFF/BMP or figshare ``.mat`` file (``"x.mat#tumorMask"``), or a
            DICOM series folder.
        luminance: colour images become one luminance channel.
        mat_field: ``.mat`` field when the path names none.
        series_uid: DICOM series to read from a folder holding several.
        ensure_channel_first: add/move the channel axis first (``(C, *spatial)``).
        dtype: output dtype (``None`` keeps the file's).

    Raises:
        ImageReadError: the file is missing, unsupported or broken (the message names it).
    """
    from monai.transforms import LoadImage

    reader = MedicalImageReader(luminance=luminance, mat_field=mat_field, series_uid=series_uid)
    loader = LoadImage(image_only=True, ensure_channel_first=ensure_channel_first, dtype=dtype)
    return loader(str(path), reader=reader)


def read_figshare_mat(path: str | os.PathLike) -> dict[str, Any]:
    """Read a figshare brain-tumour ``.mat`` as an aligned pair plus its labels.

    Returns:
        ``{"image": MetaTensor (1, W, H), "mask": MetaTensor (1, W, H) uint8, "label": int,
        "PID": str, "tumor_border": ndarray}`` (``label``/``PID``/``tumor_border`` when present).
    """
    reader = FigshareMatReader()
    opened = reader._open(str(path))
    out: dict[str, Any] = {}
    for key, fld in (("image", "image"), ("mask", "tumorMask")):
        opened.extra["field"] = fld
        arr, meta = reader._extract(opened)
        out[key] = MetaTensor(arr[None], meta=meta)
    for key, meta_key in (("label", "label"), ("PID", "PID"), ("tumor_border", "tumor_border")):
        if meta_key in out["image"].meta:
            out[key] = out["image"].meta[meta_key]
    return out
