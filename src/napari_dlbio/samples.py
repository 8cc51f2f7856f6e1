"""Synthetic fluorescence nuclei with ground truth, for demos, tests and benchmarks.

Everything is deterministic for a given ``seed`` and needs only numpy/scipy, so a
fresh clone without downloads can still train and score a model. The images
imitate widefield nuclei stains: ellipses of varying size, brightness and
texture, some touching, blurred by the optics, on an uneven background, with
shot (Poisson) and camera (Gaussian) noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "mosaic",
    "nuclei_2d",
    "nuclei_3d",
    "nuclei_timelapse",
    "stardist_sample_2d",
    "stardist_sample_3d",
]


# --- shapes ---------------------------------------------------------------------
def _default_n(shape: Sequence[int], radius: tuple[float, float], fill: float) -> int:
    r = float(np.mean(radius))
    if len(shape) == 2:
        unit = np.pi * r * r
    else:
        unit = 4.0 / 3.0 * np.pi * r**3
    return max(1, int(round(fill * float(np.prod(shape)) / unit)))


def _place(
    rng: np.random.Generator,
    shape: Sequence[int],
    n: int,
    radius: tuple[float, float],
    touch: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Random centres and mean radii; neighbours may come as close as ``touch`` x (r1 + r2).

    ``touch`` < 1 lets ellipses overlap a little; the overlap is split between them
    later, which gives the touching nuclei that make instance segmentation hard.
    """
    shape = np.asarray(shape, float)
    centres: list[np.ndarray] = []
    radii: list[float] = []
    tries = 0
    while len(centres) < n and tries < 200 * n:
        tries += 1
        r = rng.uniform(*radius)
        c = rng.uniform(0, 1, len(shape)) * shape
        if centres:
            d = np.linalg.norm(np.asarray(centres) - c, axis=1)
            if np.any(d < touch * (np.asarray(radii) + r)):
                continue
        centres.append(c)
        radii.append(r)
    return np.asarray(centres).reshape(-1, len(shape)), np.asarray(radii)


def _paint(
    shape: Sequence[int],
    centres: np.ndarray,
    axes_len: np.ndarray,
    rotations: list[np.ndarray],
    min_size: int = 0,
    relabel: bool = True,
) -> np.ndarray:
    """Rasterise ellipses/ellipsoids; a pixel claimed by several goes to the closest (relative) centre.

    With ``relabel=False`` object k keeps id k (tracking ground truth over frames).
    """
    labels = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf, np.float32)
    for k, (c, ax, rot) in enumerate(zip(centres, axes_len, rotations), start=1):
        ext = float(np.max(ax)) + 1
        lo = [max(0, int(np.floor(ci - ext))) for ci in c]
        hi = [min(s, int(np.ceil(ci + ext)) + 1) for ci, s in zip(c, shape)]
        if any(hi_ <= lo_ for lo_, hi_ in zip(lo, hi)):
            continue
        grids = np.meshgrid(*[np.arange(lo_, hi_) - ci for lo_, hi_, ci in zip(lo, hi, c)], indexing="ij")
        coords = np.stack([g.ravel() for g in grids])  # (nd, m) offsets from the centre
        local = rot.T @ coords  # into the ellipse's own frame
        d = np.sum((local / ax[:, None]) ** 2, axis=0).reshape(grids[0].shape)
        sl = tuple(slice(lo_, hi_) for lo_, hi_ in zip(lo, hi))
        win = (d <= 1.0) & (d < best[sl])
        labels[sl][win] = k
        best[sl][win] = d[win]
    if not relabel:
        return labels
    # Objects almost hidden by neighbours or cut by the border to a sliver are not
    # objects a person would annotate; drop them and number the rest 1..n.
    sizes = np.bincount(labels.ravel(), minlength=len(centres) + 1)
    keep = sizes >= min_size
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def _rotation_2d(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _rotation_3d(angle: float) -> np.ndarray:
    # Nuclei lie flat on the coverslip: rotate in the YX plane only.
    r = np.eye(3)
    r[1:, 1:] = _rotation_2d(angle)
    return r


# --- rendering ------------------------------------------------------------------
def _render(
    labels: np.ndarray,
    rng: np.random.Generator,
    sigma: Sequence[float],
    brightness: float,
    background: float,
    read_noise: float,
    noise: bool,
    dtype: str,
    level: np.ndarray | None = None,
) -> np.ndarray:
    if level is None:
        # Per-nucleus brightness varies several-fold, as DNA content and staining do.
        level = np.concatenate([[0.0], rng.lognormal(0.0, 0.35, int(labels.max()))])
    level = np.asarray(level, np.float32)
    signal = level[labels] * brightness
    # Chromatin texture: smooth multiplicative noise inside nuclei.
    texture = ndi.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 1.5)
    texture /= max(float(texture.std()), 1e-6)
    signal = signal * np.clip(1.0 + 0.15 * texture, 0.5, 1.5)
    # Out-of-focus haze plus the optics' blur.
    haze = ndi.gaussian_filter(signal, [4 * s for s in sigma])
    signal = ndi.gaussian_filter(signal, sigma) + 0.15 * haze
    # Uneven illumination: a gentle gradient across the field.
    ramps = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in labels.shape], indexing="ij")
    direction = rng.normal(size=len(ramps))
    direction /= np.linalg.norm(direction) + 1e-9
    grad = sum(d * r for d, r in zip(direction, ramps))
    bg = background * (1.0 + 0.4 * grad)
    expected = np.maximum(signal + bg, 0).astype(np.float32)
    if noise:
        img = rng.poisson(expected).astype(np.float32) + rng.normal(0, read_noise, labels.shape).astype(
            np.float32
        )
        img += 100.0  # camera offset keeps values positive after read noise
    else:
        img = expected + 100.0
    if dtype == "uint16":
        return np.clip(np.round(img), 0, 65535).astype(np.uint16)
    if dtype != "float32":
        raise ValueError(f"dtype must be 'float32' or 'uint16', not {dtype!r}")
    return img.astype(np.float32)


