"""The restoration backend's declaration (cheap to import: settings only).

Its name stays ``n2v`` (saved models and scripts name it); its outputs are named after
each model's algorithm (:attr:`N2VModel.layer_suffix`): ``_n2v``, ``_care``, ``_n2n``.
"""

from ..base import BackendSpec
from .settings import Predict, Settings

SPEC = BackendSpec(
    name="n2v",
    title="Restoration (Noise2Void, CARE, Noise2Noise)",
    output="image",
    Settings=Settings,
    Predict=Predict,
    model="napari_dlbio.backends.n2v.model:N2VModel",
    requires=("torch", "careamics"),
    extra="n2v",
    has_pretrained=True,
    pretrained_hint="bioimage.io zip or CAREamics checkpoint",
    bioimageio=True,
    needs_labels=False,
    layer_suffix="n2v",
)
