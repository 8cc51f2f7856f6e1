"""Formats for images larger than memory: OME-Zarr / zarr / TIFF inputs and outputs (no model needed)."""

import errno
import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_dlbio import ngff
from napari_dlbio import output_layout as outputs

ome_zarr = pytest.importorskip("ome_zarr")
from ome_zarr.format import FormatV04, FormatV05  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr.writer import write_multiscale  # noqa: E402

VERSIONS = {"0.4": FormatV04(), "0.5": FormatV05()}


def _ngff_input(path: Path, version: str, data: np.ndarray, axes: str, scale, translate) -> Path:
    """An NGFF image of two levels written by ome-zarr's own writer in ``version``."""
    fmt = VERSIONS[version]
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    half = data[..., ::2, ::2]
    shift = {"type": "translation", "translation": list(translate)}
    transforms = [[{"type": "scale", "scale": list(scale)}, shift],
                  [{"type": "scale", "scale": list(scale[:-2]) + [2 * scale[-2], 2 * scale[-1]]}, shift]]
    write_multiscale([data, half], group, fmt=fmt, axes=list(axes.lower()),
                     coordinate_transformations=transforms)
    return path


def _nodes(path: Path) -> list:
    return list(Reader(parse_url(str(path)))())


# --- reading ---------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ngff_inputs_of_both_versions(tmp_path, version):
    data = np.random.default_rng(0).integers(0, 255, (2, 3, 40, 56), dtype=np.uint8)
    p = _ngff_input(tmp_path / "in.ome.zarr", version, data, "CZYX", (1.0, 2.0, 0.25, 0.5),
                    (0.0, 4.0, 10.0, -3.0))
    img = ngff.open_image(p)
    assert img.axes == "CZYX" and img.ngff_version == version
    assert img.scale == (1.0, 2.0, 0.25, 0.5) and img.translate == (0.0, 4.0, 10.0, -3.0)
    assert isinstance(img.array, zarr.Array)  # lazy: nothing read yet
    assert img.array.shape == data.shape and img.array.dtype == np.uint8
    np.testing.assert_array_equal(img.array[1, 2, 5:9], data[1, 2, 5:9])
    # A worker reopens the same pixels from the picklable source.
    src = pickle.loads(pickle.dumps(img.source))
    assert src == ngff.ImageSource(str(p), "ome-zarr", "s0")
    np.testing.assert_array_equal(src.open()[0, 1], data[0, 1])


def test_other_ngff_versions_are_refused_by_name(tmp_path):
    old = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=2)
    old.create_array("0", shape=(8, 8), dtype="u1")
    old.attrs["multiscales"] = [{"version": "0.3", "axes": ["y", "x"], "datasets": [{"path": "0"}]}]
    refused = r"old.zarr is OME-Zarr \(NGFF\) 0.3; napari-dlbio reads NGFF 0.4 and 0.5"
    with pytest.raises(ValueError, match=refused):
        ngff.open_image(tmp_path / "old.zarr")
    new = zarr.open_group(str(tmp_path / "new.zarr"), mode="w")
    new.create_array("0", shape=(8, 8), dtype="u1")
    new.attrs["ome"] = {"version": "0.6", "multiscales": [{"axes": [], "datasets": [{"path": "0"}]}]}
    with pytest.raises(ValueError, match=r"\(NGFF\) 0.6"):
        ngff.open_image(tmp_path / "new.zarr")


def test_invalid_ngff_metadata_names_the_store(tmp_path):
    g = zarr.open_group(str(tmp_path / "bad.ome.zarr"), mode="w", zarr_format=2)
    g.create_array("0", shape=(8, 8), dtype="u1")
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "y"}], "datasets": [{"path": "0"}]}]
    with pytest.raises(ValueError, match="bad.ome.zarr: invalid OME-Zarr 0.4 metadata"):
        ngff.open_image(tmp_path / "bad.ome.zarr")


