import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_dlbio import samples


def test_nuclei_2d_is_deterministic_and_consistent():
    img, lab = samples.nuclei_2d()
    img2, lab2 = samples.nuclei_2d()
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
    assert img.shape == lab.shape == (256, 256)
    assert img.dtype == np.float32 and lab.dtype == np.int32
    ids = np.unique(lab)
    np.testing.assert_array_equal(ids, np.arange(lab.max() + 1))  # 0 and 1..n, no gaps
    assert 40 <= lab.max() <= 100
    # nuclei are brighter than the background, and some touch each other
    assert np.median(img[lab > 0]) > np.median(img[lab == 0]) + 30
    touching = ndi.grey_dilation(lab, size=3) != ndi.grey_erosion(np.where(lab == 0, 10**6, lab), size=3)
    assert (touching & (lab > 0) & (ndi.grey_erosion(lab, size=3) > 0)).any()
    assert not np.array_equal(samples.nuclei_2d(seed=1)[1], lab)


def test_every_object_is_one_piece_of_reasonable_size():
    _, lab = samples.nuclei_2d((128, 128), seed=5)
    sizes = np.bincount(lab.ravel())[1:]
    assert sizes.min() >= 8
    for k in range(1, lab.max() + 1):
        assert ndi.label(lab == k)[1] == 1


def test_options():
    img, lab = samples.nuclei_2d((64, 80), n=5, seed=2, dtype="uint16", noise=False)
    assert img.dtype == np.uint16 and img.shape == (64, 80) and 1 <= lab.max() <= 5
    with pytest.raises(ValueError, match="dtype"):
        samples.nuclei_2d((32, 32), dtype="int8")
    with pytest.raises(ValueError, match="2D shape"):
        samples.nuclei_2d((4, 32, 32))


def test_nuclei_3d():
    img, lab = samples.nuclei_3d((16, 48, 48), seed=0)
    assert img.shape == lab.shape == (16, 48, 48) and lab.max() >= 5
    # objects span several Z slices
    z_extent = [np.ptp(np.nonzero(lab == k)[0]) + 1 for k in range(1, lab.max() + 1)]
    assert np.median(z_extent) >= 3


def test_timelapse_keeps_ids():
    img, lab = samples.nuclei_timelapse((4, 64, 64), seed=0)
    assert img.shape == lab.shape == (4, 64, 64)
    c0 = ndi.center_of_mass(lab[0] > 0, lab[0], range(1, lab.max() + 1))
    c1 = ndi.center_of_mass(lab[1] > 0, lab[1], range(1, lab.max() + 1))
    moves = [np.hypot(a[0] - b[0], a[1] - b[1]) for a, b in zip(c0, c1) if not np.isnan(a[0] + b[0])]
    assert moves and np.median(moves) < 5  # the same id is the same nucleus, a few pixels on


def test_stardist_samples():
    pytest.importorskip("stardist")
    img, mask = samples.stardist_sample_2d()
    assert img.shape == mask.shape == (512, 512) and mask.dtype == np.int32
    assert len(np.unique(mask)) - 1 == 125
