import numpy as np
import pytest

from napari_dlbio.config import Normalization
from napari_dlbio.normalize import check_image, percentile_bounds, percentile_normalize


def test_percentiles_map_to_zero_and_one_per_channel_and_bounds_undo_it():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(100, 10, (32, 32)), rng.normal(5000, 300, (32, 32))]).astype(np.float32)
    s = Normalization(low=1, high=99)
    y = percentile_normalize(x, s)
    for c in range(2):
        assert np.percentile(y[c], 1) == pytest.approx(0, abs=1e-4)
        assert np.percentile(y[c], 99) == pytest.approx(1, abs=1e-4)
    lo, scale = percentile_bounds(x, s)
    assert lo.shape == scale.shape == (2, 1, 1)
    np.testing.assert_allclose(y * scale + lo, x, rtol=1e-5)


def test_joint_channels_constant_images_and_none():
    x = np.stack([np.zeros((8, 8)), np.full((8, 8), 10.0)]).astype(np.float32)
    y = percentile_normalize(x, Normalization(per_channel=False, low=0, high=100))
    np.testing.assert_allclose(y[1], 1.0)
    flat = np.full((1, 8, 8), 1000.0, np.float32)
    assert np.all(percentile_normalize(flat) == 0)  # no division by zero at large intensities
    np.testing.assert_array_equal(percentile_normalize(x, Normalization(mode="none")), x)


def test_non_finite_and_empty_images_are_refused():
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_image(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="empty"):
        check_image(np.zeros((0, 4)))
