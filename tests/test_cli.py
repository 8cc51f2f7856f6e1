"""The napari-dlbio command: train / predict / models / demo on tiny synthetic folders."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from napari_dlbio import cli, samples, store

pytest.importorskip("torch")

# A U-Net small enough to train a few steps in a second or two.
TINY = [
    "--epochs",
    "2",
    "--steps-per-epoch",
    "3",
    "--batch-size",
    "2",
    "--patch-size",
    "32",
    "--depth",
    "2",
    "--base-width",
    "4",
    "--val-patches",
    "2",
    "--device",
    "cpu",
]


@pytest.fixture
def folders(tmp_path):
    img_dir, lab_dir = tmp_path / "images", tmp_path / "labels"
    img_dir.mkdir()
    lab_dir.mkdir()
    for k in range(3):
        img, lab = samples.nuclei_2d((48, 48), seed=k, radius=(4, 7))
        tifffile.imwrite(img_dir / f"cells_{k}.tif", img)
        tifffile.imwrite(lab_dir / f"cells_{k}.tif", lab)
    return img_dir, lab_dir


@pytest.fixture
def trained(folders, capsys):
    img_dir, lab_dir = folders
    rc = cli.main(["train", "--images", str(img_dir), "--labels", str(lab_dir), "--out", "tiny", "-q", *TINY])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    return "tiny"


def test_train_predict_models(folders, trained, tmp_path, capsys):
    img_dir, _ = folders
    info = store.read_info(store.resolve("tiny"))
    assert info.backend == "unet" and info.settings["patch_size"] == 32 and info.settings["epochs"] == 2
    assert len(info.history) == 2 and "ap50" in info.metrics
    assert info.provenance["folders"]["images"] == str(img_dir)

    out = tmp_path / "pred"
    rc = cli.main(
        ["predict", "--model", "tiny", str(img_dir), "--out", str(out), "--probabilities", "--min-size", "0"]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "wrote 6 file(s)" in cap.out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"cells_{k}.tif" for k in range(3)] + [f"cells_{k}_probability.tif" for k in range(3)]
    )
    lab = tifffile.imread(out / "cells_0.tif")
    assert lab.shape == (48, 48) and lab.dtype == np.int32
    prob = tifffile.imread(out / "cells_0_probability.tif")
    assert prob.dtype == np.float32 and prob.shape[-2:] == (48, 48)

    assert cli.main(["models"]) == 0
    table = capsys.readouterr().out
    assert "tiny" in table and "unet" in table
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["backend"]) for r in rows] == [("tiny", "unet")]
    assert rows[0]["path"] == str(store.store_root() / "tiny")


def test_predict_stacks_keep_their_axes(trained, tmp_path, capsys):
    img, _ = samples.nuclei_3d((3, 40, 40), seed=0)
    tifffile.imwrite(tmp_path / "zstack.tif", img)  # guessed: ZYX
    tifffile.imwrite(tmp_path / "movie.tif", img[:, None], imagej=True, metadata={"axes": "TCYX"})
    out = tmp_path / "out"
    rc = cli.main(
        [
            "predict",
            "--model",
            "tiny",
            str(tmp_path / "zstack.tif"),
            str(tmp_path / "movie.tif"),
            "--out",
            str(out),
            "-q",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    z = tifffile.imread(out / "zstack.tif")
    m = tifffile.imread(out / "movie.tif")
    assert z.shape == (3, 40, 40) and m.shape == (3, 40, 40)
    with tifffile.TiffFile(out / "movie.tif") as f:
        assert f.series[0].axes == "TYX"


def test_fine_tune_from_a_model(folders, trained, capsys):
    img_dir, lab_dir = folders
    rc = cli.main(
        [
            "train",
            "--images",
            str(img_dir),
            "--labels",
            str(lab_dir),
            "--out",
            "tuned",
            "--from",
            "tiny",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "-q",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    info = store.read_info(store.resolve("tuned"))
    assert info.provenance["fine_tuned_from"]["name"] == "tiny"
    assert info.settings["base_width"] == 4 and info.settings["epochs"] == 1


def _error(capsys, argv, code=2):
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    last = err.splitlines()[-1]
    assert last.startswith("napari-dlbio: error: ") and "Traceback" not in err, err
    return last


def test_errors_are_one_line(folders, trained, tmp_path, capsys):
    img_dir, lab_dir = folders
    assert "no model named or at 'ghost'" in _error(
        capsys, ["predict", "--model", "ghost", str(img_dir), "--out", str(tmp_path / "o")]
    )
    assert "no such file or folder" in _error(
        capsys, ["predict", "--model", "tiny", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "o")]
    )
    assert "axes 'ZYX' name 3 dimensions" in _error(
        capsys, ["predict", "--model", "tiny", str(img_dir), "--out", str(tmp_path / "o"), "--axes", "ZYX"]
    )
    assert "--labels is required" in _error(capsys, ["train", "--images", str(img_dir), "--out", "x"])
    assert "multiple of 2**depth" in _error(
        capsys,
        [
            "train",
            "--images",
            str(img_dir),
            "--labels",
            str(lab_dir),
            "--out",
            "x",
            "--patch-size",
            "60",
            "--depth",
            "3",
        ],
    )
    assert "needs a Z axis" in _error(
        capsys, ["train", "--images", str(img_dir), "--labels", str(lab_dir), "--out", "x", "--ndim", "3"]
    )
    assert "exists; choose another --out or pass --overwrite" in _error(
        capsys, ["train", "--images", str(img_dir), "--labels", str(lab_dir), "--out", "tiny"]
    )
    assert "would overwrite the input" in _error(
        capsys, ["predict", "--model", "tiny", str(img_dir), "--out", str(img_dir)]
    )
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    assert "cannot read" in _error(
        capsys, ["predict", "--model", "tiny", str(bad), "--out", str(tmp_path / "o")]
    )
    not_model = tmp_path / "folder"
    not_model.mkdir()
    assert "not a napari-dlbio model" in _error(
        capsys, ["predict", "--model", str(not_model), str(img_dir), "--out", str(tmp_path / "o")]
    )
    # argparse's own usage errors keep its usage line but exit 2 as well
    assert (
        cli.main(
            ["train", "--images", str(img_dir), "--labels", str(lab_dir), "--out", "x", "--mode", "bogus"]
        )
        == 2
    )
    assert "'bogus' is not one of instance, semantic" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_debug_shows_the_traceback(folders):
    img_dir, _ = folders
    with pytest.raises(store.ModelError):
        cli.main(["predict", "--model", "ghost", str(img_dir), "--out", "o", "--debug"])


def test_help_lists_backend_settings(capsys):
    assert cli.main(["train", "--backend", "unet", "--help"]) == 0
    text = capsys.readouterr().out
    for opt in (
        "--patch-size",
        "--mode {instance,semantic}",
        "--normalization-low",
        "--batch-norm, --no-batch-norm",
        "unet advanced settings",
    ):
        assert opt in text
    assert cli.main(["predict", "--backend", "unet", "--help"]) == 0
    assert "--foreground-threshold" in capsys.readouterr().out


def test_ctrl_c_stops_and_keeps_the_best_model(folders, capsys, monkeypatch):
    """The first Ctrl-C cancels between steps; the best epoch so far is saved."""
    img_dir, lab_dir = folders
    original = cli.ProgressBar.__call__

    def interrupt_after_first_epoch(self, p):
        original(self, p)
        if p.metrics.get("epoch") == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cli.ProgressBar, "__call__", interrupt_after_first_epoch)
    args = ["train", "--images", str(img_dir), "--labels", str(lab_dir), "--out", "stopped", "-q", *TINY]
    args[args.index("--epochs") + 1] = "50"
    before = signal.getsignal(signal.SIGINT)   # Python's default, or SIG_IGN under `nohup ... &`
    rc = cli.main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "stopped: cancelled" in cap.out
    info = store.read_info(store.resolve("stopped"))
    assert info.metrics["training"]["stopped"] == "cancelled" and len(info.history) == 1
    assert signal.getsignal(signal.SIGINT) is before          # the CLI gives the handler back


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = cli.main(["demo", "--out", str(out), "--minutes", "0.05", "-q"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    for name in (
        "test_image.tif",
        "test_labels.tif",
        "test_prediction.tif",
        "train_image_0.tif",
        "model/model.json",
    ):
        assert (out / name).exists(), name
    assert "AP@0.5 = " in cap.out
    ap = float(cap.out.split("AP@0.5 = ")[1].split(",")[0])
    assert 0.0 <= ap <= 1.0
    pred = tifffile.imread(out / "test_prediction.tif")
    assert pred.shape == tifffile.imread(out / "test_image.tif").shape


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "napari_dlbio", "--version"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.startswith("napari-dlbio ")


@pytest.mark.gui
def test_demo_gui_opens_layers_and_docks(monkeypatch):
    napari = pytest.importorskip("napari")
    pytest.importorskip("qtpy")
    img, lab = samples.nuclei_2d((64, 64), seed=0)
    shown = {}

    def fake_run(*a, **k):  # napari.run would block until the window closes
        viewer = napari.current_viewer()
        shown["layers"] = [layer.name for layer in viewer.layers]
        shown["docks"] = sorted(viewer.window.dock_widgets)
        viewer.close()

    monkeypatch.setattr(napari, "run", fake_run)
    cli._demo_gui(img, lab, lab)
    assert shown["layers"] == ["test_image", "ground_truth", "prediction"]
    assert any("Train" in d for d in shown["docks"]) and any("Predict" in d for d in shown["docks"])


def test_inputs_are_opened_lazily(tmp_path):
    img = np.arange(4 * 32 * 32, dtype=np.uint16).reshape(4, 32, 32)
    tifffile.imwrite(tmp_path / "plain.tif", img, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "packed.tif", img, compression="zlib")
    with cli._OpenImage(tmp_path / "plain.tif") as f:
        assert isinstance(f.array, np.memmap) and f.axes == "ZYX"
        np.testing.assert_array_equal(f.array[2], img[2])
    with cli._OpenImage(tmp_path / "packed.tif") as f:
        if importlib.util.find_spec("zarr") is not None:
            assert not isinstance(f.array, np.ndarray)  # compressed: read chunk-wise through zarr
        np.testing.assert_array_equal(np.asarray(f.array[1]), img[1])


def test_stardist_polygons_are_written_as_a_napari_shapes_csv(tmp_path, shared_data):
    pytest.importorskip("stardist")
    img, _ = samples.nuclei_2d((128, 128), seed=3)
    tifffile.imwrite(tmp_path / "cells.tif", img)
    rc = cli.main(["predict", "--backend", "stardist", "--model", str(shared_data / "stardist-official-dsb"),
                   "--polygons", str(tmp_path / "cells.tif"), "--out", str(tmp_path / "out"), "-q"])
    assert rc == 0
    labels = tifffile.imread(tmp_path / "out" / "cells.tif")
    rows = (tmp_path / "out" / "cells_polygons.csv").read_text().splitlines()
    assert rows[0] == "index,shape-type,vertex-index,axis-0,axis-1"
    # One polygon per object, each with StarDist's 32 rays as vertices.
    ids = [r.split(",")[0] for r in rows[1:]]
    assert len(set(ids)) == len(np.unique(labels)) - 1 > 5
    assert all(ids.count(i) == 32 for i in set(ids))


def test_missing_cellpose_model_fails_fast_offline(tmp_path):
    """An official Cellpose name whose file is not here fails within seconds, naming the file.

    A fresh process, so the time includes start-up and imports: Cellpose (and torch) must
    not be imported just to find out that the file is missing and the server unreachable.
    """
    if importlib.util.find_spec("cellpose") is None:
        pytest.skip("cellpose is not installed")
    from napari_dlbio.backends.cellpose import locate

    img = tmp_path / "cells.tif"
    tifffile.imwrite(img, np.zeros((32, 32), np.uint16))
    folder = tmp_path / "cp-models"
    env = {**os.environ, "CELLPOSE_LOCAL_MODELS_PATH": str(folder)}
    if locate.online(timeout=1.0):
        env["NAPARI_DLBIO_OFFLINE"] = "1"  # never download 1.2 GB in a test: pretend to be offline
    argv = [sys.executable, "-m", "napari_dlbio", "predict", "--backend", "cellpose", "--model", "cpsam",
            str(img), "--out", str(tmp_path / "out")]
    t = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    seconds = time.monotonic() - t
    assert out.returncode == 2, out.stderr
    assert str(folder / "cpsam") in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert seconds < 5, f"took {seconds:.1f} s"
