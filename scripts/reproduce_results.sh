#!/usr/bin/env bash
# Reproduces every result file quoted in README.md (about 40 minutes on 2 cores):
# converts the default model stock and lowered, fp32 and int8, on both backends; benchmarks them
# interleaved; per-cell latency; accuracy on Imagenette val; the demo's FPS on the real video.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
A=artifacts/results
R=results
mkdir -p "$A" "$R"

python -m converters.tflite --precision fp32 --no-lowering --output "$A"
python -m converters.tflite --int8 --no-lowering --output "$A"
python -m converters.tflite --precision fp32 --cells --output "$A/fp32"
python -m converters.tflite --int8 --cells --output "$A/int8"
cp "$A/fp32/nasnet_mobile_edge_fp32.tflite"* "$A/int8/nasnet_mobile_edge_int8.tflite"* "$A/"
python -m converters.executorch --precision fp32 --output "$A"
python -m converters.executorch --int8 --output "$A"
python -m converters.executorch --precision fp32 --no-lowering --output "$A"

python -m benchmarks.run "$A"/nasnet_mobile_stock_fp32.tflite "$A"/nasnet_mobile_stock_int8.tflite \
    "$A"/nasnet_mobile_edge_fp32.tflite "$A"/nasnet_mobile_edge_int8.tflite \
    "$A"/nasnet_mobile_stock_xnnpack_fp32.pte "$A"/nasnet_mobile_edge_xnnpack_fp32.pte \
    "$A"/nasnet_mobile_edge_xnnpack_int8.pte \
    --threads 1 --delegate xnnpack,gpu --runs 40 --rounds 5 --baseline stock_fp32.tflite \
    --name "stock vs lowered, default model" \
    --output "$R/benchmark" --quiet
python -m benchmarks.run --cells "$A/fp32/cells" --cells "$A/int8/cells" --runs 40 --rounds 4 --output "$R/cells" --quiet
python -m converters.executorch --int8 --cells --output "$A/et_cells_int8"
python -m converters.executorch --precision fp32 --cells --output "$A/et_cells_fp32"
python -m benchmarks.run --cells "$A/et_cells_fp32/cells" --cells "$A/et_cells_int8/cells" --threads 1 --runs 20 --rounds 4 \
    --output "$R/cells_executorch" --quiet
python -m benchmarks.quantization --weights default --data "$DATA/imagenette/val" --images 300 \
    --output "$R/quantization/default_v3"

python -m benchmarks.accuracy --data "$DATA/imagenette/val" --model default --json "$R/accuracy_default_torch.json" --quiet
python -m benchmarks.accuracy --data "$DATA/imagenette/val" \
    --model "$A"/nasnet_mobile_edge_fp32.tflite --model "$A"/nasnet_mobile_edge_int8.tflite \
    --model "$A"/nasnet_mobile_stock_int8.tflite --model "$A"/nasnet_mobile_edge_xnnpack_int8.pte \
    --json "$R/accuracy_artifacts.json" --quiet

python -m edge.demo --source "$DATA/video/bottle-detection.mp4" --headless --threads 1 --json "$R/demo_bottles.json"
