"""Per-object tables: score, area and centroid of every predicted object, for every instance backend."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_dlbio import objects, samples, tasks
from napari_dlbio.objects import OBJECTS


def _check_table(table, labels, spatial_axes: str, loop: dict | None = None):
    """One row per id in ``labels``; areas are pixel counts, centroids the mean positions."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    assert np.array_equal(np.sort(table["label"]), ids)
    assert table["score"].dtype == np.float32
    assert np.all((table["score"] >= 0) & (table["score"] <= 1))
    order = np.argsort(table["label"])
    counts = np.bincount(labels.ravel())
    assert np.array_equal(table["area"][order], counts[ids])
    com = np.array(ndi.center_of_mass(np.ones_like(labels), labels, ids)).reshape(len(ids), -1)
    for d, a in enumerate(spatial_axes):
        assert np.allclose(table[f"centroid_{a.lower()}"][order], com[:, d], atol=1e-6)


# -- the shared measurement --------------------------------------------------------
def test_measure_areas_centroids_and_scores():
    labels = np.zeros((8, 10), np.int32)
    labels[1:3, 1:4] = 2          # 6 pixels, centre (1.5, 2)
    labels[5, 7] = 5              # 1 pixel at (5, 7)
    scores = np.array([0, 0.1, 0.9, 0.3, 0.3, 0.25], np.float32)
    t = objects.measure(labels, scores, "YX")
    assert list(t) == ["label", "score", "area", "centroid_y", "centroid_x"]
    assert t["label"].tolist() == [2, 5] and t["area"].tolist() == [6, 1]
    assert np.allclose(t["score"], [0.9, 0.25])
    assert np.allclose(t["centroid_y"], [1.5, 5]) and np.allclose(t["centroid_x"], [2, 7])
    with pytest.raises(ValueError, match="scores for label ids up to 3 but its labels hold id 5"):
        objects.measure(labels, scores[:4], "YX")


def test_mean_per_object_and_empty_labels():
    labels = np.array([[0, 1, 1], [2, 2, 0]])
    values = np.array([[9.0, 0.2, 0.4], [0.8, 1.5, 7.0]])
    assert np.allclose(objects.mean_per_object(labels, values), [0.0, 0.3, 1.0])  # clipped to [0, 1]
    t = objects.measure(np.zeros((4, 4), np.int32), np.zeros(1), "YX")
    assert all(len(v) == 0 for v in t.values()) and "centroid_x" in t


def test_best_iou_and_flip_agreement():
    a = np.zeros((6, 8), np.int32)
    a[0:2, 0:2] = 1                 # 4 px
    a[3:6, 4:8] = 3                 # 12 px
    b = np.zeros_like(a)
    b[0:2, 0:1] = 5                 # half of object 1
    b[3:6, 4:8] = 2                 # object 3 exactly
    assert np.allclose(objects.best_iou(a, b), [0, 0.5, 0, 1.0])
    item = a[None].astype(np.float32)
    same = objects.flip_agreement(lambda x: x[0].astype(np.int32), item, a)   # finds every object again
    assert np.allclose(same[[1, 3]], 1.0)
    none = objects.flip_agreement(lambda x: np.zeros(x.shape[1:], np.int32), item, a)
    assert np.allclose(none, 0.0)


def test_tables_of_a_stack_take_the_label_offset_and_the_item_index():
    tables = objects.ObjectTables("YX", "ZYX")
    a = np.zeros((4, 4), np.int32)
    a[0, 0] = 1
    tables.add({"Z": 0}, a, np.array([0, 0.5]))
    b = np.where(a > 0, a + 1, 0)   # item 2's id 1, offset by 1 as the writer offsets labels
    tables.add({"Z": 1}, b, np.array([0, 0.7]), offset=1)
    t = tables.table()
    assert list(t) == ["label", "score", "area", "centroid_z", "centroid_y", "centroid_x"]
    assert t["label"].tolist() == [1, 2] and np.allclose(t["score"], [0.5, 0.7])
    assert t["centroid_z"].tolist() == [0.0, 1.0]


