"""scripts/operator_profile.py: ExecuTorch's own per-operator profile (ETDump) of an XNNPACK program at 1 and 2
threads, grouped by operator type and by position, each group with its speed-up (issue 20: what holds two
threads back). Run on a real program through the installed ExecuTorch; the timings themselves are not asserted
(benchmarks measure speed), the profile's bookkeeping is."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "operator_profile.py"


@pytest.fixture(scope="module")
def profile(small_input_pte, tmp_path_factory):
    out = tmp_path_factory.mktemp("operator_profile")
    r = subprocess.run([sys.executable, str(SCRIPT), str(small_input_pte), "--threads", "2", "--runs", "5",
                        "--rounds", "2", "--warmup", "2", "--json", str(out / "ops.json"),
                        "--markdown", str(out / "ops.md")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((out / "ops.json").read_text()), (out / "ops.md").read_text(), r.stdout


def test_every_operator_is_counted_once_per_group(profile):
    data, _, _ = profile
    assert [r["threads"] for r in data["results"]] == [1, 2]  # 1 added for the speed-ups
    for r in data["results"]:
        assert r["operators"] >= 2 and r["runs"] == 10  # 5 timed runs in each of 2 rounds
        per_op = r["per_operator_ms"]
        assert len(per_op) == r["operators"]
        assert sum(g["ops"] for g in r["by_type"].values()) == r["operators"]
        assert sum(p["ops"] for p in r["by_position"]) == r["operators"]
        assert sum(g["ms"] for g in r["by_type"].values()) == pytest.approx(r["operators_ms"])
        assert sum(p["ms"] for p in r["by_position"]) == pytest.approx(r["operators_ms"])
        # the delegate call holds its operators (each operator's truncated microseconds get half a microsecond back):
        # what is outside them is the delegate's own work
        assert r["truncation_ms_per_operator"] == 0.0005
        assert r["delegate_call_ms"] + r["operators"] * 0.0005 >= r["operators_ms"] * 0.99
        assert r["outside_operators_ms"] == pytest.approx(r["delegate_call_ms"] - r["operators_ms"])
        # XNNPACK names its operators by type and number; the tiny CNN's convolution is one of them
        assert any(name.startswith("Convolution") for name in r["by_type"]), r["by_type"]
    # the same program at both thread counts: the same operators in the same order
    one, two = data["results"]
    assert [n for n, _ in one["per_operator_ms"]] == [n for n, _ in two["per_operator_ms"]]


def test_speedups_are_the_groups_ratios(profile):
    data, md, stdout = profile
    (s,) = data["speedups"]
    one, two = data["results"]
    assert s["threads"] == 2
    for g in s["types"]:
        assert g["ms_1"] == pytest.approx(one["by_type"][g["type"]]["ms"])
        assert g["ms_n"] == pytest.approx(two["by_type"][g["type"]]["ms"])
        assert g["lost_ms"] == pytest.approx(g["ms_n"] - g["ms_1"] / 2)
    assert s["operators"]["speedup"] == pytest.approx(one["operators_ms"] / two["operators_ms"])
    assert "| operator type |" in md and "| position" in md and md == stdout
    assert data["isa"]["class"] and "executorch_xnnpack" in data


@pytest.mark.parametrize("args,expect", [
    (["model.pte"], "model.pte: no such file"),
    (["{pte}.json"], "not a .pte file"),
    (["{pte}", "--threads", "two"], "--threads two: give thread counts like 1,2"),
    (["{pte}", "--runs", "0"], "must be positive"),
])
def test_bad_input_is_one_line(small_input_pte, tmp_path, args, expect):
    args = [a.format(pte=small_input_pte) for a in args]
    r = subprocess.run([sys.executable, str(SCRIPT), *args, "--json", str(tmp_path / "x.json")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and expect in r.stderr, r.stderr
    assert not (tmp_path / "x.json").exists()
