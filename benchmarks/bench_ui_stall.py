"""Does the napari window stay responsive while the Train dock trains?

Opens napari (on a virtual X display when none is set), loads the synthetic 2D
nuclei sample, opens the Train dock, starts training and records the ticks of a
10 ms QTimer on the UI thread. A long gap between ticks is a stall the user
feels (typing, panning, painting freeze). Rows:

* ``open``: from opening the Train dock until torch has loaded in the background
  (the dock starts that load so that the Train click does not pay for it);
* ``default``: training the U-Net's default architecture for the time budget;
* ``flood``: a tiny U-Net making hundreds of progress reports per second, to test
  that progress delivery is coalesced (<= 20 UI updates per second).

Usage: python benchmarks/bench_ui_stall.py [--seconds 30] [--scenarios default,flood,n2v]
Target: max stall < 100 ms during training.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

# name -> (backend, settings changed from its defaults)
SCENARIOS = {
    "default": ("unet", {}),
    "flood": ("unet", {"depth": 1, "base_width": 4, "batch_size": 1, "patch_size": 32, "steps_per_epoch": 20,
                       "val_patches": 1}),
    "n2v": ("n2v", {}),
}


def _display():
    if os.environ.get("DISPLAY") or sys.platform != "linux":
        return None
    from pyvirtualdisplay import Display

    d = Display(visible=False, size=(1600, 1000), color_depth=24)
    d.start()
    return d


class Ticker:
    """A 10 ms timer on the UI thread; remembers what the job last reported at each tick."""

    def __init__(self, phase) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.phase: list[str] = []
        self._phase = phase
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())
        self.phase.append(self._phase())

    def stats(self, name: str, t0: float, t1: float, **extra) -> dict:
        keep = [i for i, x in enumerate(self.ticks) if t0 <= x <= t1]
        t = np.array([self.ticks[i] for i in keep])
        gaps = np.diff(t) * 1000 if len(t) > 1 else np.array([np.nan])
        worst = np.argsort(gaps)[::-1][:3] if len(t) > 1 else []
        return {
            "row": name, "seconds": t1 - t0, "ticks": len(t),
            "max_ms": float(np.nanmax(gaps)), "p99_ms": float(np.nanpercentile(gaps, 99)),
            "p50_ms": float(np.nanmedian(gaps)), "over_100": int(np.sum(gaps > 100)),
            "worst": [f"{gaps[i]:.0f} ms at {t[i] - t0:.1f} s ('{self.phase[keep[i]]}')" for i in worst],
            **extra,
        }


def pump(app, seconds: float = 0.0, until=None) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or (until is not None and until()):
        app.processEvents()
        time.sleep(0.001)


def run(scenarios: list[str], seconds: float) -> list[dict]:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dlbio._qt import runner as runner_mod

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.open_sample("napari-dlbio", "nuclei_2d")
    pump(app, 1.0)
    state = {"w": None}

    def phase() -> str:
        w = state["w"]
        if w is None:
            return "opening the dock"
        last = w.runner.ctx.last if w.runner.ctx is not None else None
        return last.message if last is not None else "idle"

    ticker = Ticker(phase)
    rows = []
    t_open = time.perf_counter()
    _, w = viewer.window.add_plugin_dock_widget("napari-dlbio", "Train")
    state["w"] = w
    pump(app, 0.2, until=lambda: runner_mod.warm_thread is not None and runner_mod.warm_thread.is_alive())
    rows.append(ticker.stats("open", t_open, time.perf_counter(), epochs=0, reports=0, ui_updates=0, ok=True))
    for name in scenarios:
        backend, changes = SCENARIOS[name]
        w.backend.setCurrentIndex(w.backend.findData(backend))
        pump(app, 0.2)
        if backend != "n2v":
            w.labels.set_layer("nuclei2d_gt")
        w.form.set_values({"epochs": 100_000, "minutes": seconds / 60.0, **changes})
        w.name.setText(f"stall-{name}")
        reports = [0]
        orig = runner_mod.JobRunner._from_worker

        def counting(p, _orig=orig, _w=w):
            reports[0] += 1
            _orig(_w.runner, p)

        w.runner._from_worker = counting  # count every report the job makes
        costs: list[float] = []
        show = w._on_progress

        def timed(p, events, _show=show):
            t = time.perf_counter()
            _show(p, events)
            costs.append((time.perf_counter() - t) * 1000)

        w.runner.on_progress = timed  # how long each UI update itself takes
        before = w.runner.n_deliveries
        pump(app, 0.5)
        t0 = time.perf_counter()
        w.train()
        pump(app, until=lambda: w.runner.running)
        t1 = time.perf_counter()
        ok = w.outcome is not None
        rows.append(ticker.stats(name, t0, t1, epochs=len(w.outcome.history) if ok else 0,
                                 reports=reports[0], ui_updates=w.runner.n_deliveries - before, ok=ok,
                                 update_ms=(float(np.mean(costs)), float(np.max(costs))) if costs else None))
        w.runner.on_progress = show
    ticker.timer.stop()
    viewer.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="training time budget per scenario")
    ap.add_argument("--scenarios", default="default,flood,n2v")
    args = ap.parse_args()
    os.environ.setdefault("NAPARI_DLBIO_HOME", tempfile.mkdtemp(prefix="dlbio-bench-"))
    disp = _display()
    try:
        rows = run(args.scenarios.split(","), args.seconds)
    finally:
        if disp is not None:
            disp.stop()
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nUI stalls (10 ms QTimer on the UI thread; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {load:.1f})")
    head = (f"{'row':<8} {'secs':>6} {'epochs':>6} {'ticks':>6} {'max ms':>7} {'p99 ms':>7} "
            f"{'p50 ms':>7} {'>100ms':>6} {'reports':>8} {'UI upd':>7}  ok")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['row']:<8} {r['seconds']:>6.1f} {r['epochs']:>6} {r['ticks']:>6} {r['max_ms']:>7.1f} "
              f"{r['p99_ms']:>7.1f} {r['p50_ms']:>7.1f} {r['over_100']:>6} {r['reports']:>8} {r['ui_updates']:>7}"
              f"  {'yes' if r['ok'] else 'NO'}")
    for r in rows:
        print(f"longest gaps ({r['row']}): " + "; ".join(r["worst"]))
    for r in rows:
        if r.get("update_ms"):
            print(f"UI update cost ({r['row']}): mean {r['update_ms'][0]:.2f} ms, max {r['update_ms'][1]:.1f} ms")
    print("target: max stall < 100 ms while training")


if __name__ == "__main__":
    main()
