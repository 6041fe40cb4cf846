"""Folder throughput: ``mobilenet-v1 predict DIR`` against what a user would run instead.

Usage::

    python benchmarks/folder.py                      # 500 JPEGs, 1.0_224 bundled weights
    python benchmarks/folder.py --images 200 --repeats 3 --only ours_fast,hf_pipeline
    python benchmarks/folder.py --with-beam          # also the Beam DirectRunner commands

Every contender runs end to end in a new process over the same folder of JPEG copies of the
fixture photos, with the same (bundled) weights: imports, weights load, decode, preprocess,
classify, write one JSON line an image. The figure is images per second of wall time, best of
``--repeats`` (``--repeats-slow`` for the slow ones; rounds interleaved), and the process's
peak RSS (``wait4`` in a small wrapper process). Contenders:

* ``ours_fast``: ``mobilenet-v1 predict DIR --jsonl``, default settings: the cached float32
  TFLite model (built by an untimed first run into a temporary cache), no TensorFlow import.
* ``ours_fast_decode``: the same with ``--fast-decode`` (JPEGs decoded at a reduced scale).
* ``ours_keras``: the same with ``--no-fast`` (the Keras model, TensorFlow imported).
* ``hf_pipeline``: ``transformers.pipeline("image-classification", model=<dir>)`` over the
  file paths (PyTorch, its own processor; the default call, batch 1), the directory being what
  ``mobilenet-v1 convert mobilenet_v1_1.0_224 DIR/`` writes (no network).
* ``keras_app``: ``keras.applications.MobileNet(weights=<our weights as an .h5 file>,
  classes=1001)`` with its own preprocessing (``keras.utils.load_img(target_size=(224, 224))``,
  ``mobilenet.preprocess_input``), ``predict`` in batches of 32.
* ``onnxruntime``: our ONNX export (``converters.onnx_export``, tf2onnx) run by onnxruntime,
  batches of 32, pixels from our numpy processor; unavailable without ``tf2onnx`` /
  ``onnxruntime`` (``pip install ".[onnx]"`` in the checkout).

The float32 compute floor (``harness.compute_floor``) is measured in this process before and
after the runs (the higher peak wins); ``ours_fast`` is also run on the first fifth of the
folder, to show that its memory does not grow with the number of images, and its parts are
timed apart (``child_breakdown``): process start with one image, decode + preprocess on one
core, the model alone on every core. Their sum is the ceiling of the end-to-end rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages sit one level up
    sys.path.insert(0, str(ROOT))
PHOTOS = ROOT.parent / "shared" / "fixtures" / "images"
ONNX_HINT = "pip install '.[onnx]' in the checkout (tf2onnx, onnx, onnxruntime)"
CONTENDERS = ("ours_fast", "ours_fast_decode", "ours_keras", "hf_pipeline", "keras_app",
              "onnxruntime")
BEAM = ("beam_direct", "beam_direct_mp")
SLOW = ("ours_keras", "hf_pipeline", "keras_app", *BEAM)  # tens of seconds a run
TARGETS = (  # (ours, other, {photo class: minimum ratio of images/s}; absent: report only)
    ("ours_fast", "hf_pipeline", {"small": 5.0, "12mp": 3.0}),
    ("ours_fast", "keras_app", {}),
    ("ours_fast", "onnxruntime", {"small": 1.0, "12mp": 1.0}),
    ("ours_fast", "ours_keras", {}),
    ("ours_fast_decode", "ours_fast", {"12mp": 3.0}))
MODEL_FRACTION = 0.72  # small photos: end to end against the model alone, same run
CEILING_FRACTION = 0.85  # 12 MP: end to end against its own sum of parts
RSS_GROWTH = 1.1  # peak RSS at all the images against a fifth of them


def make_folder(root: Path, count: int, photo: str = "small") -> Path:
    """``count`` JPEGs cycled from the fixture photos (re-encoded, so every file decodes):
    ``small`` as they are (480-512 px, 41-93 KB), ``12mp`` as phone photos (4000 x 3000,
    upscaled with sensor-like noise so that each file holds 3-5 MB)."""
    from PIL import Image

    folder = root / "images"
    folder.mkdir()
    images = [Image.open(p).convert("RGB") for p in fixture_photos()]
    if photo == "12mp":
        images = [phone_photo(im, seed=i) for i, im in enumerate(images)]
    for i in range(count):
        images[i % len(images)].save(folder / f"{i:05d}.jpg",
                                     quality=92 if photo == "12mp" else 90)
    return folder


def fixture_photos() -> list[Path]:
    """The real photos of the fixtures (a JPEG and three BMPs, 480-512 px)."""
    return sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".bmp"))


def phone_photo(im, size: tuple[int, int] = (4000, 3000), seed: int = 0, noise: int = 12):
    """``im`` (RGB) upscaled to ``size`` (bicubic), plus uniform noise of +-``noise`` levels
    where a phone's sensor has grain: a 12 MP JPEG of it at quality 92 holds 3-5 MB."""
    import numpy as np
    from PIL import Image

    a = np.asarray(im.resize(size, Image.Resampling.BICUBIC), np.int16)
    if noise:
        a = a + np.random.default_rng(seed).integers(-noise, noise + 1, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def bundled_dir() -> str:
    from tf_mobilenet_v1 import registry

    path = registry.bundled_path("mobilenet_v1_1.0_224")
    if path is None:
        raise RuntimeError("the bundled mobilenet_v1_1.0_224 weights are missing")
    return path


# ------------------------------------------------------------------------ child processes
def _paths(folder: str) -> list[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".jpg"))


