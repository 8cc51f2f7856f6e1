"""Generated bad inputs at scale: the properties of tests/test_bad_inputs.py, more examples.

    PYTHONPATH=src python benchmarks/bench_bad_inputs.py --examples 500

Prints a table per target: inputs tried, documented results, user errors, other
exceptions (must be 0) and inputs changed (must be 0). Exits 1 when either of
the last two is not 0.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_bad_inputs as props
from hypothesis import HealthCheck, given, settings


def _record(counts, failures, fn):
    counts["tried"] += 1
    try:
        counts[fn()] += 1
    except AssertionError as exc:
        key = "changed" if "changed" in str(exc) else "other"
        counts[key] += 1
        failures.append(str(exc).splitlines()[0][:200])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=500, help="predict examples (train gets a fifth, at least 20)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    from napari_dlbio.backends import get

    torch.manual_seed(args.seed)
    models = {"predict unet": get("unet").new(get("unet").Settings(**props.UNET_TINY), 1, 2)}
    try:
        be = get("stardist")
        models["predict stardist"] = be.new(be.Settings(depth=1, width=4, n_rays=8, grid=1, features=0), 1, 2)
    except Exception as exc:  # noqa: BLE001 - not installed: leave it out
        print(f"(stardist left out: {exc})")
    rows, failures = {}, []
    common = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}
    start = time.monotonic()
    for name, model in models.items():
        counts = rows[name] = collections.Counter()
        n = args.examples if name == "predict unet" else max(20, args.examples // 5)

        def make(model, counts, n):
            @settings(max_examples=n, **common)
            @given(img=props.any_image())
            def prop(img):
                _record(counts, failures, lambda: props.run_predict(model, img))
            return prop

        make(model, counts, n)()
    counts = rows["train unet"] = collections.Counter()
    folder = Path(tempfile.mkdtemp(prefix="bench-bad-inputs-"))

    @settings(max_examples=max(20, args.examples // 5), **common)
    @given(case=props.train_case())
    def prop_train(case):
        _record(counts, failures, lambda: props.run_train(*case, folder))

    prop_train()
    cols = ["tried", "result", "user_error", "other", "changed"]
    head = ["target", "inputs tried", "documented results", "user errors", "other exceptions", "inputs changed"]
    print(" | ".join(f"{h:>18}" for h in head))
    total = collections.Counter()
    for name, c in rows.items():
        total.update(c)
        print(" | ".join([f"{name:>18}"] + [f"{c[k]:>18}" for k in cols]))
    print(" | ".join([f"{'total':>18}"] + [f"{total[k]:>18}" for k in cols]))
    print(f"{time.monotonic() - start:.1f} s")
    for f in sorted(set(failures))[:20]:
        print("FAIL:", f)
    return 1 if total["other"] or total["changed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
