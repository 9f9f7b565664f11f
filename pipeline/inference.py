"""Super-resolution inference on files: sliding windows, HR geometry, NIfTI and DICOM writers.

The generator maps an LR image to an HR one ``scale`` times larger per axis. Large 2D/3D inputs go through
MONAI's :func:`~monai.inferers.sliding_window_inference` (which supports outputs on a scaled grid) with
Gaussian overlap blending; windows run on ``sw_device`` (the GPU when there is one) while the full volume
and the blended output stay on ``device`` (the CPU by default), so the whole volume never sits on the GPU.

Geometry: the output affine is :func:`medsr.transforms.geometry.sr_affine` of the input's (the inverse of the
pairing transform's LR affine), so the physical extent (field of view) is kept.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, sliding_window_inference

from medsr.networks import optimize_for_inference
from medsr.pipeline.errors import MedsrError, check_outputs, name_files
from medsr.pipeline.io import atomic_path
from medsr.transforms.geometry import sr_affine

__all__ = [
    "SRSlidingWindowInferer",
    "DihedralTTA",
    "save_image_2d",
    "inference_preprocessing",
    "upscale_with_model",
    "save_nifti",
    "save_dicom",
    "derived_dataset",
    "is_dicom",
    "SRFileInference",
    "output_path_for",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


class SRSlidingWindowInferer(Inferer):
    """Sliding-window SR inference with overlap blending; the output grid is ``scale`` times the input.

    Args:
        roi_size: window size in LR voxels per spatial axis.
        scale: int or per-axis factor (to set the output's affine; the blending infers it from the output).
        sw_batch_size: windows per forward pass.
        overlap: fraction of overlap between windows.
        mode: ``"gaussian"`` (default) or ``"constant"`` blending.
        sw_device: where each window runs (default: the network's device).
        device: where the whole output is assembled (default: CPU, so a large volume never fills the GPU).
        progress: show a progress bar over windows.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        scale: Sequence[int] | int,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        mode: str = "gaussian",
        sw_device: str | torch.device | None = None,
        device: str | torch.device | None = "cpu",
        progress: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap: expected a value in [0, 1), got {overlap}")
        self.roi_size = roi_size
        self.scale = scale
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.mode = mode
        self.sw_device = sw_device
        self.device = device
        self.progress = progress

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """Run ``network`` over ``inputs`` (``B, C, *S``); returns ``B, C_out, *(S * scale)`` on ``device``."""
        spatial_dims = inputs.ndim - 2
        roi = (self.roi_size,) * spatial_dims if isinstance(self.roi_size, int) else tuple(self.roi_size)
        if len(roi) != spatial_dims:
            raise ValueError(
                f"roi_size: expected {spatial_dims} values for a {spatial_dims}D input, got {self.roi_size!r}"
            )
        roi = tuple(min(r, s) for r, s in zip(roi, inputs.shape[2:]))  # never pad a small image up to the window
        sw_device = self.sw_device
        if sw_device is None and isinstance(network, torch.nn.Module):
            param = next(network.parameters(), None)
            sw_device = param.device if param is not None else None
        device = self.device if self.device is not None else inputs.device
        out = sliding_window_inference(
            inputs,
            roi,
            self.sw_batch_size,
            network,
            overlap=self.overlap,
            mode=self.mode,
            padding_mode="replicate",
            sw_device=sw_device,
            device=device,
            progress=self.progress,
        )
        scale = tuple(o // i for o, i in zip(out.shape[2:], inputs.shape[2:]))
        if isinstance(out, MetaTensor) and isinstance(inputs, MetaTensor):
            out.affine = sr_affine(inputs.affine, scale).to(torch.float64)
        return out


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
        affine = image.affine if isinstance(image, MetaTensor) else np.eye(4)
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
    """
    import pydicom
    from pydicom.uid import generate_uid

    ref_files = _dicom_files(Path(reference))
    if not ref_files:
        raise ValueError(f"reference '{reference}': no DICOM file found")
    ref = pydicom.dcmread(str(ref_files[0]), stop_before_pixels=True)
    if affine is None:
        affine = image.affine if isinstance(image, MetaTensor) else None
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
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    single = n_slices == 1
    normal = np.cross(col_dir, row_dir)
    base = derived_dataset(ref, description)
    target_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
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
            ds.SliceThickness = f"{spacing[2]:.6g}"
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


def output_path_for(input_path: str | os.PathLike, output_dir: str | os.PathLike, postfix: str = "sr") -> Path:
    """Default output name: ``<output_dir>/<input stem>_<postfix>.nii.gz`` (a DICOM input keeps DICOM)."""
    p = Path(input_path)
    name = p.name
    for suf in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".mha", ".nrrd", ".mat", ".h5"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    if is_dicom(p):
        return Path(output_dir) / (f"{name}_{postfix}.dcm" if p.is_file() else f"{name}_{postfix}")
    return Path(output_dir) / f"{name}_{postfix}.nii.gz"


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
        self.records: list[dict[str, Any]] = []

    def target_for(self, index: int, path: str) -> Path:
        """The output path of input number ``index`` (``outputs[index]``, else a name in ``output_dir``)."""
        return self.outputs[index] if self.outputs is not None else output_path_for(path, self.output_dir)

    def _prepare(self, path: str) -> tuple[MetaTensor, dict]:
        try:
            item = self.preprocessing({"image": path})
        except Exception as exc:
            named = name_files(exc, [path], "input")
            if named is exc:
                raise
            raise named from exc
        img = item["image"]
        if not isinstance(img, MetaTensor):
            img = MetaTensor(img)
        while img.ndim - 1 > self.spatial_dims and img.shape[-1] == 1:
            img = img[..., 0]
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

    @torch.no_grad()
    def upscale(self, path: str) -> tuple[MetaTensor, dict]:
        """Return the SR image (channel first, input units, HR affine) for one input and its prepared item."""
        img, item = self._prepare(path)
        self.network.eval()
        batch = img.unsqueeze(0)
        if hasattr(batch, "is_batch"):
            batch.is_batch = True
        out = self.inferer(batch, self.network)[0]
        if not isinstance(out, MetaTensor):
            out = MetaTensor(out)
        out.affine = sr_affine(img.affine, tuple(o // i for o, i in zip(out.shape[1:], img.shape[1:])))
        if self.postprocessing is not None:
            mapped = self.postprocessing(out, item)
            out = mapped if isinstance(mapped, MetaTensor) else MetaTensor(mapped, affine=out.affine)
        return out, item

    def run(self) -> list[dict[str, Any]]:
        """Upscale every input and write it; returns one record per input."""
        from tqdm import tqdm

        records = []
        for i, path in enumerate(tqdm(self.files, desc="upscale", disable=not self.progress)):
            start = time.perf_counter()
            out, _ = self.upscale(path)
            target = self.target_for(i, path)
            if is_dicom(path) and not target.name.endswith(NIFTI_SUFFIXES):
                save_dicom(out, target, path)
            elif target.suffix.lower() in IMAGE_SUFFIXES:
                save_image_2d(
                    out, target, path if Path(path).suffix.lower() in (*IMAGE_SUFFIXES, ".jpg", ".jpeg") else None
                )
            else:
                save_nifti(out, target)
            spacing = torch.linalg.norm(torch.as_tensor(out.affine)[:3, : self.spatial_dims], dim=0)
            records.append(
                {
                    "input": path,
                    "output": str(target),
                    "shape": tuple(int(s) for s in out.shape[1:]),
                    "spacing": tuple(float(s) for s in spacing),
                    "seconds": time.perf_counter() - start,
                }
            )
        self.records = records
        return records


def invert_intensity(output: torch.Tensor, item: dict, key: str = "image") -> torch.Tensor:
    """Map a network output back to the input's units with the normalization stored on ``item[key]``.

    The normalization transforms (:mod:`medsr.transforms.intensity`) store ``meta["medsr_norm"]``; without
    it the output is returned unchanged.
    """
    from medsr.transforms import NORM_KEY, invert_normalization

    src = item.get(key)
    params = getattr(src, "meta", {}).get(NORM_KEY) if src is not None else None
    if params is None:
        return output
    out = invert_normalization(output, params)
    if isinstance(output, MetaTensor) and not isinstance(out, MetaTensor):
        out = MetaTensor(out, affine=output.affine)
    elif isinstance(out, MetaTensor) and isinstance(output, MetaTensor):
        out.affine = output.affine
    return out


def inference_preprocessing(luminance: bool = True) -> Callable[[dict], dict]:
    """The read-and-normalize transform of every bundle's ``inferring`` (``bundles/common/inference.json``):
    ``LoadImaged`` with :class:`~medsr.pipeline.data.readers.MedicalImageReader`, channel first, percentile
    normalization (0.5/99.5, not clipped; its parameters are kept so outputs map back to input units)."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from medsr.pipeline.data.readers import MedicalImageReader
    from medsr.transforms import PercentileNormalized

    return Compose(
        [
            LoadImaged(keys="image", reader=MedicalImageReader(luminance=luminance), image_only=True),
            EnsureChannelFirstd(keys="image"),
            PercentileNormalized(keys="image", lower=0.5, upper=99.5, clip=False),
        ]
    )


def upscale_with_model(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    network: torch.nn.Module | None = None,
    info: dict[str, Any] | None = None,
    model: str | os.PathLike | None = None,
    scale: Any = 2,
    device: str | torch.device = "cpu",
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.25,
    progress: bool = False,
    channels_last: bool = True,
    tta: int = 1,
    report: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Super-resolve one file with a self-describing model (a shipped one by default), no bundle overrides.

    The model is ``network``/``info`` (from :func:`medsr.pipeline.models.load_model`), or the file ``model``,
    or the shipped model that :func:`medsr.pipeline.models.pick_model` chooses for the input's dimension and
    ``scale``. A 3D input given to a 2D model is upscaled in-plane, slice by slice across its thickest axis
    (largest spacing; the last axis on ties) with :class:`medsr.networks.SliceWise`.

    ``tta`` > 1 averages the 2D model over flips and 90° rotations (:class:`DihedralTTA`). ``report``: a JSON
    file for the data consistency of the output (:func:`medsr.pipeline.evaluation.data_consistency`: the output
    degraded with the model's evaluation degradation, against the input, next to cubic's).

    Returns:
        The record of :meth:`SRFileInference.run` plus ``model`` (name), ``model_path``, ``slice_axis``, ``tta``
        and, with ``report``, ``data_consistency``.
    """
    from medsr.networks import SliceWise
    from medsr.pipeline.models import load_model, pick_model
    from medsr.transforms.geometry import spacing_of

    prep = inference_preprocessing()
    item = prep({"image": str(input_path)})
    img = item["image"]
    while img.ndim > 3 and img.shape[-1] == 1:  # a single-slice 3D read (one DICOM file, a 2D NIfTI) is 2D
        img = img[..., 0]
    item["image"] = img
    sd = img.ndim - 1
    if sd not in (2, 3):
        raise ValueError(
            f"input '{input_path}': read as shape {tuple(img.shape)} (channel first); expected a 2D or 3D image"
        )
    if network is None:
        if model is not None:
            network, info = load_model(model, device)
            slice_wise = network.spatial_dims < sd
        else:
            choice, slice_wise = pick_model(sd, scale)
            network, info = load_model(choice["path"], device)
    else:
        slice_wise = network.spatial_dims < sd
    info = dict(info or {})
    slice_axis = None
    net = DihedralTTA(network, tta) if tta and int(tta) > 1 else network
    if slice_wise:
        spacing = spacing_of(img)
        slice_axis = max(range(3), key=lambda a: (round(spacing[a], 4), a))
        net = SliceWise(net, slice_axis)
    factors = tuple(int(f) for f in net.scale_factor)
    if roi_size is None:
        roi_size = tuple(16 if a == slice_axis else (128 if sd == 2 or slice_wise else 64) for a in range(sd))
    inferer = SRSlidingWindowInferer(
        roi_size, factors, overlap=overlap, mode="gaussian", sw_device=device, device="cpu"
    )
    cached = {str(input_path): item}
    runner = SRFileInference(
        net,
        [str(input_path)],
        Path(output_path).parent,
        preprocessing=lambda d: cached.pop(str(d["image"])) if str(d["image"]) in cached else prep(d),
        inferer=inferer,
        postprocessing=invert_intensity,
        device=device,
        outputs=[output_path],
        spatial_dims=sd,
        progress=progress,
        channels_last=channels_last and not slice_wise,
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
