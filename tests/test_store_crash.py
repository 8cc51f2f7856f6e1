"""A save killed with SIGKILL at any moment leaves a consistent store.

The kills run in benchmarks/fault_store.py (``run_kills``), which the benchmark runs
with more kills; here a few per kind keep the test short. The recovery states are
also tested one by one, without processes.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_dlbio import _durable, store
from napari_dlbio.store import ModelError, ModelInfo

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_store.py"
_spec = importlib.util.spec_from_file_location("fault_store", _BENCH)
fault_store = sys.modules.setdefault("fault_store", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(fault_store)  # registered first: its dataclass looks itself up there

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and PID checks are POSIX")


def _report(outcomes) -> str:
    return "\n".join(f"{o.name} at {o.offset_s}s ({o.phase} -> {o.found}): {o.problems}" for o in outcomes)


@pytest.mark.parametrize("overwrite, seed", [(False, 1), (True, 2)], ids=["fresh", "overwrite"])
def test_sigkill_at_random_moments(tmp_path, overwrite, seed):
    outcomes = fault_store.run_kills(5, seed, tmp_path, overwrite)
    assert len(outcomes) == 5
    assert all(o.ok for o in outcomes), _report(outcomes)
    # Every model left behind is one whole version, listed and loadable.
    listed = {i.name: i.settings["version"] for i in store.list_models(tmp_path / "models")}
    assert listed == {o.name: o.found for o in outcomes if o.found != "none"}
    assert not [e for e in os.listdir(tmp_path / "models") if e.startswith(".")]


def _info(version="v1"):
    return ModelInfo(path=Path("."), name="x", backend="toy", settings={"version": version})


def _model(folder: Path, version="v1", weights=b"w" * 1000) -> Path:
    """A complete model folder written by hand (as a killed save left it)."""
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(weights)
    (folder / store.META_FILE).write_text(json.dumps({**_info(version).to_json(), "name": "m"}))
    return folder


def _temp(root: Path, name: str, pid: int, host: str = _durable.HOST, complete=False) -> Path:
    tmp = root / f".{name}.tmp-{host}-{pid}-abc_1234"
    tmp.mkdir(parents=True)
    (tmp / "weights.bin").write_bytes(b"half")
    if complete:
        (tmp / store.META_FILE).write_text(json.dumps(_info("new").to_json()))
    return tmp


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: no process has this PID now
    return proc.pid


def _hidden(root: Path) -> list[str]:
    return sorted(e for e in os.listdir(root) if e.startswith("."))


def test_missing_name_with_complete_old_is_renamed_back():
    root = store.store_root()
    _model(root / ".m.old", weights=b"previous")
    _temp(root, "m", _dead_pid(), complete=True)  # killed between its two renames
    assert store.resolve("m") == root / "m"
    assert (root / "m" / "weights.bin").read_bytes() == b"previous"
    assert store.read_info(root / "m").settings == {"version": "v1"}
    assert _hidden(root) == []


def test_both_present_means_the_swap_completed():
    root = store.store_root()
    _model(root / "m", version="new")
    _model(root / ".m.old", version="old")
    assert [i.settings["version"] for i in store.list_models()] == ["new"]
    assert _hidden(root) == []


def test_an_incomplete_old_is_removed_not_restored():
    root = store.store_root()
    (root / ".m.old").mkdir(parents=True)  # a removal cut short: model.json goes first
    (root / ".m.old" / "weights.bin").write_bytes(b"rest")
    with pytest.raises(ModelError, match="no model named"):
        store.resolve("m")
    assert _hidden(root) == []


def test_temps_of_dead_pids_go_and_of_live_ones_stay():
    root = store.store_root()
    dead = _temp(root, "a", _dead_pid())
    live = _temp(root, "b", os.getpid())
    foreign = _temp(root, "c", 1, host="0000beef")  # another machine's: only age tells
    assert store.clean_partial() == [dead]
    assert live.is_dir() and foreign.is_dir()
    old = time.time() - _durable._WRITING_STALE_S - 60
    os.utime(foreign, (old, old))
    assert store.clean_partial() == [foreign]
    assert live.is_dir()
    assert store.clean_partial(name="b", dead_pid=os.getpid()) == [live]  # the caller knows better


def test_a_running_save_between_its_renames_is_left_alone():
    root = store.store_root()
    _model(root / ".m.old")
    running = _temp(root, "m", os.getpid(), complete=True)
    store.clean_partial()
    assert (root / ".m.old").is_dir() and running.is_dir() and not (root / "m").exists()
    store.clean_partial(dead_pid=os.getpid())  # that save's process was killed after all
    assert store.read_info(root / "m").settings == {"version": "v1"}
    assert _hidden(root) == []


def test_legacy_temps_go_by_age_in_the_store_only(tmp_path):
    root = store.store_root()
    legacy = root / ".m.k3j4h5g6"
    legacy.mkdir(parents=True)
    young = root / ".n.a1b2c3d4"
    young.mkdir()
    old = time.time() - _durable._WRITING_STALE_S - 60
    os.utime(legacy, (old, old))
    elsewhere = tmp_path / ".m.k3j4h5g6"
    elsewhere.mkdir()
    os.utime(elsewhere, (old, old))
    assert store.clean_partial() == [legacy]
    assert young.is_dir()
    assert store.clean_partial(tmp_path) == [] and elsewhere.is_dir()


def test_save_and_path_lookups_recover_first(tmp_path):
    _model(tmp_path / ".m.old")
    with pytest.raises(ModelError, match="exists"):
        store.save(_info("v2"), lambda f: None, str(tmp_path / "m"), overwrite=False)
    assert store.read_info(tmp_path / "m").settings == {"version": "v1"}
    (tmp_path / "m").rename(tmp_path / ".m.old")
    assert store.resolve(str(tmp_path / "m")) == tmp_path / "m"
    assert _hidden(tmp_path) == []


def test_a_failed_swap_puts_the_previous_version_back(tmp_path, monkeypatch):
    dest = store.save(_info("v1"), lambda f: (f / "w.bin").write_bytes(b"one"), str(tmp_path / "m"))
    real_rename = Path.rename

    def rename(self, target):
        if ".tmp-" in self.name:  # the swap's second rename, temp -> dest, fails
            raise OSError("no space left on device")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="no space"):
        store.save(_info("v2"), lambda f: (f / "w.bin").write_bytes(b"two"), str(dest))
    monkeypatch.undo()
    assert (dest / "w.bin").read_bytes() == b"one"
    assert _hidden(tmp_path) == []


def test_model_json_is_written_last(tmp_path, monkeypatch):
    seen = []
    real_fsync = _durable.fsync

    def fsync(path):
        folder = path if path.is_dir() else path.parent
        seen.append((path.name, (folder / store.META_FILE).exists()))
        real_fsync(path)

    monkeypatch.setattr(_durable, "fsync", fsync)
    store.save(_info(), lambda f: (f / "w.bin").write_bytes(b"w"), str(tmp_path / "m"))
    # The weights are on disk before model.json exists; the temp's entries once it does,
    # and the store folder's after the rename.
    assert seen[0] == ("w.bin", False)
    assert seen[-2][0].startswith(".m.tmp-") and seen[-2][1]
    assert seen[-1][0] == tmp_path.name
