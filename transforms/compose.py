"""``NamedCompose``: MONAI ``Compose`` whose errors name the datalist item's files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.data import MetaTensor
from monai.transforms import Compose

from medsr.pipeline.errors import name_files  # its home is errors (light); kept here for old imports

__all__ = ["NamedCompose", "item_files", "name_files"]


def item_files(item: Any) -> list[str]:
    """The file names a datalist item (or a loaded one: MetaTensors keep ``filename_or_obj``) refers to."""
    values = item.values() if isinstance(item, Mapping) else [item]
    out: list[str] = []
    for v in values:
        if isinstance(v, (str, os.PathLike)):
            name = str(v)
        elif isinstance(v, MetaTensor):
            name = v.meta.get("filename_or_obj", "")
            name = name if isinstance(name, (str, os.PathLike)) else ""
        else:
            continue
        name = str(name)
        if name and name not in out and (os.sep in name or "." in Path(name).name):
            out.append(name)
    return out


class NamedCompose(Compose):
    """MONAI ``Compose`` whose errors name the datalist item's file(s) (``image``, ``mask``, ``label``).

    With hundreds of cases, ``image: contains NaN`` does not say which case; this says
    ``datalist item 'p07/t1.nii.gz', 'p07/mask.nii.gz': image: contains NaN …``. Works for cached datasets
    too (the loaded MetaTensors keep their file names). Same arguments as ``Compose``, plus ``what``: how the
    message calls the item (``"datalist item"``, ``"input"``).
    """

    def __init__(self, *args: Any, what: str = "datalist item", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.what = what

    def __call__(self, input_, *args, **kwargs):  # noqa: D102 - as Compose
        try:
            return super().__call__(input_, *args, **kwargs)
        except Exception as exc:
            named = name_files(exc, item_files(input_), getattr(self, "what", "datalist item"))
            if named is exc:
                raise
            raise named from exc
