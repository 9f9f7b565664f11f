"""medsr.pipeline.data: readers, datalists and the embedded demo dataset.

Names are imported lazily, so ``medsr demo`` does not pay for importing MONAI.

* readers (:mod:`medsr.pipeline.data.readers`): :class:`MedicalImageReader`, :class:`NiftiReader`,
  :class:`DicomReader`, :class:`DicomSeriesReader`, :class:`PhotoReader`, :class:`FigshareMatReader`,
  :func:`load_image`, :func:`read_figshare_mat`;
* light files (:mod:`medsr.pipeline.data.files`, no MONAI): :func:`read_image`, :func:`detect_format`,
  :class:`ImageReadError`;
* datalists (:mod:`medsr.pipeline.data.datalist`): :func:`build_datalist`, :func:`load_datalist`,
  :func:`resolve_datalist` (what a bundle trains on), :func:`split_datalist`, :func:`label_names`;
* demo data (:mod:`medsr.pipeline.data.demo`): :func:`demo_root`, :func:`ensure_demo_dataset`.
"""

from __future__ import annotations

from medsr.pipeline._lazy import lazy_exports

_EXPORTS = {
    "files": ("ImageReadError", "detect_format", "LUMINANCE_WEIGHTS", "read_image"),
    "readers": (
        "NiftiReader",
        "DicomReader",
        "DicomSeriesReader",
        "PhotoReader",
        "FigshareMatReader",
        "MedicalImageReader",
        "load_image",
        "read_figshare_mat",
    ),
    "datalist": (
        "build_datalist",
        "load_datalist",
        "split_groups",
        "SECTIONS",
        "resolve_datalist",
        "split_datalist",
        "inference_inputs",
        "label_names",
    ),
    "demo": ("demo_root", "ensure_demo_dataset", "demo_sources", "slab_ranges", "DEMO_VERSION"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