def nuclei_2d(
    shape: tuple[int, int] = (256, 256),
    n: int | None = None,
    seed: int = 0,
    radius: tuple[float, float] = (6.0, 13.0),
    touch: float = 0.85,
    noise: bool = True,
    brightness: float = 120.0,
    background: float = 20.0,
    read_noise: float = 4.0,
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """A 2D nuclei image and its instance labels (int32, 0 = background, ids 1..n).

    ``n`` defaults to about 30 % of the area covered. ``radius`` bounds the mean
    radius of each ellipse (aspect ratios up to ~1.6). Lower ``brightness`` for
    noisier images.
    """
    if len(shape) != 2:
        raise ValueError(f"nuclei_2d needs a 2D shape, got {shape}")
    rng = np.random.default_rng(seed)
    n = _default_n(shape, radius, 0.3) if n is None else int(n)
    centres, radii = _place(rng, shape, n, radius, touch)
    aspect = rng.uniform(1.0, 1.6, len(radii))
    axes_len = np.stack([radii * np.sqrt(aspect), radii / np.sqrt(aspect)], axis=1)
    rots = [_rotation_2d(a) for a in rng.uniform(0, np.pi, len(radii))]
    labels = _paint(shape, centres, axes_len, rots, min_size=max(8, int(0.15 * np.pi * radius[0] ** 2)))
    image = _render(labels, rng, (1.2, 1.2), brightness, background, read_noise, noise, dtype)
    return image, labels


def nuclei_3d(
    shape: tuple[int, int, int] = (32, 96, 96),
    n: int | None = None,
    seed: int = 0,
    radius: tuple[float, float] = (5.0, 9.0),
    anisotropy: float = 2.0,
    touch: float = 0.85,
    noise: bool = True,
    brightness: float = 120.0,
    background: float = 20.0,
    read_noise: float = 4.0,
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """A ZYX nuclei volume and its instance labels.

    Z is sampled ``anisotropy`` times coarser than Y/X (as in most confocal
    stacks), so objects look flatter along Z and the axial blur is stronger.
    """
    if len(shape) != 3:
        raise ValueError(f"nuclei_3d needs a 3D shape (Z, Y, X), got {shape}")
    rng = np.random.default_rng(seed)
    # Work in isotropic units: place in a box whose Z is stretched by the anisotropy.
    iso = (shape[0] * anisotropy, shape[1], shape[2])
    n = _default_n(iso, radius, 0.2) if n is None else int(n)
    centres, radii = _place(rng, iso, n, radius, touch)
    centres[:, 0] /= anisotropy
    aspect = rng.uniform(1.0, 1.5, len(radii))
    flat = rng.uniform(0.7, 1.0, len(radii))
    axes_len = np.stack([radii * flat / anisotropy, radii * np.sqrt(aspect), radii / np.sqrt(aspect)], axis=1)
    rots = [_rotation_3d(a) for a in rng.uniform(0, np.pi, len(radii))]
    labels = _paint(shape, centres, axes_len, rots, min_size=max(10, int(radius[0] ** 3 / anisotropy)))
    image = _render(
        labels, rng, (2.0 / anisotropy, 1.2, 1.2), brightness, background, read_noise, noise, dtype
    )
    return image, labels


def nuclei_timelapse(
    shape: tuple[int, int, int] = (8, 128, 128),
    n: int | None = None,
    seed: int = 0,
    radius: tuple[float, float] = (6.0, 12.0),
    step: float = 1.5,
    noise: bool = True,
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """A TYX movie of drifting nuclei and its labels; a nucleus keeps its id over time.

    Each nucleus takes a random walk of ``step`` pixels per frame and turns a
    little; nuclei that leave the field or disappear under a neighbour in a frame
    simply have no pixels there.
    """
    if len(shape) != 3:
        raise ValueError(f"nuclei_timelapse needs a (T, Y, X) shape, got {shape}")
    rng = np.random.default_rng(seed)
    nt, space = int(shape[0]), tuple(shape[1:])
    n = _default_n(space, radius, 0.25) if n is None else int(n)
    centres, radii = _place(rng, space, n, radius, 1.0)
    aspect = rng.uniform(1.0, 1.6, len(radii))
    axes_len = np.stack([radii * np.sqrt(aspect), radii / np.sqrt(aspect)], axis=1)
    angles = rng.uniform(0, np.pi, len(radii))
    # A nucleus keeps its brightness over time, so frames do not flicker.
    level = np.concatenate([[0.0], rng.lognormal(0.0, 0.35, len(radii))])
    images = []
    labels = np.zeros((nt, *space), np.int32)
    for t in range(nt):
        labels[t] = _paint(space, centres, axes_len, [_rotation_2d(a) for a in angles], relabel=False)
        images.append(_render(labels[t], rng, (1.2, 1.2), 120.0, 20.0, 4.0, noise, dtype, level))
        centres = centres + rng.normal(0, step, centres.shape)
        angles = angles + rng.normal(0, 0.05, len(angles))
    # Ids of nuclei never seen become gaps; renumber 1..n consistently over time.
    ids = np.unique(labels)
    lut = np.zeros(int(ids.max()) + 1, np.int32)
    lut[ids] = np.arange(len(ids), dtype=np.int32)
    return np.stack(images), lut[labels]


# --- the stardist package's own samples (real data, offline) --------------------
def stardist_sample_2d() -> tuple[np.ndarray, np.ndarray] | None:
    """The 512x512 DSB2018 nuclei image shipped with ``stardist`` and its mask, or None."""
    try:
        from stardist.data import test_image_nuclei_2d
    except ImportError:
        return None
    img, mask = test_image_nuclei_2d(return_mask=True)
    return np.asarray(img), np.asarray(mask).astype(np.int32)


def stardist_sample_3d() -> tuple[np.ndarray, np.ndarray] | None:
    """The small 3D nuclei volume shipped with ``stardist`` and its mask, or None."""
    try:
        from stardist.data import test_image_nuclei_3d
    except ImportError:
        return None
    img, mask = test_image_nuclei_3d(return_mask=True)
    return np.asarray(img), np.asarray(mask).astype(np.int32)


def mosaic(pairs: Sequence[tuple[np.ndarray, np.ndarray | None]], size: int | tuple[int, int],
           shift: tuple[int, int] = (131, 97), max_side: int = 520) -> tuple[np.ndarray, np.ndarray]:
    """A large 2D image (and its labels) packed from smaller ones, e.g. dsb2018 images.

    Images (cropped to ``max_side``) are laid in rows, reused in turn until the
    canvas is full, and the canvas is cropped after ``shift`` pixels, so that the
    images' own edges fall off the lines of power-of-two blocks: seams found in a
    blockwise prediction are then the blocks', not the mosaic's. Label ids are made
    unique over the mosaic (0 = background); missing labels give zeros.
    """
    h, w = (size, size) if isinstance(size, int) else size
    canvas = np.zeros((h + shift[0], w + shift[1]), np.asarray(pairs[0][0]).dtype)
    labels = np.zeros(canvas.shape, np.int64)
    y = x = row = top = 0
    for k in itertools.count():
        img, lab = pairs[k % len(pairs)]
        img = np.asarray(img)[:max_side, :max_side]
        if x + img.shape[1] > canvas.shape[1]:
            y, x, row = y + row, 0, 0
        if y >= canvas.shape[0]:
            break
        part = (slice(y, y + img.shape[0]), slice(x, x + img.shape[1]))
        canvas[part] = img[: canvas.shape[0] - y]
        if lab is not None:
            lab = np.asarray(lab)[:max_side, :max_side][: canvas.shape[0] - y].astype(np.int64)
            labels[part] = np.where(lab > 0, lab + top, 0)
            top += int(lab.max())
        x, row = x + img.shape[1], max(row, img.shape[0])
    crop = (slice(shift[0], None), slice(shift[1], None))
    _, inverse = np.unique(labels[crop], return_inverse=True)
    return canvas[crop], inverse.reshape(h, w).astype(np.int32)
