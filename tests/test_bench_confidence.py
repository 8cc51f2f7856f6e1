"""The measuring helpers of benchmarks/bench_confidence.py (the benchmark itself is not run by pytest)."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_confidence as bc  # noqa: E402


def test_matched_is_iou_above_one_half():
    true = np.zeros((10, 10), np.int32)
    true[0:4, 0:4] = 1                      # 16 px
    true[6:10, 6:10] = 2
    pred = np.zeros_like(true)
    pred[0:4, 0:3] = 7                      # IoU 12/16 with true 1
    pred[6:10, 6:8] = 3                     # IoU 8/16 = 0.5: not > 0.5
    pred[5, 0:2] = 4                        # on background only
    assert bc.matched(true, pred, np.array([7, 3, 4])).tolist() == [True, False, False]


def test_auroc_rank_formula_agrees_with_counting_pairs():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)   # many ties
    pos = rng.random(200) < 0.4
    a, b = scores[pos][:, None], scores[~pos][None, :]
    expected = ((a > b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size)
    assert abs(bc.auroc(scores, pos) - expected) < 1e-12
