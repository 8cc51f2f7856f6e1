"""PyTorch U-Net backend (instance and semantic segmentation, 2D and 3D).

Modules: :mod:`.spec` (the declaration the registry reads), :mod:`.settings` (the
pydantic settings the GUI and CLI are generated from), :mod:`.net` (the network),
:mod:`.targets` (training targets and the watershed post-processing, numpy only),
:mod:`.model` (the model: what the shared training recipe needs from a U-Net).
Attributes are imported on first use, so reading the spec never imports torch.
"""

from .._lazy import lazy_module

__getattr__, __dir__, __all__ = lazy_module(__name__, {
    "BACKEND": ("napari_dlbio.backends", "backend:unet"),
    "UNetModel": (".model", "UNetModel"),
    "Predict": (".settings", "Predict"),
    "Settings": (".settings", "Settings"),
    "SPEC": (".spec", "SPEC"),
})
