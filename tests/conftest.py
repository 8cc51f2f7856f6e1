import os
from pathlib import Path

import pytest
from _gui_display import no_gui_reason

# Keep tests fast and fair on 2 cores; never touch the user's real model store.
os.environ.setdefault("OMP_NUM_THREADS", "2")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _needs_display(item) -> bool:
    """A GUI test: marked ``gui`` or using pytest-qt's ``qapp`` (``qtbot`` and napari's
    ``make_napari_viewer`` depend on it)."""
    return item.get_closest_marker("gui") is not None or "qapp" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items):
    # Runs after every pytest_configure, so pytest-xvfb has already started Xvfb (and set
    # DISPLAY) when it is installed. Without a display Qt aborts the whole process when the
    # first QApplication is made: skip the GUI tests with the reason instead.
    gui = [item for item in items if _needs_display(item)]
    reason = no_gui_reason() if gui else None
    if reason:
        for item in gui:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("dlbio-home")
    monkeypatch.setenv("NAPARI_DLBIO_HOME", str(home))
    from napari_dlbio.requests import MODELS

    MODELS.clear()  # models loaded in this process (in-process jobs) belong to one test's store
    return home


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (fresh clone); this test needs the real data")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory) -> Path:
    """A small U-Net trained once per session on synthetic nuclei, in a folder named ``tiny``.

    Several modules need "some trained instance model" (evaluate, suggest, objects,
    to_store); training it once saves about 10 s per module. Tests only read the folder.
    """
    pytest.importorskip("torch")
    from napari_dlbio import backends, data, samples, tasks

    img, lab = samples.nuclei_2d((256, 256), seed=1)
    settings = backends.get("unet").Settings(epochs=6, steps_per_epoch=10, batch_size=4, patch_size=64,
                                             depth=2, base_width=8, val_patches=2)
    path = tmp_path_factory.mktemp("tiny-unet") / "tiny"
    tasks.train("unet", data.from_arrays(img, lab), settings, save_to=path)
    return path
