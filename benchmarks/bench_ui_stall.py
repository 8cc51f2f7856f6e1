"""Does napari's window stay responsive while the docks train and predict?

Opens napari (on a virtual X display when none is set) with the synthetic 2D
nuclei sample and a 4x4-tiled 1024x1024 copy of it, and runs a 10 ms
PreciseTimer on the UI thread the whole time: a gap between two ticks is a
stall the user feels (typing, panning, painting freeze). For every backend
fresh Train and Predict docks are opened (so each gets a new job process) and
these phases are timed:

* ``open``: from ``add_plugin_dock_widget`` (Train, then 0.1 s later Predict) until 1 s later;
* ``start``: from the Train click until the first report of the running training
  (a step or an epoch) reaches the dock: the job process is spawned and imports
  torch and the backend here (its first report, "reading the annotated slices",
  comes before those imports; the note says when it came);
* ``train``: the rest of the training, until the job has ended;
* ``predict``/``predict 4x``: the Predict dock with the trained model on the
  sample and on the 1024x1024 image, from the click until done (the Predict
  dock's first job starts its own job process);
* ``layers``: windows around each add of result layers (``results.add_layers``,
  0.1 s before until 0.5 s after, to include the first paint of the layer);
  here "UI upd" counts the adds and "cost" is the time spent in each add.

First, rows of backend "-" calibrate what this display costs without the plugin:
``idle``; a label's text / a progress bar's value changed 10 times a second in a
plain dock; two plain docks (forms of 30 rows) opened as the plugin's are; napari's ``add_labels``
of a 256x256 and a 1024x1024 int32 array.

Columns: "reports" = progress reports from the job (executor thread), "UI upd" =
updates of the dock (``on_progress`` calls), "cost" = mean/max ms per update;
"ok" = the phase ran (its job succeeded), "target" = it met the target.
Target: max < 50 ms and p99 < 30 ms in every phase. With ``--stacks`` a sampling
thread records the UI thread's stack during stalls and names where they came from.

Usage: python benchmarks/bench_ui_stall.py [--seconds 20] [--backends unet,stardist,n2v] [--stacks]
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter

import numpy as np
from virtual_display import start_display

TARGET_MAX, TARGET_P99 = 50.0, 30.0   # ms
HEAVY = ("torch", "cellpose", "stardist", "careamics", "lightning")  # must stay out of napari's process
# backend -> settings changed from its defaults (small epochs, so that epochs end within the budget)
SETTINGS = {
    "unet": {"steps_per_epoch": 10, "val_patches": 4},
    "stardist": {"steps_per_epoch": 10, "val_patches": 4},
    "n2v": {"steps_per_epoch": 10, "val_patches": 4},
}
NEEDS_LABELS = {"unet", "stardist"}
IMAGE, LABELS, LARGE = "nuclei2d", "nuclei2d_gt", "nuclei2d_x4"
WINDOW = (0.1, 0.5)   # s before / after an add of layers
TRAINING = ("step", "epoch")   # reports of a running training: the job process has imported everything


def now() -> float:
    return time.perf_counter()


class Ticker:
    """A 10 ms PreciseTimer on the UI thread; ``ticks`` are the times it fired."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.ticks: list[float] = [now()]
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(now()))
        self.timer.start()

    def gaps(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Gaps (ms) between ticks that overlap [t0, t1], and the time each gap began."""
        i0 = max(bisect.bisect_right(self.ticks, t0) - 1, 0)
        i1 = bisect.bisect_left(self.ticks, t1) + 1
        t = np.array(self.ticks[i0:i1])
        return np.diff(t) * 1000, t[:-1]


class Watchdog(threading.Thread):
    """Samples the UI thread's stack every 5 ms while the ticker is late (> 25 ms)."""

    def __init__(self, ticker: Ticker) -> None:
        super().__init__(name="stall watchdog", daemon=True)
        self.ticker, self.samples, self.stop = ticker, [], threading.Event()
        self.ui = threading.main_thread().ident

    def run(self) -> None:
        while not self.stop.wait(0.005):
            if now() - self.ticker.ticks[-1] > 0.025:
                frame = sys._current_frames().get(self.ui)
                if frame is not None:
                    self.samples.append((now(), traceback.extract_stack(frame)))

    def blame(self, start: float, ms: float) -> str:
        """Where the UI thread was during the gap [start, start + ms]: the commonest frames."""
        end = start + ms / 1000
        where = Counter(_where(stack) for t, stack in self.samples if start <= t <= end)
        return "; ".join(f"{w} x{n}" for w, n in where.most_common(2)) or "no sample"

    def profile(self, spans: list[tuple[float, float]], top: int = 4) -> str:
        """Sampled stall time in ``spans`` by innermost napari_dlbio function (else innermost frame)."""
        where = Counter(_ours(stack) for t, stack in self.samples if any(a <= t <= b for a, b in spans))
        return ", ".join(f"{w} {5 * n} ms" for w, n in where.most_common(top)) or "no sample"


def _plugin_frames(stack) -> list:
    return [f for f in stack if "napari_dlbio" in f.filename and "benchmarks" not in f.filename]


def _ours(stack) -> str:
    ours = _plugin_frames(stack)
    if ours:
        return f"{_rel(ours[-1].filename)}:{ours[-1].name}"
    return _inner(stack)


def _inner(stack) -> str:
    """The innermost frame; in the benchmark's event loop: Qt's C++ (painting, layout), no Python frame."""
    last = stack[-1]
    if last.name == "pump" and last.filename.endswith("bench_ui_stall.py"):
        return "(Qt C++)"
    return f"({os.path.basename(last.filename)}:{last.name}:{last.lineno})"


def _rel(filename: str) -> str:
    return filename.replace(os.sep, "/").rsplit("napari_dlbio/", 1)[-1]


def _where(stack) -> str:
    """The innermost napari_dlbio frame (if any) and the innermost frame of all."""
    ours, inner = _plugin_frames(stack), _inner(stack)
    if not ours:
        return inner
    return f"{ours[-1].name} ({_rel(ours[-1].filename)}:{ours[-1].lineno}) > {inner}"


class Probe:
    """Times what a dock's runner delivers: reports (executor thread), UI updates and their cost."""

    def __init__(self, runner) -> None:
        self.reports: list[float] = []
        self.updates: list[tuple[float, float, str]] = []   # (time, ms spent in on_progress, kind)
        self._show, self._report = runner.on_progress, runner._from_worker
        runner.on_progress = self._timed            # read by _deliver at every delivery
        runner._from_worker = self._counted         # bound into the job's callbacks at start()

    def _counted(self, p) -> None:
        self.reports.append(now())
        self._report(p)

    def _timed(self, p, events) -> None:
        t = now()
        self._show(p, events)
        self.updates.append((t, (now() - t) * 1000, "none" if p is None else p.kind))

    def first_update(self, after: float, kinds=None) -> float | None:
        """When the first UI update after ``after`` (of a report of one of ``kinds``) began."""
        return next((t for t, _, k in self.updates if t >= after and (kinds is None or k in kinds)), None)

    def between(self, t0: float, t1: float) -> dict:
        costs = [ms for t, ms, _ in self.updates if t0 <= t <= t1]
        return {"reports": sum(t0 <= t <= t1 for t in self.reports), "updates": len(costs),
                "cost": (float(np.mean(costs)), float(np.max(costs))) if costs else None}


class AddTimer:
    """Wraps ``results.add_layers`` (used by both docks) to time each add of result layers."""

    def __init__(self) -> None:
        from napari_dlbio._qt import results

        self.calls: list[tuple[float, float]] = []
        self._orig = results.add_layers
        results.add_layers = self._timed

    def _timed(self, viewer, tuples):
        t = now()
        try:
            return self._orig(viewer, tuples)
        finally:
            self.calls.append((t, now()))

    def since(self, t0: float) -> list[tuple[float, float]]:
        return [c for c in self.calls if c[0] >= t0]


class Bench:
    """One napari window, its ticker and probes; ``rows`` gets one dict per backend and phase."""

    def __init__(self, seconds: float, stacks: bool) -> None:
        import napari

        self.seconds, self.rows, self.probes, self.phase = seconds, [], {}, "open"
        self.viewer = napari.Viewer(show=True)
        self.viewer.open_sample("napari-dlbio", "nuclei_2d")
        self.viewer.add_image(np.tile(self.viewer.layers[IMAGE].data, (4, 4)), name=LARGE, colormap="gray")
        self.ticker = Ticker()
        self.adds = AddTimer()
        self.notes: list[tuple[float, str]] = []   # napari's error notifications: (time, message)
        from napari.utils.notifications import NotificationSeverity, notification_manager

        def note(n) -> None:
            if n.severity >= NotificationSeverity.ERROR:
                self.notes.append((now(), n.message))

        notification_manager.notification_ready.connect(note)
        self.watchdog = Watchdog(self.ticker) if stacks else None
        if self.watchdog is not None:
            self.watchdog.start()
        self.pump(1.0)

    # -- event loop -------------------------------------------------------------------
    def pump(self, seconds: float = 0.0, until=None, timeout: float = 600.0, first=None) -> None:
        """Run Qt's event loop for ``seconds`` and then while ``until()``; ``first`` runs in the loop."""
        from qtpy.QtCore import QEventLoop, QTimer

        loop, t0, started = QEventLoop(), now(), [first is None]

        def go() -> None:
            try:
                first()
            finally:
                started[0] = True

        def check() -> None:
            t = now() - t0
            if t >= timeout or (started[0] and t >= seconds and (until is None or not until())):
                loop.quit()

        poll = QTimer()
        poll.timeout.connect(check)
        poll.start(5)
        if first is not None:
            QTimer.singleShot(0, go)
        loop.exec()
        poll.stop()
        if now() - t0 >= timeout:
            raise TimeoutError(f"still running after {timeout:.0f} s")

    # -- rows ---------------------------------------------------------------------------
    def row(self, backend: str, phase: str, t0: float, t1: float, probe: Probe | None = None,
            ok: bool = True, error: str = "") -> dict:
        r = make_row(backend, phase, [(t0, t1)], *self.ticker.gaps(t0, t1), ok=ok, error=error)
        if probe is not None:
            r.update(probe.between(t0, t1))
        self.rows.append(r)
        return r

    def layers_row(self, backend: str, t_start: float, phase: str = "layers") -> dict:
        """Tick gaps in the windows around every add of result layers since ``t_start``."""
        calls = self.adds.since(t_start)
        windows: list[list[float]] = []
        for a, b in calls:   # merge overlapping windows, so that no gap is counted twice
            lo, hi = a - WINDOW[0], b + WINDOW[1]
            if windows and lo <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], hi)
            else:
                windows.append([lo, hi])
        parts = [self.ticker.gaps(lo, hi) for lo, hi in windows] or [(np.array([]), np.array([]))]
        costs = [(b - a) * 1000 for a, b in calls]
        r = make_row(backend, phase, windows, np.concatenate([g for g, _ in parts]),
                     np.concatenate([t for _, t in parts]), ok=bool(calls), updates=len(calls),
                     cost=(float(np.mean(costs)), float(np.max(costs))) if costs else None,
                     error="" if calls else "no layer was added")
        self.rows.append(r)
        return r

    # -- phases -------------------------------------------------------------------------
    def calibrate(self) -> None:
        """What the window itself costs here: idle, and a label / progress bar changed 10x a second.

        ``QProgressBar.setValue`` repaints at once (inside the call), a label's new text on the next paint.
        """
        from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

        t0 = now()
        self.pump(1.0)
        self.row("-", "idle", t0, now())
        box = QWidget()
        QVBoxLayout(box)
        label, bar = QLabel("calibration"), QProgressBar()
        label.setFixedSize(300, 20)   # a new text repaints the label, it does not move the layout
        bar.setRange(0, 1000)
        bar.setTextVisible(False)     # as the docks' bars
        box.layout().addWidget(label)
        box.layout().addWidget(bar)
        dock = self.viewer.window.add_dock_widget(box, name="calibration")
        self.pump(1.0)
        for phase, change in (("label 10/s", lambda i: label.setText(f"step {i} · loss {1 / (i + 1):.4f}")),
                              ("bar 10/s", lambda i: bar.setValue(37 * i % 1000))):
            t0 = now()
            for i in range(20):
                self.pump(0.1, first=lambda i=i, change=change: change(i))
            self.row("-", phase, t0, now())
        self.viewer.window.remove_dock_widget(dock)
        self.pump(0.5)
        self.calibrate_docks()
        self.calibrate_adds()

    def calibrate_docks(self) -> None:
        """napari's own cost of opening two plain docks (a form of 30 rows each) 0.1 s apart."""
        from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

        def plain() -> QWidget:
            box = QWidget()
            form = QFormLayout(box)
            for i in range(30):
                combo = QComboBox()
                combo.addItems([f"choice {i}", "other"])
                form.addRow(f"setting {i}", combo)
            return box

        t0, added = now(), []
        self.pump(0.1, first=lambda: added.append(self.viewer.window.add_dock_widget(plain(), name="plain 1")))
        self.pump(1.0, first=lambda: added.append(self.viewer.window.add_dock_widget(plain(), name="plain 2")))
        self.row("-", "open 2 docks", t0, now())
        for dock in added:
            self.viewer.window.remove_dock_widget(dock)
        self.pump(0.5)

    def calibrate_adds(self) -> None:
        """napari's own cost of adding a labels layer like the results (256x256, 1024x1024 int32)."""
        from napari_dlbio._qt import results

        lab = np.asarray(self.viewer.layers[LABELS].data, dtype=np.int32)
        for phase, data in (("add labels", lab), ("add labels 4x", np.tile(lab, (4, 4)))):
            t0 = now()
            tuples = [(data, {"name": "calib"}, "labels")]
            self.pump(1.0, first=lambda t=tuples: results.add_layers(self.viewer, t))
            self.layers_row("-", t0, phase)
            self.viewer.layers.remove("calib")
            self.pump(0.5)

    def open_docks(self, backend: str):
        """Train, then Predict, each in its own turn of the event loop (as two menu clicks)."""
        self.phase, t0, docks = "open", now(), {}

        def add(name: str) -> None:
            docks[name] = self.viewer.window.add_plugin_dock_widget("napari-dlbio", name)[1]

        self.pump(0.1, first=lambda: add("Train"))
        self.pump(1.0, first=lambda: add("Predict"))
        self.row(backend, "open", t0, now())
        train, predict = docks["Train"], docks["Predict"]
        self.probes = {train: Probe(train.runner), predict: Probe(predict.runner)}
        return train, predict

    def configure(self, w, backend: str) -> None:
        self.phase = "configure"
        w.backend.setCurrentIndex(w.backend.findData(backend))
        self.pump(0.2)
        if w.backend_name() != backend:
            raise RuntimeError(f"backend {backend!r} is not in the Train dock")
        w.image.set_layer(IMAGE)
        if backend in NEEDS_LABELS:
            w.labels.set_layer(LABELS)
        w.form.set_values({"epochs": 100_000, "minutes": self.seconds / 60.0, **SETTINGS.get(backend, {})})
        w.name.setText(f"stall-{backend}")
        self.pump(0.5)

    def train(self, w, backend: str) -> bool:
        probe, t0, self.phase = self.probes[w], now(), "start"
        self.pump(until=lambda: probe.first_update(t0, TRAINING) is None and w.runner.running,
                  timeout=self.seconds + 300, first=w.train)
        t1 = probe.first_update(t0, TRAINING) or now()
        first = probe.first_update(t0)
        r = self.row(backend, "start", t0, t1, probe)
        r["error"] = f"first report after {first - t0:.1f} s" if first is not None else "no report"
        self.phase = "train"
        self.pump(until=lambda: w.runner.running, timeout=self.seconds + 600)
        ok = w.outcome is not None
        r = self.row(backend, "train", t1, now(), probe, ok=ok, error="" if ok else self.error_since(t0, w))
        if ok:
            r["error"] = f"{len(w.outcome.history)} epochs, stopped: {w.outcome.stopped}"
        return ok

    def predict(self, p, backend: str, model: str, layer: str, phase: str) -> None:
        probe, self.phase = self.probes[p], phase
        p.saved.refresh(select=model)
        p.images.set_checked([layer])
        self.pump(0.3)
        t0 = now()
        self.pump(until=lambda: p.runner.running, timeout=600, first=p.run)
        ok = bool(p.added) and not p.errors
        error = "" if ok else self.error_since(t0, p)
        self.row(backend, phase, t0, now(), probe, ok=ok, error=error)

    def error_since(self, t0: float, dock) -> str:
        """The error notifications since ``t0`` (else the dock's status line)."""
        return " | ".join(m for t, m in self.notes if t >= t0) or dock.status.text()

    def close(self, *docks) -> None:
        for d in docks:
            if d is None:
                continue
            try:
                self.viewer.window.remove_dock_widget(d)
            except (LookupError, RuntimeError):
                pass
            d.deleteLater()   # destroyed -> its job process is stopped
        self.pump(0.5)
        for lay in [lay for lay in self.viewer.layers if lay.name not in (IMAGE, LABELS, LARGE)]:
            self.viewer.layers.remove(lay)
        self.pump(0.5)

    def backend(self, backend: str) -> None:
        """All phases of one backend; a failure becomes a row with ok=False and its text."""
        train = predict = None
        t_start = now()
        try:
            train, predict = self.open_docks(backend)
            self.configure(train, backend)
            if not self.train(train, backend):
                return
            for layer, phase in ((IMAGE, "predict"), (LARGE, "predict 4x")):
                self.predict(predict, backend, train.outcome.name, layer, phase)
            self.layers_row(backend, t_start)
        except Exception as exc:  # noqa: BLE001 - one failing backend must not stop the others
            self.rows.append(_failed(backend, self.phase, exc))
            self.cancel(train, predict)
        finally:
            self.close(train, predict)

    def cancel(self, *docks) -> None:
        """Cancel what still runs (after a failure); it has 30 s to stop."""
        for w in docks:
            try:
                if w is not None and w.runner.running:
                    w.runner.cancel()
                    self.pump(until=lambda w=w: w.runner.running, timeout=30)
            except Exception as exc:  # noqa: BLE001 - the next backend gets a fresh dock anyway
                print(f"  could not stop {type(w).__name__}'s job: {exc}", flush=True)

    def finish(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop.set()
        self.ticker.timer.stop()
        self.viewer.close()


def make_row(backend: str, phase: str, spans, gaps: np.ndarray, starts: np.ndarray, **fields) -> dict:
    """One row of the table: the tick gaps (ms) in ``spans`` and what else is known of the phase."""
    r = {"backend": backend, "phase": phase, "spans": [tuple(x) for x in spans],
         "t0": spans[0][0] if spans else float("nan"), "seconds": sum(b - a for a, b in spans),
         "ticks": len(gaps), "reports": 0, "updates": 0, "cost": None, "ok": True, "error": ""}
    r.update(fields)
    if len(gaps) == 0:
        return {**r, "max": float("nan"), "p99": float("nan"), "p50": float("nan"), "worst": []}
    order = np.argsort(gaps)[::-1][:3]
    worst = [(float(gaps[i]), float(starts[i])) for i in order if gaps[i] > 25]
    return {**r, "max": float(gaps.max()), "p99": float(np.percentile(gaps, 99)),
            "p50": float(np.median(gaps)), "worst": worst}


def _failed(backend: str, phase: str, exc: BaseException) -> dict:
    empty = np.array([])
    return make_row(backend, phase, [], empty, empty, ok=False, error=f"{type(exc).__name__}: {exc}")


# -- report ------------------------------------------------------------------------------
def _meets(r: dict) -> bool:
    return r["max"] < TARGET_MAX and r["p99"] < TARGET_P99


def print_table(rows: list[dict]) -> None:
    head = (f"{'backend':<9} {'phase':<11} {'secs':>6} {'ticks':>6} {'max ms':>7} {'p99 ms':>7} "
            f"{'p50 ms':>7} {'reports':>7} {'UI upd':>6} {'cost ms mean/max':>16}  {'ok':<3} "
            f"{'target':<6} note")
    print(head)
    print("-" * len(head))
    for r in rows:
        cost = f"{r['cost'][0]:.2f}/{r['cost'][1]:.1f}" if r["cost"] else "-"
        target = ("met" if _meets(r) else "MISS") if r["ok"] else "-"
        print(f"{r['backend']:<9} {r['phase']:<11} {r['seconds']:>6.1f} {r['ticks']:>6} {r['max']:>7.1f} "
              f"{r['p99']:>7.1f} {r['p50']:>7.1f} {r['reports']:>7} {r['updates']:>6} {cost:>16}  "
              f"{'yes' if r['ok'] else 'NO':<3} {target:<6} {r['error']}")


def print_worst(rows: list[dict], watchdog: Watchdog | None) -> None:
    where = ", and where the UI thread was" if watchdog else ""
    print(f"\nlongest gaps per phase (s after the phase began){where}")
    for r in rows:
        if not r["worst"]:
            continue
        parts = []
        for ms, start in r["worst"]:
            where = f" [{watchdog.blame(start, ms)}]" if watchdog is not None else ""
            parts.append(f"{ms:.0f} ms at {start - r['t0']:.1f} s{where}")
        print(f"  {r['backend']} {r['phase']}: " + "; ".join(parts))


def print_profile(rows: list[dict], watchdog: Watchdog | None) -> None:
    if watchdog is None:
        return
    print("\nwhere the UI thread was while late (> 25 ms; sampled every 5 ms): napari_dlbio function, "
          "else (file:function) of napari/Qt/vispy")
    for r in rows:
        if r["ticks"] and (r["backend"] != "-" or r["phase"].startswith("add")):
            print(f"  {r['backend']} {r['phase']}: {watchdog.profile(r['spans'])}")


def print_summary(rows: list[dict], load_before: tuple) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\n{os.cpu_count()} CPUs; load average (1/5/15 min) before {_fmt(load_before)}, "
          f"after {_fmt(load)}")
    heavy = sorted(m for m in HEAVY if m in sys.modules)
    print(f"heavy modules in napari's process at the end: {heavy or 'none'}"
          f"{'  <-- must be none' if heavy else ' (good)'}")
    print(f"target: max < {TARGET_MAX:.0f} ms and p99 < {TARGET_P99:.0f} ms in every phase")
    met = [r for r in rows if r["ok"] and _meets(r)]
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(met)} of {len(rows)} rows meet the target; {len(failed)} failed")


