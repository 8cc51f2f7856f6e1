"""What to annotate next: ranking by test-time disagreement, annotated items skipped, tiles, cancel."""

import numpy as np
import pytest

from napari_dlbio import samples, suggest, tasks
from napari_dlbio.jobs import Cancelled, JobContext
from napari_dlbio.suggest import Source, Suggestion


@pytest.fixture(scope="module")
def model(tiny_unet):
    return tasks.load_model(tiny_unet)


def _noisy(img, seed=0):
    """Out of distribution: noise twice as strong as the image's own contrast."""
    rng = np.random.default_rng(seed)
    return (img + rng.normal(0, 2 * img.std(), img.shape)).astype(np.float32)


def _stack(n=4, noisy=(1,), shape=(96, 96)):
    planes = [samples.nuclei_2d(shape, seed=10 + z)[0] for z in range(n)]
    return np.stack([_noisy(p, z) if z in noisy else p for z, p in enumerate(planes)])


def test_disagreement_measures():
    a = np.zeros((20, 20), np.int32)
    a[2:8, 2:8] = 1
    a[12:18, 12:18] = 2
    assert suggest.object_disagreement([a, a, a]) == (0.0, 2)
    moved = np.roll(a, 10, axis=0)          # object 1 lands on empty space, object 2 wraps to the top
    score, n = suggest.object_disagreement([a, moved])
    assert n == 2 and score == pytest.approx(1.0)
    assert suggest.object_disagreement([np.zeros_like(a)] * 3) == (0.0, 0)
    img = np.random.default_rng(0).random((3, 16, 16))
    assert suggest.image_disagreement([img, img]) == 0.0
    assert suggest.image_disagreement([img, img[:, ::-1]]) > 0.1


def test_transforms_invert():
    x = np.arange(2 * 5 * 7).reshape(2, 5, 7)
    for nd, count in ((2, 4), (3, 4)):
        moves = suggest.transforms(nd)
        assert len(moves) == count
        for fwd, inv in moves:
            np.testing.assert_array_equal(inv(fwd(x)), x)


def test_noisy_slice_ranks_first(model):
    stack = _stack(n=4, noisy=(2,))
    found = suggest.suggest(model, [Source("cells", stack, "ZYX")])
    assert [s.index for s in found][0] == (2,)
    assert len(found) == 4 and all(isinstance(s, Suggestion) for s in found)
    assert found[0].where == "z=2" and found[0].loop_axes == "Z" and found[0].box is None
    assert found[0].score > max(s.score for s in found[1:]) + 0.15
    assert all(0.0 <= s.score <= 1.0 for s in found) and all(s.n_objects > 0 for s in found)
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)


def test_annotated_items_never_suggested(model):
    stack = _stack(n=4, noisy=(1, 3))
    labels = np.zeros(stack.shape, np.int32)
    labels[1, 10:20, 10:20] = 5          # the noisy slice 1 is annotated (one object is enough)
    labels[0, 40:50, 40:50] = 1
    found = suggest.suggest(model, [Source("cells", stack, "ZYX", labels=labels)], n=5)
    assert sorted(s.index for s in found) == [(2,), (3,)]
    assert found[0].index == (3,)       # the other noisy one
    # Several images: ranked together, each by its own name.
    other = samples.nuclei_2d((96, 96), seed=30)[0]
    found = suggest.suggest(model, [Source("cells", stack, "ZYX", labels=labels), Source("b", _noisy(other))])
    assert {(s.image, s.index) for s in found} == {("cells", (2,)), ("cells", (3,)), ("b", ())}
    assert found[-1].image == "cells" and found[-1].index == (2,)


def test_tiles_of_a_large_image(model):
    assert suggest.tiles((1000, 1000)) == [None]
    assert suggest.tiles((1100, 600)) == [(y, x, y + 512, x + 512) for y in (0, 512, 588) for x in (0, 88)]
    img = samples.nuclei_2d((384, 256), seed=5)[0]
    img[128:256, 128:256] = _noisy(img[128:256, 128:256])
    labels = np.zeros(img.shape, np.int32)
    labels[300:310, 10:20] = 1          # the tile at y=256, x=0 is annotated
    found = suggest.suggest(model, [Source("big", img, "YX", labels=labels)], tile=128, tile_above=256)
    boxes = [s.box for s in found]
    assert sorted(boxes) == [(y, x, y + 128, x + 128) for y in (0, 128, 256) for x in (0, 128)
                             if (y, x) != (256, 0)]
    assert found[0].box == (128, 128, 256, 256) and found[0].label() == "big tile y=128:256 x=128:256"
    assert found[0].index == () and found[0].where == ""


