"""``mobilenet-v1 predict`` and ``classify``: results, bad inputs, exit codes, real weights."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from conftest import cli, fixture_path, tiny_model
from PIL import Image

from tf_mobilenet_v1 import imagenet_labels
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
