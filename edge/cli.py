"""Shared command-line plumbing: logging set-up, one-line errors for bad input, tracebacks for bugs."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from typing import Callable

from edge.errors import UserError

# OS errors that come from the user's files and machine, not from a bug: a missing or unreadable path, an
# output folder that is not writable, a full disk. Printed as one line like a UserError.
USER_OS_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                            errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG})
REPORT_LINE = ("this is a bug in nasnet-edge, not a problem with your input: please report it with the command "
               "line and the traceback above")


def setup_logging(verbose: bool = False) -> None:
    # progress and notes go to stdout; stderr is kept for the one-line error of a failed run
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stdout)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def os_error_message(e: OSError) -> str:
    what = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EFBIG: "file too large for this file system"}
    reason = what.get(e.errno, e.strerror or e.__class__.__name__)
    where = f"{e.filename}: " if e.filename else ""
    hint = {errno.ENOSPC: "; free some space or choose another --output",
            errno.EDQUOT: "; free some space or choose another --output",
            errno.EACCES: "; choose a folder you can write to (--output) or fix its permissions",
            errno.EPERM: "; choose a folder you can write to (--output) or fix its permissions",
            errno.EROFS: "; choose a writable --output folder"}.get(e.errno, "")
    return f"{where}{reason}{hint}"


def run_cli(fn: Callable[[], object], verbose: bool = False) -> int:
    """Run an entry point.

    Returns 0 on success (or ``fn``'s int), 2 with one line ``error: ...`` on a user error (a
    :class:`~edge.errors.UserError`, or an OS error about the user's files: missing, not writable, disk
    full), 130 on Ctrl-C, and 1 with the traceback and a line asking for a bug report on anything else.
    """
    setup_logging(verbose)
    try:
        result = fn()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except Exception as e:
        if isinstance(e, OSError) and e.errno in USER_OS_ERRNOS:
            print(f"error: {' '.join(os_error_message(e).split())}", file=sys.stderr)
            return 2
        traceback.print_exc()  # a bug: keep everything a maintainer needs
        print(REPORT_LINE, file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, said once: argparse's own formatter appends "(default: X)" even to a
    help text that already names the default in words, and "(default: None)" to options whose default is decided
    later ("200, or all there are")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
