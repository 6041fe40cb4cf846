"""The TFLite fast path of ``mobilenet-v1 predict``: same results as Keras, no TensorFlow import
once cached, a cache that is keyed by content and never trusted blindly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import cli, fixture_path, require_module, tiny_model
from PIL import Image

from tf_mobilenet_v1 import fast_predict
from tf_mobilenet_v1.preprocessing import LookupProcessor, MobileNetV1ImageProcessor

PHOTOS = ("bird.bmp", "burger.jpg", "cat.bmp", "grace_hopper.bmp")


def _env(cache, **extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", fast_predict.ENV_CACHE: str(cache)}
    env.pop(fast_predict.ENV_SWITCH, None)
    env.update(extra)
    return env


def _cli(cache, *args, **extra):
    return subprocess.run([sys.executable, "-m", "tf_mobilenet_v1", "predict", *map(str, args)],
                          capture_output=True, text=True, env=_env(cache, **extra), timeout=600)


def _entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _assert_same_top5(fast: list[dict], keras: list[dict]):
    assert [r["image"] for r in fast] == [r["image"] for r in keras]
    for a, b in zip(fast, keras, strict=True):
        assert [(p["index"], p["label"]) for p in a["predictions"]] == \
            [(p["index"], p["label"]) for p in b["predictions"]], a["image"]
        np.testing.assert_allclose([p["score"] for p in a["predictions"]],
                                   [p["score"] for p in b["predictions"]], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def photos():
    require_module("ai_edge_litert")
    return [str(fixture_path("images", name)) for name in PHOTOS]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The bundled 1.0_224 weights as a user's own Hugging Face folder: no shipped fast model
    is trusted there, so the first run builds one."""
    from tf_mobilenet_v1 import registry

    folder = tmp_path_factory.mktemp("weights") / "mobilenet_v1_1.0_224"
    bundled = registry.bundled_path("mobilenet_v1_1.0_224")
    shutil.copytree(bundled, folder, ignore=shutil.ignore_patterns("fast.*"))
    return folder


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory, photos, weights):
    """A cache holding those weights' TFLite model, built by a first (cold) CLI run."""
    cache = tmp_path_factory.mktemp("cache")
    proc = _cli(cache, *photos, "--json", "--weights", weights)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = _entries(cache)
    assert len(names) == 2 and {n.rsplit(".", 1)[1] for n in names} == {"json", "tflite"}
    return cache, json.loads(proc.stdout)


# ----------------------------------------------------------------- same answers
@pytest.mark.slow
def test_fast_and_keras_paths_agree_on_the_fixture_photos(built_cache, photos, weights,
                                                          tmp_path):
    cache, cold = built_cache
    warm = _cli(cache, *photos, "--json", "--weights", weights)
    keras = _cli(tmp_path / "unused", *photos, "--json", "--no-fast")
    shipped = _cli(tmp_path / "empty", *photos, "--json")  # the bundled weights' own model
    assert warm.returncode == keras.returncode == shipped.returncode == 0, keras.stderr[-2000:]
    assert not (tmp_path / "unused").exists()  # --no-fast builds nothing
    assert not (tmp_path / "empty").exists()  # the shipped model needs no build
    assert warm.stderr == keras.stderr == shipped.stderr == ""
    warm, keras, shipped = (json.loads(r.stdout) for r in (warm, keras, shipped))
    assert warm == cold  # the run that built the entry already used it
    # The shipped model is this build, byte for byte: the same answers, names aside.
    assert [r["predictions"] for r in shipped] == [r["predictions"] for r in warm]
    _assert_same_top5(warm, keras)
    top1 = {os.path.basename(r["image"]): r["predictions"][0]["index"] for r in warm}
    assert top1["burger.jpg"] == 934 and top1["bird.bmp"] == 20  # published expectations


