"""Which compiler built each runtime's XNNPACK (recorded with every benchmark), and the ExecuTorch override."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge.errors import UserError
from edge.runtime import native

from conftest import REPO


def test_the_pinned_wheels_build_xnnpack_with_different_compilers():
    """Pins the upstream cause of ExecuTorch's AVX2 gap (docs/benchmarking.md): the executorch 1.5.1 wheel's XNNPACK
    backend is GCC-built, LiteRT 2.3's clang-built. When this fails, a wheel changed compiler: remeasure."""
    builds = native.xnnpack_builds()
    assert builds["executorch"]["compiler"].startswith("GCC "), builds
    assert builds["litert"]["compiler"].startswith("clang "), builds
    assert not builds["executorch"]["override"]


def test_elf_comment_reads_real_libraries_and_ignores_other_files(tmp_path):
    text = tmp_path / "not_elf.so"
    text.write_text("hello")
    truncated = tmp_path / "truncated.so"
    truncated.write_bytes(b"\x7fELF\x02\x01" + b"\0" * 20)
    assert native.elf_comment(text) == [] and native.elf_comment(truncated) == []
    assert native.elf_comment(tmp_path / "missing.so") == []
    assert native.compiler_of(text) is None


@pytest.mark.parametrize("value", ["/nonexistent/libexecutorch_backend_xnnpack.so", "{tmp}/libother.so"])
def test_a_bad_executorch_xnnpack_override_is_one_clear_line(tmp_path, monkeypatch, value):
    other = tmp_path / "libother.so"
    other.write_bytes(b"x")
    monkeypatch.setenv(native.ENV_EXECUTORCH_XNNPACK, value.format(tmp=tmp_path))
    monkeypatch.delitem(sys.modules, "executorch.extension.pybindings.portable_lib", raising=False)
    with pytest.raises(UserError, match="NASNET_EDGE_EXECUTORCH_XNNPACK") as e:
        native.preload_executorch_xnnpack()
    assert "\n" not in str(e.value)


def test_benchmark_results_name_the_xnnpack_builds():
    code = ("from benchmarks.run import environment, isa_lines; env = environment(); "
            "print(next(x for x in isa_lines({'environment': env}) if x.startswith('XNNPACK')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.startswith("XNNPACK builds: litert clang") and "executorch GCC" in out, out


def test_a_build_record_beside_a_library_names_its_flags(tmp_path):
    """scripts/build_executorch_xnnpack.sh writes <library>.json; tables name the build by it (an ELF file keeps the
    compiler in .comment but not the flags, and GCC with and without -fsched-pressure differ by 2x in one kernel)."""
    lib = tmp_path / "libexecutorch_backend_xnnpack.so"
    lib.write_bytes(b"x")
    assert native.build_record(lib) is None
    (tmp_path / "libexecutorch_backend_xnnpack.so.json").write_text("not json")
    assert native.build_record(lib) is None
    (tmp_path / "libexecutorch_backend_xnnpack.so.json").write_text(
        '{"compiler": "gcc-sched", "flags": ["-fschedule-insns", "-fsched-pressure"]}')
    build = native.build_record(lib)
    assert build["flags"] == ["-fschedule-insns", "-fsched-pressure"]
    assert native.build_label({"compiler": "GCC 12.2.0", "build": build}) == \
        "GCC 12.2.0 -fschedule-insns -fsched-pressure"
    assert native.build_label({"compiler": "clang 19.1.7 (C runtime objects: GCC 12.2.0)", "build": {}}) == \
        "clang 19.1.7"
    # --threadpool: a build on its own pthreadpool is named apart from one on the wheel's (same compiler)
    assert native.build_label({"compiler": "clang 19.1.7", "build": {"threadpool": "own pthreadpool 0e6ca137"}}) == \
        "clang 19.1.7 + own pthreadpool 0e6ca137"
    assert native.build_label({"compiler": "clang 19.1.7", "build": {"threadpool": "the wheel's pthreadpool"}}) == \
        "clang 19.1.7"
    # --setup once (the default): a build that reshapes and sets up its runtime only when an input changed
    assert native.build_label({"compiler": "clang 19.1.7", "build": {
        "threadpool": "own pthreadpool 0e6ca137", "runtime_setup": "once per input shape and pointers"}}) == \
        "clang 19.1.7 + own pthreadpool 0e6ca137 + setup once"
    assert native.build_label({"compiler": "clang 19.1.7", "build": {"runtime_setup": "every execute (upstream)"}}) == \
        "clang 19.1.7"


BUILD_SCRIPT = REPO / "scripts" / "build_executorch_xnnpack.sh"


@pytest.mark.parametrize("args,expect", [
    (["--compiler", "icc"], "--compiler icc: choose clang, gcc-sched or gcc"),
    (["--compiler", "gcc", "--src", "/nonexistent/executorch"], "--src /nonexistent/executorch: no such folder"),
    (["--compiler", "gcc", "--src", "{tmp}"], "is not an ExecuTorch tree with its XNNPACK submodules"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
    (["--threadpool", "openmp"], "--threadpool openmp: choose own or wheel"),
    (["--setup", "twice"], "--setup twice: choose once or each-call"),
])
def test_the_backend_build_script_answers_bad_input_in_one_line(tmp_path, args, expect):
    """The build itself needs ExecuTorch's sources and a network (docs/benchmarking.md has the measured builds);
    what runs here is every way it refuses, before it writes anything."""
    args = [a.format(tmp=tmp_path) for a in args]
    r = subprocess.run(["bash", str(BUILD_SCRIPT), *args, "--out", str(tmp_path / "out")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and expect in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
