"""Cellpose backend, on a random micro Cellpose-SAM network (real cpsam weights are 1.2 GB
and cannot be downloaded here; its ViT-L costs ~40 s per tile on this CPU).

The micro network is Cellpose's own ``CPSAM`` class with a one-block, 32-dim SAM
encoder, saved in Cellpose's file format: everything but the encoder size is the
code path a real cpsam model takes.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("cellpose")

from napari_dlbio import data, tasks  # noqa: E402
from napari_dlbio.jobs import Cancelled, JobContext  # noqa: E402
from napari_dlbio.store import ModelError, read_info  # noqa: E402

# Float32 on the CPU: bfloat16 is exact only against a bfloat16 reference.
F32 = {"bfloat16": False, "device": "cpu"}
# A barely trained network predicts low cell probability; these make sure masks exist.
LOOSE = {"cellprob_threshold": -6.0, "flow_threshold": 0.0, "min_size": 3, **F32}


@pytest.fixture(scope="module")
def cp():
    from napari_dlbio.backends import cellpose as cpb

    return cpb


@pytest.fixture(scope="module")
def micro_file(cp, tmp_path_factory):
    return cp.write_random_model(tmp_path_factory.mktemp("cp") / "micro_cpsam", cp.MICRO, seed=0)


@pytest.fixture(scope="module")
def model(cp, micro_file):
    return cp.BACKEND.pretrained(str(micro_file))


def blobs(n: int, size: int = 64, seed: int = 0, radius=(5, 9)):
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    imgs, labs = [], []
    for _ in range(n):
        lab = np.zeros((size, size), np.int32)
        k = 0
        for _ in range(40):
            r = int(rng.integers(*radius))
            c = rng.integers(r, size - r, 2)
            rr, cc = disk((int(c[0]), int(c[1])), r, shape=lab.shape)
            if lab[rr, cc].any():
                continue
            k += 1
            lab[rr, cc] = k
        imgs.append(((lab > 0) * 100.0 + rng.normal(0, 8, lab.shape) + 20).astype(np.float32))
        labs.append(lab)
    return np.stack(imgs), np.stack(labs)


def cancel_when(condition) -> JobContext:
    """A context whose user presses Stop as soon as a progress report meets ``condition``."""
    box: list[JobContext] = []
    ctx = JobContext(lambda p: box[0].cancel() if condition(p) else None)
    box.append(ctx)
    return ctx


# -- prediction --------------------------------------------------------------------
def test_predict_timelapse_shapes_progress_and_input_untouched(cp, model):
    img, _ = blobs(3)
    before = img.copy()
    seen = []
    res = tasks.predict(model, img, "TYX", cp.Predict(return_flows=True, **LOOSE), JobContext(seen.append))
    assert res.outputs["labels"].shape == (3, 64, 64) and res.outputs["labels"].dtype == np.int32
    assert res.axes == {"labels": "TYX", "flows": "TCYX", "cellprob": "TYX"}
    assert res.outputs["flows"].shape == (3, 2, 64, 64) and res.outputs["flows"].dtype == np.float32
    assert res.outputs["cellprob"].shape == (3, 64, 64) and res.outputs["cellprob"].dtype == np.float32
    assert res.outputs["labels"].max() > 0
    # frames are labelled apart: ids of different frames never collide
    ids = [set(np.unique(f[f > 0])) for f in res.outputs["labels"]]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    frames = [p.message for p in seen if p.message.endswith("slices")]
    assert frames == ["1/3 slices", "2/3 slices", "3/3 slices"]
    np.testing.assert_array_equal(img, before)  # Cellpose normalises float32 in place: we pass a copy


def test_predict_equals_cellpose_eval(cp, model):
    img, _ = blobs(2, seed=3)
    s = cp.Predict(return_flows=True, **LOOSE)
    res = tasks.predict(model, img, "TYX", s)
    for t in range(2):
        masks, flows, _ = model.cellpose_model.eval(
            img[t].copy(), cellprob_threshold=-6.0, flow_threshold=0.0, min_size=3)
        np.testing.assert_array_equal(res.outputs["flows"][t], flows[1])
        np.testing.assert_array_equal(res.outputs["cellprob"][t], flows[2])
        # same objects (tasks.predict offsets the ids of later frames)
        ours = res.outputs["labels"][t]
        assert len(np.unique(ours)) == len(np.unique(masks))
        np.testing.assert_array_equal(ours > 0, masks > 0)


def test_bfloat16_matches_cellpose_and_keeps_float32_weights(cp, model, micro_file):
    """bfloat16 runs a cast copy: same output as Cellpose's use_bfloat16=True, master weights untouched."""
    from cellpose import models

    from napari_dlbio.backends.cellpose.net import MICRO, encoder_of

    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    img, _ = blobs(1, seed=4)
    loose = {**LOOSE, "bfloat16": True}
    res = tasks.predict(model, img[0], "YX", cp.Predict(return_flows=True, **loose))
    with encoder_of(MICRO):
        plain = models.CellposeModel(gpu=False, pretrained_model=str(micro_file), use_bfloat16=True)
    masks, flows, _ = plain.eval(img[0].copy(), cellprob_threshold=-6.0, flow_threshold=0.0, min_size=3)
    np.testing.assert_array_equal(res.outputs["flows"], flows[1])
    np.testing.assert_array_equal(res.outputs["labels"], masks)
    for k, v in model.net.state_dict().items():
        assert v.dtype == before[k].dtype and bool((v == before[k]).all()), k