@pytest.mark.slow
def test_warm_fast_path_imports_neither_tensorflow_nor_keras(built_cache, photos, weights,
                                                            tmp_path):
    """Nor does the very first run on the bundled weights, with an empty cache."""
    cache, _ = built_cache
    code = ("import sys; from tf_mobilenet_v1.cli import main; "
            f"rc = main(['predict', {photos[1]!r}, '--top-k', '1', *sys.argv[1:]]); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'tf_keras', 'torch')); "
            "print('RC', rc, 'HEAVY', heavy)")
    for where, args in ((cache, ["--weights", str(weights)]), (tmp_path / "empty", [])):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, env=_env(where), timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "cheeseburger" in proc.stdout
        assert proc.stdout.strip().endswith("RC 0 HEAVY []"), proc.stdout
    assert not (tmp_path / "empty").exists()
    # The opt-out runs the Keras model, which does import TensorFlow.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(cache, MOBILENET_V1_FAST="0"), timeout=300)
    assert proc.returncode == 0 and "'tensorflow'" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow
def test_outputs_errors_and_exit_codes_match_the_keras_path(built_cache, photos, tmp_path,
                                                            capsys, monkeypatch):
    cache, _ = built_cache
    monkeypatch.setenv(fast_predict.ENV_CACHE, str(cache))
    monkeypatch.delenv(fast_predict.ENV_SWITCH, raising=False)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    missing = tmp_path / "gone.jpg"
    args = [photos[1], str(bad), photos[0], str(missing), "--top-k", "3"]
    for fmt in ((), ("--json",), ("--jsonl",)):
        got = {}
        for mode in ("fast", "keras"):
            flags = ("--no-fast",) if mode == "keras" else ()
            rc = cli("predict", *args, *fmt, *flags).returncode
            out, err = capsys.readouterr()
            got[mode] = rc, out, err
        (rc_f, out_f, err_f), (rc_k, out_k, err_k) = got["fast"], got["keras"]
        assert rc_f == rc_k == 1, fmt
        assert err_f == err_k, fmt  # the same one-line messages, the same summary
        assert err_f.count(str(bad)) == 1 and "2 of 4 images could not be classified" in err_f
        if fmt == ("--json",):
            fast, keras = json.loads(out_f), json.loads(out_k)
        elif fmt == ("--jsonl",):
            fast, keras = ([json.loads(line) for line in o.splitlines()] for o in (out_f, out_k))
        else:  # the table: same lines, scores printed to 0.01%
            assert [ln.split()[-1] for ln in out_f.splitlines()] == \
                [ln.split()[-1] for ln in out_k.splitlines()]
            continue
        assert [r.get("error") for r in fast] == [r.get("error") for r in keras]
        _assert_same_top5([r for r in fast if "error" not in r],
                          [r for r in keras if "error" not in r])
    assert len(_entries(cache)) == 2  # nothing new was built


