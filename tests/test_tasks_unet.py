"""The U-Net through the shared job runner: train/save/load, stacks, fine-tune, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_dlbio import data, tasks  # noqa: E402
from napari_dlbio.backends import get  # noqa: E402
from napari_dlbio.jobs import Cancelled, JobContext  # noqa: E402
from napari_dlbio.metrics import match  # noqa: E402
from napari_dlbio.samples import nuclei_2d, nuclei_3d, nuclei_timelapse  # noqa: E402

BE = get("unet")
TINY = dict(depth=2, base_width=8, patch_size=64, batch_size=4, learning_rate=5e-3,
            steps_per_epoch=10, val_patches=4, mixed_precision=False, val_fraction=0.25)


def _stack(n=4, shape=(96, 96), seed=0):
    pairs = [nuclei_2d(shape, seed=seed + i, radius=(5.0, 9.0)) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small instance model trained through tasks.train and saved to a folder."""
    torch.manual_seed(0)
    img, lab = _stack()
    td = data.from_arrays(img, lab, axes="ZYX", ndim=2)
    dest = tmp_path_factory.mktemp("models") / "nuclei"
    out = tasks.train("unet", td, BE.Settings(**TINY, epochs=12), dest, JobContext())
    return out, dest


def test_train_saves_a_model_folder_with_metrics(saved):
    out, dest = saved
    assert out.path == dest and (dest / "weights.pt").is_file()
    meta = json.loads((dest / "model.json").read_text())
    assert meta["backend"] == "unet" and meta["ndim"] == 2 and meta["n_channels"] == 1
    assert meta["settings"]["mode"] == "instance"
    assert meta["metrics"]["ap50"] >= 0.6
    assert meta["metrics"]["training"]["epochs"] == 12
    assert meta["normalization"]["mode"] == "percentile"


def test_loaded_model_predicts_like_the_trained_one(saved):
    out, dest = saved
    img, _ = nuclei_2d((96, 96), seed=21, radius=(5.0, 9.0))
    again = tasks.load_model(dest)
    a = tasks.predict(out.model, img).outputs["labels"]
    b = tasks.predict(again, img).outputs["labels"]
    np.testing.assert_array_equal(a, b)


def test_timelapse_is_predicted_frame_by_frame_with_unique_labels(saved):
    out, _ = saved
    movie, truth = nuclei_timelapse((3, 96, 96), seed=4, radius=(5.0, 9.0))
    pred = tasks.predict(out.model, movie, axes="TYX", settings=BE.Predict(probabilities=True))
    labels = pred.outputs["labels"]
    assert labels.shape == movie.shape and labels.dtype == np.int32 and pred.n_items == 3
    ids = [set(np.unique(f)) - {0} for f in labels]
    assert all(ids) and not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    assert pred.outputs["probability"].shape == (3, 3, 96, 96)
    assert pred.axes["probability"] == "TCYX"
    assert np.mean([match(t, p).ap for t, p in zip(truth, labels)]) >= 0.5


def test_fine_tuning_continues_from_the_saved_weights(saved, tmp_path):
    out, dest = saved
    td = data.from_arrays(*_stack(3, seed=30), axes="ZYX")
    # Architecture fields of the loaded model win; training fields are taken.
    s = BE.Settings(**{**TINY, "depth": 3, "base_width": 16, "learning_rate": 1e-3}, epochs=1)
    tuned = tasks.train("unet", td, s, tmp_path / "tuned", JobContext(), start_from=dest)
    assert tuned.model.settings.depth == 2 and tuned.model.settings.base_width == 8
    assert tuned.model.settings.learning_rate == 1e-3
    assert tuned.model.settings.epochs == 1
    meta = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert meta["provenance"]["fine_tuned_from"]["name"] == "nuclei"
    fresh = tasks.train("unet", td, BE.Settings(**TINY, epochs=1), None, JobContext())
    # Starting from trained weights, the first epoch is already far better than from scratch.
    assert tuned.fit.history[0]["train_loss"] < 0.8 * fresh.fit.history[0]["train_loss"]


def test_cancel_mid_training_keeps_and_saves_the_best_epoch(tmp_path):
    td = data.from_arrays(*_stack(3), axes="ZYX")

    def on_progress(p):
        if p.metrics.get("epoch", 0) >= 2:
            ctx.cancel()

    ctx = JobContext(on_progress)
    out = tasks.train("unet", td, BE.Settings(**TINY, epochs=50), tmp_path / "m", ctx)
    assert out.fit.stopped == "cancelled" and out.fit.epochs == 2 and out.fit.best_epoch >= 1
    assert (tmp_path / "m" / "weights.pt").is_file()
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["metrics"]["training"]["stopped"] == "cancelled"


def test_cancel_before_the_first_epoch_saves_nothing(tmp_path):
    td = data.from_arrays(*_stack(2), axes="ZYX")

    def on_progress(p):
        if "loss" in p.metrics:  # after the first batch
            ctx.cancel()

    ctx = JobContext(on_progress)
    with pytest.raises(Cancelled):
        tasks.train("unet", td, BE.Settings(**TINY, epochs=5), tmp_path / "m", ctx)
    assert not (tmp_path / "m").exists()


def test_3d_model_through_tasks(tmp_path):
    vol, lab = nuclei_3d((12, 48, 48), seed=0, radius=(4.0, 7.0))
    td = data.from_arrays(vol, lab, axes="ZYX", ndim=3)
    s = BE.Settings(**{**TINY, "epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "val_fraction": 0.0},
                    patch_size_z=8)
    out = tasks.train("unet", td, s, tmp_path / "m3", JobContext())
    model = tasks.load_model(tmp_path / "m3")
    assert model.ndim == 3
    movie = np.stack([vol, vol[:, ::-1]])
    pred = tasks.predict(model, movie, axes="TZYX")
    labels = pred.outputs["labels"]
    assert labels.shape == movie.shape and labels.dtype == np.int32 and pred.n_items == 2
    assert out.fit.epochs == 1


def test_semantic_scribbles_report_iou_per_class(tmp_path):
    img, lab = _stack(3)
    scribbles = np.zeros_like(lab)
    scribbles[:, ::6, ::6] = np.where(lab[:, ::6, ::6] > 0, 2, 1)  # sparse points: 1 = bg, 2 = nuclei
    td = data.from_arrays(img, scribbles, axes="ZYX", scribbles=True)
    s = BE.Settings(**TINY, epochs=3, mode="semantic", labels_zero="unannotated")
    out = tasks.train("unet", td, s, tmp_path / "sem", JobContext())
    assert out.model.n_classes == 3 and out.model.settings.n_classes == 3
    assert len(out.metrics["iou_per_class"]) == 3 and out.metrics["iou_per_class"][0] is None
    pred = tasks.predict(tasks.load_model(tmp_path / "sem"), img[0]).outputs["labels"]
    assert set(np.unique(pred)) <= {1, 2}


def test_labels_that_do_not_fit_the_image_are_refused():
    img, lab = _stack(2)
    with pytest.raises(ValueError, match="shape"):
        data.from_arrays(img, lab[:, :90], axes="ZYX")
