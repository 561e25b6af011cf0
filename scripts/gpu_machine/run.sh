#!/usr/bin/env bash
# The GPU check on a machine with a real GPU, from gpu_bundle/ (scripts/gpu_machine/prepare.sh): installs
# the bundled wheels into gpu_bundle/site (nothing system-wide), unpacks the Vulkan loader if the system
# has none, points Vulkan at the NVIDIA driver when it is there, and runs python -m benchmarks.gpu_machine
# (LiteRT GPU fp32 and fp16, LiteRT XNNPACK, PyTorch CUDA and CPU, on the 200 validation photos).
#
#   bash scripts/gpu_machine/run.sh [RESULTS_DIR]     # default results/gpu_machine
#
# Environment: PYTHON (default python3), GPU_BUNDLE (default gpu_bundle), NASNET_GPU_ARGS (extra flags),
# NASNET_GPU_BUNDLED_VULKAN=1 (use the bundled Vulkan loader even if the system has one).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/gpu_machine}
bundle=${GPU_BUNDLE:-gpu_bundle}
py=${PYTHON:-python3}
[ -d "$bundle/wheels" ] || { echo "error: no $bundle/ here: run scripts/gpu_machine/prepare.sh first" >&2; exit 2; }

site="$bundle/site-$($py -c 'import sys; print("%d%d" % sys.version_info[:2])')"
if [ ! -d "$site" ]; then
  need=()
  for w in "$bundle"/wheels/*.whl; do
    mod=$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z' | sed 's/^pillow$/PIL/; s/^ai_edge_litert$/ai_edge_litert/')
    $py -c "import $mod" 2>/dev/null || need+=("$w")
  done
  mkdir -p "$site.tmp"
  [ ${#need[@]} -eq 0 ] || $py -m pip install -q --no-index --no-deps --target "$site.tmp" "${need[@]}"
  mv "$site.tmp" "$site"
fi
export PYTHONPATH="$PWD/$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Vulkan loader: the system's, else the bundled libvulkan1 unpacked (no root needed)
if [ -n "${NASNET_GPU_BUNDLED_VULKAN:-}" ] || ! $py -c "import ctypes; ctypes.CDLL('libvulkan.so.1')" 2>/dev/null; then
  mkdir -p "$bundle/vulkan"
  for d in "$bundle"/debs/libvulkan1_*.deb; do
    deb=$(realpath "$d")
    if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$deb" "$bundle/vulkan"
    else (cd "$bundle/vulkan" && ar x "$deb" && tar xf data.tar.* && rm -f data.tar.* control.tar.* debian-binary); fi
  done
  export LD_LIBRARY_PATH="$PWD/$(dirname "$(find "$bundle/vulkan" -name 'libvulkan.so.1*' | head -1)")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# The NVIDIA Vulkan driver of the container, when there is one (else whatever ICDs the loader finds)
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
           /etc/vulkan/icd.d/nvidia_icd.json; do
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
done
echo "python: $($py --version 2>&1); VK_DRIVER_FILES=${VK_DRIVER_FILES:-<loader default>}"
# shellcheck disable=SC2086
$py -m benchmarks.gpu_machine --models "$bundle/models" --output "$out" ${NASNET_GPU_ARGS:-}
