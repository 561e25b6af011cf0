"""Pack a class-balanced Imagenette subset as WebP into one tar, small enough to travel to a lent GPU.

    python scripts/pack_imagenette_subset.py ../shared/data/imagenette .devdata/imagenette.tar

The default model v3's quantization-aware fine-tuning ran on an H200 whose working-tree transfer is
limited to 64 MiB; the full Imagenette train split (107 MB of JPEG) does not fit beside the repository.
This writes, per class, 520 train and 50 val images (a fixed, seeded choice), re-encoded as WebP quality
80 at their original 160 px (~5 KB each, 35 MB in all). Unpack with ``tar xf`` and pass the folder to
``python -m edge.train --data``.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def choose(src: Path, split: str, n_pick: int, n_keep: int) -> list[Path]:
    chosen = []
    for c in sorted(p.name for p in (src / split).iterdir() if p.is_dir()):
        files = sorted((src / split / c).iterdir())
        random.Random(c).shuffle(files)
        chosen += sorted(files[:n_pick], key=lambda f: f.stem)[:n_keep]
    return chosen


def encode(path: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "WEBP", quality=80)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="Imagenette folder with train/ and val/")
    p.add_argument("output", type=Path, help="the .tar to write")
    args = p.parse_args(argv)
    if not (args.source / "train").is_dir() or not (args.source / "val").is_dir():
        print(f"error: {args.source} needs train/ and val/ class folders", file=sys.stderr)
        return 2
    files = [("train", f) for f in choose(args.source, "train", 620, 520)]
    files += [("val", f) for f in choose(args.source, "val", 50, 50)]
    tmp = args.output.with_name(args.output.name + ".tmp")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as ex, tarfile.open(tmp, "w") as tar:
        for (split, f), data in zip(files, ex.map(encode, [f for _, f in files], chunksize=64)):
            info = tarfile.TarInfo(f"imagenette/{split}/{f.parent.name}/{f.stem}.webp")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(args.output)
    print(f"wrote {args.output}: {len(files)} images, {args.output.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
