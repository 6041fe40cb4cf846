"""``mobilenet-v1 predict`` and ``classify``: results, bad inputs (FIFOs among the images,
hundreds of files with damaged ones on a real terminal), exit codes, real weights."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import resource
import select
import struct
import subprocess
import sys
import time
import warnings
import zlib

import numpy as np
import pytest
from conftest import cli, fixture_path, tiny_model
from PIL import Image

from tf_mobilenet_v1 import imagenet_labels
from tf_mobilenet_v1.images import read_image
from tf_mobilenet_v1.models import decode_predictions
from tf_mobilenet_v1.predict import _progress_bar, classify, run_predict
from tf_mobilenet_v1.preprocessing import MobileNetV1ImageProcessor

SIZE = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 0.25x MobileNet V1 at 32 px with the 1001 ImageNet classes, saved as .keras."""
    model = tiny_model(seed=3, image_size=SIZE)
    path = tmp_path_factory.mktemp("weights") / "tiny.keras"
    model.save(path)
    return model, str(path)


def _save(path, h=40, w=56, seed=0, mode="RGB"):
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)
    return str(path)


def _huge_png(path):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return str(path)


def _run(*args):
    run = cli("predict", *args)
    return run.returncode, run.stdout, run.stderr


def _expected(model, path, top_k=5, mode="crop"):
    """The top-k under a processor built by hand: the default is the model's own (HF crop)."""
    x = MobileNetV1ImageProcessor.for_variant(SIZE, mode=mode)(path)["pixel_values"]
    return decode_predictions(model.predict_on_batch(x), top_k, model.config.id2label)[0]


# ----------------------------------------------------------------- library
def test_classify_matches_direct_model_call(tiny, tmp_path):
    model, _ = tiny
    paths = [_save(tmp_path / f"{i}.png", 30 + 7 * i, 50 - 3 * i, seed=i) for i in range(5)]
    proc = MobileNetV1ImageProcessor.for_variant(SIZE, mode="resize")
    results = list(classify(paths, model, proc, top_k=4, batch_size=2))
    assert [r["image"] for r in results] == paths
    for path, result in zip(paths, results, strict=True):
        expected = _expected(model, path, 4, mode="resize")
        got = [(p["index"], p["label"], p["score"]) for p in result["predictions"]]
        assert [g[:2] for g in got] == [e[:2] for e in expected]
        np.testing.assert_allclose([g[2] for g in got], [e[2] for e in expected], atol=1e-6)
    # names pick the others; the default is the model's own processor: HF's crop at its size
    assert list(classify(paths, model, "resize", top_k=4, batch_size=2)) == results
    default = list(classify(paths, model, top_k=4, batch_size=2))
    assert default == list(classify(paths, model, "model", top_k=4, batch_size=2)) \
        == list(classify(paths, model, "crop", top_k=4, batch_size=2)) != results
    crop = MobileNetV1ImageProcessor.for_variant(SIZE)(paths[0])["pixel_values"]
    assert default[0]["predictions"][0]["index"] == int(np.argmax(model.predict_on_batch(crop)))


def test_classify_same_results_for_any_batch_size(tiny, tmp_path):
    model, _ = tiny
    paths = [_save(tmp_path / f"{i}.png", seed=i) for i in range(5)]
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    paths.insert(2, str(bad))
    runs = [list(classify(paths, model, top_k=3, batch_size=b)) for b in (1, 3, 32)]
    # oneDNN / Eigen pick kernels by batch size and CPU features (no AVX-512: scores differ
    # around 1e-11), so labels and order are equal and scores within 1e-6.
    for run in runs[1:]:
        assert [r.get("error") for r in run] == [r.get("error") for r in runs[0]]
        for got, want in zip(run, runs[0], strict=True):
            if "error" in want:
                continue
            assert [(p["index"], p["label"]) for p in got["predictions"]] == \
                [(p["index"], p["label"]) for p in want["predictions"]]
            np.testing.assert_allclose([p["score"] for p in got["predictions"]],
                                       [p["score"] for p in want["predictions"]], atol=1e-6)
    assert "error" in runs[0][2] and all("predictions" in r for i, r in enumerate(runs[0])
                                         if i != 2)


def test_backbone_is_rejected(tmp_path):
    from tf_mobilenet_v1 import MobileNetV1Model

    backbone = MobileNetV1Model(depth_multiplier=0.25, image_size=SIZE)
    with pytest.raises(ValueError, match="no classification head"):
        list(classify([_save(tmp_path / "a.png")], backbone))


