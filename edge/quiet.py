"""Keep third-party import noise (torchao's optional CUDA kernels, TF's banner) off the user's terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings


@contextlib.contextmanager
def quiet_executorch_import():
    """ExecuTorch imports torchao, which logs every optional CUDA library it cannot load on a CPU box."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


@contextlib.contextmanager
def captured_fds(enabled: bool = True):
    """Send C-level stdout/stderr (TF converter dumps, MLIR notes) to a temp file for the duration.

    ``sys.stdout``/``sys.stderr`` go there too: ExecuTorch's Python bindings route the runtime's native log
    lines (``[cpuinfo_utils.cpp:71] ...``) through ``sys.stderr``, not file descriptor 2, so where those are
    not the same file (pytest, Jupyter) redirecting the descriptors alone would let them through.
    Python-level progress bars keep working only if written before/after; use for opaque native calls.
    Yields the capture (a binary file) so callers can show it on failure.
    """
    import sys
    import tempfile

    if not enabled:
        yield None
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(1), os.dup(2)
        saved_py = sys.stdout, sys.stderr
        text = open(tmp.fileno(), "w", closefd=False, errors="replace")
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        sys.stdout = sys.stderr = text
        try:
            yield tmp
        finally:
            text.flush()
            sys.stdout, sys.stderr = saved_py
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            text.close()


def import_tensorflow():
    """Import TensorFlow and Keras with their native start-up banner (absl/oneDNN notes) kept off stderr.

    TF 2.21 prints those lines before any log level applies (TF_CPP_MIN_LOG_LEVEL does not stop them),
    and they would break one-line error messages. Returns the keras module.
    """
    import sys

    if "tensorflow" not in sys.modules:
        quiet_tensorflow()
        with captured_fds():
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    import keras

    return keras
