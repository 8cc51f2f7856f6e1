"""The parts of the Predict dock: where the model comes from, the images, the settings."""

from __future__ import annotations

from qtpy.QtCore import Signal
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

from .. import backends, store
from .._layers import LayerSnapshot, parse_channels, snapshot
from ..formatting import describe_error
from ..requests import ModelSource
from .forms import SettingsBox
from .widgets import ImageTable, SavedModelPicker, describe_model

SOURCES = ("Saved model", "Model folder or zip", "Pretrained")


def _row(*parts: tuple[QWidget, int]) -> QWidget:
    """(widget, stretch) pairs side by side without margins: one page of the source's stack."""
    page = QWidget()
    lay = QHBoxLayout(page)
    lay.setContentsMargins(0, 0, 0, 0)
    for widget, stretch in parts:
        lay.addWidget(widget, stretch)
    return page


class ModelSourceBox(QGroupBox):
    """Where the model comes from: the store, a model folder, or a backend's own (pretrained) model.

    Nothing is loaded here: the box names the model (:class:`~napari_dlbio.requests.ModelSource`)
    and shows what model.json says about it.
    """

    backend_changed = Signal(object)   # the chosen model's backend, or None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        form = QFormLayout(self)
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.source.setToolTip("Where the model comes from: trained here, a model folder, or a backend's own model")
        form.addRow("source", self.source)
        self.saved = SavedModelPicker()
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder with model.json, or a bioimage.io .zip")
        self.browse = QPushButton("Folder…")
        self.browse.setToolTip("A model folder (with model.json), e.g. copied from another computer")
        self.zip_btn = QPushButton("Zip…")
        self.zip_btn.setToolTip("A bioimage.io model zip exported by napari-dlbio (its settings come back in full). "
                                "Zips made elsewhere (CAREamics, StarDist): source 'Pretrained'")
        self.pre_backend = QComboBox()
        for name in backends.available():
            if backends.spec(name).has_pretrained:
                self.pre_backend.addItem(backends.spec(name).title, name)
        self.pre_backend.setToolTip("Backends that bring their own models")
        self.pre_name = QLineEdit()
        self.pre_name.setToolTip("The backend's model name, or a model file or folder; empty: the example shown")
        self.stack = QStackedWidget()
        for page in (self.saved, _row((self.folder, 1), (self.browse, 0), (self.zip_btn, 0)),
                     _row((self.pre_backend, 0), (self.pre_name, 1))):
            self.stack.addWidget(page)
        form.addRow("model", self.stack)
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        form.addRow(self.model_info)
        self._connect()

    def _connect(self) -> None:
        self.source.currentIndexChanged.connect(self.refresh)
        self.saved.model_changed.connect(self.refresh)
        self.folder.editingFinished.connect(self.refresh)
        self.browse.clicked.connect(self._browse)
        self.zip_btn.clicked.connect(self._browse_zip)
        self.pre_backend.currentIndexChanged.connect(self.refresh)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder")
        if path:
            self.folder.setText(path)
            self.refresh()

    def _browse_zip(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "bioimage.io model zip", "", "bioimage.io model (*.zip)")
        if path:
            self.folder.setText(path)
            self.refresh()

    def kind(self) -> str:
        return self.source.currentText()

    def _chosen(self):
        """(backend name or None, ModelInfo or None) of the current choice, without loading weights."""
        if self.kind() == "Saved model":
            info = self.saved.info()
            return (info.backend if info else None), info
        if self.kind() == SOURCES[1]:
            text = self.folder.text().strip()
            if not text:
                return None, None
            # A zip of ours opens as the model folder it carries (extracted once); ModelError says why not.
            info = store.read_info(store.resolve(text) if text.lower().endswith(".zip") else text)
            return info.backend, info
        return self.pre_backend.currentData(), None

    def refresh(self, *_args) -> None:
        """Show the page of the chosen source and what is known about its model."""
        self.stack.setCurrentIndex(self.source.currentIndex())
        if self.kind() == "Pretrained":
            name = self.pre_backend.currentData()
            self.pre_name.setPlaceholderText(backends.spec(name).pretrained_hint if name else "name")
        try:
            backend, info = self._chosen()
        except Exception as exc:  # noqa: BLE001 - shown next to the field
            self._show_info(f"⚠ {describe_error(exc)}")
            return
        self._show_info(self._describe(backend, info), str(info.path) if info is not None else "")
        self.backend_changed.emit(backend)

    def _show_info(self, text: str, tip: str = "") -> None:
        self.model_info.setText(text)
        self.model_info.setToolTip(tip)
        # An empty line would still take a row's height.
        self.model_info.setVisible(bool(text))

    def _describe(self, backend: str | None, info) -> str:
        if backend is not None and not backends.is_available(backend):
            spec = backends.spec(backend)
            return f"⚠ the {spec.title} backend is not installed: {spec.install_hint()}"
        if info is not None:
            return describe_model(info).replace("\n", " · ")
        if self.kind() == "Pretrained" and backend is None:
            return "no backend with pretrained models is installed"
        return ""

    def model_source(self) -> ModelSource:
        """The chosen model, not loaded yet; a ValueError says what is missing."""
        backend, info = self._chosen()
        if self.kind() == "Pretrained":
            if backend is None:
                raise ValueError("no backend with pretrained models is installed")
            return ModelSource.pretrained(backend, self.pre_name.text().strip() or self.pre_name.placeholderText())
        if info is None:
            raise ValueError("choose a saved model or a model folder first (train one in the Train dock)")
        return ModelSource.saved(info, kind="saved" if self.kind() == "Saved model" else "folder")


class ImagesBox(QGroupBox):
    """The image layers to predict on (ticked, each with its axes) and the channels to feed the model."""

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__("Images", parent)
        lay = QVBoxLayout(self)
        self.images = ImageTable(viewer)
        lay.addWidget(self.images)
        row = QFormLayout()
        self.channels = QLineEdit()
        self.channels.setPlaceholderText("all")
        self.channels.setToolTip("Channels to feed the model, e.g. '0' or '0, 2' (images with a C axis)")
        row.addRow("channels", self.channels)
        lay.addLayout(row)

    def snapshots(self) -> list[LayerSnapshot]:
        """The ticked layers, read now; a ValueError names axes that do not fit."""
        return [snapshot(layer, axes) for layer, axes in self.images.selected()]

    def channel_choice(self) -> tuple[int, ...] | None:
        return parse_channels(self.channels.text())


class PredictSettingsBox(SettingsBox):
    """The backend's prediction settings, and "also output probabilities" below them."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Settings", parent)
        self.probabilities = QCheckBox("also output probabilities")
        self.probabilities.setToolTip("Add the model's probability maps as extra image layers")
        self.add_below(self.probabilities)

    def show_backend(self, backend: str | None) -> None:
        spec = backends.spec(backend) if backend else None
        # The check box stands for the model's "probabilities" field (and adds the layers).
        self.show_form(spec.Predict if spec is not None else None, hide=frozenset({"probabilities"}))
        self.probabilities.setEnabled(spec is None or spec.output == "labels")

    def extras(self, backend: str) -> bool:
        """Whether to add the probability maps: only labels backends make them."""
        return self.probabilities.isChecked() and backends.spec(backend).output == "labels"
