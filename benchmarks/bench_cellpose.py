"""Overhead of napari-dlbio's Cellpose prediction over calling Cellpose directly.

For one synthetic time-lapse stack, times ``tasks.predict`` (axes, per-frame items,
progress, cancel checks, label offsets) against ``CellposeModel.eval`` on the
list of frames with the same settings, and checks that both find the same
objects. Networks: a random small Cellpose-SAM (``--arch tiny``: 4 blocks, 192
dims, 2.8 M parameters; ``micro``: 1 block, 32 dims) and, with ``--full``, a
random ViT-L of cpsam's size (305 M parameters; the real cpsam weights are not
needed for timing). Reports images/s; on a GPU that is the number to watch. "wrapper" is the time
of our predict outside Cellpose's ``eval``, as a share of the time inside it;
"cpu ratio" compares process CPU time, which other jobs on a shared machine blur
less than wall time.

    python benchmarks/bench_cellpose.py                 # tiny net, 8 frames of 256x256
    python benchmarks/bench_cellpose.py --full --frames 2
    python benchmarks/bench_cellpose.py --mode stitch   # Z stack, stitch_threshold 0.3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def blobs_stack(frames: int, size: int, seed: int = 0) -> np.ndarray:
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    out = np.zeros((frames, size, size), np.float32)
    for t in range(frames):
        for _ in range(size * size // 600):
            r = int(rng.integers(6, 12))
            c = rng.integers(r, size - r, 2)
            rr, cc = disk((int(c[0]), int(c[1])), r, shape=(size, size))
            out[t, rr, cc] = 100
        out[t] += rng.normal(20, 8, (size, size))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["tiny", "micro"], default="tiny")
    ap.add_argument("--full", action="store_true", help="also a random ViT-L (cpsam-sized) network")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--float32", action="store_true", help="float32 instead of Cellpose's default bfloat16")
    ap.add_argument("--mode", choices=["2d", "stitch"], default="2d")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 gives steadier timings on a shared machine)")
    args = ap.parse_args()

    import torch
    from cellpose import models

    from napari_dlbio import device as devices
    from napari_dlbio import tasks
    from napari_dlbio.backends.cellpose import BACKEND, MICRO, TINY, VIT_L, Predict, write_random_model
    from napari_dlbio.backends.cellpose.net import encoder_of

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = devices.select_device(args.device)
    stack = blobs_stack(args.frames, args.size)
    archs = [("micro" if args.arch == "micro" else "tiny", MICRO if args.arch == "micro" else TINY)]
    if args.full:
        archs.append(("vit-l (cpsam size)", VIT_L))
    bf16 = not args.float32
    print(f"device {dev}, torch threads {torch.get_num_threads()}, stack {stack.shape} ({args.mode}), "
          f"{'bfloat16' if bf16 else 'float32'}, best of {args.repeat}")
    head = ("network", "ours s", "direct s", "ratio", "cpu ratio", "wrapper", "images/s")
    print("{:<20} {:>8} {:>9} {:>6} {:>9} {:>8} {:>9}  same objects".format(*head))
    tmp = Path(tempfile.mkdtemp(prefix="bench-cellpose-"))
    for label, arch in archs:
        path = write_random_model(tmp / label.split()[0], arch)
        ours = BACKEND.pretrained(str(path))
        with encoder_of(arch):
            direct = models.CellposeModel(gpu=dev.type != "cpu", device=dev, pretrained_model=str(path),
                                          use_bfloat16=bf16)
        s = Predict(device=args.device, bfloat16=bf16, stitch_threshold=0.3 if args.mode == "stitch" else 0.0)
        axes = "ZYX" if args.mode == "stitch" else "TYX"

        # Time spent inside Cellpose's eval during our predict: the rest is our wrapper's
        # own cost, a measure that the machine's load does not blur as much as wall time.
        inner = []
        cp_eval = ours.cellpose_model.eval

        def timed_eval(*a, **k):
            t = time.perf_counter()
            try:
                return cp_eval(*a, **k)
            finally:
                inner.append(time.perf_counter() - t)

        ours.cellpose_model.eval = timed_eval

        def run_ours():
            return tasks.predict(ours, stack, axes, s).outputs["labels"]

        def run_direct():
            if args.mode == "stitch":
                return direct.eval(stack.copy(), z_axis=0, stitch_threshold=0.3, batch_size=s.batch_size)[0]
            return np.stack(direct.eval([f.copy() for f in stack], batch_size=s.batch_size)[0])

        a, b = run_ours(), run_direct()  # warm-up (and the check)
        same = np.array_equal(a > 0, b > 0) and len(np.unique(a)) == len(np.unique(b))
        t_ours, t_direct, wrapper = [], [], []
        cpu = {run_ours: [], run_direct: []}  # process CPU time: less blurred by other jobs
        for i in range(args.repeat):
            order = ((run_ours, t_ours), (run_direct, t_direct))
            for fn, acc in order if i % 2 == 0 else order[::-1]:  # alternate who goes first
                inner.clear()
                c = time.process_time()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                acc.append(time.perf_counter() - t)
                cpu[fn].append(time.process_time() - c)
                if fn is run_ours:
                    wrapper.append((acc[-1] - sum(inner)) / sum(inner))
        o, d = min(t_ours), min(t_direct)
        c_ratio = min(cpu[run_ours]) / min(cpu[run_direct])
        print(f"{label:<20} {o:8.2f} {d:9.2f} {o / d:6.3f} {c_ratio:9.3f} {min(wrapper):+8.2%} "
              f"{len(stack) / o:9.2f}  {same}"
              f"   (medians {statistics.median(t_ours):.2f} / {statistics.median(t_direct):.2f})")
        del ours, direct
        devices.release(dev)


if __name__ == "__main__":
    main()
