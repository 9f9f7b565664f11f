"""MSD-style datalists: ``{"training": [...], "validation": [...], "test": [...]}``.

:func:`build_datalist` scans a folder or glob, pairs images with masks, reads patient IDs where the data
has them (figshare ``.mat`` ``PID``, DICOM ``PatientID``) and splits deterministically by patient so no
patient is in two splits. :func:`load_datalist` reads one section back with paths made absolute.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medsr.pipeline.data.readers import (
    DICOM_SUFFIXES,
    MAT_SUFFIXES,
    NIFTI_SUFFIXES,
    PHOTO_SUFFIXES,
    _split_mat_field,
    _suffix_of,
    detect_format,
)
from medsr.pipeline.io import write_json_atomic

__all__ = [
    "SECTIONS",
    "PATH_KEYS",
    "build_datalist",
    "load_datalist",
    "split_groups",
    "resolve_datalist",
    "split_datalist",
    "limit",
    "inference_inputs",
    "label_names",
    "check_items",
]

SECTIONS = ("training", "validation", "test")
#: entry keys whose values are paths (resolved by :func:`load_datalist`)
PATH_KEYS = ("image", "mask", "label")
_IMAGE_SUFFIXES = NIFTI_SUFFIXES + DICOM_SUFFIXES + PHOTO_SUFFIXES + MAT_SUFFIXES
#: filename rule for patient IDs when the data carries none: a token such as ``patient12``, ``sub-03``, ``case_7``
PATIENT_TOKEN = re.compile(r"(?i)(?:^|[\\/_.\- ])(?:patient|pat|subject|sub|case|pid)[-_ ]?([A-Za-z0-9]+)")


# ------------------------------------------------------------------------------------------------ scan
def _candidates(source: str | os.PathLike) -> tuple[list[Path], Path]:
    """Files (and DICOM series folders) under ``source`` and the folder paths are reported against."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        paths = sorted(Path(p) for p in globlib.glob(text, recursive=True))
        base = Path(os.path.commonpath([str(p.parent.resolve()) for p in paths])) if paths else Path.cwd()
        files = [p for p in paths if p.is_file() or p.is_dir()]
        if not files:
            raise ValueError(f"source {text!r}: the glob matches no files")
        return files, base
    root = Path(text)
    if not root.exists():
        raise ValueError(f"source {text!r}: no such folder or file")
    if root.is_file():
        return [root], root.parent
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"source {text!r}: the folder holds no files")
    return files, root


def _is_image(path: Path) -> bool:
    if path.is_dir():
        return True
    if _suffix_of(path) in _IMAGE_SUFFIXES:
        return True
    try:  # DICOM files often have no suffix
        return detect_format(path) in ("dicom", "nifti", "image", "mat")
    except Exception:
        return False


def _fill_pattern(pattern: str, image: Path) -> Path:
    suffix = _suffix_of(image)
    stem = image.name[: len(image.name) - len(suffix)] if suffix and image.name.lower().endswith(suffix) else image.stem
    try:
        rel = pattern.format(stem=stem, name=image.name, suffix=image.name[len(stem) :], parent=image.parent.name)
    except (KeyError, IndexError) as err:
        raise ValueError(
            f"mask/label pattern {pattern!r}: unknown placeholder {err}; use {{stem}}, {{name}}, {{suffix}}, {{parent}}"
        ) from err
    return (image.parent / rel).resolve()


def _dicom_info(path: Path) -> dict[str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=False)
    return {
        "patient_id": str(ds.get("PatientID", "") or ""),
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        "modality": str(ds.get("Modality", "") or ""),
    }


def _mat_info(path: Path) -> dict[str, Any]:
    from medsr.pipeline.data.readers import _read_mat_struct

    struct = _read_mat_struct(str(path))
    info: dict[str, Any] = {"modality": "MR"}  # the figshare set is T1-weighted contrast-enhanced MRI
    if "PID" in struct:
        info["patient_id"] = struct["PID"]
    if "label" in struct:
        info["tumor_class"] = struct["label"]
    return info


def _group_dicom_series(items: list[dict]) -> list[dict]:
    """Several DICOM files of one series in one folder become one entry: the folder."""
    by_folder: dict[tuple[Path, str], list[dict]] = {}
    rest = []
    for it in items:
        uid = it.get("series_uid")
        if it["format"] == "dicom" and uid:
            by_folder.setdefault((it["path"].parent, uid), []).append(it)
        else:
            rest.append(it)
    uids_per_folder: dict[Path, set[str]] = {}
    for folder, uid in by_folder:
        uids_per_folder.setdefault(folder, set()).add(uid)
    for (folder, _uid), group in by_folder.items():
        if len(group) > 1 and len(uids_per_folder[folder]) == 1:
            first = dict(group[0])
            first.update(path=folder, format="dicom-series", num_files=len(group))
            rest.append(first)
        else:  # one file, or a folder mixing series: one entry per file
            rest.extend(group)
    return sorted(rest, key=lambda it: str(it["path"]))


