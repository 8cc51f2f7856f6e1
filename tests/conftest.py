import os
from pathlib import Path

import pytest

# Keep tests fast and fair on 2 cores; never touch the user's real model store.
os.environ.setdefault("OMP_NUM_THREADS", "2")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("dlbio-home")
    monkeypatch.setenv("NAPARI_DLBIO_HOME", str(home))
    return home


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (fresh clone); this test needs the real data")
    return SHARED_DATA