def test_multichannel_and_channel_choice(cp, model):
    img, _ = blobs(1)
    two = np.stack([img[0], img[0] * 0.5])
    res = tasks.predict(model, two, "CYX", cp.Predict(**F32))
    assert res.outputs["labels"].shape == (64, 64)
    four = np.stack([img[0]] * 4)
    with pytest.raises(ValueError, match="choose the channels"):
        tasks.predict(model, four, "CYX", cp.Predict(**F32))
    res = tasks.predict(model, four, "CYX", cp.Predict(**F32), channels=(0, 2))
    assert res.outputs["labels"].shape == (64, 64)
    with pytest.raises(ValueError, match="one to three channels"):
        model.predict(four, cp.Predict(**F32), JobContext())
    # RGB as napari gives it (YXC)
    rgb = np.stack([img[0]] * 3, axis=-1)
    res = tasks.predict(model, rgb, "YXC", cp.Predict(**F32))
    assert res.outputs["labels"].shape == (64, 64)


def test_stitching_matches_cellpose_and_reports_slices(cp, model):
    img, _ = blobs(1, seed=5)
    vol = np.stack([img[0], img[0] + 3, img[0] + 6])
    seen = []
    res = tasks.predict(model, vol, "ZYX", cp.Predict(stitch_threshold=0.2, return_flows=True, **LOOSE),
                        JobContext(seen.append))
    assert res.outputs["labels"].shape == (3, 64, 64)
    assert res.axes["labels"] == "ZYX" and res.axes["flows"] == "CZYX"
    masks, flows, _ = model.cellpose_model.eval(
        vol.copy(), z_axis=0, stitch_threshold=0.2, cellprob_threshold=-6.0, flow_threshold=0.0, min_size=3)
    assert masks.max() > 0
    np.testing.assert_array_equal(res.outputs["labels"], masks)
    # Flows agree to float32 rounding (oneDNN may sum in another order between calls).
    np.testing.assert_allclose(res.outputs["flows"], flows[1], rtol=1e-5, atol=1e-5)
    slices = [p.message for p in seen if p.message.startswith("slice")]
    assert slices == ["slice 1/3", "slice 2/3", "slice 3/3"]


def test_do_3d_volume(cp, model):
    img, _ = blobs(1, size=24, radius=(3, 5))
    vol = np.stack([img[0], img[0]])
    res = tasks.predict(model, vol, "ZYX", cp.Predict(do_3D=True, return_flows=True, **LOOSE))
    assert res.outputs["labels"].shape == (2, 24, 24) and res.outputs["labels"].dtype == np.int32
    assert res.outputs["flows"].shape == (3, 2, 24, 24)  # Z, Y and X flows


def test_cancel_between_frames(cp, model):
    img, _ = blobs(3)
    ctx = cancel_when(lambda p: p.message == "1/3 slices")
    res = tasks.predict(model, img, "TYX", cp.Predict(**F32), ctx)
    assert res.cancelled and res.n_items == 1


def test_cancel_between_stitched_slices(cp, model):
    img, _ = blobs(1)
    vol = np.stack([img[0]] * 3)
    ctx = cancel_when(lambda p: p.message == "slice 1/3")
    res = tasks.predict(model, vol, "ZYX", cp.Predict(stitch_threshold=0.3, **F32), ctx)
    assert res.cancelled and res.n_items == 0