def _patient_of(item: dict, rel: str, group_by: str | Callable[[dict], str]) -> str:
    if callable(group_by):
        return str(group_by(item))
    if group_by == "file":
        return rel
    if group_by == "folder":
        return str(Path(rel).parent)
    if group_by == "patient":
        if item.get("patient_id"):
            return f"id:{item['patient_id']}"
        match = PATIENT_TOKEN.search(rel)
        if match:
            return f"name:{match.group(1).lower()}"
        parts = Path(rel).parts
        return f"folder:{parts[0]}" if len(parts) > 1 else f"file:{rel}"
    try:
        rule = re.compile(group_by)
    except re.error as err:
        raise ValueError(f"group_by {group_by!r}: not 'patient', 'file', 'folder' or a valid regex ({err})") from err
    match = rule.search(rel)
    if not match:
        raise ValueError(f"group_by {group_by!r}: the regex does not match {rel!r}")
    return match.group(1) if rule.groups else match.group(0)


def split_groups(
    groups: Iterable[str], val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> dict[str, str]:
    """Assign each group (patient) to a section, deterministically for a given set of groups and seed.

    Fractions are of groups. With at least three groups a non-zero fraction gets at least one group, and
    training always keeps at least one.

    Returns:
        ``{group: section}``.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name}={frac}: must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction}: must be below 1")
    ordered = sorted(set(groups))
    random.Random(seed).shuffle(ordered)
    n = len(ordered)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n >= 3:
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    while n_test + n_val >= n and (n_test or n_val):  # keep at least one training group
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    out = {g: "test" for g in ordered[:n_test]}
    out.update({g: "validation" for g in ordered[n_test : n_test + n_val]})
    out.update({g: "training" for g in ordered[n_test + n_val :]})
    return out


def build_datalist(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    mask_pattern: str | None = None,
    label_pattern: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    group_by: str | Callable[[dict], str] = "patient",
    modality: str | None = None,
    require_mask: bool = True,
) -> dict:
    """Build an MSD-style datalist from a folder or a glob, split by patient.

    Args:
        source: a folder (scanned recursively) or a glob (``"data/**/*.png"``).
        output: where to write the JSON (atomically); paths in it are then relative to its folder.
            ``None`` writes nothing and keeps absolute paths.
        mask_pattern: where an image's mask lives, relative to the image's folder, with ``{stem}``,
            ``{name}``, ``{suffix}``, ``{parent}`` (``"{stem}_mask{suffix}"``, ``"../masks/{name}"``).
            Files that are some image's mask are not images. Figshare ``.mat`` files get
            ``"<file>.mat#tumorMask"`` without a pattern.
        label_pattern: the same for a label map (key ``label``).
        val_fraction: fraction of patients in ``validation``.
        test_fraction: fraction of patients in ``test``.
        seed: seed of the split.
        group_by: ``"patient"`` (``.mat`` PID, DICOM PatientID, else a filename token such as ``patient12``/
            ``sub-03``/``case_7``, else the first sub-folder, else the file), ``"file"``, ``"folder"``, a regex
            whose first group is the patient ID (matched against the path relative to the source), or a
            callable taking the entry.
        modality: value of ``"modality"`` for entries whose data does not say (DICOM and ``.mat`` do).
        require_mask: with a ``mask_pattern``, raise when an image has no mask (else keep it without one).

    Returns:
        ``{"name", "description", "numTraining", "numValidation", "numTest", "training", "validation",
        "test"}``; each entry has ``image`` (and ``mask``/``label``), ``patient`` and, where known,
        ``modality``.

    Raises:
        ValueError: the source is empty or missing, masks are missing, or the arguments are invalid.
    """
    files, base = _candidates(source)
    file_set = {p.resolve() for p in files}
    derived: set[Path] = set()
    for pattern in (mask_pattern, label_pattern):
        if pattern:
            derived |= {m for f in files if (m := _fill_pattern(pattern, f)) in file_set and m != f.resolve()}
    items = []
    for path in files:
        if path.resolve() in derived or not _is_image(path):
            continue
        fmt = "dicom-series" if path.is_dir() else detect_format(path)
        item: dict[str, Any] = {"path": path.resolve(), "format": fmt}
        try:
            if fmt == "dicom":
                item.update(_dicom_info(path))
            elif fmt == "mat":
                item.update(_mat_info(path))
        except Exception as err:
            raise ValueError(f"source file {str(path)!r}: cannot read its header ({err})") from err
        items.append(item)
    items = _group_dicom_series(items)
    if not items:
        raise ValueError(f"source {str(source)!r}: no image files found (suffixes {_IMAGE_SUFFIXES} or DICOM)")

    out_dir = Path(output).resolve().parent if output is not None else None

    def _ref(p: Path | str) -> str:
        text = str(p)
        if out_dir is None:
            return text
        frag = ""
        if "#" in text and not os.path.exists(text):
            text, _, frag = text.rpartition("#")
            frag = "#" + frag
        return os.path.relpath(text, out_dir) + frag

    entries: list[tuple[str, dict]] = []
    missing: list[str] = []
    for it in items:
        path: Path = it["path"]
        entry: dict[str, Any] = {"image": _ref(path)}
        for key, pattern in (("mask", mask_pattern), ("label", label_pattern)):
            if pattern:
                target = _fill_pattern(pattern, path)
                if target.exists():
                    entry[key] = _ref(target)
                elif key == "mask" and require_mask:
                    missing.append(str(path))
        if "mask" not in entry and it["format"] == "mat":
            entry["mask"] = _ref(f"{path}#tumorMask")
        mod = it.get("modality") or modality
        if mod:
            entry["modality"] = mod
        if "tumor_class" in it:
            entry["tumor_class"] = it["tumor_class"]
        rel = os.path.relpath(path, base)
        entry["patient"] = _patient_of(it, rel, group_by)
        entries.append((entry["patient"], entry))
    if missing:
        raise ValueError(
            f"mask_pattern {mask_pattern!r}: {len(missing)} image(s) have no mask, e.g. {missing[:3]} "
            "(pass require_mask=False to keep them without one)"
        )
    assignment = split_groups([g for g, _ in entries], val_fraction, test_fraction, seed)
    datalist: dict[str, Any] = {
        "name": Path(str(source).rstrip("/*")).name or "datalist",
        "description": f"built by medsr from {source} (seed {seed}, grouped by {group_by if isinstance(group_by, str) else 'callable'})",
    }
    sections: dict[str, list[dict]] = {s: [] for s in SECTIONS}
    for group, entry in entries:
        sections[assignment[group]].append(entry)
    datalist.update(
        numTraining=len(sections["training"]), numValidation=len(sections["validation"]), numTest=len(sections["test"])
    )
    datalist.update(sections)
    if output is not None:
        write_json_atomic(datalist, output)
    return datalist


def load_datalist(
    path: str | os.PathLike,
    section: str = "training",
    base_dir: str | os.PathLike | None = None,
    *,
    modality: str | None = None,
    path_keys: Iterable[str] = PATH_KEYS,
) -> list[dict]:
    """Read one section of a datalist, with relative paths made absolute.

    Args:
        path: the datalist JSON.
        section: ``"training"``, ``"validation"``, ``"test"`` (or any list-valued key in the file).
        base_dir: folder relative paths are resolved against (default: the datalist's folder).
        modality: keep only entries with this ``"modality"``.
        path_keys: entry keys holding paths.

    Raises:
        ValueError: the file is missing or not a datalist, or the section is absent.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"datalist {str(path)!r}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"datalist {str(path)!r}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"datalist {str(path)!r}: expected a JSON object with sections {SECTIONS}")
    if section not in data or not isinstance(data[section], list):
        available = sorted(k for k, v in data.items() if isinstance(v, list))
        raise ValueError(f"datalist {str(path)!r}: no section {section!r} (has {available})")
    base = Path(base_dir) if base_dir is not None else path.resolve().parent
    keys = tuple(path_keys)
    out = []
    for i, entry in enumerate(data[section]):
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"datalist {str(path)!r}: {section}[{i}] has no 'image'")
        if modality is not None and entry.get("modality") != modality:
            continue
        item = dict(entry)
        for key in keys:
            value = item.get(key)
            if isinstance(value, str) and not os.path.isabs(value):
                item[key] = os.path.normpath(os.path.join(base, value))
        out.append(item)
    return out