# ----------------------------------------------------------------- CLI
def test_cli_json_on_directory(tiny, tmp_path, capsys):
    model, weights = tiny
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    paths = [_save(d / "a.jpg"), _save(d / "sub" / "b.png", 7, 90, seed=1),
             _save(d / "c.bmp", 64, 64, seed=2, mode="L")]
    (d / "notes.txt").write_text("ignored: not an image extension")
    rc, out, err = _run(d, "--weights", weights, "--json", "--top-k", "3")
    assert rc == 0, err
    doc = json.loads(out)
    assert sorted(r["image"] for r in doc) == sorted(paths)
    labels = imagenet_labels()
    for r in doc:
        preds = r["predictions"]
        assert len(preds) == 3
        assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)
        assert all(p["label"] == labels[p["index"]] for p in preds)
        assert [p["index"] for p in preds] == [e[0] for e in _expected(model, r["image"], 3)]


def test_cli_table_output(tiny, tmp_path, capsys):
    model, weights = tiny
    path = _save(tmp_path / "one.png")
    rc, out, err = _run(path, "--weights", weights, "--top-k", "2")
    assert rc == 0, err
    top = _expected(model, path, 2)
    lines = out.splitlines()
    assert lines[0] == path and len(lines) == 3
    assert lines[1].split()[0] == "1." and lines[1].rstrip().endswith(top[0][1])
    assert f"{top[0][2]:.2%}" in lines[1]


def test_cli_mixed_good_and_bad_inputs(tiny, tmp_path, capsys):
    _, weights = tiny
    d = tmp_path / "mixed"
    d.mkdir()
    good = [_save(d / "good1.png"), _save(d / "tiny.png", 1, 1, seed=4)]  # a 1x1 image works
    corrupt = d / "corrupt.jpg"
    data = (tmp_path / "full.jpg")
    _save(data, 64, 64)
    corrupt.write_bytes(data.read_bytes()[:300])  # truncated JPEG
    text = d / "text.jpg"
    text.write_text("hello, I am not a JPEG\n")
    huge = _huge_png(d / "huge.png")
    missing = tmp_path / "missing.png"
    rc, out, err = _run(d, missing, "--weights", weights, "--json")
    assert rc == 1
    doc = {r["image"]: r for r in json.loads(out)}
    assert set(doc) == {*good, str(corrupt), str(text), huge, str(missing)}
    for p in good:
        assert len(doc[p]["predictions"]) == 5
    for p in (str(corrupt), str(text), huge, str(missing)):
        assert "predictions" not in doc[p]
        assert p in doc[p]["error"] and p in err  # reported, naming the file
    assert "decompression-bomb" in doc[huge]["error"]
    assert "no such file" in doc[str(missing)]["error"]
    assert "4 of 6 images could not be classified" in err


def test_cli_all_inputs_bad_exit_1(tiny, tmp_path, capsys):
    _, weights = tiny
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG garbage")
    rc, out, err = _run(bad, "--weights", weights)
    assert rc == 1 and out == "" and err.count(str(bad)) == 1  # reported once, on stderr


def test_cli_empty_directory_is_usage_error(tiny, tmp_path, capsys):
    _, weights = tiny
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    rc, out, err = _run(empty, "--weights", weights, "--json")
    assert rc == 2 and out == ""
    assert f"no images found in {empty}" in err


def test_cli_empty_directory_beside_images_warns(tiny, tmp_path, capsys):
    _, weights = tiny
    empty = tmp_path / "empty"
    empty.mkdir()
    path = _save(tmp_path / "ok.png")
    rc, out, err = _run(empty, path, "--weights", weights, "--json")
    assert rc == 0 and [r["image"] for r in json.loads(out)] == [path]
    assert "warning: no images found" in err


def test_cli_usage_and_weights_errors(tiny, tmp_path, capsys):
    _, weights = tiny
    path = _save(tmp_path / "a.png")
    rc, _, err = _run(path, "--weights", weights, "--top-k", "0")
    assert rc == 2 and "--top-k" in err
    rc, _, err = _run(path, "--weights", tmp_path / "nothing.keras")
    assert rc == 1 and err.startswith("mobilenet-v1: error:")