def _write(out, path, indices, scores):
    preds = [{"index": int(i), "score": float(s)} for i, s in zip(indices, scores, strict=True)]
    out.write(json.dumps({"image": path, "predictions": preds}) + "\n")


def _top5(probs):
    import numpy as np

    idx = np.argsort(-probs, kind="stable")[:5]
    return idx, probs[idx]


def child_hf_pipeline(folder: str, out, work: Path) -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    pipe = transformers.pipeline("image-classification", model=str(work / "hf"), device="cpu")
    label2id = pipe.model.config.label2id
    paths = _paths(folder)
    for path, preds in zip(paths, pipe(paths, top_k=5), strict=True):
        _write(out, path, [label2id[p["label"]] for p in preds], [p["score"] for p in preds])


def child_keras_app(folder: str, out, work: Path) -> None:
    import keras
    import numpy as np

    model = keras.applications.MobileNet(weights=str(work / "app.weights.h5"), classes=1001)
    paths = _paths(folder)
    for start in range(0, len(paths), 32):
        chunk = paths[start:start + 32]
        x = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, target_size=(224, 224)))
                      for p in chunk])
        probs = model.predict(keras.applications.mobilenet.preprocess_input(x), verbose=0)
        for path, row in zip(chunk, probs, strict=True):
            _write(out, path, *_top5(row))


