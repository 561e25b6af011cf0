"""Which native build of XNNPACK each runtime runs, and an override for ExecuTorch's.

Why it matters (measured, ``docs/benchmarking.md`` "ExecuTorch against LiteRT on AVX2"): the executorch 1.5.1
wheel's ``libexecutorch_backend_xnnpack.so`` is built with GCC 13, LiteRT's with clang 18. On an AVX2 CPU (16
vector registers) GCC spills accumulators and broadcasts of XNNPACK's intrinsic microkernels to the stack (the
fp32 10x8 GEMM's inner loop is 39 instructions against clang's 25; the int8 25-tap depthwise kernel stores and
reloads 126 vectors against 3): the same graph, the same kernels, the same call counts, and ExecuTorch 1.24x (fp32)
and 1.11x (int8) slower. With AVX-512's 32 registers nothing spills and the two run alike. So every benchmark
result names the compiler of each runtime's XNNPACK (:func:`xnnpack_builds`), and a user who has built
ExecuTorch's XNNPACK backend another way can measure it in place of the wheel's with
``NASNET_EDGE_EXECUTORCH_XNNPACK=/path/to/libexecutorch_backend_xnnpack.so`` (:func:`preload_executorch_xnnpack`).
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

from edge.errors import UserError

ENV_EXECUTORCH_XNNPACK = "NASNET_EDGE_EXECUTORCH_XNNPACK"
EXECUTORCH_XNNPACK_SONAME = "libexecutorch_backend_xnnpack.so"


def elf_comment(path: str | os.PathLike) -> list[str]:
    """The strings of an ELF file's ``.comment`` section: the compilers (and linker) that built it; [] when the
    file is not ELF or has no such section. Standard library only (it also runs on boards)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    if data[:4] != b"\x7fELF":
        return []
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    if len(data) < 0x40:
        return []
    if is64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x2E)

    def section(i: int) -> tuple[int, int, int]:  # (name offset, file offset, size)
        base = shoff + i * shentsize
        if is64:
            name, = struct.unpack_from(e + "I", data, base)
            offset, size = struct.unpack_from(e + "QQ", data, base + 0x18)
        else:
            name, = struct.unpack_from(e + "I", data, base)
            offset, size = struct.unpack_from(e + "II", data, base + 0x10)
        return name, offset, size

    try:
        _, str_off, _ = section(shstrndx)
        for i in range(shnum):
            name, offset, size = section(i)
            end = data.index(b"\0", str_off + name)
            if data[str_off + name:end] == b".comment":
                return [s.decode("utf-8", "replace") for s in data[offset:offset + size].split(b"\0") if s]
    except (struct.error, ValueError):
        return []
    return []


def compiler_of(path: str | os.PathLike) -> str | None:
    """``GCC 13.3.1`` / ``clang 18.1.8``: the compilers named in the library's ``.comment``, clang first (a clang
    build linked by the system's GCC driver also lists the GCC that built its C runtime start files)."""
    found = []
    for s in elf_comment(path):
        if "clang version" in s:
            found.insert(0, "clang " + s.split("clang version", 1)[1].split()[0])
        elif s.startswith("GCC:"):
            words = s.split(")", 1)[-1].split()
            found.append(f"GCC {words[0]}" if words else "GCC")
    found = list(dict.fromkeys(found))
    if len(found) > 1 and found[0].startswith("clang"):
        return f"{found[0]} (C runtime objects: {', '.join(found[1:])})"
    return ", ".join(found) or None


def _site_file(package: str, relative: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def _loaded(soname: str) -> str | None:
    """Path of a shared library of that name mapped into this process (Linux), else None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if line.rstrip().endswith("/" + soname):
                    return line.split(None, 5)[-1].strip()
    except OSError:
        pass
    return None


def xnnpack_builds() -> dict:
    """{runtime: {"library": path, "compiler": ...}} for the XNNPACK each installed runtime runs here (the
    library actually mapped when this process has loaded it, e.g. an override)."""
    out = {}
    litert = _site_file("ai_edge_litert", "libpywrap_litert_common.so")
    if litert is not None:
        out["litert"] = {"library": str(litert), "compiler": compiler_of(litert)}
    et = _loaded(EXECUTORCH_XNNPACK_SONAME) or os.environ.get(ENV_EXECUTORCH_XNNPACK) or \
        _site_file("executorch", "lib/" + EXECUTORCH_XNNPACK_SONAME)
    if et:
        out["executorch"] = {"library": str(et), "compiler": compiler_of(et),
                             "override": bool(os.environ.get(ENV_EXECUTORCH_XNNPACK))}
        build = build_record(et)
        if build is not None:
            out["executorch"]["build"] = build
            out["executorch"]["label"] = build_label(out["executorch"])
    return out


def build_record(library: str | os.PathLike) -> dict | None:
    """What ``scripts/build_executorch_xnnpack.sh`` wrote beside a library it built (``<library>.json``: compiler,
    flags, sources, the wheel it was built for), or None for any other library (the wheel's own)."""
    import json

    try:
        record = json.loads(Path(str(library) + ".json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def build_label(build: dict) -> str:
    """How tables name a build of XNNPACK: ``GCC 13.3.1``, ``clang 19.1.7``, ``GCC 12.2.0 -fschedule-insns
    -fsched-pressure``, ``clang 19.1.7 + own pthreadpool 0e6ca137 + setup once`` (the flags, the pool and how the runtime
    is set up come from the build's record; an ELF file does not keep them)."""
    compiler = (build.get("compiler") or "unknown compiler").split(" (")[0]
    record = build.get("build") or {}
    flags = record.get("flags") or []
    pool = record.get("threadpool") or ""  # --threadpool own: XNNPACK on a pthreadpool linked into the backend
    setup = record.get("runtime_setup") or ""  # --setup once: reshape and set up only when an input changed
    return " ".join([compiler, *flags, *(["+", pool] if pool.startswith("own") else []),
                     *(["+ setup once"] if setup.startswith("once") else [])])


def preload_executorch_xnnpack() -> str | None:
    """Load the library ``NASNET_EDGE_EXECUTORCH_XNNPACK`` names before ExecuTorch's pybindings, so that it, not
    the wheel's copy, provides the XNNPACK backend (same soname: the loader then does not load the wheel's). Call
    before importing ``executorch.extension.pybindings``. Returns the path, or None when the variable is unset."""
    path = os.environ.get(ENV_EXECUTORCH_XNNPACK)
    if not path:
        return None
    if "executorch.extension.pybindings.portable_lib" in sys.modules and _loaded(EXECUTORCH_XNNPACK_SONAME) != path:
        raise UserError(f"{ENV_EXECUTORCH_XNNPACK}={path}: ExecuTorch was already imported in this process with "
                        f"its own XNNPACK backend; set the variable before the process starts")
    p = Path(path)
    if not p.is_file() or p.name != EXECUTORCH_XNNPACK_SONAME:
        raise UserError(f"{ENV_EXECUTORCH_XNNPACK}={path}: not a file named {EXECUTORCH_XNNPACK_SONAME}; point it at "
                        "an XNNPACK backend library built for the installed executorch, or unset it")
    import ctypes

    try:
        # the installed wheel's runtime first, by path: the build then binds to it whatever its own RUNPATH says
        for name in ("libexecutorch.so", "libexecutorch_threadpool.so"):
            dep = _site_file("executorch", "lib/" + name)
            if dep is not None:
                ctypes.CDLL(str(dep), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(p), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise UserError(f"{ENV_EXECUTORCH_XNNPACK}={path}: cannot be loaded ({str(e)[:160]}); was it built for "
                        "the installed executorch?") from None
    return str(p)