def test_cancel(model):
    ctx = JobContext()
    reports = []

    def on_progress(p):
        reports.append(p)
        if p.message.startswith("1/"):
            ctx.cancel()

    ctx = JobContext(on_progress)
    with pytest.raises(Cancelled):
        suggest.suggest(model, [Source("cells", _stack(n=3, noisy=()), "ZYX")], ctx=ctx)
    assert not any(p.message.startswith("2/") for p in reports)


def test_bad_input(model):
    stack = _stack(n=2, noisy=())
    with pytest.raises(ValueError, match="labels of 'cells' have shape"):
        suggest.suggest(model, [Source("cells", stack, "ZYX", labels=np.zeros((3, 96, 96), np.int32))])
    with pytest.raises(ValueError, match="channel"):
        suggest.suggest(model, [Source("rgb", np.zeros((2, 32, 32), np.float32), "CYX")])


def test_cli_suggest(model, tmp_path, capsys):
    import csv

    import tifffile

    from napari_dlbio import cli

    img_dir, lab_dir = tmp_path / "images", tmp_path / "labels"
    img_dir.mkdir()
    lab_dir.mkdir()
    for k, name in enumerate(("a", "b", "c")):
        img, lab = samples.nuclei_2d((96, 96), seed=40 + k)
        tifffile.imwrite(img_dir / f"{name}.tif", _noisy(img) if name == "b" else img)
        tifffile.imwrite(lab_dir / f"{name}.tif", lab if name == "a" else np.zeros_like(lab))
    out = tmp_path / "rank.csv"
    rc = cli.main(["suggest", "--model", str(model.info.path), "--images", str(img_dir),
                   "--labels", str(lab_dir), "-n", "1", "--csv", str(out), "-q"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "image", "item", "tile", "uncertainty", "objects"]
    assert lines[1].split()[:2] == ["1", "b.tif"] and "1 of 2" in lines[2]
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == ["b.tif", "c.tif"]           # a.tif is annotated
    assert float(rows[0]["uncertainty"]) > float(rows[1]["uncertainty"])
    assert not list(tmp_path.glob(".rank.csv*"))
    assert cli.main(["suggest", "--model", str(model.info.path), "--images", str(img_dir), "-n", "0"]) == 2
    assert "-n must be at least 1" in capsys.readouterr().err


def test_focus():
    s = Suggestion("big", (3,), "T", "t=3", (512, 0, 1024, 512), 0.4, 7)
    centre, extent = suggest.focus(s, "TCYX", (5, 2, 2000, 1500))
    assert centre == [3.0, 0.0, 767.5, 255.5] and extent == [0.0, 0.0, 512.0, 512.0]
    whole = Suggestion("cells", (2,), "Z", "z=2", None, 0.4, 7)
    assert suggest.focus(whole, "ZYX", (4, 96, 64)) == ([2.0, 47.5, 31.5], [0.0, 96.0, 64.0])


def test_cli_suggest_a_stack(model, tmp_path, capsys):
    import tifffile

    from napari_dlbio import cli

    tifffile.imwrite(tmp_path / "stack.tif", _stack(n=3, noisy=(1,)))   # (3, 96, 96): Z for a 1-channel model
    assert cli.main(["suggest", "--model", str(model.info.path), "--images", str(tmp_path / "stack.tif"),
                     "-n", "1", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["1", "stack.tif", "z=1"] and "1 of 3" in lines[2]


class _ImageModel:
    """A restoration model as the ranking sees it (only ModelBase's public face): output = image."""

    output, n_channels = "image", 1

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def coerce_predict(self, settings):
        return settings

    def item_ndim(self, settings):
        return 2

    def accepts_channels(self, n):
        return n == 1

    def predict(self, item, settings, ctx=None):
        # Not flip-equivariant where the image is bright: the output depends on the orientation there.
        ramp = np.linspace(0, 1, item.shape[-1], dtype=np.float32)
        return {"image": 2 * item + self.skew * item * ramp}


def test_image_models_rank_by_normalised_variance():
    rng = np.random.default_rng(0)
    stack = rng.random((3, 32, 40), dtype=np.float32)
    assert suggest.item_uncertainty(_ImageModel(0.0), stack[:1]) == (0.0, 0)
    found = suggest.suggest(_ImageModel(1.0), [Source("noisy", stack, "ZYX")])
    assert sorted(s.index for s in found) == [(0,), (1,), (2,)] and all(s.n_objects == 0 for s in found)
    assert all(s.score > 0.01 for s in found)
    # Normalised: the same image 10x brighter is just as uncertain.
    a = suggest.item_uncertainty(_ImageModel(1.0), stack[:1])[0]
    assert suggest.item_uncertainty(_ImageModel(1.0), 10 * stack[:1])[0] == pytest.approx(a, rel=1e-5)
