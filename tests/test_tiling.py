import numpy as np
import pytest

from napari_dlbio.jobs import Cancelled, JobContext
from napari_dlbio.tiling import is_out_of_memory, predict_tiled, with_oom_retry


def _pixelwise(batch):
    # Two outputs per pixel that depend on the pixel only: tiles must reproduce them exactly.
    return np.concatenate([batch.sum(1, keepdims=True), 2 * batch[:, :1] + 1], axis=1)


@pytest.mark.parametrize(
    "shape, tile, overlap",
    [
        ((1, 100, 77), 32, 8),
        ((2, 129, 65), 48, 16),
        ((1, 31, 17), 64, 32),      # image smaller than a tile
        ((1, 9, 50, 37), 16, 4),    # 3D
    ],
)
def test_tiled_equals_untiled(shape, tile, overlap):
    rng = np.random.default_rng(0)
    item = rng.random(shape, dtype=np.float32)
    whole = predict_tiled(_pixelwise, item, 2, tile=None)
    tiled = predict_tiled(_pixelwise, item, 2, tile=tile, overlap=overlap, batch_size=3)
    assert whole.shape == tiled.shape == (2, *shape[1:])
    np.testing.assert_allclose(whole[0], item.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)


def test_tiles_are_multiples():
    sizes = []

    def fn(b):
        sizes.append(b.shape[2:])
        assert all(s % 8 == 0 for s in b.shape[2:])
        return b

    item = np.random.default_rng(1).random((1, 101, 67), dtype=np.float32)
    out = predict_tiled(fn, item, 1, tile=50, overlap=10, multiple=8)
    np.testing.assert_allclose(out[0], item[0], rtol=1e-6)
    assert sizes and all(s == (48, 48) for s in sizes)


@pytest.mark.parametrize("shape", [(1, 96, 80), (1, 97, 81)])
def test_grid_outputs(shape):
    item = np.random.default_rng(2).random(shape, dtype=np.float32)

    def fn(b):  # StarDist-like subsampled output
        return b[:, :, ::2, ::2]

    out = predict_tiled(fn, item, 1, tile=40, overlap=12, grid=2)
    assert out.shape == (1, (shape[1] + 1) // 2, (shape[2] + 1) // 2)
    np.testing.assert_allclose(out, item[:, ::2, ::2], rtol=1e-6)


def test_progress_and_cancel():
    item = np.zeros((1, 128, 128), np.float32)
    reports = []
    ctx = JobContext(reports.append)
    predict_tiled(lambda b: b, item, 1, tile=32, overlap=0, batch_size=4, ctx=ctx)
    assert reports[-1].done == reports[-1].total == 16

    ctx = JobContext()
    calls = []

    def cancelling(b):
        calls.append(1)
        ctx.cancel()
        return b

    with pytest.raises(Cancelled):
        predict_tiled(cancelling, item, 1, tile=32, overlap=0, batch_size=4, ctx=ctx)
    assert len(calls) == 1  # stopped before the next batch


def test_oom_retry_halves_batch_then_tile():
    calls = []

    def run(tile, batch):
        calls.append((tile, batch))
        if len(calls) < 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    assert with_oom_retry(run, None, 4) == "ok"
    assert calls == [(None, 4), (None, 2), (None, 1), (512, 1)]


def test_oom_retry_gives_up_clearly_and_passes_other_errors():
    def oom(tile, batch):
        raise MemoryError()

    with pytest.raises(MemoryError, match="even with 64px tiles"):
        with_oom_retry(oom, 128, 2)

    def broken(tile, batch):
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        with_oom_retry(broken, None, 4)


def test_is_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.parametrize("shape,tile,grid", [((300, 260), 96, 1), ((40, 70, 90), 32, 1), ((256, 192), 64, 2)])
def test_margin_makes_tiling_exact_for_a_local_filter(shape, tile, grid):
    """A filter that sees zeros past each tile's border (like a network's padding): with the
    filter's radius as margin, the tiled output equals the one-tile output; without, it does not."""
    from scipy import ndimage

    radius = 5

    def fn(batch):
        out = np.stack([ndimage.uniform_filter(b[0], 2 * radius + 1, mode="constant") for b in batch])[:, None]
        return out[(slice(None), slice(None)) + (slice(None, None, grid),) * (out.ndim - 2)]

    x = np.random.default_rng(0).random((1, *shape)).astype(np.float32)
    whole = predict_tiled(fn, x, 1, None, grid=grid)
    exact = predict_tiled(fn, x, 1, tile, overlap=4, grid=grid, margin=radius)
    plain = predict_tiled(fn, x, 1, tile, overlap=4, grid=grid)
    assert np.abs(exact - whole).max() < 1e-5
    assert np.abs(plain - whole).max() > 1e-2