def test_csv_and_features(tmp_path):
    t = objects.measure(np.array([[0, 3], [3, 0]]), np.array([0, 0, 0, 0.125]), "YX")
    path = objects.write_csv(t, tmp_path / "x_objects.csv")
    assert path.read_text().splitlines() == ["label,score,area,centroid_y,centroid_x", "3,0.125,2,0.5,0.5"]
    assert [p.name for p in tmp_path.iterdir()] == ["x_objects.csv"]   # no temporary file left
    f = objects.features(t)
    assert f["index"].tolist() == [3] and f["label"].tolist() == [3]


# -- backends -------------------------------------------------------------------------
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def unet(tiny_unet):
    return tasks.load_model(tiny_unet)


def test_unet_scores_are_mean_foreground_probability(unet):
    from napari_dlbio.backends.unet.targets import BACKGROUND

    img, _ = samples.nuclei_2d((128, 160), seed=5)
    pred = tasks.predict(unet, img, settings=unet.spec.Predict(probabilities=True))
    labels, prob = pred.outputs["labels"], pred.outputs["probability"]
    assert labels.max() >= 5 and OBJECTS not in pred.outputs
    t = pred.objects
    _check_table(t, labels, "YX")
    for lab, score in zip(t["label"], t["score"]):
        assert score == pytest.approx(1 - prob[BACKGROUND][labels == lab].mean(), abs=1e-5)
    assert t["score"].max() > 0.5       # a trained network is confident of some nuclei


def test_stack_ids_match_the_output_labels(unet):
    stack = np.stack([samples.nuclei_2d((96, 96), seed=s)[0] for s in (6, 7, 8)])
    pred = tasks.predict(unet, stack, axes="ZYX")
    labels, t = pred.outputs["labels"], pred.objects
    assert list(t)[3:] == ["centroid_z", "centroid_y", "centroid_x"]
    ids = np.unique(labels)
    assert np.array_equal(np.sort(t["label"]), ids[ids > 0])
    for z in range(3):
        rows = t["centroid_z"] == z
        sub = labels[z]
        _check_table({k: v[rows] for k, v in t.items()}, sub, "YX")
    single = tasks.predict(unet, stack[1]).objects   # same objects and scores, ids shifted
    rows = t["centroid_z"] == 1
    assert np.allclose(np.sort(t["score"][rows]), np.sort(single["score"]), atol=1e-6)


def test_flip_agreement_multiplies_the_score(unet):
    img, _ = samples.nuclei_2d((96, 128), seed=5)
    plain = tasks.predict(unet, img).objects
    both = tasks.predict(unet, img, settings=unet.spec.Predict(flip_agreement=True)).objects
    assert list(both)[-1] == "agreement" and np.array_equal(both["label"], plain["label"])
    assert np.all((both["agreement"] >= 0) & (both["agreement"] <= 1)) and np.median(both["agreement"]) > 0.5
    assert np.allclose(both["score"], plain["score"] * both["agreement"], atol=1e-6)


def _read_csv(path):
    import csv

    with open(path) as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array(rows[1:], float).reshape(-1, len(rows[0]))


def test_cli_predict_objects_writes_a_csv_per_output(unet, tmp_path, capsys):
    import tifffile

    from napari_dlbio import cli

    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(inputs / "one.tif", samples.nuclei_2d((96, 112), seed=9)[0])
    tifffile.imwrite(inputs / "stack.tif", np.stack([samples.nuclei_2d((80, 80), seed=s)[0] for s in (1, 2)]))
    out = tmp_path / "out"
    model = str(unet.info.path)
    rc = cli.main(["predict", "--model", model, str(inputs), "--out", str(out), "--objects", "-q"])
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["one.tif", "one_objects.csv", "stack.tif", "stack_objects.csv"]
    for name, axes in (("one", "yx"), ("stack", "zyx")):
        labels = tifffile.imread(out / f"{name}.tif")
        header, rows = _read_csv(out / f"{name}_objects.csv")
        assert header == ["label", "score", "area"] + [f"centroid_{a}" for a in axes]
        ids = np.unique(labels)
        assert labels.max() > 0 and np.array_equal(np.sort(rows[:, 0]), ids[ids > 0])
        assert np.array_equal(rows[:, 2], np.bincount(labels.ravel())[rows[:, 0].astype(int)])
        assert np.all((rows[:, 1] >= 0) & (rows[:, 1] <= 1))
        com = np.array(ndi.center_of_mass(np.ones_like(labels), labels, rows[:, 0].astype(int)))
        assert np.allclose(rows[:, 3:], com, atol=1e-4)


