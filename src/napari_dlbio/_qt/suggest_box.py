"""The Train dock's "what to annotate next": rank the unannotated slices/tiles, and go there.

The ranking runs as a job (:class:`~napari_dlbio.requests.SuggestRequest`, by the
dock's runner); this box only picks the model, shows the top suggestions and moves
the viewer to one: the slice/frame (``viewer.dims``) and, for a tile of a large
image, the camera's centre and zoom.
"""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from .._layers import layer_data
from ..suggest import Suggestion, focus
from .widgets import SavedModelPicker, hint

JUST_TRAINED = "the model just trained"


class SuggestBox(QGroupBox):
    """Model, how many, the "Suggest" button and the ranked suggestions with "go there" buttons."""

    run_requested = Signal()

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__("What to annotate next", parent)
        self.viewer = viewer
        self.suggestions: list[Suggestion] = []
        self.go_buttons: list[QPushButton] = []
        self._axes: dict[str, str] = {}   # image layer name -> its axes, for the layers ranked
        form = QFormLayout(self)
        self.model = SavedModelPicker(none_text=JUST_TRAINED)
        self.model.setToolTip("The model whose uncertainty ranks the slices: the one just trained, "
                              "or a saved one")
        form.addRow("model", self.model)
        form.addRow(self._button_row())
        self.others = QCheckBox("also rank the other image layers")
        self.others.setToolTip("Besides the training image, look through every other image layer (not our "
                               "results); all their slices count as unannotated")
        form.addRow(self.others)
        self.status = hint("Ranks the unannotated slices/frames (tiles of large images) by how much the "
                           "model's predictions disagree when the image is flipped or rotated.")
        form.addRow(self.status)
        self.rows = QGridLayout()
        self.rows.setColumnStretch(0, 1)
        form.addRow(self.rows)

    def _button_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.run_btn = QPushButton("Suggest what to annotate next")
        self.run_btn.setToolTip("Predict each unannotated slice/tile, flipped and rotated, and list those "
                                "where the model disagrees with itself most (runs in the background)")
        self.run_btn.clicked.connect(self.run_requested.emit)
        self.n = QSpinBox()
        self.n.setRange(1, 20)
        self.n.setValue(5)
        self.n.setToolTip("How many suggestions to show")
        row.addWidget(self.run_btn, 1)
        row.addWidget(QLabel("top"))
        row.addWidget(self.n)
        return row

    def model_info(self):
        """The saved model chosen, or None for the model just trained."""
        return self.model.info()

    # -- results ------------------------------------------------------------------------------
    def clear(self) -> None:
        while self.rows.count():
            w = self.rows.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.suggestions, self.go_buttons = [], []

    def show_suggestions(self, found: list[Suggestion], axes: dict[str, str]) -> None:
        """One row per suggestion: rank, (layer,) where, uncertainty, objects and a "go there" button.

        ``axes``: the axes of each image layer that was ranked, by name.
        """
        self.clear()
        self._axes = dict(axes)
        self.suggestions = list(found)
        if not found:
            self.status.setText("nothing to suggest: every slice is annotated")
            return
        where = f"in '{next(iter(axes))}'" if len(axes) == 1 else f"in {len(axes)} image layers"
        self.status.setText(f"most uncertain first (uncertainty 0 = the same objects however the image is "
                            f"turned, 1 = none reproduced) {where}:")
        for k, s in enumerate(found):
            objects = f"{s.n_objects} object{'s' if s.n_objects != 1 else ''}"
            layer = f"{s.image}: " if len(axes) > 1 else ""
            text = QLabel(f"{k + 1}. {layer}{s.where or 'whole image'}{_tile_text(s)} · "
                          f"uncertainty {s.score:.2f} · {objects}")
            text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            btn = QPushButton("go there")
            btn.setToolTip("Show this slice (and tile) in the viewer")
            btn.clicked.connect(lambda _=False, s=s: self.go_there(s))
            self.rows.addWidget(text, k, 0)
            self.rows.addWidget(btn, k, 1)
            self.go_buttons.append(btn)

    def go_there(self, s: Suggestion) -> None:
        """Move the viewer to ``s``: its slice/frame, and for a tile the camera onto the tile."""
        name, axes = s.image, self._axes.get(s.image, "")
        try:
            layer = self.viewer.layers[name]
        except KeyError:
            self.status.setText(f"the image layer {name!r} is gone")
            return
        self.viewer.layers.selection.active = layer
        layer_axes = axes.replace("C", "") if layer.rgb else axes
        centre, extent = focus(s, layer_axes, layer_data(layer).shape[: len(layer_axes)])
        world = layer.data_to_world(centre)
        offset = self.viewer.dims.ndim - layer.ndim
        for k, a in enumerate(layer_axes):
            if a in s.loop_axes:
                self.viewer.dims.set_point(offset + k, world[k])
        if s.box is not None:
            self._frame(layer, world, extent, offset)

    def _frame(self, layer, world, extent, offset: int) -> None:
        """Centre the camera on the tile and zoom so that it fills most of the canvas."""
        shown = [d - offset for d in self.viewer.dims.displayed if d >= offset]
        scale = layer.scale
        self.viewer.camera.center = tuple(float(world[k]) for k in shown)
        sizes = [extent[k] * abs(scale[k]) for k in shown]
        canvas = self.viewer.canvas.size[-len(shown):]
        if all(sizes):
            self.viewer.camera.zoom = 0.9 * min(c / s for c, s in zip(canvas, sizes))


def _tile_text(s: Suggestion) -> str:
    if s.box is None:
        return ""
    y0, x0, y1, x1 = s.box
    return f" tile y={y0}:{y1} x={x0}:{x1}"
