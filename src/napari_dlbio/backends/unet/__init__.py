"""PyTorch U-Net backend (instance and semantic segmentation, 2D and 3D).

Modules: :mod:`.net` (the network), :mod:`.targets` (training targets and the
watershed post-processing, numpy only), :mod:`.settings` (the pydantic settings
the GUI and CLI are generated from), :mod:`.backend` (model and ``BACKEND``).
"""

from .backend import BACKEND, UNetModel
from .settings import Predict, Settings

__all__ = ["BACKEND", "Predict", "Settings", "UNetModel"]
