"""StarDist backend on PyTorch: training, prediction, thresholds, official models, no TensorFlow."""

from __future__ import annotations

import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("stardist")

from napari_dlbio import data, tasks  # noqa: E402
from napari_dlbio.backends import get  # noqa: E402
from napari_dlbio.config import Normalization  # noqa: E402
from napari_dlbio.jobs import JobContext  # noqa: E402
from napari_dlbio.metrics import match  # noqa: E402
from napari_dlbio.store import ModelError  # noqa: E402

REF = Path(__file__).parent / "data" / "stardist"
BE = get("stardist")


def blobs(shape, n, seed, radius=7.0):
    """Non-overlapping balls/disks: (image float32, labels int32)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    labels = np.zeros(shape, np.int32)
    k = 0
    for _ in range(n * 30):
        c = [rng.uniform(radius, s - radius) for s in shape]
        r = rng.uniform(0.75, 1.15) * radius
        ball = sum((g - ci) ** 2 for g, ci in zip(grid, c)) <= r**2
        if (labels[ball] > 0).any() or ball.sum() == 0:
            continue
        k += 1
        labels[ball] = k
        if k == n:
            break
    img = 100 + 400 * (labels > 0) + rng.normal(0, 30, shape)
    return img.astype(np.float32), labels


def tiny(**kw):
    base = dict(n_rays=16, width=8, depth=2, features=16, patch_size=64, epochs=4, steps_per_epoch=5,
                batch_size=2, learning_rate=3e-3, seed=0, device="cpu")
    base.update(kw)
    return BE.Settings(**base)


@pytest.fixture(scope="module")
def data2d():
    pairs = [blobs((96, 96), 10, s) for s in range(4)]
    img = np.stack([p[0] for p in pairs])
    lab = np.stack([p[1] for p in pairs])
    return img, lab


@pytest.fixture(scope="module")
def trained2d(data2d, tmp_path_factory):
    img, lab = data2d
    td = data.from_arrays(img, lab, axes="ZYX", ndim=2)
    events = []
    settings = tiny(epochs=12, steps_per_epoch=12, learning_rate=5e-3)
    out = tasks.train("stardist", td, settings, tmp_path_factory.mktemp("m") / "sd2d",
                      JobContext(events.append))
    return out, events


def test_settings_defaults_follow_reference():
    s = BE.Settings()
    m2 = BE.new(s, 1, 2)
    m3 = BE.new(s, 1, 3)
    assert (m2.arch.n_rays, m2.arch.grid, m2.arch.depth, m2.arch.width) == (32, (2, 2), 3, 32)
    assert (m3.arch.n_rays, m3.arch.grid, m3.arch.depth) == (96, (2, 2, 2), 2)
    for name, f in BE.Settings.model_fields.items():
        assert f.description, f"field {name} lacks a description"
    with pytest.raises(ValueError, match="power of two"):
        BE.Settings(grid=3)


def test_train_2d_loss_drops_thresholds_saved_and_round_trip(trained2d, data2d):
    out, events = trained2d
    hist = out.fit.history
    assert len(hist) == 12
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"]
    # Progress reached the caller each epoch, with losses.
    assert any("epoch" in e.metrics and "train_loss" in e.metrics for e in events)
    # Thresholds were optimised on the validation data and reported.
    m = out.metrics
    assert 0 < m["prob_thresh"] < 1 and m["nms_thresh"] in (0.3, 0.4, 0.5)
    assert "threshold_score" in m
    assert m["ap50"] > 0.3  # 144 steps of a tiny net already find most blobs
    loaded = tasks.load_model(out.path)
    # A store name also works through the backend (`predict --backend stardist --model NAME`).
    from napari_dlbio.store import store_root

    shutil.copytree(out.path, store_root() / "sd-copy")
    assert tasks.load_model("sd-copy", backend="stardist").thresholds == loaded.thresholds
    assert loaded.thresholds == out.model.thresholds
    img = data2d[0][0]
    a = out.model.predict(img[None], BE.Predict(), JobContext())["labels"]
    b = loaded.predict(img[None], BE.Predict(), JobContext())["labels"]
    assert a.dtype == np.int32 and a.shape == img.shape
    np.testing.assert_array_equal(a, b)
    assert (out.path / "thresholds.json").is_file()


def test_predict_stack_with_polygons_places_shapes(trained2d, data2d):
    model = trained2d[0].model
    img = data2d[0][:2]  # a 2-frame time-lapse
    events = []
    pred = tasks.predict(model, img, axes="TYX", settings=BE.Predict(polygons=True),
                         ctx=JobContext(events.append))
    lab = pred.outputs["labels"]
    assert lab.shape == img.shape and lab.dtype == np.int32
    shapes = pred.outputs["shapes"]
    assert pred.axes["shapes"] == "TYX"
    n0 = len(np.unique(lab[0])) - 1
    n1 = len(np.unique(lab[1])) - 1
    assert n0 > 3 and n1 > 3
    assert len(shapes) >= n0 + n1 - 2  # a polygon per object (tiny ones may vanish from labels)
    assert all(s.shape == (16, 3) for s in shapes)
    assert {float(s[0, 0]) for s in shapes} <= {0.0, 1.0}
    # Each polygon surrounds a labelled object of its own frame.
    s = shapes[0]
    t, cy, cx = int(s[0, 0]), s[:, 1].mean(), s[:, 2].mean()
    assert lab[t, int(round(cy)), int(round(cx))] > 0
    assert events and events[-1].done == 2


def test_tiled_prediction_matches_whole(trained2d, data2d):
    model = trained2d[0].model
    img = np.tile(data2d[0][0], (2, 2))  # 192 x 192
    whole = model.predict(img[None], BE.Predict(), JobContext())["labels"]
    tiled = model.predict(img[None], BE.Predict(tile_size=96, tile_overlap=32), JobContext())["labels"]
    assert tiled.shape == whole.shape
    m = match(whole, tiled)
    assert m.n_true == 0 or m.ap > 0.9


def test_train_3d_and_predict():
    pairs = [blobs((24, 40, 40), 6, s, radius=6) for s in range(3)]
    img = np.stack([p[0] for p in pairs])
    lab = np.stack([p[1] for p in pairs])
    td = data.from_arrays(img, lab, axes="TZYX", ndim=3)
    # Thresholds are tested in 2D; 3D NMS over an untrained net's candidates is slow.
    st = tiny(n_rays=24, depth=1, patch_size=32, patch_size_z=16, epochs=4, steps_per_epoch=5,
              optimize_thresholds=False)
    out = tasks.train("stardist", td, st, None)
    hist = out.fit.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    res = out.model.predict(img[0][None], BE.Predict(), JobContext())
    assert res["labels"].shape == img[0].shape and res["labels"].dtype == np.int32
    assert "shapes" not in res


def test_cancel_keeps_last_good_model(data2d, tmp_path):
    img, lab = data2d
    td = data.from_arrays(img, lab, axes="ZYX", ndim=2)
    ctx = JobContext()

    def on_progress(p):
        if p.metrics.get("epoch") == 2:
            ctx.cancel()

    ctx._on_progress = on_progress
    out = tasks.train("stardist", td, tiny(epochs=20, steps_per_epoch=3), tmp_path / "c", ctx)
    assert out.fit.stopped == "cancelled" and out.fit.best_epoch >= 1
    assert out.path is not None and (out.path / "stardist.pt").is_file()


def test_fine_tune_keeps_architecture(trained2d, data2d):
    out = trained2d[0]
    img, lab = data2d
    td = data.from_arrays(img, lab, axes="ZYX", ndim=2)
    # Different architecture fields are ignored: the loaded network is kept.
    st = tiny(epochs=1, steps_per_epoch=2, width=16, n_rays=32)
    ft = tasks.train("stardist", td, st, None, start_from=out.path)
    assert ft.model.arch == out.model.arch and ft.model.settings.width == 8


def test_threshold_optimisation_on_perfect_outputs():
    from stardist import edt_prob, star_dist

    from napari_dlbio.backends.stardist.thresholds import optimize

    trues, outputs = [], []
    for s in range(2):
        _, lab = blobs((80, 80), 8, 10 + s)
        prob = edt_prob(lab[::2, ::2])
        dist = star_dist(lab, 16, grid=(2, 2))
        trues.append(lab)
        outputs.append((prob, dist))
    best = optimize(outputs, trues, (2, 2))
    assert best["score"] > 0.8
    assert 0.05 <= best["prob"] < 0.95 and best["nms"] in (0.3, 0.4, 0.5)


@pytest.mark.parametrize("name", ["ref2d", "ref3d"])
def test_converted_official_models_reproduce_outputs(name):
    # Written by scripts/make_stardist_reference.py with TensorFlow + official stardist.
    ref = np.load(REF / f"{name}_outputs.npz")
    model = BE.pretrained(str(REF / name))
    model.settings.normalization = Normalization(mode="none")
    x = ref["x"][None].astype(np.float32)
    prob, dist = model.network_output(x, BE.Predict(device="cpu"), JobContext())
    assert prob.shape == ref["prob"].shape
    assert np.abs(prob - ref["prob"]).max() < 1e-4
    assert np.abs(np.maximum(dist, 1e-3) - ref["dist"]).max() < 1e-4
    assert model.thresholds == {"prob": 0.5, "nms": 0.4}


def test_official_dsb_model_reproduces_outputs_and_labels(shared_data):
    folder = shared_data / "stardist-official-dsb"
    ref = np.load(folder / "reference_outputs.npz")
    model = BE.pretrained(str(folder))
    assert model.thresholds["nms"] == 0.3
    model.settings.normalization = Normalization(mode="none")
    for i in range(2):
        x = ref[f"x{i}"][None].astype(np.float32)
        prob, dist = model.network_output(x, BE.Predict(device="cpu"), JobContext())
        assert np.abs(prob - ref[f"prob{i}"]).max() < 1e-4
        assert np.abs(np.maximum(dist, 1e-3) - ref[f"dist{i}"]).max() < 1e-4
        labels = model.predict(x, BE.Predict(device="cpu"), JobContext())["labels"]
        m = match(ref[f"labels{i}"], labels)
        assert m.ap == 1.0 and m.mean_matched_iou > 0.99


def test_local_zip_is_accepted(tmp_path):
    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as f:
        for p in (REF / "ref2d").iterdir():
            f.write(p, f"ref2d/{p.name}")
    model = tasks.load_model(str(z), backend="stardist")
    assert model.arch.n_rays == 16 and model.ndim == 2


def test_offline_download_fails_fast_with_clear_message(monkeypatch):
    from napari_dlbio.backends.stardist import pretrained

    monkeypatch.setattr(pretrained, "TIMEOUT_S", 2.0)
    t = time.monotonic()
    with pytest.raises(ModelError) as err:
        BE.pretrained("2D_versatile_fluo")
    assert time.monotonic() - t < 10
    msg = str(err.value)
    assert "python_2D_versatile_fluo.zip" in msg and "zip" in msg and "folder" in msg


def test_bad_names_and_folders(tmp_path):
    with pytest.raises(ModelError, match="neither an official"):
        BE.pretrained("no_such_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no StarDist model"):
        BE.pretrained(str(tmp_path / "empty"))
    broken = tmp_path / "broken"
    shutil.copytree(REF / "ref2d", broken)
    (broken / "weights_best.h5").write_bytes(b"not hdf5")
    with pytest.raises(ModelError, match="HDF5"):
        BE.pretrained(str(broken))


def test_no_tensorflow_imported(trained2d):
    # Runs after training and prediction above (same process).
    assert "tensorflow" not in sys.modules
    assert "stardist.models" not in sys.modules
