"""Small building blocks shared by the docks: layer pickers, the saved-model picker, job controls."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QSize, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._layers import PROVENANCE_KEY, guess_layer_axes, layer_data


def _layer_kind(layer) -> str:
    return type(layer).__name__.lower()


def _watch_layers(viewer, widget: QWidget, refresh: Callable[[], None]) -> None:
    """Call ``refresh`` when layers are added, removed or renamed, while ``widget`` lives."""

    def safe(*_):
        try:
            refresh()
        except RuntimeError:  # the Qt side was deleted (dock closed)
            pass

    watched: set[int] = set()

    def track(event=None):
        for layer in viewer.layers:
            if id(layer) not in watched:
                layer.events.name.connect(safe)
                watched.add(id(layer))

    def on_change(event=None):
        track()
        safe()

    viewer.layers.events.inserted.connect(on_change)
    viewer.layers.events.removed.connect(on_change)
    viewer.layers.events.moved.connect(on_change)
    track()
    # Keep the closures alive exactly as long as the widget.
    widget._dlbio_layer_hooks = (safe, track, on_change)


class LayerCombo(QComboBox):
    """Pick one layer of the given kind(s) (``"image"``, ``"labels"``, ``"shapes"``) or none."""

    layer_changed = Signal(object)

    def __init__(
        self, viewer, kinds: tuple[str, ...], none_text: str | None = None, default_none: bool = False,
        parent=None, accept: Callable[[object], bool] | None = None, prefer: tuple[str, ...] = (),
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.prefer = prefer  # kinds chosen first by default (Evaluate: labels over clean images)
        self.accept = accept  # a further test of the layers listed (the Review dock: scored labels)
        self.default_none = default_none
        self.kinds = kinds
        self.none_text = none_text
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.currentIndexChanged.connect(lambda _: self.layer_changed.emit(self.layer()))
        _watch_layers(viewer, self, self.refresh)
        self.refresh()

    def set_none_text(self, text: str | None) -> None:
        self.none_text = text
        self.refresh()

    def refresh(self) -> None:
        current = self.currentText()
        names = [lay.name for lay in self.viewer.layers
                 if _layer_kind(lay) in self.kinds and (self.accept is None or self.accept(lay))]
        items = ([self.none_text] if self.none_text else []) + names
        if items == [self.itemText(i) for i in range(self.count())]:
            return
        self.blockSignals(True)
        self.clear()
        self.addItems(items)
        if current in items:
            self.setCurrentIndex(items.index(current))
        elif names and not (self.default_none and self.none_text):
            # Prefer the newest user layer over our own outputs.
            own = {lay.name for lay in self.viewer.layers if PROVENANCE_KEY in lay.metadata}
            liked = [n for n in names if _layer_kind(self.viewer.layers[n]) in self.prefer] or names
            pick = next((n for n in reversed(liked) if n not in own), liked[-1])
            self.setCurrentIndex(items.index(pick))
        self.blockSignals(False)
        if self.currentText() != current:
            self.layer_changed.emit(self.layer())

    def layer(self):
        name = self.currentText()
        if not name or name == self.none_text:
            return None
        try:
            return self.viewer.layers[name]
        except KeyError:
            return None

    def set_layer(self, name: str) -> None:
        i = self.findText(name)
        if i >= 0:
            self.setCurrentIndex(i)


class ImageTable(QTableWidget):
    """Image layers to process, each with a check box, its shape and editable axes.

    New user layers are checked; our own outputs are not. The axes column starts
    with the guess and may be edited per layer.
    """

    def __init__(self, viewer, parent=None) -> None:
        super().__init__(0, 3, parent)
        self.viewer = viewer
        self.setHorizontalHeaderLabels(["image layer", "shape", "axes"])
        hh = self.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.verticalHeader().setVisible(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setMinimumHeight(90)
        self.setMaximumHeight(170)
        self.setToolTip("Tick the image layers to process. Edit 'axes' (letters T, Z, C, Y, X) if the guess is wrong.")
        self._state: dict[str, tuple[bool, str]] = {}
        _watch_layers(viewer, self, self.refresh)
        self.refresh()

    def _remember(self) -> None:
        for r in range(self.rowCount()):
            name = self.item(r, 0).text()
            self._state[name] = (self.item(r, 0).checkState() == Qt.CheckState.Checked, self.item(r, 2).text())

    def refresh(self) -> None:
        self._remember()
        layers = [lay for lay in self.viewer.layers if _layer_kind(lay) == "image"]
        self.setRowCount(len(layers))
        for r, lay in enumerate(layers):
            checked, axes = self._state.get(lay.name, (PROVENANCE_KEY not in lay.metadata, guess_layer_axes(lay)))
            name = QTableWidgetItem(lay.name)
            name.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            name.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            shape = QTableWidgetItem("×".join(str(s) for s in layer_data(lay).shape) + (" RGB" if lay.rgb else ""))
            shape.setFlags(Qt.ItemFlag.ItemIsEnabled)
            ax = QTableWidgetItem(axes)
            ax.setToolTip(f"guessed: {guess_layer_axes(lay)}")
            self.setItem(r, 0, name)
            self.setItem(r, 1, shape)
            self.setItem(r, 2, ax)

    def selected(self) -> list[tuple[object, str]]:
        """(layer, axes text) for every ticked row."""
        out = []
        for r in range(self.rowCount()):
            name, axes = self.item(r, 0), self.item(r, 2)
            if name is None or axes is None:  # a row being filled in (refresh)
                continue
            if name.checkState() == Qt.CheckState.Checked:
                try:
                    out.append((self.viewer.layers[name.text()], axes.text()))
                except KeyError:
                    continue
        return out

    def set_checked(self, names: list[str]) -> None:
        for r in range(self.rowCount()):
            item = self.item(r, 0)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    def set_axes(self, name: str, axes: str) -> None:
        for r in range(self.rowCount()):
            if self.item(r, 0).text() == name:
                self.item(r, 2).setText(axes)


class _FreshCombo(QComboBox):
    """A combo box that asks for fresh items each time its list opens."""

    about_to_open = Signal()

    def showPopup(self) -> None:
        self.about_to_open.emit()
        super().showPopup()


class SavedModelPicker(QWidget):
    """Models of the store (newest first) with a refresh button; optional backend filter.

    The list follows the store by itself: a model saved by the Train dock (or the
    command line) appears within :data:`WATCH_MS` without a click.
    """

    model_changed = Signal(object)  # ModelInfo or None
    WATCH_MS = 1500

    def __init__(self, none_text: str | None = None, parent=None) -> None:
        super().__init__(parent)
        self.none_text = none_text
        self.backend: str | None = None
        self.files: list = []   # models opened from files (bioimage.io zips), listed after the store's
        self.combo = _FreshCombo()
        self.combo.about_to_open.connect(lambda: self.refresh())
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(14)
        self.combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.refresh_btn = QPushButton("↻")
        self.refresh_btn.setToolTip("Reload the list of saved models")
        self.refresh_btn.setFixedWidth(32)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.combo)
        lay.addWidget(self.refresh_btn)
        self.refresh_btn.clicked.connect(lambda: self.refresh())
        self.combo.currentIndexChanged.connect(lambda _: self.model_changed.emit(self.info()))
        self._stamp = None
        self.refresh()
        self._watch = QTimer(self)  # a child timer: it dies with the picker
        self._watch.setInterval(self.WATCH_MS)
        self._watch.timeout.connect(self._follow_store)
        self._watch.start()

    def _follow_store(self) -> None:
        """Reload when the store changed, keeping the choice; tell others only if the choice changed."""
        from .. import store

        if store.stamp() == self._stamp or self.combo.view().isVisible():
            return  # unchanged, or the user is looking at the list right now
        before = _identity(self.info())
        self.refresh(emit=False)
        if _identity(self.info()) != before:
            self.model_changed.emit(self.info())

    def set_backend(self, backend: str | None) -> None:
        self.backend = backend
        self.refresh()

    def refresh(self, select: str | None = None, emit: bool = True) -> None:
        from .. import store

        self._stamp = store.stamp()
        current = select or (self.info().name if self.info() is not None else None)
        infos = [i for i in [*store.list_models(), *self.files] if self.backend is None or i.backend == self.backend]
        self.combo.blockSignals(True)
        self.combo.clear()
        if self.none_text:
            self.combo.addItem(self.none_text, None)
        for i in infos:
            origin = ", zip" if i in self.files else ""
            self.combo.addItem(f"{i.name}  ({i.backend}, {i.ndim}D{origin})", i)
            self.combo.setItemData(self.combo.count() - 1, describe_model(i), Qt.ItemDataRole.ToolTipRole)
        if not infos and not self.none_text:
            self.combo.addItem("no saved models yet — train one", None)
        idx = next((k for k in range(self.combo.count())
                    if self.combo.itemData(k) is not None and self.combo.itemData(k).name == current), 0)
        self.combo.setCurrentIndex(idx)
        self.combo.blockSignals(False)
        if emit:
            self.model_changed.emit(self.info())

    def info(self):
        return self.combo.currentData() if self.combo.count() else None

    def add_file(self, info) -> None:
        """List a model opened from a file (kept across refreshes) and choose it."""
        self.files = [i for i in self.files if i.path != info.path] + [info]
        self.refresh()
        self.combo.setCurrentIndex(next(k for k in range(self.combo.count())
                                        if self.combo.itemData(k) is not None and self.combo.itemData(k).path == info.path))


def _identity(info) -> tuple | None:
    return None if info is None else (info.name, info.created)


def describe_model(info) -> str:
    """A saved model in a few short lines: backend, dims, channels, metrics, date."""
    m = info.metrics or {}
    parts = [f"{info.backend} · {info.ndim}D · {info.n_channels} channel{'s' if info.n_channels > 1 else ''}"]
    if "ap50" in m:
        parts.append(f"AP@0.5 {m['ap50']:.2f} · F1 {m.get('f1', float('nan')):.2f}")
    if "mean_iou" in m:
        parts.append(f"mean IoU {m['mean_iou']:.2f}")
    if "psnr" in m:
        parts.append(f"PSNR {m['psnr']:.1f} dB")
    parts.append(f"saved {info.created[:16].replace('T', ' ')}")
    return "\n".join(parts)


class _Scroll(QScrollArea):
    """Scrolls vertically only, so it asks for the content's full width."""

    def _extra(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2

    def minimumSizeHint(self) -> QSize:
        w = self.widget()
        width = w.minimumSizeHint().width() if w is not None else 0
        return QSize(width + self._extra(), 120)

    def sizeHint(self) -> QSize:
        w = self.widget()
        hint = w.sizeHint() if w is not None else QSize(0, 0)
        return QSize(hint.width() + self._extra(), hint.height())


def scroll_body(widget: QWidget) -> QVBoxLayout:
    """Put ``widget``'s content in a vertical scroll area and return the content's layout.

    napari stacks docks in one column; without scrolling a tall dock would push the
    window beyond the screen or squeeze its rows until they overlap.
    """
    root = QVBoxLayout(widget)
    root.setContentsMargins(0, 0, 0, 0)
    area = _Scroll()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    content = QWidget()
    area.setWidget(content)
    root.addWidget(area)
    body = QVBoxLayout(content)
    body.setContentsMargins(4, 4, 4, 4)
    return body


def hint(text: str) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setStyleSheet("color: gray;")
    return lab
