"""Noise2Void through CAREamics: training, prediction, files, bioimage.io, cancel."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytest.importorskip("careamics")

from napari_dlbio import data, tasks  # noqa: E402
from napari_dlbio.backends import get  # noqa: E402
from napari_dlbio.jobs import Cancelled, JobContext  # noqa: E402
from napari_dlbio.metrics import psnr  # noqa: E402
from napari_dlbio.store import ModelError  # noqa: E402

BE = get("n2v")
# A tiny, fast configuration: the tests check behaviour, the benchmark checks quality.
FAST = dict(patch_size=32, batch_size=8, base_filters=16, learning_rate=2e-3, masked_percent=2.0)


def _noisy_pair(shape=(128, 128), seed=0):
    """Smooth blobs (clean) and the same with Poisson-Gaussian noise."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    clean = np.zeros(shape, np.float32)
    for _ in range(12):
        c = [rng.integers(8, s - 8) for s in shape]
        clean[tuple(c)] = 1.0
    clean = ndi.gaussian_filter(clean, 5)
    clean = 20 + 200 * clean / clean.max()
    noisy = (rng.poisson(clean * 0.25) / 0.25 + rng.normal(0, 4, shape)).astype(np.float32)
    return clean.astype(np.float32), noisy


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small N2V model trained on a noisy 128x128 image, saved in a model folder."""
    clean, noisy = _noisy_pair()
    reports = []
    cwd = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        out = tasks.train(
            "n2v", data.from_arrays(noisy, None, "YX", 2, name="blobs"),
            BE.Settings(epochs=6, steps_per_epoch=10, val_fraction=0.3, **FAST),
            tmp_path_factory.mktemp("models") / "n2v-blobs", JobContext(reports.append),
        )
    finally:
        os.chdir(old)
    return {"clean": clean, "noisy": noisy, "out": out, "reports": reports, "cwd": cwd}


def test_training_reports_losses_and_denoises(trained):
    out, clean, noisy = trained["out"], trained["clean"], trained["noisy"]
    hist = out.fit.history
    assert [h["epoch"] for h in hist] == list(range(1, 7))
    assert all("val_loss" in h for h in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert out.fit.best_epoch == 6 and out.fit.stopped == "completed"
    # The GUI's loss plot reads epoch reports with train_loss/val_loss; batches report loss.
    epochs = [r.metrics for r in trained["reports"] if "epoch" in r.metrics]
    assert [int(m["epoch"]) for m in epochs] == list(range(1, 7))
    assert all("train_loss" in m and "val_loss" in m for m in epochs)
    assert sum("loss" in r.metrics for r in trained["reports"]) >= 50
    before = noisy.copy()
    pred = tasks.predict(out.model, noisy)
    img = pred.outputs["image"]
    assert img.shape == noisy.shape and img.dtype == np.float32
    np.testing.assert_array_equal(noisy, before)  # input untouched
    # Intensity units of the input, and clearly less noise than the input.
    assert abs(float(img.mean()) - float(clean.mean())) < 10
    assert psnr(clean, img) > psnr(clean, noisy) + 4


def test_careamics_writes_nothing_in_the_current_folder(trained):
    assert list(trained["cwd"].iterdir()) == []
    files = sorted(p.name for p in trained["out"].path.iterdir())
    assert files == ["careamics.yaml", "model.json", "n2v.ckpt"]


def test_evaluate_reports_self_supervised_loss_not_psnr(trained):
    m = trained["out"].metrics
    assert m["n_val"] == 1 and m["n2v_val_loss"] > 0
    assert "psnr" not in m


def test_tiled_and_untiled_agree_and_tta_helps(trained):
    model, clean, noisy = trained["out"].model, trained["clean"], trained["noisy"]
    whole = model.predict(noisy[None], BE.Predict(), JobContext())["image"][0]
    reports = []
    tiled = model.predict(noisy[None], BE.Predict(tile_size=64, tile_overlap=32), JobContext(reports.append))
    tiled = tiled["image"][0]
    assert len(reports) >= 2  # progress per tile
    assert np.abs(tiled - whole).mean() < 0.01 * np.ptp(whole)
    plain = model.predict(noisy[None], BE.Predict(tta=False), JobContext())["image"][0]
    assert psnr(clean, whole) > psnr(clean, plain)


def test_save_load_and_continue_training(trained):
    out, noisy = trained["out"], trained["noisy"]
    loaded = tasks.load_model(out.path)
    assert loaded.info.name == "n2v-blobs" and loaded.ndim == 2 and loaded.n_channels == 1
    a = tasks.predict(out.model, noisy, settings=BE.Predict(tta=False)).outputs["image"]
    b = tasks.predict(loaded, noisy, settings=BE.Predict(tta=False)).outputs["image"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    more = tasks.train(
        "n2v", data.from_arrays(noisy, None, "YX", 2), BE.Settings(epochs=1, steps_per_epoch=3, **FAST),
        out.path.parent / "n2v-more", start_from=out.path,
    )
    assert more.model.info.provenance["fine_tuned_from"]["name"] == "n2v-blobs"
    # The loaded model's architecture and intensity statistics are kept.
    assert more.model.settings.base_filters == 16
    assert more.model.config.data_config.normalization == loaded.config.data_config.normalization


def test_bioimageio_export_round_trip(trained, tmp_path):
    from napari_dlbio.backends.n2v import export_bioimageio

    model, noisy = trained["out"].model, trained["noisy"]
    zip_path = export_bioimageio(model, tmp_path / "blobs-n2v.zip", example=noisy[None, :64, :64])
    assert zip_path.is_file() and zip_path.suffix == ".zip"
    back = tasks.load_model(zip_path, backend="n2v")
    assert back.ndim == 2 and back.n_channels == 1 and back.settings.algorithm == "n2v2"
    # The per-image normalisation, stated in the zip's description, comes back too.
    assert back.settings.normalization == model.settings.normalization
    a = model.predict(noisy[None], BE.Predict(tta=False), JobContext())["image"]
    b = back.predict(noisy[None], BE.Predict(tta=False), JobContext())["image"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_time_lapse_goes_frame_by_frame(trained):
    model = trained["out"].model
    stack = np.stack([trained["noisy"][:64, :64], trained["noisy"][64:, 64:], trained["noisy"][:64, 64:]])
    reports = []
    pred = tasks.predict(model, stack, axes="TYX", settings=BE.Predict(tta=False), ctx=JobContext(reports.append))
    assert pred.outputs["image"].shape == stack.shape and pred.axes["image"] == "TYX"
    assert pred.n_items == 3 and any(r.message == "3/3 slices" for r in reports)
    single = tasks.predict(model, stack[1], settings=BE.Predict(tta=False)).outputs["image"]
    np.testing.assert_allclose(pred.outputs["image"][1], single, rtol=1e-5, atol=1e-4)


def test_3d_and_two_channels(tmp_path):
    rng = np.random.default_rng(1)
    vol = rng.normal(100, 10, (16, 32, 32)).astype(np.float32)
    s3 = BE.Settings(epochs=1, steps_per_epoch=2, patch_size=16, patch_size_z=8, batch_size=2, base_filters=8,
                     val_fraction=0)
    out = tasks.train("n2v", data.from_arrays(vol, None, "ZYX", 3), s3, None)
    assert out.model.ndim == 3 and out.fit.best_epoch == 1
    pred = tasks.predict(out.model, np.stack([vol, vol]), axes="TZYX", settings=BE.Predict(tta=False))
    assert pred.outputs["image"].shape == (2, 16, 32, 32)

    two = rng.normal(50, 5, (2, 48, 48)).astype(np.float32)
    s2 = BE.Settings(epochs=1, steps_per_epoch=2, patch_size=16, batch_size=2, base_filters=8, val_fraction=0)
    out2 = tasks.train("n2v", data.from_arrays(two, None, "CYX", 2), s2, None)
    assert out2.model.n_channels == 2
    pred2 = tasks.predict(out2.model, two, axes="CYX").outputs["image"]
    assert pred2.shape == (2, 48, 48)
    # Each channel stays in its own intensity range.
    assert abs(pred2.mean() - 50) < 10


def test_cancel_and_time_budget():
    _, noisy = _noisy_pair((96, 96), seed=3)
    td = data.from_arrays(noisy, None, "YX", 2)

    # Cancel during the first epoch: nothing finished, so nothing is saved.
    ctx = JobContext()
    ctx._on_progress = lambda p: ctx.cancel() if "loss" in p.metrics else None
    t = time.monotonic()
    with pytest.raises(Cancelled):
        tasks.train("n2v", td, BE.Settings(epochs=50, steps_per_epoch=20, **FAST), "never-saved", ctx)
    assert time.monotonic() - t < 60
    with pytest.raises(ModelError):
        tasks.load_model("never-saved")

    # Cancel after the first epoch: the last weights are kept and saved.
    ctx = JobContext()
    steps = []

    def on(p):
        if "loss" in p.metrics:
            steps.append(p)
        if "epoch" in p.metrics:
            ctx.cancel()

    ctx._on_progress = on
    out = tasks.train("n2v", td, BE.Settings(epochs=50, steps_per_epoch=5, val_fraction=0, **FAST), "cut", ctx)
    assert out.fit.stopped == "cancelled" and out.fit.best_epoch == 1 and len(steps) <= 6
    assert tasks.load_model("cut").info.metrics["training"]["stopped"] == "cancelled"

    # A time budget stops training and keeps the model.
    out = tasks.train("n2v", td, BE.Settings(epochs=1000, steps_per_epoch=5, minutes=0.1, val_fraction=0, **FAST), None)
    assert out.fit.stopped == "time budget" and 1 <= out.fit.epochs < 1000


def test_settings_and_errors(tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        BE.Settings(patch_size=48)
    with pytest.raises(ValueError):
        BE.Settings(algorithm="care2")
    assert BE.Settings().algorithm == "n2v2" and BE.Predict().tta is True
    for name, field in BE.Settings.model_fields.items():
        assert field.description, name
    assert BE.layer_suffix == "n2v" and BE.output == "image"
    t = time.monotonic()
    with pytest.raises(ModelError, match="offline"):
        BE.pretrained("affable-shark")
    assert time.monotonic() - t < 2
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        BE.pretrained(str(bad))
    # An untrained model has no intensity statistics yet.
    with pytest.raises(ModelError, match="not been trained"):
        BE.new(BE.Settings(), 1, 2).predict(np.zeros((1, 32, 32), np.float32), BE.Predict(), JobContext())
    with pytest.raises(ValueError, match="too small"):
        tasks.train("n2v", data.from_arrays(np.random.rand(12, 12).astype(np.float32), None, "YX", 2),
                    BE.Settings(**FAST), None)


def test_evaluate_scores_the_model_against_a_clean_reference(trained):
    """The Evaluate core with a restoration model: PSNR/SSIM per item, as computed by hand."""
    from napari_dlbio import comparison, metrics
    from napari_dlbio.comparison import Candidate

    clean, noisy = trained["clean"], trained["noisy"]
    truth = comparison.truth_from_reference(clean, noisy, name="clean")
    result = comparison.compare(truth, [Candidate.of_model(trained["out"].path),
                                        Candidate.of_labels("noisy", noisy)])
    assert result.kind == "image" and [c.name for c in result.ranked("PSNR")][0] != "noisy"
    den = tasks.predict(tasks.load_model(trained["out"].path), noisy).outputs["image"]
    row = result.get(trained["out"].path.name).items[0].row()
    rng = float(np.ptp(clean))
    assert row["PSNR"] == pytest.approx(metrics.psnr(clean, den, rng), abs=1e-4)
    assert row["SSIM"] == pytest.approx(metrics.ssim(clean, den, rng), abs=1e-4)
    assert row["PSNR"] > result.get("noisy").items[0].row()["PSNR"]
