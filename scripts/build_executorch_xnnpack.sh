#!/usr/bin/env bash
# Build ExecuTorch's XNNPACK backend (libexecutorch_backend_xnnpack.so) for the installed executorch wheel, with
# clang or with GCC and register-pressure-aware scheduling, so that ExecuTorch runs the toolkit's .pte files at
# LiteRT's speed. The wheel's own backend is compiled by GCC, which spills vector registers in XNNPACK's int8
# 25-tap depthwise kernel (AVX-512 and AVX2) and its fp32 GEMM (AVX2): same graph, same kernels, 1.1-1.3x slower
# (docs/benchmarking.md, issue 20). By default XNNPACK also runs on the source tree's pthreadpool, newer than the
# wheel's, as LiteRT's is (3% faster int8 at two threads), and the delegate reshapes and sets up its XNNPACK runtime
# only when an input's shape or data pointer changed, as LiteRT's does (upstream does both for all ~700 operators at
# every inference: xnn_executor_setup_once.patch). The result replaces the wheel's backend in the toolkit's
# processes only:
#
#   bash scripts/build_executorch_xnnpack.sh                  # clang, sources cloned at the wheel's commit
#   export NASNET_EDGE_EXECUTORCH_XNNPACK=$PWD/build/executorch_xnnpack/clang/libexecutorch_backend_xnnpack.so
#   python -m benchmarks.run model.pte --executorch-xnnpack "$NASNET_EDGE_EXECUTORCH_XNNPACK"
#
# Options:
#   --compiler clang|gcc-sched|gcc   clang (default; the compiler of LiteRT's and the Android NDK's XNNPACK),
#                                    gcc-sched (GCC with -fschedule-insns -fsched-pressure: removes the int8
#                                    depthwise spills, not the AVX2 fp32 GEMM's), gcc (the wheel's way, a control)
#   --src DIR        an ExecuTorch source tree with the submodules this needs (backends/xnnpack/third-party/
#                    {XNNPACK,cpuinfo,pthreadpool,FXdiv}, third-party/flatbuffers); default: clone the commit the
#                    installed wheel was built from into build/executorch_src (needs git and network)
#   --source-label T what to record as the source (default: the tree's git commit)
#   --threadpool own|wheel   own (default): XNNPACK runs on the source tree's pthreadpool, linked into the library
#                    (own_threadpool.cpp: the wheel's is older than LiteRT's and costs more per operator at two
#                    threads); wheel: on the wheel's pthreadpool, as the wheel's backend does (out: <compiler>-wheelpool)
#   --setup once|each-call   once (default): the delegate reshapes and sets up its XNNPACK runtime only when an input
#                    shape or data pointer changed, as LiteRT's does (xnn_executor_setup_once.patch, applied to copies
#                    in the build folder); each-call: on every execute, as upstream does (out: <compiler>-eachcall)
#   --out DIR        where the library goes (default: build/executorch_xnnpack/<compiler>)
#   --jobs N         parallel compile jobs (default: the number of CPUs)
#
# Needs cmake >= 3.24, ninja or make, patch (for --setup once), the compiler (apt-get install clang-19 / gcc g++), Python with executorch.
# Writes OUT/libexecutorch_backend_xnnpack.so and OUT/libexecutorch_backend_xnnpack.so.json (compiler, flags,
# sources, the wheel it was built for), each to a temporary name first. Every symbol is resolved against the
# wheel's libexecutorch.so and libexecutorch_threadpool.so at link time, so a mismatched tree fails here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
compiler=clang src="" out="" label="" threadpool=own setup=once jobs=$(nproc 2>/dev/null || echo 2)
die() { echo "error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --compiler) compiler=${2:?}; shift 2 ;;
    --src) src=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --source-label) label=${2:?}; shift 2 ;;
    --jobs) jobs=${2:?}; shift 2 ;;
    --threadpool) threadpool=${2:?}; shift 2 ;;
    --setup) setup=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
case $compiler in
  clang)
    cc=$(command -v clang-19 || command -v clang-18 || command -v clang || true)
    [ -n "$cc" ] || die "no clang found: apt-get install clang-19 (or choose --compiler gcc-sched)"
    cxx=${cc/clang/clang++}; flags="" ;;
  gcc-sched) cc=gcc; cxx=g++; flags="-fschedule-insns -fsched-pressure" ;;
  gcc) cc=gcc; cxx=g++; flags="" ;;
  *) die "--compiler $compiler: choose clang, gcc-sched or gcc" ;;
esac
case $threadpool in own) own=ON suffix="" ;; wheel) own=OFF suffix="-wheelpool" ;;
  *) die "--threadpool $threadpool: choose own or wheel" ;; esac
case $setup in once) setup_once=ON ;; each-call) setup_once=OFF suffix="$suffix-eachcall" ;;
  *) die "--setup $setup: choose once or each-call" ;; esac
