"""The fault harness's fast subset (benchmarks/bench_faults.py prints the full counts)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_faults  # noqa: E402


def test_cancel_at_random_moments_keeps_a_model_or_says_why():
    rows = bench_faults.cancel_trials(3, seed=1)
    assert all(r["ok"] for r in rows), rows
    assert all(r["stop_s"] < 10 for r in rows), rows


def test_kill_during_a_save_keeps_the_previous_version():
    rows = bench_faults.save_kill_trials(3, seed=2)
    assert all(r["ok"] for r in rows), rows
    assert any(r["result"] == "killed" for r in rows), rows
