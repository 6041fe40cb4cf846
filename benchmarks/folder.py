"""Folder throughput: ``mobilenet-v1 predict DIR`` against the Beam pipeline on the DirectRunner.

Usage::

    python benchmarks/folder.py                # 200 images, 1.0_224 bundled weights
    python benchmarks/folder.py --images 500 --repeats 3

Each command runs end to end in a new process (TensorFlow import, weights load, decode,
preprocess, classify, write), as a user runs it, over the same folder of JPEG copies of the
fixture photos; the figure is images per second of wall time, best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "fixtures" / "images"


def make_folder(root: Path, count: int) -> Path:
    """``count`` JPEGs cycled from the fixture photos (re-encoded, so every file decodes)."""
    from PIL import Image

    folder = root / "images"
    folder.mkdir()
    sources = sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".bmp"))
    images = [Image.open(p).convert("RGB") for p in sources]
    for i in range(count):
        images[i % len(images)].save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def commands(folder: Path, out: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "tf_mobilenet_v1"]
    beam = [*cli, "beam", "--input", str(folder / "*.jpg")]
    return {
        "predict DIR --jsonl": [*cli, "predict", str(folder), "--jsonl"],
        "beam, DirectRunner (in memory)": [*beam, "--output", str(out / "mem" / "p")],
        "beam, DirectRunner multi_processing x2": [
            *beam, "--output", str(out / "mp" / "p"), "--direct_running_mode=multi_processing",
            "--direct_num_workers=2"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mobilenet_folder_"))
    try:
        folder = make_folder(tmp, args.images)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        print(f"{args.images} JPEG images, bundled mobilenet_v1_1.0_224, {os.cpu_count()} cores")
        print("| command | wall s (best) | images/s |\n|---|---|---|")
        for name, cmd in commands(folder, tmp / "out").items():
            best = float("inf")
            for _ in range(args.repeats):
                shutil.rmtree(tmp / "out", ignore_errors=True)
                start = time.perf_counter()
                run = subprocess.run(cmd, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - start
                if run.returncode != 0:
                    print(f"| {name} | failed: {run.stderr.strip().splitlines()[-1]} | |")
                    break
                best = min(best, wall)
            else:
                print(f"| {name} | {best:.1f} | {args.images / best:.1f} |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
