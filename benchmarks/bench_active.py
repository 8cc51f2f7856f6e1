"""Active learning on DSB2018: annotating what ``suggest`` ranks first vs at random.

    python benchmarks/bench_active.py [--budget 120] [--seeds 3] [--start 10 --step 10 --end 50]
                                      [--pool N] [--data ../shared/data/dsb2018] [--plot bench_active.png]
                                      [--quick]

A simulated annotator on ``dsb2018/train``: it starts from ``--start`` images chosen
at random (their masks are the annotations), trains the U-Net (CLI defaults) for
``--budget`` seconds, then in each round annotates ``--step`` more images and
fine-tunes the previous round's model for the same budget (``tasks.train(...,
start_from=...)``). The images are chosen by the suggestion ranking
(:func:`napari_dlbio.suggest.suggest` with the current model: test-time
disagreement) or at random; both strategies share the first round. After every
round the model is scored on ``dsb2018/val`` (AP@0.5, mean over images). Repeated
for ``--seeds`` seeds; prints a table (mean and spread per round), the number of
annotated images at which the suggestions reach random's final AP (goal: <= 70 %
of random's), and writes a plot. ``--quick`` runs a tiny version on synthetic
nuclei (a smoke test of the mechanics, its numbers mean nothing). ``--pool N`` ranks
only N unannotated images per round, drawn at random (the ranking predicts each
candidate 4 times, the largest cost of a round after training).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dsb2018"
STRATEGIES = ("suggest", "random")
TINY = {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "patch_size": 32, "depth": 2, "base_width": 8,
        "val_patches": 2, "tune_thresholds": False}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per round (default: 120)")
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (default: 3)")
    ap.add_argument("--start", type=int, default=10, help="images annotated at the start (default: 10)")
    ap.add_argument("--step", type=int, default=10, help="images added per round (default: 10)")
    ap.add_argument("--end", type=int, default=50, help="images annotated in the last round (default: 50)")
    ap.add_argument("--pool", type=int, default=0,
                    help="rank at most N unannotated images per round, drawn at random (default: all)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed ... first-seed + seeds - 1")
    ap.add_argument("--rows", type=Path, help="also save the measured rows (JSON), to combine runs")
    ap.add_argument("--combine", type=Path, nargs="+", help="no run: table and plot of saved rows (parallel runs)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--plot", type=Path, default=Path("bench_active.png"), help="where to write the plot")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic run (smoke test, seconds)")
    args = ap.parse_args(argv)
    if args.quick:
        args.start, args.step, args.end, args.seeds = 2, 2, 4, 1
    return args


# --- data and training --------------------------------------------------------------------------
def load(args):
    """(train samples, val samples): DSB2018, or synthetic nuclei for --quick."""
    from napari_dlbio import data, samples

    if args.quick:
        def make(seeds):
            return [data.Sample(img[None], lab, None, f"s{k}")
                    for k in seeds for img, lab in [samples.nuclei_2d((64, 64), seed=k)]]
        return make(range(8)), make(range(100, 102))
    train = data.from_folders(args.data / "train" / "images", args.data / "train" / "masks").samples
    val = data.from_folders(args.data / "val" / "images", args.data / "val" / "masks").samples
    return train, val


def settings(args, seed: int):
    from napari_dlbio.backends import get

    Settings = get("unet").Settings
    if args.quick:
        return Settings(**TINY, seed=seed)
    return Settings(minutes=args.budget / 60.0, seed=seed)


def train_round(args, chosen: list, seed: int, start_from: Path | None, save_to: Path) -> Path:
    from napari_dlbio import data, tasks

    n = len(chosen)
    td = data.TrainingData(list(chosen), 2, {"sources": [], "items": [], "n_items": n, "n_objects": 0})
    tasks.train("unet", td, settings(args, seed), save_to=save_to, start_from=start_from)
    return save_to


def score(model_path: Path, val: list) -> float:
    """AP@0.5 on ``val``, the mean over images (the DSB/StarDist convention)."""
    from napari_dlbio import tasks
    from napari_dlbio.metrics import mean_ap

    model = tasks.load_model(model_path)
    preds = [tasks.predict(model, s.image[0]).outputs["labels"] for s in val]
    return mean_ap([s.target for s in val], preds)["ap"]


# --- choosing what to annotate ------------------------------------------------------------------------
def pick(strategy: str, model_path: Path, train: list, pool: list[int], k: int, rng) -> list[int]:
    """``k`` indices of ``pool`` (unannotated images) to annotate next."""
    if strategy == "random":
        return [int(i) for i in rng.choice(pool, size=min(k, len(pool)), replace=False)]
    from napari_dlbio import tasks
    from napari_dlbio.suggest import Source, suggest

    model = tasks.load_model(model_path)
    found = suggest(model, [Source(str(i), train[i].image, "CYX") for i in pool], n=k)
    return [int(s.image) for s in found]


def run_seed(args, seed: int, train: list, val: list, work: Path) -> list[dict]:
    """Every round of both strategies for one seed: rows (seed, strategy, n, ap, seconds).

    The strategies take turns round by round, so a run cut short still compares them.
    """
    rng = np.random.default_rng(seed)
    first = [int(i) for i in rng.choice(len(train), size=args.start, replace=False)]
    t0 = time.monotonic()
    path = train_round(args, [train[i] for i in first], seed, None, work / f"s{seed}-start")
    ap0 = score(path, val)
    rows = [{"seed": seed, "strategy": s, "n": args.start, "ap": ap0, "seconds": time.monotonic() - t0}
            for s in STRATEGIES]
    print(f"seed {seed}: {args.start} images, AP@0.5 {ap0:.3f}", flush=True)
    state = {s: (list(first), path, np.random.default_rng([seed, k + 1])) for k, s in enumerate(STRATEGIES)}
    for n in range(args.start + args.step, args.end + 1, args.step):
        for strategy, (chosen, prev, srng) in state.items():
            t0 = time.monotonic()
            pool = [i for i in range(len(train)) if i not in set(chosen)]
            if args.pool and len(pool) > args.pool:
                pool = sorted(int(i) for i in srng.choice(pool, size=args.pool, replace=False))
            chosen = chosen + pick(strategy, prev, train, pool, n - len(chosen), srng)
            prev = train_round(args, [train[i] for i in chosen], seed, prev, work / f"s{seed}-{strategy}-{n}")
            state[strategy] = (chosen, prev, srng)
            ap, took = score(prev, val), time.monotonic() - t0
            rows.append({"seed": seed, "strategy": strategy, "n": n, "ap": ap, "seconds": took})
            print(f"seed {seed}: {strategy:<8} {n} images, AP@0.5 {ap:.3f} ({took:.0f} s)", flush=True)
    return rows


# --- the report ---------------------------------------------------------------------------------
def curves(rows: list[dict]) -> dict[str, dict[int, list[float]]]:
    out: dict[str, dict[int, list[float]]] = {s: {} for s in STRATEGIES}
    for r in rows:
        out[r["strategy"]].setdefault(r["n"], []).append(r["ap"])
    return out


def table(rows: list[dict]) -> str:
    c = curves(rows)
    lines = [f"{'annotated':>9}  {'suggest AP@0.5':>16}  {'random AP@0.5':>16}"]
    for n in sorted(c["random"]):
        cells = [f"{np.mean(c[s][n]):.3f} ± {np.std(c[s][n]):.3f}" for s in STRATEGIES]
        lines.append(f"{n:>9}  {cells[0]:>16}  {cells[1]:>16}")
    return "\n".join(lines)


def goal(rows: list[dict]) -> str:
    """How many annotated images the suggestions need for random's final AP."""
    c = curves(rows)
    last = max(c["random"])
    target = float(np.mean(c["random"][last]))
    reach = [n for n in sorted(c["suggest"]) if np.mean(c["suggest"][n]) >= target]
    if not reach:
        return f"suggestions never reach random's final AP ({target:.3f} with {last} images)"
    n = reach[0]
    verdict = "goal met" if n <= 0.7 * last else "goal (<= 70 %) not met"
    return (f"suggestions reach random's final AP ({target:.3f} with {last} images) with {n} "
            f"({n / last:.0%}): {verdict}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for strategy, curve in curves(rows).items():
        ns = sorted(curve)
        mean = np.array([np.mean(curve[n]) for n in ns])
        sd = np.array([np.std(curve[n]) for n in ns])
        ax.plot(ns, mean, "o-", label=strategy)
        ax.fill_between(ns, mean - sd, mean + sd, alpha=0.2)
    ax.set_xlabel("annotated training images")
    ax.set_ylabel("AP@0.5 on val (mean over images)")
    ax.set_title("Active learning: suggested vs random images")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(rows: list[dict], args, header: str) -> None:
    print(f"\n{header}")
    print(table(rows))
    print(goal(rows))
    plot(rows, args.plot)
    print(f"plot: {args.plot}")


def main(argv=None) -> int:
    args = parse(argv)
    if args.combine:  # seeds run in parallel processes (one torch thread each), reported together
        rows = [r for f in args.combine for r in json.loads(f.read_text())]
        report(rows, args, f"combined: {len(args.combine)} run(s), seeds {sorted({r['seed'] for r in rows})}")
        return 0
    if not args.quick and not (args.data / "train" / "images").is_dir():
        print(f"no DSB2018 data at {args.data}; see ../shared/data/README.md")
        return 1
    train, val = load(args)
    # The models of the rounds live in a temporary folder, never in the user's store.
    work = Path(tempfile.mkdtemp(prefix="bench-active-"))
    start, load_before = time.monotonic(), os.getloadavg()[0]
    try:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        rows = [r for seed in seeds for r in run_seed(args, seed, train, val, work)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.rows:
        args.rows.write_text(json.dumps(rows, indent=1))
    what = "synthetic (--quick)" if args.quick else f"DSB2018 train {len(train)} / val {len(val)} images"
    report(rows, args, f"{what}; U-Net, {'tiny settings' if args.quick else f'{args.budget:.0f} s per round'}, "
           f"{args.seeds} seed(s); {time.monotonic() - start:.0f} s in all; load average "
           f"{load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