def test_predict_settings_are_checked(cp):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not both"):
        cp.Predict(do_3D=True, stitch_threshold=0.3)
    with pytest.raises(ValidationError, match="256-px tiles"):
        cp.Predict(tile_size=128)
    assert cp.Predict().tile_overlap == 0.1 and cp.Predict().batch_size == 8


# -- finding models, offline -------------------------------------------------------
def test_offline_missing_cpsam_fails_fast_with_directions(cp, monkeypatch, tmp_path):
    from cellpose import models

    from napari_dlbio.backends.cellpose import locate

    monkeypatch.setattr(models, "MODEL_DIR", tmp_path / "cp-models")

    def no_download(*a, **k):
        raise AssertionError("the downloader must not be called offline")

    monkeypatch.setattr(models, "cache_model_path", no_download)
    monkeypatch.setattr(locate, "online", lambda timeout=locate.PROBE_SECONDS: False)
    t = time.monotonic()
    with pytest.raises(ModelError) as err:
        tasks.load_model("cpsam", "cellpose")
    assert time.monotonic() - t < 2
    msg = str(err.value)
    assert str(tmp_path / "cp-models" / "cpsam") in msg
    assert "CELLPOSE_LOCAL_MODELS_PATH" in msg and "--model" in msg and "huggingface" in msg


def test_online_probe_is_bounded(cp, monkeypatch):
    """A hanging connection (or name lookup) cannot stall loading: the probe gives up."""
    from napari_dlbio.backends.cellpose import locate

    def hang(*a, **k):
        time.sleep(5)
        raise OSError("too late")

    monkeypatch.setattr(locate.socket, "create_connection", hang)
    t = time.monotonic()
    assert locate.online(timeout=0.3) is False
    assert time.monotonic() - t < 1.5
    monkeypatch.setenv("NAPARI_DLBIO_OFFLINE", "1")
    assert locate.online() is False


def test_name_found_in_cellpose_models_folder(cp, micro_file, monkeypatch, tmp_path):
    import shutil

    from cellpose import models

    folder = tmp_path / "cp-models"
    folder.mkdir()
    shutil.copy(micro_file, folder / "cpsam")
    monkeypatch.setattr(models, "MODEL_DIR", folder)
    m = tasks.load_model("cpsam", "cellpose")
    assert m.name == "cpsam" and m.source == folder / "cpsam"


def test_bad_model_files(cp, tmp_path, monkeypatch):
    import torch
    from cellpose import models

    monkeypatch.setattr(models, "MODEL_DIR", tmp_path / "cp-models")
    with pytest.raises(ModelError, match="not found"):
        cp.BACKEND.pretrained(str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelError, match="no Cellpose model 'cyto9'"):
        cp.BACKEND.pretrained("cyto9")
    (tmp_path / "text").write_text("hello")
    with pytest.raises(ModelError, match="not a Cellpose model file"):
        cp.BACKEND.pretrained(str(tmp_path / "text"))
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "cp3")
    with pytest.raises(ModelError, match="Cellpose 3"):
        cp.BACKEND.pretrained(str(tmp_path / "cp3"))


# -- fine-tuning ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(cp, micro_file, tmp_path_factory):
    imgs, labs = blobs(5, seed=7)
    td = data.from_arrays(imgs, labs, "TYX", name="blobs", labels_name="blobs-labels")
    s = cp.Settings(start_model=str(micro_file), epochs=4, learning_rate=3e-3, batch_size=2,
                    val_fraction=0.2, device="cpu", min_train_masks=2)
    seen = []
    dest = tmp_path_factory.mktemp("store") / "cp-finetuned"
    out = tasks.train("cellpose", td, s, str(dest), JobContext(seen.append), start_from=str(micro_file))
    return out, seen, imgs


def test_finetune_learns_reports_and_saves(cp, trained):
    out, seen, _ = trained
    hist = out.fit.history
    assert len(hist) == 4 and all("val_loss" in h for h in hist)
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    epochs = [p for p in seen if "epoch" in p.metrics and "val_loss" in p.metrics]
    assert [int(p.metrics["epoch"]) for p in epochs] == [1, 2, 3, 4]
    assert (out.path / cp.WEIGHTS).is_file()
    info = read_info(out.path)
    assert info.backend == "cellpose" and info.n_channels == 1
    assert {"ap50", "f1"} <= set(info.metrics) and info.metrics["n_val"] == 1
    assert info.metrics["cellpose"]["train_images"] == 4
    assert info.provenance["fine_tuned_from"]["name"].endswith("micro_cpsam")
    assert info.settings["start_model"].endswith("micro_cpsam")
    assert out.model.net.device.type == "cpu"  # accelerator memory given back


