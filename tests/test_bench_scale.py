"""The measuring helpers of benchmarks/bench_scale.py (the benchmark itself is not run by pytest)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scale_checks as sc  # noqa: E402
import scale_setup as ss  # noqa: E402
from napari_dlbio.stitching import count_cut_objects  # noqa: E402


def test_cuts_read_line_by_line_equal_the_stitching_count():
    labels = np.zeros((64, 64), np.int32)
    labels[10:20, 20:32] = 1      # ends on the vertical line at x = 32: cut
    labels[40:50, 28:40] = 2      # crosses it: whole
    labels[24:32, 40:60] = 3      # ends on the horizontal line at y = 32: cut
    lines = sc.block_lines(labels.shape, (32, 32))
    assert lines == [(0, 32), (1, 32)]
    assert sc.cuts_on_lines(labels, lines) == count_cut_objects(labels, 32) == 2
    # lines of a crop are given relative to it: the crop [8:64, 8:64] has both lines, at 24
    assert sc.block_lines(labels.shape, (32, 32), (8, 8), (64, 64)) == [(0, 24), (1, 24)]
    assert sc.cuts_on_lines(labels[8:, 8:], [(0, 24), (1, 24)]) == 2


def test_large_inputs_repeat_their_base_chunk_by_chunk(tmp_path):
    from napari_dlbio import ngff

    base = np.arange(35, dtype=np.uint8).reshape(5, 7)
    path = ss.write_ome_zarr(tmp_path / "m.ome.zarr", (12, 16), base, (4, 8))
    img = ngff.open_image(path)
    assert img.axes == "YX" and img.array.shape == (12, 16) and img.array.chunks == (4, 8)
    np.testing.assert_array_equal(img.array[:], np.tile(base, (3, 3))[:12, :16])
    mirrored = ss.write_ome_zarr(tmp_path / "v.ome.zarr", (12, 16), base, (4, 8), mirror=True)
    got = ngff.open_image(mirrored).array[:]
    np.testing.assert_array_equal(got[5:10, :7], base[::-1])
    np.testing.assert_array_equal(got[:5, 7:14], base[:, ::-1])


def test_peak_memory_is_the_cli_process_own_not_its_parent(tmp_path, monkeypatch):
    """A process spawned from a large one reports the large one's high-water mark in
    ``ru_maxrss``; the launcher in between keeps the figure the child's own."""
    held = np.ones(600 * 2**20, np.uint8)  # 600 MiB resident in this (the parent) process
    echo = [sys.executable, "-c", "import sys; print(sys.argv[1:])"]
    monkeypatch.setattr(ss, "cli_command", lambda *a: [*echo, *a])
    run = ss.run_measured(["--version"], 1, tmp_path / "x.log")
    assert held.sum() == held.size
    assert run.returncode == 0 and "--version" in run.output
    assert 0 < run.peak_rss < 200 * 2**20, run.peak_rss