def test_cli_objects_blockwise_says_there_is_no_table(unet, tmp_path, capsys):
    import tifffile

    from napari_dlbio import cli

    tifffile.imwrite(tmp_path / "big.tif", samples.nuclei_2d((160, 160), seed=9)[0])
    out = tmp_path / "out"
    rc = cli.main(["predict", "--model", str(unet.info.path), str(tmp_path / "big.tif"), "--out", str(out),
                   "--objects", "--block-size", "64", "-q"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "no objects table: per-object scores are not computed for images predicted block by block" in err
    assert not list(out.glob("*.csv"))


def test_result_layer_gets_the_table_as_features(unet):
    from napari_dlbio._layers import LayerSnapshot, prediction_layers

    img, _ = samples.nuclei_2d((96, 96), seed=5)
    pred = tasks.predict(unet, img)
    (layer,) = prediction_layers(pred, LayerSnapshot.from_array("cells", img), {"backend": "unet"})
    data, meta, kind = layer
    f = meta["features"]
    assert kind == "labels" and list(f)[:4] == ["index", "label", "score", "area"]
    assert np.array_equal(f["index"], pred.objects["label"])
    assert np.array_equal(f["score"], pred.objects["score"])
    import pickle

    assert pickle.loads(pickle.dumps(pred)).objects["label"].tolist() == pred.objects["label"].tolist()


def test_blockwise_prediction_has_no_table(unet):
    img, _ = samples.nuclei_2d((160, 160), seed=5)
    pred = tasks.predict(unet, img, block_size=64)
    assert pred.outputs["labels"].max() > 0 and pred.objects is None
    assert set(pred.outputs) == {"labels"}


def test_semantic_and_image_models_give_no_table():
    from napari_dlbio import backends

    m = backends.get("unet").new(backends.get("unet").Settings(mode="semantic", n_classes=3, depth=1,
                                                               base_width=4), 1, 2)
    assert m.semantic
    prob = np.full((3, 8, 8), 1 / 3, np.float32)
    assert OBJECTS not in m.postprocess(prob, m.spec.Predict(), None)


def test_stardist_scores_are_the_object_probabilities(tmp_path):
    pytest.importorskip("stardist")
    from test_stardist import blobs, tiny

    from napari_dlbio import data

    pairs = [blobs((96, 96), 10, s) for s in range(3)]
    img, lab = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    td = data.from_arrays(img, lab, axes="ZYX", ndim=2)
    model = tasks.train("stardist", td, tiny(epochs=6, steps_per_epoch=8, learning_rate=5e-3), None).model
    img = blobs((96, 96), 10, 11)[0]
    s = model.spec.Predict(prob_thresh=0.3)
    pred = tasks.predict(model, img, settings=s)
    labels, t = pred.outputs["labels"], pred.objects
    assert labels.max() >= 3
    _check_table(t, labels, "YX")
    # Ids are drawn most probable first: scores fall as ids rise, all above the threshold.
    order = np.argsort(t["label"])
    assert np.all(np.diff(t["score"][order]) <= 1e-7) and t["score"].min() >= 0.3


def test_cellpose_scores_are_mean_cell_probability(tmp_path):
    pytest.importorskip("cellpose")
    from test_cellpose import LOOSE, blobs

    from napari_dlbio.backends import cellpose as cpb

    model = cpb.BACKEND.pretrained(str(cpb.write_random_model(tmp_path / "micro", cpb.MICRO, seed=0)))
    img = blobs(1, size=64, seed=3)[0][0]
    pred = tasks.predict(model, img, settings=model.spec.Predict(**LOOSE, return_flows=True))
    labels, t = pred.outputs["labels"], pred.objects
    assert labels.max() >= 1
    _check_table(t, labels, "YX")
    p = 1 / (1 + np.exp(-pred.outputs["cellprob"].astype(np.float64)))
    for lab, score in zip(t["label"], t["score"]):
        assert score == pytest.approx(p[labels == lab].mean(), abs=1e-5)
