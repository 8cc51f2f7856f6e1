import numpy as np
import pytest
import tifffile

from napari_dlbio import data, samples


def _stack():
    img, lab = samples.nuclei_3d((6, 64, 64), seed=0)
    partial = np.zeros_like(lab)
    partial[1] = lab[1]
    partial[4] = lab[4]
    return img, lab, partial


def test_only_annotated_slices():
    img, lab, partial = _stack()
    td = data.from_arrays(img, partial, "ZYX", ndim=2, name="stack", labels_name="truth")
    assert len(td) == 2 and td.ndim == 2 and td.n_channels == 1
    assert [s.source for s in td.samples] == ["stack[z=1]", "stack[z=4]"]
    assert td.provenance["items"] == [{"Z": 1}, {"Z": 4}]
    assert td.provenance["n_objects"] == len(np.unique(lab[1])) - 1 + len(np.unique(lab[4])) - 1
    s = td.samples[0]
    assert s.image.shape == (1, 64, 64) and s.image.dtype == np.float32
    np.testing.assert_array_equal(s.image[0], img[1])
    np.testing.assert_array_equal(s.target, lab[1])
    assert s.target.dtype == np.int32 and s.mask is None


def test_3d_items():
    img, lab = samples.nuclei_3d((6, 32, 32), seed=1)
    movie = np.stack([img, img])
    labels = np.stack([lab, np.zeros_like(lab)])  # only T=0 annotated
    td = data.from_arrays(movie, labels, "TZYX", ndim=3)
    assert len(td) == 1 and td.samples[0].image.shape == (1, 6, 32, 32)


def test_scribbles_and_region():
    img, lab = samples.nuclei_2d((64, 64), seed=0)
    scrib = np.zeros_like(lab)
    scrib[10:14, 10:30] = 1
    scrib[40:44, 10:30] = 2
    td = data.from_arrays(img, scrib, "YX", scribbles=True)
    np.testing.assert_array_equal(td.samples[0].mask, scrib > 0)
    assert td.provenance["scribbles"] is True

    region = np.zeros((64, 64), bool)
    region[:32] = True
    td = data.from_arrays(img, lab, "YX", region=region)
    np.testing.assert_array_equal(td.samples[0].mask, region)
    nothing_here = np.zeros((64, 64), bool)
    nothing_here[:2, :2] = True  # a region without any annotated object
    lab2 = lab.copy()
    lab2[:2, :2] = 0
    with pytest.raises(ValueError, match="no annotated"):
        data.from_arrays(img, lab2, "YX", region=nothing_here)


def test_channels_and_rgb():
    rgb = np.random.default_rng(0).random((32, 40, 3)).astype(np.float32)
    lab = np.ones((32, 40), np.int32)
    td = data.from_arrays(rgb, lab, rgb=True)
    assert td.n_channels == 3 and td.samples[0].image.shape == (3, 32, 40)
    np.testing.assert_array_equal(td.samples[0].image[2], rgb[..., 2])
    cyx = np.random.default_rng(0).random((4, 32, 40)).astype(np.float32)
    td = data.from_arrays(cyx, lab, "CYX", channels=[2, 0])
    np.testing.assert_array_equal(td.samples[0].image, cyx[[2, 0]])


def test_clear_errors():
    img, lab = samples.nuclei_2d((64, 64), seed=0)
    with pytest.raises(ValueError, match=r"shape \(64, 60\).*needs \(64, 64\)"):
        data.from_arrays(img, lab[:, :60], "YX", name="cells", labels_name="masks")
    with pytest.raises(ValueError, match="no annotated slice in labels 'masks'"):
        data.from_arrays(img, np.zeros_like(lab), "YX", labels_name="masks")
    with pytest.raises(ValueError, match="integers"):
        data.from_arrays(img, lab.astype(np.float32), "YX")
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite pixel"):
        data.from_arrays(bad, lab, "YX")
    with pytest.raises(ValueError, match="needs a Z axis"):
        data.from_arrays(img, lab, "YX", ndim=3)


def test_self_supervised_uses_everything():
    img, _ = samples.nuclei_3d((5, 32, 32), seed=0)
    td = data.from_arrays(img, None, "ZYX")
    assert len(td) == 5 and all(s.target is None for s in td.samples)


def test_split():
    img, lab = samples.nuclei_3d((10, 64, 64), seed=0)
    td = data.from_arrays(img, lab, "ZYX")
    n = len(td)
    train, val = td.split(0.2, seed=0)
    assert len(val) == max(1, round(0.2 * n)) and len(train) + len(val) == n
    assert not {s.source for s in train} & {s.source for s in val}
    assert td.split(0.0) == (td.samples, [])
    one = data.from_arrays(*samples.nuclei_2d((128, 96), seed=0), "YX")
    train, val = one.split(0.25)
    assert train[0].image.shape == (1, 96, 96) and val[0].image.shape == (1, 32, 96)
    small = data.from_arrays(*samples.nuclei_2d((40, 40), seed=0), "YX")
    assert small.split(0.25)[1] == []  # too small to cut a strip off


def _write_pairs(tmp_path, n=3, annotate=(True, True, True)):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(n):
        img, lab = samples.nuclei_2d((48, 48), seed=k)
        tifffile.imwrite(tmp_path / "images" / f"im{k}.tif", img)
        if k < len(annotate):
            tifffile.imwrite(tmp_path / "masks" / f"im{k}.tif", lab if annotate[k] else 0 * lab)
    return tmp_path / "images", tmp_path / "masks"


def test_from_folders(tmp_path):
    images, masks = _write_pairs(tmp_path, n=4, annotate=(True, False, True))
    td = data.from_folders(images, masks)
    # im1 has empty labels and im3 none at all: both left out
    assert [s.source.split("/")[-1] for s in td.samples] == ["im0.tif", "im2.tif"]
    assert td.provenance["folders"]["labels"] == str(masks)
    assert len(data.from_folders(images)) == 4  # self-supervised: all images


def test_from_folders_errors(tmp_path):
    images, masks = _write_pairs(tmp_path, n=2)
    for p in masks.iterdir():
        p.rename(p.with_name("other_" + p.name))
    with pytest.raises(ValueError, match="no label file"):
        data.from_folders(images, masks)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        data.from_folders(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        data.from_folders(tmp_path / "empty")


def test_combine_refuses_mixed_channels():
    a = data.from_arrays(np.zeros((2, 32, 32), np.float32), np.ones((32, 32), np.int32), "CYX")
    b = data.from_arrays(np.zeros((32, 32), np.float32), np.ones((32, 32), np.int32), "YX")
    with pytest.raises(ValueError, match="channels"):
        data.combine([a, b])
