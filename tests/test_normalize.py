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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.bool_])
@pytest.mark.parametrize("per_channel", [True, False])
def test_whole_item_bounds_from_blocks_equal_the_items_own(dtype, per_channel):
    from napari_dlbio.normalize import IntensitySample, bounds_key, item_bounds

    rng = np.random.default_rng(0)
    if dtype is np.bool_:
        item = rng.random((2, 100, 130)) > 0.7
    elif dtype is np.float32:
        item = rng.normal(0, 5, (2, 100, 130)).astype(dtype)
    else:
        item = rng.integers(-300 if dtype is np.int16 else 0, 250, (2, 100, 130)).astype(dtype)
    norm = Normalization(low=3.0, high=99.0, per_channel=per_channel)
    sample = IntensitySample(item.dtype, 2, (100, 130))
    for y in range(0, 100, 32):
        for x in range(0, 130, 50):
            sample.add(item[:, y:y + 32, x:x + 50], (y, x))
    lo, scale = sample.bounds(norm)
    want_lo, want_scale = percentile_bounds(item.astype(np.float32), norm)
    np.testing.assert_allclose(lo, want_lo.ravel(), rtol=1e-5)  # numpy interpolates in float32
    np.testing.assert_allclose(scale, want_scale.ravel(), rtol=1e-5)
    # Inside item_bounds every block is normalised with the whole item's bounds.
    with item_bounds({bounds_key(norm): (lo, scale)}):
        block = percentile_normalize(item[:, :10, :10], norm)
    np.testing.assert_allclose(block, percentile_normalize(item.astype(np.float32), norm)[:, :10, :10], atol=1e-5)
    with item_bounds({}), pytest.raises(ValueError, match="normalizations"):
        percentile_normalize(item[:, :10, :10], norm)


def test_large_float_items_are_sampled_on_one_grid():
    from napari_dlbio.normalize import IntensitySample

    item = np.random.default_rng(1).normal(0, 1, (1, 300, 300)).astype(np.float32)
    sample = IntensitySample(item.dtype, 1, (300, 300), max_values=10_000)
    for y in range(0, 300, 64):
        for x in range(0, 300, 64):
            sample.add(item[:, y:y + 64, x:x + 64], (y, x))
    assert sample.stride == 3
    np.testing.assert_array_equal(np.sort(np.concatenate(sample.values, 1).ravel()), np.sort(item[0, ::3, ::3].ravel()))
