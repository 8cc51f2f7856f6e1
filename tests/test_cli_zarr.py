"""``napari-dlbio predict`` on OME-Zarr/zarr inputs and into OME-Zarr/zarr outputs, and its bad cases."""

import errno
import inspect
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_dlbio import cli, samples, tasks

pytest.importorskip("torch")
pytest.importorskip("ome_zarr")
from ome_zarr.format import FormatV04  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr.writer import write_image  # noqa: E402

TINY = ["--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "2", "--patch-size", "32", "--depth", "2",
        "--base-width", "4", "--val-patches", "2", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """A tiny U-Net saved in a folder (trained once for the module, a few seconds)."""
    root = tmp_path_factory.mktemp("tiny")
    for sub in ("images", "labels"):
        (root / sub).mkdir()
    for k in range(3):
        img, lab = samples.nuclei_2d((48, 48), seed=k, radius=(4, 7))
        tifffile.imwrite(root / "images" / f"c{k}.tif", img)
        tifffile.imwrite(root / "labels" / f"c{k}.tif", lab)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAPARI_DLBIO_HOME", str(root / "home"))
        rc = cli.main(["train", "--images", str(root / "images"), "--labels", str(root / "labels"),
                       "--out", str(root / "model"), *TINY])
    assert rc == 0
    return str(root / "model")


@pytest.fixture
def image() -> np.ndarray:
    return samples.nuclei_2d((96, 80), seed=7, radius=(4, 7))[0]


def _ome_input(path: Path, img: np.ndarray) -> Path:
    """An NGFF 0.4 image (as many public datasets are) with a pixel size."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(img, group, axes="yx", fmt=FormatV04(), scale={"y": 0.65, "x": 0.65}, scale_factors=(2,))
    return path


def _run(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(["predict", *map(str, argv)])
    return rc, capsys.readouterr().err


def test_ome_zarr_input_gives_ome_zarr_labels_equal_to_tiff(model, image, tmp_path, capsys):
    src = _ome_input(tmp_path / "cells.ome.zarr", image)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    rc, err = _run(capsys, "--model", model, src, "--out", tmp_path / "z", "--min-size", "0")
    assert rc == 0, err
    rc, err = _run(capsys, "--model", model, tmp_path / "cells.tif", "--out", tmp_path / "t",
                   "--min-size", "0")
    assert rc == 0, err
    store = tmp_path / "z" / "cells.ome.zarr"
    # OME-Zarr is the default for OME-Zarr inputs.
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == ["cells.ome.zarr"]
    expected = tifffile.imread(tmp_path / "t" / "cells.tif")
    labels = zarr.open_array(str(store / "labels" / "labels" / "0"), mode="r")
    assert expected.max() > 0 and labels.dtype == expected.dtype
    np.testing.assert_array_equal(labels[...], expected)
    # NGFF 0.4 like its input, the input's pixel size, and the input shown under it (copy-free).
    assert (store / "labels" / "labels" / ".zattrs").is_file()
    nodes = list(Reader(parse_url(str(store / "labels" / "labels")))())
    assert [n.data[0].shape for n in nodes] == [(96, 80), (96, 80)]  # the input image, then the labels
    assert nodes[0].zarr.path == str(src.resolve())
    assert nodes[1].metadata["coordinateTransformations"][0][0]["scale"] == [0.65, 0.65]
    attrs = zarr.open_group(str(store), mode="r").attrs["napari-dlbio"]
    assert attrs["source"]["path"] == str(src.resolve()) and attrs["model"] == "model"


def test_out_format_zarr_and_ome_zarr_for_a_tiff(model, image, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", image)
    for fmt in ("zarr", "ome-zarr"):
        rc, err = _run(capsys, "--model", model, tmp_path / "a.tif", "--out", tmp_path / fmt,
                       "--out-format", fmt, "--probabilities", "-q")
        assert rc == 0, err
    plain = zarr.open_group(str(tmp_path / "zarr" / "a.zarr"), mode="r")
    assert plain["labels"].metadata.dimension_names == ("y", "x")
    assert plain["probability"].shape[-2:] == (96, 80)
    ome = tmp_path / "ome-zarr" / "a.ome.zarr"
    ome_labels = zarr.open_array(str(ome / "labels/labels/0"), mode="r")[...]
    np.testing.assert_array_equal(ome_labels, plain["labels"][...])
    assert zarr.open_array(str(ome / "probability/0"), mode="r").dtype == np.float32
    assert zarr.open_group(str(ome), mode="r").attrs["napari-dlbio"]["source"]["kind"] == "tiff"


def test_folders_of_zarr_stores_and_plain_zarr(model, image, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _ome_input(folder / "a.ome.zarr", image)
    tifffile.imwrite(folder / "b.tif", image)
    zarr.create_array(str(folder / "c.zarr"), data=image)  # no NGFF metadata: axes guessed
    rc, err = _run(capsys, "--model", model, folder, "--out", tmp_path / "out")
    assert rc == 0, err
    assert "c.zarr: a zarr array without OME-Zarr (NGFF) metadata; axes guessed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ome.zarr", "b.tif", "c.tif"]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "b.tif"),
                                  tifffile.imread(tmp_path / "out" / "c.tif"))


def test_an_input_is_never_overwritten(model, image, tmp_path, capsys):
    src = _ome_input(tmp_path / "x.ome.zarr", image)
    rc, err = _run(capsys, "--model", model, src, "--out", tmp_path)
    assert rc == 2 and "--out would overwrite the input" in err


def test_read_only_output_fails_before_any_compute(model, image, tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "a.tif", image)
    if os.geteuid() == 0:
        target = Path("/sys/napari-dlbio-out")  # sysfs refuses new files even to root
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        target = tmp_path / "ro" / "out"
    monkeypatch.setattr(tasks, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    rc, err = _run(capsys, "--model", model, tmp_path / "a.tif", "--out", target)
    assert rc == 2 and f"cannot write to the output folder {target}" in err and "\n" not in err.strip()


def _engine_without_block_options(monkeypatch):
    """Until the blockwise engine (tasks.predict's block options) is merged, drop its options."""
    if "resume" in inspect.signature(tasks.predict).parameters:
        return
    real = tasks.predict

    def predict(*a, block_size=None, overlap=None, memory_limit=None, resume=None, **k):
        return real(*a, **k)

    monkeypatch.setattr(tasks, "predict", predict)


def test_full_disk_stops_with_one_message_and_resume_finishes(model, image, tmp_path, capsys, monkeypatch):
    from zarr.storage import LocalStore

    _engine_without_block_options(monkeypatch)
    src = _ome_input(tmp_path / "cells.ome.zarr", image)
    real_set = LocalStore.set

    async def full(self, key, value):
        if "/0/" in key and not key.endswith((".zarray", ".zattrs", "zarr.json")):  # the first chunk of data
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real_set(self, key, value)

    monkeypatch.setattr(LocalStore, "set", full)
    rc, err = _run(capsys, "--model", model, src, "--out", tmp_path / "out", "--min-size", "0", "-q")
    assert rc == 2, err
    assert "no space left on the device writing to" in err and "rerun the same command with --resume" in err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".cells.ome.zarr.partial"]  # kept for --resume
    monkeypatch.setattr(LocalStore, "set", real_set)  # space was freed
    rc, err = _run(capsys, "--model", model, src, "--out", tmp_path / "out", "--min-size", "0", "--resume")
    assert rc == 0, err
    rc, err = _run(capsys, "--model", model, src, "--out", tmp_path / "ref", "--min-size", "0", "-q")
    done = zarr.open_array(str(tmp_path / "out" / "cells.ome.zarr" / "labels/labels/0"), mode="r")[...]
    ref = zarr.open_array(str(tmp_path / "ref" / "cells.ome.zarr" / "labels/labels/0"), mode="r")[...]
    assert ref.max() > 0
    np.testing.assert_array_equal(done, ref)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cells.ome.zarr"]


def test_resume_skips_finished_inputs(model, image, tmp_path, capsys, monkeypatch):
    _engine_without_block_options(monkeypatch)
    tifffile.imwrite(tmp_path / "a.tif", image)
    assert _run(capsys, "--model", model, tmp_path / "a.tif", "--out", tmp_path / "o", "-q")[0] == 0
    before = (tmp_path / "o" / "a.tif").stat().st_mtime_ns
    rc, err = _run(capsys, "--model", model, tmp_path / "a.tif", "--out", tmp_path / "o", "--resume")
    assert rc == 0 and "a.tif: finished by an earlier run" in err
    assert (tmp_path / "o" / "a.tif").stat().st_mtime_ns == before


def test_block_options_reach_the_engine_only_when_given(model, image, tmp_path, capsys, monkeypatch):
    seen = []
    real = tasks.predict

    def spy(*a, **k):
        seen.append({key: k[key] for key in ("block_size", "overlap", "memory_limit", "resume") if key in k})
        return real(*a, **{key: v for key, v in k.items() if key not in seen[-1]})

    monkeypatch.setattr(tasks, "predict", spy)
    tifffile.imwrite(tmp_path / "a.tif", image)
    assert _run(capsys, "--model", model, tmp_path / "a.tif", "--out", tmp_path / "o", "-q")[0] == 0
    rc, err = _run(capsys, "--model", model, tmp_path / "a.tif", "--out", tmp_path / "p",
                   "--block-size", "64", "--block-overlap", "8", "--memory-limit", "1.5GiB", "-q")
    assert rc == 0, err
    assert seen == [{}, {"block_size": 64, "overlap": 8, "memory_limit": 1536 * 2**20}]
    # Blocks asked for: the TIFF is staged in chunks of the block size, then converted.
    blocks, plain = (tifffile.imread(tmp_path / d / "a.tif") for d in ("p", "o"))
    np.testing.assert_array_equal(blocks, plain)


@pytest.mark.parametrize("argv, message", [
    (["--block-size", "8"], "--block-size must be at least 16"),
    (["--block-size", "64", "--block-overlap", "32"], "--block-overlap must be between 0 and half"),
    (["--memory-limit", "lots"], "--memory-limit takes a size like 2GB"),
])
def test_bad_block_options(model, image, tmp_path, capsys, argv, message):
    tifffile.imwrite(tmp_path / "a.tif", image)
    rc, err = _run(capsys, "--model", model, tmp_path / "a.tif", "--out", tmp_path / "o", *argv)
    assert rc == 2 and message in err


def test_objects_are_counted_from_the_zarr_output(model, image, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", image)
    rc, err = _run(capsys, "--model", model, tmp_path / "a.tif", "--out", tmp_path / "o",
                   "--out-format", "ome-zarr")
    assert rc == 0, err
    n = int(zarr.open_array(str(tmp_path / "o" / "a.ome.zarr" / "labels/labels/0"), mode="r")[...].max())
    assert n > 0 and f"a.tif: {n} object(s) -> {tmp_path / 'o' / 'a.ome.zarr'}" in err
