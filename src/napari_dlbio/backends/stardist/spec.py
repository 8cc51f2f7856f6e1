"""The StarDist backend's declaration (cheap to import: settings only)."""

from ..base import BackendSpec
from .settings import Predict, Settings

SPEC = BackendSpec(
    name="stardist",
    title="StarDist (PyTorch)",
    output="labels",
    Settings=Settings,
    Predict=Predict,
    model="napari_dlbio.backends.stardist.model:StarDistModel",
    requires=("torch", "stardist"),
    extra="stardist",
    has_pretrained=True,
    pretrained_hint="2D_versatile_fluo",
    bioimageio=True,
)