def test_run_predict_preprocessing_option(tiny, tmp_path):
    _, weights = tiny
    path = _save(tmp_path / "a.png", 50, 90)
    outputs = {}
    for name in ("resize", "crop", "slim"):
        buf = io.StringIO()
        assert run_predict([path], weights=weights, json_output=True, stream=buf,
                           preprocessing=name) == 0
        outputs[name] = json.loads(buf.getvalue())[0]["predictions"]
    assert outputs["resize"] != outputs["crop"]  # a different crop, different scores
    with pytest.raises(ValueError, match="unknown preprocessing"):
        run_predict([path], weights=weights, preprocessing="bogus")


def test_progress_bar_only_on_terminals_for_long_runs():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert _progress_bar(100, 32, io.StringIO()) is None  # not a terminal
    assert _progress_bar(10, 32, Tty()) is None  # a single batch
    stream = Tty()
    bar = _progress_bar(100, 32, stream)
    assert bar is not None
    bar.update(32)
    if hasattr(bar, "refresh"):  # tqdm rate-limits its redraws
        bar.refresh()
    bar.close()
    assert "32/100" in stream.getvalue()


@pytest.mark.slow
def test_many_images_bounded_batches(tiny, tmp_path, capsys):
    _, weights = tiny
    d = tmp_path / "many"
    d.mkdir()
    for i in range(150):
        _save(d / f"{i:03d}.png", 20 + i % 13, 20 + i % 7, seed=i)
    rc, out, err = _run(d, "--weights", weights, "--json", "--batch-size", "16",
                        "--top-k", "1")
    assert rc == 0, err
    doc = json.loads(out)
    assert [r["image"] for r in doc] == sorted(str(p) for p in d.iterdir())


# ----------------------------------------------------------------- real weights
@pytest.mark.slow
def test_official_tarball_top1(capsys):
    """The release tarball of 0.25_128: published top-1s and the fixture's reference scores."""
    images = fixture_path("images")
    tgz = fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz")
    reference = json.loads(fixture_path("official", "mobilenet_v1_0.25_128",
                                        "reference.json").read_text())["top5"]
    # The reference logits come from the straight resize (the TFLite examples' preprocessing).
    rc, out, err = _run(images, "--weights", tgz, "--json", "--preprocessing", "resize")
    assert rc == 0, err
    doc = {r["image"].rsplit("/", 1)[-1]: r["predictions"] for r in json.loads(out)}
    expected_top1 = {"burger.jpg": (934, "cheeseburger"), "bird.bmp": (20, "chickadee"),
                     "cat.bmp": (286, "Egyptian cat")}
    for name, (index, label) in expected_top1.items():
        assert (doc[name][0]["index"], doc[name][0]["label"]) == (index, label)
    for name, top5 in reference.items():  # reference scores are rounded to 4 decimals
        assert [p["index"] for p in doc[name]] == [t[0] for t in top5]
        np.testing.assert_allclose([p["score"] for p in doc[name]], [t[2] for t in top5],
                                   atol=6e-5)


_CHILD = """
import json, resource, sys, time
start = time.time()
from tf_mobilenet_v1.cli import main
from tf_mobilenet_v1.images import read_image
rc = main(sys.argv[2:])
# ru_maxrss survives exec (it may be the forking pytest's); VmHWM belongs to this image alone.
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")]
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               "hwm_kb": hwm[0] if hwm else None, "seconds": time.time() - start}, f)
sys.exit(rc)
"""


