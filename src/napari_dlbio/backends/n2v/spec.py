"""The Noise2Void backend's declaration (cheap to import: settings only)."""

from ..base import BackendSpec
from .settings import Predict, Settings

SPEC = BackendSpec(
    name="n2v",
    title="Noise2Void (CAREamics)",
    output="image",
    Settings=Settings,
    Predict=Predict,
    model="napari_dlbio.backends.n2v.model:N2VModel",
    requires=("torch", "careamics"),
    extra="n2v",
    has_pretrained=True,
    pretrained_hint="bioimage.io zip or CAREamics checkpoint",
    needs_labels=False,
    layer_suffix="n2v",
)
