"""StarDist on PyTorch: star-convex object detection for 2D and 3D nuclei, no TensorFlow.

Only framework-free parts of the ``stardist`` package are used (targets, NMS, label
rendering, matching); ``stardist.models`` is never imported because it loads TensorFlow.
Attributes are imported on first use, so reading the spec never imports torch.
"""

from .._lazy import lazy_module

__getattr__, __dir__, __all__ = lazy_module(__name__, {
    "BACKEND": ("napari_dlbio.backends", "backend:stardist"),
    "StarDistModel": (".model", "StarDistModel"),
    "Predict": (".settings", "Predict"),
    "Settings": (".settings", "Settings"),
    "SPEC": (".spec", "SPEC"),
})
