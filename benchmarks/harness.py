"""The benchmark's harness: interleaved timing rounds, the float32 floor, per-child peak RSS."""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Collection
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.contenders import CONTENDERS, ROOT, Context, Settings, Unavailable
from benchmarks.report import targets
from tf_mobilenet_v1.errors import first_line

RUN_PY = Path(__file__).resolve().with_name("run.py")
RSS_MARK = "BENCH_RSS_RESULT "


def select(patterns: str | None) -> list[str]:
    """Contender names matching comma-separated glob patterns (all when empty)."""
    if not patterns:
        return list(CONTENDERS)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    names = [n for n in CONTENDERS if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if not names:
        raise ValueError(f"no contender matches {patterns!r}; see --list")
    return names


def _why(e: BaseException) -> str:
    msg = first_line(e)
    return msg if isinstance(e, Unavailable) else f"{type(e).__name__}: {msg}"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compute_floor(settings: Settings, size: int = 2048, repeats: int = 7) -> dict:
    """The float32 speed limit of this machine for the benchmarked model.

    Peak = the best of ``repeats`` float32 ``size``-square matrix products through numpy's
    BLAS (all cores); floor = the model's 2 x MACs at that rate. No float32 implementation on
    this machine can beat it by much: 1x1 convolutions, 95% of the MACs, are matrix products.
    """
    from tf_mobilenet_v1.architecture import count_macs, layer_specs

    rng = np.random.default_rng(settings.seed)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    a @ b  # BLAS thread pool up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    peak = 2 * size**3 / best / 1e9
    macs = count_macs(layer_specs(depth_multiplier=settings.depth_multiplier), settings.image_size,
                      num_labels=1001)
    floor_ms = 2 * macs / (peak * 1e9) * 1000
    return {"peak_gflops": peak, "macs": macs, "b1_ms": floor_ms,
            "bn_ips": 1000 / floor_ms}


def run_benchmarks(settings: Settings, names: list[str], workdir: str | os.PathLike,
                   rss: bool | Collection[str] = True,
                   log: Callable[[str], None] = print) -> dict:
    """Set up, warm up and time the named contenders in interleaved rounds; return results.

    ``rss``: measure peak RSS in a child process for every contender (True), none (False) or
    the named ones.
    """
    ctx = Context(settings, workdir)
    rows: dict[str, dict] = {}
    live: dict[str, dict] = {}
    floor = compute_floor(settings)
    log(f"float32 peak {floor['peak_gflops']:.0f} GFLOP/s: floor {floor['b1_ms']:.2f} ms an image")
    for name in names:
        c = CONTENDERS[name]
        row = rows[name] = {"name": name, "group": c.group, "what": c.what, "status": "ok"}
        t0 = time.perf_counter()
        try:
            runner = c.setup(ctx)
            calls = {}
            if runner.make is not None:
                calls = {"b1": runner.make(ctx.x1), "bn": runner.make(ctx.xn)}
                for _ in range(max(settings.warmup, 1)):
                    out1 = calls["b1"]()
                    calls["bn"]()
                if runner.same_weights:
                    ref = ctx.reference()
                    row["max_abs_diff"] = float(np.max(np.abs(
                        np.asarray(out1, np.float32).reshape(ref.shape) - ref)))
            else:
                runner.load()  # warm-up call (first load / compile caches)
            row["note"] = runner.note
            live[name] = {"runner": runner, "calls": calls, "b1": [], "bn": [], "load": []}
        except Exception as e:  # noqa: BLE001 - one broken contender must not stop the run
            row["status"] = f"n/a: {_why(e)}"
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
        row["setup_s"] = time.perf_counter() - t0
        log(f"setup {name}: {row['status']} ({row['setup_s']:.1f} s)")

    order = list(live)
    for r in range(settings.rounds):
        t_round = time.perf_counter()
        shift = r % max(len(order), 1)
        for name in order[shift:] + order[:shift]:
            item, c = live[name], CONTENDERS[name]
            if r >= (settings.slow_rounds if c.slow else settings.rounds) \
                    or rows[name]["status"] != "ok":
                continue
            try:
                if item["calls"]:
                    item["calls"]["b1"]()  # untimed: caches and thread pools back to warm
                    item["b1"] += [_timed(item["calls"]["b1"]) for _ in range(settings.iters_b1)]
                    item["bn"] += [_timed(item["calls"]["bn"]) for _ in range(settings.iters_bn)]
                else:
                    item["load"].append(_timed(item["runner"].load))
            except Exception as e:  # noqa: BLE001
                rows[name]["status"] = f"n/a: failed while timing: {_why(e)}"
        log(f"round {r + 1}/{settings.rounds} done ({time.perf_counter() - t_round:.1f} s)")

    for name, item in live.items():
        row = rows[name]
        if not row["status"].startswith("ok"):
            continue
        if item["b1"]:
            row["b1_ms"] = 1000 * statistics.median(item["b1"])
            row["b1_ms_p25"], row["b1_ms_p75"] = (1000 * float(v) for v in
                                                  np.percentile(item["b1"], [25, 75]))
            row["b1_ms_min"] = 1000 * min(item["b1"])
            row["bn_ms"] = 1000 * statistics.median(item["bn"])
            row["bn_ips"] = settings.batch / statistics.median(item["bn"])
            row["bn_ips_best"] = settings.batch / min(item["bn"])
        if item["load"]:
            row["load_s"] = statistics.median(item["load"])
            row["load_s_min"] = min(item["load"])
        row["samples"] = {k: item[k] for k in ("b1", "bn", "load") if item[k]}

    end = compute_floor(settings)  # a second reading: the peak is the higher of the two
    if end["peak_gflops"] > floor["peak_gflops"]:
        floor = end

    if rss:
        for name in live:
            if rows[name]["status"] == "ok" and (rss is True or name in rss):
                rows[name]["rss_mb"] = _child_rss(name, settings, workdir, log)
    return {"settings": dataclasses.asdict(settings), "rows": list(rows.values()),
            "floor": floor, "targets": targets(rows, settings, floor), "machine": machine_info(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _child_rss(name: str, settings: Settings, workdir, log) -> float | str:
    """Peak RSS (MiB) of a fresh process that sets up and runs only ``name``."""
    cmd = [sys.executable, str(RUN_PY), "--rss-child", name,
           "--workdir", str(workdir), "--settings-json", json.dumps(dataclasses.asdict(settings))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(RSS_MARK):
            value = json.loads(line[len(RSS_MARK):])
            log(f"rss {name}: {value}")
            return value
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    log(f"rss {name}: child failed: {tail}")
    return f"n/a: child exited {proc.returncode}: {tail[:200]}"


def rss_child(name: str, settings: Settings, workdir) -> float:
    """Body of the RSS child: set up one contender, run it a few times, return peak MiB."""
    ctx = Context(settings, workdir)
    runner = CONTENDERS[name].setup(ctx)
    for _ in range(2):
        if runner.make is not None:
            runner.make(ctx.x1)()
            runner.make(ctx.xn)()
        else:
            runner.load()
    # Not RUSAGE_SELF: Linux carries ru_maxrss over fork + exec, so this child would report
    # the (large) benchmark parent's peak. VmHWM belongs to this process's own address space.
    # RUSAGE_CHILDREN covers a process this one ran (the CLI), forked from this small one.
    peak_kib = max(_vm_hwm_kib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(peak_kib / 1024, 1)


def _vm_hwm_kib() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):  # not Linux: the best available figure
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def machine_info() -> dict:
    """CPU model, cores, RAM and package versions (read without importing the packages)."""
    cpu = platform.processor() or platform.machine()
    mem_gib = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
        with open("/proc/meminfo") as f:
            kib = next(int(ln.split()[1]) for ln in f if ln.startswith("MemTotal"))
            mem_gib = round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    versions = {}
    for pkg in ("tensorflow", "keras", "numpy", "torch", "transformers", "ai-edge-litert"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": mem_gib,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "versions": versions}