def test_plain_zarr_inputs(tmp_path):
    data = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    zarr.create_array(str(tmp_path / "plain.zarr"), data=data)
    img = ngff.open_image(tmp_path / "plain.zarr")
    assert img.axes is None and img.source.kind == "zarr"  # the caller guesses, as for TIFFs
    assert "without OME-Zarr (NGFF) metadata; axes guessed" in img.note
    np.testing.assert_array_equal(img.array[2], data[2])

    zarr.create_array(str(tmp_path / "named.zarr"), data=data, dimension_names=["z", "y", "x"])
    assert ngff.open_image(tmp_path / "named.zarr").axes == "ZYX"

    g = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    g.create_array("raw", data=data)
    one = ngff.open_image(tmp_path / "group.zarr")
    assert one.source == ngff.ImageSource(str(tmp_path / "group.zarr"), "zarr", "raw")
    np.testing.assert_array_equal(one.source.open()[1], data[1])
    g.create_array("other", data=data)
    with pytest.raises(ValueError, match=r"holds 2 arrays \(other, raw\); give the array's path"):
        ngff.open_image(tmp_path / "group.zarr")


def test_paths_that_are_neither(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="is a folder but not a zarr store"):
        ngff.open_image(tmp_path / "folder")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="neither a TIFF/PNG/JPEG file nor an OME-Zarr/zarr folder"):
        ngff.open_image(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        ngff.open_image(tmp_path / "missing.tif")


def test_tiff_inputs_are_lazy_and_reopenable(tmp_path):
    img = np.arange(4 * 32 * 32, dtype=np.uint16).reshape(4, 32, 32)
    tifffile.imwrite(tmp_path / "plain.tif", img, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "packed.tif", img, compression="zlib", tile=(16, 16))
    with ngff.open_image(tmp_path / "plain.tif") as f:
        assert isinstance(f.array, np.memmap) and f.axes == "ZYX"
    with ngff.open_image(tmp_path / "packed.tif") as f:
        assert isinstance(f.array, zarr.Array)  # compressed: read chunk-wise through tifffile's store
        np.testing.assert_array_equal(f.array[1], img[1])
        src = pickle.loads(pickle.dumps(f.source))
    np.testing.assert_array_equal(np.asarray(src.open()[3]), img[3])


# --- writing ---------------------------------------------------------------------------------
def _blocks(arr, values: np.ndarray, edge: int) -> None:
    """Write ``values`` block by block, as the blockwise engine does (each block its own chunks)."""
    for y in range(0, values.shape[-2], edge):
        for x in range(0, values.shape[-1], edge):
            sel = (..., slice(y, y + edge), slice(x, x + edge))
            arr[sel] = values[sel]


def test_ome_zarr_output_round_trip(tmp_path):
    src_data = np.zeros((2, 40, 56), np.uint8)
    src = _ngff_input(tmp_path / "in.ome.zarr", "0.5", src_data, "ZYX", (2.0, 0.5, 0.5), (0.0, 10.0, 20.0))
    inp = ngff.open_image(src)
    shape = (2, 2100, 1101)  # > 1024 px: a pyramid of 3 levels
    final = ngff.output_path(tmp_path / "out", src, "ome-zarr")
    assert final == tmp_path / "out" / "in.ome.zarr"
    (tmp_path / "out").mkdir()
    chunks = ngff.default_chunks("ZYX", shape, ndim=3)
    out = ngff.output_factory(final, "ome-zarr", "ZYX", inp.scale, inp.translate, chunks, ndim=3,
                              source=inp.source, units={"Y": "micrometer", "X": "micrometer"})
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 50, shape, dtype=np.int64).astype(np.uint32)
    prob = rng.random((1,) + shape, dtype=np.float32)
    # Writers in other processes reopen the arrays by path.
    out("labels", shape, np.uint32)
    _blocks(zarr.open(out.array_path("labels"), mode="r+"), labels, 512)
    _blocks(out("probability", prob.shape, np.float32), prob, 512)
    assert not final.exists() and (tmp_path / "out" / ".in.ome.zarr.partial").is_dir()
    assert out.finalize(attrs={"model": "tiny"}) == [final]
    assert not (tmp_path / "out" / ".in.ome.zarr.partial").exists()

    # ome-zarr's reader: the label image, its pyramid, and the input image it points to (not copied).
    nodes = {n.zarr.path: n for n in _nodes(final / "labels" / "labels")}
    lab_node = nodes[str((final / "labels" / "labels").resolve())]
    assert [d.shape for d in lab_node.data] == [(2, 2100, 1101), (2, 1050, 551), (2, 525, 276)]
    assert str(src.resolve()) in nodes  # image-label.source.image resolves to the input
    np.testing.assert_array_equal(np.asarray(lab_node.data[1]), labels[:, ::2, ::2])
    t = lab_node.metadata["coordinateTransformations"]
    assert t[1] == [{"type": "scale", "scale": [2.0, 1.0, 1.0]},
                    {"type": "translation", "translation": [0.0, 10.0, 20.0]}]
    prob_node = _nodes(final / "probability")[0]
    assert [d.shape for d in prob_node.data] == [(1, 2, 2100, 1101), (1, 2, 1050, 550), (1, 2, 525, 275)]
    mean = prob[..., :2100, :1100].reshape(1, 2, 1050, 2, 550, 2).mean(axis=(3, 5))
    assert np.abs(np.asarray(prob_node.data[1]) - mean).max() < 1e-6
    # A mean level's pixel is centred on the pixels it averages.
    assert prob_node.metadata["coordinateTransformations"][1][1]["translation"] == [0.0, 0.0, 10.25, 20.25]
    assert prob_node.metadata["axes"][2] == {"name": "y", "type": "space", "unit": "micrometer"}

    # Valid NGFF by the reference pydantic models (ome-zarr-models).
    from ome_zarr_models import open_ome_zarr

    assert type(open_ome_zarr(zarr.open_group(str(final / "labels"), mode="r"))).__name__ == "Labels"
    label_image = open_ome_zarr(zarr.open_group(str(final / "labels" / "labels"), mode="r"))
    assert type(label_image).__name__ == "ImageLabel"
    assert type(open_ome_zarr(zarr.open_group(str(final / "probability"), mode="r"))).__name__ == "Image"

    # Our reader (napari-ome-zarr is not a dependency) and the provenance.
    back = ngff.open_image(final / "labels" / "labels")
    assert (back.axes, back.scale, back.translate) == ("ZYX", (2.0, 0.5, 0.5), (0.0, 10.0, 20.0))
    assert back.array.dtype == np.uint32 and back.array.shape == shape
    attrs = zarr.open_group(str(final), mode="r").attrs["napari-dlbio"]
    assert attrs["source"] == {"path": str(src.resolve()), "kind": "ome-zarr", "dataset": "s0"}
    assert attrs["outputs"] == {"labels": {"path": "labels/labels", "axes": "ZYX", "ngff": True},
                                "probability": {"path": "probability", "axes": "CZYX", "ngff": True}}
    assert attrs["model"] == "tiny"
    # What the Predict dock opens as layers: each output's pyramid with level 0's scale/offset.
    layers = {layer.name: layer for layer in ngff.open_output(final)}
    assert layers["labels"].kind == "labels" and layers["probability"].kind == "image"
    assert [a.shape for a in layers["labels"].data] == [(2, 2100, 1101), (2, 1050, 551), (2, 525, 276)]
    assert layers["probability"].translate == (0.0, 0.0, 10.0, 20.0)


