"""Benchmark MobileNet V1: our Keras model against keras.applications, Hugging Face and TFLite.

Usage::

    python benchmarks/run.py                 # full run, 1.0_224 float32 (about 10 minutes)
    python benchmarks/run.py --quick         # smoke run: same model, few iterations
    python benchmarks/run.py --contenders 'ours_*,app_*' --json results.json

Method (the machines are shared and noisy, so only ratios within one run mean anything):

* Timing: every contender is set up once in THIS process, warmed up, then measured in rounds;
  each round visits every contender (in a rotated order) for a few batch-1 calls and a few
  batch-N calls, so all contenders see the same time window and the same background load.
  Figures are medians over all rounds. Load paths and exports are timed the same way, one call
  per round, after one untimed warm-up call (a "warm process": TensorFlow already imported).
* Peak RSS: measured per contender in a fresh child process that sets up only that contender
  and runs it a few times (its ``VmHWM``, or ``ru_maxrss`` of a process it ran itself, the
  CLI's). Children run one at a time after the timing rounds, so they do not disturb the
  timings. Files that a contender
  needs (checkpoints, .tflite models) are written by the parent first, so a TFLite child never
  imports TensorFlow.

Each contender imports what it needs lazily: a missing optional package or project module only
turns its row into ``n/a: reason``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages sit one level up
    sys.path.insert(0, str(ROOT))

from benchmarks.contenders import CONTENDERS, QUICK, Settings  # noqa: E402
from benchmarks.harness import RSS_MARK, rss_child, run_benchmarks, select  # noqa: E402
from benchmarks.report import FLOOR, format_report, targets  # noqa: E402

__all__ = ["CONTENDERS", "FLOOR", "QUICK", "Settings", "format_report", "main",
           "run_benchmarks", "select", "targets"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few rounds and iterations")
    p.add_argument("--contenders", default=None,
                   help="comma-separated glob patterns, e.g. 'ours_*,app_*' (default all)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write results as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--list", action="store_true", help="list the contenders and exit")
    p.add_argument("--no-rss", action="store_true", help="skip the per-contender RSS children")
    p.add_argument("--depth-multiplier", type=float, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--workdir", default=None, help="artifact folder (default: a temp dir)")
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--settings-json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices etc.
    if args.rss_child:
        settings = Settings(**json.loads(args.settings_json))
        print(RSS_MARK + json.dumps(rss_child(args.rss_child, settings, args.workdir)),
              flush=True)
        return 0
    if args.list:
        for c in CONTENDERS.values():
            print(f"{c.name:28s} {c.group:7s} {c.what}")
        return 0

    settings = Settings(**(QUICK if args.quick else {}))
    for field, value in (("depth_multiplier", args.depth_multiplier),
                         ("image_size", args.image_size), ("batch", args.batch_size),
                         ("rounds", args.rounds)):
        if value is not None:
            setattr(settings, field, value)
    if args.json:
        from tf_mobilenet_v1.fileio import check_writable

        check_writable(args.json, args.force)  # fail now, not after a 15-minute run
    names = select(args.contenders)
    workdir = args.workdir or tempfile.mkdtemp(prefix="mobilenet_bench_")
    os.makedirs(workdir, exist_ok=True)
    try:
        log = functools.partial(print, file=sys.stderr, flush=True)
        result = run_benchmarks(settings, names, workdir, rss=not args.no_rss, log=log)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    m = result["machine"]
    print(f"{result['date']}  {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
          f"load average at end {m['load_avg']}")
    print(", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    print()
    print(format_report(result))
    if args.json:
        from tf_mobilenet_v1.fileio import atomic_output

        with atomic_output(args.json, force=args.force, suffix=".json") as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1) + "\n")
    return 0



if __name__ == "__main__":
    sys.exit(main())
