"""bioimage.io in the docks: export from the Models dock (a job), open a zip in Predict, fine-tune from one in Train."""

import zipfile

import numpy as np
import pytest
from qt_helpers import dock, finished

from napari_dlbio import store

pytestmark = pytest.mark.gui
pytest.importorskip("bioimageio.core", reason="bioimage.io needs bioimageio.core (napari-dlbio[bioimageio])")


@pytest.fixture
def stored_tiny(tiny_unet):
    """The session's tiny U-Net, copied into this test's store as 'tiny'."""
    import shutil

    shutil.copytree(tiny_unet, store.store_root() / "tiny")
    return store.store_root() / "tiny"


@pytest.fixture
def tiny_zip(tiny_unet, tmp_path):
    from napari_dlbio import tasks
    from napari_dlbio.bioimageio_export import export_model

    return export_model(tasks.load_model(tiny_unet), tmp_path / "tiny.zip")


def test_models_dock_exports_in_the_job_process(stored_tiny, make_napari_viewer, qtbot, tmp_path):
    w = dock(make_napari_viewer(), "Models")
    w.select("tiny")
    assert w.export_btn.isEnabled() and "bioimage.io" in w.export_btn.toolTip()
    out = tmp_path / "shared" / "tiny.zip"
    out.parent.mkdir()
    w.export_to("tiny", str(out))
    assert not w.export_btn.isEnabled()           # one export at a time
    qtbot.waitUntil(finished(w._runner), timeout=120_000)
    assert "exported to" in w.status.text(), w.status.text()
    with zipfile.ZipFile(out) as z:
        assert {"rdf.yaml", "model.json", "bmz_torchscript.pt"} <= set(z.namelist())
    assert w.export_btn.isEnabled()
    # A second export to the same file without replacing: the dock says why, the zip is kept.
    before = out.read_bytes()
    w.export_to("tiny", str(out))
    qtbot.waitUntil(finished(w._runner), timeout=60_000)
    assert "exists" in w.status.text() and out.read_bytes() == before


def test_models_dock_says_which_backends_cannot_export(make_napari_viewer):
    from napari_dlbio import backends

    settings = backends.spec("unet").Settings().model_dump(mode="json")
    info = store.ModelInfo(path=store.store_root(), name="cp", backend="cellpose", settings=settings)
    store.save(info, lambda f: (f / "cellpose_model").write_bytes(b"w"), "cp")
    w = dock(make_napari_viewer(), "Models")
    w.select("cp")
    assert not w.export_btn.isEnabled() and "cannot be exported" in w.export_btn.toolTip()


def test_predict_dock_opens_a_zip(tiny_zip, make_napari_viewer, qtbot, records):
    from napari_dlbio import samples

    viewer = make_napari_viewer()
    img, _ = samples.nuclei_2d((96, 96), seed=3)
    viewer.add_image(img, name="nuclei", scale=(0.5, 0.5))
    p = dock(viewer, "Predict")
    p.source.setCurrentText("Model folder or zip")
    p.folder.setText(str(tiny_zip))
    p.model_box.refresh()
    assert "unet" in p.model_box.model_info.text() and "⚠" not in p.model_box.model_info.text()
    p.run()
    qtbot.waitUntil(finished(p.runner), timeout=60_000)
    assert not records.errors, records.errors
    (out,) = p.added
    assert out.data.dtype == np.int32 and out.data.max() > 3 and tuple(out.scale) == (0.5, 0.5)
    assert out.metadata["napari_dlbio"]["model"] == "tiny"
    # A zip that is not a bioimage.io package: said next to the field.
    bad = tiny_zip.with_name("bad.zip")
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("a.txt", "x")
    p.folder.setText(str(bad))
    p.model_box.refresh()
    assert "not a bioimage.io model zip" in p.model_box.model_info.text()


def test_train_dock_fine_tunes_from_a_zip(tiny_zip, make_napari_viewer):
    w = dock(make_napari_viewer(), "Train")
    w.model_box.open_zip(str(tiny_zip))
    info = w.start_from.info()
    assert info is not None and info.name == "tiny" and (info.path / "model.json").is_file()
    assert w.name.text() == "tiny"
    w.start_from.refresh()                            # the store's list is reloaded: the zip's model stays
    assert w.start_from.info().path == info.path
