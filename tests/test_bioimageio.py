"""bioimage.io: export -> bioimageio.core's own test -> re-import predicts the same, for every backend that exports.

Each model kind is trained here for seconds on synthetic data, saved, exported,
checked with ``bioimageio.core.test_model`` (offline; it loads the zip, runs the
test input through the state-dict and TorchScript weights and compares with the
test output) and opened again from the zip.
"""

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("bioimageio.core", reason="bioimage.io export needs bioimageio.core (napari-dlbio[bioimageio])")

from napari_dlbio import backends, data, pairs, samples, store, tasks  # noqa: E402
from napari_dlbio.bioimageio_export import export_model, run_network, validate_zip  # noqa: E402
from napari_dlbio.cli import main  # noqa: E402

IMG, LAB = samples.nuclei_2d((128, 128), seed=1)
TEST = samples.nuclei_2d((96, 112), seed=4)[0]


def _noisy(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (IMG + rng.normal(0, 0.3 * IMG.std(), IMG.shape)).astype(np.float32)


def _train(kind: str, folder: Path):
    if kind == "unet-semantic":
        s = backends.get("unet").Settings(mode="semantic", epochs=2, steps_per_epoch=3, batch_size=2, patch_size=64,
                                          depth=2, base_width=8, val_patches=1)
        return tasks.train("unet", data.from_arrays(IMG, (LAB > 0).astype(np.int32) + 1), s, save_to=folder)
    if kind == "stardist":
        pytest.importorskip("stardist")
        s = backends.get("stardist").Settings(n_rays=16, width=8, depth=2, features=16, patch_size=64, epochs=2,
                                              steps_per_epoch=3, batch_size=2, seed=0, device="cpu")
        return tasks.train("stardist", data.from_arrays(IMG, LAB), s, save_to=folder)
    pytest.importorskip("careamics")
    s = backends.get("n2v").Settings(algorithm=kind, epochs=2, steps_per_epoch=3, patch_size=32, batch_size=4,
                                     base_filters=8, depth=2)
    d = (pairs.from_pairs(_noisy(1), IMG.astype(np.float32), "YX", 2, name="noisy", target_name="clean")
         if kind == "care" else data.from_arrays(_noisy(1), None, "YX", 2))
    return tasks.train("n2v", d, s, save_to=folder)


@pytest.fixture(scope="module", params=["unet-instance", "unet-semantic", "stardist", "n2v2", "care"])
def exported(request, tmp_path_factory, tiny_unet):
    folder = tmp_path_factory.mktemp("bmz")
    path = tiny_unet if request.param == "unet-instance" else _train(request.param, folder / "model").path
    model = tasks.load_model(path)
    zip_path = export_model(model, folder / f"{request.param}.zip")
    return {"kind": request.param, "model": model, "zip": zip_path}


def test_bioimageio_core_passes_the_exported_zip(exported):
    status, details = validate_zip(exported["zip"])
    assert status == "passed", details
    with zipfile.ZipFile(exported["zip"]) as z:
        names = set(z.namelist())
    assert {"rdf.yaml", "README.md", "cover.png", "model.json", "bmz_state_dict.pt", "bmz_torchscript.pt"} <= names


def test_the_zip_restores_the_model_and_predicts_the_same(exported):
    model, back = exported["model"], tasks.load_model(exported["zip"])
    assert back.backend == model.backend and back.info.name == model.info.name
    assert back.info.settings == model.info.settings and back.info.metrics == model.info.metrics
    assert back.info.provenance == model.info.provenance
    assert back.info.extra["bioimageio_zip"] == str(exported["zip"])
    x = np.repeat(TEST[None].astype(np.float32), model.n_channels, 0)[:, :96, :96]
    for a, b in zip(run_network(model.bioimageio(), x), run_network(back.bioimageio(), x)):
        assert np.abs(a - b).max() < 1e-5
    pa, pb = tasks.predict(model, TEST).outputs, tasks.predict(back, TEST).outputs
    assert pa.keys() == pb.keys()
    for k in pa:
        if model.output == "labels":
            np.testing.assert_array_equal(pa[k], pb[k])
        else:
            assert np.abs(pa[k] - pb[k]).max() < 1e-5
    if exported["kind"] == "stardist":
        assert back.thresholds == model.thresholds


def test_documentation_names_the_post_processing_and_the_papers(exported):
    with zipfile.ZipFile(exported["zip"]) as z:
        readme = z.read("README.md").decode()
    words = {"unet-instance": "watershed", "unet-semantic": "argmax", "stardist": "non-maximum suppression",
             "n2v2": "N2V2", "care": "Content-aware image restoration"}
    assert words[exported["kind"]] in readme and "## Training data" in readme and "doi:" in readme


def test_cli_export_then_predict_from_the_zip(tiny_unet, tmp_path, capsys):
    import tifffile

    out = tmp_path / "tiny.zip"
    assert main(["export", str(tiny_unet), str(out), "--author", "A. Biologist", "-q"]) == 0
    assert out.is_file()
    assert main(["export", str(tiny_unet), str(out)]) == 2   # exists: refused without --force
    assert "exists" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "img.tif", TEST)
    assert main(["predict", "--model", str(out), str(tmp_path / "img.tif"), "--out", str(tmp_path / "z"), "-q"]) == 0
    assert main(["predict", "--model", str(tiny_unet), str(tmp_path / "img.tif"), "--out", str(tmp_path / "f"),
                 "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "z" / "img.tif"), tifffile.imread(tmp_path / "f" / "img.tif"))


def test_fine_tuning_starts_from_a_zip(tiny_unet, tmp_path):
    z = export_model(tasks.load_model(tiny_unet), tmp_path / "tiny.zip")
    s = backends.get("unet").Settings(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=64, val_patches=1)
    out = tasks.train("unet", data.from_arrays(IMG, LAB), s, save_to=tmp_path / "tuned", start_from=z)
    assert out.model.info.provenance["fine_tuned_from"]["name"] == "tiny"
    assert out.model.settings.depth == 2   # the zip's architecture is kept


@pytest.mark.parametrize("name", ["affable-shark", "https://zenodo.org/records/1/files/model.zip",
                                  "10.5281/zenodo.5764892"])
def test_zoo_ids_and_urls_fail_fast_saying_what_to_do(name, capsys):
    start = time.monotonic()
    assert main(["predict", "--model", name, "x.tif", "--out", "o"]) == 2
    assert time.monotonic() - start < 5
    assert "download the model's zip" in capsys.readouterr().err


def test_unsaved_models_and_bad_targets_are_refused(tiny_unet, tmp_path):
    model = tasks.load_model(tiny_unet)
    with pytest.raises(store.ModelError, match=r"\.zip"):
        export_model(model, tmp_path / "model.tar")
    with pytest.raises(store.ModelError, match="does not exist"):
        export_model(model, tmp_path / "no" / "m.zip")
    fresh = backends.get("unet").new(None, 1, 2)
    with pytest.raises(store.ModelError, match="save the model first"):
        export_model(fresh, tmp_path / "m.zip")
    assert not list(tmp_path.iterdir())   # nothing half-written


def test_cellpose_models_say_they_cannot_be_exported():
    pytest.importorskip("cellpose")
    assert not backends.spec("cellpose").bioimageio
    assert all(backends.spec(n).bioimageio for n in ("unet", "stardist", "n2v"))


def test_a_zip_from_careamics_opens_as_a_restoration_model(tmp_path):
    pytest.importorskip("careamics")
    from careamics import CAREamist

    from napari_dlbio.backends.n2v.config import _to_careamics

    model = tasks.load_model(_train("n2v2", tmp_path / "n2v").path)
    cam = CAREamist(model.config, work_dir=tmp_path / "work", enable_progress_bar=False)
    cam.model.load_state_dict(model.module.state_dict())
    foreign = tmp_path / "careamics.zip"
    cam.export_to_bmz(path_to_archive=foreign, friendly_model_name="careamics-n2v",
                      input_array=_to_careamics(_noisy(2)[None, :64, :64]), authors=[{"name": "someone"}],
                      general_description="N2V made by CAREamics", data_description="synthetic")
    back = tasks.load_model(foreign)          # no --backend: the backend that runs it is found
    assert back.backend == "n2v" and back.info is None and back.settings.algorithm == "n2v2"
    # CAREamics' zip holds no percentile normalisation of ours (its models take raw intensities) ...
    assert back.settings.normalization.mode == "none"
    # ... the network and CAREamics' statistics come through exactly.
    back.settings = back.settings.model_copy(update={"normalization": model.settings.normalization})
    settings = backends.get("n2v").Predict(tta=False)
    a = tasks.predict(model, _noisy(3), settings=settings).outputs["image"]
    b = tasks.predict(back, _noisy(3), settings=settings).outputs["image"]
    assert np.abs(a - b).max() < 1e-5


def test_an_official_stardist_package_with_keras_weights_is_converted(shared_data, tmp_path):
    pytest.importorskip("stardist")
    pytest.importorskip("h5py")
    import json

    import yaml

    official = shared_data / "stardist-official-dsb"
    ours = export_model(tasks.load_model(_train("stardist", tmp_path / "sd").path), tmp_path / "ours.zip")
    with zipfile.ZipFile(ours) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    # What StarDist's own exporter writes: Keras weights, its config and thresholds in config.stardist.
    rdf["weights"] = {"keras_hdf5": {"source": "weights_best.h5", "tensorflow_version": "2.10"}}
    rdf["config"] = {"stardist": {"config": json.loads((official / "config.json").read_text()),
                                  "thresholds": json.loads((official / "thresholds.json").read_text())}}
    rdf["attachments"] = []
    rdf["name"] = "official DSB StarDist"
    pkg = tmp_path / "official.zip"
    with zipfile.ZipFile(pkg, "w") as z, zipfile.ZipFile(ours) as src:
        z.writestr("rdf.yaml", yaml.safe_dump(rdf))
        z.write(official / "weights_best.h5", "weights_best.h5")
        for name in src.namelist():
            if name.startswith(("test_", "cover", "README")):
                z.writestr(name, src.read(name))
    model = tasks.load_model(pkg)
    direct = backends.get("stardist").pretrained(str(official))
    assert model.backend == "stardist" and model.thresholds == direct.thresholds
    img = samples.nuclei_2d((128, 128), seed=2)[0]
    np.testing.assert_array_equal(tasks.predict(model, img).outputs["labels"],
                                  tasks.predict(direct, img).outputs["labels"])