@pytest.mark.skipif(importlib.util.find_spec("napari_ome_zarr") is None,
                    reason="napari-ome-zarr is not installed (our reader reads the output above)")
def test_napari_ome_zarr_reads_the_output(tmp_path):
    from napari_ome_zarr import napari_get_reader

    out = ngff.output_factory(tmp_path / "x.ome.zarr", "ome-zarr", "YX", chunks=(64, 64))
    out("labels", (100, 100), np.int32)[10:20, 10:20] = 3
    out.finalize()
    path = str(tmp_path / "x.ome.zarr" / "labels" / "labels")
    layers = napari_get_reader(path)(path)
    assert any(layer[-1] == "labels" for layer in layers)


def test_ngff_04_output_and_image_output(tmp_path):
    """NGFF 0.4 (zarr v2, nested chunk keys) and an image output (Noise2Void) as the store's own image."""
    out = ngff.output_factory(tmp_path / "d.ome.zarr", "ome-zarr", "TYX", (1.0, 0.3, 0.3), None, (1, 64, 64),
                              ngff_version="0.4")
    den = np.random.default_rng(2).random((3, 100, 90), dtype=np.float32)
    _blocks(out("image", den.shape, np.float32), den, 64)
    out.finalize()
    store = tmp_path / "d.ome.zarr"
    assert (store / ".zattrs").is_file() and (store / "0" / "2" / "1" / "1").is_file()  # t/y/x nested
    from ome_zarr_models import open_ome_zarr

    assert type(open_ome_zarr(zarr.open_group(str(store), mode="r"), version="0.4")).__name__ == "Image"
    back = ngff.open_image(tmp_path / "d.ome.zarr")
    assert back.ngff_version == "0.4" and back.axes == "TYX" and back.scale == (1.0, 0.3, 0.3)
    np.testing.assert_array_equal(back.array[...], den)


