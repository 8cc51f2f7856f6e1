"""The reliability figures of jobs in the job process: cancel, kill -9, quit, at random moments.

    PYTHONPATH=src python benchmarks/bench_faults.py [--n 20] [--quits 3] [--seed 0]

Rows (each must read n/n):
* cancel: a U-Net training cancelled at a random moment (process start, data
  preparation, any epoch, tuning); passes when it leaves a loadable best model with
  its metrics, or, cancelled before the first epoch ended, no model and a message saying so.
* kill -9 during save: the job process re-saves a trained model over itself and is
  killed at a random offset of the save; passes when the name still loads and predicts
  exactly as before, and no half-written folder stays visible. (The phases of a save,
  including between its two renames, are hit by ``fault_store.py``; its row is printed too.)
* kill -9 during train / predict: the job process killed at a random moment; passes
  when the job ends in a report naming SIGKILL and the next job (a fresh process) works.
* quit mid-training: a napari window (tests/_qt/session_script.py) closed during
  training; passes when napari exits with status 0 within 10 s and the best model loads.
Generated bad inputs are ``bench_bad_inputs.py``'s table.
``cancel_trials`` and ``save_kill_trials`` are what tests/test_faults.py runs with a small n.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from napari_dlbio import backends, samples, store, tasks  # noqa: E402
from napari_dlbio._layers import LayerSnapshot  # noqa: E402
from napari_dlbio.execution import JobCallbacks, ProcessExecutor  # noqa: E402
from napari_dlbio.execution.process import STARTING  # noqa: E402
from napari_dlbio.jobs import Cancelled, JobContext, WorkerDied  # noqa: E402
from napari_dlbio.requests import PredictRequest, TrainRequest  # noqa: E402

TINY = {"epochs": 100_000, "steps_per_epoch": 3, "batch_size": 2, "patch_size": 32, "depth": 2, "base_width": 8,
        "val_patches": 2, "val_fraction": 0.25}


def _train_request(name: str, **changes) -> TrainRequest:
    img, lab = samples.nuclei_2d((160, 160), seed=1)
    settings = backends.spec("unet").Settings(**{**TINY, **changes})
    return TrainRequest("unet", LayerSnapshot.from_array("nuclei", img), lab, settings, name)


class _Watch:
    """Callbacks that remember the job's first report, its value or error."""

    def __init__(self) -> None:
        self.first, self.value, self.error = threading.Event(), None, None
        self.messages: list[str] = []

    def callbacks(self) -> JobCallbacks:
        def progress(p) -> None:
            if p.message != STARTING:     # the job's own reports, not the executor's
                self.messages.append(p.message)
                self.first.set()

        return JobCallbacks(progress=progress, done=lambda v: setattr(self, "value", v),
                            failed=lambda e: setattr(self, "error", e))


def cancel_trials(n: int, seed: int, max_delay: float = 4.0) -> list[dict]:
    """``n`` trainings cancelled after a random delay (0..max_delay s after the job's first report)."""
    rng = random.Random(seed)
    ex = ProcessExecutor()
    try:
        return [_cancel_once(ex, f"cancel-{k}", rng.uniform(0, max_delay)) for k in range(n)]
    finally:
        ex.shutdown(10)


def _cancel_once(ex: ProcessExecutor, name: str, delay: float) -> dict:
    watch = _Watch()
    handle = ex.submit(_train_request(name), watch.callbacks())
    watch.first.wait(120)
    time.sleep(delay)
    t0 = time.monotonic()
    handle.cancel()
    handle.wait(60)
    row = {"name": name, "delay": round(delay, 2), "stop_s": round(time.monotonic() - t0, 2),
           "at": watch.messages[-1] if watch.messages else ""}
    if watch.value is not None:
        info = store.read_info(store.resolve(name))
        model = tasks.load_model(name)
        ok = watch.value.stopped in ("cancelled", "completed") and "ap50" in info.metrics and model is not None
        row.update(result="best model kept", ok=ok)
    elif isinstance(watch.error, Cancelled):
        said = "before the first epoch" in str(watch.error)
        row.update(result="no model (said so)", ok=said and not (store.store_root() / name).exists())
    else:
        row.update(result=f"other: {watch.error!r}", ok=False)
    return row


