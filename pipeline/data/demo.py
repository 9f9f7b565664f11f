"""The embedded demo dataset: real images that pip packages ship, built offline into a cache folder.

Sources (located with :mod:`importlib.resources`, nothing is downloaded):

* nilearn: the MNI ICBM152 2009a (nonlinear symmetric) T1 template, 1 mm, 197×233×189, with its grey- and
  white-matter probability maps. Brain mask = T1 > 0; tissue label map 0 background, 1 CSF/other brain,
  2 grey matter, 3 white matter (the most probable class inside the brain mask).
* scikit-image: ``retina.jpg`` (fundus photograph, DICOM modality code ``OP``) and ``ihc.png``
  (immunohistochemistry, slide microscopy ``SM``).

What gets built under ``<root>/demo``:

* ``datalist_3d.json``: 3D slabs of the T1 along the axial axis (image, ``mask`` brain mask, ``label`` tissue).
* ``datalist_2d.json``: 2D slices along all three axes with at least 10 % brain (written as 2D NIfTI whose
  affine holds the in-plane spacing and the slice's position), plus 128×128 tiles of the two photographs
  (PNG, RGB) with a foreground/tissue ``mask``.
* ``datalist_2d_<modality>.json`` per modality, ``mni152/`` the full volumes, ``manifest.json``.

Splits are spatial: along each axis the slice range is cut into slabs assigned to training/validation/
test, with a gap of :data:`GAP_SLICES` slices between slabs of different splits, so no slice has its
neighbour in another split; photograph tiles are cut into bands with a :data:`GAP_PIXELS` gap. (Slices of
different orientations of one template necessarily intersect: it is one brain.)

The build is idempotent and atomic: it happens in a temporary folder that replaces ``<root>/demo`` only
once complete, and ``manifest.json`` (builder version, source package versions and hashes, every output
file's size and hash) decides whether a later call has anything to do.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.resources
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsr.pipeline.io import build_folder_atomic, sha256_of, write_json_atomic

__all__ = [
    "DEMO_VERSION",
    "DEMO_DIRNAME",
    "demo_root",
    "ensure_demo_dataset",
    "demo_sources",
    "slab_ranges",
    "MIN_BRAIN_FRACTION",
    "GAP_SLICES",
    "GAP_PIXELS",
    "TILE_SIZE",
]

DEMO_VERSION = "1"
DEMO_DIRNAME = "demo"
MIN_BRAIN_FRACTION = 0.10
GAP_SLICES = 3
GAP_PIXELS = 32
TILE_SIZE = 128
PLANES = ("sagittal", "coronal", "axial")  # slice axis 0, 1, 2 of the RAS template
#: relative widths of the slabs along a slice axis (2D) ...
PATTERN_2D = (("training", 3), ("validation", 1), ("training", 3), ("test", 1), ("training", 2))
#: ... along the axial axis for the 3D slabs (thicker validation/test slabs for 3D patches) ...
PATTERN_3D = (("training", 4), ("validation", 3), ("training", 3), ("test", 3), ("training", 3))
#: ... and along the rows of the photographs
PATTERN_PHOTO = {
    "retina": (("training", 4), ("validation", 2), ("training", 2), ("test", 2), ("training", 2)),
    "ihc": (("training", 1), ("validation", 1), ("test", 1)),
}
_MNI = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def demo_root() -> Path:
    """The cache folder: ``$MEDSR_DATA`` if set, else ``~/.cache/medsr``."""
    env = os.environ.get("MEDSR_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medsr"


def demo_sources() -> dict[str, dict[str, Any]]:
    """The package files the demo is built from: ``{name: {"path", "package", "version"}}``.

    Raises:
        FileNotFoundError: a package is installed without the file (the message says which).
    """
    nilearn_data = importlib.resources.files("nilearn") / "datasets" / "data"
    skimage_data = importlib.resources.files("skimage") / "data"
    table = {
        "mni_t1": ("nilearn", nilearn_data / _MNI.format("t1")),
        "mni_gm": ("nilearn", nilearn_data / _MNI.format("gm")),
        "mni_wm": ("nilearn", nilearn_data / _MNI.format("wm")),
        "retina": ("scikit-image", skimage_data / "retina.jpg"),
        "ihc": ("scikit-image", skimage_data / "ihc.png"),
    }
    out = {}
    for name, (package, ref) in table.items():
        path = Path(str(ref))
        if not path.is_file():
            raise FileNotFoundError(f"demo source {name!r}: {path} is missing from the installed {package} package")
        out[name] = {"path": str(path), "package": package, "version": importlib.metadata.version(package)}
    return out


def slab_ranges(start: int, stop: int, pattern: Sequence[tuple[str, float]], gap: int) -> list[tuple[str, int, int]]:
    """Cut ``[start, stop)`` into consecutive slabs by relative width, leaving ``gap`` indices out wherever
    the split changes, so neighbouring indices never land in different splits.

    Returns:
        ``[(split, slab_start, slab_stop), ...]`` (non-empty slabs only).
    """
    total = float(sum(w for _, w in pattern))
    bounds = [start]
    acc = 0.0
    for _, weight in pattern:
        acc += weight
        bounds.append(start + round((stop - start) * acc / total))
    out = []
    previous = None
    for (split, _), a, b in zip(pattern, bounds[:-1], bounds[1:]):
        if previous is not None and split != previous:
            a += gap
        if b > a:
            out.append((split, a, b))
        previous = split
    return out


# ------------------------------------------------------------------------------------------- building
class _Writer:
    """Writes files under the build folder and records them (size, hash) for the manifest."""

    def __init__(self, base: Path, progress: Any):
        self.base = base
        self.files: dict[str, dict[str, Any]] = {}
        self.progress = progress

    def _record(self, rel: str) -> str:
        path = self.base / rel
        self.files[rel] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
        return rel

    def nifti(self, rel: str, data: np.ndarray, affine: np.ndarray) -> str:
        import nibabel as nib

        path = self.base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
        img.header.set_xyzt_units("mm")
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        nib.save(img, str(path))
        return self._record(rel)

    def png(self, rel: str, data: np.ndarray) -> str:
        from PIL import Image

        path = self.base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # arrays here are (rows, cols[, 3]) as PIL expects
        Image.fromarray(np.ascontiguousarray(data)).save(path, format="PNG", compress_level=1)
        return self._record(rel)

    def json(self, rel: str, data: Any) -> str:
        write_json_atomic(data, self.base / rel)
        return self._record(rel)


def _slice_affine(affine: np.ndarray, axis: int, index: int) -> np.ndarray:
    """4×4 affine of slice ``index`` along ``axis``: columns 0-1 the in-plane axes, column 2 the normal."""
    inplane = [i for i in range(3) if i != axis]
    out = np.eye(4)
    out[:3, 0] = affine[:3, inplane[0]]
    out[:3, 1] = affine[:3, inplane[1]]
    out[:3, 2] = affine[:3, axis]
    voxel = np.zeros(4)
    voxel[axis], voxel[3] = index, 1.0
    out[:3, 3] = (affine @ voxel)[:3]
    return out


def _tissue_labels(brain: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """0 background, 1 CSF/other brain, 2 grey matter, 3 white matter (most probable inside the brain)."""
    gm_p, wm_p = gm.astype(np.float32) / 255.0, wm.astype(np.float32) / 255.0
    other = np.clip(1.0 - gm_p - wm_p, 0.0, 1.0)
    label = (np.argmax(np.stack([other, gm_p, wm_p]), axis=0) + 1).astype(np.uint8)
    label[~brain] = 0
    return label


def _photo_mask(name: str, rgb: np.ndarray) -> np.ndarray:
    """Foreground of the fundus photograph / tissue of the IHC image (rows, cols) as uint8 0/1."""
    from scipy import ndimage

    lum = rgb[..., :3].astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    if name == "retina":  # the fundus disc on a black background
        mask = ndimage.binary_fill_holes(ndimage.binary_opening(lum > 10.0, iterations=2))
    else:  # stained tissue against the bright slide
        mask = ndimage.gaussian_filter(lum, 2.0) < 215.0
        mask = ndimage.binary_opening(mask, iterations=2)
    return mask.astype(np.uint8)


def _plan_count(brain: np.ndarray) -> int:
    n = 0
    for axis in range(3):
        frac = brain.mean(axis=tuple(i for i in range(3) if i != axis))
        n += int((frac >= MIN_BRAIN_FRACTION).sum())
    return n


def _build(tmp: Path, sources: dict[str, dict[str, Any]], progress: bool) -> dict[str, Any]:
    import nibabel as nib
    from PIL import Image
    from tqdm.auto import tqdm

    start = time.perf_counter()
    t1_img = nib.load(sources["mni_t1"]["path"])
    affine = t1_img.affine.copy()
    t1 = np.asanyarray(t1_img.dataobj)
    gm = np.asanyarray(nib.load(sources["mni_gm"]["path"]).dataobj)
    wm = np.asanyarray(nib.load(sources["mni_wm"]["path"]).dataobj)
    if not (t1.shape == gm.shape == wm.shape):
        raise ValueError(f"demo sources: T1 {t1.shape}, GM {gm.shape}, WM {wm.shape} are not on one grid")
    brain = t1 > 0
    label = _tissue_labels(brain, gm, wm)
    mask = brain.astype(np.uint8)
    photos = {name: np.asarray(Image.open(sources[name]["path"]).convert("RGB")) for name in ("retina", "ihc")}

    total = 3 + len(slab_ranges(0, t1.shape[2], PATTERN_3D, GAP_SLICES)) + _plan_count(brain) + len(photos)
    bar = tqdm(total=total, desc="medsr demo", unit="step", disable=not progress, file=sys.stderr)
    w = _Writer(tmp, bar)
    sections_2d: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    sections_3d: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    common = {"source": "mni152_2009a_t1", "modality": "MR", "patient": "mni152_2009a"}

    volumes = {
        "image": w.nifti("mni152/t1.nii.gz", t1, affine),
        "mask": w.nifti("mni152/brain_mask.nii.gz", mask, affine),
        "label": w.nifti("mni152/tissue.nii.gz", label, affine),
    }
    bar.update(3)

    # 3D slabs along the axial axis, over the slices that hold brain
    z_brain = np.flatnonzero(brain.any(axis=(0, 1)))
    for split, z0, z1 in slab_ranges(int(z_brain[0]), int(z_brain[-1]) + 1, PATTERN_3D, GAP_SLICES):
        shift = np.eye(4)
        shift[2, 3] = z0
        slab_affine = affine @ shift
        stem = f"3d/mri/{split}_z{z0:03d}-{z1:03d}"
        entry = {
            "image": w.nifti(f"{stem}_image.nii.gz", t1[:, :, z0:z1], slab_affine),
            "mask": w.nifti(f"{stem}_mask.nii.gz", mask[:, :, z0:z1], slab_affine),
            "label": w.nifti(f"{stem}_label.nii.gz", label[:, :, z0:z1], slab_affine),
            **common,
            "z_start": z0,
            "z_stop": z1,
        }
        sections_3d[split].append(entry)
        bar.update(1)

    # 2D slices along every axis with at least MIN_BRAIN_FRACTION brain
    for axis, plane in enumerate(PLANES):
        frac = brain.mean(axis=tuple(i for i in range(3) if i != axis))
        keep = np.flatnonzero(frac >= MIN_BRAIN_FRACTION)
        ranges = slab_ranges(int(keep[0]), int(keep[-1]) + 1, PATTERN_2D, GAP_SLICES)
        split_of = {k: s for s, a, b in ranges for k in range(a, b)}
        for k in keep:
            k = int(k)
            if k not in split_of:  # a gap slice (or a hole in the brain range)
                bar.update(1)
                continue
            aff = _slice_affine(affine, axis, k)
            stem = f"2d/mri/{plane}/{plane}_{k:03d}"
            index = (slice(None),) * axis + (k,)  # a view: np.take copies the whole volume's axis walk
            entry = {
                "image": w.nifti(f"{stem}_image.nii.gz", t1[index], aff),
                "mask": w.nifti(f"{stem}_mask.nii.gz", mask[index], aff),
                "label": w.nifti(f"{stem}_label.nii.gz", label[index], aff),
                **common,
                "plane": plane,
                "index": k,
            }
            sections_2d[split_of[k]].append(entry)
            bar.update(1)

    # 2D tiles of the photographs, bands of rows per split
    photo_info = {
        "retina": {"source": "skimage_retina", "modality": "OP", "patient": "skimage_retina", "min_fg": 0.5},
        "ihc": {"source": "skimage_ihc", "modality": "SM", "patient": "skimage_ihc", "min_fg": 0.3},
    }
    for name, rgb in photos.items():
        info = photo_info[name]
        fg = _photo_mask(name, rgb)
        rows, cols = fg.shape
        for split, r0, r1 in slab_ranges(0, rows, PATTERN_PHOTO[name], GAP_PIXELS):
            for top in range(r0, r1 - TILE_SIZE + 1, TILE_SIZE):
                for left in range(0, cols - TILE_SIZE + 1, TILE_SIZE):
                    tile_fg = fg[top : top + TILE_SIZE, left : left + TILE_SIZE]
                    if tile_fg.mean() < info["min_fg"]:
                        continue
                    stem = f"2d/{name}/{name}_r{top:04d}_c{left:04d}"
                    sections_2d[split].append(
                        {
                            "image": w.png(f"{stem}_image.png", rgb[top : top + TILE_SIZE, left : left + TILE_SIZE]),
                            "mask": w.png(f"{stem}_mask.png", tile_fg),
                            "source": info["source"],
                            "modality": info["modality"],
                            "patient": info["patient"],
                            "plane": "photo",
                            "index": top * cols + left,
                        }
                    )
        bar.update(1)
    bar.close()

    def _datalist(sections: dict[str, list[dict]], name: str, description: str) -> dict:
        return {
            "name": name,
            "description": description,
            "reference": "MNI ICBM152 2009a (nilearn); scikit-image retina.jpg, ihc.png",
            "numTraining": len(sections["training"]),
            "numValidation": len(sections["validation"]),
            "numTest": len(sections["test"]),
            **sections,
        }

    datalists = {
        "2d": w.json("datalist_2d.json", _datalist(sections_2d, "medsr-demo-2d", "2D MRI slices and photo tiles")),
        "3d": w.json("datalist_3d.json", _datalist(sections_3d, "medsr-demo-3d", "3D axial slabs of the MNI T1")),
    }
    modalities = sorted({e["modality"] for s in sections_2d.values() for e in s})
    for mod in modalities:
        subset = {s: [e for e in entries if e["modality"] == mod] for s, entries in sections_2d.items()}
        datalists[f"2d_{mod}"] = w.json(f"datalist_2d_{mod}.json", _datalist(subset, f"medsr-demo-2d-{mod}", mod))

    def _counts(sections: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
        out = {}
        for split, entries in sections.items():
            per: dict[str, int] = {}
            for e in entries:
                key = e["modality"] if e.get("plane") in (None, "photo") else f"{e['modality']}-{e['plane']}"
                per[key] = per.get(key, 0) + 1
            per["total"] = len(entries)
            out[split] = dict(sorted(per.items()))
        return out

    summary = {
        "version": DEMO_VERSION,
        "counts": {"2d": _counts(sections_2d), "3d": _counts(sections_3d)},
        "modalities": {"MR": "MNI ICBM152 2009a T1 (1 mm)", "OP": "fundus photograph", "SM": "IHC histology"},
        "shapes": {
            "volume": list(t1.shape),
            "slab_3d": {
                e["image"]: [t1.shape[0], t1.shape[1], e["z_stop"] - e["z_start"]]
                for s in sections_3d.values()
                for e in s
            },
            "tile_2d": [TILE_SIZE, TILE_SIZE],
        },
        "label_classes": {"0": "background", "1": "CSF/other brain", "2": "grey matter", "3": "white matter"},
        "files": len(w.files) + 1,
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    return {"datalists": datalists, "volumes": volumes, "summary": summary, "files": w.files}


# ---------------------------------------------------------------------------------------- idempotence
def _source_fingerprint(sources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "package": s["package"],
            "version": s["version"],
            "file": Path(s["path"]).name,
            "sha256": sha256_of(s["path"]),
        }
        for name, s in sources.items()
    }


def _manifest_problem(folder: Path, fingerprint: dict, verify: bool) -> str | None:
    """Why ``folder`` is not a complete, current demo dataset (``None`` when it is)."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return "no manifest"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return f"unreadable manifest ({err})"
    if manifest.get("version") != DEMO_VERSION:
        return f"builder version {manifest.get('version')!r} != {DEMO_VERSION!r}"
    if manifest.get("sources") != fingerprint:
        return "source packages changed"
    for rel, info in manifest.get("files", {}).items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != info["size"]:
            return f"file {rel} missing or changed"
        if verify and sha256_of(path) != info["sha256"]:
            return f"file {rel} hash differs"
    return None


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """An exclusive lock on ``root/.demo.lock`` (POSIX), so two processes never build at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    with open(root / ".demo.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _result(root: Path, folder: Path, manifest: dict, built: bool) -> dict[str, Any]:
    return {
        "root": folder,
        "cache_root": root,
        "datalist_2d": folder / manifest["datalists"]["2d"],
        "datalist_3d": folder / manifest["datalists"]["3d"],
        "datalists": {k: folder / v for k, v in manifest["datalists"].items()},
        "volumes": {k: folder / v for k, v in manifest["volumes"].items()},
        "summary": manifest["summary"],
        "built": built,
    }


def ensure_demo_dataset(
    root: str | os.PathLike | None = None, progress: bool = True, *, force: bool = False, verify: bool = False
) -> dict[str, Any]:
    """Build the demo dataset under ``root/demo`` unless a complete, current one is there.

    Args:
        root: cache folder (default :func:`demo_root`).
        progress: show a tqdm progress bar on stderr while building.
        force: rebuild even if the dataset is current.
        verify: also re-hash every output file when checking an existing dataset.

    Returns:
        ``{"root": dataset folder, "cache_root": root, "datalist_2d": Path, "datalist_3d": Path,
        "datalists": {"2d", "3d", "2d_MR", "2d_OP", "2d_SM": Path}, "volumes": {"image", "mask", "label": Path},
        "summary": {...}, "built": bool}`` (``built`` is False when nothing had to be done).
    """
    root = Path(root).expanduser() if root is not None else demo_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / DEMO_DIRNAME
    sources = demo_sources()
    fingerprint = _source_fingerprint(sources)
    with _lock(root):
        if not force and _manifest_problem(folder, fingerprint, verify) is None:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            return _result(root, folder, manifest, built=False)
        with build_folder_atomic(folder, prefix=".demo-build-") as tmp:
            built = _build(tmp, sources, progress)
            manifest = {
                "version": DEMO_VERSION,
                "sources": fingerprint,
                "datalists": built["datalists"],
                "volumes": built["volumes"],
                "summary": built["summary"],
                "files": built["files"],
            }
            write_json_atomic(manifest, tmp / "manifest.json")  # written last: its presence marks completeness
    return _result(root, folder, manifest, built=True)
