"""The CPU's instruction-set features that decide which XNNPACK kernels run, and a short machine-class label.

Standard library only, no toolkit imports: ``benchmarks.run --device ssh://...`` copies this file to a board
beside ``remote_runner.py`` and imports it there.

    >>> cpu_features()  # doctest: +SKIP
    {'arch': 'x86_64', 'features': ['fma', 'avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16'],
     'class': 'x86-64 AVX-512 VNNI', 'source': '/proc/cpuinfo'}

Why these features: XNNPACK picks its int8 and fp32 micro-kernels by them, so the same artifact's int8/fp32
speed ratio depends on the class. With AVX-512 VNNI (or AMX, or ARM dotprod / i8mm) int8 convolutions have a
dedicated dot-product instruction; on an AVX2-only x86 (or NEON without dotprod) they do not, and int8 is
often no faster than fp32 there (docs/benchmarking.md).
"""

from __future__ import annotations

import platform

CPUINFO = "/proc/cpuinfo"

# x86 flags as the Linux kernel names them in /proc/cpuinfo's "flags" line, in the order they are listed
X86_FEATURES = ("fma", "f16c", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16")
# spellings other tools (and older kernels) use for the same feature
X86_ALIASES = {"avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "avx512bf16": "avx512_bf16",
               "avx512fp16": "avx512_fp16"}
# aarch64 "Features" line: asimd = NEON, asimddp = dot product (SDOT/UDOT), i8mm = int8 matrix multiply,
# fphp/asimdhp = fp16 arithmetic (scalar/vector), bf16, SVE/SVE2, SME
ARM_FEATURES = ("asimd", "asimddp", "i8mm", "fphp", "asimdhp", "bf16", "sve", "sve2", "sme", "sme2")
ARM32_FEATURES = ("neon", "vfpv4", "idiva")


def normalize_arch(machine: str) -> str:
    m = (machine or "").lower()
    if m in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if m in ("aarch64", "arm64", "armv8l") or m.startswith("armv8"):
        return "aarch64"
    if m.startswith("armv7") or m.startswith("armv6") or m == "arm":
        return "armv7"
    if m in ("i386", "i486", "i586", "i686", "x86"):
        return "x86"
    return m or "unknown"


def _field(text: str, *names: str) -> list[str]:
    """The words of the first ``name : value`` line of cpuinfo (the first processor's)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in names:
            return value.split()
    return []


def _guess_arch(text: str) -> str | None:
    flags = _field(text, "flags")
    if flags:
        return "x86_64" if "lm" in flags or "avx2" in flags or "sse2" in flags else "x86"
    feats = _field(text, "features")
    if "asimd" in feats or ("fp" in feats and "evtstrm" in feats):
        return "aarch64"
    if "neon" in feats or "vfp" in feats:
        return "armv7"
    return None


def x86_class(features: list[str]) -> str:
    f = set(features)
    if "amx_int8" in f or "amx_tile" in f:
        return "x86-64 AVX-512 VNNI+AMX" if "avx512_vnni" in f else "x86-64 AMX"
    if "avx512f" in f:
        return "x86-64 AVX-512 VNNI" if "avx512_vnni" in f else "x86-64 AVX-512"
    if "avx2" in f:
        return "x86-64 AVX2 VNNI" if "avx_vnni" in f else "x86-64 AVX2"
    return "x86-64 SSE"


def arm_class(features: list[str]) -> str:
    f = set(features)
    parts = ["NEON"] if "asimd" in f else []
    parts += [name for key, name in (("asimddp", "dotprod"), ("i8mm", "i8mm")) if key in f]
    if "sve2" in f:
        parts.append("SVE2")
    elif "sve" in f:
        parts.append("SVE")
    if "sme" in f or "sme2" in f:
        parts.append("SME")
    return "aarch64 " + ("+".join(parts) if parts else "(no NEON)")


def cpu_features(cpuinfo: str | None = None, machine: str | None = None) -> dict:
    """``{"arch", "features", "class", "source"}`` of this CPU (or of a given ``/proc/cpuinfo`` text).

    ``features`` lists only the ones that matter to XNNPACK's kernel choice, in kernel spelling;
    ``class`` is the short label result tables carry (``x86-64 AVX2``, ``x86-64 AVX-512 VNNI``,
    ``aarch64 NEON+dotprod``, ...). Without a readable cpuinfo the features are empty and the class says so.
    """
    source = "given text"
    if cpuinfo is None:
        try:
            with open(CPUINFO, errors="replace") as f:
                cpuinfo = f.read()
            source = CPUINFO
        except OSError:
            cpuinfo, source = "", "platform only (no /proc/cpuinfo)"
        arch = normalize_arch(machine or platform.machine())
    else:
        arch = normalize_arch(machine) if machine else (_guess_arch(cpuinfo) or normalize_arch(platform.machine()))
    if arch in ("x86_64", "x86"):
        flags = {X86_ALIASES.get(w, w) for w in _field(cpuinfo, "flags")}
        features = [f for f in X86_FEATURES if f in flags]
        label = x86_class(features) if flags else f"{arch} (features unknown)"
        if arch == "x86" and flags:
            label = label.replace("x86-64", "x86")
    elif arch == "aarch64":
        words = set(_field(cpuinfo, "features"))
        features = [f for f in ARM_FEATURES if f in words]
        label = arm_class(features) if words else "aarch64 (features unknown)"
    elif arch == "armv7":
        words = set(_field(cpuinfo, "features"))
        features = [f for f in ARM32_FEATURES if f in words]
        label = ("armv7 NEON" if "neon" in words else "armv7") if words else "armv7 (features unknown)"
    else:
        features, label = [], f"{arch} (features unknown)"
    return {"arch": arch, "features": features, "class": label, "source": source}


def int8_dot_product(features: list[str]) -> bool:
    """Whether the CPU has an int8 dot-product instruction XNNPACK's int8 kernels use (VNNI, AMX, dotprod, i8mm)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"} & set(features))


if __name__ == "__main__":  # pragma: no cover - a quick look on a board: python3 isa.py
    import json

    print(json.dumps(cpu_features(), indent=1))
