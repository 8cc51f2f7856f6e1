"""U-Net backend: targets, post-processing, network, training and prediction (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_dlbio import store  # noqa: E402
from napari_dlbio.blocks import unet_radius  # noqa: E402
from napari_dlbio.backends import get  # noqa: E402
from napari_dlbio.data import Sample  # noqa: E402
from napari_dlbio.jobs import JobContext  # noqa: E402
from napari_dlbio.metrics import class_iou, match  # noqa: E402
from napari_dlbio.samples import nuclei_2d, nuclei_3d  # noqa: E402

BE = get("unet")
# Tiny and quick: enough to learn the synthetic nuclei in a few seconds on 2 cores.
TINY = dict(depth=2, base_width=8, patch_size=64, batch_size=4, learning_rate=5e-3,
            steps_per_epoch=10, val_patches=4, mixed_precision=False)


def _samples(n, shape=(96, 96), seed=0, **kw):
    out = []
    for i in range(n):
        img, lab = nuclei_2d(shape, seed=seed + i, radius=(5.0, 9.0), **kw)
        out.append(Sample(img[None], lab, None, f"synthetic-{seed + i}"))
    return out


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = BE.new(BE.Settings(**TINY, epochs=14), 1, 2)
    fit = model.train(_samples(4), _samples(2, (128, 128), seed=50), model.settings, JobContext())
    return model, fit


# -- targets and post-processing ---------------------------------------------------
def test_instance_classes_mark_boundaries_between_touching_objects():
    from napari_dlbio.backends.unet.targets import instance_classes

    lab = np.zeros((20, 30), np.int32)
    lab[5:15, 5:15] = 1
    lab[5:15, 15:25] = 2
    y = instance_classes(lab, width=1)
    assert y.dtype == np.int8 and set(np.unique(y)) == {0, 1, 2}
    assert (y[lab == 0] == 0).all()
    assert (y[10, 14:16] == 2).all()  # the shared edge is boundary on both sides
    assert y[10, 10] == 1 and y[10, 20] == 1
    assert (instance_classes(lab, width=0) == (lab > 0)).all()


def test_watershed_separates_touching_objects_and_drops_small_ones():
    from napari_dlbio.backends.unet.targets import instance_classes, instances_from_probabilities

    lab = np.zeros((40, 60), np.int32)
    lab[10:30, 5:25] = 1
    lab[10:30, 25:45] = 2
    lab[2:4, 55:57] = 3  # 4 pixels: below min_size
    y = instance_classes(lab, 1)
    prob = np.stack([(y == c).astype(np.float32) for c in range(3)])
    out = instances_from_probabilities(prob, min_size=10)
    assert out.dtype == np.int32
    m = match(np.where(lab == 3, 0, lab), out)
    assert m.ap == 1.0 and m.n_pred == 2


def test_network_keeps_any_input_size():
    from napari_dlbio.backends.unet.net import UNet

    net2 = UNet(2, 2, 3, depth=3, base_width=4).eval()
    assert net2(torch.zeros(1, 2, 37, 50)).shape == (1, 3, 37, 50)
    net3 = UNet(3, 1, 4, depth=2, base_width=4, dropout=0.2).eval()
    assert net3(torch.zeros(2, 1, 7, 20, 18)).shape == (2, 4, 7, 20, 18)


def test_settings_validate_and_describe_every_field():
    with pytest.raises(ValueError, match="multiple of 2\\*\\*depth"):
        BE.Settings(depth=4, patch_size=40)
    s = BE.Settings(mode="semantic", labels_zero="unannotated")
    assert s.scribbles and not BE.Settings().scribbles
    for cls in (BE.Settings, BE.Predict):
        missing = [n for n, f in cls.model_fields.items() if n != "version" and not f.description]
        assert not [m for m in missing if m not in ("epochs", "minutes", "steps_per_epoch", "batch_size",
                                                     "learning_rate", "val_fraction", "seed", "device",
                                                     "tile_size", "tile_overlap")]


# -- training and prediction --------------------------------------------------------
def test_instance_training_lowers_loss_and_segments_nuclei(trained):
    model, fit = trained
    losses = [h["train_loss"] for h in fit.history]
    assert losses[-1] < 0.6 * losses[0]
    assert fit.best_epoch >= 1 and "val_loss" in fit.history[0]
    # Watershed thresholds were tuned on the validation images and stored with the model.
    tuned = fit.metrics["thresholds"]
    assert tuned["tuned_ap50"] >= 0.7
    assert (model.settings.foreground_threshold, model.settings.seed_threshold) == (
        tuned["foreground_threshold"], tuned["seed_threshold"])
    img, lab = nuclei_2d((128, 128), seed=99, radius=(5.0, 9.0))
    out = model.predict(img[None], BE.Predict(probabilities=True), JobContext())
    assert out["labels"].dtype == np.int32 and out["labels"].shape == lab.shape
    assert out["probability"].dtype == np.float32 and out["probability"].shape == (3, 128, 128)
    np.testing.assert_allclose(out["probability"].sum(0), 1.0, atol=1e-4)
    assert match(lab, out["labels"]).ap >= 0.7
    assert "probability" not in model.predict(img[None], BE.Predict(), JobContext())


def test_tiled_and_untiled_prediction_agree(trained):
    model, _ = trained
    img, _ = nuclei_2d((200, 180), seed=7, radius=(5.0, 9.0))
    whole = model.predict(img[None], BE.Predict(probabilities=True), JobContext())
    tiled = model.predict(img[None], BE.Predict(probabilities=True, tile_size=96, tile_overlap=32, batch_size=3),
                          JobContext())
    diff = np.abs(whole["probability"] - tiled["probability"])
    assert diff.mean() < 0.01
    assert match(whole["labels"], tiled["labels"]).ap >= 0.9
    # Tiles of at least 4 receptive radii overlap by two radii and keep only outputs that saw
    # no padding: then tiled equals whole up to float rounding.
    big = 4 * unet_radius(model.settings.depth) // 8 * 8 + 8
    exact = model.predict(img[None], BE.Predict(probabilities=True, tile_size=big), JobContext())
    assert np.abs(whole["probability"] - exact["probability"]).max() < 1e-4
    assert np.array_equal(whole["labels"], exact["labels"])


def test_save_load_round_trip_gives_identical_output(trained, tmp_path):
    model, _ = trained
    img, _ = nuclei_2d((96, 96), seed=3, radius=(5.0, 9.0))
    before = model.predict(img[None], BE.Predict(probabilities=True), JobContext())
    info = store.ModelInfo(path=tmp_path, name="m", backend="unet",
                           settings=model.settings.model_dump(mode="json"), ndim=2, n_channels=1)
    path = store.save(info, model.save_weights, tmp_path / "m")
    again = BE.load(store.read_info(path))
    after = again.predict(img[None], BE.Predict(probabilities=True), JobContext())
    np.testing.assert_array_equal(before["labels"], after["labels"])
    np.testing.assert_allclose(before["probability"], after["probability"], atol=1e-6)
    assert again.settings == model.settings


def test_corrupt_or_missing_weights_are_clear_errors(trained, tmp_path):
    model, _ = trained
    info = store.ModelInfo(path=tmp_path, name="m", backend="unet",
                           settings=model.settings.model_dump(mode="json"), ndim=2, n_channels=1)
    path = store.save(info, model.save_weights, tmp_path / "m")
    (path / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(store.ModelError, match="corrupt"):
        BE.load(store.read_info(path))
    (path / "weights.pt").unlink()
    with pytest.raises(store.ModelError, match="no weights.pt"):
        BE.load(store.read_info(path))
    wrong = store.read_info(path)
    wrong.settings = {**wrong.settings, "base_width": 12}
    torch.save(model.net.state_dict(), path / "weights.pt")
    with pytest.raises(store.ModelError, match="does not match"):
        BE.load(wrong)


def test_pretrained_names_are_refused_clearly():
    with pytest.raises(store.ModelError, match="no pretrained U-Net"):
        BE.pretrained("nuclei")


def test_bad_input_is_refused_with_the_problem_named(trained):
    model, _ = trained
    img = np.ones((1, 64, 64), np.float32)
    img[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(img, BE.Predict(), JobContext())
    with pytest.raises(ValueError, match="channel"):
        model.predict(np.ones((2, 64, 64), np.float32), BE.Predict(), JobContext())
    bad = Sample(np.ones((1, 64, 64), np.float32), np.ones((60, 64), np.int32))
    with pytest.raises(ValueError, match="labels shape"):
        BE.new(BE.Settings(**TINY), 1, 2).train([bad], [], BE.Settings(**TINY), JobContext())
    nan = Sample(img, np.ones((64, 64), np.int32))
    with pytest.raises(ValueError, match="NaN"):
        BE.new(BE.Settings(**TINY), 1, 2).train([nan], [], BE.Settings(**TINY), JobContext())


def _two_class_scene(seed):
    """Dim discs are class 1, bright discs class 2, the rest background (0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    lab = np.zeros((96, 96), np.int32)
    img = np.zeros((96, 96), np.float32)
    for _ in range(10):
        cy, cx, r = rng.integers(8, 88), rng.integers(8, 88), rng.integers(4, 8)
        k = int(rng.integers(1, 3))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        lab[disc], img[disc] = k, (0.4 if k == 1 else 1.0)
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    return img[None], lab


def _scribble(lab, rng):
    """Keep a few pixels of each class, 0 elsewhere (= not annotated); classes shift to 1..3."""
    out = np.zeros_like(lab)
    for c in range(3):
        idx = np.flatnonzero(lab == c)
        pick = rng.choice(idx, min(len(idx), 150), replace=False)
        out.flat[pick] = c + 1
    return out


@pytest.mark.parametrize("zero", ["background", "unannotated"])
def test_semantic_modes_learn_classes(zero):
    rng = np.random.default_rng(0)
    scenes = [_two_class_scene(s) for s in range(4)]
    if zero == "unannotated":
        train = [Sample(x, _scribble(y, rng), None, "s") for x, y in scenes]
    else:
        train = [Sample(x, y, None, "s") for x, y in scenes]
    s = BE.Settings(**{**TINY, "epochs": 10}, mode="semantic", labels_zero=zero)
    model = BE.new(s, 1, 2)
    model.train(train, [], s, JobContext())
    assert model.semantic
    assert model.n_classes == (4 if zero == "unannotated" else 3)
    x, y = _two_class_scene(123)
    pred = model.predict(x, BE.Predict(probabilities=True), JobContext())
    labels = pred["labels"]
    if zero == "unannotated":
        assert labels.min() >= 1 and pred["probability"].shape == (3, 96, 96)
        iou = class_iou(y + 1, labels, 4, ignore=0)[1:]
    else:
        iou = class_iou(y, labels, 3)
    assert min(iou) > 0.6, iou


def test_3d_model_trains_and_predicts_volumes():
    vols = [nuclei_3d((12, 48, 48), seed=i, radius=(4.0, 7.0)) for i in range(2)]
    # mixed_precision is on by default; on CPU it must leave 3D in float32 (bf16 Conv3d gave NaNs).
    s = BE.Settings(**{**TINY, "epochs": 2, "steps_per_epoch": 4, "batch_size": 2, "mixed_precision": True},
                    patch_size_z=8)
    model = BE.new(s, 1, 3)
    fit = model.train([Sample(v[None], lab) for v, lab in vols], [], s, JobContext())
    assert fit.epochs == 2 and model.ndim == 3
    out = model.predict(vols[0][0][None], BE.Predict(probabilities=True), JobContext())
    assert out["labels"].shape == (12, 48, 48) and out["labels"].dtype == np.int32
    assert out["probability"].shape == (3, 12, 48, 48)
    with pytest.raises(ValueError, match="3D U-Net"):
        model.predict(np.zeros((1, 48, 48), np.float32), BE.Predict(), JobContext())


def test_loss_ignores_pixels_outside_the_mask():
    """Labels outside the valid mask must not matter: flipping them there changes nothing."""
    img, lab = nuclei_2d((64, 64), seed=1, radius=(5.0, 9.0))
    fg = (lab > 0).astype(np.int32)
    mask = np.zeros(lab.shape, bool)
    mask[:, :32] = True
    flipped = np.where(mask, fg, 1 - fg)
    results = []
    for target in (fg, flipped):
        torch.manual_seed(0)
        s = BE.Settings(**{**TINY, "epochs": 1, "steps_per_epoch": 3}, mode="semantic", foreground_patches=0.0)
        model = BE.new(s, 1, 2)
        fit = model.train([Sample(img[None], target, mask)], [], s, JobContext())
        results.append(fit.history[0]["train_loss"])
    assert results[0] == pytest.approx(results[1], rel=1e-5)
