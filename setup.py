"""medsr: MONAI-based super-resolution for medical images.

The folders install as one package, ``medsr``: ``api/`` -> ``medsr`` itself (``medsr.upscale``),
``pipeline/`` -> ``medsr.pipeline``, ``transforms/`` -> ``medsr.transforms``, ``networks/`` -> ``medsr.networks``.
``bundles/`` and ``mlflow/`` are data: a wheel carries them as ``medsr/bundles/`` (configs and shipped models)
and ``medsr/mlflow/`` (tracking settings), where the code finds them next to ``medsr/pipeline/`` as it finds
them next to ``pipeline/`` in a clone. Neither folder is a package (no ``__init__.py``).
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
FOLDERS = {"pipeline": "medsr.pipeline", "transforms": "medsr.transforms", "networks": "medsr.networks"}
#: data folders shipped inside the package, with the files each carries
DATA = {
    "bundles": ("*/*.json", "*/logging.conf", "*/README.md", "*/LICENSE", "*/models/*.pt"),
    "mlflow": ("*.json", "*.md", "*.sh"),
}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = ["medsr"], {"medsr": "api"}
    for folder, name in FOLDERS.items():
        packages.append(name)
        package_dir[name] = folder
        for sub in find_packages(where=folder):
            packages.append(f"{name}.{sub}")
    for folder in DATA:
        packages.append(f"medsr.{folder}")
        package_dir[f"medsr.{folder}"] = folder
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

# torch is deliberately a range that an installed CPU build (2.13.0) satisfies, so pip keeps it.
INSTALL_REQUIRES = [
    "torch>=2.2",
    "monai>=1.6.1,<1.7",
    "fire",
    "jsonschema>=4",  # bundle metadata checks (MONAI verify_metadata, medsr bundles verify)
    "pytorch-ignite>=0.4.11",
    "numpy>=1.24",
    "scipy>=1.10",
    "nibabel>=5.0",
    "pydicom>=3.0",
    "itk>=5.3",
    "h5py>=3.8",
    "pillow>=10.0",
    "mlflow>=3.17,<4",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    # real demo images ship inside these two packages (nothing is downloaded)
    "nilearn>=0.10",
    "scikit-image>=0.22",
]

EXTRAS = {
    # dipy: its sample MR files are training images of the selfsr prior (a test trains it briefly)
    "test": ["pytest>=8", "pytest-timeout>=2.2", "ruff>=0.5", "onnx>=1.16", "dipy>=1.9"],
    # torchio is only a point of comparison in benchmarks/
    "bench": ["torchio>=0.20", "dipy>=1.9"],
    # medsr models export-onnx (onnxruntime, when installable, checks the exported file)
    "onnx": ["onnx>=1.16"],
}

setup(
    name="medsr",
    version="0.1.0",
    description="MONAI-based super-resolution pipeline for medical images (2D and 3D)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    include_package_data=True,
    package_data={
        "medsr.pipeline": ["label_app/*.json", "*.json"],
        **{f"medsr.{folder}": list(patterns) for folder, patterns in DATA.items()},
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["medsr = medsr.pipeline.cli:main"]},
    license="Apache-2.0",
)
