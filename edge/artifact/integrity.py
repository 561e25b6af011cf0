"""Is this file the one its manifest describes? The sha256 check behind every load of an artifact.

A damaged copy of a model does not always fail to load: bytes flipped inside a weights region leave a
valid ``.tflite``, ``.pte`` or ``.pt`` that runs and gives wrong answers (seen: LiteRT and torch.load accept
such files without a word). Every file the toolkit writes has a manifest beside it that records its size
and sha256, so loaders call :func:`verify_against_manifest` first and a damaged or truncated copy is named
as such instead of being run. Files without a manifest (a user's own) are loaded as they are.

ExecuTorch needs one more guard: a ``.pte`` whose strings are damaged can abort the whole process while it
loads (executorch 1.5.1: the runtime's log line for a bad header carries the file's raw bytes, and the
Python bindings' log hook throws on non-UTF-8 text inside C++, which ends in ``std::terminate``).
:func:`check_pte_header` catches a damaged header in Python first; :func:`probe_in_subprocess` loads a
``.pte`` that has no manifest in a child process, so a crash there becomes a one-line error here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edge.errors import ModelError, UserError
from edge.model.weights import sha256

# The flatbuffer file identifier of an ExecuTorch program (bytes 4..8 of every .pte of this schema).
PTE_IDENTIFIER = b"ET12"


class IntegrityError(UserError):
    """A file that differs from what its manifest records, or that is damaged beyond loading."""


def manifest_beside(path: str | os.PathLike) -> Path | None:
    """The manifest of ``path``: ``<name>.json`` (converters) or ``<stem>.json`` (released ``.pt`` files)."""
    p = Path(path)
    for candidate in (p.with_name(p.name + ".json"), p.with_suffix(".json")):
        if candidate.is_file() and candidate != p:
            return candidate
    return None


def verify_against_manifest(path: str | os.PathLike) -> dict | None:
    """Raise :class:`IntegrityError` when the manifest beside ``path`` records another size or sha256.

    Returns the manifest (``None`` when there is none, or it records no checksum). A manifest that cannot
    be read is itself reported: it would otherwise hide the check.
    """
    p = Path(path)
    mp = manifest_beside(p)
    if mp is None:
        return None
    try:
        manifest = json.loads(mp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{mp}: the manifest of {p.name} is not readable JSON ({e.__class__.__name__}); "
                             "restore it from the conversion's output, or delete it to load the file unchecked") from None
    if not isinstance(manifest, dict) or not manifest.get("sha256"):
        return manifest if isinstance(manifest, dict) else None
    size = manifest.get("size_bytes", manifest.get("bytes"))
    actual_size = p.stat().st_size
    if size is not None and int(size) != actual_size:
        raise IntegrityError(f"{p}: {actual_size} bytes, but its manifest {mp.name} records {size}: the file is "
                             "truncated or was changed after it was written; copy or convert it again")
    digest = sha256(p)
    if digest != manifest["sha256"]:
        raise IntegrityError(f"{p}: sha256 {digest[:12]}... differs from its manifest {mp.name} "
                             f"({manifest['sha256'][:12]}...): the file was damaged or changed after it was "
                             "written; copy or convert it again")
    return manifest


def check_pte_header(path: str | os.PathLike) -> None:
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise ModelError(f"{p}: ExecuTorch cannot load it ({len(head)} bytes, not an ExecuTorch program); "
                         "is it a complete .pte file?")
    if head[4:8] != PTE_IDENTIFIER:
        raise ModelError(f"{p}: ExecuTorch cannot load it (not an ExecuTorch program of this version: file "
                         f"identifier {head[4:8]!r}, expected {PTE_IDENTIFIER!r}); is it a complete .pte file "
                         "made for this ExecuTorch version?")


_PROBE = """
import sys
from executorch.runtime import Runtime
program = Runtime.get().load_program(sys.argv[1])
program.load_method("forward")
"""


def probe_in_subprocess(path: str | os.PathLike, timeout: float = 300) -> None:
    """Load a ``.pte`` in a child process; a crash or an error there raises :class:`ModelError` here."""
    p = Path(path)
    r = subprocess.run([sys.executable, "-c", _PROBE, str(p)], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode == 0:
        return
    lines = [ln for ln in (r.stderr or "").splitlines() if ln.strip()]
    how = f"killed by signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
    last = lines[-1][:160] if lines else ""
    raise ModelError(f"{p}: ExecuTorch cannot load it ({how}{': ' + last if last else ''}); "
                         "is it a complete .pte file made for this ExecuTorch version?")
