"""The repository layout the user asked for: one ``medsr`` namespace, ``mlflow/`` never a package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_namespace_imports_from_installed_package():
    import medsr.networks
    import medsr.pipeline
    import medsr.transforms

    for module, folder in (
        (medsr.pipeline, "pipeline"),
        (medsr.transforms, "transforms"),
        (medsr.networks, "networks"),
    ):
        assert Path(module.__file__).resolve().parent == ROOT / folder


def test_mlflow_folder_is_not_a_package():
    assert not (ROOT / "mlflow" / "__init__.py").exists()
    assert not (ROOT / "mlflow.py").exists()


def test_import_mlflow_from_repo_root_gives_installed_library():
    code = "import mlflow, sys; print(mlflow.__file__); print(mlflow.__version__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path, version = out.split()
    assert "site-packages" in path and not Path(path).resolve().is_relative_to(ROOT / "mlflow")
    assert version.startswith("3.")


def test_no_bare_imports_of_code_folders():
    """Code and bundle configs import medsr.…; a bare ``import networks`` gives a second copy of every class."""
    import re

    pattern = re.compile(
        r"^\s*(from|import) (api|networks|transforms|pipeline)(\.|\s|$)|\"_target_\": *\"(networks|transforms|pipeline)\."
    )
    offenders = []
    for path in (
        list(ROOT.glob("api/**/*.py"))
        + list(ROOT.glob("pipeline/**/*.py"))
        + list(ROOT.glob("transforms/**/*.py"))
        + list(ROOT.glob("networks/**/*.py"))
        + list(ROOT.glob("bundles/**/*.json"))
    ):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def _design_module_map() -> list[str]:
    """The module paths DESIGN.md's "Module map" section lists, one per line (``- `pipeline/x.py`: …``)."""
    import re

    text = (ROOT / "DESIGN.md").read_text(encoding="utf-8")
    start = text.index("## Module map")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"^- `((?:api|pipeline|transforms|networks)/[\w/]+\.py)`", section, flags=re.M)


def test_design_module_map_names_every_module_once():
    """DESIGN.md's module map has one line for every module under api/, pipeline/, transforms/ and networks/,
    and none for a module that is not there: the map cannot drift from the code."""
    listed = _design_module_map()
    on_disk = {
        str(p.relative_to(ROOT))
        for folder in ("api", "pipeline", "transforms", "networks")
        for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert len(listed) == len(set(listed)), sorted({m for m in listed if listed.count(m) > 1})
    assert not on_disk - set(listed), f"DESIGN.md's module map misses {sorted(on_disk - set(listed))}"
    assert not set(listed) - on_disk, f"DESIGN.md's module map names absent {sorted(set(listed) - on_disk)}"
