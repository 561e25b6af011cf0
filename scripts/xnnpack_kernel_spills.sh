#!/usr/bin/env bash
# Compile XNNPACK microkernels with GCC, GCC with register-pressure-aware scheduling, and clang, and count the vector
# registers each build spills to the stack (a store or reload of an xmm/ymm/zmm register at (%rsp)); then time the
# int8 25-tap depthwise kernel of each ISA this CPU has, the three builds interleaved (scripts/xnnpack_dwconv_bench.c).
# The ExecuTorch 1.5.1 wheel's XNNPACK is built with GCC and LiteRT's with clang; the kernels GCC spills in are the
# ones that make ExecuTorch slower on the same graph (docs/benchmarking.md, issue 20).
#
#   bash scripts/xnnpack_kernel_spills.sh /path/to/XNNPACK [clang-19]
#
# Needs an XNNPACK source tree (git clone https://github.com/google/XNNPACK), gcc, a clang and binutils.
set -euo pipefail
xnn=${1:?usage: $0 /path/to/XNNPACK [clang]}
clang=${2:-clang-19}
[ -f "$xnn/include/xnnpack.h" ] || { echo "error: $xnn is not an XNNPACK source tree (no include/xnnpack.h)" >&2; exit 2; }
for tool in gcc "$clang" objdump; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install gcc $clang binutils)" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the kernels need only <pthreadpool.h>'s type from outside the tree
printf '#pragma once\ntypedef struct pthreadpool* pthreadpool_t;\n' > "$work/pthreadpool.h"
kernels=(
  "src/qs8-qc8w-dwconv/gen/qs8-qc8w-dwconv-25p32c-minmax-fp32-avx512skx-mul32.c"
  "src/qs8-qc8w-dwconv/gen/qs8-qc8w-dwconv-9p32c-minmax-fp32-avx512skx-mul32.c"
  "src/qs8-qc8w-dwconv/gen/qs8-qc8w-dwconv-25p16c-minmax-fp32-avx2-mul32.c"
  "src/f32-gemm/gen/f32-gemm-10x8-minmax-fma3-broadcast.c"
)
echo "| kernel | compiler | instructions | vector spills (stores/reloads) |"
echo "|---|---|---:|---|"
for k in "${kernels[@]}"; do
  case $k in
    *avx512*) isa="-mavx512f -mavx512cd -mavx512bw -mavx512dq -mavx512vl" ;;
    *) isa="-mavx2 -mfma -mf16c" ;;
  esac
  for cc in "gcc -O2" "gcc -O2 -fschedule-insns -fsched-pressure" "$clang -O2"; do
    # shellcheck disable=SC2086
    if ! (cd "$xnn" && $cc $isa -I. -Iinclude -Isrc -I"$work" -fPIC -c "$k" -o "$work/k.o") 2>"$work/err"; then
      echo "| $(basename "$k" .c) | $cc | error: $(head -1 "$work/err") | |"
      continue
    fi
    objdump -d --no-show-raw-insn "$work/k.o" > "$work/k.s"
    n=$(grep -cP '^\s+[0-9a-f]+:\t' "$work/k.s" || true)
    st=$(grep -cE 'vmov\S*\s+%[xyz]mm[0-9]+,.*\(%rsp\)' "$work/k.s" || true)
    ld=$(grep -cE 'vmov\S*\s+\S*\(%rsp\),%[xyz]mm' "$work/k.s" || true)
    echo "| $(basename "$k" .c) | $cc | $n | $st/$ld |"
  done
done

# time the int8 25-tap depthwise kernels (NASNet-Mobile's 5x5 separable convs) built the three ways
here=$(cd "$(dirname "$0")" && pwd)
for spec in "avx512skx-mul32 32 avx512bw" "avx2-mul32 16 avx2"; do
  set -- $spec
  grep -qw "$3" /proc/cpuinfo || { echo; echo "(no $3 on this CPU: the $1 kernel is not timed)"; continue; }
  k="src/qs8-qc8w-dwconv/gen/qs8-qc8w-dwconv-25p$2c-minmax-fp32-$1.c"
  name="xnn_qs8_qc8w_dwconv_minmax_fp32_ukernel_25p$2c__${1/-/_}"
  case $1 in avx512*) isa="-mavx512f -mavx512cd -mavx512bw -mavx512dq -mavx512vl" ;; *) isa="-mavx2 -mfma -mf16c" ;; esac
  inc="-I$xnn -I$xnn/include -I$xnn/src -I$work"
  # shellcheck disable=SC2086
  gcc -O2 $isa $inc -fPIC -c "$xnn/$k" -D"$name"=k_gcc -o "$work/kg.o"
  # shellcheck disable=SC2086
  gcc -O2 -fschedule-insns -fsched-pressure $isa $inc -fPIC -c "$xnn/$k" -D"$name"=k_gccs -o "$work/kgs.o"
  # shellcheck disable=SC2086
  "$clang" -O2 $isa $inc -fPIC -c "$xnn/$k" -D"$name"=k_clang -o "$work/kc.o"
  # shellcheck disable=SC2086
  gcc -O2 -DCT="$2" $inc "$here/xnnpack_dwconv_bench.c" "$work/kg.o" "$work/kgs.o" "$work/kc.o" -o "$work/bench"
  for shape in "44 56" "88 28" "176 14" "352 7"; do
    echo; echo "25p$2c $1, one thread:"
    # shellcheck disable=SC2086
    "$work/bench" $shape
  done
done
