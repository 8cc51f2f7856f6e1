"""Do per-object scores tell right objects from wrong ones? AUROC on DSB2018 val; prints a table.

    python benchmarks/bench_confidence.py [--minutes 4] [--unet DIR] [--stardist DIR] [--quick]

For every object a model predicts on ``dsb2018/val`` the score of ``Prediction.objects``
(napari_dlbio.objects) is set against whether the object matches a true nucleus at
IoU > 0.5 (the AP@0.5 criterion; at IoU > 0.5 a match is unique). The area under the ROC
curve of that score is reported per model (goal >= 0.80): 0.5 is a score that says
nothing, 1.0 one that ranks every right object above every wrong one.

Models: a U-Net trained here on ``dsb2018/train`` with the default settings for
``--minutes`` (or ``--unet DIR``, a saved model), and StarDist: the official DSB model of
``stardist-official-dsb`` converted (trained on ``dsb2018/train``; or ``--stardist DIR``).
Each also with the test-time flip agreement (prediction setting ``flip_agreement``: the
score times how well flipped copies find the object again), and for the U-Net the mean
interior probability the score was chosen against. ``--quick``: 5 val images, a 0.3-minute U-Net
trained on 12 images (a smoke test of the code, not a measurement).

Measured 2026-12-03 on the shared 2-core CPU (1 torch thread; other jobs running), full val
(30 images): U-Net (4 min, default settings) mean foreground probability AUROC 0.782 over
1178 objects (81 % matched), with flip agreement 0.808 (agreement alone 0.809; the mean
interior probability only 0.634); StarDist official DSB model, object probability 0.778
over 1194 objects (85 % matched), with flip agreement 0.800 (alone 0.784). A second U-Net
training run gave 0.779 / 0.811 (interior 0.679).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def matched(true: np.ndarray, pred: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """For predicted objects ``ids``: whether each overlaps one true object at IoU > 0.5."""
    from napari_dlbio.metrics import overlap

    ov = overlap(true, pred)
    best = dict(zip(ov.pred_ids.tolist(), (ov.iou.max(axis=0) if len(ov.true_ids) else
                                          np.zeros(len(ov.pred_ids))).tolist()))
    return np.array([best.get(int(i), 0.0) > 0.5 for i in ids], bool)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: sklearn's where installed, else the Mann-Whitney rank formula."""
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        from scipy.stats import rankdata

        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if not n_pos or not n_neg:
            return float("nan")
        ranks = rankdata(scores)                        # ties get their mean rank
        return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(roc_auc_score(positive, scores))


def collect(model, samples, extra=None) -> dict[str, np.ndarray]:
    """Per predicted object over ``samples``: the score, with flip agreement, the match, and
    ``extra`` scores (name -> fn(labels, probabilities) indexed by id)."""
    from napari_dlbio import tasks

    cols: dict[str, list] = {}
    plain = model.spec.Predict(probabilities=True) if extra else None
    flips = model.spec.Predict(flip_agreement=True)
    for s in samples:
        pred = tasks.predict(model, s.image[0], settings=plain)
        labels, table = pred.outputs["labels"], pred.objects
        both = tasks.predict(model, s.image[0], settings=flips).objects
        assert np.array_equal(both["label"], table["label"])   # the same objects, one more column
        cols.setdefault("score", []).append(table["score"])
        cols.setdefault("agreement", []).append(both["agreement"])
        cols.setdefault("score x agreement", []).append(both["score"])
        cols.setdefault("positive", []).append(matched(s.target, labels, table["label"]))
        for name, fn in (extra or {}).items():
            cols.setdefault(name, []).append(fn(labels, pred.outputs["probability"])[table["label"]])
    return {k: np.concatenate(v) for k, v in cols.items()}


def interior(labels, prob):
    """The alternative U-Net score: mean interior probability (penalises every object's rim)."""
    from napari_dlbio.objects import mean_per_object

    return mean_per_object(labels, prob[1])


def train_unet(work: Path, minutes: float, n_train: int | None):
    from napari_dlbio import data, tasks
    from napari_dlbio.backends import get

    td = data.from_folders(DATA / "dsb2018" / "train" / "images", DATA / "dsb2018" / "train" / "masks")
    if n_train:
        td.samples = td.samples[:n_train]
    start = time.monotonic()
    out = tasks.train("unet", td, get("unet").Settings(minutes=minutes), work / "unet")
    return out.model, time.monotonic() - start


def row(name: str, cols: dict, key: str = "score") -> list[str]:
    pos, v = cols["positive"], cols[key]

    def mean(x):
        return f"{x.mean():.3f}" if len(x) else "-"

    return [name, str(len(pos)), f"{pos.mean():.2f}", f"{auroc(v, pos):.3f}", mean(v[pos]), mean(v[~pos])]


def print_table(rows: list[list[str]]) -> None:
    header = ["score", "objects", "matched", "AUROC", "mean score matched", "mean score unmatched"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="U-Net training budget (default 4)")
    ap.add_argument("--unet", type=Path, help="a saved U-Net to score instead of training one")
    ap.add_argument("--stardist", type=Path, default=DATA / "stardist-official-dsb")
    ap.add_argument("--quick", action="store_true", help="smoke test: 5 val images, a 0.3-minute U-Net")
    args = ap.parse_args(argv)
    if not (DATA / "dsb2018" / "val" / "images").is_dir():
        print(f"no DSB2018 data under {DATA}; see ../shared/data/README.md")
        return 1
    import torch

    torch.set_num_threads(1)   # a shared CPU: more threads spin at barriers (bench_stardist.py)
    from napari_dlbio import data, tasks
    from napari_dlbio.backends import get

    val = data.from_folders(DATA / "dsb2018" / "val" / "images", DATA / "dsb2018" / "val" / "masks").samples
    minutes = 0.3 if args.quick else args.minutes
    val = val[:5] if args.quick else val
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-confidence-") as tmp:
        if args.unet:
            unet, what = tasks.load_model(args.unet), f"U-Net {args.unet.name}"
        else:
            unet, sec = train_unet(Path(tmp), minutes, 12 if args.quick else None)
            what = f"U-Net ({minutes:g} min, {sec:.0f} s)"
        cols = collect(unet, val, {"interior": interior})
        rows += [row(f"{what}: mean foreground probability (the score)", cols),
                 row(f"{what}: flip agreement", cols, "agreement"),
                 row(f"{what}: score x agreement (flip_agreement on)", cols, "score x agreement"),
                 row(f"{what}: mean interior probability (not used)", cols, "interior")]
    if args.stardist.exists():
        sd, name = get("stardist").pretrained(str(args.stardist)), f"StarDist {args.stardist.name}"
        cols = collect(sd, val)
        rows += [row(f"{name}: object probability (the score)", cols),
                 row(f"{name}: flip agreement", cols, "agreement"),
                 row(f"{name}: score x agreement (flip_agreement on)", cols, "score x agreement")]
    print(f"\nDSB2018 val, {len(val)} images; positive = matches a true nucleus at IoU > 0.5\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
