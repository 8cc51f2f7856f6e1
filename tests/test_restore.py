"""Supervised restoration in the n2v backend: CARE and Noise2Noise, trained on image pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

pytest.importorskip("careamics")

from napari_dlbio import cli, data, pairs, tasks  # noqa: E402
from napari_dlbio._layers import LayerSnapshot  # noqa: E402
from napari_dlbio.backends import get  # noqa: E402
from napari_dlbio.jobs import JobContext  # noqa: E402
from napari_dlbio.metrics import psnr  # noqa: E402
from napari_dlbio.requests import PredictRequest, TrainRequest  # noqa: E402

BE = get("n2v")
FAST = dict(patch_size=32, batch_size=8, base_filters=16, learning_rate=5e-3)


def _clean(shape=(128, 128), seed=0):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    clean = np.zeros(shape, np.float32)
    for _ in range(12 * (1 if len(shape) == 2 else 3)):
        clean[tuple(rng.integers(min(8, s // 4), s - min(8, s // 4)) for s in shape)] = 1.0
    clean = ndi.gaussian_filter(clean, 5 if len(shape) == 2 else 3)
    return (20 + 200 * clean / clean.max()).astype(np.float32)


def _noisy(clean, seed):
    rng = np.random.default_rng(seed)
    return (rng.poisson(clean * 0.25) / 0.25 + rng.normal(0, 4, clean.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def care(tmp_path_factory):
    """CARE trained 160 steps on one noisy -> clean pair, saved in a model folder."""
    clean = _clean()
    noisy = _noisy(clean, 1)
    reports = []
    out = tasks.train("n2v", pairs.from_pairs(noisy, clean, "YX", 2, name="blobs", target_name="clean"),
                      BE.Settings(algorithm="care", epochs=16, steps_per_epoch=10, val_fraction=0.3, **FAST),
                      tmp_path_factory.mktemp("models") / "care-blobs", JobContext(reports.append))
    return {"out": out, "reports": reports}


def test_care_improves_psnr_and_saves_its_validation_scores(care):
    out = care["out"]
    clean = _clean(seed=5)
    noisy = _noisy(clean, 6)  # an image the model has not seen
    pred = tasks.predict(out.model, noisy, "YX", BE.Predict(tta=False))
    den = pred.outputs["image"]
    assert den.dtype == np.float32 and den.shape == noisy.shape
    assert psnr(clean, den) > psnr(clean, noisy) + 6, (psnr(clean, den), psnr(clean, noisy))
    assert out.model.settings.algorithm == "care" and out.model.layer_suffix == "care"
    m = out.metrics
    assert m["n_val"] == 1 and m["pair_val_loss"] > 0 and m["psnr"] > psnr(clean, noisy)
    hist = out.fit.history
    assert len(hist) == 16 and all("val_loss" in h for h in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert any(r.kind == "epoch" for r in care["reports"])


def test_care_reloads_and_predicts_identically(care):
    out = care["out"]
    noisy = _noisy(_clean(seed=5), 6)
    loaded = tasks.load_model(out.path)
    assert loaded.settings.algorithm == "care" and loaded.config.algorithm_config.algorithm == "care"
    a = tasks.predict(out.model, noisy, "YX", BE.Predict(tta=False)).outputs["image"]
    b = tasks.predict(loaded, noisy, "YX", BE.Predict(tta=False)).outputs["image"]
    assert float(np.abs(a - b).max()) < 1e-5
    # Fine-tuning keeps the algorithm and still needs pairs.
    clean = _clean(seed=7)
    more = tasks.train("n2v", pairs.from_pairs(_noisy(clean, 8), clean, "YX", 2),
                       BE.Settings(algorithm="n2v2", epochs=1, steps_per_epoch=2, val_fraction=0, **FAST),
                       None, start_from=out.path)
    assert more.model.settings.algorithm == "care" and more.fit.epochs == 1


def test_noise2noise_through_requests_names_its_layer(tmp_path):
    clean = _clean()
    first, second = _noisy(clean, 1), _noisy(clean, 2)
    req = TrainRequest("n2v", LayerSnapshot.from_array("blobs", first), None,
                       BE.Settings(algorithm="n2n", epochs=10, steps_per_epoch=10, val_fraction=0, **FAST),
                       "n2n-blobs", target=LayerSnapshot.from_array("blobs second", second))
    summary = req.run(JobContext())
    assert summary.path is not None and summary.backend == "n2v" and len(summary.history) == 10
    snap = LayerSnapshot("blobs", first, "YX", (0.5, 0.5), (3.0, 4.0))
    preq = PredictRequest(summary.source, [snap], BE.Predict(tta=False))
    done = [ev for ev in preq.run(JobContext()) if type(ev).__name__ == "ImageDone"]
    ((data, meta, kind),) = preq.layers(done[0])
    assert (meta["name"], kind, data.dtype, data.shape) == ("blobs_n2n", "image", np.float32, first.shape)
    assert meta["scale"] == [0.5, 0.5] and meta["translate"] == [3.0, 4.0]
    assert psnr(clean, data) > psnr(clean, first) + 4


def test_old_n2v_model_still_loads(tmp_path):
    """A model saved before CARE/N2N (settings version 1) loads, predicts and keeps its name."""
    noisy = _noisy(_clean(), 1)
    out = tasks.train("n2v", data.from_arrays(noisy, None, "YX", 2), BE.Settings(
        algorithm="n2v", epochs=1, steps_per_epoch=2, val_fraction=0, **FAST), tmp_path / "old")
    meta_file = out.path / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["settings"]["version"] = 1
    meta_file.write_text(json.dumps(meta))
    loaded = tasks.load_model(out.path)
    assert loaded.settings.algorithm == "n2v" and loaded.layer_suffix == "n2v"
    assert not loaded.settings.needs_targets()
    den = tasks.predict(loaded, noisy, "YX", BE.Predict(tta=False)).outputs["image"]
    assert den.dtype == np.float32 and den.shape == noisy.shape


def test_3d_two_channels_and_time_lapse_pairs():
    clean = _clean((16, 64, 64))
    two = np.stack([clean, clean[:, ::-1]], 0)  # CZYX
    out = tasks.train("n2v", pairs.from_pairs(_noisy(two, 1), two, "CZYX", 3),
                      BE.Settings(algorithm="care", epochs=1, steps_per_epoch=2, patch_size=16, patch_size_z=8,
                                  batch_size=2, base_filters=8, depth=2, val_fraction=0), None)
    assert out.model.ndim == 3 and out.model.n_channels == 2
    den = tasks.predict(out.model, _noisy(two, 2), "CZYX", BE.Predict(tta=False)).outputs["image"]
    assert den.shape == two.shape and den.dtype == np.float32
    lapse = pairs.from_pairs(_noisy(clean[:3], 3), clean[:3], "TYX", 2, name="movie")
    assert len(lapse) == 3 and lapse.samples[1].source == "movie[t=1]"
    assert lapse.samples[1].target_image.shape == (1, 64, 64)


def test_bad_pairs_get_one_clear_message(tmp_path):
    clean = _clean((64, 64))
    with pytest.raises(ValueError, match=r"target 'clean' has shape \(64, 32\) but image 'noisy' has \(64, 64\)"):
        pairs.from_pairs(clean, clean[:, :32], "YX", name="noisy", target_name="clean")
    with pytest.raises(ValueError, match="'masks' is a labels layer"):
        pairs.check_target_layer("labels", "masks")
    snap = LayerSnapshot.from_array("noisy", clean)
    with pytest.raises(ValueError, match="choose a target image layer: CARE learns"):
        TrainRequest("n2v", snap, None, BE.Settings(algorithm="care"), "m")
    with pytest.raises(ValueError, match="has shape"):
        TrainRequest("n2v", snap, None, BE.Settings(algorithm="care"), "m",
                     target=LayerSnapshot.from_array("clean", clean[:32]))
    req = TrainRequest("n2v", snap, None, BE.Settings(algorithm="n2v2"), "m",
                       target=LayerSnapshot.from_array("clean", clean))
    assert req.target is None and "'clean' is ignored" in req.notes[0]
    with pytest.raises(ValueError, match="has no target image; care learns from pairs"):
        tasks.train("n2v", data.from_arrays(clean, None, "YX"), BE.Settings(algorithm="care", **FAST), None)


def _pair_folders(tmp_path, n=3, shape=(64, 64)):
    noisy_dir, clean_dir = tmp_path / "noisy", tmp_path / "clean"
    noisy_dir.mkdir()
    clean_dir.mkdir()
    for k in range(n):
        clean = _clean(shape, seed=k)
        tifffile.imwrite(noisy_dir / f"field_{k}.tif", _noisy(clean, 10 + k))
        tifffile.imwrite(clean_dir / f"field_{k}.tif", clean)
    return noisy_dir, clean_dir


def test_folders_name_missing_and_mismatched_targets(tmp_path):
    noisy_dir, clean_dir = _pair_folders(tmp_path)
    found = pairs.from_folders(noisy_dir, clean_dir)
    assert len(found) == 3 and found.provenance["folders"]["targets"] == str(clean_dir)
    (clean_dir / "field_1.tif").unlink()
    with pytest.raises(ValueError, match=r"1 of the 3 image\(s\) .* have no target .*: field_1.tif"):
        pairs.from_folders(noisy_dir, clean_dir)
    tifffile.imwrite(clean_dir / "field_1.tif", np.zeros((64, 48), np.float32))
    with pytest.raises(ValueError, match="field_1.tif' has shape"):
        pairs.from_folders(noisy_dir, clean_dir)


def _cli_error(capsys, argv):
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    last = err.splitlines()[-1]
    assert last.startswith("napari-dlbio: error: ") and "Traceback" not in err, err
    return last


CLI_FAST = ["--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4", "--patch-size", "32",
            "--base-filters", "8", "--depth", "2", "--device", "cpu", "-q"]


def test_cli_trains_care_and_predicts(tmp_path, capsys):
    noisy_dir, clean_dir = _pair_folders(tmp_path)
    rc = cli.main(["train", "--backend", "n2v", "--algorithm", "care", "--images", str(noisy_dir),
                   "--targets", str(clean_dir), "--out", "care-cli", *CLI_FAST])
    assert rc == 0, capsys.readouterr().err
    assert "loss on held-out pairs" in capsys.readouterr().out
    out_dir = tmp_path / "out"
    assert cli.main(["predict", "--model", "care-cli", str(noisy_dir / "field_0.tif"), "--out", str(out_dir),
                     "--no-tta", "-q"]) == 0
    res = tifffile.imread(out_dir / "field_0.tif")
    assert res.dtype == np.float32 and res.shape == (64, 64)
    model = tasks.load_model("care-cli")
    direct = tasks.predict(model, tifffile.imread(noisy_dir / "field_0.tif"), "YX", BE.Predict(tta=False))
    assert float(np.abs(direct.outputs["image"] - res).max()) < 1e-5


def test_cli_pair_errors_and_ignored_targets(tmp_path, capsys):
    noisy_dir, clean_dir = _pair_folders(tmp_path)
    base = ["train", "--backend", "n2v", "--images", str(noisy_dir), *CLI_FAST]
    msg = _cli_error(capsys, [*base, "--algorithm", "n2n", "--out", "a"])
    assert "--targets is required" in msg and "second, independent noisy acquisition" in msg
    (clean_dir / "field_2.tif").unlink()
    msg = _cli_error(capsys, [*base, "--algorithm", "care", "--targets", str(clean_dir), "--out", "b"])
    assert "have no target" in msg and "field_2.tif" in msg
    rc = cli.main([*base[:-1], "--algorithm", "n2v", "--targets", str(clean_dir), "--out", "c"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "--targets" in err and "is ignored" in err
