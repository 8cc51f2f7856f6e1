import json
from pathlib import Path

import numpy as np
import pytest

from napari_dlbio import store
from napari_dlbio.store import ModelError, ModelInfo


def _info(**kw):
    base = dict(
        path=Path("."), name="x", backend="unet", settings={"depth": 3}, metrics={"ap50": np.float32(0.5)}
    )
    base.update(kw)
    return ModelInfo(**base)


def _weights(folder: Path):
    (folder / "weights.pt").write_bytes(b"123")


def test_save_read_list_resolve(_isolated_store):
    path = store.save(_info(), _weights, "nuclei")
    assert path == store.store_root() / "nuclei"
    assert path.is_relative_to(_isolated_store)
    assert (path / "weights.pt").read_bytes() == b"123"
    info = store.read_info(path)
    assert (info.name, info.backend, info.settings) == ("nuclei", "unet", {"depth": 3})
    assert info.metrics["ap50"] == pytest.approx(0.5)
    assert info.created and "python" in info.versions
    assert [i.name for i in store.list_models()] == ["nuclei"]
    assert store.resolve("nuclei") == path
    assert store.resolve(str(path)) == path


def test_save_to_a_path(tmp_path):
    dest = tmp_path / "models" / "m1"
    assert store.destination(str(dest)) == dest
    assert store.save(_info(), _weights, str(dest)) == dest
    assert store.read_info(dest).name == "m1"
    assert store.list_models() == []  # not in the store


def test_failed_write_leaves_nothing(tmp_path):
    def failing(folder: Path):
        (folder / "partial.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        store.save(_info(), failing, str(tmp_path / "m"))
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_model(tmp_path):
    dest = store.save(_info(), _weights, str(tmp_path / "m"))

    def failing(folder: Path):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.save(_info(backend="stardist"), failing, str(dest))
    assert store.read_info(dest).backend == "unet"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_overwrite_rules(tmp_path):
    dest = store.save(_info(), _weights, str(tmp_path / "m"))
    store.save(_info(backend="n2v"), lambda f: (f / "other.bin").write_bytes(b"y"), str(dest))
    assert store.read_info(dest).backend == "n2v"
    assert sorted(p.name for p in dest.iterdir()) == ["model.json", "other.bin"]
    with pytest.raises(ModelError, match="exists"):
        store.save(_info(), _weights, str(dest), overwrite=False)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpg")
    with pytest.raises(ModelError, match="not a napari-dlbio model; refusing"):
        store.save(_info(), _weights, str(foreign))
    assert (foreign / "holiday.jpg").exists()


def _write_meta(folder: Path, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / store.META_FILE).write_text(data if isinstance(data, str) else json.dumps(data))
    return folder


def test_read_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        store.read_info(tmp_path / "missing")
    f = tmp_path / "file.pt"
    f.write_bytes(b"")
    with pytest.raises(ModelError, match="is a file"):
        store.read_info(f)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no model.json"):
        store.read_info(tmp_path / "empty")
    with pytest.raises(ModelError, match="corrupt"):
        store.read_info(_write_meta(tmp_path / "corrupt", "{not json"))
    with pytest.raises(ModelError, match="not written by napari-dlbio"):
        store.read_info(_write_meta(tmp_path / "foreign", {"format": "bioimageio"}))
    with pytest.raises(ModelError, match="newer napari-dlbio"):
        store.read_info(_write_meta(tmp_path / "newer", {"format": store.FORMAT, "format_version": 99}))
    with pytest.raises(ModelError, match="incomplete"):
        store.read_info(_write_meta(tmp_path / "incomplete", {"format": store.FORMAT, "format_version": 1}))


def test_list_skips_unreadable_and_sorts_newest_first():
    store.save(_info(created="2024-01-01T00:00:00+00:00"), _weights, "old")
    store.save(_info(created="2025-01-01T00:00:00+00:00"), _weights, "new")
    _write_meta(store.store_root() / "broken", "{")
    assert [i.name for i in store.list_models()] == ["new", "old"]


def test_names():
    with pytest.raises(ModelError, match="invalid model name"):
        store.destination("bad name!")
    with pytest.raises(ModelError, match="no model named or at 'ghost'"):
        store.resolve("ghost")
    assert store.destination("ok-name_1.2") == store.store_root() / "ok-name_1.2"


def test_settings_of_a_newer_release_are_refused_clearly(tmp_path):
    pytest.importorskip("torch")
    from napari_dlbio import backends

    Model = backends.get("unet").Model
    info = ModelInfo(path=tmp_path, name="future", backend="unet", settings={"version": 99})
    with pytest.raises(ModelError, match="newer napari-dlbio .*settings version 99"):
        Model.settings_from(info)
    bad = ModelInfo(path=tmp_path, name="bad", backend="unet", settings={"depth": "deep"})
    with pytest.raises(ModelError, match="settings in model.json are invalid"):
        Model.settings_from(bad)
    assert Model.settings_from(ModelInfo(path=tmp_path, name="ok", backend="unet", settings={})).depth == 3
