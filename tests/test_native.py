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
            "print(isa_lines({'environment': env})[-1])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.startswith("XNNPACK builds: litert clang") and "executorch GCC" in out, out
