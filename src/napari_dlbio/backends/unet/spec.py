"""The U-Net backend's declaration (cheap to import: settings only)."""

from ..base import BackendSpec
from .settings import Predict, Settings

SPEC = BackendSpec(
    name="unet",
    title="U-Net (napari-dlbio)",
    output="labels",
    Settings=Settings,
    Predict=Predict,
    model="napari_dlbio.backends.unet.model:UNetModel",
    requires=("torch",),
    bioimageio=True,
)