# ------------------------------------------------------------------------------------------------ bundles
def limit(items: Sequence, n: int | None) -> list:
    """Return the first ``n`` items (all of them when ``n`` is ``None`` or not positive)."""
    items = list(items)
    return items if n is None or int(n) <= 0 else items[: int(n)]


def _read_datalist(path: str | os.PathLike, base_dir: str | os.PathLike | None) -> dict[str, list[dict]]:
    """Read the ``training``/``validation``/``test`` sections of a datalist with the data area's reader."""
    try:
        sections = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"datalist '{path}': cannot read it as JSON ({err})") from err
    out = {}
    for key in ("training", "validation", "test"):
        if key == "training" or isinstance(sections, dict) and key in sections:
            out[key] = load_datalist(path, section=key, base_dir=base_dir)
    return out


def resolve_datalist(
    datalist: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    spatial_dims: int = 2,
    val_fraction: float = 0.2,
    progress: bool = True,
) -> dict[str, list[dict]]:
    """Return ``{"training": [...], "validation": [...]}`` for a bundle.

    Order of precedence: an explicit ``datalist`` JSON (paths relative to ``dataset_dir`` when given, else to
    the JSON's folder); else a ``dataset_dir`` scanned for images (with ``masks/``/``labels/`` companions, see
    ``medsr.pipeline.data.datalist.build_datalist``); else the embedded demo dataset, built on first use.

    Args:
        datalist: path of a MONAI-style datalist JSON with a ``training`` (and optionally ``validation``) list.
        dataset_dir: folder of the user's images.
        spatial_dims: 2 or 3; picks the demo datalist (``datalist_2d``/``datalist_3d``).
        val_fraction: share of training items held out when the datalist has no ``validation`` list.
        progress: show the demo builder's progress.

    Raises:
        ValueError: when a path does not exist or the lists are empty.
    """
    if datalist is not None:
        if not Path(datalist).is_file():
            raise ValueError(f"datalist '{datalist}': file not found")
        lists = _read_datalist(datalist, dataset_dir)
    elif dataset_dir is not None:
        if not Path(dataset_dir).is_dir():
            raise ValueError(f"dataset_dir '{dataset_dir}': folder not found")
        lists = build_datalist(dataset_dir, output=None, val_fraction=val_fraction, test_fraction=0.0)
    else:
        from medsr.pipeline.data.demo import ensure_demo_dataset

        demo = ensure_demo_dataset(progress=progress)
        key = "datalist_2d" if int(spatial_dims) == 2 else "datalist_3d"
        lists = _read_datalist(demo[key], None)
    if datalist is not None or dataset_dir is not None:
        check_items(lists, spatial_dims, source=str(datalist or dataset_dir))
    return split_datalist(lists, val_fraction, source=str(datalist or dataset_dir or "demo dataset"))


