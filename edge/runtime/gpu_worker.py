"""``python -m edge.runtime.gpu_worker``: one LiteRT GPU model served to a parent process that has imported TensorFlow
(which would crash a GPU CompiledModel in its own process); see :class:`edge.runtime.gpu.GpuWorker`."""

import sys

from edge.runtime.gpu import worker_main

if __name__ == "__main__":
    sys.exit(worker_main())
