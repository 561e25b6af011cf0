"""``python -m benchmarks.dwconv_kernels``: the micro-benchmark behind the large-kernel depthwise split.

Times single depthwise convolutions (fp32 and int8, LiteRT + XNNPACK, 1 thread) at NASNet-Mobile's
reduction-cell shapes, to show how XNNPACK's kernels scale with the number of taps.
"""

from __future__ import annotations

import sys
import time

import numpy as np

CASES = [  # (label, kernel (h, w), stride, input HxWxC)
    ("3x3", (3, 3), 1, (56, 56, 16)),
    ("5x5", (5, 5), 1, (56, 56, 16)),
    ("7x3", (7, 3), 1, (56, 56, 16)),
    ("6x6", (6, 6), 1, (56, 56, 16)),
    ("7x7", (7, 7), 1, (56, 56, 16)),
    ("7x7 stride 2 (stem_1 p)", (7, 7), 2, (111, 111, 32)),
    ("5x5 stride 2", (5, 5), 2, (111, 111, 32)),
]


def time_case(kernel, stride, shape, int8: bool, runs: int = 30) -> float:
    from edge.quiet import captured_fds, import_tensorflow
    from edge.runtime.runners import _litert

    keras = import_tensorflow()
    import tensorflow as tf

    inp = keras.layers.Input(shape=shape)
    out = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False)(inp)
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out))
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([np.random.uniform(-1, 1, (1, *shape)).astype("f")] for _ in range(4))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with captured_fds():
        flat = conv.convert()
        Interpreter, _ = _litert()
        it = Interpreter(model_content=flat, num_threads=1)
        it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(5):
        it.invoke()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))


def main() -> int:
    print("| depthwise kernel | input | fp32 ms | int8 ms | taps | fp32 ns/tap/output |")
    print("|---|---|---|---|---|---|")
    for label, k, s, shape in CASES:
        f, q = time_case(k, s, shape, False), time_case(k, s, shape, True)
        outputs = -(-shape[0] // s) * -(-shape[1] // s) * shape[2]
        print(f"| {label} | {shape[0]}x{shape[1]}x{shape[2]} | {f:.3f} | {q:.3f} | {k[0] * k[1]} | "
              f"{1e6 * f / (outputs * k[0] * k[1]):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