def _header_shape(path: str) -> tuple[int, ...] | None:
    """The spatial shape from a file's header (no pixel data read); ``None`` when it cannot be told cheaply."""
    fmt = detect_format(path)
    if fmt == "nifti":
        import nibabel as nib

        shape = tuple(int(n) for n in nib.load(path).shape)
        return shape if len(shape) <= 3 else None  # 4D: the reader names the problem
    if fmt == "image":
        from PIL import Image

        with Image.open(path) as img:
            return (int(img.size[0]), int(img.size[1]))
    if fmt == "dicom-series":
        files = [f for f in Path(path).iterdir() if f.is_file() and not f.name.startswith(".")]
        return None if len(files) < 2 else (0, 0, len(files))  # in-plane size: left to the reader
    return None


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(n) for n in shape if n != 1)


def check_items(lists: Mapping[str, Sequence[Mapping]], spatial_dims: int, source: str = "datalist") -> None:
    """Check every item of a datalist once, before any loading: each path exists, each image has the
    bundle's dimension (a singleton axis, as in an (X, Y, 1) NIfTI, does not count) and its mask and label
    map have its shape (read from the headers).

    Raises:
        MedsrError: one line naming every bad item and what is wrong with it.
    """
    from medsr.pipeline.errors import MedsrError

    bad: list[str] = []
    seen: set[str] = set()
    for section in ("training", "validation"):
        for item in lists.get(section) or []:
            image = str(item.get("image", ""))
            if image in seen:
                continue
            seen.add(image)
            problems = []
            for key in PATH_KEYS:
                value = item.get(key)
                if isinstance(value, str) and not Path(_split_mat_field(value)[0]).exists():
                    problems.append(f"{key} {value!r}: no such file or folder")
            if not problems:
                try:
                    shape = _header_shape(image)
                except Exception as err:  # noqa: BLE001 - an unreadable header is this item's problem
                    problems.append(f"image {image!r}: {err}")
                    shape = None
                dims = None if shape is None else sum(1 for n in shape if n != 1)
                if dims is not None and len(shape) == 3 and shape[0] == 0:
                    dims = 3  # a DICOM series folder
                for key in ("mask", "label"):
                    if shape and 0 not in shape and isinstance(item.get(key), str):
                        try:
                            other = _header_shape(item[key])
                        except Exception:  # noqa: BLE001 - the reader names an unreadable mask later
                            other = None
                        if other and 0 not in other and _squeezed(other) != _squeezed(shape):
                            problems.append(
                                f"{key} {item[key]!r}: shape {other} does not match its image {image!r} {shape}"
                            )
                if dims is not None and dims != int(spatial_dims):
                    what = "3D volume" if dims == 3 else f"{dims}D image"
                    size = f"a series of {shape[2]} slices" if shape[0] == 0 else f"shape {shape}"
                    problems.append(
                        f"image {image!r}: a {what} ({size}), but the bundle trains in {spatial_dims}D "
                        f"(use --spatial-dims {dims}{' and a per-axis --scale' if dims == 3 else ''})"
                    )
            if problems:
                bad.append("; ".join(problems))
    if bad:
        more = f" ({len(bad)} bad items)" if len(bad) > 1 else ""
        raise MedsrError(f"{source}{more}: " + " | ".join(bad))