@dataclass
class Resave:
    """A job: load ``name`` and save it again under its own name, slowly (the save is killed)."""

    name: str
    pad_chunks: int = 8

    def run(self, ctx: JobContext) -> str:
        model = tasks.load_model(self.name)
        info = model.info

        def write(folder: Path) -> None:
            model.save_weights(folder)
            with open(folder / "padding.bin", "wb") as f:   # a slow write: something to interrupt
                for _ in range(self.pad_chunks):
                    f.write(os.urandom(256 * 1024))
                    f.flush()
                    os.fsync(f.fileno())
                    time.sleep(0.04)

        ctx.report(0, 1, "saving", kind="info")
        info.created = ""
        store.save(info, write, self.name)
        return "saved"


def save_kill_trials(n: int, seed: int) -> list[dict]:
    """Train one model; then ``n`` times kill -9 the job process while it re-saves that model."""
    rng = random.Random(seed)
    ex = ProcessExecutor()
    try:
        ex.run(_train_request("victim", epochs=2))
        img, _ = samples.nuclei_2d((128, 128), seed=5)
        reference = tasks.predict(tasks.load_model("victim"), img).outputs["labels"]
        return [_kill_save_once(ex, rng.uniform(0.0, 0.45), img, reference) for _ in range(n)]
    finally:
        ex.shutdown(10)


def _kill_during(ex: ProcessExecutor, job, delay: float) -> tuple[_Watch, int | None]:
    """Submit ``job``, kill -9 its process ``delay`` s after the job's first report; (what it said, pid)."""
    watch = _Watch()
    handle = ex.submit(job, watch.callbacks())
    watch.first.wait(120)
    time.sleep(delay)
    pid = ex.pid
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    handle.wait(30)
    return watch, pid


def _kill_save_once(ex: ProcessExecutor, offset: float, img, reference) -> dict:
    watch, _ = _kill_during(ex, Resave("victim"), offset)
    labels = tasks.predict(tasks.load_model("victim"), img).outputs["labels"]
    hidden = [p.name for p in store.store_root().iterdir() if p.name.startswith(".")]
    killed = isinstance(watch.error, WorkerDied)
    ok = np.array_equal(labels, reference) and not hidden and (killed or watch.value == "saved")
    return {"offset": round(offset, 3), "result": "killed" if killed else "saved first", "hidden": hidden,
            "ok": ok}


def death_trials(n: int, seed: int, kind: str) -> list[dict]:
    """Kill -9 the job process during training or prediction; the next job must work."""
    rng = random.Random(seed)
    ex = ProcessExecutor()
    try:
        if kind == "predict":
            ex.run(_train_request("base", epochs=2))
        # Prediction of the stack takes ~2-3 s on 2 cores: kills land inside it.
        return [_death_once(ex, kind, rng.uniform(0, 2.0 if kind == "train" else 1.0), k) for k in range(n)]
    finally:
        ex.shutdown(10)


def _death_once(ex: ProcessExecutor, kind: str, delay: float, k: int) -> dict:
    if kind == "train":
        job = _train_request(f"death-{k}")
    else:
        big = np.tile(samples.nuclei_2d((160, 160), seed=1)[0], (6, 3, 3))
        job = PredictRequest(store_source("base"), [LayerSnapshot.from_array("big", big, "ZYX")])
    watch, pid = _kill_during(ex, job, delay)
    reported = isinstance(watch.error, WorkerDied) and "SIGKILL" in str(watch.error)
    after = ex.run(_Probe())        # the next job: a fresh process
    # A job that ended just before the kill is not a failure: the idle process was killed instead.
    first = watch.value is not None and watch.error is None
    return {"delay": round(delay, 2), "result": "finished first" if first else "killed" if reported else
            f"other: {watch.error!r}", "ok": (reported or first) and after != pid}