_BAD = {
    "empty": lambda p: p.with_suffix(".jpg").write_bytes(b""),
    "text": lambda p: p.write_text("not an image\n"),
    "truncated": lambda p: p.write_bytes(_png_bytes(p, 40, 50)[:300]),
    "bomb": lambda p: p.write_bytes(_png_header(10_000, 9_000)),
    "dangling_link": lambda p: os.symlink(p.parent / "nowhere.png", p.with_suffix(".jpg")),
    "jpeg_junk": lambda p: p.with_suffix(".jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64),
}


# Damaged 1x1 TIFFs (byte flips by these seeds): Pillow logs an ERROR for the first six and
# warns about the next six (which still decode); a CLI user must see neither raw.
_TIFF_SEEDS = [105, 148, 307, 313, 327, 348, 23, 27, 31, 37, 42, 49, 0, 1, 2, 3, 4, 5, 6, 7]


def _damaged_tiff(seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "TIFF")
    data, rng = bytearray(buf.getvalue()), np.random.default_rng(seed)
    for _ in range(int(rng.integers(1, 6))):
        data[int(rng.integers(0, len(data)))] ^= int(rng.integers(1, 256))
    return bytes(data)


def _png_header(w, h):
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
        + chunk(b"IEND", b"")


def _png_bytes(seed_path, h, w) -> bytes:
    import io
    import zlib

    rng = np.random.default_rng(zlib.crc32(seed_path.name.encode()))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _render(stream: str) -> list[str]:
    """What a terminal shows per line: the text after the last carriage return, no escapes."""
    stream = stream.replace("\r\n", "\n")
    stream = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", stream)
    return [line.rsplit("\r", 1)[-1] for line in stream.split("\n")]


def _run_on_a_terminal(cmd, stdout_path, timeout=540) -> str:
    """Run ``cmd`` with stderr on a pseudo-terminal (so the progress bar is drawn)."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    with open(stdout_path, "wb") as stdout:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=slave, stdin=subprocess.DEVNULL,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_predict_500_images_bounded_memory_bad_files_on_the_progress_bar(tiny, tmp_path):
    """500 images, 40 of them damaged, through a real terminal: bounded memory, each bad file
    reported once on its own line above the progress bar."""
    _, weights = tiny
    d = tmp_path / "images"
    d.mkdir()
    bad, kinds, tiffs = [], sorted(_BAD), []
    for i in range(500):
        p = d / f"{i:03d}.png"
        if i % 25 == 12:
            kind = kinds[(i // 25) % len(kinds)]
            _BAD[kind](p)
            bad.append(next(str(q) for q in (p, p.with_suffix(".jpg")) if os.path.lexists(q)))
        elif i % 25 == 5:
            p = p.with_suffix(".tif")
            p.write_bytes(_damaged_tiff(_TIFF_SEEDS[len(tiffs)]))
            tiffs.append(str(p))
        else:
            p.write_bytes(_png_bytes(p, 16 + i % 61, 16 + (i * 7) % 67))
    paths = sorted(str(p) for p in d.iterdir())
    assert len(paths) == 500 and len(bad) == 20 and len(tiffs) == 20
    for t in tiffs:  # which damaged TIFFs still decode decides what predict must report
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read_image(t)
            except ValueError:
                bad.append(t)
    assert 20 + 6 <= len(bad) < 40

    stats, out = tmp_path / "stats.json", tmp_path / "out.json"
    cmd = [sys.executable, "-c", _CHILD, str(stats), "predict", str(d), "--weights", weights,
           "--json", "--top-k", "3", "--batch-size", "32"]
    err = _run_on_a_terminal(cmd, out)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child
    info = json.loads(stats.read_text())
    summary = os.environ.get("HARDENING_SUMMARY_DIR")
    if summary:  # the figures docs/reliability.md's table quotes
        os.makedirs(summary, exist_ok=True)
        with open(os.path.join(summary, "predict_many.json"), "w") as f:
            json.dump({"images": 500, "unreadable": len(bad),
                       "peak_rss_mib": (info["hwm_kb"] or 0) / 1024,
                       "ru_maxrss_mib": info["maxrss_kb"] / 1024,
                       "children_maxrss_mib": children / 1024, "seconds": info["seconds"]},
                      f, indent=1)

    assert info["rc"] == 1
    results = json.loads(out.read_text())
    assert [r["image"] for r in results] == paths
    failed = {r["image"]: r["error"] for r in results if "error" in r}
    assert sorted(failed) == sorted(bad)
    for r in results:
        if r["image"] not in failed:
            assert len(r["predictions"]) == 3 and 0 <= r["predictions"][0]["score"] <= 1
    for path, message in failed.items():
        assert path in message
    assert f"{len(bad)} of 500 images could not be classified" in err
    assert re.search(r"classifying:.*\d+/500", err), "no progress bar was drawn"
    # Every error line stands on its own line above the bar, never glued to a bar fragment,
    # and nothing else reaches the terminal (no raw Pillow warning or log record).
    shown = _render(err)
    for path in bad:
        lines = [line for line in shown if path in line]
        assert lines and all(line.startswith("mobilenet-v1: ") for line in lines), lines
    stray = [line for line in shown if line.strip()
             and not line.startswith(("mobilenet-v1: ", "classifying"))]
    assert not stray, stray[:5]
    assert info["maxrss_kb"] < 3 * 2**20 and children < 3 * 2**20


def test_fifo_among_images_is_skipped_with_a_reason(tmp_path):
    os.symlink(fixture_path("images", "burger.jpg"), tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "b.jpg")
    run = cli("predict", "--jsonl", tmp_path, os.fspath(tmp_path / "b.jpg"))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = [json.loads(x) for x in run.stdout.splitlines()]
    assert lines[0]["predictions"][0]["label"] == "cheeseburger"
    assert [x["error"] for x in lines[1:]] == [
        f"cannot read image {tmp_path / 'b.jpg'}: not a regular file (a pipe, socket or device); "
        "skipped"] * 2


# ----------------------------------------------------------------- exports as weights
def _jsonl(run) -> list[dict]:
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def _same_results(got: list[dict], want: list[dict], atol: float) -> None:
    assert [r["image"] for r in got] == [r["image"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert [p["index"] for p in g["predictions"]] == [p["index"] for p in w["predictions"]]
        assert [p["label"] for p in g["predictions"]] == [p["label"] for p in w["predictions"]]
        np.testing.assert_allclose([p["score"] for p in g["predictions"]],
                                   [p["score"] for p in w["predictions"]], atol=atol)


def test_predict_runs_a_tflite_export_as_it_is(tiny64, tiny64_tflite):
    """``predict --weights m.tflite`` runs the file itself (what a user checking an export
    wants): its probabilities or logits, its labels.txt, the same results as the Keras model."""
    photos = [fixture_path("images", n) for n in ("burger.jpg", "cat.bmp", "bird.bmp")]
    want = list(classify(photos, tiny64, top_k=3))
    for key in ("none_probs", "none"):  # a softmax output and a logits output
        got = _jsonl(cli("predict", "--jsonl", "--top-k", "3", "--weights",
                         tiny64_tflite[key], *photos))
        _same_results(got, want, atol=1e-5)
    run = cli("predict", "--weights", tiny64_tflite["features"], photos[0])
    assert run.returncode == 1
    assert "is a feature-vector model; pass a classifier export" in run.one_line_error()


@pytest.mark.parametrize("name, expected", [
    ("mobilenet_v1_0.25_224_1_metadata_1.tflite", {"cat.bmp": 286, "burger.jpg": 934}),
    ("mobilenet_v1_0.25_224_1_default_1.tflite", {"cat.bmp": 286, "burger.jpg": 934}),
    ("mobilenet_v1_0.5_160_quant.tflite", {"cat.bmp": 286, "bird.bmp": 20}),
])
def test_predict_runs_googles_tflite_models(name, expected):
    """Google's hosted models: a softmax output read as probabilities (not softmaxed again),
    uint8 input and output quantized as the file says, labels from the packed metadata or
    ImageNet's for 1001 classes; the published top-1 for each photo."""
    photos = [fixture_path("images", n) for n in expected]
    got = _jsonl(cli("predict", "--jsonl", "--weights", fixture_path("tflite", name), *photos))
    names = imagenet_labels()
    for result, index in zip(got, expected.values(), strict=True):
        top = result["predictions"][0]
        assert (top["index"], top["label"]) == (index, names[index]), result
        assert top["score"] > 0.5  # a double softmax would flatten this below 0.01
        assert sum(p["score"] for p in result["predictions"]) <= 1 + 1e-6


def test_json_output_is_strict_json_for_non_utf8_file_names(tiny, tmp_path):
    """A file name with a byte that is not UTF-8 (``caf\\xe9.jpg``) and an unreadable one: the
    JSON lines hold ``\\xe9`` as text, never a lone surrogate, which strict parsers reject."""
    _, weights = tiny
    folder = tmp_path / "imgs"
    folder.mkdir()
    photo = open(fixture_path("images", "burger.jpg"), "rb").read()
    good = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")
    bad = os.path.join(os.fsencode(folder), b"br\xfbl\xe9.jpg")
    with open(good, "wb") as f:
        f.write(photo)
    with open(bad, "wb") as f:
        f.write(b"not an image")
    for flag in ("--jsonl", "--json"):
        run = cli("predict", "--weights", weights, "--no-fast", flag, str(folder))
        assert run.returncode == 1
        text = run.stdout.encode("utf-8")  # a lone surrogate would not even encode
        lines = text.decode().splitlines() if flag == "--jsonl" else [text.decode()]
        results = [r for line in lines for r in (lambda v: v if isinstance(v, list) else [v])(
            json.loads(line))]
        names = sorted(r["image"] for r in results)
        assert names == [str(folder) + "/br\\xfbl\\xe9.jpg", str(folder) + "/caf\\xe9.jpg"]
        assert any("error" in r and "\\xfb" in r["error"] for r in results)


# ----------------------------------------------------------------- --fast-decode
def _phone_photo(path, name="burger.jpg"):
    """A fixture photo as a 4000 x 3000 phone-size JPEG (upscaled, with sensor-like noise)."""
    im = Image.open(fixture_path("images", name)).convert("RGB")
    a = np.asarray(im.resize((4000, 3000), Image.Resampling.BICUBIC), np.int16)
    noise = np.random.default_rng(0).integers(-12, 13, a.shape)
    Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8)).save(path, quality=92)
    return str(path)