def split_datalist(lists: dict[str, list[dict]], val_fraction: float = 0.2, source: str = "datalist") -> dict:
    """Hold out the last ``val_fraction`` of ``training`` as ``validation`` when no validation list exists.

    With one training item, that item is used for both (a smoke run on a single image still validates).
    """
    train = list(lists.get("training") or [])
    val = list(lists.get("validation") or [])
    if not train:
        raise ValueError(f"{source}: no training items")
    if not val:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
        n_val = int(round(len(train) * val_fraction))
        if len(train) == 1 or n_val == 0:
            val = train[-1:]
        else:
            val, train = train[-n_val:], train[:-n_val]
    out = dict(lists)
    out["training"], out["validation"] = train, val
    return out


def inference_inputs(
    input_files: Any = None,
    datalist: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    spatial_dims: int = 2,
    limit_n: int | None = None,
) -> list[str]:
    """Files to upscale: ``input_files`` (a path or list), else the validation images of the bundle's data.

    A folder given as ``input_files`` is one input when it is a DICOM series, else its image files.
    """
    from medsr.pipeline.inference import is_dicom

    if input_files:
        items = [input_files] if isinstance(input_files, (str, os.PathLike)) else list(input_files)
        out = []
        for item in items:
            p = Path(item)
            if not p.exists():
                raise ValueError(f"input_files: '{item}' does not exist")
            if p.is_dir() and not is_dicom(p):
                out += sorted(str(f) for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            else:
                out.append(str(p))
        return out
    lists = resolve_datalist(datalist, dataset_dir, spatial_dims)
    return limit([item["image"] for item in lists["validation"]], limit_n)


def label_names(
    names: Any = None, datalist: str | os.PathLike | None = None, dataset_dir: str | os.PathLike | None = None
) -> dict[int, str] | None:
    """Names of label-map values for the evaluation report (``{1: "tumour", 2: "healthy"}``).

    Order of precedence: ``names`` (a dict, or its JSON text; keys are label values); else a ``label_names``
    (or ``label_classes``) mapping in the datalist JSON; else, for the embedded demo dataset (no datalist
    and no dataset_dir), its tissue classes; else ``None`` (regions are named ``label_<v>``).

    Raises:
        ValueError: naming the value when a key is not an integer label.
    """
    source = "label_names"
    if names is None and datalist is not None:
        try:
            content = json.loads(Path(datalist).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"datalist '{datalist}': cannot read it as JSON ({err})") from err
        if isinstance(content, Mapping):
            names = content.get("label_names", content.get("label_classes"))
            source = f"datalist '{datalist}' label_names"
    elif names is None and dataset_dir is None:
        from medsr.pipeline.data.demo import ensure_demo_dataset

        names = ensure_demo_dataset(progress=False)["summary"].get("label_classes")
        source = "demo dataset label_classes"
    if names is None:
        return None
    if isinstance(names, str):
        try:
            names = json.loads(names)
        except json.JSONDecodeError as err:
            raise ValueError(f'{source}: expected a JSON object such as \'{{"1": "tumour"}}\', got {names!r}') from err
    if not isinstance(names, Mapping):
        raise ValueError(f"{source}: expected a mapping of label value to name, got {type(names).__name__}")
    out = {}
    for k, v in names.items():
        try:
            out[int(k)] = str(v)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: key {k!r} is not an integer label value") from err
    return out
