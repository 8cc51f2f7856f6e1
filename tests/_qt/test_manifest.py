"""The npe2 manifest is valid, its commands import, and importing the package loads no Qt."""

import subprocess
import sys


def test_manifest_validates_with_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-dlbio")
    manifest.validate_imports()
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert {"Train", "Predict"} <= widgets
    samples = {s.display_name for s in manifest.contributions.sample_data}
    assert {"Nuclei 2D (synthetic)", "Nuclei 3D (synthetic)"} <= samples


def test_import_loads_no_qt_or_torch():
    code = ("import sys, napari_dlbio, napari_dlbio._layers, napari_dlbio._sample_data; "
            "print(any(m.split('.')[0] in ('qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'torch') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sample_data():
    from napari_dlbio import _sample_data

    (img, meta, kind), (lab, lmeta, lkind) = _sample_data.nuclei_3d()
    assert kind == "image" and lkind == "labels" and img.shape == lab.shape and img.ndim == 3
    assert meta["scale"] == [2.0, 1.0, 1.0] and lab.max() > 5
