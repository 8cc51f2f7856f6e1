"""Generated bad inputs through predict, train and the CLI.

Every example ends in a documented result (predict: ``labels`` of the image's
spatial shape, int32; train: a saved model) or in ONE clear user error
(``formatting.is_user_error``, a non-empty one-line message). Anything else
fails. Inputs must be byte-identical afterwards.

The properties live in :mod:`bad_inputs_props` style helpers below so the
benchmark (benchmarks/bench_bad_inputs.py) runs the very same checks.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_dlbio import cli, data, formatting, tasks
from napari_dlbio.axes import guess_axes
from napari_dlbio.backends import get

DTYPES = ["bool", "uint8", "uint16", "int32", "int64", "float16", "float32", "float64", "complex64"]
KINDS = ["random", "constant", "zeros", "nan", "inf", "1e30", "1e300", "mixed_huge"]
LABEL_KINDS = ["valid", "wrong_shape", "negative", "float", "all_zero", "beyond_int32", "bool"]

UNET_TINY = {"depth": 1, "base_width": 4, "patch_size": 16, "batch_size": 1, "epochs": 1, "steps_per_epoch": 1,
                 "val_patches": 1, "mixed_precision": False, "val_fraction": 0.0, "tune_thresholds": False}


# -- building inputs -------------------------------------------------------------------------------
def make_image(shape: tuple[int, ...], dtype: str, kind: str, seed: int) -> np.ndarray:
    """An array of ``shape``/``dtype`` filled according to ``kind`` (NaN/inf only where floats allow)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(100.0, 30.0, size=shape)
    if kind == "constant":
        x = np.full(shape, 7.0)
    elif kind == "zeros":
        x = np.zeros(shape)
    elif kind == "1e30":
        x = x * 1e28
    elif kind == "1e300":
        x = x * 1e298
    elif kind == "mixed_huge":
        x = np.where(rng.random(shape) < 0.5, -3e38, 3e38)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype == "bool":
            arr = x > 100
        elif np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            arr = np.clip(np.nan_to_num(x), info.min, info.max).astype(dtype)
        else:
            arr = x.astype(dtype)
            if dtype == "complex64":
                arr = arr + 1j * arr.real.astype(dtype)
    if kind in ("nan", "inf") and arr.size and np.issubdtype(arr.dtype, np.inexact):
        flat = arr.reshape(-1)
        flat[rng.integers(0, flat.size, size=max(1, flat.size // 10))] = np.nan if kind == "nan" else np.inf
    return arr


def make_labels(spatial: tuple[int, ...], kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(spatial, np.int32)
    if lab.size:
        lab.reshape(-1)[rng.integers(0, lab.size, size=max(1, lab.size // 4))] = rng.integers(1, 4)
    if kind == "wrong_shape":
        return np.zeros(tuple(s + 1 for s in spatial), np.int32) + 1
    if kind == "negative":
        return np.where(lab > 0, -lab, 0).astype(np.int32) if lab.size else lab
    if kind == "float":
        return lab.astype(np.float32)
    if kind == "all_zero":
        return np.zeros(spatial, np.int32)
    if kind == "beyond_int32":
        return np.where(lab > 0, 2**31 + lab.astype(np.int64), 0)
    if kind == "bool":
        return lab > 0
    return lab


# -- the properties -------------------------------------------------------------------------------
def check_user_error(exc: BaseException) -> str:
    """The message of ``exc`` if it is ONE clear user error; else AssertionError with the cause."""
    msg = str(exc)
    if not formatting.is_user_error(exc):
        raise AssertionError(f"not a user error: {type(exc).__name__}: {msg}") from exc
    if not msg.strip() or "\n" in msg.strip():
        raise AssertionError(f"user error message must be one non-empty line: {msg!r}") from exc
    return msg


def expected_spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    axes = guess_axes(shape)
    return tuple(s for a, s in zip(axes, shape) if a != "C")


def run_predict(model, img: np.ndarray) -> str:
    """'result' or 'user_error'; AssertionError for anything else (or a changed input)."""
    before = img.copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = tasks.predict(model, img)
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions
        check_user_error(exc)
        outcome = "user_error"
    else:
        lab = np.asarray(pred.outputs["labels"])
        assert lab.shape == expected_spatial(img.shape), (lab.shape, img.shape)
        assert lab.dtype == np.int32, lab.dtype
        outcome = "result"
    assert img.dtype == before.dtype and img.shape == before.shape and img.tobytes() == before.tobytes(), \
        "predict changed its input"
    return outcome


_COUNTER = itertools.count()


def run_train(img: np.ndarray, lab: np.ndarray | None, folder: Path, backend: str = "unet",
              tiny: dict | None = None) -> str:
    before = (img.copy(), None if lab is None else lab.copy())
    dest = folder / f"m{next(_COUNTER)}"
    be = get(backend)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            td = data.from_arrays(img, lab)
            out = tasks.train(backend, td, be.Settings(**(tiny or UNET_TINY)), dest)
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001
        check_user_error(exc)
        outcome = "user_error"
    else:
        assert out.path == dest and (dest / "model.json").is_file()
        outcome = "result"
    assert img.tobytes() == before[0].tobytes() and img.dtype == before[0].dtype, "train changed the image"
    if lab is not None:
        assert lab.tobytes() == before[1].tobytes() and lab.dtype == before[1].dtype, "train changed the labels"
    return outcome


# -- strategies -----------------------------------------------------------------------------------
@st.composite
def any_image(draw):
    ndim = draw(st.sampled_from([0, 1, 2, 2, 2, 2, 3, 3, 4, 5]))
    sizes = [0, 1, 2, 3, 5, 8, 8, 17] if ndim <= 3 else [0, 1, 2, 3, 6, 6]
    shape = tuple(draw(st.lists(st.sampled_from(sizes), min_size=ndim, max_size=ndim)))
    if draw(st.booleans()) and ndim >= 2:  # often the classic 1x1 / 3x3 planes
        shape = shape[:-2] + draw(st.sampled_from([(1, 1), (3, 3), (16, 16)]))
    return make_image(shape, draw(st.sampled_from(DTYPES)), draw(st.sampled_from(KINDS)),
                      draw(st.integers(0, 2**16)))


@st.composite
def train_case(draw):
    shape = draw(st.sampled_from([(1, 1), (3, 3), (16, 16), (20, 17), (2, 16, 16), (0, 16), (16, 0)]))
    img = make_image(shape, draw(st.sampled_from(DTYPES)), draw(st.sampled_from(KINDS)), draw(st.integers(0, 99)))
    kind = draw(st.sampled_from(LABEL_KINDS))
    lab = make_labels(expected_spatial(shape) if len(shape) >= 2 else shape, kind, draw(st.integers(0, 99)))
    return img, lab


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def unet_model():
    import torch

    torch.manual_seed(0)
    return get("unet").new(get("unet").Settings(**UNET_TINY), 1, 2)


@pytest.fixture(scope="session")
def stardist_model():
    pytest.importorskip("stardist")
    try:
        be = get("stardist")
        return be.new(be.Settings(depth=1, width=4, n_rays=8, grid=1, features=0), 1, 2)
    except (ImportError, ValueError) as exc:
        pytest.skip(f"no tiny StarDist: {exc}")


@pytest.fixture(scope="session")
def saved_unet(tmp_path_factory):
    """A tiny U-Net trained 1 step and saved, for the CLI."""
    img = make_image((32, 32), "float32", "random", 0)
    lab = make_labels((32, 32), "valid", 0)
    dest = tmp_path_factory.mktemp("models") / "tiny"
    tasks.train("unet", data.from_arrays(img, lab), get("unet").Settings(**UNET_TINY), dest)
    return dest


COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
              "derandomize": True}


# -- the tests ------------------------------------------------------------------------------------
@settings(max_examples=200, **COMMON)
@given(img=any_image())
def test_predict_unet_bad_images(unet_model, img):
    run_predict(unet_model, img)


@settings(max_examples=40, **COMMON)
@given(img=any_image())
def test_predict_stardist_bad_images(stardist_model, img):
    run_predict(stardist_model, img)


@settings(max_examples=60, **COMMON)
@given(case=train_case())
def test_train_unet_bad_data(tmp_path_factory, case):
    img, lab = case
    run_train(img, lab, tmp_path_factory.mktemp("train"))


# -- the known cases, by name ---------------------------------------------------------------------
def test_complex_image_is_refused(unet_model):
    img = np.ones((8, 8), np.complex64)
    with pytest.raises(ValueError, match="complex images are not supported; take the magnitude or the real part"):
        tasks.predict(unet_model, img)
    with pytest.raises(ValueError, match="complex images are not supported"):
        data.from_arrays(img, np.ones((8, 8), np.int32))


def test_values_beyond_float32_are_named_not_nan(unet_model):
    img = np.full((8, 8), 1e300)
    with pytest.raises(ValueError, match="beyond float32's range") as info:
        tasks.predict(unet_model, img)
    assert "NaN" not in str(info.value)


def test_all_zero_labels_say_what_was_considered():
    img = np.ones((3, 16, 16), np.float32)
    with pytest.raises(ValueError, match=r"no annotated slice in labels 'masks'.*3 slice\(s\).*z=0\.\.2.*"
                                         r"nothing is annotated"):
        data.from_arrays(img, np.zeros((3, 16, 16), np.int32), axes="ZYX", labels_name="masks")


def test_labels_beyond_int32_are_refused_not_wrapped():
    lab = np.zeros((16, 16), np.int64)
    lab[2:5, 2:5] = 2**32  # wraps to 0 in int32: it used to look unannotated
    with pytest.raises(ValueError, match="beyond int32"):
        data.from_arrays(np.ones((16, 16)), lab)


def test_negative_labels_are_refused_in_one_place():
    with pytest.raises(ValueError, match="negative"):
        data.from_arrays(np.ones((16, 16)), -np.ones((16, 16), np.int32))


# -- the command line -----------------------------------------------------------------------------
def _bad_tiffs(folder: Path) -> dict[str, np.ndarray]:
    import tifffile

    imgs = {
        "complex": np.ones((16, 16), np.complex64),
        "empty": np.zeros((0, 16), np.float32),
        "one": np.ones((1, 1), np.float32),
        "nan": np.full((16, 16), np.nan, np.float32),
        "five_d": np.ones((2, 2, 5, 8, 8), np.float32),
        "huge": np.full((16, 16), 1e300),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in imgs.items():
        tifffile.imwrite(folder / f"{name}.tif", arr)
    return imgs


def _expect_cli_error(capsys, argv, files) -> str:
    before = {f: f.read_bytes() for f in files}
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (rc, err)
    assert err.startswith("napari-dlbio: error:") and "\n" not in err, err
    assert "Traceback" not in err
    assert all(f.read_bytes() == b for f, b in before.items()), "the CLI changed an input file"
    return err


def test_cli_predict_bad_tiffs(tmp_path, capsys, saved_unet):
    imgs = _bad_tiffs(tmp_path / "in")
    for name in imgs:
        f = tmp_path / "in" / f"{name}.tif"
        if name == "one":
            # A 1x1 image is a documented result, not an error.
            assert cli.main(["predict", "--model", str(saved_unet), str(f), "--out", str(tmp_path / "o"), "-q"]) == 0
            capsys.readouterr()
            continue
        err = _expect_cli_error(capsys, ["predict", "--model", str(saved_unet), str(f), "--out",
                                         str(tmp_path / "out"), "-q"], [f])
        assert name != "complex" or "complex images are not supported" in err
        assert name != "huge" or "float32's range" in err


def test_cli_train_bad_tiffs(tmp_path, capsys):
    import tifffile

    imgs = _bad_tiffs(tmp_path / "all")
    args = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1", "--patch-size", "16",
            "--depth", "1", "--base-width", "4", "-q"]
    for name, arr in imgs.items():
        if name == "one":
            continue
        d = tmp_path / name
        (d / "images").mkdir(parents=True)
        (d / "labels").mkdir()
        tifffile.imwrite(d / "images" / "a.tif", arr)
        spatial = arr.shape[-2:]
        tifffile.imwrite(d / "labels" / "a.tif", np.ones(spatial, np.int32))
        files = [d / "images" / "a.tif", d / "labels" / "a.tif"]
        err = _expect_cli_error(capsys, ["train", "--images", str(d / "images"), "--labels", str(d / "labels"),
                                         "--out", str(tmp_path / f"m_{name}"), *args], files)
        assert name != "complex" or "complex images are not supported" in err
    # All-zero labels: which files were considered, and that nothing is annotated.
    d = tmp_path / "zero"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    tifffile.imwrite(d / "images" / "a.tif", np.ones((16, 16), np.float32))
    tifffile.imwrite(d / "labels" / "a.tif", np.zeros((16, 16), np.int32))
    err = _expect_cli_error(capsys, ["train", "--images", str(d / "images"), "--labels", str(d / "labels"),
                                     "--out", str(tmp_path / "m_zero"), *args],
                            [d / "images" / "a.tif", d / "labels" / "a.tif"])
    assert "a.tif" in err and "nothing is annotated" in err
