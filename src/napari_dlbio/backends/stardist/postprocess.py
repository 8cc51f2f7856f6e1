"""From network outputs to objects: non-maximum suppression and label rendering (stardist package)."""

from __future__ import annotations

import numpy as np


def candidates(prob: np.ndarray, dist: np.ndarray, grid: tuple[int, ...], prob_thresh: float,
               nms_thresh: float, rays=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objects kept by NMS: ``(points (N, ndim) in pixels, prob (N,), dist (N, R))``, most probable first.

    ``prob`` is (*sub), ``dist`` (*sub, R) on the grid, as the official ``predict`` gives them.
    """
    from stardist import non_maximum_suppression, non_maximum_suppression_3d

    dist = np.maximum(1e-3, dist)  # as the official predict does, so Qhull never sees zero rays
    if prob.ndim == 2:
        points, probi, disti = non_maximum_suppression(
            dist, prob, grid=tuple(grid), prob_thresh=prob_thresh, nms_thresh=nms_thresh)
    else:
        points, probi, disti = non_maximum_suppression_3d(
            dist, prob, rays, grid=tuple(grid), prob_thresh=prob_thresh, nms_thresh=nms_thresh)
    order = np.argsort(-probi, kind="stable")
    return points[order], probi[order], disti[order]


def render(points: np.ndarray, probi: np.ndarray, disti: np.ndarray, shape: tuple[int, ...],
           rays=None) -> np.ndarray:
    """int32 labels of ``shape``; where objects overlap the more probable one wins."""
    from stardist import polygons_to_label, polyhedron_to_label

    if len(points) == 0:
        return np.zeros(shape, np.int32)
    if len(shape) == 2:
        labels = polygons_to_label(disti, points, shape=shape, prob=probi)
    else:
        labels = polyhedron_to_label(disti, points, rays=rays, shape=shape, prob=probi, verbose=False)
    return labels.astype(np.int32, copy=False)


def polygons(points: np.ndarray, disti: np.ndarray) -> list[np.ndarray]:
    """Polygon vertices (n_rays, 2) in (y, x) pixel coordinates, one per object."""
    from stardist import dist_to_coord

    if len(points) == 0:
        return []
    coord = dist_to_coord(disti, points)  # (N, 2, R)
    return [np.ascontiguousarray(c.T, dtype=np.float32) for c in coord]


def object_scores(probi: np.ndarray) -> np.ndarray:
    """Per-object scores indexed by label id: :func:`render` gives the i-th point id i + 1.

    The score is the network's object probability at the polygon's (polyhedron's)
    centre, the probability NMS kept it with: in [0, 1], high for a confident nucleus.
    """
    return np.concatenate([[0.0], np.clip(np.asarray(probi, np.float64), 0.0, 1.0)]).astype(np.float32)
