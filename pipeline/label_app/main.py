"""MONAI Label app serving medsr's SR bundles (MONAI Label loads this file by path).

Start it with ``medsr label serve`` (which builds/uses the separate env and copies this file into a
runtime app folder), or by hand inside the label env::

    monailabel start_server --app pipeline/label_app --studies /path/to/images \\
        --conf bundles /path/to/medsr/bundles --conf runs_dir /path/to/runs --host 127.0.0.1

App config (``--conf key value``):

- ``bundles``: folder holding the bundles (default: the repo's ``bundles/``).
- ``runs_dir``: folder holding each bundle's run output, ``<runs_dir>/<model>/checkpoints`` (default the
  repo's ``runs/``, where ``python -m monai.bundle run training`` writes).
- ``models``: ``all`` (default: every shipped model ``bundles/*/models/*.pt`` under its recorded name, and
  every bundle with a trained run) or ``rdn_x2,espcn,espcn3d=espcn`` (shipped model names and bundles;
  ``name=bundle`` serves a bundle under another name, e.g. with overrides).
- ``overrides``: JSON ``{"espcn3d": {"spatial_dims": 3, "scale": [2, 2, 2]}}``: config ids replaced in
  that model's ``inference.json``.
- ``allow_untrained``: ``true`` serves models without a checkpoint with random weights (``/info`` says
  ``"weights": "random (untrained)"``); default ``false`` skips them with a log line.

Errors reach the client as JSON ``{"detail": "..."}``: 404 for an unknown model or image id, 422 for an
image that cannot be read or does not fit the model; the server keeps serving.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelException
from monailabel.utils.others.generic import strtobool

from medsr.pipeline.label_app.models import BUNDLES_DIR, RUNS_DIR, discover_models
from medsr.pipeline.label_app.sr_task import InputError, SRInferTask

logger = logging.getLogger(__name__)


class MedSRLabelApp(MONAILabelApp):
    """One :class:`SRInferTask` per served model: shipped model files and bundles with a checkpoint (see the
    module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        self.bundles_dir = conf.get("bundles", str(BUNDLES_DIR))
        self.runs_dir = conf.get("runs_dir", str(RUNS_DIR))
        self.specs = discover_models(
            self.bundles_dir,
            models=conf.get("models", "all"),
            runs_dir=self.runs_dir,
            overrides=conf.get("overrides"),
            allow_untrained=bool(strtobool(conf.get("allow_untrained", "false"))),
        )
        logger.info(f"medsr: serving {sorted(self.specs)} from {self.bundles_dir} (runs: {self.runs_dir})")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="medsr",
            description="medsr super-resolution models (MONAI bundles)",
            version="0.1.0",
        )

    def init_infers(self) -> dict[str, SRInferTask]:
        """One infer task per served bundle."""
        return {name: SRInferTask(spec) for name, spec in self.specs.items()}

    def init_trainers(self) -> dict:
        """Training happens with ``python -m monai.bundle run training``, not in the server."""
        return {}

    def init_scoring_methods(self) -> dict:
        """No active-learning scoring for SR."""
        return {}

    def info(self) -> dict[str, Any]:
        """MONAI Label's info plus ``medsr``: the bundles and runs folders and the served model names."""
        out = super().info()
        out["medsr"] = {"bundles": str(self.bundles_dir), "runs_dir": str(self.runs_dir), "models": sorted(self.specs)}
        return out

    def infer(self, request: dict, datastore=None) -> dict:
        """Run one SR request; a bad request raises an ``HTTPException`` with a clear ``detail``."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(
                status_code=404,
                detail=f"model '{model}' is not served here; available models: {sorted(self._infers) or 'none'}",
            )
        image = request.get("image")
        if isinstance(image, str) and image and not os.path.exists(image):
            store = datastore if datastore else self.datastore()
            if not store.get_image_uri(image):
                known = sorted(store.list_images())
                shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
                raise HTTPException(
                    status_code=404, detail=f"image '{image}' is not in the datastore (images: {shown or 'none'})"
                )
        try:
            return super().infer(request, datastore)
        except InputError as err:
            logger.warning(f"medsr: rejected request for model '{model}': {err}")
            raise HTTPException(status_code=422, detail=str(err)) from err
        except MONAILabelException as err:
            raise HTTPException(status_code=400, detail=f"model '{model}': {err.msg}") from err
