"""Docks that appear at once and build their parts over the next event-loop turns.

Building a whole dock (forms generated from pydantic settings, the loss plot, the
results tables) and laying it out took 60-120 ms on a 2-core CPU, all inside the
menu click that opens it: napari froze that long (``benchmarks/bench_ui_stall.py``).
A :class:`StagedBuild` runs one step per event-loop turn (a 0 ms timer), so between
two steps napari repaints and handles input, and no turn holds the UI thread for
more than one step.

Code that needs a part before its turn (a test, a script, a signal from a layer)
gets it: :class:`StagedDock` builds the remaining steps at once when an attribute
is missing, so the dock's public names work right after construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QScrollArea


class StagedBuild(QObject):
    """Run ``steps`` one per event-loop turn; :meth:`finish` runs the rest now."""

    finished = Signal()

    def __init__(self, parent: QObject, steps: list[Callable[[], None]]) -> None:
        super().__init__(parent)
        self._steps = list(steps)
        # A child timer dies with the dock, so a dock closed mid-build builds nothing more.
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._next)
        self._timer.start()

    @property
    def done(self) -> bool:
        return not self._steps

    def _next(self) -> None:
        if self._steps:
            self._steps.pop(0)()
        if self._steps:
            self._timer.start()
        else:
            self.finished.emit()

    def finish(self) -> None:
        """Build every remaining step now (someone needs a part that is not there yet)."""
        if not self._steps:
            return
        self._timer.stop()
        while self._steps:
            self._steps.pop(0)()
        self.finished.emit()


class StagedDock:
    """Mixin for a QWidget dock built by a :class:`StagedBuild` (see :meth:`stage`).

    ``LATER`` names the attributes the later steps create. Asking for one before its
    turn builds the rest at once (Python calls ``__getattr__`` only for missing
    names). Other missing names fail as usual: napari probes docks for attributes
    such as ``native`` and ``reset_choices``, and that must not build anything.
    """

    LATER: ClassVar[frozenset[str]] = frozenset()

    def __getattr__(self, name: str):
        staged = self.__dict__.get("_staged")
        if name in type(self).LATER and staged is not None and not staged.done:
            staged.finish()
            return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def stage(self, steps: list[Callable[[], None]]) -> StagedBuild:
        self._staged = StagedBuild(self, steps)
        self._staged.finished.connect(self._fit_width)
        return self._staged

    def _fit_width(self) -> None:
        # napari sized the dock for its first part; parts built later may be wider and would be
        # cut off at the right. The scroll area's hint is fresh (the dock's own is cached from
        # before): asking for it once relays the window out once.
        area = self.findChild(QScrollArea)
        need = area.sizeHint().width() if area is not None else self.sizeHint().width()
        self.setMinimumWidth(max(self.minimumWidth(), need))

    def finish_building(self) -> None:
        staged = self.__dict__.get("_staged")
        if staged is not None:
            staged.finish()
