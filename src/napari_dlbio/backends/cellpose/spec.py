"""The Cellpose backend's declaration (cheap to import: settings only)."""

from ..base import BackendSpec
from .settings import Predict, Settings

SPEC = BackendSpec(
    name="cellpose",
    title="Cellpose",
    output="labels",
    Settings=Settings,
    Predict=Predict,
    model="napari_dlbio.backends.cellpose.model:CellposeModel",
    requires=("torch", "cellpose"),
    extra="cellpose",
    has_pretrained=True,
    pretrained_hint="cpsam",
)
