"""The Predict dock: one model, a batch of image layers, one new layer per image.

On Predict the dock reads the layers and the form into a
:class:`~napari_dlbio.requests.PredictRequest` on the UI thread; the job process
loads the model (once: it keeps it for the next click) and predicts image after
image, handing each result back to be added as ``<image>_<model>``. Large (or
lazy, dask/zarr) layers go block by block into OME-Zarr stores (the Output
group), on this computer or a Dask cluster; their layer fills in as blocks
finish (:class:`~napari_dlbio._qt.live_layer.LiveLayer`).
"""

from __future__ import annotations

import time

from qtpy.QtWidgets import QWidget

from ..formatting import describe_error
from ..jobs import Cancelled, Progress
from .._layers import layer_data
from ..requests import ImageDone, ImageFailed, ImageStarted, ModelLoaded, PredictRequest
from ..to_store import StoreDone, is_large, store_path
from .job_controls import JobControls
from .live_layer import LiveLayer, time_left
from .output_box import OutputBox
from .predict_boxes import ImagesBox, ModelSourceBox, PredictSettingsBox
from .results import add_prediction
from .runner import JobRunner, notify_error, notify_info
from .staged import StagedDock
from .widgets import scroll_body


class PredictWidget(StagedDock, QWidget):
    LATER = frozenset({
        "images_box", "settings_box", "output_box", "controls", "source", "stack", "saved", "model_info",
        "folder", "browse", "pre_backend", "pre_name", "images", "channels", "probabilities", "run_btn",
        "cancel_btn", "progress", "status"})

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner(self, on_progress=self._on_progress)
        self.request: PredictRequest | None = None   # the last run's
        self.added: list = []          # layers added by the last run (for tests and the status line)
        self.errors: list[str] = []    # per-image problems of the last run
        self.loaded: list = []         # ModelRefs of the models the job process loaded (not cached yet)
        self._current = ""
        self.live: LiveLayer | None = None   # the image being written to OME-Zarr
        self._outer = scroll_body(self)
        self.model_box = ModelSourceBox()
        self._outer.addWidget(self.model_box)
        # The rest comes in the next event-loop turns (see .staged): opening stays under ~30 ms a turn.
        self.stage([self._build_middle, self._build_bottom, self._start])

    def _suggest_output(self, *_args) -> None:
        """Large or lazy (dask/zarr) layers ticked: suggest OME-Zarr (the user may change it back)."""
        self.output_box.suggest(any(is_large(layer_data(layer)) for layer, _ in self.images.selected()))

    # -- layout -----------------------------------------------------------------------
    def _build_middle(self) -> None:
        self.images_box = ImagesBox(self.viewer)
        self.settings_box = PredictSettingsBox()
        self._outer.addWidget(self.images_box)
        self._outer.addWidget(self.settings_box)

    def _build_bottom(self) -> None:
        self.output_box = OutputBox()
        self.controls = JobControls(
            "Predict", "Run the model on every ticked image layer; each result becomes a new layer",
            "Stop after the current slice or tile; finished layers are kept",
            "Tick image layers, pick a model, press Predict.",
        )
        self._outer.addWidget(self.output_box)
        self._outer.addWidget(self.controls)
        self._outer.addStretch(1)
        # The parts' widgets under the dock's own names (used by tests and scripts).
        m, c = self.model_box, self.controls
        self.source, self.stack, self.saved, self.model_info = m.source, m.stack, m.saved, m.model_info
        self.folder, self.browse, self.pre_backend, self.pre_name = m.folder, m.browse, m.pre_backend, m.pre_name
        self.images, self.channels = self.images_box.images, self.images_box.channels
        self.probabilities = self.settings_box.probabilities
        self.run_btn, self.cancel_btn, self.progress, self.status = c.run_btn, c.cancel_btn, c.progress, c.status

    def _start(self) -> None:
        self.model_box.backend_changed.connect(self.settings_box.show_backend)
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(self.cancel)
        self.images.itemChanged.connect(self._suggest_output)
        self.model_box.refresh()
        self._suggest_output()

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
                              self.settings_box.extras(source.backend), self.output_box.choice())

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
        self._started = time.monotonic()
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
            self._start_live(event.name)
        elif isinstance(event, ImageFailed):
            text = f"{event.name}: {describe_error(event.error)}"
            self.errors.append(text)
            notify_error(text, "Predict")
        elif isinstance(event, (ImageDone, StoreDone)):
            if self.live is not None:
                self.live.finish()
                self.live = None
            self.added += add_prediction(self.viewer, self.request, event)

    def _start_live(self, name: str) -> None:
        out = self.request.output
        if out is None:
            return
        snap = next(s for s in self.request.images if s.name == name)
        final = store_path(out.folder, snap.name, self.request.source.name)
        self.live = LiveLayer(self.viewer, snap, str(final), self.request.source.name)

    def _on_progress(self, p: Progress | None, _events) -> None:
        if p is None:
            return
        if p.fraction is not None:
            self.progress.setValue(int(1000 * p.fraction))
        message = p.message
        if self.live is not None:
            self.live.update()
            eta = time_left(self._started, p.fraction)
            message = f"{message} · {eta}" if eta else message
        self.status.setText(f"{self._current}: {message}" if self._current else message)

    def _done(self, n) -> None:
        self.progress.setValue(1000)
        names = ", ".join(lay.name for lay in self.added) or "no layer"
        msg = f"done: {len(self.added)} new layer(s): {names}"
        if self.errors:
            msg += f" — {len(self.errors)} image(s) failed (see notifications)"
        self.status.setText(msg)

    def _failed(self, exc: BaseException) -> None:
        partial = self.live.keep_partial() if self.live is not None else None
        self.live = None
        if isinstance(exc, Cancelled):
            kept = f"blocks done kept in {partial!r}" if partial else f"kept {len(self.added)} finished layer(s)"
            self.status.setText(f"cancelled; {kept}")
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
