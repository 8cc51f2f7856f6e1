"""Rename, duplicate and delete models of the store: what is on disk afterwards."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_dlbio import _durable, samples, store, store_actions, tasks
from napari_dlbio.store import ModelError, ModelInfo


def _save(name: str, weights: bytes = b"123") -> Path:
    info = ModelInfo(path=Path("."), name=name, backend="unet", settings={"depth": 3}, metrics={"ap50": 0.5})
    return store.save(info, lambda f: ((f / "weights.pt").write_bytes(weights), (f / "sub").mkdir(),
                                       (f / "sub" / "x.bin").write_bytes(b"x")), name)


def _entries() -> list[str]:
    return sorted(os.listdir(store.store_root()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny trained U-Net (about 5 s on 2 cores), saved outside any store."""
    from napari_dlbio import backends, data

    img, lab = samples.nuclei_2d((192, 192), seed=1)
    settings = backends.get("unet").Settings(epochs=3, steps_per_epoch=5, batch_size=4, patch_size=64, depth=2,
                                             base_width=8, val_patches=2)
    path = tmp_path_factory.mktemp("model") / "tiny"
    tasks.train("unet", data.from_arrays(img, lab), settings, save_to=path)
    return path


def test_rename_moves_the_folder_and_its_name():
    src = _save("a", b"AAA")
    created = store.read_info(src).created
    dest = store_actions.rename("a", "b")
    assert dest == store.store_root() / "b" and _entries() == ["b"]
    assert (dest / "weights.pt").read_bytes() == b"AAA" and (dest / "sub" / "x.bin").read_bytes() == b"x"
    assert json.loads((dest / "model.json").read_text())["name"] == "b"
    info = store.read_info(dest)
    assert (info.name, info.created, info.settings) == ("b", created, {"depth": 3})
    assert [i.name for i in store.list_models()] == ["b"]
    assert store.resolve("b") == dest
    with pytest.raises(ModelError, match="no model named or at 'a'"):
        store.resolve("a")
    shutil.copytree(dest, dest.with_name("c"))  # a copy made in a file manager: named by its folder
    assert sorted(i.name for i in store.list_models()) == ["b", "c"] and store.read_info(store.resolve("c")).name == "c"


def test_rename_and_duplicate_refuse_a_taken_or_bad_name():
    _save("a", b"AAA")
    _save("b", b"BBB")
    for action in (store_actions.rename, store_actions.duplicate):
        with pytest.raises(ModelError, match="'b' already exists"):
            action("a", "b")
        with pytest.raises(ModelError, match="already named 'a'"):
            action("a", "a")
        with pytest.raises(ModelError, match="invalid model name"):
            action("a", "../evil")
        with pytest.raises(ModelError, match="no model named 'zz'.*models: "):
            action("zz", "c")
    (store.store_root() / "plain").mkdir()  # a folder the user made: not ours to replace
    with pytest.raises(ModelError, match="a folder named 'plain' already exists"):
        store_actions.rename("a", "plain")
    assert _entries() == ["a", "b", "plain"]
    assert (store.store_root() / "a" / "weights.pt").read_bytes() == b"AAA"
    assert (store.store_root() / "b" / "weights.pt").read_bytes() == b"BBB"


def test_a_running_save_of_either_name_is_left_alone():
    _save("a")
    live = store.store_root() / f".c.tmp-{_durable.HOST}-{os.getpid()}-abcd1234"
    live.mkdir()  # our own (live) PID: a save of "c" in progress
    with pytest.raises(ModelError, match="'c' is being saved right now"):
        store_actions.rename("a", "c")
    live.rename(store.store_root() / f".a.tmp-{_durable.HOST}-{os.getpid()}-abcd1234")
    with pytest.raises(ModelError, match="'a' is being saved right now"):
        store_actions.delete("a")
    assert (store.store_root() / "a" / "model.json").is_file()


def test_duplicate_copies_everything_and_records_the_origin():
    src = _save("a", b"AAA")
    dest = store_actions.duplicate("a", "a-copy")
    assert _entries() == ["a", "a-copy"]
    for rel in ("weights.pt", "sub/x.bin"):
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    a, b = store.read_info(src), store.read_info(dest)
    assert b.name == "a-copy" and json.loads((dest / "model.json").read_text())["name"] == "a-copy"
    assert (b.settings, b.metrics, b.created, b.backend) == (a.settings, a.metrics, a.created, a.backend)
    assert b.extra["duplicated_from"]["name"] == "a" and "duplicated_from" not in a.extra
    assert store_actions.copy_name("a") == "a-copy2"


def test_a_duplicate_cut_short_leaves_nothing(monkeypatch):
    _save("a")

    def dies(tmp, meta):
        assert (tmp / "sub" / "x.bin").is_file()  # everything copied, then "killed" before model.json
        raise KeyboardInterrupt

    monkeypatch.setattr(_durable, "write_last", dies)
    with pytest.raises(KeyboardInterrupt):
        store_actions.duplicate("a", "b")
    assert _entries() == ["a"] and [i.name for i in store.list_models()] == ["a"]


def test_delete_removes_only_that_model():
    _save("a")
    keep = _save("b", b"BBB")
    (store.store_root() / "notes").mkdir()
    removed = store_actions.delete("a")
    assert removed == store.store_root() / "a"
    assert _entries() == ["b", "notes"]  # no hidden leftovers either
    assert (keep / "weights.pt").read_bytes() == b"BBB"
    with pytest.raises(ModelError, match="no model named 'a'"):
        store_actions.delete("a")
    with pytest.raises(ModelError, match="no model named 'notes'"):
        store_actions.delete("notes")  # a folder without model.json is not a model
    with pytest.raises(ModelError, match="invalid model name"):
        store_actions.delete("..")
    assert _entries() == ["b", "notes"]


def test_a_delete_cut_short_is_finished_by_the_next_lookup(monkeypatch):
    _save("a")
    with monkeypatch.context() as m:
        m.setattr(_durable, "discard", lambda folder: None)  # "killed" right after the rename
        store_actions.delete("a")
    assert store.list_models() == [] and len(_entries()) == 1  # hidden, and never a model again
    store.clean_partial(dead_pid=os.getpid())  # what a later process does once this one is gone
    assert _entries() == []


def _raw(model, item):
    """The network's output (probabilities): equal only if the weights are."""
    from napari_dlbio.jobs import JobContext

    return np.asarray(model.forward(model.check_item(item), model.coerce_predict(None), JobContext()))


def test_a_duplicated_model_predicts_identically(tiny):
    shutil.copytree(tiny, store.store_root() / "tiny")
    store_actions.duplicate("tiny", "tiny2")
    item = samples.nuclei_2d((128, 160), seed=7)[0][None].astype(np.float32)
    ma, mb = tasks.load_model("tiny"), tasks.load_model("tiny2")
    ra, rb = _raw(ma, item), _raw(mb, item)
    assert ra.shape == rb.shape and np.ptp(ra) > 0.1  # a real output, not a constant
    assert np.max(np.abs(ra - rb)) == 0
    la, lb = ma.predict(item, None)["labels"], mb.predict(item, None)["labels"]
    assert la.dtype == lb.dtype == np.int32 and np.array_equal(la, lb)
    renamed = store_actions.rename("tiny2", "tiny3")
    mc = tasks.load_model("tiny3")
    assert mc.info.name == "tiny3" and mc.info.path == renamed
    assert np.max(np.abs(_raw(mc, item) - ra)) == 0
