"""The sections of ``bench_scale.py``: each measures, checks and prints one table."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import scale_setup as ss
from scale_checks import check_output, same_store
from scale_setup import met, table

GB = 1e9
LABELS = {"unet": "U-Net (width 8)", "stardist": "StarDist (ours)",
          "stardist-official": "StarDist (official DSB, converted)", "cellpose": "Cellpose-SAM micro"}


def _predict_settings(name: str):
    from napari_dlbio.backends import get

    name = {"unet3d": "unet", "stardist-official": "stardist"}.get(name, name)
    if name == "cellpose":
        # float32: bfloat16 is emulated on CPUs without AVX-512 (slow), and exact only against itself.
        return get("cellpose").Predict(device="cpu", bfloat16=False)
    if name == "n2v":
        return get("n2v").Predict(device="cpu", tta=False)  # TTA would cost 8x; blocks match it too
    return get(name).Predict(device="cpu")


# --- 1. seams ----------------------------------------------------------------------------------------
def seams(b) -> None:
    from napari_dlbio.metrics import match
    from napari_dlbio.seams import blockwise_agreement

    size, block = b.sizes.seams, b.sizes.seams_block
    img, gt = ss.mosaic(size)
    rows = []
    for name in ("unet", "stardist", "stardist-official", "cellpose"):
        model = b.models.load(name)
        r = blockwise_agreement(model, img, block, _predict_settings(name))
        whole, blocks = r["labels"]
        ok = r["ap"] >= 0.98 and r["cut_blocks"] <= r["cut_whole"]
        rows.append([LABELS.get(name, name), f"AP@0.5 {r['ap']:.3f}", ">= 0.98, cut <= whole",
                     f"{r['n_whole']} / {r['n_blocks']}", f"{r['cut_whole']} / {r['cut_blocks']}",
                     f"AP@0.5 {match(gt, whole).ap:.3f} / {match(gt, blocks).ap:.3f}",
                     f"{r['whole_s']:.0f} / {r['blocks_s']:.0f}", met(ok)])
        print(f"  {name}: done", flush=True)
    rows.append(_n2v_row(b, img, block))
    table(f"Seamless: dsb2018 val mosaic {size} x {size} ({int(gt.max())} nuclei), {block} px blocks "
          "vs whole-image prediction",
          ["model", "whole vs blocks", "goal", "objects whole / blocks", "cut by block lines whole / blocks",
           "vs ground truth whole / blocks", "s whole / blocks", "target"], rows)


def _n2v_row(b, img: np.ndarray, block: int) -> list:
    """N2V on a noisy copy: blocks vs whole as predicted by default (the whole image tiled by the
    backend's tiler) and vs the whole image in one tile (the exact output); PSNR against the clean image."""
    from napari_dlbio import tasks
    from napari_dlbio.metrics import psnr

    noisy, clean = ss.add_noise(img), img.astype(np.float32)
    model, s = b.models.load("n2v"), _predict_settings("n2v")
    t0 = time.monotonic()
    whole = tasks.predict(model, noisy, settings=s).outputs["image"]
    t1 = time.monotonic()
    parts = tasks.predict(model, noisy, settings=s, block_size=block).outputs["image"]
    t2 = time.monotonic()
    one_tile = s.model_copy(update={"tile_size": max(img.shape)})
    exact = tasks.predict(model, noisy, settings=one_tile).outputs["image"]
    rel = float(np.abs(whole - parts).max() / np.ptp(whole))
    rel_exact = float(np.abs(exact - parts).max() / np.ptp(exact))
    quality = f"PSNR {psnr(clean, whole):.2f} / {psnr(clean, parts):.2f} dB (noisy {psnr(clean, noisy):.2f})"
    agreement = f"max diff {rel:.1e} of range ({rel_exact:.1e} vs whole in one tile)"
    return ["N2V (noisy copy)", agreement, "<= 1e-3", "-", "-", quality, f"{t1 - t0:.0f} / {t2 - t1:.0f}",
            met(rel <= 1e-3)]


# --- 2. flat memory ----------------------------------------------------------------------------------
def predict_cli(b, image: Path, out_dir: Path, model: str, block: int, *extra: str, kill_when=None,
                fresh: bool = True, total: int = 0) -> tuple[ss.ChildRun, Path]:
    """``napari-dlbio predict`` in a child process; the run (with its phases when ``total``, the
    number of blocks, is given) and the final OME-Zarr path."""
    import shutil

    from napari_dlbio.ngff import output_path

    if fresh:
        shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = output_path(out_dir, image, "ome-zarr")
    args = ["predict", str(image), "--model", str(b.models.path(model)), "--out", str(out_dir),
            "--out-format", "ome-zarr", "--block-size", str(block), "--device", "cpu", "-q", *extra]
    run = ss.run_measured(args, b.args.threads, out_dir.with_suffix(".log"), kill_when=kill_when,
                          phase=ss.cli_phase(final, total) if total else None)
    return run, final


def _n_blocks(shape, block: int) -> int:
    return int(np.prod([-(-s // block) for s in shape[-2:]]))


def memory(b) -> None:
    rows, profile = [], []
    for kind, shapes, block, model in (
            ("2D", [(s, s) for s in b.sizes.memory], b.sizes.block, "unet"),
            ("3D", list(b.sizes.memory_3d), b.sizes.block_3d, "unet3d")):
        runs = []
        for shape in shapes:
            image = b.input_2d(shape[0]) if kind == "2D" else b.input_3d(shape)
            out_dir = b.work / "memory" / image.name.replace(".ome.zarr", "")
            n = _n_blocks(shape, block)
            run, final = predict_cli(b, image, out_dir, model, block, total=n)
            if run.returncode != 0:
                raise SystemExit(f"predict failed on {image}:\n{run.output[-3000:]}")
            chk = check_output(final, image, b.models.load(model), _predict_settings(model), block)
            b.done[f"memory-{kind}-{shape[-1]}"] = (run, final, block)
            mpx = np.prod(shape) / 1e6
            cut_whole, cut_blocks = chk["crop_cuts"]
            ok = run.peak_rss < 2 * GB and chk["crop_ap"] >= 0.98 and cut_blocks <= cut_whole
            runs.append(run)
            name = "x".join(map(str, shape))
            rows.append([kind, name, f"{n} of {block} px", f"{run.seconds:.0f}", f"{mpx / run.seconds:.2f}",
                         f"{run.peak_rss / 2**20:.0f}", f"{chk['objects']} ({chk['objects'] / mpx:.0f}/Mpx)",
                         chk["cuts"], f"AP {chk['crop_ap']:.3f}, cuts {cut_whole} / {cut_blocks}", met(ok)])
            profile.append(f"{name}: " + ", ".join(f"{p} {v[0]:.0f} s / {v[1] / 2**20:.0f} MiB"
                                                   for p, v in run.phases.items()))
            print(f"  {kind} {shape}: {run.seconds:.0f} s, {run.peak_rss / 2**20:.0f} MiB", flush=True)
        ratio = runs[1].peak_rss / runs[0].peak_rss
        more = np.prod(shapes[1]) / np.prod(shapes[0])
        rows.append([kind, f"larger / smaller ({more:.0f}x pixels)", "", "", "", f"{ratio:.2f}x", "", "", "",
                     met(ratio <= 1.2)])
    table("Flat memory: `napari-dlbio predict --out-format ome-zarr --block-size N` (a child process) on "
          "uint8 (2D) / uint16 (3D) OME-Zarr mosaics",
          ["", "image", "blocks", "wall s", "Mpx/s", "peak RSS MiB", "objects", "cuts on all block lines",
           "crop around a block corner, whole vs output",
           "target (< 2 GB, ratio <= 1.2, crop AP >= 0.98, cuts <= whole)"], rows)
    print("\nPhases (wall s / largest RSS sampled every 0.2 s):")
    for line in profile:
        print("  " + line)


# --- 3. distributed throughput -------------------------------------------------------------------
def cluster(b) -> None:
    from napari_dlbio import cluster as clusters
    from napari_dlbio import ngff, tasks
    from napari_dlbio.metrics import match
    from napari_dlbio.requests import ModelSource

    size, block = b.sizes.cluster, b.sizes.block
    image = b.input_2d(size)
    src = ngff.open_image(image)
    model = b.models.load("unet")
    settings = _predict_settings("unet")
    tasks.predict(model, np.asarray(src.array[:256, :256]), "YX", settings)  # warm-up (first-call costs)
    results, rows = {}, []
    for where in ("in-process", "local:1", "local:2"):
        out_dir = b.work / "cluster" / where.replace(":", "-")
        out_dir.mkdir(parents=True, exist_ok=True)
        chunks = ngff.default_chunks(src.axes, src.array.shape, 2, block)
        final = ngff.output_path(out_dir, image, "ome-zarr")
        out = ngff.output_factory(final, "ome-zarr", src.axes, src.scale, src.translate, chunks, ndim=2,
                                  source=src.source)
        source = ModelSource.folder(b.models.path("unet"))
        t0 = time.monotonic()
        cl = None if where == "in-process" else clusters.connect(where)
        try:
            if cl is not None:
                _load_on_workers(cl.client, source)
            t1 = time.monotonic()
            pred = tasks.predict(model, src.array, src.axes, settings, out=out, block_size=block,
                                 runner=cl.runner() if cl else None, model_source=source if cl else None,
                                 image_source=src.source)
            t2 = time.monotonic()
            results[where] = np.asarray(pred.outputs["labels"][:])
        finally:
            if cl is not None:
                cl.close()
            out.discard()
        ref = results["in-process"]
        same = np.array_equal(ref, results[where])
        ap = match(ref, results[where]).ap if not same else 1.0
        n = int(np.ceil(size / block)) ** 2
        rows.append([where, f"{size} x {size}, {n} blocks of {block} px", f"{t1 - t0:.0f}", f"{t2 - t1:.0f}",
                     f"{size * size / 1e6 / (t2 - t1):.2f}", int(results[where].max()),
                     "identical" if same else f"AP {ap:.4f}", met(ap == 1.0)])
        print(f"  {where}: {t2 - t1:.0f} s", flush=True)
    table("Distributed throughput: one OME-Zarr predicted blockwise by `tasks.predict(runner=...)` "
          "(U-Net, 1 torch thread per worker)",
          ["runner", "image", "workers start + load the model s", "predict s", "Mpx/s", "objects",
           "vs in-process", "target (AP == 1.0)"], rows)


def _load_on_workers(client, source) -> None:
    """Each worker loads the model once before the timing starts (its cache keeps it), so the
    throughput is that of a running cluster; the start-up is reported on its own."""
    from napari_dlbio.cluster import worker_model

    # A lambda travels by value (this module is not importable on the workers) and returns
    # nothing, so the model stays on the worker.
    futures = [client.submit(lambda s: worker_model(s) and None, source, workers=[w],
                             allow_other_workers=False, pure=False) for w in client.nthreads()]
    client.gather(futures)


# --- 4. resume -------------------------------------------------------------------------------------
def _markers(final: Path) -> dict[str, int]:
    from napari_dlbio.blockstate import STATE_DIR
    from napari_dlbio.output_layout import working_path

    folder = working_path(final) / STATE_DIR / "predict"
    out = {}
    try:
        for e in folder.iterdir():
            if not e.name.startswith("."):
                try:
                    out[e.name] = e.stat().st_mtime_ns
                except FileNotFoundError:
                    pass
    except FileNotFoundError:
        pass
    return out


def resume(b) -> None:
    size, block = b.sizes.memory[0], b.sizes.block
    image = b.input_2d(size)
    total = int(np.ceil(size / block)) ** 2
    key = f"memory-2D-{size}"
    if key not in b.done:
        run, final, _ = (*predict_cli(b, image, b.work / "resume" / "whole", "unet", block), block)
        b.done[key] = (run, final, block)
    whole_run, whole_final, _ = b.done[key]
    from napari_dlbio.ngff import output_path

    out_dir = b.work / "resume" / "cut"
    final = output_path(out_dir, image, "ome-zarr")
    first, _ = predict_cli(b, image, out_dir, "unet", block,
                           kill_when=lambda: len(_markers(final)) >= total // 2)
    before = _markers(final)
    seen: dict[str, int] = dict(before)

    def watch() -> bool:
        seen.update(_markers(final))
        return False

    started = time.time_ns()
    second, _ = predict_cli(b, image, out_dir, "unet", block, "--resume", kill_when=watch, fresh=False)
    if second.returncode != 0:
        raise SystemExit(f"the resumed run failed:\n{second.output[-3000:]}")
    rewritten = [k for k in before if seen[k] != before[k]]
    computed = [k for k, t in seen.items() if k not in before or t >= started]
    same, levels = same_store(whole_final, final)
    ok = first.returncode != 0 and len(computed) == total - len(before) and not rewritten and same
    table(f"Resume: `napari-dlbio predict` on the {size} x {size} mosaic ({total} blocks of {block} px) "
          "SIGKILLed at half, rerun with --resume",
          ["blocks", "markers when killed", "predicted by the rerun (counted)", "expected",
           "first run s (killed)", "rerun s", "uninterrupted s", "output vs uninterrupted", "target"],
          [[total, len(before), len(computed), total - len(before),
            f"{first.seconds:.0f} (exit {first.returncode})", f"{second.seconds:.0f}",
            f"{whole_run.seconds:.0f}",
            ("identical bytes" if same else "DIFFERENT") + f" ({levels} pyramid levels)", met(ok)]])


# --- 5. overhead -----------------------------------------------------------------------------------
def _best(fn, repeats: int) -> tuple[float, object]:
    """The shortest wall time of ``repeats`` calls (a shared machine's noise only adds), and a result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.monotonic()
        out = fn()
        times.append(time.monotonic() - t)
    return min(times), out


def overhead(b) -> None:
    import json
    import tempfile

    from napari_dlbio import tasks

    model = b.models.load("unet")
    s = _predict_settings("unet")
    rows = []
    for size in b.sizes.overhead:
        img, _ = ss.mosaic(size)
        tasks.predict(model, img[:256, :256], settings=s)  # warm-up
        reps = 2 if size <= 2048 else 1
        t_item, item = _best(lambda: tasks.predict(model, img, settings=s).outputs["labels"], reps)
        (b.work / "overhead").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=b.work / "overhead") as tmp:
            def into_zarr():
                return np.asarray(tasks.predict(model, img, settings=s, out=tasks.zarr_outputs(tmp))
                                  .outputs["labels"][:])

            t_budget, lab = _best(into_zarr, reps)
            plan = Path(tmp) / ".dlbio" / "plan.json"
            grid = ("x".join(map(str, json.loads(plan.read_text())["block"])) + " px blocks" if plan.is_file()
                    else "one block: predicted item-wise")
        blk = b.sizes.overhead_block
        t_fixed, fixed = _best(
            lambda: tasks.predict(model, img, settings=s, block_size=blk).outputs["labels"], reps)
        for label, secs, n in ((f"memory budget's block size ({grid}), into zarr", t_budget, int(lab.max())),
                               (f"{b.sizes.overhead_block} px blocks, in memory", t_fixed, int(fixed.max()))):
            rows.append([f"{size} x {size}", label, f"{t_item:.1f}", f"{secs:.1f}", f"{secs / t_item:.2f}x",
                         f"{int(item.max())} / {n}", met(secs / t_item <= 1.15)])
        print(f"  {size}: item-wise {t_item:.0f} s", flush=True)
    table("Overhead: images that fit in memory, blockwise vs item-wise `tasks.predict` (U-Net, 1 thread; "
          "best of 2 up to 2048 px)",
          ["image", "blockwise", "item-wise s", "blockwise s", "ratio", "objects item / blocks",
           "target (<= 1.15x)"], rows)
