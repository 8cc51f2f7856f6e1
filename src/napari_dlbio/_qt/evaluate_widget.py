"""The Evaluate dock: which model is right for my data, scored on my own annotations.

The truth is a labels layer (only its annotated slices/frames count, as in
training); candidates are saved models, model folders and other labels layers (the
result of another tool). On Evaluate the dock reads them into an
:class:`~napari_dlbio.evaluate_request.EvaluateRequest` and runs it in its job
process like the Predict dock; each candidate's scores come back as it finishes.
The table ranks the candidates by the chosen metric, the items table breaks the
selected one down per slice, the plot shows AP against the IoU threshold, and
"Show errors" adds the selected candidate's false positives, false negatives,
merges and splits as a labels layer with a ``features`` table.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._layers import layer_data, snapshot
from ..evaluate_request import CandidateScored, CandidateStarted, EvaluateRequest
from ..formatting import describe_error
from ..jobs import Cancelled, Progress
from ..metrics import THRESHOLDS
from ..scoreboard import DEFAULT_SORT, IMAGE_METRICS, METRICS, CandidateResult, Comparison, default_sort
from .ap_plot import APPlot
from .evaluate_boxes import ERRORS_KEY, CandidatesBox, ResultsTable, TruthBox, candidate_note
from .job_controls import JobControls
from .runner import JobRunner, notify_error, notify_info
from .staged import StagedDock
from .widgets import hint, scroll_body

SHOWN = ["AP@0.50", "AP@0.75", "F1@0.50", "PQ"]
ERROR_COLORS = {"false positive": "#ff4040", "false negative": "#40a0ff", "merge": "#ff40ff",
                "split": "#ffd000"}

ERRORS_TIP = ("false positive: a predicted object that matches no true object; false negative: a true object "
              "no prediction matches; merge: one predicted object holding half or more of two or more true "
              "objects; split: one true object holding half or more of two or more predicted objects")


class EvaluateWidget(StagedDock, QWidget):
    LATER = frozenset({
        "candidates_box", "controls", "run_btn", "cancel_btn", "progress", "status", "sort", "table", "items",
        "plot", "items_label", "errors_btn", "csv_btn", "errors_legend"})

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner(self, on_progress=self._on_progress)
        self.request: EvaluateRequest | None = None
        self.comparison: Comparison | None = None
        self._current = ""
        self.setMinimumWidth(380)   # the results table's five columns without a scroll bar
        self._outer = scroll_body(self)
        self.truth_box = TruthBox(self.viewer)
        self._outer.addWidget(self.truth_box)
        # The rest comes in the next event-loop turns (see .staged): opening stays under ~30 ms a turn.
        self.stage([self._build_middle, self._build_results, self._start])

    # -- layout -----------------------------------------------------------------------
    def _build_middle(self) -> None:
        self.candidates_box = CandidatesBox(self.viewer, self.truth_box.labels.currentText,
                                            reference=self.truth_box.is_reference)
        self.truth_box.labels.layer_changed.connect(lambda _: self.candidates_box.refresh())
        self.controls = JobControls(
            "Evaluate", "Score every ticked candidate on the annotated slices of the ground truth",
            "Stop after the current slice; candidates already scored are kept",
            "Choose the ground truth, tick candidates, press Evaluate.")
        self._outer.addWidget(self.candidates_box)
        self._outer.addWidget(self.controls)
        c = self.controls
        self.run_btn, self.cancel_btn = c.run_btn, c.cancel_btn
        self.progress, self.status = c.progress, c.status

    def _build_results(self) -> None:
        self._outer.addWidget(self._results_box())
        self._outer.addStretch(1)

    def _start(self) -> None:
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(self.cancel)
        self.sort.currentTextChanged.connect(lambda _: self.show_results())
        self.table.itemSelectionChanged.connect(self._show_items)
        self.errors_btn.clicked.connect(self.show_errors)
        self.csv_btn.clicked.connect(self._export_dialog)

    def _results_box(self) -> QGroupBox:
        box = QGroupBox("Results")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        row.addWidget(QLabel("Rank by"))
        self.sort = QComboBox()
        self.sort.addItems([*METRICS, *IMAGE_METRICS])
        self.sort.setCurrentText(DEFAULT_SORT)
        self.sort.setToolTip("AP = TP/(TP+FP+FN) at an IoU threshold (StarDist's 'accuracy'); "
                             "PQ: panoptic quality")
        row.addWidget(self.sort, 1)
        lay.addLayout(row)
        self.table = ResultsTable("candidate")
        self.items = ResultsTable("item")
        self.plot = APPlot()
        self.items_label = hint("select a candidate to see its scores per slice/frame")
        buttons = QHBoxLayout()
        self.errors_btn = QPushButton("Show errors")
        self.errors_btn.setToolTip("Add the selected candidate's false positives, false negatives, "
                                   "merges and splits (at IoU 0.5) as a labels layer")
        self.csv_btn = QPushButton("Export CSV…")
        for b in (self.errors_btn, self.csv_btn):
            b.setEnabled(False)
            buttons.addWidget(b)
        for w in (self.table, self.plot, self.items_label, self.items):
            lay.addWidget(w)
        lay.addLayout(buttons)
        legend = " · ".join(f'<span style="color:{c}">■</span> {k}' for k, c in ERROR_COLORS.items())
        self.errors_legend = hint(f"error layer (IoU 0.5): {legend}")
        self.errors_legend.setToolTip(ERRORS_TIP)
        lay.addWidget(self.errors_legend)
        return box

    # -- the public API ------------------------------------------------------------------
    def add_model_candidate(self, name_or_path: str) -> None:
        """Offer (and tick) a model by store name, folder or pretrained name.

        The Models dock's "evaluate on the current labels" calls this.
        """
        self.candidates_box.add_model(str(name_or_path))

    def evaluate_request(self) -> EvaluateRequest:
        """The dock's choices as a request (read on the UI thread); a ValueError says what is wrong."""
        truth = self.truth_box.labels.layer()
        if truth is None:
            raise ValueError("choose the labels layer that holds your annotations (the ground truth)")
        image = self.truth_box.image.layer()
        candidates = self.candidates_box.candidates(truth.name)
        needs_image = any(c.model is not None for c in candidates)
        snap = snapshot(image, self.truth_box.image_axes()) if image is not None and needs_image else None
        # A saved 3D model is scored on volumes (as it was trained); otherwise items are 2D slices/frames.
        ndim = max([_saved_ndim(c.model) for c in candidates if c.model is not None], default=2)
        return EvaluateRequest(np.array(layer_data(truth)), truth.name, candidates, snap, ndim,
                               reference=self.truth_box.is_reference())

    # -- run -------------------------------------------------------------------------------
    def run(self) -> None:
        if self.runner.running:
            return
        try:
            request = self.evaluate_request()
        except Exception as exc:  # noqa: BLE001 - every input problem becomes a notification
            notify_error(exc, "Evaluate")
            self.status.setText(f"not started: {describe_error(exc)}")
            return
        self.request = request
        self.comparison = Comparison(request.truth_name, kind="image" if request.reference else "labels")
        if (self.sort_metric in IMAGE_METRICS) != request.reference:
            self.sort.setCurrentText(default_sort(self.comparison.kind))
        self._set_running(True)
        self.status.setText("starting…")
        self.runner.start(request, on_done=self._done, on_error=self._failed, on_yield=self._yielded,
                          on_finished=lambda: self._set_running(False),
                          activity=f"Evaluating {len(request.candidates)} candidate(s)")

    def cancel(self) -> None:
        self.runner.cancel()
        self.status.setText("cancelling…")

    def _yielded(self, event) -> None:
        if isinstance(event, CandidateStarted):
            self._current = event.text()
        elif isinstance(event, CandidateScored):
            self.comparison.candidates.append(event.result)
            self.show_results()

    def _on_progress(self, p: Progress | None, _events) -> None:
        if p is None:
            return
        if p.fraction is not None:
            self.progress.setValue(int(1000 * p.fraction))
        self.status.setText(p.message)

    def _done(self, result: Comparison) -> None:
        self.progress.setValue(1000)
        self.comparison = result
        self.show_results()
        failed = [c.name for c in result.candidates if c.error or c.failures]
        best = result.ranked(self.sort_metric)[0] if result.candidates else None
        msg = f"done: best by {self.sort_metric} is {best.name}" if best is not None else "done"
        if failed:
            msg += f" — problems with {', '.join(failed)} (hover over their names)"
        self.status.setText(msg)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.status.setText(f"cancelled; {len(self.comparison.candidates)} candidate(s) scored are shown")
            notify_info("Evaluation cancelled")
            return
        self.status.setText(f"failed: {describe_error(exc)}")
        notify_error(exc, "Evaluate")

    def _set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        has = self.comparison is not None and bool(self.comparison.candidates)
        self.errors_btn.setEnabled(not running and has and not self._is_image())
        self.csv_btn.setEnabled(not running and has)
        if running:
            self.progress.setValue(0)

    # -- results ---------------------------------------------------------------------------
    @property
    def sort_metric(self) -> str:
        return self.sort.currentText()

    def ranked(self) -> list[CandidateResult]:
        return self.comparison.ranked(self.sort_metric) if self.comparison is not None else []

    def show_results(self) -> None:
        """The candidates table (best first), the AP plot, and the selected candidate's items."""
        keep = self.table.selected_name()
        ranked = self.ranked()
        shown = self._shown()
        cols = shown if self.sort_metric in shown else [self.sort_metric, *shown]
        self.table.fill(cols, [(c.name, c.mean(), candidate_note(c)) for c in ranked])
        self.plot.set_curves(THRESHOLDS, [] if self._is_image() else
                             [(c.name, c.curve()) for c in ranked if c.scored])
        for part in (self.plot, self.errors_btn, self.errors_legend):   # AP and errors: objects only
            part.setVisible(not self._is_image())
        names = [c.name for c in ranked]
        if names:
            self.table.selectRow(names.index(keep) if keep in names else 0)

    def _show_items(self) -> None:
        c = self.selected()
        if c is None:
            return
        rows = [(i.item, i.row(), i.error) for i in c.items]
        self.items.fill(self._shown(), rows)
        self.items_label.setText(f"{c.name}, per item:" if rows else f"{c.name}: {c.error}")

    def _is_image(self) -> bool:
        return self.comparison is not None and self.comparison.kind == "image"

    def _shown(self) -> list[str]:
        """The table's columns: restoration is scored by PSNR/SSIM, segmentation by AP and friends."""
        return list(IMAGE_METRICS) if self._is_image() else SHOWN

    def selected(self) -> CandidateResult | None:
        name = self.table.selected_name()
        return self.comparison.get(name) if name and self.comparison is not None else None

    def show_errors(self):
        """Add (or update) ``<candidate> errors``: one object per error, its kind in ``features``."""
        c = self.selected()
        if c is None or c.errors is None:
            notify_error("select a scored candidate first", "Show errors")
            return None
        name = self.request.truth_name
        truth = self.viewer.layers[name] if name in self.viewer.layers else None
        meta = {"scale": truth.scale, "translate": truth.translate} if truth is not None else {}
        layer = _add_error_layer(self.viewer, f"{c.name} errors", c.errors, meta)
        if truth is not None:
            self._go_to_errors(truth, c.errors.features["item"])
        counts = ", ".join(f"{n} {k}" for k, n in c.errors.counts().items())
        self.status.setText(f"{layer.name}: {counts}")
        return layer

    def _go_to_errors(self, truth, items: list[str]) -> None:
        """Show the first annotated slice/frame with errors (the others may hold none)."""
        dims, where = self.request.loop_dims, self.request.item_indices()
        if not dims or not items:
            return
        index = min(where[n] for n in set(items))
        offset = self.viewer.dims.ndim - truth.ndim
        for d, i in zip(dims, index):
            self.viewer.dims.set_point(offset + d, truth.translate[d] + truth.scale[d] * i)

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export CSV", "evaluation.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str):
        out = self.comparison.write_csv(path, self.sort_metric)
        self.status.setText(f"wrote {out}")
        return out


def _saved_ndim(name_or_path: str) -> int:
    """The dimensionality a saved model was trained for (2 for anything else: pretrained names)."""
    from .. import store

    try:
        return int(store.read_info(store.resolve(name_or_path)).ndim)
    except (store.ModelError, OSError, ValueError):
        return 2


def _add_error_layer(viewer, name: str, errors, meta: dict):
    """A labels layer coloured by error kind (legend in the tooltip through ``features``)."""
    from napari.utils.colormaps import DirectLabelColormap

    features = {"index": list(errors.features["label"]), **errors.features}
    colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    f = errors.features
    colors.update({lab: ERROR_COLORS[k] for lab, k in zip(f["label"], f["error"])})
    cmap = DirectLabelColormap(color_dict=colors)
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data, layer.features, layer.colormap = errors.labels, features, cmap
        return layer
    return viewer.add_labels(errors.labels, name=name, features=features, colormap=cmap, opacity=0.8,
                             metadata={ERRORS_KEY: name}, **meta)
