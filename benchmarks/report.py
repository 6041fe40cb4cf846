"""The benchmark's report: targets as ratios between contenders, and markdown tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.contenders import WEIGHT_FORMS

if TYPE_CHECKING:
    from benchmarks.contenders import Settings


def _get(rows, name, key):
    row = rows.get(name)
    if not row or row.get("status") != "ok" or not isinstance(row.get(key), (int, float)):
        return None
    return row[key]


BEST = {"b1_ms": "b1_ms_min", "bn_ips": "bn_ips_best", "load_s": "load_s_min"}


FLOOR = "float32_floor"


def targets(rows: dict[str, dict], settings: Settings, floor: dict | None = None) -> list[dict]:
    """The speed targets as ratios from this run (None where a contender is missing).

    With ``floor`` (see ``compute_floor``) the HF target gets one more row: the ratio that a
    float32 model running at this machine's BLAS peak would reach, i.e. whether the target
    can be met at all here.
    """
    out = []
    if floor:
        rows = {**rows, FLOOR: {"status": "ok", "b1_ms": floor["b1_ms"],
                                "b1_ms_min": floor["b1_ms"], "bn_ips": floor["bn_ips"],
                                "bn_ips_best": floor["bn_ips"]}}

    def add(target, num, den, key, ok, inverse=False):
        if num not in rows or den not in rows:  # not selected in this run
            return

        def ratio(k):
            a, b = _get(rows, num, k), _get(rows, den, k)
            return None if a is None or b is None else (b / a if inverse else a / b)

        r = ratio(key)
        best = ratio(BEST[key])  # the same ratio from each side's fastest sample
        out.append({"target": target, "ours": num, "other": den, "ratio": r,
                    "ratio_best": best, "pass": None if r is None else bool(ok(r))})

    n = settings.batch
    # Same path on both sides, then our fastest exact path (a candidate default) vs their
    # default predict.
    for ours, app in (("ours_predict", "app_predict"), ("ours_tf_function", "app_tf_function"),
                      ("ours_predict_on_batch_folded", "app_predict")):
        add(f"Keras batch-{n} throughput >= 1.0x keras.applications", ours, app, "bn_ips",
            lambda r: r >= 1.0)
    # The batch-1 ">= 5x HF" target is gone: the float32 floor itself is about 3x HF there.
    # Against HF, the folder benchmark (benchmarks/folder.py) now compares what users run.
    for ours in ("ours_predict", "ours_tf_function", "ours_predict_on_batch_folded",
                 "ours_tflite_float32_t2", FLOOR):
        add(f"batch-{n} throughput >= 5x HF tf_padding=True", ours, "hf_torch_tfpad",
            "bn_ips", lambda r: r >= 5.0)
    for t in (1, 2):
        add(f"TFLite float32 batch-1 latency <= 1.05x keras.applications' ({t} thr)",
            f"ours_tflite_float32_t{t}", f"app_tflite_float32_t{t}", "b1_ms",
            lambda r: r <= 1.05)
    if "cli_predict_fast" in rows:
        cli = _get(rows, "cli_predict_fast", "load_s")
        out.append({"target": "CLI predict IMAGE, new process, cached TFLite model <= 1.0 s",
                    "ours": "cli_predict_fast", "other": None, "ratio": cli,
                    "ratio_best": _get(rows, "cli_predict_fast", "load_s_min"),
                    "pass": None if cli is None else cli <= 1.0})
    for form in WEIGHT_FORMS:  # issue 31: every local weight form on the cached fast path
        add(f"CLI predict IMAGE, warm, {form} weights <= 0.5x import tensorflow",
            f"cli_predict_{form}", "import_tensorflow_alone", "load_s", lambda r: r <= 0.5)
    if "load_slim_ckpt" not in rows:
        return out
    load = _get(rows, "load_slim_ckpt", "load_s")
    out.append({"target": "slim checkpoint -> Keras load < 1 s (warm process)",
                "ours": "load_slim_ckpt", "other": None, "ratio": load,
                "ratio_best": _get(rows, "load_slim_ckpt", "load_s_min"),
                "pass": None if load is None else load < 1.0})
    return out


def _fmt(v, spec=".1f"):
    return format(v, spec) if isinstance(v, (int, float)) else ("n/a" if v is None else str(v))


def format_report(result: dict) -> str:
    """Markdown tables: inference, load/export, targets."""
    s = result["settings"]
    rows = result["rows"]
    lines = [f"MobileNet V1 {s['depth_multiplier']}_{s['image_size']} float32, batch-1 latency "
             f"and batch-{s['batch']} throughput; medians over {s['rounds']} interleaved rounds",
             "",
             f"| contender | what | batch-1 ms (p25-p75) | batch-1 min ms "
             f"| batch-{s['batch']} img/s | peak RSS MiB | max abs diff vs ours | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["group"] in ("load", "export"):
            continue
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['what']} | {r['status']} | | | | | |")
            continue
        b1 = f"{_fmt(r.get('b1_ms'))} ({_fmt(r.get('b1_ms_p25'))}-{_fmt(r.get('b1_ms_p75'))})"
        diff = _fmt(r.get("max_abs_diff"), ".1e") if "max_abs_diff" in r else "-"
        lines.append(f"| {r['name']} | {r['what']} | {b1} | {_fmt(r.get('b1_ms_min'))} | "
                     f"{_fmt(r.get('bn_ips'))} | {_fmt(r.get('rss_mb'))} | {diff} | "
                     f"{r.get('note', '')} |")
    lines += ["", "| load / export | what | median s | min s | peak RSS MiB | note |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        if r["group"] not in ("load", "export"):
            continue
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['what']} | {r['status']} | | | |")
            continue
        lines.append(f"| {r['name']} | {r['what']} | {_fmt(r.get('load_s'), '.3f')} | "
                     f"{_fmt(r.get('load_s_min'), '.3f')} | {_fmt(r.get('rss_mb'))} | "
                     f"{r.get('note', '')} |")
    floor = result.get("floor")
    if floor:
        lines += ["", f"float32 compute floor: {floor['macs']:,} MACs at this machine's "
                  f"{floor['peak_gflops']:.0f} GFLOP/s float32 matrix-product peak = "
                  f"{floor['b1_ms']:.2f} ms an image ({floor['bn_ips']:.0f} img/s); "
                  f"row {FLOOR} below"]
    lines += ["", "| target | ours | other | value (medians) | met | value (best samples) |",
              "|---|---|---|---|---|---|"]
    for t in result["targets"]:
        met = {True: "yes", False: "NO", None: "n/a"}[t["pass"]]
        lines.append(f"| {t['target']} | {t['ours']} | {t['other'] or '-'} | "
                     f"{_fmt(t['ratio'], '.2f')} | {met} | {_fmt(t['ratio_best'], '.2f')} |")
    return "\n".join(lines)
