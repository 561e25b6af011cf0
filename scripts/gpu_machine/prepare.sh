#!/usr/bin/env bash
# Prepares gpu_bundle/ for the GPU machine (Python 3.12, CUDA PyTorch, no TensorFlow/LiteRT/OpenCV, no
# internet; 64 MiB may travel): the cp312 wheels it lacks, the Vulkan loader, and the models. Run here,
# then carry gpu_bundle/ and run scripts/gpu_machine/run.sh there (docs/gpu.md).
#
#   bash scripts/gpu_machine/prepare.sh [MODELS_DIR]
#
# MODELS_DIR: where nasnet_mobile_edge_gpu_fp32.tflite (and optionally nasnet_mobile_stock_fp32.tflite)
# are; made with python -m converters.tflite when missing (a few minutes). Default artifacts/gpu.
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${1:-artifacts/gpu}
bundle=gpu_bundle
limit=$((64 * 1024 * 1024))

[ -f "$models/nasnet_mobile_edge_gpu_fp32.tflite" ] || \
  python -m converters.tflite --precision fp32 --target gpu --output "$models"
[ -f "$models/nasnet_mobile_stock_fp32.tflite" ] || \
  python -m converters.tflite --precision fp32 --no-lowering --output "$models"

rm -rf "$bundle.tmp" && mkdir -p "$bundle.tmp/wheels" "$bundle.tmp/debs" "$bundle.tmp/models"
litert=$(python -c "from importlib.metadata import version; print(version('ai-edge-litert'))")
# Only what the machine lacks: LiteRT (with flatbuffers and ml_dtypes, which it imports), Pillow to decode the photos
# (OpenCV's wheel alone would not fit), tqdm. numpy and torch are there.
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 -d "$bundle.tmp/wheels" \
  "ai-edge-litert==$litert" "pillow==10.4.0" flatbuffers ml_dtypes tqdm
(cd "$bundle.tmp/debs" && apt-get download libvulkan1 2>/dev/null)
cp "$models/nasnet_mobile_edge_gpu_fp32.tflite"* "$bundle.tmp/models/"
size=$(du -sb "$bundle.tmp" | cut -f1)
if [ $((size + $(stat -c %s "$models/nasnet_mobile_stock_fp32.tflite"))) -le $limit ]; then
  cp "$models/nasnet_mobile_stock_fp32.tflite"* "$bundle.tmp/models/"
else
  echo "note: the stock graph does not fit in 64 MiB beside the rest; the GPU form only"
fi
size=$(du -sb "$bundle.tmp" | cut -f1)
[ "$size" -le $limit ] || { echo "error: $bundle is $size bytes, over 64 MiB" >&2; exit 1; }
rm -rf "$bundle" && mv "$bundle.tmp" "$bundle"
echo "wrote $bundle/ ($((size / 1024 / 1024)) MiB): $(ls "$bundle"/wheels | tr '\n' ' ')"
