"""StarDist on PyTorch: star-convex object detection for 2D and 3D nuclei, no TensorFlow.

Only framework-free parts of the ``stardist`` package are used (targets, NMS, label
rendering, matching); ``stardist.models`` is never imported because it loads TensorFlow.
"""

from .backend import BACKEND, Predict, Settings, StarDistModel

__all__ = ["BACKEND", "Predict", "Settings", "StarDistModel"]