# ----------------------------------------------------------------- the cache
@pytest.mark.slow
def test_a_damaged_cache_entry_is_rebuilt_not_trusted(built_cache, photos, weights, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in _entries(built_cache[0]):
        (cache / name).write_bytes((built_cache[0] / name).read_bytes())
    shutil.copy2(f"{built_cache[0]}.key", f"{cache}.key")  # signed: only the damage says no
    (model_file,) = cache.glob("*.tflite")
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped weight byte: the file still loads
    model_file.write_bytes(bytes(data))
    proc = _cli(cache, photos[1], "--json", "--weights", weights)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not signed" not in proc.stderr  # damage, not a forgery: rebuilt quietly
    assert json.loads(proc.stdout) == [r for r in built_cache[1] if r["image"] == photos[1]]
    assert model_file.read_bytes() == (built_cache[0] / model_file.name).read_bytes()
    assert len(_entries(cache)) == 2  # replaced in place, no temporary files left

    (meta_file,) = cache.glob("*.json")
    meta_file.write_text("{not json")
    proc = _cli(cache, photos[1], "--json", "--weights", weights)
    assert proc.returncode == 0 and json.loads(meta_file.read_text())["format"] == \
        fast_predict.FORMAT


def test_cache_key_follows_the_bytes_and_every_local_form_qualifies(tmp_path):
    from tf_mobilenet_v1.converters.hf import save_hf

    model = tiny_model(seed=3)
    save_hf(model, str(tmp_path / "hf"))
    files = fast_predict.weight_files(str(tmp_path / "hf"))
    assert [os.path.basename(f) for f in files] == ["config.json", "model.safetensors",
                                                    "preprocessor_config.json"]
    key = fast_predict.cache_key(files)
    assert key == fast_predict.cache_key(files) and len(key) == 64
    with open(files[1], "r+b") as f:  # same size, one byte different
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert fast_predict.cache_key(files) != key
    # Every local form qualifies, keyed by all its loader reads; exports run as they are.
    model.save(tmp_path / "m.keras")
    assert fast_predict.weight_files(str(tmp_path / "m.keras")) == [str(tmp_path / "m.keras")]
    save_hf(model, str(tmp_path / "m.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    assert [os.path.basename(f) for f in fast_predict.weight_files(
        str(tmp_path / "m.safetensors"))] == ["m.safetensors", "config.json"]
    from tf_mobilenet_v1.converters.slim import save_slim_checkpoint

    save_slim_checkpoint(model, str(tmp_path / "s.ckpt"))
    ckpt = [os.path.basename(f) for f in fast_predict.weight_files(str(tmp_path / "s.ckpt"))]
    assert ckpt == ["s.ckpt.index", "s.ckpt.data-00000-of-00001"]
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    assert fast_predict.weight_files(str(tmp_path / "m.tflite")) is None
    (tmp_path / "notes.txt").write_text("x")
    assert fast_predict.weight_files(str(tmp_path / "notes.txt")) is None
    assert fast_predict.weight_files("mobilenet_v1_0.5_160") is None or \
        os.path.exists(fast_predict.weight_files("mobilenet_v1_0.5_160")[0])
    assert fast_predict.weight_files(str(tmp_path / "nowhere")) is None
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"")  # which file would load?
    assert fast_predict.weight_files(str(tmp_path / "hf")) is None


def test_fast_path_on_a_small_hf_directory_matches_keras_and_caches(tmp_path, capsys,
                                                                    monkeypatch):
    require_module("ai_edge_litert")
    from tf_mobilenet_v1.converters.hf import save_hf

    hf = tmp_path / "hf"
    save_hf(tiny_model(seed=4, image_size=64), str(hf))
    images = []
    for i, (h, w) in enumerate(((50, 70), (90, 40), (20, 20))):  # the last one is padded
        a = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        images.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(a).save(images[-1])
    cache = tmp_path / "cache"
    monkeypatch.setenv(fast_predict.ENV_CACHE, str(cache))
    monkeypatch.delenv(fast_predict.ENV_SWITCH, raising=False)
    # A terminal on stderr (a person watching) is told about the one-off build, once: main()
    # itself, since the shared runner's captured stderr is no terminal.
    from tf_mobilenet_v1.cli import main

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    results, notes = {}, {}
    for mode, flags in (("keras", ["--no-fast"]), ("cold", []), ("warm", []),
                        ("slim", ["--preprocessing", "slim"])):
        assert main(["predict", *images, "--weights", str(hf), "--json", *flags]) == 0
        out, err = capsys.readouterr()
        results[mode] = json.loads(out)
        notes[mode] = "building a fast TFLite model" in err
        assert len(_entries(cache)) == (0 if mode == "keras" else 2), mode
    assert notes == {"keras": False, "cold": True, "warm": False, "slim": False}
    assert results["cold"] == results["warm"]
    _assert_same_top5(results["warm"], results["keras"])
    assert results["slim"] != results["keras"]  # slim ran (on the Keras path)
    monkeypatch.setenv(fast_predict.ENV_SWITCH, "0")
    assert not fast_predict.enabled() and not fast_predict.enabled(False)
    assert fast_predict.open_cached(str(hf), "slim") is None


