"""Evaluate: matching at many thresholds (== stardist.matching), error objects, comparing candidates."""

import csv

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_dlbio import comparison, errors, metrics, samples
from napari_dlbio.comparison import Candidate
from napari_dlbio.scoreboard import CSV_COLUMNS

FIELDS = {"ap": "accuracy", "precision": "precision", "recall": "recall", "f1": "f1", "tp": "tp", "fp": "fp",
          "fn": "fn", "n_true": "n_true", "n_pred": "n_pred", "mean_iou": "mean_matched_score",
          "pq": "panoptic_quality"}


def _worst_difference(true, pred) -> float:
    from stardist.matching import matching

    worst = 0.0
    for s in metrics.match_thresholds(true, pred):
        ref = matching(true, pred, thresh=s.thresh)
        worst = max([worst] + [abs(getattr(s, a) - getattr(ref, b)) for a, b in FIELDS.items()])
    return worst


def _perturbed(true, seed=0):
    """A plausible prediction: shifted, grown or shrunk, some objects dropped, a few merged."""
    rng = np.random.default_rng(seed)
    shifted = np.roll(true, (1, -2), axis=(0, 1))
    pred = ndi.grey_dilation(shifted, size=3) if seed % 2 else ndi.grey_erosion(true, 3)
    ids = np.unique(true)[1:]
    pred[np.isin(pred, rng.choice(ids, max(1, len(ids) // 8), replace=False))] = 0
    pred[np.isin(pred, ids[::7])] = ids[0]          # merges, via a shared id
    return pred


def test_matching_equals_stardist_on_dsb_masks(shared_data):
    pytest.importorskip("stardist")
    import tifffile

    files = sorted((shared_data / "dsb2018" / "val" / "masks").glob("*.tif"))[:6]
    for k, f in enumerate(files):
        true = tifffile.imread(f)
        assert _worst_difference(true, _perturbed(true, k)) < 1e-6


@pytest.mark.parametrize("case", ["empty truth", "empty prediction", "both empty", "merge", "split", "ties",
                                  "exact ratios", "sparse ids"])
def test_matching_equals_stardist_on_synthetic_cases(case):
    pytest.importorskip("stardist")
    _, true = samples.nuclei_2d((128, 128), seed=3)
    pred = ndi.grey_dilation(true, size=3)
    if case == "empty truth":
        true = np.zeros_like(true)
    elif case == "empty prediction":
        pred = np.zeros_like(pred)
    elif case == "both empty":
        true, pred = np.zeros_like(true), np.zeros_like(pred)
    elif case == "merge":
        pred = np.where(pred > 0, pred // 3 + 1, 0)
    elif case == "split":
        pred = np.where(true > 0, true * 2 + (np.arange(128)[None, :] % 2), 0)
    elif case == "ties":   # one truth, two halves: each IoU exactly 0.5
        true = np.zeros((8, 8), np.int32)
        true[2:6, 2:6] = 1
        pred = np.zeros_like(true)
        pred[2:6, 2:4], pred[2:6, 4:6] = 1, 2
    elif case == "exact ratios":   # IoU 7/10, 3/4, 9/10 exactly: float32 comparisons as in stardist
        true, pred = np.zeros((4, 40), np.int32), np.zeros((4, 40), np.int32)
        true[0, :10], pred[0, :7] = 1, 1
        true[1, :4], pred[1, :3] = 2, 2
        true[2, :10], pred[2, :9] = 3, 3
    elif case == "sparse ids":
        true, pred = true * 1000 + (true > 0), pred * 7
    assert _worst_difference(true, pred) < 1e-6


def test_match_thresholds_agrees_with_match_above_one_half():
    _, true = samples.nuclei_2d((128, 128), seed=5)
    pred = ndi.grey_dilation(true, size=5)
    old, new = metrics.match(true, pred, 0.75), metrics.match_thresholds(true, pred, (0.75,))[0]
    assert (old.tp, old.fp, old.fn) == (new.tp, new.fp, new.fn) and abs(old.ap - new.ap) < 1e-12


def test_ssim_and_psnr_against_a_clean_reference():
    from skimage.metrics import structural_similarity

    clean, _ = samples.nuclei_2d((96, 96), seed=2, noise=False)
    noisy = clean + np.random.default_rng(0).normal(0, 10, clean.shape)
    rng = float(clean.max() - clean.min())
    assert metrics.ssim(clean, clean) == pytest.approx(1.0)
    ref = structural_similarity(clean.astype(float), noisy, data_range=rng)
    assert metrics.ssim(clean, noisy) == pytest.approx(ref)
    assert metrics.ssim(clean, noisy) < 0.9 and 15 < metrics.psnr(clean, noisy) < 40


def _blobs():
    """Truth with 5 squares; a prediction with one of each error kind and one correct object."""
    true = np.zeros((40, 60), np.int32)
    pred = np.zeros_like(true)
    true[2:10, 2:10] = 1;   pred[2:10, 2:10] = 1            # correct
    true[2:10, 20:28] = 2                                   # missed: false negative
    pred[20:28, 2:10] = 2                                   # nothing there: false positive
    true[20:28, 20:27] = 3; true[20:28, 28:35] = 4          # two nuclei ...
    pred[20:28, 20:35] = 3                                  # ... one object: merge
    true[30:38, 40:56] = 5                                  # one nucleus ...
    pred[30:38, 40:48] = 4; pred[30:38, 48:56] = 5          # ... two objects: split
    true[30:38, 2:18] = 6;  pred[32:36, 4:8] = 6            # far too small: missed and false, overlapping
    return true, pred


def test_error_objects_one_kind_per_object():
    true, pred = _blobs()
    out = errors.error_objects(true, pred, item="a")
    f = out.features
    assert set(errors.COLUMNS) <= set(f) and f["label"] == list(range(1, len(f["label"]) + 1))
    got = sorted(zip(f["error"], f["source"], f["object"], f["area"]))
    assert got == [("false negative", "truth", 2, 64), ("false negative", "truth", 6, 128 - 16),
                   ("false positive", "prediction", 2, 64), ("false positive", "prediction", 6, 16),
                   ("merge", "prediction", 3, 120), ("split", "truth", 5, 128)]
    assert out.counts() == {"false positive": 2, "false negative": 2, "merge": 1, "split": 1}
    assert out.labels.dtype == np.int32 and out.labels[3, 3] == 0          # the correct object is not shown
    for lab, area in zip(f["label"], f["area"]):
        assert (out.labels == lab).sum() == area


def _stack():
    """A 4-slice truth annotated in slices 0 and 2, and two label candidates."""
    img = np.stack([samples.nuclei_2d((96, 96), seed=s)[0] for s in range(4)])
    lab = np.stack([samples.nuclei_2d((96, 96), seed=s)[1] for s in range(4)])
    truth = lab.copy()
    truth[[1, 3]] = 0
    good = lab.copy()
    bad = np.stack([ndi.grey_erosion(x, 5) for x in lab])
    return img, truth, good, bad


def test_compare_label_candidates_ranks_and_writes_csv(tmp_path):
    img, truth_lab, good, bad = _stack()
    truth = comparison.truth_from_arrays(truth_lab, img, "ZYX", name="truth")
    assert [i.name for i in truth.items] == ["z=0", "z=2"]
    res = comparison.compare(truth, [Candidate.of_labels("eroded", bad), Candidate.of_labels("exact", good)],
                             keep_errors=True)
    best, worst = res.ranked()
    assert best.name == "exact" and best.mean()["AP@0.95"] == 1.0 and best.mean()["PQ"] == 1.0
    assert worst.mean()["AP@0.50"] < 0.9 and not worst.failures
    assert worst.errors.labels.shape == truth_lab.shape and worst.errors.labels[[1, 3]].max() == 0
    assert set(worst.errors.features["item"]) <= {"z=0", "z=2"}
    with open(res.write_csv(tmp_path / "r.csv")) as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS and CSV_COLUMNS[-6:] == ("AP@0.95", "precision@0.50", "recall@0.50",
                                                                 "F1@0.50", "mean_iou", "PQ")
    assert [r[:2] for r in rows[1:]] == [["exact", "z=0"], ["exact", "z=2"], ["exact", "all"],
                                         ["eroded", "z=0"], ["eroded", "z=2"], ["eroded", "all"]]
    ap = [float(r[2]) for r in rows[4:7]]
    assert ap[2] == pytest.approx((ap[0] + ap[1]) / 2, abs=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_bad_input_is_refused_before_anything_runs():
    img, truth_lab, good, _ = _stack()
    truth = comparison.truth_from_arrays(truth_lab, img, "ZYX")
    with pytest.raises(ValueError, match=r"shape \(4, 96, 90\).*\(4, 96, 96\)"):
        comparison.compare(truth, [Candidate.of_labels("cut", good[..., :90])])
    with pytest.raises(ValueError, match="image, not labels"):
        comparison.compare(truth, [Candidate.of_labels("raw", img)])
    with pytest.raises(ValueError, match="nothing is annotated"):
        comparison.truth_from_arrays(np.zeros_like(truth_lab), img, "ZYX")
    with pytest.raises(ValueError, match="the image needs"):
        comparison.truth_from_arrays(truth_lab[:, :50], img, "ZYX")


def test_a_model_that_cannot_load_is_named_and_the_others_still_run():
    img, truth_lab, good, _ = _stack()
    truth = comparison.truth_from_arrays(truth_lab, img, "ZYX")
    res = comparison.compare(truth, [Candidate.of_model("no-such-model"), Candidate.of_labels("exact", good)])
    assert "no-such-model" in res.get("no-such-model").error and res.get("no-such-model").items == []
    assert res.ranked()[0].name == "exact" and res.get("exact").mean()["AP@0.50"] == 1.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny U-Nets (about 10 s): one trained longer than the other."""
    pytest.importorskip("torch")
    from napari_dlbio import backends, data, tasks

    img, lab = samples.nuclei_2d((256, 256), seed=1)
    out = []
    for name, epochs in (("longer", 6), ("shorter", 1)):
        settings = backends.get("unet").Settings(epochs=epochs, steps_per_epoch=10, batch_size=4,
                                                 patch_size=64, depth=2, base_width=8, val_patches=2)
        path = tmp_path_factory.mktemp("models") / name
        tasks.train("unet", data.from_arrays(img, lab), settings, save_to=path)
        out.append(path)
    return out


def _files(tmp_path, n=3, bad=None):
    import tifffile

    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for k in range(n):
        img, lab = samples.nuclei_2d((96, 112), seed=10 + k)
        tifffile.imwrite(tmp_path / "images" / f"im{k}.tif", img if k != bad else img[:64])
        tifffile.imwrite(tmp_path / "labels" / f"im{k}.tif", lab.astype(np.uint16))
    return tmp_path / "images", tmp_path / "labels"


def test_two_models_on_files_agree_with_their_own_predictions_and_a_bad_item_is_named(models, tmp_path):
    from napari_dlbio import tasks

    images, labels = _files(tmp_path, bad=1)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    truth = comparison.truth_from_folders(images, labels)
    res = comparison.compare(truth, [Candidate.of_model(m) for m in models])
    assert [c.name for c in res.candidates] == ["longer", "shorter"]
    for c, m in zip(res.candidates, models):
        assert list(c.failures) == ["im1.tif"] and "im1.tif" in c.failures["im1.tif"]
        assert [i.item for i in c.scored] == ["im0.tif", "im2.tif"]
        model = tasks.load_model(m)
        for i in c.scored:
            import tifffile

            pred = tasks.predict(model, tifffile.imread(images / i.item)).outputs["labels"]
            ref = metrics.match_thresholds(tifffile.imread(labels / i.item), pred)
            assert [s.ap for s in i.stats] == [s.ap for s in ref]
    assert res.get("longer").mean()["AP@0.50"] > 0.5
    assert before == sorted(p.name for p in tmp_path.rglob("*"))   # nothing written next to the data


def test_model_on_the_annotated_slices_of_a_layer(models):
    img, truth_lab, good, _ = _stack()
    truth = comparison.truth_from_arrays(truth_lab, img, "ZYX")
    res = comparison.compare(truth, [Candidate.of_model(models[0]), Candidate.of_labels("exact", good)],
                             keep_errors=True)
    model = res.get("longer")
    assert [i.item for i in model.items] == ["z=0", "z=2"] and not model.failures
    assert 0.3 < model.mean()["AP@0.50"] < 1.0 and res.ranked()[0].name == "exact"
    assert model.errors.labels.shape == truth_lab.shape and len(model.errors.features["label"]) > 0


def test_request_events_pickle_and_cancel():
    import pickle

    from napari_dlbio._layers import LayerSnapshot
    from napari_dlbio.evaluate_request import CandidateScored, CandidateStarted, EvaluateRequest
    from napari_dlbio.jobs import Cancelled, JobContext

    img, truth_lab, good, bad = _stack()
    req = EvaluateRequest(truth_lab, "truth", [Candidate.of_labels("a", good), Candidate.of_labels("b", bad)],
                          LayerSnapshot.from_array("cells", img, "ZYX"))
    req = pickle.loads(pickle.dumps(req))
    assert req.item_indices() == {"z=0": (0,), "z=2": (2,)} and req.loop_dims == [0]
    events = list(req.run(JobContext()))
    assert [type(e) for e in events] == [CandidateStarted, CandidateScored] * 2
    scored = pickle.loads(pickle.dumps(events[1]))
    assert scored.result.name == "a" and scored.result.errors.labels.shape == truth_lab.shape
    ctx = JobContext()
    gen = req.run(ctx)
    next(gen), next(gen)
    ctx.cancel()
    with pytest.raises(Cancelled):
        next(gen)
    with pytest.raises(ValueError, match="needs the images"):
        EvaluateRequest(truth_lab, "truth", [Candidate.of_model("some-model")])


def test_semantic_model_is_scored_by_class_iou(tmp_path):
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import toy_backend

    from napari_dlbio import backends, data, tasks

    backends.register(toy_backend.SPEC)
    try:
        img, lab = samples.nuclei_2d((128, 128), seed=1)
        semantic = (lab > 0).astype(np.int32)
        settings = backends.get("toy").Settings(epochs=15, steps_per_epoch=5, batch_size=4, width=6,
                                                learning_rate=0.01)
        model_path = tmp_path / "toy"
        tasks.train("toy", data.from_arrays(img, semantic), settings, save_to=model_path)
        truth = comparison.truth_from_arrays(semantic, img)
        (res,) = comparison.compare(truth, [Candidate.of_model(model_path)]).candidates
        row = res.items[0].row()
        pred = tasks.predict(tasks.load_model(model_path), img).outputs["labels"]
        expected = np.nanmean(metrics.class_iou(semantic, pred, 2))
        assert not res.failures and np.isnan(row["AP@0.50"]) and row["mean_iou"] == pytest.approx(expected)
        assert row["mean_iou"] > 0.5
    finally:
        backends.unregister("toy")


def test_volumes_for_3d_models_match_in_3d():
    pytest.importorskip("stardist")
    img, lab = samples.nuclei_3d((16, 48, 48), seed=2)
    pred = ndi.grey_dilation(lab, size=3)
    truth = comparison.truth_from_arrays(lab, img, "ZYX", ndim=3, name="vol")
    assert [i.name for i in truth.items] == ["vol"] and truth.items[0].truth.shape == lab.shape
    (res,) = comparison.compare(truth, [Candidate.of_labels("grown", pred)]).candidates
    assert [s.ap for s in res.items[0].stats] == [s.ap for s in metrics.match_thresholds(lab, pred)]
    assert _worst_difference(lab, pred) < 1e-6
