import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_dlbio import samples
from napari_dlbio.metrics import class_iou, match, mean_ap, psnr


def _two_squares():
    t = np.zeros((20, 40), np.int32)
    t[2:12, 2:12] = 1     # 100 px
    t[2:12, 20:30] = 2    # 100 px
    return t


def test_perfect_and_empty():
    t = _two_squares()
    m = match(t, t)
    assert (m.tp, m.fp, m.fn, m.ap, m.f1, m.mean_matched_iou) == (2, 0, 0, 1.0, 1.0, 1.0)
    z = np.zeros_like(t)
    assert match(z, z).ap == 1.0
    m = match(t, z)
    assert (m.tp, m.fn, m.ap, m.f1, m.recall) == (0, 2, 0.0, 0.0, 0.0)
    assert match(z, t).precision == 0.0


def test_known_case():
    t = _two_squares()
    p = np.zeros_like(t)
    p[2:12, 2:12] = 7         # exact match
    p[2:12, 24:34] = 3        # overlaps object 2 in 60 px: IoU 60/140 < 0.5 -> FP and FN
    p[15:18, 35:38] = 9       # extra object -> FP
    m = match(t, p)
    assert (m.tp, m.fp, m.fn) == (1, 2, 1)
    assert m.ap == pytest.approx(1 / 4)
    assert m.f1 == pytest.approx(2 / 5)
    assert m.as_dict()["precision"] == pytest.approx(1 / 3)


def test_iou_at_the_threshold_matches_as_in_stardist():
    t = np.zeros((10, 10), np.int32)
    t[:, :4] = 1             # 40 px
    p = np.zeros_like(t)
    p[:, :2] = 1             # 20 px inside: IoU exactly 0.5 is a match (stardist: IoU >= thresh)
    assert match(t, p).tp == 1
    p[:, :2] = 0
    p[:, 0] = 1
    p[:9, 1] = 1             # 19 px: IoU 0.475
    assert match(t, p).tp == 0


def test_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        match(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match=">= 0.5"):
        match(np.zeros((4, 4), int), np.zeros((4, 4), int), thresh=0.3)


def test_label_ids_do_not_matter():
    _, t = samples.nuclei_2d((96, 96), seed=3)
    perm = np.concatenate([[0], np.random.default_rng(0).permutation(np.arange(1, t.max() + 1)) + 50])
    assert match(t, perm[t]).ap == 1.0


def _perturbed_pairs(n=6):
    rng = np.random.default_rng(0)
    for k in range(n):
        _, t = samples.nuclei_2d((128, 128), seed=k, touch=0.8)
        p = ndi.grey_dilation(t, size=int(rng.integers(1, 5))) if k % 2 else t.copy()
        p = np.roll(p, int(rng.integers(-3, 4)), axis=int(rng.integers(2)))
        drop = rng.choice(np.arange(1, t.max() + 1), size=max(1, t.max() // 5), replace=False)
        p[np.isin(p, drop)] = 0
        p[rng.integers(0, 120):, :8] = 999   # a spurious object
        yield t, p


def test_equals_stardist_matching():
    sm = pytest.importorskip("stardist.matching")
    for t, p in _perturbed_pairs():
        ours = match(t, p)
        theirs = sm.matching(t, p, thresh=0.5)
        assert (ours.tp, ours.fp, ours.fn) == (theirs.tp, theirs.fp, theirs.fn)
        assert ours.ap == pytest.approx(theirs.accuracy)
        assert ours.f1 == pytest.approx(theirs.f1)
        assert 0 < ours.ap < 1


def test_mean_ap():
    t = _two_squares()
    out = mean_ap([t, t], [t, np.zeros_like(t)])
    assert out == {"ap": 0.5, "f1": 0.5, "n_images": 2}
    assert math.isnan(mean_ap([], [])["ap"])


def test_class_iou():
    t = np.array([[0, 1, 1, 2]])
    p = np.array([[0, 1, 2, 2]])
    iou = class_iou(t, p, 4)
    assert iou[:3] == [1.0, 0.5, 0.5] and math.isnan(iou[3])
    # with 0 = unannotated, pixels labelled 0 in the truth do not count
    assert class_iou(np.array([[0, 1]]), np.array([[1, 1]]), 2, ignore=0)[1] == 1.0


def test_psnr():
    clean = np.zeros((10, 10))
    clean[0, 0] = 1.0
    noisy = clean + 0.1
    assert psnr(clean, noisy) == pytest.approx(20.0)
    assert psnr(clean, clean) == math.inf