def test_draft_edge_is_twice_the_resize_target():
    from tf_mobilenet_v1.predict import draft_edge
    from tf_mobilenet_v1.preprocessing import LookupProcessor, SlimEvalPreprocessor

    hf = MobileNetV1ImageProcessor.for_variant(224)  # shortest edge 256, then a 224 crop
    assert draft_edge(hf) == draft_edge(LookupProcessor(hf)) == 512
    assert draft_edge(MobileNetV1ImageProcessor.for_variant(160, mode="resize")) == 320
    assert draft_edge(SlimEvalPreprocessor(224)) == 512  # 87.5% crop, then 224: 256 x 2
    assert draft_edge(MobileNetV1ImageProcessor(do_resize=False)) is None


def test_fast_decode_leaves_small_photos_byte_identical(tmp_path):
    from tf_mobilenet_v1.images import load_pixels
    from tf_mobilenet_v1.predict import draft_edge
    from tf_mobilenet_v1.preprocessing import LookupProcessor

    processor = LookupProcessor(MobileNetV1ImageProcessor.for_variant(224))
    edge = draft_edge(processor)
    paths = [str(fixture_path("images", "burger.jpg"))]
    for name in ("bird.bmp", "cat.bmp", "grace_hopper.bmp"):  # as JPEGs of 512 px and less
        paths.append(str(tmp_path / f"{name}.jpg"))
        Image.open(fixture_path("images", name)).convert("RGB").save(paths[-1], quality=90)
    for path in paths:
        exact, error = load_pixels(path, processor, (224, 224, 3))
        assert error is None
        assert load_pixels(path, processor, (224, 224, 3), draft=edge)[0].tobytes() == \
            exact.tobytes()


