"""Label stitching and the blockwise machinery on synthetic images with a model-free 'model'.

``Oracle`` segments by thresholding and connected components: what it finds in a
block is exactly what it finds there in the whole image (when the halo holds the
objects), so blockwise output must equal whole-image output up to renumbering.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from _blocks import Counting, cancel_after, consecutive, same_up_to_renumbering
from napari_dlbio import stitching, tasks
from napari_dlbio.backends.base import BackendSpec, BlockNeeds, ModelBase
from napari_dlbio.blocks import BlockGrid, plan_grid
from napari_dlbio.blockwise import SerialRunner, call_with_retry
from napari_dlbio.config import Normalization, PredictSettings, TrainSettings
from napari_dlbio.jobs import Cancelled, JobContext
from napari_dlbio.normalize import percentile_normalize


class _Settings(TrainSettings):
    normalization: Normalization = Normalization()


class Oracle(ModelBase):
    """Percentile-normalise, threshold at 0.5, label connected components; also a 'probability'."""

    spec = BackendSpec("oracle", "Oracle", "labels", _Settings, PredictSettings, "tests:Oracle")

    def __init__(self, ndim: int = 2, halo: int = 24, semantic: bool = False):
        self.settings, self.ndim, self.n_channels = _Settings(), ndim, 1
        self.halo, self._semantic = halo, semantic

    @property
    def semantic(self) -> bool:
        return self._semantic

    def block_needs(self, settings) -> BlockNeeds:
        return BlockNeeds(halo=self.halo, multiple=1)

    def predict(self, item, settings, ctx=None):
        x = percentile_normalize(item, self.settings.normalization)[0]
        lab = (x > 0.5).astype(np.int32) if self._semantic else ndi.label(x > 0.5)[0].astype(np.int32)
        return {"labels": lab, "probability": np.stack([1 - x, x]).astype(np.float32)}


def blobs(shape, n, seed, radius=(3, 12)):
    """Ellipsoids (some long, many crossing block lines) on a noisy background, float32."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    img = rng.normal(10, 1, shape)
    for _ in range(n):
        c = rng.uniform(0, 1, len(shape)) * shape
        r = rng.uniform(*radius, len(shape))
        img[sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1] = 100 + rng.uniform(0, 50)
    return img.astype(np.float32)


# -- pieces ------------------------------------------------------------------------------
def test_split_block_numbers_core_objects_by_their_first_pixel():
    lab = np.zeros((10, 10), np.int32)
    lab[1:3, 1:3] = 7        # halo only
    lab[4:6, 4:9] = 3        # core and halo
    lab[6:8, 5:7] = 9        # core only
    core = (slice(4, 8), slice(4, 8))
    local, halo, raw = stitching.split_block(lab, core, origin=(40, 20), shape=(100, 100))
    assert raw.tolist() == [40 * 100 + 20 + 1, 42 * 100 + 21 + 1]   # 1 + flat index of the first core pixel
    assert local[0, 0] == 1 and local[2, 1] == 2 and set(np.unique(local)) == {0, 1, 2}
    assert (halo[core] == 0).all()
    assert halo[4, 8] == 1                             # the object crossing keeps its number in the halo
    assert halo[1, 1] > 2                              # halo-only objects are numbered above the core's
    assert stitching.raw_labels(local, raw, np.uint32)[2, 1] == raw[1]


def test_resolve_merges_chains_and_numbers_by_smallest_raw_id():
    # Block 0 has raw ids 5, 9; block 1 has 30; block 2 has 50, 52, 57. 9 = 30 = 52.
    ids = [np.array([5, 9]), np.array([30]), np.array([50, 52, 57])]
    relab = stitching.resolve(ids, np.array([[9, 30], [52, 30]]), offset=10)
    assert relab.n_final == 4
    assert [f.tolist() for _, f in map(relab.lut, range(3))] == [[11, 12], [12], [13, 12, 14]]
    raw = np.array([[0, 50], [52, 57]])
    assert stitching.relabel(raw, *relab.lut(2)).tolist() == [[0, 13], [12, 14]]
    with pytest.raises(ValueError, match="inconsistent"):
        stitching.relabel(np.array([[51]]), *relab.lut(2))


def test_match_pairs_needs_half_the_union():
    halo = np.zeros((4, 10), np.int32)
    raw = np.zeros((4, 10), np.uint32)
    halo[:, :6] = 1          # 24 px
    raw[:, 2:6] = 501        # 16 px inside it: IoU 16/24
    halo[:, 7:8] = 2         # 4 px
    raw[:, 7:10] = 502       # IoU 4/12 < 0.5: not the same object
    halo[0, 9] = 3           # a halo-only object (no raw id)
    pairs = stitching.match_pairs(halo, raw, ids=np.array([301, 302]))
    assert pairs.tolist() == [[301, 501]]


def test_count_cut_objects_sees_halves_and_truncations():
    lab = np.zeros((64, 64), np.int32)
    lab[20:40, 20:44] = 1
    assert stitching.count_cut_objects(lab, 32) == 0
    halves = lab.copy()
    halves[20:32, 20:44] = 2                            # split along the line y = 32
    assert stitching.count_cut_objects(halves, 32) == 2
    cut = lab.copy()
    cut[32:40] = 0                                      # truncated at the line
    assert stitching.count_cut_objects(cut, 32) == 1