# ----------------------------------------------------------------- the same pixels
@pytest.mark.parametrize("mode", ["model", "crop", "resize"])
def test_lookup_preprocessing_is_bit_identical_to_the_processor(tmp_path, mode):
    processor = MobileNetV1ImageProcessor.for_variant(64, mode="resize" if mode == "resize"
                                                      else "crop")
    if mode == "model":  # a carried processor with other constants
        processor = MobileNetV1ImageProcessor(size={"shortest_edge": 72},
                                              crop_size={"height": 64, "width": 64},
                                              image_mean=[0.485, 0.456, 0.406],
                                              image_std=[0.229, 0.224, 0.225],
                                              rescale_factor=1 / 250)
    lookup = LookupProcessor(processor)
    rng = np.random.default_rng(0)
    sources = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8),
               rng.integers(0, 256, (30, 30, 4), dtype=np.uint8),  # RGBA, padded crop
               rng.integers(0, 256, (70, 50), dtype=np.uint8)]  # grayscale
    paths = []
    for i, a in enumerate(sources):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(a).save(paths[-1])
    for path in paths:
        want = processor.preprocess_one(path)
        got = lookup.preprocess_one(path)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), path
    off = MobileNetV1ImageProcessor(do_rescale=False, do_normalize=False)
    assert np.array_equal(LookupProcessor(off).preprocess_one(paths[0]),
                          off.preprocess_one(paths[0]))


def test_a_failing_fast_path_is_said_not_swallowed(tmp_path, monkeypatch):
    """Not "not eligible" but broken: one warning line with the reason, and the Keras model
    still answers; under MOBILENET_V1_FAST_STRICT (as in these tests) it is an error."""
    from tf_mobilenet_v1.converters.hf import save_hf

    hf = tmp_path / "hf"
    save_hf(tiny_model(seed=4), str(hf))
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)

    def broken(model, key):
        raise ValueError("the converter said no")

    monkeypatch.setattr(fast_predict, "build_entry", broken)
    env = {fast_predict.ENV_CACHE: str(tmp_path / "cache"), fast_predict.ENV_SWITCH: None}
    run = cli("predict", image, "--weights", hf, "--json",
              env={**env, fast_predict.ENV_STRICT: None})
    assert run.returncode == 0 and json.loads(run.stdout)[0]["predictions"]
    assert run.errors == ["mobilenet-v1: warning: could not build the fast TFLite model (the "
                          "converter said no); running the Keras model"]
    strict = cli("predict", image, "--weights", hf, env={**env, fast_predict.ENV_STRICT: "1"})
    assert strict.returncode == 1 and strict.errors == [
        "mobilenet-v1: error: fast path: could not build the fast TFLite model: the converter "
        "said no"]


