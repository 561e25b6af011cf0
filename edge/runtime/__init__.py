"""Running artifacts: LiteRT, ExecuTorch, PyTorch and Keras behind one ``Runner`` interface
(:mod:`~edge.runtime.runners`), LiteRT's GPU accelerator (:mod:`~edge.runtime.gpu`, in a worker process when
TensorFlow is loaded: :mod:`~edge.runtime.gpu_worker`)."""

from edge.runtime.runners import (Delegate, ExecuTorchRunner, KerasRunner, LiteRTRunner, ModelInfo, Runner,  # noqa: F401
                                  RuntimeKind, TorchRunner, open_model)
