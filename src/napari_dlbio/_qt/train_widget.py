"""The Train dock: image + labels layers -> a saved model, with live loss and metrics.

Built for the loop "predict -> correct the labels with napari's tools ->
fine-tune -> predict again": the dock shows which slices count as annotated
while you paint, trains in a worker (the window stays responsive, Cancel keeps
the best model so far), and offers "Predict with this model" on the training
image when done.

The dock only wires its parts (:mod:`.train_boxes`) together: on Train it reads
the layers and the form into a :class:`~napari_dlbio.requests.TrainRequest` on
the UI thread and hands ``request.run`` to its :class:`~.runner.JobRunner`.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QTimer
from napari.layers import Image
from qtpy.QtWidgets import QScrollArea, QWidget

from .. import backends
from .._layers import PROVENANCE_KEY, snapshot
from ..formatting import describe_error, duration
from ..jobs import Cancelled, Progress
from ..requests import ImageDone, ImageFailed, ModelSource, PredictRequest, SuggestRequest, TrainRequest
from ..suggest import Source
from .forms import SettingsBox
from .job_controls import JobControls
from .results import add_prediction
from .runner import JobRunner, notify_error, notify_info
from .staged import StagedDock
from .suggest_box import SuggestBox
from .train_boxes import ModelBox, TrainingDataBox, TrainResults
from .widgets import scroll_body

_STOPPED = {"cancelled": "cancelled — best epoch kept", "time budget": "time budget reached"}


class TrainWidget(StagedDock, QWidget):
    LATER = frozenset({
        "suggest_box", "settings_box", "model_box", "controls", "results", "backend", "image", "labels",
        "region", "axes", "dims", "annotated", "name", "start_from", "name_hint", "train_btn", "cancel_btn",
        "progress", "status", "plot", "metrics", "predict_btn"})

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner(self, on_progress=self._on_progress)
        self.outcome = None            # requests.TrainSummary of the last run
        self.trained_on: str | None = None   # its image layer, for "Predict with this model"
        self.predicted: list = []      # layers added by "Predict with this model"
        self._trained_axes = ""
        self._predicting = False
        self._watched_form = None
        self._t0 = 0.0
        self._outer = scroll_body(self)
        self.data = TrainingDataBox(self.viewer)
        self._outer.addWidget(self.data)
        # The rest comes in the next event-loop turns (see .staged): opening stays under ~30 ms a turn.
        self.stage([self._build_middle, self._build_bottom, self._start])

    # -- layout ---------------------------------------------------------------------------
    def _build_middle(self) -> None:
        self.suggest_box = SuggestBox(self.viewer)
        self.settings_box = SettingsBox()
        self.model_box = ModelBox()
        for part in (self.suggest_box, self.settings_box, self.model_box):
            self._outer.addWidget(part)

    def _build_bottom(self) -> None:
        self.controls = JobControls(
            "Train", "Train in the background; the best model on validation data is saved",
            "Stop after the current batch; the best model so far is kept and saved",
            "Pick an image and its labels, then press Train.",
        )
        self.results = TrainResults()
        self._outer.addWidget(self.controls)
        self._outer.addWidget(self.results)
        self._outer.addStretch(1)
        # The parts' widgets under the dock's own names (used by tests, benchmarks and scripts).
        d, m, c, r = self.data, self.model_box, self.controls, self.results
        self.backend, self.image, self.labels, self.region = d.backend, d.image, d.labels, d.region
        self.target = d.target
        self.axes, self.dims, self.annotated = d.axes, d.dims, d.annotated
        self.name, self.start_from, self.name_hint = m.name, m.start_from, m.name_hint
        self.train_btn, self.cancel_btn, self.progress, self.status = c.run_btn, c.cancel_btn, c.progress, c.status
        self.plot, self.metrics, self.predict_btn = r.plot, r.metrics, r.predict_btn

    def _start(self) -> None:
        self._connect()
        self.data.start()

    def _connect(self) -> None:
        self.data.backend_changed.connect(self._backend_changed)
        self.data.image_changed.connect(lambda _: self._suggest_name())
        self.model_box.start_changed.connect(self._start_from_changed)
        self.train_btn.clicked.connect(self.train)
        self.cancel_btn.clicked.connect(self.cancel)
        self.predict_btn.clicked.connect(self.predict_with_model)
        self.suggest_box.run_requested.connect(self.suggest)

    @property
    def form(self):
        """The backend's settings form (None when no backend is installed)."""
        return self.settings_box.form

    @property
    def summary(self):
        """AnnotationSummary of the current layers (None when it cannot be computed)."""
        return self.data.summary

    # -- reacting to choices --------------------------------------------------------------
    def backend_name(self) -> str | None:
        return self.data.backend_name()

    def update_summary(self) -> None:
        self.data.update_summary()

    def _backend_changed(self, name: str | None) -> None:
        # The spec's settings class: building the form imports neither torch nor the backend.
        form = self.settings_box.show_form(backends.spec(name).Settings if name else None)
        if form is not None and form is not self._watched_form:
            self._watched_form = form
            form.changed.connect(self._settings_changed)
        self._settings_changed()
        if name is None:
            self.status.setText("no backend is installed")
            return
        self.start_from.set_backend(name)
        self._suggest_name()

    def _settings_changed(self) -> None:
        """Show the target picker when the settings learn from pairs (CARE, Noise2Noise)."""
        try:
            settings = self.form.build() if self.form is not None else None
        except ValueError:
            return  # a value being edited: keep what is shown
        self.data.set_target_help(settings.target_help() if settings is not None and settings.needs_targets()
                                  else "")

    def _start_from_changed(self, info) -> None:
        self.data.lock_ndim(info.ndim if info is not None else None)
        if info is not None and self.form is not None:
            self.form.set_values(info.settings)

    def _suggest_name(self) -> None:
        layer = self.image.layer()
        self.model_box.suggest_name(layer.name if layer is not None else None, self.backend_name())

    # -- training ---------------------------------------------------------------------------
    def train(self) -> None:
        if self.runner.running:
            return
        try:
            request = self.train_request()
        except Exception as exc:  # noqa: BLE001 - every input problem becomes a notification
            notify_error(exc, "Training")
            return
        self.outcome = None
        self.trained_on, self._trained_axes = request.image.name, request.axes
        self.results.clear()
        self._t0 = time.monotonic()
        self._set_running(True)
        self.status.setText("starting…")
        self._reveal(self.plot)
        self.runner.start(request, on_done=self._done, on_error=self._failed,
                          activity=f"Training {request.name}",
                          on_finished=lambda: self._set_running(False))

    def train_request(self) -> TrainRequest:
        """The dock's choices as a request (read on the UI thread); a ValueError says what is missing."""
        backend = self.backend_name()
        if backend is None:
            raise ValueError("no backend is installed")
        settings = self.form.build()
        layers = self.data.read()
        start = self.start_from.info()
        return TrainRequest(backend, settings=settings, name=self.model_box.model_name(layers["image"].name, backend),
                            start_from=start.path if start is not None else None, **layers)

    def cancel(self) -> None:
        self.runner.cancel()
        self.status.setText("cancelling…" if self._predicting else
                            "cancelling… (the best model so far will be saved)")

    def _on_progress(self, p: Progress | None, epochs: list[Progress]) -> None:
        self.results.add_epochs(epochs)
        if p is None:
            return
        if p.fraction is not None:
            self.progress.setValue(int(1000 * p.fraction))
        loss = p.metrics.get("loss", p.metrics.get("train_loss"))
        text = p.message
        if loss is not None and "loss" not in text:
            text += f" · loss {loss:.4f}"
        self.status.setText(f"{text} · {duration(time.monotonic() - self._t0)}")

    def _done(self, outcome) -> None:
        self.outcome = outcome
        self.progress.setValue(1000)
        self.results.show_outcome(outcome)
        how = _STOPPED.get(outcome.stopped, "done")
        self.status.setText(f"{how}: saved '{outcome.name}' ({duration(time.monotonic() - self._t0)})")
        self.start_from.refresh()
        self.model_box.update_hint()
        self._reveal(self.predict_btn)

    def _failed(self, exc: BaseException) -> None:
        self.progress.setValue(0)
        if isinstance(exc, Cancelled):
            self.status.setText(str(exc))
            notify_info(f"Training: {exc}")
            return
        self.status.setText(f"failed: {describe_error(exc)}")
        notify_error(exc, "Training")

    def _set_running(self, running: bool) -> None:
        self.train_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.suggest_box.run_btn.setEnabled(not running)
        self.backend.setEnabled(not running)
        if running:
            self.progress.setValue(0)
        else:
            self._predicting = False
            self.predict_btn.setEnabled(self.outcome is not None)

    def _reveal(self, widget: QWidget) -> None:
        """Scroll the dock so that ``widget`` (progress, plot, metrics) is in view."""

        def now() -> None:
            try:
                area = self.findChild(QScrollArea)
                if area is not None:
                    area.ensureWidgetVisible(widget, 0, 10)
            except RuntimeError:  # the dock was closed meanwhile
                pass

        # After the layout has taken in the new texts (metrics) - not before.
        QTimer.singleShot(50, now)

    # -- predict with the fresh model ---------------------------------------------------------
    def predict_with_model(self) -> None:
        if self.outcome is None or self.outcome.source is None or self.runner.running:
            return
        outcome = self.outcome
        try:
            snap = snapshot(self.viewer.layers[self.trained_on], self._trained_axes)
            # The job process still holds the trained model (its cache): nothing is loaded again.
            request = PredictRequest(outcome.source, [snap], backends.spec(outcome.backend).Predict())
        except Exception as exc:  # noqa: BLE001 - the layer was removed or changed since training
            notify_error(exc if not isinstance(exc, KeyError) else
                         ValueError(f"the training image layer {self.trained_on!r} is gone"), "Predict")
            return
        self.predicted = []
        self._set_running(True)
        self._predicting = True
        self.predict_btn.setEnabled(False)
        self.status.setText("predicting…")
        self.runner.start(request, on_yield=lambda event: self._predicted(request, event),
                          activity=f"Predicting with {outcome.name}",
                          on_done=lambda _: self._predict_done(), on_error=self._predict_failed,
                          on_finished=lambda: self._set_running(False))

    def _predicted(self, request: PredictRequest, event) -> None:
        if isinstance(event, ImageDone):
            self.predicted = add_prediction(self.viewer, request, event)
        elif isinstance(event, ImageFailed):
            notify_error(event.error, "Predict")

    def _predict_done(self) -> None:
        if self.predicted:
            self.status.setText(f"added {', '.join(lay.name for lay in self.predicted)} "
                                "— correct the labels, then Train again (start from this model) to fine-tune")

    def _predict_failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.status.setText("prediction cancelled")
            return
        notify_error(exc, "Predict")

    # -- what to annotate next --------------------------------------------------------------------
    def suggest(self) -> None:
        """Rank the unannotated slices/tiles of the training image by the chosen model's uncertainty."""
        if self.runner.running:
            return
        try:
            request = self.suggest_request()
        except Exception as exc:  # noqa: BLE001 - every input problem becomes a notification
            notify_error(exc, "Suggest")
            return
        snap = request.images[0]
        axes = {src.name: src.axes for src in request.images}
        self._set_running(True)
        self._predicting = True       # not training: a cancel has no model to save
        self.status.setText("ranking the unannotated slices…")
        self._t0 = time.monotonic()
        self.runner.start(request, activity=f"Suggesting in {snap.name}",
                          on_done=lambda found: self._suggested(found, axes),
                          on_error=self._suggest_failed, on_finished=lambda: self._set_running(False))

    def suggest_request(self) -> SuggestRequest:
        """The training image and labels (as training reads them) and the chosen model, as a request."""
        layers = self.data.read()
        info = self.suggest_box.model_info()
        source = ModelSource.saved(info) if info is not None else (
            self.outcome.source if self.outcome is not None else None)
        snap = layers["image"]
        images = [Source(snap.name, snap.data, snap.axes, layers["labels"], snap.rgb, region=layers["region"])]
        if self.suggest_box.others.isChecked():
            images += [_unlabelled(lay) for lay in self.viewer.layers if isinstance(lay, Image)
                       and lay.name != snap.name and PROVENANCE_KEY not in lay.metadata]
        return SuggestRequest(source, images, self.suggest_box.n.value())

    def _suggested(self, found, axes: dict[str, str]) -> None:
        self.progress.setValue(1000)
        self.suggest_box.show_suggestions(found, axes)
        self.status.setText(f"ranked in {duration(time.monotonic() - self._t0)}: annotate the top slices, "
                            "then Train again")
        self._reveal(self.suggest_box)

    def _suggest_failed(self, exc: BaseException) -> None:
        self.progress.setValue(0)
        if isinstance(exc, Cancelled):
            self.status.setText("suggestions cancelled")
            return
        self.status.setText(f"suggestions failed: {describe_error(exc)}")
        notify_error(exc, "Suggest")


def _unlabelled(layer) -> Source:
    """Another image layer to rank: all of its slices count as unannotated."""
    snap = snapshot(layer)
    return Source(snap.name, snap.data, snap.axes, None, snap.rgb)