def test_outputs_ngff_cannot_order_stay_plain_arrays(tmp_path):
    assert outputs.ngff_order_ok("TCZYX") and outputs.ngff_order_ok("CYX")
    assert not outputs.ngff_order_ok("ZCYX") and not outputs.ngff_order_ok("YXC")
    # A 2D model's probabilities of a Z stack are ZCYX: kept as a plain array, not a failed run.
    out = ngff.output_factory(tmp_path / "z.ome.zarr", "ome-zarr", "ZYX", chunks=(1, 8, 8), ndim=2)
    out("labels", (3, 8, 8), np.int32)[...] = 2
    out("probability", (3, 2, 8, 8), np.float32)[...] = 0.5
    out.finalize()
    meta = zarr.open_group(str(tmp_path / "z.ome.zarr"), mode="r").attrs["napari-dlbio"]["outputs"]
    assert meta == {"labels": {"path": "labels/labels", "axes": "ZYX", "ngff": True},
                    "probability": {"path": "probability", "axes": "ZCYX", "ngff": False}}
    prob = ngff.open_image(tmp_path / "z.ome.zarr" / "probability")
    assert prob.axes == "ZCYX" and prob.array[...].min() == 0.5
    assert ngff.open_image(tmp_path / "z.ome.zarr" / "labels" / "labels").axes == "ZYX"
    plain = [layer for layer in ngff.open_output(tmp_path / "z.ome.zarr") if layer.name == "probability"]
    assert plain[0].axes == "ZCYX" and plain[0].data[0].shape == (3, 2, 8, 8) and plain[0].scale == (1.0,) * 4


def test_zarr_output_and_resume(tmp_path):
    final = tmp_path / "s.zarr"
    out = ngff.output_factory(final, "zarr", "ZYX", (3.0, 1.0, 1.0), (0.0, 5.0, 5.0), (1, 32, 32))
    arr = out("labels", (4, 70, 70), np.int32)
    arr[0] = 7
    # Interrupted here; the rerun with --resume finds the same array with its blocks.
    again = ngff.output_factory(final, "zarr", "ZYX", (3.0, 1.0, 1.0), (0.0, 5.0, 5.0), (1, 32, 32),
                                resume=True)
    arr2 = again("labels", (4, 70, 70), np.int32)
    assert again.array_path("labels") == out.array_path("labels") and arr2[0].min() == 7
    other = ngff.output_factory(final, "zarr", "ZYX", chunks=(1, 32, 32), resume=True)
    with pytest.raises(ValueError, match=r"cannot resume .*\(5, 70, 70\).*rerun without --resume"):
        other("labels", (5, 70, 70), np.int32)
    arr2[1:] = 9
    again.finalize()
    back = ngff.open_image(final / "labels")
    assert back.axes == "ZYX" and back.array[0].min() == back.array[0].max() == 7
    assert back.array[1:].min() == back.array[1:].max() == 9
    assert zarr.open_group(str(final), mode="r").attrs["napari-dlbio"]["scale"]["labels"] == [3.0, 1.0, 1.0]
    # Without --resume a new run starts afresh (the old working store is removed).
    fresh = ngff.output_factory(final, "zarr", "ZYX", chunks=(1, 32, 32))
    assert fresh("labels", (4, 70, 70), np.int32)[0].max() == 0
    fresh.discard()
    assert not outputs.working_path(final).exists() and final.is_dir()