def test_grid_aligns_to_chunks_and_stride_and_fits_memory():
    g = plan_grid((1000, 700), (20, 20), (8, 8), (128, 96), 300, None, 1)
    assert g.size == (384, 384) and g.halo == (24, 24) and g.counts == (3, 2)
    b = g.block((1, 1))
    assert b.core == ((384, 768), (384, 700)) and b.outer == ((360, 792), (360, 700))
    assert len(g.neighbours(g.block((1, 0)))) == 5
    small = plan_grid((50000, 50000), (64, 64), (1, 1), (512, 512), None, 2**28, 1)
    large = plan_grid((50000, 50000), (64, 64), (1, 1), (512, 512), None, 2**30, 1)
    assert small.size[0] < large.size[0] and large.size[0] % 512 == 0
    vol = plan_grid((40, 5000, 5000), (8, 32, 32), (1, 1, 1), None, None, 2**30, 1)
    assert vol.size[0] == 40                            # a short axis is taken whole


def test_serial_runner_retries_once_then_names_the_block():
    calls = []

    def flaky(task):
        calls.append(task)
        if len(calls) == 1:
            raise OSError("disk hiccup")
        return task * 2

    assert list(SerialRunner().map(flaky, [5], JobContext())) == [(5, 10)]
    with pytest.raises(RuntimeError, match=r"block 7 failed twice: ValueError: bad"):
        call_with_retry(lambda t: (_ for _ in ()).throw(ValueError("bad")), 7, lambda t: f"block {t}")
    ctx = JobContext()
    ctx.cancel()
    with pytest.raises(Cancelled):
        list(SerialRunner().map(flaky, [1, 2], ctx))


# -- whole pipeline ----------------------------------------------------------------------
@pytest.mark.parametrize("shape,block", [((300, 410), 64), ((40, 90, 100), (16, 32, 32))])
def test_objects_crossing_blocks_become_one(shape, block):
    img = blobs(shape, 40 if len(shape) == 2 else 25, seed=1)
    model = Oracle(ndim=len(shape), halo=24 if len(shape) == 2 else 16)
    axes = "YX" if len(shape) == 2 else "ZYX"
    whole = tasks.predict(model, img, axes).outputs["labels"]
    pred = tasks.predict(model, img, axes, block_size=block)
    lab = pred.outputs["labels"]
    assert lab.dtype == np.uint32 and pred.axes["labels"] == axes
    assert same_up_to_renumbering(whole, lab)           # no halves, no duplicates
    assert consecutive(lab) and lab.max() == len(np.unique(whole)) - 1
    crossing = [i for i in range(1, whole.max() + 1)
                if np.ptp(np.argwhere(whole == i) // np.asarray(block), axis=0).any()]
    assert len(crossing) >= 10                           # the test means something
    np.testing.assert_array_equal(pred.outputs["probability"], tasks.predict(model, img, axes).outputs["probability"])


def test_stack_on_disk_has_unique_ids_and_semantic_labels_are_not_stitched(tmp_path):
    movie = np.stack([blobs((200, 260), 20, seed=s) for s in range(3)])
    reports = []
    pred = tasks.predict(Oracle(), movie, "TYX", ctx=JobContext(reports.append),
                         out=tasks.zarr_outputs(tmp_path / "out", chunk=64), block_size=64)
    lab = pred.outputs["labels"][:]
    assert pred.n_items == 3 and consecutive(lab)
    ids = [set(np.unique(f)) - {0} for f in lab]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    assert pred.outputs["probability"].shape == (3, 2, 200, 260)
    steps = [r.message for r in reports if r.message.startswith("block ")]
    assert steps[-1] == "block 60/60" and len(set(steps)) == 61  # 3 items x 5 x 4 blocks, and "block 0/60"
    assert not list((tmp_path / "out" / ".dlbio" / "raw").glob("*.zarr"))  # finished items: raw labels gone
    sem = tasks.predict(Oracle(semantic=True), movie[0], block_size=64).outputs["labels"]
    np.testing.assert_array_equal(sem, tasks.predict(Oracle(semantic=True), movie[0]).outputs["labels"])


def test_resume_after_cancel_in_the_relabel_pass(tmp_path):
    img = blobs((256, 256), 40, seed=3)
    full = tasks.predict(Oracle(), img, out=tasks.zarr_outputs(tmp_path / "full", 64), block_size=64)
    first = tasks.predict(Oracle(), img, ctx=cancel_after("stitching labels: block 5/16"),
                          out=tasks.zarr_outputs(tmp_path / "cut", 64), block_size=64)
    assert first.cancelled
    assert len(list((tmp_path / "cut" / ".dlbio" / "relabel").iterdir())) == 5
    runner = Counting()
    again = tasks.predict(Oracle(), img, out=tasks.zarr_outputs(tmp_path / "cut", 64, resume=True), block_size=64,
                          runner=runner, resume=True)
    assert not again.cancelled and runner.predicted == 0
    np.testing.assert_array_equal(again.outputs["labels"][:], full.outputs["labels"][:])


def test_resume_needs_outputs_on_disk():
    with pytest.raises(ValueError, match="outputs on disk"):
        tasks.predict(Oracle(), blobs((128, 128), 5, 0), block_size=64, resume=True)


def test_the_whole_image_grid_reads_every_block():
    g = BlockGrid((10, 10), (4, 4), (2, 2))
    covered = np.zeros((10, 10), int)
    for b in g.blocks():
        covered[b.core_slices()] += 1
    assert (covered == 1).all() and g.n_blocks == 9
