"""The models loaded in this process (the job process, a dask worker), by their source's key.

Apart from :mod:`napari_dlbio.requests` (which re-exports it) so that block tasks
running on a worker reach the cache without importing the docks' requests.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class ModelCache:
    """The last ``size`` loaded models by :attr:`ModelSource.key`, in the process that runs jobs.

    Two: enough to switch between two models without reloading; more would hold
    gigabytes (Cellpose-SAM) for models nobody uses.
    """

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._models: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple) -> Any | None:
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
        return model

    def put(self, key: tuple, model: Any) -> None:
        self._models[key] = model
        self._models.move_to_end(key)
        while len(self._models) > self.size:
            self._models.popitem(last=False)

    def clear(self) -> None:
        self._models.clear()

    def __len__(self) -> int:
        return len(self._models)


MODELS = ModelCache()
