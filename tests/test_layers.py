"""Qt-free helpers between layers and jobs: geometry, names, provenance, annotation summary."""

import types

import numpy as np
import pytest

from napari_dlbio._layers import (
    LayerSnapshot,
    annotation_summary,
    geometry_for,
    parse_channels,
    prediction_layers,
    provenance,
    safe_model_name,
    snapshot,
    unique_name,
)
from napari_dlbio.requests import ModelRef
from napari_dlbio.tasks import Prediction


def fake_layer(data, name="img", scale=None, translate=None, rgb=False):
    nd = data.ndim - (1 if rgb else 0)
    return types.SimpleNamespace(
        name=name, data=data, rgb=rgb, multiscale=False,
        scale=scale or (1.0,) * nd, translate=translate or (0.0,) * nd,
    )


def test_snapshot_guesses_and_validates_axes():
    s = snapshot(fake_layer(np.zeros((3, 40, 50))))
    assert s.axes == "CYX"
    s = snapshot(fake_layer(np.zeros((3, 40, 50))), "zyx")
    assert s.axes == "ZYX"
    with pytest.raises(ValueError, match="axes 'TZYX' name 4 dimensions"):
        snapshot(fake_layer(np.zeros((3, 40, 50))), "TZYX")
    with pytest.raises(ValueError, match="RGB"):
        snapshot(fake_layer(np.zeros((40, 50, 3)), rgb=True), "CYX")


def test_geometry_drops_channel_and_handles_rgb():
    # C axis in the data: its scale entry is dropped for a labels output.
    src = LayerSnapshot("a", np.zeros((5, 2, 40, 50)), "ZCYX", (3.0, 1.0, 0.5, 0.25), (1.0, 0.0, 2.0, 4.0))
    assert geometry_for(src, "ZYX") == ([3.0, 0.5, 0.25], [1.0, 2.0, 4.0])
    # RGB: napari's scale has no C entry.
    rgb = LayerSnapshot("b", np.zeros((40, 50, 3)), "YXC", (0.5, 0.25), (2.0, 4.0), rgb=True)
    assert geometry_for(rgb, "YX") == ([0.5, 0.25], [2.0, 4.0])
    # An axis the source lacks (a class axis added by the model) gets 1 / 0.
    assert geometry_for(rgb, "CYX") == ([1.0, 0.5, 0.25], [0.0, 2.0, 4.0])


def test_prediction_layers_names_dtype_provenance():
    src = LayerSnapshot("cells", np.zeros((4, 30, 20)), "TYX", (5.0, 0.5, 0.5), (0.0, 1.0, 2.0))
    pred = Prediction(
        {"labels": np.ones((4, 30, 20), np.int64), "probability": np.zeros((4, 3, 30, 20), np.float32)},
        {"labels": "TYX", "probability": "TCYX"}, model="m1",
    )
    model = ModelRef("unet", "m1")
    prov = provenance(model, src)
    (lab,) = prediction_layers(pred, src, prov, extras=False)
    data, meta, kind = lab
    assert kind == "labels" and data.dtype == np.int32 and meta["name"] == "cells_m1"
    assert meta["scale"] == [5.0, 0.5, 0.5] and meta["translate"] == [0.0, 1.0, 2.0]
    p = meta["metadata"]["napari_dlbio"]
    assert p["source_layer"] == "cells" and p["backend"] == "unet" and p["date"]
    both = prediction_layers(pred, src, prov, extras=True, existing=["cells_m1"])
    assert [m["name"] for _, m, _ in both] == ["cells_m1 [2]", "cells_m1_probability"]
    assert both[1][1]["scale"] == [5.0, 1.0, 0.5, 0.5]


def test_names():
    assert unique_name("a", ["a", "a [2]"]) == "a [3]"
    assert unique_name("b", ["a"]) == "b"
    assert safe_model_name("nuclei 2D (synthetic)") == "nuclei_2D_synthetic"
    assert parse_channels("") is None and parse_channels("all") is None
    assert parse_channels("0, 2") == (0, 2)
    with pytest.raises(ValueError, match="channels"):
        parse_channels("red")


def test_annotation_summary():
    lab = np.zeros((40, 16, 16), np.int32)
    lab[3, :2, :2] = 1
    lab[7, :2, :2] = 1
    lab[7, 5:8, 5:8] = 2
    lab[12, 9:, 9:] = 5
    s = annotation_summary(lab, "ZYX", ndim=2)
    assert s.text() == "annotated: z=3, 7, 12 (3 of 40 slices, 4 objects)"
    # A 3D model sees one volume, where an id is one object across slices.
    assert annotation_summary(lab, "ZYX", ndim=3).text() == "annotated: whole image (3 objects)"  # id 1 spans z=3 and 7
    # The image's C axis is not part of the labels.
    s = annotation_summary(lab[:5], "ZCYX".replace("Z", "T"), ndim=2)
    assert s.text() == "annotated: t=3 (1 of 5 frames, 1 object)"
    # A region restricts what counts.
    region = np.zeros((16, 16), bool)
    region[8:, 8:] = True
    assert annotation_summary(lab, "ZYX", 2, region).text() == "annotated: z=12 (1 of 40 slices, 1 object)"
    assert annotation_summary(np.zeros((8, 8), np.int32), "YX").text().startswith("annotated: none")


def test_region_mask_maps_shapes_through_world_coordinates():
    from napari.layers import Labels, Shapes

    from napari_dlbio._layers import region_mask

    labels = Labels(np.zeros((5, 40, 60), np.int32), scale=(3.0, 0.5, 0.5))
    # A rectangle drawn in 2D in world units: y 5..10, x 10..20 -> pixels 10..20, 20..40.
    shapes = Shapes([np.array([[5, 10], [5, 20], [10, 20], [10, 10]])], shape_type="rectangle")
    mask = region_mask(shapes, labels, labels.data.shape)
    assert mask.shape == (40, 60)  # 2D: the same region in every slice
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 20, 20, 40)
    with pytest.raises(ValueError, match="holds no shape"):
        region_mask(Shapes([]), labels, labels.data.shape)


def test_polygons_become_a_shapes_layer_and_n2v_outputs_are_named_after_the_method():
    import numpy as np

    from napari_dlbio._layers import prediction_layers, snapshot
    from napari_dlbio.tasks import Prediction

    class Layer:
        name, data, rgb = "cells", np.zeros((2, 8, 8), np.float32), False
        scale, translate = (1.0, 0.5, 0.5), (0.0, 10.0, 20.0)

    src = snapshot(Layer(), "TYX")
    poly = np.array([[0, 1, 1], [0, 1, 4], [0, 4, 4]], np.float32)
    pred = Prediction({"labels": np.zeros((2, 8, 8), np.int32), "shapes": [poly]},
                      {"labels": "TYX", "shapes": "TYX"}, "sd")
    layers = prediction_layers(pred, src, {"backend": "stardist"})
    kinds = {m["name"]: kind for _, m, kind in layers}
    assert kinds == {"cells_sd": "labels", "cells_sd_shapes": "shapes"}
    shapes = next(d for d, m, k in layers if k == "shapes")
    np.testing.assert_array_equal(shapes[0], poly)
    assert next(m for _, m, k in layers if k == "shapes")["scale"] == [1.0, 0.5, 0.5]

    pytest.importorskip("careamics")
    den = Prediction({"image": np.zeros((2, 8, 8), np.float32)}, {"image": "TYX"}, "my-denoiser")
    (data, meta, kind), = prediction_layers(den, src, {"backend": "n2v"})
    assert (meta["name"], kind, data.dtype) == ("cells_n2v", "image", np.float32)
