"""The parts of the Train dock: what to train on, the name to save under, and how training went."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .. import backends, pairs, store
from .._layers import annotation_summary, guess_layer_axes, layer_data, region_mask, safe_model_name, snapshot
from ..formatting import describe_error, metrics_html
from .loss_plot import LossPlot
from .widgets import LayerCombo, SavedModelPicker, hint

_DEBOUNCE_MS = 400
# The labels layer's events that change its annotations: new data, painting, erasing, fills.
_LABEL_EVENTS = ("data", "paint", "labels_update")


def backend_combo() -> QComboBox:
    """The installed backends by title; the item data is the backend's name."""
    combo = QComboBox()
    for name in backends.available():
        combo.addItem(backends.spec(name).title, name)
    combo.setToolTip("Model family (only installed backends are listed)")
    return combo


class TrainingDataBox(QGroupBox):
    """Backend, image, labels, region and axes to train on, and which slices count as annotated.

    The "annotated: ..." line follows the painting on the labels layer (debounced),
    so the user sees what training will use before pressing Train.
    """

    backend_changed = Signal(object)   # backend name, or None when none is installed
    image_changed = Signal(object)     # the image layer or None

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__("Training data", parent)
        self.viewer = viewer
        self.summary = None            # AnnotationSummary of the current layers
        self._locked_ndim: int | None = None
        self._watched = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(_DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_summary)
        self._build()
        self._connect()

    def _build(self) -> None:
        form = QFormLayout(self)
        self.backend = backend_combo()
        form.addRow("backend", self.backend)
        self.image = LayerCombo(self.viewer, ("image",))
        form.addRow("image", self.image)
        self.labels = LayerCombo(self.viewer, ("labels",), none_text="(none)")
        self.labels.setToolTip("Annotations: only slices/frames holding a non-zero label are used")
        form.addRow("labels", self.labels)
        self.region = LayerCombo(self.viewer, ("shapes",), none_text="(whole image)", default_none=True)
        self.region.setToolTip("Optional shapes layer: train only inside these shapes")
        form.addRow("region", self.region)
        # Shown instead of labels/region when the chosen algorithm learns from pairs (CARE, N2N).
        self.target = LayerCombo(self.viewer, ("image",), none_text="(none)", default_none=True)
        self.target.setToolTip("An image layer of the same shape as the image: what the model learns to produce")
        form.addRow("target", self.target)
        self.target_help = hint("")
        form.addRow(self.target_help)
        self._form = form
        self._target_text = ""
        self._show_target_rows()
        form.addRow("axes", self._axes_row())
        self.annotated = QLabel("")
        self.annotated.setWordWrap(True)
        self.annotated.setToolTip("Only slices/frames with at least one non-zero label are used for training")
        form.addRow(self.annotated)

    def _axes_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.axes = QLineEdit()
        self.axes.setToolTip("Axes of the image (T, Z, C, Y, X); leave empty to use the guess")
        self.dims = QComboBox()
        self.dims.addItems(["2D", "3D"])
        self.dims.setToolTip("2D models see one slice at a time; 3D models need a Z axis")
        row.addWidget(self.axes, 1)
        row.addWidget(QLabel("model"))
        row.addWidget(self.dims)
        return row

    def _connect(self) -> None:
        self.backend.currentIndexChanged.connect(lambda _: self._backend_changed())
        self.image.layer_changed.connect(self._image_changed)
        self.labels.layer_changed.connect(self._watch_labels)
        self.target.layer_changed.connect(self.schedule_summary)
        self.region.layer_changed.connect(self.schedule_summary)
        self.axes.editingFinished.connect(lambda: self._image_changed(self.image.layer()))
        self.dims.currentIndexChanged.connect(self.schedule_summary)

    def start(self) -> None:
        """Announce the initial choices (once the dock listens to this box's signals)."""
        self._image_changed(self.image.layer())
        self._backend_changed()
        self._watch_labels(self.labels.layer())

    # -- choices ------------------------------------------------------------------------
    def backend_name(self) -> str | None:
        return self.backend.currentData()

    def needs_labels(self) -> bool:
        name = self.backend_name()
        return name is None or backends.spec(name).needs_labels

    def needs_target(self) -> bool:
        return bool(self._target_text)

    def set_target_help(self, text: str) -> None:
        """What a target is for the chosen settings ('': they need none): shows or hides the target picker."""
        if text == self._target_text:
            return
        self._target_text = text
        self._show_target_rows()
        self.schedule_summary()

    def _show_target_rows(self) -> None:
        pairs_ = self.needs_target()
        for field, shown in ((self.target, pairs_), (self.labels, not pairs_), (self.region, not pairs_)):
            field.setVisible(shown)
            self._form.labelForField(field).setVisible(shown)
        self.target_help.setText(f"Target: {self._target_text}." if pairs_ else "")
        self.target_help.setVisible(pairs_)

    def ndim(self) -> int:
        if self._locked_ndim is not None:
            return self._locked_ndim
        return 3 if self.dims.currentText() == "3D" else 2

    def lock_ndim(self, ndim: int | None) -> None:
        """Fine-tuning keeps the saved model's dims: show them and stop the user from changing them."""
        self._locked_ndim = ndim
        if ndim is not None:
            self.dims.setCurrentIndex(1 if ndim == 3 else 0)
        self.dims.setEnabled(ndim is None)
        self.schedule_summary()

    def _backend_changed(self) -> None:
        if not self.needs_labels():
            # Self-supervised (e.g. Noise2Void): no labels needed; start without any.
            self.labels.setCurrentIndex(0)
        self.backend_changed.emit(self.backend_name())
        self.schedule_summary()

    def _image_changed(self, layer) -> None:
        if layer is not None:
            guess = guess_layer_axes(layer)
            self.axes.setPlaceholderText(guess or "e.g. ZYX")
            has_z = "Z" in (self.axes.text().strip().upper() or guess)
            self.dims.model().item(1).setEnabled(has_z)
            if not has_z:
                self.dims.setCurrentIndex(0)
        self.image_changed.emit(layer)
        self.schedule_summary()

    def _watch_labels(self, layer) -> None:
        if self._watched is not None:
            for ev in _LABEL_EVENTS:
                try:
                    getattr(self._watched.events, ev).disconnect(self.schedule_summary)
                except (AttributeError, TypeError, RuntimeError, ValueError):
                    pass  # that event is missing in this napari, or was never connected
        self._watched = layer
        if layer is not None:
            for ev in _LABEL_EVENTS:
                emitter = getattr(layer.events, ev, None)
                if emitter is not None:
                    emitter.connect(self.schedule_summary)
        self.schedule_summary()

    # -- the annotated slices -------------------------------------------------------------
    def schedule_summary(self, *_args) -> None:
        try:
            self._timer.start()
        except RuntimeError:  # the dock was closed
            pass

    def update_summary(self) -> None:
        """Recompute 'annotated: z=…' for the current image/labels/region."""
        img, lab = self.image.layer(), self.labels.layer()
        if self.needs_target():
            self.summary = None
            self.annotated.setText(self._pairs_text(img, self.target.layer()))
            return
        if img is None or lab is None:
            self.summary = None
            self.annotated.setText(self._missing_text(img is None))
            return
        try:
            snap = snapshot(img, self.axes.text())
            labels = layer_data(lab)
            summary = annotation_summary(labels, snap.axes, self.ndim(), self._region(lab, labels.shape))
        except Exception as exc:  # noqa: BLE001 - shown inline while the user edits
            self.summary = None
            self.annotated.setText(f"⚠ {describe_error(exc)}")
            return
        self.summary = summary
        self.annotated.setText(summary.text())

    @staticmethod
    def _pairs_text(img, target) -> str:
        if img is None or target is None:
            return "choose an image layer and its target image layer"
        return f"pairs: every slice/frame of '{img.name}' with the same of '{target.name}'"

    def _missing_text(self, no_image: bool) -> str:
        if not self.needs_labels():
            return "choose an image layer" if no_image else "self-supervised: every slice is used"
        return "choose an image layer and a labels layer" if no_image else "choose a labels layer to learn from"

    def _region(self, labels_layer, shape):
        shapes = self.region.layer()
        return None if shapes is None else region_mask(shapes, labels_layer, shape)

    def read(self) -> dict:
        """The chosen layers as :class:`~napari_dlbio.requests.TrainRequest` fields, read now.

        The labels are copied: the user may keep painting while the model trains.
        """
        img, lab = self.image.layer(), self.labels.layer()
        if img is None:
            raise ValueError("choose an image layer to train on")
        snap = snapshot(img, self.axes.text())
        if self.needs_target():
            return {"image": snap, "labels": None, "region": None, "ndim": self.ndim(),
                    "target": self._target(snap)}
        labels = np.array(layer_data(lab), copy=True) if lab is not None else None
        region = self._region(lab, labels.shape) if lab is not None else None
        return {"image": snap, "labels": labels, "region": region, "ndim": self.ndim(),
                "labels_name": lab.name if lab is not None else "labels"}

    def _target(self, image):
        """The target layer, read with the image's axes; a clear error when missing or not an image."""
        layer = self.target.layer()
        if layer is None:
            raise ValueError(f"choose a target image layer: {self._target_text}")
        # ``__class__``, not ``type()``: napari hands plugins proxies of its layers.
        pairs.check_target_layer(layer.__class__.__name__.lower(), layer.name)
        pairs.check_same_shape(image.shape, tuple(layer_data(layer).shape), image.name, layer.name)
        return snapshot(layer, image.axes)


