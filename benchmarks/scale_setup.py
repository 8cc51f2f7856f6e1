"""What ``bench_scale.py`` measures on: dsb2018 mosaics, OME-Zarr inputs written chunk by chunk,
models trained once and cached, and the CLI run as a child process with its peak memory.

Large inputs are never held whole: an OME-Zarr mosaic is a dask array whose every chunk is
cut from a smaller base image repeated periodically (a dsb2018 ``val`` mosaic whose period,
1900 px, falls off the power-of-two block lines; the stardist 3D sample mirrored), written
by ome-zarr's ``write_image``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GAIN, READ_NOISE, NOISE_SEED = 0.5, 5.0, 2018   # bench_n2v's Poisson-Gaussian noise
BASE_2D = 1900                                  # period of the large 2D mosaics (not a power of two)


# --- images ----------------------------------------------------------------------------------------
def dsb_pairs(split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    from napari_dlbio.data import read_image

    folder = DATA / "dsb2018" / split
    files = sorted((folder / "images").glob("*.tif"))
    return [(read_image(p), read_image(folder / "masks" / p.name)) for p in files]


def mosaic(size: int | tuple[int, int], split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """A dsb2018 mosaic (uint8) and its ground truth (int32, ids unique), in memory."""
    from napari_dlbio.samples import mosaic as pack

    return pack(dsb_pairs(split), size)


def add_noise(clean: np.ndarray, seed: int = NOISE_SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = clean.astype(np.float32)
    return (rng.poisson(c * GAIN) / GAIN + rng.normal(0, READ_NOISE, c.shape)).astype(np.float32)


def _periodic(block: np.ndarray, base: np.ndarray, mirror: bool, block_info=None) -> np.ndarray:
    """One chunk of an image that repeats ``base`` (mirrored at its edges when ``mirror``)."""
    loc = block_info[None]["array-location"]
    idx = []
    for (a, b), n in zip(loc, base.shape):
        i = np.arange(a, b)
        if mirror:
            i = i % (2 * n)
            i = np.where(i < n, i, 2 * n - 1 - i)
        else:
            i = i % n
        idx.append(i)
    return base[np.ix_(*idx)]


def write_ome_zarr(path: Path, shape: tuple[int, ...], base: np.ndarray, chunks: tuple[int, ...],
                   mirror: bool = False) -> Path:
    """An NGFF 0.5 image of ``shape`` repeating ``base``, written chunk by chunk (no pyramid:
    the engine reads level 0 only). Kept when it exists already (it is a pure function of the data)."""
    import dask.array as da
    from ome_zarr.writer import write_image

    if (path / "zarr.json").is_file() and (path / "0" / "zarr.json").is_file():
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lazy = da.map_blocks(_periodic, da.empty(shape, base.dtype, chunks=chunks), base=base, mirror=mirror,
                         dtype=base.dtype)
    axes = "zyx"[-len(shape):]
    write_image(lazy, str(tmp), scale_factors=[], axes=list(axes), storage_options={"chunks": chunks})
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def base_2d() -> np.ndarray:
    return mosaic(BASE_2D)[0]


def base_3d() -> np.ndarray:
    """The middle 16 planes of the stardist 3D sample (31 x 61 x 57): 3D prediction costs ~3 CPU s
    per Mvoxel here, so the volumes are 16 planes deep."""
    import tifffile

    return tifffile.imread(DATA / "stardist-samples" / "img3d.tif")[8:24]


# --- models ----------------------------------------------------------------------------------------
@dataclass
class Models:
    """Trained models in ``folder`` (trained when missing, with the CLI as a user would)."""

    folder: Path
    minutes: float
    threads: int = 1

    def path(self, name: str) -> Path:
        folder = self.folder / name
        if not (folder / "model.json").is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            t = time.monotonic()
            getattr(self, f"_train_{name}")(folder)
            print(f"  trained {name} in {time.monotonic() - t:.0f} s -> {folder}", flush=True)
        return folder

    def load(self, name: str):
        from napari_dlbio import tasks
        from napari_dlbio.backends import get

        if name == "stardist-official":
            return get("stardist").pretrained(str(DATA / "stardist-official-dsb"))
        return tasks.load_model(self.path(name))

    def _cli(self, backend: str, images, out: Path, minutes: float, *extra: str, labels=None) -> None:
        cmd = ["train", "--backend", backend, "--images", str(images), "--out", str(out),
               "--minutes", f"{minutes:g}", "--overwrite", "-q", *extra]
        if labels is not None:
            cmd += ["--labels", str(labels)]
        print("  $ napari-dlbio", " ".join(cmd), flush=True)
        run = subprocess.run(cli_command(*cmd), env=child_env(self.threads), capture_output=True, text=True,
                             cwd=self.folder)
        if run.returncode != 0:
            sys.exit(f"training {out.name} failed ({run.returncode}):\n{run.stdout}\n{run.stderr[-3000:]}")

    def _train_unet(self, out: Path) -> None:
        """The CLI's defaults but 8 base channels (not 16): a third of the time per pixel, without
        which the 16384^2 mosaic alone would take a quarter of an hour on one CPU thread."""
        train = DATA / "dsb2018" / "train"
        self._cli("unet", train / "images", out, self.minutes, "--base-width", "8", labels=train / "masks")

    def _train_stardist(self, out: Path) -> None:
        train = DATA / "dsb2018" / "train"
        self._cli("stardist", train / "images", out, self.minutes, labels=train / "masks")

    def _train_cellpose(self, out: Path) -> None:
        """A micro Cellpose-SAM network (tests/test_cellpose.py's: one block of 32 dims, random
        weights) fine-tuned on dsb2018 for 4x the budget at a learning rate for small networks.

        Cellpose spends the first ~2 minutes here computing the training flows; with the plain
        budget the network stays at AP@0.5 0 on dsb2018 val, with 8 minutes it reaches ~0.6."""
        from napari_dlbio.backends import cellpose as cpb

        start = cpb.write_random_model(self.folder / "micro_cpsam", cpb.MICRO, seed=0)
        train = DATA / "dsb2018" / "train"
        self._cli("cellpose", train / "images", out, 4 * self.minutes, "--from", str(start),
                  "--learning-rate", "1e-2", "--batch-size", "4", "--epochs", "1000",
                  "--min-train-masks", "1", "--device", "cpu", labels=train / "masks")

    def _train_n2v(self, out: Path) -> None:
        """Noise2Void on noisy dsb2018 ``train`` images (its budget includes ~30 s of CAREamics' start)."""
        import tifffile

        noisy = self.folder / "n2v-noisy-train"
        noisy.mkdir(exist_ok=True)
        for k, (img, _) in enumerate(dsb_pairs("train")[:20]):
            tifffile.imwrite(noisy / f"{k:03d}.tif", add_noise(img, NOISE_SEED + k))
        self._cli("n2v", noisy, out, self.minutes)

    def _train_unet3d(self, out: Path) -> None:
        """A small 3D U-Net (depth 2, 8 channels) on the stardist 3D sample. Small patches and
        batches: in the budget they buy ~600 steps (AP@0.5 ~0.87 on the sample); the CLI's
        defaults buy one epoch, whose "nuclei" are blobs larger than a block's halo."""
        s = DATA / "stardist-samples"
        pairs = self.folder / "unet3d-data"
        for sub, name in (("images", "img3d.tif"), ("labels", "mask3d.tif")):
            (pairs / sub).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s / name, pairs / sub / "nuclei.tif")  # matched by file name
        self._cli("unet", pairs / "images", out, self.minutes, "--ndim", "3", "--axes", "ZYX", "--depth", "2",
                  "--base-width", "8", "--patch-size", "32", "--patch-size-z", "16", "--batch-size", "4",
                  "--steps-per-epoch", "25", "--val-fraction", "0", labels=pairs / "labels")


