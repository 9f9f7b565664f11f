"""Small file helpers shared by the data modules (no MONAI import, so the demo builder stays light)."""

from __future__ import annotations

from medsr.pipeline.io import write_json_atomic

__all__ = ["write_json_atomic"]
