"""The Predict dock's "Output" group: where results go (a layer or OME-Zarr) and where the job runs.

A result that fits in memory becomes a layer as before. A large layer (or one
backed by dask/zarr, i.e. probably larger than memory) is predicted block by
block into an OME-Zarr store on disk, and its result layer is read lazily from
there; the blocks can run on this computer or on a Dask cluster.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..requests import OutputChoice

WHERE = ("new layer (in memory)", "OME-Zarr in a folder")
RUN_ON = ("this computer", "a Dask cluster at")
DEFAULT_FOLDER = Path.home() / "napari-dlbio-results"


def _spin(tip: str, maximum: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(0, maximum)
    box.setSpecialValueText("auto")
    box.setSuffix(" px")
    box.setToolTip(tip)
    return box


class OutputBox(QGroupBox):
    """Output: memory or OME-Zarr (with a folder); run on: this computer or a Dask cluster."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Output", parent)
        self._form = form = QFormLayout(self)
        self.where = QComboBox()
        self.where.addItems(WHERE)
        self.where.setToolTip("Large images are predicted block by block into OME-Zarr; the result layer "
                              "is read from there and fills in as blocks finish")
        form.addRow("write result to", self.where)
        self.folder = QLineEdit(str(DEFAULT_FOLDER))
        self.folder.setToolTip("One <image>_<model>.ome.zarr store per image is written here")
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse)
        self._folder_row = _pair(self.folder, self.browse)
        form.addRow("folder", self._folder_row)
        self.run_on = QComboBox()
        self.run_on.addItems(RUN_ON)
        self.address = QLineEdit()
        self.address.setPlaceholderText("tcp://host:8786 or local:2")
        self.address.setToolTip("A dask.distributed scheduler (e.g. started with dask-jobqueue on a cluster), "
                                "or local:N for N worker processes on this computer")
        self._run_row = _pair(self.run_on, self.address)
        form.addRow("run on", self._run_row)
        from superqt import QCollapsible

        self.more = QCollapsible("Block settings", self, expandedIcon="▼", collapsedIcon="▶")
        inner = QWidget()
        blocks = QFormLayout(inner)
        blocks.setContentsMargins(0, 0, 0, 0)
        self.block_size = _spin("Pixels per block edge; auto: from the memory budget", 65536)
        self.overlap = _spin("Pixels of context around each block; auto: from the model", 4096)
        blocks.addRow("block size", self.block_size)
        blocks.addRow("block overlap", self.overlap)
        self.more.addWidget(inner)
        form.addRow(self.more)
        self.where.currentIndexChanged.connect(self._show)
        self.run_on.currentIndexChanged.connect(self._show)
        self._show()

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the OME-Zarr results", self.folder.text())
        if path:
            self.folder.setText(path)

    def to_disk(self) -> bool:
        return self.where.currentIndex() == 1

    def _show(self, *_args) -> None:
        disk = self.to_disk()
        for row in (self._folder_row, self._run_row, self.more):
            self._form.setRowVisible(row, disk)
        self.address.setEnabled(self.run_on.currentIndex() == 1)

    def suggest(self, large: bool) -> None:
        """OME-Zarr for large (or dask/zarr-backed) layers; the user's choice otherwise stays."""
        if large and not self.to_disk():
            self.where.setCurrentIndex(1)

    def choice(self) -> OutputChoice | None:
        """None: results in memory; a ValueError says what is missing."""
        if not self.to_disk():
            return None
        folder = self.folder.text().strip()
        if not folder:
            raise ValueError("choose a folder for the OME-Zarr results")
        cluster = self.address.text().strip() if self.run_on.currentIndex() == 1 else None
        if self.run_on.currentIndex() == 1 and not cluster:
            raise ValueError("give the Dask scheduler's address (tcp://host:port) or local:N")
        return OutputChoice(str(Path(folder).expanduser()), cluster,
                            self.block_size.value() or None, self.overlap.value() or None)


def _pair(first: QWidget, second: QWidget) -> QWidget:
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(first, 1)
    lay.addWidget(second, 0)
    return row