# --- child processes -------------------------------------------------------------------------------
def child_env(threads: int) -> dict[str, str]:
    """This process's environment, the same napari_dlbio first on the path, ``threads`` OpenMP threads."""
    import napari_dlbio

    src = str(Path(napari_dlbio.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads)}


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "napari_dlbio", *args]


@dataclass
class ChildRun:
    returncode: int
    seconds: float
    peak_rss: int          # bytes: the CLI process's maximum resident set (wait4; 0 when killed)
    output: str
    phases: dict[str, list[float]]   # phase -> [seconds, peak RSS bytes sampled in it]


# A small launcher between this process and the CLI. ``ru_maxrss`` keeps the high-water mark of
# the memory a process had before exec: a child spawned straight from this process (which holds
# models and images, GBs) would report this process's size. Spawned from the launcher (~10 MB),
# the CLI's ``wait4`` figure is its own; the launcher writes it to a file.
LAUNCHER = """
import json, os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump({"maxrss_kib": ru.ru_maxrss, "code": os.waitstatus_to_exitcode(status)}, fh)
"""


def run_measured(args: list[str], threads: int, log: Path, kill_when=None, phase=None,
                 poll_s: float = 0.2) -> ChildRun:
    """Run the CLI with ``args``; its wall time and peak RSS (``os.wait4``'s ``ru_maxrss`` of the CLI
    process, through :data:`LAUNCHER`).

    Every ``poll_s``: ``kill_when()`` SIGKILLs the CLI when it returns True; ``phase()`` names
    what the CLI is doing (from what it left on disk), and the time and the largest RSS
    sampled (psutil) are added to that phase.
    """
    import json
    import signal

    import psutil

    t = time.monotonic()
    phases: dict[str, list[float]] = {}
    report = log.with_suffix(".rusage.json")
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", LAUNCHER, str(report), *cli_command(*args)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=child_env(threads), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        last = t
        while proc.poll() is None:
            if kill_when is not None and kill_when():
                os.killpg(proc.pid, signal.SIGKILL)   # the launcher and the CLI
                kill_when = None
            if phase is not None:
                now = time.monotonic()
                entry = phases.setdefault(phase(), [0.0, 0])
                entry[0] += now - last
                entry[1] = max(entry[1], _tree_rss(proc.pid, psutil))
                last = now
            time.sleep(poll_s)
    if report.is_file():
        done = json.loads(report.read_text())
        code, peak = done["code"], done["maxrss_kib"] * 1024
    else:  # killed
        code, peak = proc.returncode, 0
    return ChildRun(code, time.monotonic() - t, peak, log.read_text(), phases)


def _tree_rss(pid: int, psutil) -> int:
    """The resident memory of the CLI (the launcher's child)."""
    try:
        return sum(c.memory_info().rss for c in psutil.Process(pid).children())
    except psutil.Error:
        return 0


def cli_phase(final: Path, total: int):
    """What a blockwise ``predict`` into ``final`` is doing, judged by its files: start-up (imports,
    model), predict (intensities, then blocks), stitch (match, relabel), finish (pyramid, metadata)."""
    from napari_dlbio.blockstate import STATE_DIR
    from napari_dlbio.output_layout import working_path

    state = working_path(final) / STATE_DIR
    started = []   # the engine's state appeared: its disappearance then means the run is finishing

    def count(phase: str) -> int:
        try:
            return sum(1 for e in os.scandir(state / phase) if not e.name.startswith("."))
        except FileNotFoundError:
            return 0

    def now() -> str:
        if final.exists() or (started and not state.exists()):
            return "finish"
        if not (state / "plan.json").exists():
            return "start-up"
        started.append(True)
        if count("predict") < total:
            return "predict"
        return "stitch" if count("relabel") < total else "finish"

    return now


# --- printing --------------------------------------------------------------------------------------
def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    sys.stdout.flush()


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
