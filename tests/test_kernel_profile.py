"""scripts/kernel_profile.py names the functions of a stripped library (the ExecuTorch wheel's XNNPACK backend) from
its unwind table and by instruction mix. Pinned here on a library compiled for the test, stripped and not."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

SOURCE = r"""
#include <immintrin.h>
void kernel_fma(float *y, const float *a, const float *b, int n) {
  for (int i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), _mm256_loadu_ps(y + i)));
}
void kernel_widen(int *y, const signed char *a, int m, int n) {
  for (int i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_si256((__m256i *)(y + i), _mm256_mullo_epi32(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(a + i))), _mm256_set1_epi32(m)));
}
"""


def _load():
    spec = importlib.util.spec_from_file_location("kernel_profile", REPO / "scripts" / "kernel_profile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    for tool in ("gcc", "objdump", "readelf", "nm", "strip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/setup.sh installs binutils and gcc")
    d = tmp_path_factory.mktemp("kp")
    (d / "k.c").write_text(SOURCE)
    named = d / "libnamed.so"
    subprocess.run(["gcc", "-O2", "-mavx2", "-mfma", "-shared", "-fPIC", "-o", named, d / "k.c"], check=True)
    stripped = d / "libstripped.so"
    shutil.copy(named, stripped)
    subprocess.run(["strip", "--strip-all", stripped], check=True)
    syms = {line.split()[2]: int(line.split()[0], 16)
            for line in subprocess.run(["nm", "--defined-only", named], capture_output=True, text=True).stdout.splitlines()
            if line.split()[2:3] and line.split()[2].startswith("kernel_")}
    return named, stripped, syms


def test_stripped_functions_are_found_from_the_unwind_table_and_named_by_their_instruction_mix(libs):
    kp = _load()
    named, stripped, syms = libs
    listed = subprocess.run(["nm", stripped], capture_output=True, text=True)
    assert listed.returncode != 0 or "kernel_" not in listed.stdout  # really stripped
    fdes = kp._fdes(str(stripped))
    ranges = {name: next(r for r in fdes if r[0] <= addr < r[1]) for name, addr in syms.items()}
    assert {r[0] for r in ranges.values()} == set(syms.values())  # each function's own range, starting at it
    results = [{"functions": []}, {"functions": []}]
    for name, (a, b) in ranges.items():
        by_name = kp._code(str(named), symbol=name)
        by_range = kp._code(str(stripped), a, b)
        assert by_range["instructions"] == by_name["instructions"] > 0
        assert by_range["signature"] == by_name["signature"]
        results[0]["functions"].append({"function": name, "stripped": False, **by_name})
        results[1]["functions"].append({"function": f"{a:#x}-{b:#x}", "stripped": True, **by_range})
    assert results[0]["functions"][0]["signature"] != results[0]["functions"][1]["signature"]
    assert ranges and kp._code(str(named), symbol="kernel_fma")["signature"].get("vfmadd")
    assert kp._code(str(named), symbol="kernel_widen")["signature"].get("vpmulld")
    kp._match(results)
    got = {f["function"]: f.get("same_instruction_mix_as") for f in results[1]["functions"]}
    assert got == {f"{a:#x}-{b:#x}": name for name, (a, b) in ranges.items()}


def test_kernel_profile_refuses_what_is_not_an_artifact(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "kernel_profile.py"), str(tmp_path / "x.onnx")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "not a .tflite or .pte file" in r.stderr and "Traceback" not in r.stderr
