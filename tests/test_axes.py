import numpy as np
import pytest

from napari_dlbio.axes import ItemPlan, drop_axis, guess_axes, validate_axes


@pytest.mark.parametrize(
    "shape, rgb, axes",
    [
        ((64, 64), False, "YX"),
        ((3, 64, 64), False, "CYX"),
        ((12, 64, 64), False, "ZYX"),
        ((64, 64, 3), True, "YXC"),
        ((5, 64, 64, 4), True, "ZYXC"),
        ((2, 12, 64, 64), False, "CZYX"),
        ((12, 2, 64, 64), False, "ZCYX"),
        ((6, 12, 64, 64), False, "TZYX"),
        ((6, 12, 2, 64, 64), False, "TZCYX"),
    ],
)
def test_guess_axes(shape, rgb, axes):
    assert guess_axes(shape, rgb=rgb) == axes


@pytest.mark.parametrize("shape, rgb", [((64,), False), ((2, 2, 2, 2, 2, 2), False), ((64, 64, 5), True)])
def test_guess_axes_refuses(shape, rgb):
    with pytest.raises(ValueError, match="shape"):
        guess_axes(shape, rgb=rgb)


def test_validate_axes():
    assert validate_axes("zyx", (3, 4, 5)) == "ZYX"
    with pytest.raises(ValueError, match="name 2 dimensions but the image has 3"):
        validate_axes("YX", (3, 4, 5))
    with pytest.raises(ValueError, match="unknown axis"):
        validate_axes("QYX", (3, 4, 5))
    with pytest.raises(ValueError, match="repeat"):
        validate_axes("YYX", (3, 4, 5))
    with pytest.raises(ValueError, match="must contain Y and X"):
        validate_axes("ZTX", (3, 4, 5))


CASES = [  # axes, shape, model ndim, expected number of items
    ("YX", (20, 24), 2, 1),
    ("ZYX", (5, 20, 24), 2, 5),
    ("ZYX", (5, 20, 24), 3, 1),
    ("TYX", (4, 20, 24), 2, 4),
    ("TZYX", (3, 5, 20, 24), 2, 15),
    ("TZYX", (3, 5, 20, 24), 3, 3),
    ("CYX", (2, 20, 24), 2, 1),
    ("YXC", (20, 24, 3), 2, 1),
    ("TZCYX", (2, 5, 3, 20, 24), 2, 10),
    ("TZCYX", (2, 5, 3, 20, 24), 3, 2),
    ("ZCYX", (5, 2, 20, 24), 3, 1),
    ("XYZ", (24, 20, 5), 3, 1),  # unusual order: outputs keep it
]


def _arange(shape):
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


@pytest.mark.parametrize("axes, shape, ndim, n_items", CASES)
def test_item_plan_round_trip(axes, shape, ndim, n_items):
    """Every item is read as (C, *spatial); a per-item channel sum written back equals numpy's."""
    img = _arange(shape)
    plan = ItemPlan(axes, shape, ndim)
    assert plan.n_items == n_items
    n_c = shape[axes.index("C")] if "C" in axes else 1
    assert plan.n_channels == n_c
    out = np.zeros(plan.out_shape(), np.float32)
    seen = 0
    for idx in plan.indices():
        item = plan.read(img, idx)
        assert item.dtype == np.float32
        assert item.shape == (n_c, *plan.spatial_shape)
        plan.write(out, idx, item.sum(0))
        seen += 1
    assert seen == n_items
    expected = img.sum(axes.index("C")) if "C" in axes else img
    np.testing.assert_array_equal(out, expected)
    assert plan.out_axes() == axes.replace("C", "")


@pytest.mark.parametrize("axes, shape, ndim, n_items", CASES)
def test_item_plan_channel_outputs(axes, shape, ndim, n_items):
    """A multi-channel result (here the item itself) lands in the input's order, C added if absent."""
    img = _arange(shape)
    plan = ItemPlan(axes, shape, ndim)
    n_c = plan.n_channels
    out = np.zeros(plan.out_shape(n_c), np.float32)
    for idx in plan.indices():
        plan.write(out, idx, plan.read(img, idx), channels=True)
    out_axes = plan.out_axes(channels=True)
    assert len(out_axes) == out.ndim and "C" in out_axes
    if "C" in axes:
        np.testing.assert_array_equal(out, img)
    else:
        np.testing.assert_array_equal(np.take(out, 0, axis=out_axes.index("C")), img)


def test_spatial_axes_follow_the_model():
    plan = ItemPlan("TZCYX", (2, 5, 3, 20, 24), 3)
    assert plan.spatial_axes == "ZYX" and plan.loop_axes == "T" and plan.spatial_shape == (5, 20, 24)
    plan2 = ItemPlan("TZCYX", (2, 5, 3, 20, 24), 2)
    assert plan2.loop_axes == "TZ" and plan2.loop_shape == (2, 5)


def test_rgb_channels_last():
    img = _arange((20, 24, 3))
    plan = ItemPlan("YXC", img.shape, 2)
    item = plan.read(img, next(iter(plan.indices())))
    for c in range(3):
        np.testing.assert_array_equal(item[c], img[..., c])


def test_channel_selection():
    img = _arange((2, 4, 20, 24))  # Z C Y X
    plan = ItemPlan("ZCYX", img.shape, 2, channels=(3, 1))
    assert plan.n_channels == 2
    item = plan.read(img, (1,))
    np.testing.assert_array_equal(item, img[1, [3, 1]])
    with pytest.raises(ValueError, match="channels"):
        ItemPlan("ZCYX", img.shape, 2, channels=(4,))
    with pytest.raises(ValueError, match="channels"):
        ItemPlan("ZCYX", img.shape, 2, channels=())


def test_3d_model_needs_z():
    with pytest.raises(ValueError, match="needs a Z axis"):
        ItemPlan("TYX", (3, 20, 24), 3)
    with pytest.raises(ValueError, match="2D or 3D"):
        ItemPlan("YX", (20, 24), 4)


class _CountingArray:
    """Records the size of every read, like a lazy (dask/zarr) array would be charged."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.reads = a, a.shape, a.dtype, []

    def __getitem__(self, key):
        block = self.a[key]
        self.reads.append(block.size)
        return block


def test_reads_one_item_at_a_time():
    img = _CountingArray(_arange((4, 6, 20, 24)))
    plan = ItemPlan("TZYX", img.shape, 2)
    for idx in plan.indices():
        plan.read(img, idx)
    assert img.reads == [20 * 24] * 24


def test_drop_axis():
    assert drop_axis((1.0, 2.0, 0.5, 0.5), "ZCYX") == (1.0, 0.5, 0.5)
    assert drop_axis((2.0, 0.5, 0.5), "ZYX", "Z") == (0.5, 0.5)