def test_tiff_outputs_staged_in_zarr_are_converted_band_by_band(tmp_path):
    final = tmp_path / "big.tif"
    out = ngff.output_factory(final, "tif", "ZYX", chunks=(1, 64, 64))
    lab = np.random.default_rng(3).integers(0, 1000, (2, 300, 200), dtype=np.int32)
    prob = np.random.default_rng(4).random((2, 1, 300, 200), dtype=np.float32)
    out("labels", lab.shape, np.int32)
    _blocks(zarr.open(out.array_path("labels"), mode="r+"), lab, 64)
    _blocks(out("probability", prob.shape, np.float32), prob, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".big.tif.partial.zarr"]
    written = out.finalize()
    assert written == [final, tmp_path / "big_probability.tif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "big_probability.tif"]
    with tifffile.TiffFile(final) as tf:
        assert tf.series[0].axes == "ZYX" and tf.pages[0].is_tiled
        np.testing.assert_array_equal(tf.asarray(), lab)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "big_probability.tif"), prob)


def test_memory_mapped_tiff_outputs_as_before(tmp_path):
    out = ngff.output_factory(tmp_path / "a.tif", "tif", "YX")
    arr = out("labels", (40, 30), np.int32)
    assert isinstance(arr, np.memmap) and out.resumable is False
    with pytest.raises(ValueError, match="in this process only"):
        out.array_path("labels")
    arr[5:10] = 4
    assert [p.name for p in tmp_path.iterdir()] == [".a.tif.partial"]
    assert out.commit() == [tmp_path / "a.tif"]
    assert tifffile.imread(tmp_path / "a.tif")[5:10].min() == 4


# --- rules and bad situations ------------------------------------------------------------------
def test_names_and_default_format():
    assert outputs.stem("a/cells.ome.zarr") == "cells" and outputs.stem("x.b.tif") == "x.b"
    assert ngff.output_path("o", "in/x.ome.tif", "ome-zarr") == Path("o/x.ome.zarr")
    assert ngff.output_path("o", "in/x.tiff", "tif") == Path("o/x.tiff")
    assert ngff.output_path("o", "in/x.png", "tif") == Path("o/x.tif")
    assert ngff.output_path("o", "in/x.zarr", "tif") == Path("o/x.tif")
    gb = 1024**3
    assert ngff.default_format("ome-zarr", 10, "YX") == "ome-zarr"
    assert ngff.default_format("tiff", 1 * gb, "ZYX") == "tif"
    assert ngff.default_format("tiff", 3 * gb, "ZYX") == "ome-zarr"
    assert ngff.default_format("zarr", 1 * gb, "YX") == "tif"
    assert ngff.default_format("tiff", 3 * gb, "ZCYX") == "zarr"  # NGFF cannot order ImageJ's axes
    assert ngff.default_chunks("TZCYX", (5, 40, 2, 3000, 100), ndim=2) == (1, 1, 2, 256, 100)
    assert ngff.default_chunks("ZYX", (200, 3000, 3000), ndim=3, block_size=512) == (64, 256, 256)
    assert ngff.default_chunks("YX", (3000, 3000), block_size=300) == (300, 300)


def test_disk_full_is_recognised_through_wrapping_errors():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("block (0, 3) failed twice") from exc
    except RuntimeError as wrapped:
        assert ngff.is_disk_full(wrapped)
    assert not ngff.is_disk_full(OSError(errno.EACCES, "denied"))


def test_read_only_output_folder_is_named(tmp_path):
    if os.geteuid() == 0:
        target = Path("/sys/napari-dlbio-out")  # sysfs refuses new files even to root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "out"
    with pytest.raises(PermissionError, match=f"cannot write to the output folder {target}"):
        ngff.check_writable(target)
    assert json.dumps(str(target))  # nothing else to check: no file was made
