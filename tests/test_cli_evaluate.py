"""``napari-dlbio evaluate``: the table, the CSV, bad input, and agreement with stardist on DSB 2018."""

import csv

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_dlbio import samples
from napari_dlbio.cli import main
from napari_dlbio.scoreboard import CSV_COLUMNS


@pytest.fixture(scope="module")
def model(tiny_unet):
    return tiny_unet


def _folders(tmp_path, n=3):
    """images/, labels/ and two other tools' results: exact/ (the truth) and eroded/."""
    for sub in ("images", "labels", "exact", "eroded"):
        (tmp_path / sub).mkdir()
    for k in range(n):
        img, lab = samples.nuclei_2d((96, 112), seed=20 + k)
        tifffile.imwrite(tmp_path / "images" / f"im{k}.tif", img)
        for sub, arr in (("labels", lab), ("exact", lab), ("eroded", ndi.grey_erosion(lab, 5))):
            tifffile.imwrite(tmp_path / sub / f"im{k}.tif", arr.astype(np.uint16))
    return tmp_path


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_evaluate_prints_the_table_best_first_and_writes_the_csv(model, tmp_path, capsys):
    d = _folders(tmp_path)
    rc = main(["evaluate", "--model", str(model), "--predictions", str(d / "eroded"), "--predictions",
               str(d / "exact"), "--images", str(d / "images"), "--labels", str(d / "labels"), "--csv",
               str(d / "scores.csv"), "-q"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and out[0].split()[:2] == ["CANDIDATE", "AP@0.50"]
    assert [line.split()[0] for line in out[1:]][0] == "exact" and len(out) == 4
    aps = [float(line.split()[1]) for line in out[1:]]
    assert aps == sorted(aps, reverse=True) and aps[0] == 1.0
    rows = _rows(d / "scores.csv")
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 3 * 4
    assert [r["item"] for r in rows[:4]] == ["im0.tif", "im1.tif", "im2.tif", "all"]
    tiny = [r for r in rows if r["candidate"] == "tiny"]
    mean = np.mean([float(r["AP@0.50"]) for r in tiny[:3]])
    assert float(tiny[3]["AP@0.50"]) == pytest.approx(mean, abs=1e-6) and mean > 0.5


def test_evaluate_sorts_by_another_metric(tmp_path, capsys):
    d = _folders(tmp_path, n=2)
    assert main(["evaluate", "--predictions", str(d / "eroded"), "--predictions", str(d / "exact"),
                 "--images", str(d / "images"), "--labels", str(d / "labels"), "--sort", "recall@0.50",
                 "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "recall@0.50" in out[0] and out[1].startswith("exact")


@pytest.mark.parametrize("extra, message", [
    ([], "at least one --model"),
    (["--predictions", "{d}/nowhere"], "nowhere"),
    (["--pretrained", "cpsam", "--predictions", "{d}/exact"], "BACKEND:NAME"),
    (["--pretrained", "nope:cpsam"], "no backend 'nope'"),
    (["--predictions", "{d}/exact", "--sort", "AP"], "invalid choice"),
])
def test_bad_input_is_one_clear_message(tmp_path, capsys, extra, message):
    d = _folders(tmp_path, n=1)
    argv = ["evaluate", "--images", str(d / "images"), "--labels", str(d / "labels"), "-q"]
    rc = main(argv + [a.format(d=d) for a in extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_labels_with_nothing_annotated_are_refused(tmp_path, capsys):
    d = _folders(tmp_path, n=2)
    for f in (d / "labels").iterdir():
        tifffile.imwrite(f, np.zeros((96, 112), np.uint16))
    rc = main(["evaluate", "--predictions", str(d / "exact"), "--images", str(d / "images"), "--labels",
               str(d / "labels"), "--csv", str(d / "s.csv"), "-q"])
    assert rc == 2 and "hold only 0" in capsys.readouterr().err and not (d / "s.csv").exists()


def test_evaluate_on_dsb2018_agrees_with_stardist(shared_data, model, tmp_path, capsys):
    """A few validation images: the tiny model and a perturbed copy of the masks, per image and on average."""
    pytest.importorskip("stardist")
    from stardist.matching import matching

    from napari_dlbio import tasks

    val = shared_data / "dsb2018" / "val"
    names = sorted(p.name for p in (val / "masks").glob("*.tif"))[:3]
    for sub in ("images", "masks", "other"):
        (tmp_path / sub).mkdir()
    for n in names:
        (tmp_path / "images" / n).symlink_to(val / "images" / n)
        (tmp_path / "masks" / n).symlink_to(val / "masks" / n)
        grown = ndi.grey_dilation(tifffile.imread(val / "masks" / n), size=5)
        tifffile.imwrite(tmp_path / "other" / n, grown)
    assert main(["evaluate", "--model", str(model), "--predictions", str(tmp_path / "other"), "--images",
                 str(tmp_path / "images"), "--labels", str(tmp_path / "masks"), "--csv",
                 str(tmp_path / "s.csv"), "-q"]) == 0
    rows = {(r["candidate"], r["item"]): r for r in _rows(tmp_path / "s.csv")}
    net = tasks.load_model(model)
    for n in names:
        true = tifffile.imread(val / "masks" / n)
        preds = {"tiny": tasks.predict(net, tifffile.imread(val / "images" / n)).outputs["labels"],
                 "other": tifffile.imread(tmp_path / "other" / n)}
        for cand, pred in preds.items():
            row = rows[(cand, n)]
            for t in (0.5, 0.75, 0.9):
                ref = matching(true, pred, thresh=t).accuracy
                assert float(row[f"AP@{t:.2f}"]) == pytest.approx(ref, abs=1e-6)
            ref = matching(true, pred, thresh=0.5)
            assert float(row["PQ"]) == pytest.approx(ref.panoptic_quality, abs=1e-6)
            assert float(row["mean_iou"]) == pytest.approx(ref.mean_matched_score, abs=1e-6)
    for cand in ("tiny", "other"):
        mean = np.mean([float(rows[(cand, n)]["AP@0.50"]) for n in names])
        assert float(rows[(cand, "all")]["AP@0.50"]) == pytest.approx(mean, abs=1e-6)


def test_clean_reference_scores_restorations_by_psnr_and_ssim(model, tmp_path, capsys):
    """--clean: other tools' denoised images ranked by PSNR; a segmentation model is named as not fitting."""
    from napari_dlbio.metrics import psnr, ssim

    rng = np.random.default_rng(0)
    for sub in ("noisy", "clean", "good", "poor"):
        (tmp_path / sub).mkdir()
    for k in range(2):
        clean = samples.nuclei_2d((96, 112), seed=30 + k)[0].astype(np.float32)
        noisy = clean + rng.normal(0, 20, clean.shape).astype(np.float32)
        good = clean + rng.normal(0, 2, clean.shape).astype(np.float32)
        for sub, arr in (("noisy", noisy), ("clean", clean), ("good", good), ("poor", ndi.uniform_filter(noisy, 2))):
            tifffile.imwrite(tmp_path / sub / f"im{k}.tif", arr)
    out = tmp_path / "scores.csv"
    rc = main(["evaluate", "--images", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean"),
               "--predictions", str(tmp_path / "poor"), "--predictions", str(tmp_path / "good"),
               "--model", str(model), "--csv", str(out)])
    text = capsys.readouterr()
    assert rc == 0
    lines = [ln.split()[0] for ln in text.out.splitlines()[1:]]
    assert lines[:2] == ["good", "poor"]                      # best PSNR first
    assert "outputs labels" in text.err and "clean images" in text.err
    rows = _rows(out)
    assert list(rows[0]) == ["candidate", "item", "PSNR", "SSIM"]
    c0 = tifffile.imread(tmp_path / "clean" / "im0.tif")
    g0 = tifffile.imread(tmp_path / "good" / "im0.tif")
    (row,) = [r for r in rows if r["candidate"] == "good" and r["item"] == "im0.tif"]
    rng_ = float(np.ptp(c0))
    assert float(row["PSNR"]) == pytest.approx(psnr(c0, g0, rng_), abs=1e-5)
    assert float(row["SSIM"]) == pytest.approx(ssim(c0, g0, rng_), abs=1e-5)
    (mean,) = [r for r in rows if r["candidate"] == "good" and r["item"] == "all"]
    per = [float(r["PSNR"]) for r in rows if r["candidate"] == "good" and r["item"] != "all"]
    assert float(mean["PSNR"]) == pytest.approx(np.mean(per), abs=1e-5)


def test_psnr_sort_needs_a_clean_reference(tmp_path, capsys):
    d = _folders(tmp_path)
    rc = main(["evaluate", "--images", str(d / "images"), "--labels", str(d / "labels"),
               "--predictions", str(d / "exact"), "--sort", "PSNR"])
    assert rc == 2 and "PSNR/SSIM need --clean" in capsys.readouterr().err
