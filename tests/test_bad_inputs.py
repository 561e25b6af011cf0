"""Bad input, tried on the command lines as a user would: each gets one clear line and leaves nothing behind.

Every case is a row of ``CASES``: which command, which damaged input, what the one line must say. The
commands run in this process through their ``main(argv)`` (the code ``python -m`` runs) with the file
descriptors captured, so native libraries' output counts too; Ctrl-C runs a real child process. The table
of cases and the messages they get is written to ``docs/bad_inputs.md`` by
``NASNET_WRITE_BAD_INPUTS_DOC=1 python -m pytest tests/test_bad_inputs.py``, and a test checks that the
document lists every case.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import ASSETS, REPO, class_folders, shipped_classes, shipped_photos

DOC = REPO / "docs" / "bad_inputs.md"
MODELS = ASSETS / "models"
_MESSAGES: dict[str, tuple[int, str]] = {}  # case id -> (exit status, the line the user saw)


def flip(src: Path, dst: Path, at: float, n: int = 64) -> Path:
    """A copy of ``src`` with ``n`` bytes inverted at the fraction ``at`` of the file."""
    b = bytearray(src.read_bytes())
    i = min(int(len(b) * at), len(b) - n)
    for k in range(n):
        b[i + k] ^= 0xFF
    dst.write_bytes(bytes(b))
    return dst


def flip_in_largest_tensor(src: Path, dst: Path, n: int = 8) -> Path:
    """A copy of a torch ``.pt`` (a zip) with ``n`` bytes inverted in the middle of its largest tensor's data
    (a fraction of the file may land in the zip's alignment padding, which nothing reads)."""
    import struct
    import zipfile

    with zipfile.ZipFile(src) as z:  # tensor storages are the archive's data/<n> entries
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    b = bytearray(src.read_bytes())
    name_len, extra_len = struct.unpack("<HH", b[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(n):
        b[start + info.file_size // 2 + k] ^= 0xFF
    dst.write_bytes(bytes(b))
    return dst


def truncate(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


def with_manifest_of(src: Path, dst: Path) -> Path:
    """Put ``src``'s manifest beside the damaged copy ``dst``, as a copied artifact folder would have it."""
    for m in (src.with_name(src.name + ".json"), src.with_suffix(".json")):
        if m.is_file():
            shutil.copy(m, dst.with_name(dst.name + ".json") if m.name.endswith(src.suffix + ".json")
                        else dst.with_suffix(".json"))
    return dst


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """Damaged copies of every kind of file the commands read, and folders that cannot be used."""
    import h5py
    import torch

    from conftest import small_nasnet
    from edge.model.weights import save_toolkit_weights, sha256

    d = tmp_path_factory.mktemp("bad")
    f: dict[str, Path] = {}
    tfl = MODELS / "nasnet_mobile_imagenette_int8.tflite"
    pt = MODELS / "nasnet_mobile_imagenette.pt"
    # a small real ExecuTorch program (the loader is what is under test, not the network)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    program = to_edge_transform_and_lower(torch.export.export(net, (torch.randn(1, 3, 224, 224),)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    pte = d / "tiny.pte"
    pte.write_bytes(program.buffer)
    (d / "tiny.pte.json").write_text(json.dumps({"sha256": sha256(pte),
                                                  "size_bytes": pte.stat().st_size}))
    h5 = d / "w.h5"
    with h5py.File(h5, "w") as hf:
        hf.create_dataset("stem_conv1/stem_conv1/kernel:0", data=np.ones((3, 3, 3, 32), "f"))
    cfg, small = small_nasnet(num_classes=10)
    save_toolkit_weights(d / "small.pt", small)

    for kind, src in (("tflite", tfl), ("pte", pte), ("pt", pt), ("h5", h5)):
        f[f"{kind}_missing"] = d / f"missing.{kind}"
        (d / f"empty.{kind}").write_bytes(b"")
        f[f"{kind}_empty"] = d / f"empty.{kind}"
        f[f"{kind}_truncated"] = truncate(src, d / f"truncated.{kind}")
        f[f"{kind}_header_flipped"] = flip(src, d / f"header.{kind}", 0.0, 16)
    # bytes flipped inside the weights: the file still loads, so only its manifest can tell
    f["tflite_weights_flipped"] = with_manifest_of(tfl, flip(tfl, d / "weights.tflite", 0.5))
    f["pte_body_flipped"] = flip(pte, d / "body.pte", 0.4, 16)  # aborts the ExecuTorch runtime when loaded
    f["pte_weights_flipped"] = flip(pte, d / "weights.pte", 0.9, 16)
    shutil.copy(d / "tiny.pte.json", d / "weights.pte.json")
    f["pt_weights_flipped"] = with_manifest_of(pt, flip(pt, d / "weights.pt", 0.5))
    f["pt_tensors_flipped"] = flip_in_largest_tensor(d / "small.pt", d / "tensors.pt")  # no manifest: the checksum

    (d / "no_images").mkdir()
    (d / "no_images" / "notes.txt").write_text("not a photo")
    f["folder_no_images"] = d / "no_images"
    unreadable = d / "unreadable" / shipped_classes()[0]
    unreadable.mkdir(parents=True)
    for i, junk in enumerate((b"", b"not a jpeg", shipped_photos("samples")[0].read_bytes()[:300])):
        (unreadable / f"broken_{i}.jpg").write_bytes(junk)
    f["folder_unreadable"] = d / "unreadable"
    f["folder_missing"] = d / "no_such_folder"
    f["video_corrupt"] = d / "corrupt.mp4"
    f["video_corrupt"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    f["output_is_a_file"] = d / "a_file"
    f["output_is_a_file"].write_text("x")
    f["small_pt"] = d / "small.pt"
    return f


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # module run as python -m
    args: tuple[str, ...]  # {name} is replaced by the path of bad[name]
    expect: str  # a phrase the one-line message must contain
    what: str  # the input, as the table describes it
    status: int = 2


M = "nasnet_mobile_imagenette"
CASES = [
    # model files, run by the accuracy command (any runtime) -----------------------------------------------
    *[Case(f"model_{k}", "benchmarks.accuracy", ("--data", "{data}", "--model", "{%s}" % k, "--quiet"), e, w)
      for k, e, w in [
          ("tflite_missing", "no such model file", "`.tflite` that does not exist"),
          ("tflite_empty", "LiteRT cannot load it", "empty `.tflite`"),
          ("tflite_truncated", "LiteRT cannot load it", "truncated `.tflite`"),
          ("tflite_header_flipped", "LiteRT cannot load it", "`.tflite` with its header bytes inverted"),
          ("tflite_weights_flipped", "differs from its manifest", "`.tflite` with 64 weight bytes inverted, manifest beside it"),
          ("pte_missing", "no such model file", "`.pte` that does not exist"),
          ("pte_empty", "not an ExecuTorch program", "empty `.pte`"),
          ("pte_truncated", "ExecuTorch cannot load it", "truncated `.pte` (no manifest)"),
          ("pte_header_flipped", "not an ExecuTorch program", "`.pte` with its header bytes inverted"),
          ("pte_body_flipped", "ExecuTorch cannot load it", "`.pte` with 16 bytes inverted where they abort the runtime (no manifest)"),
          ("pte_weights_flipped", "differs from its manifest", "`.pte` with 16 bytes inverted, manifest beside it"),
      ]],
    Case("bench_tflite_empty", "benchmarks.run", ("{tflite_empty}", "--runs", "1", "--rounds", "1", "--quiet"),
         "nothing was measured", "`benchmarks.run` of an empty `.tflite` only (every case failed)", status=1),
    # weights, read by the converter ------------------------------------------------------------------------
    *[Case(f"weights_{k}", "converters.tflite", ("--int8", "--weights", "{%s}" % k, "--output", "{out}"), e, w)
      for k, e, w in [
          ("pt_missing", "no such weights file", "`--weights` `.pt` that does not exist"),
          ("pt_empty", "not a readable PyTorch weights file", "empty `.pt`"),
          ("pt_truncated", "not a readable PyTorch weights file", "truncated `.pt`"),
          ("pt_header_flipped", "not a readable PyTorch weights file", "`.pt` with its header bytes inverted"),
          ("pt_weights_flipped", "differs from its manifest", "`.pt` with 64 weight bytes inverted, manifest beside it"),
          ("pt_tensors_flipped", "do not match the checksum saved with them", "toolkit `.pt` with 8 tensor bytes inverted (no manifest)"),
          ("h5_missing", "no such weights file", "`--weights` `.h5` that does not exist"),
          ("h5_empty", "not an HDF5 file", "empty `.h5`"),
          ("h5_truncated", "not a readable HDF5 file", "truncated `.h5`"),
          ("h5_header_flipped", "not an HDF5 file", "`.h5` with its header bytes inverted"),
      ]],
    # image folders -----------------------------------------------------------------------------------------
    Case("calibration_missing", "converters.tflite", ("--int8", "--calibration", "{folder_missing}", "--output", "{out}"),
         "does not exist", "`--calibration` folder that does not exist"),
    Case("calibration_no_images", "converters.tflite", ("--int8", "--calibration", "{folder_no_images}", "--output",
                                                        "{out}"), "holds no images", "`--calibration` folder with no images"),
    Case("calibration_unreadable", "converters.tflite", ("--int8", "--calibration", "{folder_unreadable}", "--output",
                                                         "{out}"), "could be read",
         "`--calibration` folder whose images are all unreadable (empty, not a JPEG, truncated)"),
    Case("accuracy_no_images", "benchmarks.accuracy", ("--data", "{folder_no_images}", "--quiet"), "",
         "`--data` folder with no class folders or images"),
    Case("accuracy_unreadable", "benchmarks.accuracy", ("--data", "{folder_unreadable}", "--quiet"), "could be read",
         "`--data` folder whose images are all unreadable"),
    Case("train_unreadable", "edge.train", ("--data", "{folder_unreadable}", "--output", "{out}"), "",
         "`--data` folder without train/ and val/"),
    Case("demo_no_images", "edge.demo", ("--source", "{folder_no_images}", "--headless"), "",
         "demo `--source` folder with no images"),
    Case("demo_corrupt_video", "edge.demo", ("--source", "{video_corrupt}", "--headless"), "cannot open",
         "demo `--source` video that does not open"),
    # options -------------------------------------------------------------------------------------------------
    Case("crop_fraction_out_of_range", "converters.tflite", ("--precision", "fp32", "--crop-fraction", "1.5",
                                                             "--output", "{out}"),
         "--crop-fraction 1.5: give the share of the shorter side", "converter `--crop-fraction` outside 0.25-1"),
    # outputs -------------------------------------------------------------------------------------------------
    Case("output_is_a_file", "converters.tflite", ("--int8", "--output", "{output_is_a_file}"),
         "cannot create output folder", "converter `--output` that is a file"),
    Case("output_read_only", "converters.tflite", ("--int8", "--output", "{read_only}/out"), "",
         "converter `--output` inside a read-only folder"),
    Case("accuracy_json_read_only", "benchmarks.accuracy", ("--data", "{data}", "--json", "{read_only}/a.json",
                                                           "--quiet"), "", "accuracy `--json` in a read-only folder"),
    Case("disk_full_accuracy", "benchmarks.accuracy", ("--data", "{data}", "--json", "{full}/acc.json", "--quiet"),
         "no space left on the device", "accuracy `--json` on a full disk"),
    Case("disk_full_training", "edge.train", ("--data", "{tiny}", "--output", "{full}/run", "--epochs", "1",
                                               "--image-size", "64", "--batch-size", "4", "--quiet"),
         "no space left on the device", "training `--output` on a full disk (the first checkpoint cannot be written)"),
]


@contextlib.contextmanager
def read_only_folder(tmp: Path):
    """A folder nobody may write to: a read-only tmpfs as root (permission bits do not stop root), else 0o555."""
    d = tmp / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], check=True)
        try:
            yield d
        finally:
            subprocess.run(["umount", str(d)], check=False)
    else:
        d.chmod(0o555)
        try:
            yield d
        finally:
            d.chmod(0o755)


@contextlib.contextmanager
def full_disk(tmp: Path, size: str = "256k"):
    """A file system with no space left: a small tmpfs filled up, so the first block any command writes fails."""
    d = tmp / "full"
    d.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a size-limited file system needs root (mount -t tmpfs); CI runs as root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], check=True)
    try:
        with contextlib.suppress(OSError), open(d / ".filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


def run_main(module: str, argv: list[str], capfd) -> tuple[int, str]:
    capfd.readouterr()
    rc = importlib.import_module(module).main(argv)
    err = capfd.readouterr().err
    return rc, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line_and_leaves_nothing(case, bad, tmp_path, capfd):
    data = class_folders(tmp_path / "data", {"val": ("samples", 1)}, shipped_classes()[:2]) / "val"
    out = tmp_path / "out"
    with contextlib.ExitStack() as stack:
        tiny = class_folders(tmp_path / "tiny", {"train": ("calibration", 2), "val": ("validation", 1)},
                             shipped_classes()[:2])
        paths = {**{k: str(v) for k, v in bad.items()}, "data": str(data), "out": str(out), "tiny": str(tiny)}
        if "{read_only}" in " ".join(case.args):
            paths["read_only"] = str(stack.enter_context(read_only_folder(tmp_path)))
        if "{full}" in " ".join(case.args):
            paths["full"] = str(stack.enter_context(full_disk(tmp_path)))
        argv = [a.format(**paths) for a in case.args]
        rc, err = run_main(case.command, argv, capfd)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        _MESSAGES[case.id] = (rc, lines[-1] if lines else "")
        assert rc == case.status, (rc, err[-3000:])
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err[-3000:]
        assert case.expect in lines[0], lines[0]
        # nothing partial: no temporary file, no artifact without its manifest
        for folder in (out, Path(paths.get("full", out)), Path(paths.get("full", out)) / "run"):
            if folder.is_dir():
                left = sorted(p.name for p in folder.iterdir())
                assert not [n for n in left if n.endswith((".tmp", ".tflite", ".pte", ".pt", ".json"))], left


def test_grayscale_png_and_cmyk_jpeg_are_read_as_rgb_photos(tmp_path):
    """Not errors: a grayscale PNG and a CMYK JPEG are photos too; both are converted to RGB and used."""
    from PIL import Image

    from converters.common import load_images
    from edge.model.config import Preprocessing

    src = shipped_photos("samples")[0]
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.open(src).convert("L").save(folder / "gray.png")
    Image.open(src).convert("CMYK").save(folder / "cmyk.jpg")
    shutil.copy(src, folder / "rgb.jpg")
    images = load_images(folder, Preprocessing())
    assert images.batch.shape == (3, 224, 224, 3) and not images.skipped
    by_name = dict(zip((f.name for f in images.files), images.batch))
    # the CMYK photo is the RGB one up to JPEG loss; the grayscale one has equal channels
    assert np.abs(by_name["cmyk.jpg"] - by_name["rgb.jpg"]).mean() < 0.05
    gray = by_name["gray.png"]
    assert np.allclose(gray[..., 0], gray[..., 1]) and np.allclose(gray[..., 1], gray[..., 2])
    _MESSAGES["grayscale_and_cmyk"] = (0, "accepted: converted to RGB and used (no message)")


@pytest.mark.slow
def test_ctrl_c_during_conversion_leaves_nothing_partial(tmp_path):
    """SIGINT while the converted model is being validated (its temporary file exists): exit 130, no file."""
    from conftest import small_nasnet
    from edge.model.weights import save_toolkit_weights

    _, model = small_nasnet(num_classes=10)
    save_toolkit_weights(tmp_path / "small.pt", model)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "converters.tflite", "--precision", "fp32", "--weights",
                             str(tmp_path / "small.pt"), "--output", str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list(out.glob(".*.tmp")):
        time.sleep(0.005)
    assert proc.poll() is None, "the conversion ended before its temporary file was seen"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted"
    assert sorted(p.name for p in out.iterdir()) == []
    _MESSAGES["ctrl_c"] = (130, "interrupted")


def test_the_bad_input_table_in_docs_lists_every_case():
    if os.environ.get("NASNET_WRITE_BAD_INPUTS_DOC"):
        pytest.skip("writing the table (see the end of this module)")
    text = DOC.read_text()
    for c in CASES:
        assert f"`{c.id}`" in text, f"{c.id} missing from {DOC}: regenerate it (see tests/test_bad_inputs.py)"


def pytest_sessionfinish_write_doc() -> None:
    import re

    rows = ["| case | command | input | exit | what the user sees (temporary folders shortened to `.../`) |",
            "|---|---|---|---|---|"]
    for c in CASES:
        rc, msg = _MESSAGES.get(c.id, (None, ""))
        msg = re.sub(r"/\S*?/pytest-of-[^/]+/pytest-\d+/[^/ ]+/", ".../", msg).replace("|", "/")
        rows.append(f"| `{c.id}` | `python -m {c.command}` | {c.what} | {rc} | {msg} |")
    for key, what in (("grayscale_and_cmyk", "grayscale PNG and CMYK JPEG among the photos"),
                      ("ctrl_c", "Ctrl-C while the converter validates its model")):
        rc, msg = _MESSAGES.get(key, (None, ""))
        rows.append(f"| `{key}` | | {what} | {rc} | {msg} |")
    DOC.write_text(DOC_HEAD + "\n".join(rows) + "\n")


DOC_HEAD = """# Bad input: what each command says

Every row was produced by `tests/test_bad_inputs.py` (regenerate with
`NASNET_WRITE_BAD_INPUTS_DOC=1 python -m pytest -q tests/test_bad_inputs.py`), which asserts for each one: the
exit status, exactly one line on stderr that starts with `error:` and no traceback, the phrase the line must
contain, and that no temporary file or artifact is left in the output folder. Errors that come from the
toolkit's own checks are `edge.errors.UserError`s; anything else is a bug and prints its traceback with a
line asking for a report (exit 1).

Damaged files are caught in three ways: the runtime's own checks (LiteRT's flatbuffer verifier, HDF5,
torch.load); the sha256 and size that the manifest beside every written artifact records
(`edge/artifact/integrity.py`: bytes flipped inside a weights region still load, and only the checksum can tell);
and for toolkit `.pt` files without a manifest, the checksum of the tensors saved inside the file. A `.pte`
without a manifest is first loaded in a child process, because a damaged program can abort the ExecuTorch
runtime (see `edge/artifact/integrity.py`). A user's own `.h5` with flipped weight bytes and no manifest loads: HDF5
keeps no checksum of its datasets.

"""


@pytest.fixture(scope="module", autouse=True)
def _write_doc_at_the_end():
    yield
    if os.environ.get("NASNET_WRITE_BAD_INPUTS_DOC"):
        pytest_sessionfinish_write_doc()


def test_bugs_keep_their_traceback_and_user_errors_are_one_line(capsys):
    """Only the toolkit's own error types (and OS errors about the user's files) are one-line user errors: a
    plain ValueError or KeyError from inside the toolkit is a bug and must show where it happened."""
    import errno

    from edge.cli import REPORT_LINE, run_cli
    from edge.errors import UserError

    def raise_(e):
        def f():
            raise e
        return f

    for bug in (ValueError("operands could not be broadcast"), KeyError("stem_conv1"), RuntimeError("boom")):
        assert run_cli(raise_(bug)) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and err.strip().endswith(REPORT_LINE), err
    assert run_cli(raise_(UserError("x.h5: no such weights file"))) == 2
    assert capsys.readouterr().err == "error: x.h5: no such weights file\n"
    assert run_cli(raise_(OSError(errno.ENOSPC, "No space left on device", "/out/model.tflite"))) == 2
    assert capsys.readouterr().err == ("error: /out/model.tflite: no space left on the device; free some space or "
                                       "choose another --output\n")
    assert run_cli(raise_(OSError(errno.EIO, "Input/output error"))) == 1  # not the user's to fix: a traceback
    assert "Traceback" in capsys.readouterr().err


def test_help_says_each_default_once():
    """The converters' --help: argparse's defaults formatter appended "(default: X)" after help texts that name the
    default in words, and "(default: None)" where the default is decided later; each default is said once now."""
    import argparse
    import re

    from converters.executorch import build_parser as executorch_parser
    from converters.tflite import build_parser as tflite_parser
    from edge.cli import DefaultsHelpFormatter

    p = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    p.add_argument("--worded", type=int, default=200, help="images to use (default 200, or all there are)")
    p.add_argument("--plain", default="fp32", help="precision")
    p.add_argument("--later", default=None, help="decided later")
    text = re.sub(r"\s+", " ", p.format_help())
    assert "(default 200, or all there are)" in text and "(default: 200)" not in text
    assert "precision (default: fp32)" in text and "(default: None)" not in text
    for parser in (tflite_parser(), executorch_parser()):
        text = re.sub(r"\s+", " ", parser.format_help())
        assert "(default: None)" not in text and "are) (default: 200)" not in text
        assert "(default: fp32)" in text  # a default said nowhere else is still said