def store_source(name: str):
    from napari_dlbio.requests import ModelSource

    return ModelSource.saved(store.read_info(store.resolve(name)))


@dataclass
class _Probe:
    def run(self, ctx: JobContext) -> int:
        return os.getpid()


def quit_trials(n: int) -> list[dict]:
    """napari sessions closed mid-training (needs an X display: Xvfb)."""
    script = HERE.parent / "tests" / "_qt" / "session_script.py"
    rows = []
    for k in range(n):
        out = Path(tempfile.mkdtemp()) / "quit.json"
        proc = subprocess.run([sys.executable, str(script), "quit", str(out)], capture_output=True, text=True,
                              timeout=300, check=False)
        rep = json.loads(out.read_text()) if out.exists() else {}
        exit_s = rep.get("ended_at", 1e9) - rep.get("closed_at", 0)
        loads = _loads("quit-mid")
        rows.append({"k": k, "rc": proc.returncode, "exit_s": round(exit_s, 1), "loads": loads,
                     "ok": proc.returncode == 0 and exit_s < 10 and loads})
    return rows


def _loads(name: str) -> bool:
    try:
        return tasks.load_model(name) is not None
    except Exception:  # noqa: BLE001 - a failure to load is the figure
        return False


def _row(what: str, rows: list[dict], detail: str) -> None:
    ok = sum(r["ok"] for r in rows)
    print(f"{what:<28} {ok:>3}/{len(rows):<3} {detail}")
    for r in rows:
        if not r["ok"]:
            print(f"    FAIL {r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--quits", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ["NAPARI_DLBIO_HOME"] = tempfile.mkdtemp(prefix="dlbio-faults-")
    import fault_store

    t0 = time.monotonic()
    cancel = cancel_trials(args.n, args.seed)
    saves = save_kill_trials(args.n, args.seed)
    phases = fault_store.run_kills(args.n, args.seed, Path(tempfile.mkdtemp()), overwrite=True)
    train = death_trials(args.n, args.seed, "train")
    predict = death_trials(args.n, args.seed, "predict")
    quits = quit_trials(args.quits) if _display_ready() else []
    load = os.getloadavg()[0]
    print(f"\nFault figures ({os.cpu_count()} CPUs, load {load:.1f}, {time.monotonic() - t0:.0f} s)")
    kept = sum(r["result"] == "best model kept" for r in cancel)
    _row("cancel at a random moment", cancel, f"({kept} kept the best model, {len(cancel) - kept} before epoch 1; "
         f"slowest stop {max(r['stop_s'] for r in cancel):.1f} s)")
    _row("kill -9 during save", saves, f"({sum(r['result'] == 'killed' for r in saves)} killed mid-save)")
    _row("kill -9 in save phases", [{"ok": o.ok} for o in phases],
         "(" + ", ".join(sorted({o.phase for o in phases})) + ")")
    for what, rows in (("training", train), ("prediction", predict)):
        killed = sum(r["result"] == "killed" for r in rows)
        _row(f"kill -9 during {what}", rows, f"({killed} killed mid-job, reported; next job in a fresh process)")
    if quits:
        _row("quit mid-training", quits, f"(slowest exit {max(r['exit_s'] for r in quits):.1f} s)")
    bad = [r for rows in (cancel, saves, train, predict, quits) for r in rows if not r["ok"]]
    return 1 if bad or not all(o.ok for o in phases) else 0


def _display_ready() -> bool:
    """A display for the quit sessions: the one set, or a virtual one (skipped without pyvirtualdisplay)."""
    from virtual_display import start_display

    try:
        start_display((1400, 900))   # lives as long as this process
    except ImportError:
        return False
    return bool(os.environ.get("DISPLAY"))


if __name__ == "__main__":
    # Run as the module ``bench_faults``: its job classes must be importable by that name in the job process.
    sys.path.insert(0, str(HERE))
    import bench_faults

    sys.exit(bench_faults.main())
