"""The Predict dock: one model, a batch of image layers, one new layer per image.

On Predict the dock reads the layers and the form into a
:class:`~napari_dlbio.requests.PredictRequest` on the UI thread; the job process
loads the model (once: it keeps it for the next click) and predicts image after
image, handing each result back to be added as ``<image>_<model>``.
"""

from __future__ import annotations

from qtpy.QtWidgets import QWidget

from ..formatting import describe_error
from ..jobs import Cancelled, Progress
from ..requests import ImageDone, ImageFailed, ImageStarted, ModelLoaded, PredictRequest
from .job_controls import JobControls
from .predict_boxes import ImagesBox, ModelSourceBox, PredictSettingsBox
from .results import add_prediction
from .runner import JobRunner, notify_error, notify_info
from .widgets import scroll_body


class PredictWidget(QWidget):
    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner(self, on_progress=self._on_progress)
        self.request: PredictRequest | None = None   # the last run's
        self.added: list = []          # layers added by the last run (for tests and the status line)
        self.errors: list[str] = []    # per-image problems of the last run
        self.loaded: list = []         # ModelRefs of the models the job process loaded (not cached yet)
        self._current = ""
        self._build()
        self.model_box.backend_changed.connect(self.settings_box.show_backend)
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(self.cancel)
        self.model_box.refresh()

    # -- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        outer = scroll_body(self)
        self.model_box = ModelSourceBox()
        self.images_box = ImagesBox(self.viewer)
        self.settings_box = PredictSettingsBox()
        self.controls = JobControls(
            "Predict", "Run the model on every ticked image layer; each result becomes a new layer",
            "Stop after the current slice or tile; finished layers are kept",
            "Tick image layers, pick a model, press Predict.",
        )
        for part in (self.model_box, self.images_box, self.settings_box, self.controls):
            outer.addWidget(part)
        outer.addStretch(1)
        # The parts' widgets under the dock's own names (used by tests and scripts).
        m, c = self.model_box, self.controls
        self.source, self.stack, self.saved, self.model_info = m.source, m.stack, m.saved, m.model_info
        self.folder, self.browse, self.pre_backend, self.pre_name = m.folder, m.browse, m.pre_backend, m.pre_name
        self.images, self.channels = self.images_box.images, self.images_box.channels
        self.probabilities = self.settings_box.probabilities
        self.run_btn, self.cancel_btn, self.progress, self.status = c.run_btn, c.cancel_btn, c.progress, c.status

    @property
    def form(self):
        """The chosen model's prediction settings form (None before a model is chosen)."""
        return self.settings_box.form

    # -- run -----------------------------------------------------------------------------
    def predict_request(self) -> PredictRequest:
        """The dock's choices as a request (read on the UI thread); a ValueError says what is missing."""
        source = self.model_box.model_source()
        # A folder typed without pressing Enter has not changed the form yet.
        self.settings_box.show_backend(source.backend)
        settings = self.form.build()
        return PredictRequest(source, self.images_box.snapshots(), settings, self.images_box.channel_choice(),
                              self.settings_box.extras(source.backend))

    def run(self) -> None:
        if self.runner.running:
            return
        try:
            request = self.predict_request()
        except Exception as exc:  # noqa: BLE001 - every input problem becomes a notification
            notify_error(exc, "Predict")
            return
        self.request = request
        self.added, self.errors = [], []
        self._set_running(True)
        self.status.setText("starting…")
        self.runner.start(request, on_done=self._done, on_error=self._failed, on_yield=self._yielded,
                          on_finished=lambda: self._set_running(False),
                          activity=f"Predicting {len(request.images)} image(s)")

    def cancel(self) -> None:
        self.runner.cancel()
        self.status.setText("cancelling…")

    def _yielded(self, event) -> None:
        if isinstance(event, ModelLoaded):
            self.loaded.append(event.model)
        elif isinstance(event, ImageStarted):
            self._current = event.text()
        elif isinstance(event, ImageFailed):
            text = f"{event.name}: {describe_error(event.error)}"
            self.errors.append(text)
            notify_error(text, "Predict")
        elif isinstance(event, ImageDone):
            self.added += add_prediction(self.viewer, self.request, event)

    def _on_progress(self, p: Progress | None, _events) -> None:
        if p is None:
            return
        if p.fraction is not None:
            self.progress.setValue(int(1000 * p.fraction))
        self.status.setText(f"{self._current}: {p.message}" if self._current else p.message)

    def _done(self, n) -> None:
        self.progress.setValue(1000)
        names = ", ".join(lay.name for lay in self.added) or "no layer"
        msg = f"done: {len(self.added)} new layer(s): {names}"
        if self.errors:
            msg += f" — {len(self.errors)} image(s) failed (see notifications)"
        self.status.setText(msg)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.status.setText(f"cancelled; kept {len(self.added)} finished layer(s)")
            notify_info("Prediction cancelled")
            return
        self.status.setText(f"failed: {describe_error(exc)}")
        notify_error(exc, "Predict")

    def _set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        if running:
            self.progress.setValue(0)
        else:
            self._current = ""