class ModelBox(QGroupBox):
    """The name to save under and the saved model to start from; says when a name is taken."""

    start_changed = Signal(object)   # ModelInfo of the model to fine-tune, or None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        form = QFormLayout(self)
        self.name = QLineEdit()
        self.name.setToolTip("Saved under this name in the model store (letters, digits, . _ -)")
        form.addRow("name", self.name)
        self.start_from = SavedModelPicker(none_text="new model")
        self.start_from.setToolTip("Fine-tune a saved model instead of starting from scratch")
        self.zip_btn = QPushButton("Zip…")
        self.zip_btn.setToolTip("Fine-tune a model from a bioimage.io zip exported by napari-dlbio")
        self.zip_btn.clicked.connect(self._pick_zip)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.start_from, 1)
        row.addWidget(self.zip_btn)
        form.addRow("start from", row)
        self.name_hint = hint("")
        self.name_hint.hide()
        form.addRow(self.name_hint)
        self.name.textChanged.connect(lambda _: self.update_hint())
        self.start_from.model_changed.connect(self._start_changed)

    def _pick_zip(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "bioimage.io model zip", "", "bioimage.io model (*.zip)")
        if path:
            self.open_zip(path)

    def open_zip(self, path: str) -> None:
        """Start from the model in our bioimage.io zip ``path``; the hint says why when it cannot."""
        try:
            self.start_from.add_file(store.read_info(store.resolve(path)))
        except store.ModelError as exc:
            self.name_hint.setText(f"⚠ {describe_error(exc)}")
            self.name_hint.show()

    def _start_changed(self, info) -> None:
        if info is not None:
            self.name.setText(info.name)
        self.update_hint()
        self.start_changed.emit(info)

    def suggest_name(self, image_name: str | None, backend: str | None) -> None:
        """``<image>_<backend>``, unless the user typed a name or fine-tunes a model."""
        if self.name.isModified() or self.start_from.info() is not None:
            return
        base = safe_model_name(image_name) if image_name else "model"
        self.name.setText(f"{base}_{backend or 'model'}")

    def model_name(self, image_name: str, backend: str) -> str:
        return self.name.text().strip() or safe_model_name(f"{image_name}_{backend}")

    def update_hint(self) -> None:
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
        # An empty hint would still take a row's height.
        self.name_hint.setVisible(bool(text))


class TrainResults(QWidget):
    """How training goes and went: loss per epoch, validation metrics, "Predict with this model"."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.plot = LossPlot()
        lay.addWidget(self.plot)
        self.metrics = QLabel("")
        self.metrics.setWordWrap(True)
        # Long texts wrap within the dock instead of widening it.
        self.metrics.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.metrics)
        self.predict_btn = QPushButton("Predict with this model")
        self.predict_btn.setToolTip("Apply the model just trained to the training image (adds a new layer)")
        self.predict_btn.setEnabled(False)
        lay.addWidget(self.predict_btn)

    def clear(self) -> None:
        self.plot.clear()
        self.metrics.setText("")
        self.predict_btn.setEnabled(False)

    def add_epochs(self, reports) -> None:
        # All of a delivery's epochs at once: one repaint of the plot, and none when there are none.
        self.plot.extend([(e.metrics["epoch"], e.metrics.get("train_loss"), e.metrics.get("val_loss"))
                          for e in reports])

    def show_outcome(self, outcome) -> None:
        """The saved history (complete, even if live reports were coalesced) and the metrics."""
        if outcome.history:
            self.plot.set_history(outcome.history)
        self.metrics.setText(metrics_html(outcome.metrics))
        self.predict_btn.setEnabled(True)
