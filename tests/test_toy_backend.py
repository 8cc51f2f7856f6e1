"""A fifth backend added from outside the package trains, predicts, saves and loads via the CLI."""

import numpy as np
import pytest
import tifffile

pytest.importorskip("torch")

import toy_backend  # noqa: E402

from napari_dlbio import backends, cli, store, tasks  # noqa: E402


@pytest.fixture(autouse=True)
def toy():
    backends.register(toy_backend.SPEC)
    yield
    backends.unregister("toy")


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = np.zeros((64, 64), np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, 52, 2)
        lab[y:y + 12, x:x + 12] = 1
    img = (lab * 100 + rng.normal(20, 8, lab.shape)).astype(np.float32)
    return img, lab


@pytest.fixture
def folders(tmp_path):
    for sub in ("images", "labels", "test"):
        (tmp_path / sub).mkdir()
    for k in range(4):
        img, lab = _scene(k)
        tifffile.imwrite(tmp_path / "images" / f"s{k}.tif", img)
        tifffile.imwrite(tmp_path / "labels" / f"s{k}.tif", lab)
    tifffile.imwrite(tmp_path / "test" / "t.tif", _scene(99)[0])
    return tmp_path


def test_toy_backend_through_cli_and_store(folders, capsys):
    assert "toy" in backends.names() and backends.spec("toy").title == "Toy CNN"
    args = ["train", "--backend", "toy", "--images", str(folders / "images"), "--labels",
            str(folders / "labels"), "--out", "toy-model", "-q", "--epochs", "15", "--steps-per-epoch", "5",
            "--batch-size", "4", "--width", "6", "--learning-rate", "0.01", "--val-fraction", "0.25"]
    assert cli.main(args) == 0, capsys.readouterr().err
    info = store.read_info(store.resolve("toy-model"))
    assert info.backend == "toy" and info.settings["width"] == 6
    assert (info.path / "toy.pt").is_file() and info.metrics["mean_iou"] > 0.5
    assert len(info.history) == 15
    out = folders / "out"
    assert cli.main(["predict", "--model", "toy-model", str(folders / "test"), "--out", str(out), "-q"]) == 0
    pred = tifffile.imread(out / "t.tif")
    truth = _scene(99)[1]
    assert pred.shape == (64, 64) and pred.dtype.kind in "iu"
    assert (pred == truth).mean() > 0.9
    model = tasks.load_model("toy-model")
    assert type(model).__name__ == "ToyModel" and model.display_name == "toy-model"
