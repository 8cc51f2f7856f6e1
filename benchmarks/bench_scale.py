"""Images larger than memory (issue 10): seams, flat memory, distributed throughput, resume, overhead.

All on real data from ``../shared/data``: mosaics of dsb2018 ``val`` nuclei (2D) and the
stardist 3D sample, with models trained on dsb2018 ``train`` through the CLI and cached in
``--models`` (a rerun skips training). One table per section, each with a "target" column:

1. seams     2048 x 2048 mosaic, 512 px blocks vs whole-image prediction (U-Net, StarDist ours
             and the official DSB model converted, a micro Cellpose-SAM fine-tuned on
             dsb2018, N2V on a noisy copy): AP@0.5 between the two >= 0.98 and no more
             objects cut by block lines than whole; N2V within 1e-3 of its output range.
             AP@0.5 of each against the ground truth (PSNR for N2V).
2. memory    ``napari-dlbio predict --out-format ome-zarr`` (a child process) on uint8
             OME-Zarr mosaics of 8192^2 and 16384^2 px (--block-size 1024 for both) and
             on uint16 volumes of 16 x 384^2 and 16 x 768^2 (a 3D U-Net, 128 px blocks):
             peak RSS of the larger <= 1.2x the smaller, both < 2 GB; the output checked
             (objects per Mpx, a crop around a block corner predicted whole), phases profiled.
3. cluster   one 4096^2 OME-Zarr blockwise in-process, on local:1 and local:2: Mpx/s,
             outputs identical up to renumbering.
4. resume    the CLI SIGKILLed when half of the 8192^2 mosaic's blocks are done, rerun with
             --resume: blocks predicted by the rerun (counted from the markers' times),
             output identical to an uninterrupted run.
5. overhead  2048^2 and 4096^2 (fit in memory): blockwise (the memory budget's block size,
             and 1024 px) vs item-wise prediction time <= 1.15x.

    python benchmarks/bench_scale.py [--only seams,memory] [--quick] [--train-minutes 2]
                                     [--models DIR] [--work DIR] [--threads 1]

The U-Net has 8 base channels (the CLI's default is 16): on one CPU thread the 16384^2
mosaic alone would otherwise take about 25 minutes. With trained models the defaults took
20 minutes on the shared 2-core CPU (load 1-2; 2026-12-03); a first run trains for about 17
more (Cellpose 4x --train-minutes). ``--quick`` uses smaller sizes (about 5 minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scale_setup as ss  # noqa: E402

SECTIONS = ("seams", "memory", "cluster", "resume", "overhead")
CACHE = Path(tempfile.gettempdir()) / "napari-dlbio-bench-scale"
OUTPUTS = ("memory", "cluster", "resume", "overhead")  # folders of --work removed at the end


@dataclass(frozen=True)
class Sizes:
    seams: int = 2048
    seams_block: int = 512
    memory: tuple[int, int] = (8192, 16384)
    # Both volumes with interior blocks (3 x 3 and 6 x 6), so their largest blocks are alike.
    memory_3d: tuple[tuple[int, int, int], tuple[int, int, int]] = ((16, 384, 384), (16, 768, 768))
    block: int = 1024           # --block-size of the memory and resume runs (2D)
    block_3d: int = 128
    cluster: int = 4096
    overhead: tuple[int, ...] = (2048, 4096)
    overhead_block: int = 1024


# Quick: the smaller volume has border blocks only (smaller than interior ones), so its 3D
# memory ratio reads high; the full sizes have interior blocks in both.
QUICK = Sizes(seams=1024, memory=(2048, 4096), memory_3d=((16, 256, 256), (16, 512, 512)), block=512,
              block_3d=128, cluster=2048, overhead=(1024, 2048), overhead_block=512)


@dataclass
class Bench:
    args: argparse.Namespace
    sizes: Sizes
    models: ss.Models
    work: Path
    done: dict[str, Any] = field(default_factory=dict)   # results one section hands another

    def input_2d(self, size: int) -> Path:
        """The uint8 OME-Zarr mosaic of ``size`` x ``size`` px (written once, chunk by chunk)."""
        chunk = min(1024, size)
        return ss.write_ome_zarr(self.work / "inputs" / f"mosaic-{size}.ome.zarr", (size, size),
                                 self.base("2d"), (chunk, chunk))

    def input_3d(self, shape: tuple[int, int, int]) -> Path:
        name = "volume-" + "x".join(map(str, shape)) + ".ome.zarr"
        return ss.write_ome_zarr(self.work / "inputs" / name, shape, self.base("3d"),
                                 (shape[0], min(256, shape[1]), min(256, shape[2])), mirror=True)

    def base(self, kind: str) -> np.ndarray:
        if kind not in self.done:
            self.done[kind] = ss.base_2d() if kind == "2d" else ss.base_3d()
        return self.done[kind]


# --- main --------------------------------------------------------------------------------------------
def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"sections, comma-separated: {','.join(SECTIONS)}")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for trying the script out")
    ap.add_argument("--train-minutes", type=float, default=2.0,
                    help="training budget of each model (the micro Cellpose network gets 4x)")
    ap.add_argument("--models", type=Path, default=CACHE / "models",
                    help="folder of the trained models (trained there when missing)")
    ap.add_argument("--work", type=Path, default=CACHE / "work",
                    help="folder of the inputs (OME-Zarr mosaics, kept for later runs) and the outputs "
                         "(removed at the end)")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per process (1: shared CPU)")
    ap.add_argument("--data", type=Path, default=ss.DATA, help="the shared data folder")
    args = ap.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    ss.DATA = args.data
    if not (args.data / "dsb2018" / "val" / "images").is_dir():
        print(f"no dsb2018 data in {args.data}; see ../shared/data/README.md")
        return 1
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    models = ss.Models(args.models, args.train_minutes, args.threads)
    bench = Bench(args, QUICK if args.quick else Sizes(), models, work)
    quick = " (quick)" if args.quick else ""
    print(f"bench_scale: {', '.join(args.only)}{quick}; torch {torch.__version__}, "
          f"{args.threads} thread(s), {os.cpu_count()} CPUs; models in {args.models}; work in {work}")
    print(f"start: {ss.load()}", flush=True)
    import scale_sections

    start = time.monotonic()
    try:
        for name in SECTIONS:
            if name in args.only:
                t = time.monotonic()
                getattr(scale_sections, name)(bench)
                print(f"({name}: {time.monotonic() - t:.0f} s; {ss.load()})", flush=True)
    finally:
        for sub in OUTPUTS:
            shutil.rmtree(work / sub, ignore_errors=True)
    print(f"\nend: {ss.load()}; total {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
