"""The core-to-core latency probe recorded with every benchmark (benchmarks/topology.py)."""

from __future__ import annotations

import os

import pytest

from benchmarks import topology


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: no pair to measure")
def test_the_probe_builds_into_the_cache_and_measures_each_pair(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    c2c = topology.core_to_core(max_pairs=1, round_trips=5_000)
    assert "unavailable" not in c2c, c2c
    (pair, ns), = c2c["pairs_ns"].items()
    cpus = sorted(os.sched_getaffinity(0))
    assert pair == f"{cpus[0]}-{cpus[1]}" and 1 < ns < 100_000  # a cache line takes nanoseconds, not none, not ms
    assert c2c["median_ns"] == c2c["max_ns"] == ns and c2c["same_die"] == (ns <= topology.SAME_DIE_NS)
    built = list((tmp_path / "nasnet-edge").iterdir())
    assert [p.name.startswith("core_latency-") and os.access(p, os.X_OK) for p in built] == [True]  # no temp left


def test_without_a_compiler_the_figure_is_unavailable_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    c2c = topology.core_to_core(max_pairs=1, round_trips=1000)
    assert set(c2c) == {"unavailable"} and "no-such-cc" in c2c["unavailable"], c2c
    assert not list((tmp_path / "nasnet-edge").glob("*.tmp"))
    assert topology.core_latency_line(c2c).startswith("Core-to-core latency: not measured (")


def test_the_line_says_whether_the_cores_share_a_die():
    near = topology.core_latency_line({"pairs_ns": {"0-1": 31.0}, "median_ns": 31.0, "max_ns": 31.0, "same_die": True})
    far = topology.core_latency_line({"pairs_ns": {"0-1": 175.0}, "median_ns": 175.0, "max_ns": 175.0,
                                      "same_die": False})
    assert near == "Core-to-core latency (one way): cpu0-cpu1 31 ns; the CPUs share a die: threads hand work over cheaply"
    assert far.startswith("Core-to-core latency (one way): cpu0-cpu1 175 ns; above a shared die's") and "crosses dies" in far
    assert topology.core_latency_line(None) is None