def test_stderr_survives_silencing_from_many_threads_at_once():
    """``native_stderr_silenced`` entered and left by many threads in any overlap: fd 2 ends
    where it began (overlapping calls once left it on /dev/null, and the fast path's error
    lines and summary vanished)."""
    import random
    import threading

    from tf_mobilenet_v1.errors import native_stderr_silenced

    before = os.fstat(2)
    rng = random.Random(0)
    delays = [[rng.random() / 500 for _ in range(20)] for _ in range(8)]

    def work(mine):
        for delay in mine:
            with native_stderr_silenced():
                time.sleep(delay)
            time.sleep(delay / 2)

    threads = [threading.Thread(target=work, args=(d,)) for d in delays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert os.path.samestat(os.fstat(2), before)


# ----------------------------------------------------------------- a cache nobody can plant
def test_only_a_private_cache_is_used(tmp_path, monkeypatch, capsys):
    """Created 0700; a directory others may write to (or another user's) is not used, said
    once on stderr."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(fast_predict.ENV_CACHE, str(cache))
    assert fast_predict.private_cache_dir() is None  # absent: nothing to read
    assert fast_predict.private_cache_dir(create=True) == str(cache)
    assert cache.stat().st_mode & 0o777 == 0o700
    cache.chmod(0o777)
    assert fast_predict.private_cache_dir() is None
    assert fast_predict.private_cache_dir() is None
    err = capsys.readouterr().err
    assert err.count("not using the cache") == 1 and "only you can write to" in err


def test_cache_files_are_read_only_when_they_are_plain_and_bounded(tmp_path):
    """A FIFO (no hang), a link to /dev/zero (no endless read), a 2 GB sparse file (not read
    at all) and a link to a real file (a planted link is not followed) all read as absent."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    with open(tmp_path / "sparse.tflite", "wb") as f:
        f.truncate(2 << 30)
    for name in ("fifo.json", "zero.json", "link.json", "sparse.tflite", "absent.json"):
        assert fast_predict._read_own(str(tmp_path / name), 1 << 20) is None, name
    assert fast_predict._read_own(str(tmp_path / "real.json"), 1 << 20) == b"{}"


def test_stale_temporaries_of_killed_builds_are_removed(tmp_path):
    """A SIGKILLed build leaves ``.tflite-<key>.*.tmp``: removed once 10 minutes old; a fresh
    one (a build running now) and anything not ours stay."""
    from hostile import killed_writes

    from tf_mobilenet_v1.fileio import remove_stale_temporaries

    key = "0" * 64
    stale, fresh, other = killed_writes(tmp_path, f".tflite-{key}.tflite.abc12345.tmp",
                                        f".tflite-{key}.json.def45678.tmp", ".someone-else.tmp")

    remove_stale_temporaries(str(tmp_path), fast_predict._TEMPORARY)
    assert not stale.exists() and fresh.exists() and other.exists()


@pytest.mark.slow
def test_every_local_form_takes_the_fast_path(tmp_path, monkeypatch):
    """A .keras (what a Keras user fine-tunes and saves), a .weights.h5, a slim checkpoint
    and a .safetensors given as paths: built once, the same results as the Keras model, and
    the next call never loads the Keras model."""
    from tf_mobilenet_v1.converters.hf import save_hf
    from tf_mobilenet_v1.converters.slim import save_slim_checkpoint

    from tf_mobilenet_v1 import predict as predict_mod

    model = tiny_model(seed=5, image_size=64, num_labels=7)
    sources = {"keras": tmp_path / "m.keras", "h5": tmp_path / "m_0.25_64.weights.h5",
               "ckpt": tmp_path / "s.ckpt", "safetensors": tmp_path / "st" / "m.safetensors"}
    model.save(sources["keras"])
    model.save_weights(sources["h5"])
    save_slim_checkpoint(model, str(sources["ckpt"]))
    save_hf(model, str(sources["safetensors"]))
    photo = fixture_path("images", "cat.bmp")
    env = {fast_predict.ENV_CACHE: str(tmp_path / "cache"), fast_predict.ENV_STRICT: "1",
           fast_predict.ENV_SWITCH: None}
    for name, path in sources.items():
        keras_run = cli("predict", "--jsonl", "--no-fast", "--weights", path, photo, env=env)
        cold = cli("predict", "--jsonl", "--weights", path, photo, env=env)
        assert cold.returncode == 0, cold.stderr
        with monkeypatch.context() as m:
            m.setattr(predict_mod, "_load_model",
                      lambda w, name=name: pytest.fail(f"{name}: the warm call loaded Keras"))
            warm = cli("predict", "--jsonl", "--weights", path, photo, env=env)
        want, *_ = [json.loads(x) for x in keras_run.stdout.splitlines()]
        for run in (cold, warm):
            got, *_ = [json.loads(x) for x in run.stdout.splitlines()]
            assert [p["index"] for p in got["predictions"]] == \
                [p["index"] for p in want["predictions"]], name
            np.testing.assert_allclose([p["score"] for p in got["predictions"]],
                                       [p["score"] for p in want["predictions"]], atol=1e-4)
    assert len(list((tmp_path / "cache").glob("*.tflite"))) == len(sources)
