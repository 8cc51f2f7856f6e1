"""The Train dock: image + labels layers -> a saved model, with live loss and metrics.

Built for the loop "predict -> correct the labels with napari's tools ->
fine-tune -> predict again": the dock shows which slices count as annotated
while you paint, trains in a worker (the window stays responsive, Cancel keeps
the best model so far), and offers "Predict with this model" on the training
image when done.
"""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .. import backends
from .._layers import (
    annotation_summary,
    layer_data,
    prediction_layers,
    provenance,
    region_mask,
    safe_model_name,
    snapshot,
)
from ..jobs import Cancelled, Progress
from .forms import SettingsForm
from .loss_plot import LossPlot
from .predict_widget import add_layers, usable_backends
from .runner import JobRunner, warm_up_torch, describe_error, notify_error, notify_info
from .widgets import JobControls, LayerCombo, SavedModelPicker, hint, scroll_body

_DEBOUNCE_MS = 400


class TrainWidget(QWidget):
    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner(self, on_progress=self._on_progress)
        warm_up_torch()
        self.form: SettingsForm | None = None
        self.outcome = None            # tasks.TrainOutcome of the last run
        self.trained_on: str | None = None
        self.summary = None            # AnnotationSummary of the current layers
        self._watched = None
        self._t0 = 0.0
        self._build()
        self._backend_changed()
        self._labels_changed(self.labels.layer())

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        outer = scroll_body(self)

        data_box = QGroupBox("Training data")
        form = QFormLayout(data_box)
        self.backend = QComboBox()
        for name in usable_backends():
            self.backend.addItem(backends.spec(name).title, name)
        self.backend.setToolTip("Model family (only installed backends are listed)")
        form.addRow("backend", self.backend)
        self.image = LayerCombo(self.viewer, ("image",))
        form.addRow("image", self.image)
        self.labels = LayerCombo(self.viewer, ("labels",), none_text="(none)")
        self.labels.setToolTip("Annotations: only slices/frames holding a non-zero label are used")
        form.addRow("labels", self.labels)
        self.region = LayerCombo(self.viewer, ("shapes",), none_text="(whole image)", default_none=True)
        self.region.setToolTip("Optional shapes layer: train only inside these shapes")
        form.addRow("region", self.region)
        geo = QHBoxLayout()
        self.axes = QLineEdit()
        self.axes.setToolTip("Axes of the image (T, Z, C, Y, X); leave empty to use the guess")
        self.dims = QComboBox()
        self.dims.addItems(["2D", "3D"])
        self.dims.setToolTip("2D models see one slice at a time; 3D models need a Z axis")
        geo.addWidget(self.axes, 1)
        geo.addWidget(QLabel("model"))
        geo.addWidget(self.dims)
        form.addRow("axes", geo)
        self.annotated = QLabel("")
        self.annotated.setWordWrap(True)
        self.annotated.setToolTip("Only slices/frames with at least one non-zero label are used for training")
        form.addRow(self.annotated)
        outer.addWidget(data_box)

        self.settings_box = QGroupBox("Settings")
        self.settings_layout = QVBoxLayout(self.settings_box)
        outer.addWidget(self.settings_box)

        model_box = QGroupBox("Model")
        mform = QFormLayout(model_box)
        self.name = QLineEdit()
        self.name.setToolTip("Saved under this name in the model store (letters, digits, . _ -)")
        mform.addRow("name", self.name)
        self.start_from = SavedModelPicker(none_text="new model")
        self.start_from.setToolTip("Fine-tune a saved model instead of starting from scratch")
        mform.addRow("start from", self.start_from)
        self.name_hint = hint("")
        mform.addRow(self.name_hint)
        outer.addWidget(model_box)

        controls = JobControls(
            "Train", "Train in the background; the best model on validation data is saved",
            "Stop after the current batch; the best model so far is kept and saved",
            "Pick an image and its labels, then press Train.",
        )
        self.train_btn, self.cancel_btn = controls.run_btn, controls.cancel_btn
        self.progress, self.status = controls.progress, controls.status
        outer.addWidget(controls)
        self.plot = LossPlot()
        outer.addWidget(self.plot)
        self.metrics = QLabel("")
        self.metrics.setWordWrap(True)
        # Long texts wrap within the dock instead of widening it.
        self.metrics.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        outer.addWidget(self.metrics)
        self.predict_btn = QPushButton("Predict with this model")
        self.predict_btn.setToolTip("Apply the model just trained to the training image (adds a new layer)")
        self.predict_btn.setEnabled(False)
        outer.addWidget(self.predict_btn)
        outer.addStretch(1)

        self.backend.currentIndexChanged.connect(lambda _: self._backend_changed())
        self.image.layer_changed.connect(self._image_changed)
        self.labels.layer_changed.connect(self._labels_changed)
        self.region.layer_changed.connect(lambda _: self._schedule_summary())
        self.axes.editingFinished.connect(lambda: self._image_changed(self.image.layer()))
        self.dims.currentIndexChanged.connect(lambda _: self._schedule_summary())
        self.start_from.model_changed.connect(self._start_from_changed)
        self.name.textChanged.connect(lambda _: self._name_changed())
        self.train_btn.clicked.connect(self.train)
        self.cancel_btn.clicked.connect(self.cancel)
        self.predict_btn.clicked.connect(self.predict_with_model)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(_DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_summary)
        self._image_changed(self.image.layer())

    # -- reacting to choices --------------------------------------------------------------
    def backend_name(self) -> str | None:
        return self.backend.currentData()

    def _backend_changed(self) -> None:
        name = self.backend_name()
        if self.form is not None:
            self.settings_layout.removeWidget(self.form)
            self.form.deleteLater()
            self.form = None
        if name is None:
            self.status.setText("no backend is installed")
            return
        try:
            be = backends.get(name)
        except Exception as exc:  # noqa: BLE001
            self.status.setText(f"⚠ {describe_error(exc)}")
            return
        self.form = SettingsForm(be.Settings)
        self.form.changed.connect(self._schedule_summary)
        self.settings_layout.addWidget(self.form)
        if be.output == "image":
            # Self-supervised (e.g. Noise2Void): no labels needed; start without any.
            self.labels.setCurrentIndex(0)
        self.start_from.set_backend(name)
        self._default_name()
        self._schedule_summary()

    def _image_changed(self, layer) -> None:
        from .._layers import guess_layer_axes

        if layer is not None:
            self.axes.setPlaceholderText(guess_layer_axes(layer) or "e.g. ZYX")
            has_z = "Z" in (self.axes.text().strip().upper() or guess_layer_axes(layer))
            self.dims.model().item(1).setEnabled(has_z)
            if not has_z:
                self.dims.setCurrentIndex(0)
        self._default_name()
        self._schedule_summary()

    def _labels_changed(self, layer) -> None:
        # Follow painting, erasing and fills on the chosen labels layer (debounced).
        if self._watched is not None:
            for ev in ("data", "paint", "labels_update"):
                try:
                    getattr(self._watched.events, ev).disconnect(self._schedule_summary)
                except (AttributeError, TypeError, RuntimeError, ValueError):
                    pass
        self._watched = layer
        if layer is not None:
            for ev in ("data", "paint", "labels_update"):
                emitter = getattr(layer.events, ev, None)
                if emitter is not None:
                    emitter.connect(self._schedule_summary)
        self._schedule_summary()

    def _start_from_changed(self, info) -> None:
        if info is not None:
            self.dims.setCurrentIndex(1 if info.ndim == 3 else 0)
            self.name.setText(info.name)
            if self.form is not None:
                self.form.set_values(info.settings)
        self.dims.setEnabled(info is None)
        self._name_changed()

    def _default_name(self) -> None:
        if self.name.isModified() or self.start_from.info() is not None:
            return
        layer = self.image.layer()
        base = safe_model_name(layer.name) if layer is not None else "model"
        self.name.setText(f"{base}_{self.backend_name() or 'model'}")

    def _name_changed(self) -> None:
        from .. import store

        name = self.name.text().strip()
        exists = bool(name) and (store.store_root() / name).exists()
        start = self.start_from.info()
        if not exists:
            text = ""
        elif start is not None and start.name == name:
            text = f"fine-tunes '{name}' and saves the result under the same name"
        else:
            text = f"'{name}' exists: training replaces it (to fine-tune it, pick it under 'start from')"
        self.name_hint.setText(text)

    def _schedule_summary(self, *_args) -> None:
        try:
            self._timer.start()
        except RuntimeError:  # the dock was closed
            pass

    def update_summary(self) -> None:
        """Recompute 'annotated: z=…' for the current image/labels/region."""
        img, lab = self.image.layer(), self.labels.layer()
        if img is None or lab is None:
            self.summary = None
            self.annotated.setText("choose an image layer and a labels layer" if img is None or
                                   self._needs_labels() else "self-supervised: every slice is used")
            return
        try:
            snap = snapshot(img, self.axes.text())
            labels = layer_data(lab)
            region = self._region(lab, labels.shape)
            summary = annotation_summary(labels, snap.axes, self._ndim(), region)
        except Exception as exc:  # noqa: BLE001 - shown inline while the user edits
            self.summary = None
            self.annotated.setText(f"⚠ {describe_error(exc)}")
            return
        self.summary = summary
        self.annotated.setText(summary.text())

    def _needs_labels(self) -> bool:
        name = self.backend_name()
        return name is None or backends.spec(name).needs_labels

    def _ndim(self) -> int:
        info = self.start_from.info()
        if info is not None:
            return info.ndim
        return 3 if self.dims.currentText() == "3D" else 2

    def _region(self, labels_layer, shape):
        shapes = self.region.layer()
        if shapes is None:
            return None
        return region_mask(shapes, labels_layer, shape)

    # -- training ---------------------------------------------------------------------------
    def train(self) -> None:
        if self.runner.running:
            return
        from .. import data, store, tasks

        try:
            backend = self.backend_name()
            if backend is None:
                raise ValueError("no backend is installed")
            be = backends.get(backend)
            settings = self.form.build()
            img = self.image.layer()
            if img is None:
                raise ValueError("choose an image layer to train on")
            lab = self.labels.layer()
            if lab is None and be.output != "image":
                raise ValueError(f"the {be.title} backend learns from labels: choose a labels layer")
            snap = snapshot(img, self.axes.text())
            # A copy: the user may keep painting while the model trains.
            labels = np.array(layer_data(lab), copy=True) if lab is not None else None
            region = self._region(lab, labels.shape) if lab is not None else None
            name = store.check_name(self.name.text().strip() or safe_model_name(f"{img.name}_{backend}"))
            start = self.start_from.info()
            ndim = self._ndim()
        except Exception as exc:  # noqa: BLE001 - every input problem becomes a notification
            notify_error(exc, "Training")
            return
        scribbles = settings.scribbles
        lab_name = lab.name if lab is not None else None

        def job(ctx):
            ctx.report(0, 1, "reading the annotated slices")
            part = data.from_arrays(snap.data, labels, snap.axes, ndim, name=snap.name,
                                    labels_name=lab_name or "labels", region=region,
                                    scribbles=scribbles, rgb=snap.rgb)
            return tasks.train(backend, data.combine([part]), settings, save_to=name, ctx=ctx,
                               start_from=start.path if start is not None else None)

        self.outcome = None
        self.trained_on = img.name
        self._snap = snap
        self.plot.clear()
        self.metrics.setText("")
        self.predict_btn.setEnabled(False)
        self._t0 = time.monotonic()
        self._set_running(True)
        self.status.setText("starting…")
        self._reveal(self.plot)
        self.runner.start(job, on_done=self._done, on_error=self._failed,
                          on_finished=lambda: self._set_running(False))

    def cancel(self) -> None:
        self.runner.cancel()
        self.status.setText("cancelling… (the best model so far will be saved)")

    def _on_progress(self, p: Progress, epochs: list[Progress]) -> None:
        for e in epochs:
            self.plot.add(e.metrics["epoch"], e.metrics.get("train_loss"), e.metrics.get("val_loss"))
        if p is None:
            return
        if p.fraction is not None:
            self.progress.setValue(int(1000 * p.fraction))
        elapsed = time.monotonic() - self._t0
        loss = p.metrics.get("loss", p.metrics.get("train_loss"))
        text = p.message
        if loss is not None and "loss" not in text:
            text += f" · loss {loss:.4f}"
        self.status.setText(f"{text} · {_clock(elapsed)}")

    def _done(self, outcome) -> None:
        self.outcome = outcome
        self.progress.setValue(1000)
        fit = outcome.fit
        if fit is not None and fit.history:
            self.plot.set_history(fit.history)
        stopped = getattr(fit, "stopped", "completed")
        how = {"cancelled": "cancelled — best epoch kept", "time budget": "time budget reached"}.get(stopped, "done")
        self.status.setText(f"{how}: saved '{outcome.model.info.name if outcome.model.info else ''}' "
                            f"({_clock(time.monotonic() - self._t0)})")
        self.metrics.setText(format_metrics(outcome.metrics))
        self.predict_btn.setEnabled(True)
        self.start_from.refresh()
        self._name_changed()
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
        self.backend.setEnabled(not running)
        if running:
            self.progress.setValue(0)
        else:
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
        if self.outcome is None or self.runner.running:
            return
        from .. import tasks

        model = self.outcome.model
        try:
            layer = self.viewer.layers[self.trained_on]
            snap = snapshot(layer, self._snap.axes)
            settings = backends.get(model.backend).Predict()
        except Exception as exc:  # noqa: BLE001
            notify_error(exc if not isinstance(exc, KeyError) else
                         ValueError(f"the training image layer {self.trained_on!r} is gone"), "Predict")
            return

        def job(ctx):
            return tasks.predict(model, snap.data, snap.axes, settings, ctx, rgb=snap.rgb)

        def done(pred):
            if pred.cancelled:
                return
            tuples = prediction_layers(pred, snap, provenance(model, snap, settings),
                                       existing=[lay.name for lay in self.viewer.layers])
            self.predicted = add_layers(self.viewer, tuples)
            self.status.setText(f"added {', '.join(lay.name for lay in self.predicted)} "
                                "— correct the labels, then Train again (start from this model) to fine-tune")

        self._set_running(True)
        self.predict_btn.setEnabled(False)
        self.status.setText("predicting…")
        self.runner.start(job, on_done=done, on_error=lambda e: notify_error(e, "Predict"),
                          on_finished=lambda: self._set_running(False))


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d} min" if m else f"{s} s"


def format_metrics(m: dict) -> str:
    """Validation metrics and the training summary as short lines."""
    lines = []
    if "ap50" in m:
        lines.append(f"<b>validation</b>: AP@0.5 {m['ap50']:.3f} · F1 {m.get('f1', float('nan')):.3f}")
    if "iou_per_class" in m:
        per = ", ".join(f"{k}: {'–' if v is None else f'{v:.2f}'}" for k, v in enumerate(m["iou_per_class"]))
        lines.append(f"<b>validation</b>: mean IoU {m.get('mean_iou', float('nan')):.3f} (per class {per})")
    if "psnr" in m:
        lines.append(f"<b>validation</b>: PSNR {m['psnr']:.2f} dB")
    validated = bool(lines)
    if not lines:
        lines.append("no validation data held out (one small image): no metrics")
    t = m.get("training") or {}
    if t:
        lines.append(f"{t.get('epochs', '?')} epochs in {_clock(float(t.get('seconds', 0)))}, "
                     f"{t.get('stopped', '')}")
        lines.append(f"kept epoch {t.get('best_epoch', '?')} (lowest {'validation' if validated else 'training'} loss "
                     f"{t.get('best_loss', float('nan')):.4f})")
    return "<br>".join(lines)
