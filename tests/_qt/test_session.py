"""napari sessions in processes of their own: what napari's process imports, and quitting mid-training.

Each test runs ``session_script.py`` (a real napari window on the test's X
display, driven through the docks) and reads its JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_dlbio import store
from napari_dlbio._durable import pid_alive
from napari_dlbio.execution import shipping

pytestmark = pytest.mark.gui

SCRIPT = Path(__file__).with_name("session_script.py")


def _session(mode: str, tmp_path: Path, timeout: float, **env) -> tuple[dict, subprocess.CompletedProcess, float]:
    out = tmp_path / f"{mode}.json"
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(SCRIPT), mode, str(out)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env}, check=False)
    report = json.loads(out.read_text()) if out.exists() else {}
    return report, proc, time.time() - t0


def test_quit_mid_training_exits_cleanly_and_keeps_the_best_model(tmp_path):
    report, proc, _ = _session("quit", tmp_path, 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    exited_after = report["ended_at"] - report["closed_at"]
    assert exited_after < 10, exited_after
    assert not pid_alive(report["pid"])      # the job process went with napari
    info = store.read_info(store.resolve("quit-mid"))
    assert info.metrics["training"]["stopped"] == "cancelled" and info.metrics["training"]["best_epoch"] >= 1
    assert not [p for p in store.store_root().iterdir() if p.name.startswith(".")]   # nothing half-written
    assert not list(shipping.exchange_root().glob(f"napari-dlbio-{report.get('napari_pid', -1)}-*"))
    from napari_dlbio import samples, tasks

    img, _ = samples.nuclei_2d((96, 96), seed=2)
    assert tasks.predict(tasks.load_model("quit-mid"), img).outputs["labels"].shape == img.shape


@pytest.mark.slow
def test_napari_never_imports_torch_or_a_backend_library(tmp_path):
    from napari_dlbio import backends

    env = {}
    if "cellpose" in backends.available():
        from napari_dlbio.backends.cellpose import MICRO, write_random_model

        env["NAPARI_DLBIO_TEST_CELLPOSE"] = str(write_random_model(tmp_path / "micro_cpsam", MICRO, seed=0))
    report, proc, _ = _session("backends", tmp_path, 900, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = [b for b in ("unet", "stardist", "n2v", "cellpose") if b in backends.available()]
    assert [d["backend"] for d in report["done"]] == expected
    for d in report["done"]:
        assert d["train_layers"] and d["predict_layers"], d
    assert report["imported"] == [], report["imported"]