def test_saved_file_loads_in_plain_cellpose_with_identical_output(cp, trained):
    """``CellposeModel(pretrained_model=file)`` reads the file we write.

    Cellpose always builds a ViT-L, so a micro network is loaded by Cellpose's own
    constructor with its encoder size swapped in (``encoder_of``); real cpsam
    fine-tunes are ViT-L and load as they are, with nothing swapped.
    """
    from cellpose import models

    from napari_dlbio.backends.cellpose.net import arch_of, encoder_of, read_state

    out, _, imgs = trained
    path = out.path / cp.WEIGHTS
    with encoder_of(arch_of(read_state(path))):
        plain = models.CellposeModel(gpu=False, pretrained_model=str(path), use_bfloat16=False)
    ours = tasks.load_model(out.path)  # through model.json, as the GUI and CLI do
    assert ours.info is not None and ours.info.name == "cp-finetuned"
    res = tasks.predict(ours, imgs[0], "YX", cp.Predict(return_flows=True, **LOOSE))
    masks, flows, _ = plain.eval(imgs[0].copy(), cellprob_threshold=-6.0, flow_threshold=0.0, min_size=3)
    np.testing.assert_array_equal(res.outputs["labels"], masks)
    np.testing.assert_array_equal(res.outputs["flows"], flows[1])
    # and the trained weights are the ones in memory
    for k, v in plain.net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), out.model.net.state_dict()[k].numpy())


def test_cancel_during_training_keeps_last_complete_epoch(cp, micro_file):
    imgs, labs = blobs(3, seed=11)
    td = data.from_arrays(imgs, labs, "TYX")
    s = cp.Settings(start_model=str(micro_file), epochs=50, steps_per_epoch=1, learning_rate=1e-3,
                    val_fraction=0.0, device="cpu", min_train_masks=1)
    ctx = cancel_when(lambda p: p.metrics.get("epoch") == 2)
    out = tasks.train("cellpose", td, s, None, ctx, start_from=str(micro_file))
    assert out.fit.stopped == "cancelled" and out.fit.epochs == 2 and out.fit.best_epoch >= 1


def test_training_refuses_bad_data(cp, micro_file):
    imgs, labs = blobs(2, seed=2)
    td = data.from_arrays(imgs, labs, "TYX")
    s = cp.Settings(start_model=str(micro_file), epochs=1, device="cpu", min_train_masks=500,
                    val_fraction=0.0)
    with pytest.raises(ValueError, match="min_train_masks"):
        tasks.train("cellpose", td, s, None)
    td3 = data.from_arrays(imgs, labs, "ZYX", ndim=3)
    with pytest.raises(ValueError, match="2D"):
        tasks.train("cellpose", td3, s, None)
    with pytest.raises(Cancelled):
        ctx = JobContext()
        ctx.cancel()
        tasks.train("cellpose", td, s.model_copy(update={"min_train_masks": 1}), None, ctx)


def test_training_region_is_cropped_and_user_labels_untouched(cp):
    from napari_dlbio.backends.cellpose.finetune import prepare
    from napari_dlbio.data import Sample

    imgs, labs = blobs(1, seed=9)
    lab = labs[0] * 3  # ids 3, 6, 9...: Cellpose renumbers its input in place
    kept = lab.copy()
    mask = np.zeros(lab.shape, bool)
    mask[8:40, 16:60] = True
    out = prepare([Sample(imgs[0][None], lab, mask, "a"), Sample(imgs[0][None], lab, None, "b")],
                  cp.Settings().normalization, None, min_masks=1)
    assert out.images[0].shape == (1, 32, 44) and out.flows[0].shape == (3, 32, 44)
    assert out.images[1].shape == (1, 64, 64)
    lo, hi = np.percentile(out.images[1], [1, 99])  # Cellpose's percentile normalisation
    assert abs(lo) < 0.05 and abs(hi - 1) < 0.05
    np.testing.assert_array_equal(lab, kept)