@pytest.mark.slow  # the full-size 1.0_224 weights
def test_fast_decode_of_a_phone_photo_is_reduced_and_keeps_the_top1(tmp_path):
    from tf_mobilenet_v1.images import load_pixels, open_image
    from tf_mobilenet_v1.predict import draft_edge, open_classifier

    photo = _phone_photo(tmp_path / "burger_12mp.jpg")
    engine = open_classifier("mobilenet_v1_1.0_224")  # the bundled weights
    edge = draft_edge(engine.processor)
    assert open_image(photo, draft=edge).size == (1000, 750)  # a quarter: 750 >= 2 x 256
    shape = (224, 224, 3)
    reduced = load_pixels(photo, engine.processor, shape, draft=edge)[0]
    assert not np.array_equal(reduced, load_pixels(photo, engine.processor, shape)[0])
    exact, fast = (next(classify([photo], engine, fast_decode=f)) for f in (False, True))
    assert exact["predictions"][0]["label"] == fast["predictions"][0]["label"] == "cheeseburger"
    assert exact != fast  # other pixels, other scores


def test_cli_fast_decode_flag(tiny, tmp_path):
    model, weights = tiny
    small = _save(tmp_path / "small.jpg", 48, 60)
    # 800 // 128 = 6: decoded at a quarter, 250 x 200 (the tiny model's 32 px crop: 64 x 2).
    large = str(tmp_path / "large.jpg")
    y, x = np.mgrid[0:800, 0:1000]
    Image.fromarray(np.stack([x % 251, y % 241, (x * y) % 256], -1).astype(np.uint8)).save(
        large, quality=90)
    runs = {flag: _jsonl(cli("predict", "--jsonl", *flag, "--weights", weights, small, large))
            for flag in ((), ("--fast-decode",))}
    exact, fast = runs[()], runs[("--fast-decode",)]
    assert fast[0] == exact[0]  # too small to reduce: the same pixels, the same result
    want = list(classify([large], model, top_k=5, fast_decode=True))[0]
    _same_results([fast[1]], [want], atol=1e-5)
    assert fast[1] != exact[1]
    assert "differ from Hugging Face" in " ".join(cli("predict", "--help").stdout.split())