command -v patch >/dev/null || [ "$setup" = each-call ] || die "patch is not installed (apt-get install patch), or build with --setup each-call"
python=${PYTHON:-python}
read -r et_version et_commit wheel_lib < <("$python" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("executorch")
if spec is None or not spec.submodule_search_locations:
    print("none none none"); sys.exit()
lib = pathlib.Path(list(spec.submodule_search_locations)[0]) / "lib"
try:
    from executorch.version import __version__, git_version
except Exception:
    __version__, git_version = "unknown", None
print(__version__, git_version or "unknown", lib if (lib / "libexecutorch.so").is_file() else "none")
PY
)
[ "$wheel_lib" != none ] || die "no executorch wheel with lib/libexecutorch.so in $python (pip install executorch)"
need_tools() {
  command -v "$cxx" >/dev/null || die "$cxx is not installed (apt-get install ${cxx%%-*})"
  command -v cmake >/dev/null || die "cmake is not installed (apt-get install cmake ninja-build)"
}
if [ -z "$src" ]; then
  need_tools  # before a clone, not after it
  src=$root/build/executorch_src
  if [ ! -d "$src/.git" ]; then
    [ "$et_commit" != unknown ] || die "the installed executorch does not say its commit; pass --src DIR"
    command -v git >/dev/null || die "git is not installed; install it or pass --src DIR"
    echo "cloning ExecuTorch at $et_commit (the commit of executorch $et_version) into $src"
    git init -q "$src" && git -C "$src" remote add origin https://github.com/pytorch/executorch.git
    git -C "$src" fetch -q --depth 1 origin "$et_commit" || die "could not fetch ExecuTorch $et_commit (network?)"
    git -C "$src" checkout -q FETCH_HEAD
    git -C "$src" submodule update -q --init --depth 1 backends/xnnpack/third-party/XNNPACK \
      backends/xnnpack/third-party/cpuinfo backends/xnnpack/third-party/pthreadpool \
      backends/xnnpack/third-party/FXdiv third-party/flatbuffers || die "could not fetch ExecuTorch's submodules"
  fi
fi
[ -d "$src" ] || die "--src $src: no such folder"
src=$(cd "$src" && pwd)
for p in backends/xnnpack/runtime/XNNPACKBackend.cpp backends/xnnpack/third-party/XNNPACK/include/xnnpack.h \
         backends/xnnpack/third-party/cpuinfo/include/cpuinfo.h \
         backends/xnnpack/third-party/pthreadpool/include/pthreadpool.h \
         third-party/flatbuffers/CMakeLists.txt; do
  [ -e "$src/$p" ] || die "$src is not an ExecuTorch tree with its XNNPACK submodules (no $p; git submodule update --init)"
done
if [ -z "$label" ]; then
  label=$(git -C "$src" rev-parse HEAD 2>/dev/null || echo "unknown commit")
  [ "$label" = "$et_commit" ] || echo "note: $src is at $label, the wheel was built from $et_commit" >&2
fi
need_tools
out=${out:-$root/build/executorch_xnnpack/$compiler$suffix}
build=$out/cmake-build
mkdir -p "$out"
gen=(-G Ninja); command -v ninja >/dev/null || gen=()
echo "configuring ($compiler${flags:+ $flags}) in $build"
CC=$cc CXX=$cxx CFLAGS="$flags" CXXFLAGS="$flags" cmake -S "$here/executorch_xnnpack" -B "$build" "${gen[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DEXECUTORCH_ROOT="$src" -DWHEEL_LIB="$wheel_lib" -DOWN_PTHREADPOOL=$own -DSETUP_ONCE=$setup_once > "$out/configure.log" 2>&1 \
  || { tail -20 "$out/configure.log" >&2; die "cmake configure failed (log: $out/configure.log)"; }
echo "building with $jobs jobs (XNNPACK and its microkernels: a few minutes; log: $out/build.log)"
cmake --build "$build" --target executorch_backend_xnnpack -j "$jobs" > "$out/build.log" 2>&1 \
  || { tail -20 "$out/build.log" >&2; die "build failed (log: $out/build.log)"; }
lib=$out/libexecutorch_backend_xnnpack.so
cp "$build/libexecutorch_backend_xnnpack.so" "$lib.tmp"
version=$("$cc" --version | head -1)
"$python" - "$lib.tmp.json" "$compiler" "$version" "$flags" "$et_version" "$et_commit" "$wheel_lib" "$label" \
  "$(git -C "$src/backends/xnnpack/third-party/XNNPACK" rev-parse HEAD 2>/dev/null || echo unknown)" \
  "$threadpool" "$(git -C "$src/backends/xnnpack/third-party/pthreadpool" rev-parse HEAD 2>/dev/null || echo unknown)" "$setup" <<'PY'
import json, platform, sys, time
path, kind, version, flags, et_version, et_commit, wheel_lib, source, xnnpack, pool, pool_src, setup = sys.argv[1:]
json.dump({"what": "ExecuTorch XNNPACK backend built by scripts/build_executorch_xnnpack.sh", "compiler": kind,
           "compiler_version": version, "flags": flags.split(), "executorch_wheel": et_version,
           "executorch_wheel_commit": et_commit, "wheel_lib": wheel_lib, "executorch_source": source,
           "xnnpack_source": xnnpack, "machine": platform.machine(),
           "threadpool": "the wheel's pthreadpool" if pool == "wheel" else f"own pthreadpool {pool_src[:8]}",
           "runtime_setup": ("once per input shape and pointers (xnn_executor_setup_once.patch)" if setup == "once"
                             else "every execute (upstream)"),
           "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, open(path, "w"), indent=1)
PY
mv "$lib.tmp" "$lib" && mv "$lib.tmp.json" "$lib.json"
echo "built $lib"
echo "use it: export NASNET_EDGE_EXECUTORCH_XNNPACK=$lib"
