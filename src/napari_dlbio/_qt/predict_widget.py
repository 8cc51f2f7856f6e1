"""The Predict dock: one model, a batch of image layers, one new layer per image.

The handler reads the layers and builds the settings on the UI thread, then a
worker loads the model (once: it is cached for the next click) and predicts
image after image, handing each result back to be added as ``<image>_<model>``.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from .. import backends
from .._layers import parse_channels, prediction_layers, provenance, snapshot
from ..jobs import Cancelled, Progress
from .forms import SettingsForm
from .runner import JobRunner, warm_up_torch, describe_error, notify_error, notify_info
from .widgets import ImageTable, JobControls, SavedModelPicker, scroll_body

SOURCES = ("Saved model", "Model folder", "Pretrained")
_CACHE_SIZE = 2


def usable_backends() -> list[str]:
    """Installed backends whose module is present in this installation."""
    return backends.available()


def add_layers(viewer, tuples: list[tuple]) -> list:
    """Add LayerDataTuples with the public ``add_<kind>`` methods; returns the layers."""
    added = []
    for data, meta, kind in tuples:
        added.append(getattr(viewer, f"add_{kind}")(data, **meta))
    return added


class PredictWidget(QWidget):
    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner(self, on_progress=self._on_progress)
        warm_up_torch()
        self._cache: dict[tuple, object] = {}
        self._form_backend: str | None = None
        self.form: SettingsForm | None = None
        self.added: list = []          # layers added by the last run (for tests and the status line)
        self.errors: list[str] = []    # per-image problems of the last run
        self._current = ""
        self._build()
        self._source_changed()

    # -- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        outer = scroll_body(self)

        model_box = QGroupBox("Model")
        mform = QFormLayout(model_box)
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.source.setToolTip("Where the model comes from: trained here, a model folder, or a backend's own model")
        mform.addRow("source", self.source)
        self.stack = QStackedWidget()
        self.saved = SavedModelPicker()
        self.stack.addWidget(self.saved)
        folder_w = QWidget()
        fl = QHBoxLayout(folder_w)
        fl.setContentsMargins(0, 0, 0, 0)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder with model.json")
        self.browse = QPushButton("Browse…")
        fl.addWidget(self.folder)
        fl.addWidget(self.browse)
        self.stack.addWidget(folder_w)
        pre_w = QWidget()
        pl = QHBoxLayout(pre_w)
        pl.setContentsMargins(0, 0, 0, 0)
        self.pre_backend = QComboBox()
        for name in usable_backends():
            if backends.spec(name).has_pretrained:
                self.pre_backend.addItem(backends.spec(name).title, name)
        self.pre_name = QLineEdit()
        pl.addWidget(self.pre_backend)
        pl.addWidget(self.pre_name, 1)
        self.stack.addWidget(pre_w)
        mform.addRow("model", self.stack)
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        mform.addRow(self.model_info)
        outer.addWidget(model_box)

        img_box = QGroupBox("Images")
        il = QVBoxLayout(img_box)
        self.images = ImageTable(self.viewer)
        il.addWidget(self.images)
        row = QFormLayout()
        self.channels = QLineEdit()
        self.channels.setPlaceholderText("all")
        self.channels.setToolTip("Channels to feed the model, e.g. '0' or '0, 2' (images with a C axis)")
        row.addRow("channels", self.channels)
        il.addLayout(row)
        outer.addWidget(img_box)

        self.settings_box = QGroupBox("Settings")
        self.settings_layout = QVBoxLayout(self.settings_box)
        self.probabilities = QCheckBox("also output probabilities")
        self.probabilities.setToolTip("Add the model's probability maps as extra image layers")
        self.settings_layout.addWidget(self.probabilities)
        outer.addWidget(self.settings_box)

        controls = JobControls(
            "Predict", "Run the model on every ticked image layer; each result becomes a new layer",
            "Stop after the current slice or tile; finished layers are kept",
            "Tick image layers, pick a model, press Predict.",
        )
        self.run_btn, self.cancel_btn = controls.run_btn, controls.cancel_btn
        self.progress, self.status = controls.progress, controls.status
        outer.addWidget(controls)
        outer.addStretch(1)

        self.source.currentIndexChanged.connect(self._source_changed)
        self.saved.model_changed.connect(lambda _: self._source_changed())
        self.folder.editingFinished.connect(self._source_changed)
        self.browse.clicked.connect(self._browse)
        self.pre_backend.currentIndexChanged.connect(self._source_changed)
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(self.cancel)

    # -- model source -------------------------------------------------------------------
    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder")
        if path:
            self.folder.setText(path)
            self._source_changed()

    def _source_info(self):
        """(backend name or None, ModelInfo or None) of the current choice, without loading weights."""
        from .. import store

        kind = self.source.currentText()
        if kind == "Saved model":
            info = self.saved.info()
            return (info.backend if info else None), info
        if kind == "Model folder":
            text = self.folder.text().strip()
            if not text:
                return None, None
            info = store.read_info(text)  # ModelError with the reason if not a model folder
            return info.backend, info
        return self.pre_backend.currentData(), None

    def _source_changed(self) -> None:
        self.stack.setCurrentIndex(self.source.currentIndex())
        if self.source.currentText() == "Pretrained":
            name = self.pre_backend.currentData()
            self.pre_name.setPlaceholderText(backends.spec(name).pretrained_hint if name else "name")
        try:
            backend, info = self._source_info()
        except Exception as exc:  # noqa: BLE001 - shown next to the field
            self.model_info.setText(f"⚠ {describe_error(exc)}")
            return
        if info is not None:
            from .widgets import _describe

            self.model_info.setText(_describe(info).replace("\n", " · "))
            self.model_info.setToolTip(str(info.path))
        elif self.source.currentText() == "Pretrained" and backend is None:
            self.model_info.setText("no backend with pretrained models is installed")
        else:
            self.model_info.setText("")
        self._set_backend(backend)

    def _set_backend(self, backend: str | None) -> None:
        if backend == self._form_backend:
            return
        if self.form is not None:
            self.settings_layout.removeWidget(self.form)
            self.form.deleteLater()
            self.form = None
        self._form_backend = backend
        if backend is None:
            return
        try:
            be = backends.get(backend)
        except Exception as exc:  # noqa: BLE001
            self.model_info.setText(f"⚠ {describe_error(exc)}")
            return
        hide = {"probabilities"} if "probabilities" in be.Predict.model_fields else set()
        self.form = SettingsForm(be.Predict, hide=hide)
        self.settings_layout.insertWidget(0, self.form)
        self.probabilities.setEnabled(be.output == "labels")

    def _model_request(self):
        """(cache key, loader) for the chosen model; errors name the problem."""
        from .. import tasks

        kind = self.source.currentText()
        backend, info = self._source_info()
        if kind == "Pretrained":
            name = self.pre_name.text().strip() or self.pre_name.placeholderText()
            if backend is None:
                raise ValueError("no backend with pretrained models is installed")
            return ("pretrained", backend, name), backend, (lambda: tasks.load_model(name, backend))
        if info is None:
            raise ValueError("choose a saved model or a model folder first (train one in the Train dock)")
        path = info.path
        return ("store", str(path), info.created), info.backend, (lambda: tasks.load_model(path))

    # -- run -----------------------------------------------------------------------------
    def run(self) -> None:
        if self.runner.running:
            return
        from .. import tasks

        try:
            key, backend, loader = self._model_request()
            be = backends.get(backend)
            self._set_backend(backend)
            extras = self.probabilities.isChecked() and be.output == "labels"
            overrides = {"probabilities": True} if extras and "probabilities" in be.Predict.model_fields else {}
            settings = self.form.build(**overrides)
            picked = self.images.selected()
            if not picked:
                raise ValueError("tick at least one image layer to predict on")
            snaps = [snapshot(layer, axes) for layer, axes in picked]
            channels = parse_channels(self.channels.text())
        except Exception as exc:  # noqa: BLE001 - every input problem becomes a notification
            notify_error(exc, "Predict")
            return
        cached = self._cache.get(key)
        self.added, self.errors = [], []

        def job(ctx):
            model = cached
            if model is None:
                ctx.report(0, len(snaps), "loading the model")
                model = loader()
                yield ("model", key, model)
            n = len(snaps)
            for k, snap in enumerate(snaps):
                ctx.check()
                yield ("start", snap.name, k, n)
                try:
                    pred = tasks.predict(model, snap.data, snap.axes, settings, ctx.span(k, k + 1, n),
                                         rgb=snap.rgb, channels=channels)
                except (Cancelled, MemoryError):
                    raise
                except Exception as exc:  # noqa: BLE001 - one bad image must not lose the others
                    yield ("error", snap.name, exc)
                    continue
                if pred.cancelled:
                    raise Cancelled("cancelled by the user")
                yield ("result", snap, pred, model)
            return n

        self._set_running(True)
        self.status.setText("loading the model…" if cached is None else "starting…")
        self._settings = settings
        self._extras = extras
        self.runner.start(job, on_done=self._done, on_error=self._failed, on_yield=self._yielded,
                          on_finished=lambda: self._set_running(False))

    def cancel(self) -> None:
        self.runner.cancel()
        self.status.setText("cancelling…")

    def _yielded(self, msg) -> None:
        kind = msg[0]
        if kind == "model":
            _, key, model = msg
            self._cache[key] = model
            while len(self._cache) > _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
        elif kind == "start":
            self._current = f"{msg[1]} ({msg[2] + 1}/{msg[3]})"
        elif kind == "error":
            text = f"{msg[1]}: {describe_error(msg[2])}"
            self.errors.append(text)
            notify_error(text, "Predict")
        elif kind == "result":
            _, snap, pred, model = msg
            prov = provenance(model, snap, self._settings, {"seconds": round(pred.seconds, 2)})
            tuples = prediction_layers(pred, snap, prov, extras=self._extras,
                                       existing=[lay.name for lay in self.viewer.layers])
            self.added += add_layers(self.viewer, tuples)

    def _on_progress(self, p: Progress, _events) -> None:
        if p.fraction is not None:
            self.progress.setValue(int(1000 * p.fraction))
        if self._current:
            self.status.setText(f"{self._current}: {p.message}")
        else:
            self.status.setText(p.message)

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
        self._current = self._current if running else ""