def _fmt(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def run(backends_: list[str], seconds: float, stacks: bool) -> tuple[list[dict], Watchdog | None]:
    bench = Bench(seconds, stacks)
    try:
        bench.calibrate()
        for backend in backends_:
            n = len(bench.rows)
            bench.backend(backend)
            for r in bench.rows[n:]:
                print(f"  {backend} {r['phase']}: max {r['max']:.0f} ms, p99 {r['p99']:.0f} ms"
                      f"{'' if r['ok'] else ' FAILED ' + r['error']}", flush=True)
    finally:
        bench.finish()
    return bench.rows, bench.watchdog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="training time budget per backend")
    ap.add_argument("--backends", default="unet,stardist,n2v")
    ap.add_argument("--stacks", action="store_true", help="sample the UI thread's stack during stalls")
    args = ap.parse_args()
    os.environ.setdefault("NAPARI_DLBIO_HOME", tempfile.mkdtemp(prefix="dlbio-bench-"))
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    disp = start_display()
    try:
        names = [b.strip() for b in args.backends.split(",") if b.strip()]
        rows, watchdog = run(names, args.seconds, args.stacks)
    finally:
        if disp is not None:
            disp.stop()
    print("\nUI stalls (gaps between the ticks of a 10 ms timer on napari's UI thread)")
    print_table(rows)
    print_worst(rows, watchdog)
    print_profile(rows, watchdog)
    print_summary(rows, load_before)


if __name__ == "__main__":
    main()
