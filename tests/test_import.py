"""Importing the package (what napari does at start-up) must stay cheap."""

import json
import subprocess
import sys

HEAVY = (
    "torch",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "cellpose",
    "stardist",
    "careamics",
    "tensorflow",
    "napari",
    "magicgui",
    "distributed",  # the optional cluster engine: imported only when a cluster is asked for
)

# Core modules that must be importable without any of HEAVY.
LIGHT_MODULES = (
    "napari_dlbio",
    "napari_dlbio.config",
    "napari_dlbio.jobs",
    "napari_dlbio.axes",
    "napari_dlbio.tiling",
    "napari_dlbio.normalize",
    "napari_dlbio.metrics",
    "napari_dlbio.store",
    "napari_dlbio.data",
    "napari_dlbio.patches",
    "napari_dlbio.training",
    "napari_dlbio.tasks",
    "napari_dlbio.backends",
    "napari_dlbio.samples",
    "napari_dlbio.settings_fields",
    "napari_dlbio.cli",
    "napari_dlbio.recipe",
    "napari_dlbio.device",
    "napari_dlbio.evaluation",
    "napari_dlbio.formatting",
    "napari_dlbio.requests",
    "napari_dlbio.ngff",
    "napari_dlbio.outputs",
    "napari_dlbio.output_layout",
    "napari_dlbio.multiscale",
    "napari_dlbio.cluster",
    "napari_dlbio.cli.on_cluster",
    "napari_dlbio.blocks",
    "napari_dlbio.blockstate",
    "napari_dlbio.blocktasks",
    "napari_dlbio.blockwise",
    "napari_dlbio.stitching",
    "napari_dlbio.seams",
    "napari_dlbio.modelcache",
    "napari_dlbio.to_store",
)


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"import sys, json\n{code}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_module():
    assert _loaded_after("import napari_dlbio") == []


def test_core_modules_load_no_heavy_module():
    assert _loaded_after("\n".join(f"import {m}" for m in LIGHT_MODULES)) == []


def test_listing_models_loads_no_torch():
    code = "from napari_dlbio.cli import main\nassert main(['models', '--json']) == 0"
    assert _loaded_after(code) == []


def test_reading_every_backend_spec_loads_no_torch():
    """The registry, forms and CLI options read specs and settings only."""
    code = (
        "from napari_dlbio import backends\n"
        "for name, spec in backends.specs().items():\n"
        "    spec.Settings(); spec.Predict(); backends.is_available(name)\n"
        "assert set(backends.names()) >= {'unet', 'cellpose', 'stardist', 'n2v'}\n"
        "from napari_dlbio.backends import stardist, cellpose, n2v, unet\n"
        "assert unet.Settings is backends.spec('unet').Settings\n"
        "assert backends.spec('n2v').layer_suffix == 'n2v' and not backends.spec('unet').has_pretrained"
    )
    assert _loaded_after(code) == []
