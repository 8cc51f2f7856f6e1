"""benchmarks/bench_active.py's --quick smoke test: both strategies run every round, a table and a plot."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_active  # noqa: E402


def test_quick_run(tmp_path, capsys):
    png = tmp_path / "active.png"
    assert bench_active.main(["--quick", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and "±" in line]
    assert [r[0] for r in rows] == ["2", "4"]
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in (1, 4))
    assert "random's final AP" in out
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


def test_goal_and_table():
    rows = [{"seed": s, "strategy": st, "n": n, "ap": ap, "seconds": 1.0}
            for s in (0, 1) for st, curve in (("suggest", (0.5, 0.6, 0.7)), ("random", (0.5, 0.55, 0.6)))
            for n, ap in zip((10, 20, 30), curve)]
    assert "with 20 (67%): goal met" in bench_active.goal(rows)
    row = bench_active.table(rows).splitlines()[2].split()
    assert row == ["20", "0.600", "±", "0.000", "0.550", "±", "0.000"]
