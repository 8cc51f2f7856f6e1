"""Results of a job into the viewer: the layers of each finished image."""

from __future__ import annotations

from ..requests import ImageDone, PredictRequest


def add_layers(viewer, tuples: list[tuple]) -> list:
    """Add LayerDataTuples with the public ``add_<kind>`` methods; returns the layers."""
    added = []
    for data, meta, kind in tuples:
        added.append(getattr(viewer, f"add_{kind}")(data, **meta))
    return added


def add_prediction(viewer, request: PredictRequest, done: ImageDone) -> list:
    """The layers of one predicted image, named so that no existing layer is replaced."""
    return add_layers(viewer, request.layers(done, existing=[lay.name for lay in viewer.layers]))
