"""Shared command-line plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

# Errors a user can fix: printed as one line, exit status 2. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError, NotADirectoryError,
                                                IsADirectoryError, KeyError)


def setup_logging(verbose: bool = False) -> None:
    # progress and notes go to stdout; stderr is kept for the one-line error of a failed run
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stdout)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_cli(fn: Callable[[], object], verbose: bool = False) -> int:
    """Run an entry point: 0 on success, 2 with ``error: ...`` on a user error, 130 on Ctrl-C."""
    setup_logging(verbose)
    try:
        result = fn()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0