def child_onnxruntime(folder: str, out, work: Path) -> None:
    import numpy as np
    import onnxruntime

    from tf_mobilenet_v1.preprocessing import MobileNetV1ImageProcessor

    session = onnxruntime.InferenceSession(str(work / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    processor = MobileNetV1ImageProcessor.from_pretrained(bundled_dir())
    paths = _paths(folder)
    for start in range(0, len(paths), 32):
        chunk = paths[start:start + 32]
        x = np.stack([processor.preprocess_one(p) for p in chunk])
        (probs,) = session.run(["probabilities"], {"pixel_values": x})
        for path, row in zip(chunk, probs, strict=True):
            _write(out, path, *_top5(row))


def child_breakdown(folder: str, out, work: Path) -> None:
    """Where ``ours_fast``'s time goes, in one process: decode + preprocess of an image on one
    thread, and the model alone run as ``predict`` runs it (one single-threaded interpreter a
    core, pixels ready), over the same images."""
    from tf_mobilenet_v1 import fast_predict
    from tf_mobilenet_v1.engines import cores
    from tf_mobilenet_v1.images import load_pixels
    from tf_mobilenet_v1.preprocessing import LookupProcessor

    engine = fast_predict.open_cached(bundled_dir(), "model")
    if engine is None:
        raise RuntimeError("no cached TFLite model (the untimed ours_fast run builds it)")
    paths = _paths(folder)[:100]
    processor = LookupProcessor(engine.processor)  # as predict.classify prepares pixels
    shape = (*processor.output_size(), 3)
    t0 = time.perf_counter()
    pixels = [load_pixels(p, processor, shape)[0] for p in paths]
    prep_ms = (time.perf_counter() - t0) / len(paths) * 1e3
    workers = cores()
    # The same decoding on every core at once: on a shared VM two decoders need not run at
    # twice one's rate (memory bandwidth, other tenants), and predict decodes on all of them.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda p: load_pixels(p, processor, shape), paths))
        prep_all_ips = len(paths) / (time.perf_counter() - t0)
    chunks = [pixels[i::workers] for i in range(workers)]

    ready, go = threading.Barrier(workers + 1), threading.Barrier(workers + 1)

    def work_on(chunk):
        engine.logits(chunk[0][None], threads=1)  # this thread's interpreter, warmed up
        ready.wait()
        go.wait()
        for x in chunk:
            engine.logits(x[None], threads=1)

    threads = [threading.Thread(target=work_on, args=(chunk,)) for chunk in chunks]
    for t in threads:
        t.start()
    ready.wait()  # every interpreter made before the clock starts
    t0 = time.perf_counter()
    go.wait()
    for t in threads:
        t.join()
    model_ips = len(pixels) / (time.perf_counter() - t0)
    out.write(json.dumps({"prep_ms": prep_ms, "prep_all_ips": prep_all_ips,
                          "model_ips": model_ips, "cores": workers}) + "\n")


def prepare(work: Path, names: list[str]) -> dict[str, str]:
    """Files the contenders need, made in a separate process (untimed); ``{name: why not}``
    for the contenders that cannot run here."""
    import importlib.util

    unavailable = {}
    if "onnxruntime" in names:
        missing = [m for m in ("tf2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            unavailable["onnxruntime"] = f"{', '.join(missing)} not installed: {ONNX_HINT}"
    if "hf_pipeline" in names:
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            unavailable["hf_pipeline"] = f"{', '.join(missing)} not installed (pip install " \
                                         "'.[interop]' in the checkout)"
    todo = [n for n in ("hf_pipeline", "keras_app", "onnxruntime")
            if n in names and n not in unavailable]
    if todo:
        proc = subprocess.run([sys.executable, __file__, "--prepare", ",".join(todo),
                               "--work", str(work)], capture_output=True, text=True,
                              env=_env(work), timeout=900)
        for name in todo:
            if proc.returncode != 0 or not (work / f"{name}.ready").exists():
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                unavailable[name] = f"preparing failed: {tail[:200]}"
    return unavailable


def _prepare_child(work: Path, names: list[str]) -> None:
    from tf_mobilenet_v1 import MobileNetV1ForImageClassification

    model = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    if "hf_pipeline" in names:  # what `mobilenet-v1 convert mobilenet_v1_1.0_224 hf/` writes
        from tf_mobilenet_v1.converters.convert import convert

        convert("mobilenet_v1_1.0_224", str(work / "hf") + os.sep, force=True)
        (work / "hf_pipeline.ready").touch()
    if "keras_app" in names:
        import keras

        # keras.applications' MobileNet has our layers in our order (1001 classes, ZeroPadding
        # + VALID where we pad SAME: the same arithmetic), so the weights carry over as a list.
        app = keras.applications.MobileNet(weights=None, classes=1001)
        app.set_weights(model.get_weights())
        app.save_weights(work / "app.weights.h5")
        (work / "keras_app.ready").touch()
    if "onnxruntime" in names:
        from tf_mobilenet_v1.converters.onnx_export import export_onnx

        export_onnx(model, str(work / "model.onnx"), force=True)
        (work / "onnxruntime.ready").touch()


# ------------------------------------------------------------------------ the parent
def _env(work: Path) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MOBILENET_V1_CACHE": str(work / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("MOBILENET_V1_FAST", None)
    return env


def command(name: str, folder: Path, work: Path) -> list[str]:
    cli = [sys.executable, "-m", "tf_mobilenet_v1"]
    beam = [*cli, "beam", "--input", str(folder / "*.jpg")]
    return {
        "ours_fast": [*cli, "predict", str(folder), "--jsonl"],
        "ours_fast_decode": [*cli, "predict", str(folder), "--jsonl", "--fast-decode"],
        "ours_keras": [*cli, "predict", str(folder), "--jsonl", "--no-fast"],
        "beam_direct": [*beam, "--output", str(work / "beam_mem" / "p")],
        "beam_direct_mp": [*beam, "--output", str(work / "beam_mp" / "p"),
                           "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    }.get(name) or [sys.executable, __file__, "--child", name, "--folder", str(folder),
                    "--work", str(work)]


# Runs the contender and reports its own wall time and peak RSS. A separate small process,
# because Linux carries ru_maxrss over fork + exec: a contender forked straight from a big
# parent (a test session with TensorFlow loaded) would report the parent's peak.
_WRAPPER = ("import os, subprocess, sys, time; t = time.perf_counter(); "
            "p = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(p.pid, 0); "
            "wall = time.perf_counter() - t; "
            "open(sys.argv[1], 'w').write(f'{wall} {usage.ru_maxrss}'); "
            "sys.exit(os.waitstatus_to_exitcode(status))")


def run_once(cmd: list[str], work: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one new process writing its stdout to ``out``."""
    report = work / "usage.txt"
    with open(out, "w") as stdout, open(work / "stderr.txt", "w") as stderr:
        proc = subprocess.run([sys.executable, "-c", _WRAPPER, str(report), *cmd],
                              stdout=stdout, stderr=stderr, env=_env(work), cwd=work)
    if proc.returncode != 0:
        tail = ((work / "stderr.txt").read_text().strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {proc.returncode}: {tail[:200]}")
    wall, maxrss_kib = report.read_text().split()
    return float(wall), int(maxrss_kib) / 1024


def read_results(path: Path) -> dict[str, list[tuple[int, float]]]:
    rows = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows[os.path.basename(r["image"])] = [(p["index"], p["score"]) for p in r["predictions"]]
    return rows


def compare(ours: dict, other: dict) -> dict:
    """Top-1 agreement, identical top-5 and the largest score difference over shared images."""
    common = sorted(set(ours) & set(other))
    top1 = sum(ours[k][0][0] == other[k][0][0] for k in common)
    top5 = sum([i for i, _ in ours[k]] == [i for i, _ in other[k]] for k in common)
    diff = max((abs(a[1] - b[1]) for k in common for a, b in zip(ours[k], other[k], strict=True)),
               default=None)
    return {"images": len(common), "top1_same": top1, "top5_same": top5, "max_score_diff": diff}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--photo", choices=("small", "12mp"), default="small",
                   help="the fixture photos as they are, or 4000 x 3000 phone-size JPEGs")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--repeats-slow", type=int, default=1,
                   help=f"repeats for the slow contenders ({', '.join(SLOW)})")
    p.add_argument("--only", default=None, help="comma-separated contenders (default all)")
    p.add_argument("--with-beam", action="store_true", help="also the Beam DirectRunner")
    p.add_argument("--json", default=None, metavar="OUT", help="also write results as JSON")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prepare", default=None, help=argparse.SUPPRESS)
    p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.prepare:
        _prepare_child(Path(args.work), args.prepare.split(","))
        return 0
    if args.child:
        children = {"hf_pipeline": child_hf_pipeline, "keras_app": child_keras_app,
                    "onnxruntime": child_onnxruntime, "breakdown": child_breakdown}
        children[args.child](args.folder, sys.stdout, Path(args.work))
        return 0
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CONTENDERS)
    names += list(BEAM) if args.with_beam else []
    unknown = set(names) - set(CONTENDERS) - set(BEAM)
    if unknown:
        p.error(f"unknown contenders {sorted(unknown)}; choose from {CONTENDERS + BEAM}")
    result = run(names, args.images, args.repeats, args.repeats_slow, photo=args.photo)
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def run(names: list[str], images: int, repeats: int, repeats_slow: int = 1, log=None,
        photo: str = "small") -> dict:
    """Time the contenders on a fresh folder of ``images`` JPEGs; return the results."""
    from benchmarks.contenders import Settings
    from benchmarks.harness import compute_floor, machine_info

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    work = Path(tempfile.mkdtemp(prefix="mobilenet_folder_"))
    rows: dict[str, dict] = {}
    try:
        folder = make_folder(work, images, photo)
        floor = compute_floor(Settings())
        unavailable = prepare(work, names)
        if "ours_fast" in names:  # untimed: builds the TFLite cache entry the timed runs read
            run_once(command("ours_fast", folder, work), work, work / "warmup.jsonl")
        outputs = {}
        for name in names:
            if name in unavailable:
                rows[name] = {"name": name, "status": f"n/a: {unavailable[name]}"}
                log(f"{name}: {rows[name]['status']}")
            else:
                rows[name] = {"name": name, "status": "ok", "walls": [], "rss": []}
        # Interleaved rounds: every contender sees the same stretch of background load.
        for r in range(max(repeats, repeats_slow)):
            for name in names:
                row = rows[name]
                if row["status"] != "ok" or r >= (repeats_slow if name in SLOW else repeats):
                    continue
                out = work / f"{name}.jsonl"
                try:
                    wall, peak = run_once(command(name, folder, work), work, out)
                except (RuntimeError, OSError) as e:
                    rows[name] = {"name": name, "status": f"n/a: failed: {e}"}
                    continue
                row["walls"].append(wall)
                row["rss"].append(peak)
                if not name.startswith("beam"):
                    outputs[name] = read_results(out)
                log(f"round {r + 1} {name}: {wall:.2f} s, {peak:.0f} MiB")
        for row in rows.values():
            if row["status"] == "ok":
                row.update(wall_s=min(row["walls"]), ips=images / min(row["walls"]),
                           rss_mb=max(row.pop("rss")))
        if "ours_fast" in rows and rows["ours_fast"]["status"] == "ok":
            small = work / "small"
            small.mkdir()
            for f in sorted(folder.iterdir())[:max(1, images // 5)]:
                os.link(f, small / f.name)
            _, peak = run_once(command("ours_fast", small, work), work, work / "small.jsonl")
            rows["ours_fast"]["rss_mb_fifth"] = peak
            rows["ours_fast"]["breakdown"] = _breakdown(folder, work, images)
        end = compute_floor(Settings())
        if end["peak_gflops"] > floor["peak_gflops"]:
            floor = end
        agreement = {n: compare(outputs["ours_keras"], outputs[n]) for n in outputs
                     if "ours_keras" in outputs and n != "ours_keras"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"images": images, "photo": photo, "repeats": repeats, "repeats_slow": repeats_slow,
            "rows": rows, "floor": floor, "targets": targets(rows, photo),
            "agreement_vs_ours_keras": agreement,
            "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _breakdown(folder: Path, work: Path, images: int) -> dict:
    """``child_breakdown``'s figures plus the wall time of ``predict`` on one image (process
    start, weights hash, interpreter), and the rate those parts allow for ``images``."""
    one = work / "one"
    one.mkdir()
    first = sorted(folder.iterdir())[0]
    os.link(first, one / first.name)
    start_s = min(run_once(command("ours_fast", one, work), work, work / "one.jsonl")[0]
                  for _ in range(3))
    out = work / "breakdown.json"
    run_once(command("breakdown", folder, work), work, out)
    b = {**json.loads(out.read_text()), "start_s": start_s}
    # One worker a core decodes, preprocesses and classifies whole images: after the first
    # image, each costs its decode on one core and its share of the model on all of them.
    wall = start_s + (images - 1) * (b["prep_ms"] / 1e3 / b["cores"] + 1 / b["model_ips"])
    # The same with the decoding rate measured on all cores at once.
    measured = start_s + (images - 1) * (1 / b["prep_all_ips"] + 1 / b["model_ips"])
    return {**b, "ceiling_ips": images / wall, "ceiling_all_ips": images / measured}


def targets(rows: dict, photo: str = "small") -> list[dict]:
    """Images/s ratios between contenders for this ``photo`` class; ``ours_fast`` against its
    parts (the model alone on small photos, their sum on 12 MP ones) and its peak memory at
    all the images against a fifth of them."""
    def ips(name):
        row = rows.get(name)
        return row["ips"] if row and row.get("status") == "ok" else None

    out = []

    def add(target, ratio, minimum, higher=True):
        what = f"{'>=' if higher else '<='} {minimum:g}x" if minimum else "report"
        ok = None if ratio is None or minimum is None else \
            (ratio >= minimum if higher else ratio <= minimum)
        out.append({"target": f"{target} ({what})", "ratio": ratio, "pass": ok})

    for ours, other, minimum in TARGETS:
        if ours in rows and other in rows:
            a, b = ips(ours), ips(other)
            add(f"{ours} vs {other}", a / b if a and b else None, minimum.get(photo))
    fast = rows.get("ours_fast") or {}
    if ips("ours_fast"):
        b = fast.get("breakdown")
        if b:
            add("ours_fast vs the model alone", ips("ours_fast") / b["model_ips"],
                MODEL_FRACTION if photo == "small" else None)
            add("ours_fast vs its sum of parts", ips("ours_fast") / b["ceiling_ips"],
                CEILING_FRACTION if photo == "12mp" else None)
            if b.get("ceiling_all_ips"):
                add("ours_fast vs its sum of parts, decoding timed on all cores",
                    ips("ours_fast") / b["ceiling_all_ips"], None)
        if fast.get("rss_mb_fifth"):
            add("ours_fast peak RSS, all images vs a fifth",
                fast["rss_mb"] / fast["rss_mb_fifth"], RSS_GROWTH, higher=False)
    return out


def format_report(result: dict) -> str:
    """Markdown: one row a contender, then the targets."""
    floor = result["floor"]
    lines = [f"{result['images']} JPEG images ({result.get('photo', 'small')}), bundled "
             f"mobilenet_v1_1.0_224, {os.cpu_count()} cores, best of {result['repeats']} "
             f"({result.get('repeats_slow', 1)} for the slow ones); float32 floor "
             f"{floor['bn_ips']:.0f} img/s ({floor['peak_gflops']:.0f} GFLOP/s)", "",
             "| contender | wall s | images/s | peak RSS MiB | top-5 same as ours_keras | "
             "max score diff |", "|---|---|---|---|---|---|"]
    agree = result.get("agreement_vs_ours_keras", {})
    for name, r in result["rows"].items():
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['status']} | | | | |")
            continue
        a = agree.get(name)
        same = f"{a['top5_same']}/{a['images']}" if a else "-"
        diff = f"{a['max_score_diff']:.1e}" if a and a["max_score_diff"] is not None else "-"
        rss = f"{r['rss_mb']:.0f}"
        if "rss_mb_fifth" in r:
            rss += f" ({r['rss_mb_fifth']:.0f} at {result['images'] // 5} images)"
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['ips']:.1f} | {rss} | {same} | "
                     f"{diff} |")
    b = result["rows"].get("ours_fast", {}).get("breakdown")
    if b:
        lines += ["", f"ours_fast's time: process start + one image {b['start_s']:.2f} s; "
                  f"decode + preprocess {b['prep_ms']:.2f} ms an image (one core); the model "
                  f"alone on {b['cores']} cores (one interpreter each) {b['model_ips']:.0f} img/s "
                  f"= {b['model_ips'] / floor['bn_ips']:.2f}x the floor; their sum allows "
                  f"{b['ceiling_ips']:.1f} img/s"]
        if "prep_all_ips" in b:
            lines[-1] += (f"; decode + preprocess on all cores at once "
                          f"{b['prep_all_ips']:.1f} img/s, with which the sum allows "
                          f"{b['ceiling_all_ips']:.1f} img/s")
    lines += ["", "| target | ratio | met |", "|---|---|---|"]
    for t in result["targets"]:
        met = {True: "yes", False: "NO", None: "-"}[t["pass"]]
        ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f}"
        lines.append(f"| {t['target']} | {ratio} | {met} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
