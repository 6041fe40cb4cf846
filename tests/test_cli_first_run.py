"""The command line as a new user meets it: offline first run, clean streams, conventional CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, fixture_path, require_module, tiny_model
from PIL import Image

from tf_mobilenet_v1 import predict as predict_mod
from tf_mobilenet_v1.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("bird.bmp", "burger.jpg", "cat.bmp", "grace_hopper.bmp")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.keras"
    tiny_model(seed=5).save(path)
    return str(path)


def _image(path, seed=0):
    a = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return str(path)


def _predict(*args):
    run = cli("predict", *args)
    return run.returncode, run.stdout, run.stderr


# ----------------------------------------------------------------- paths first
def test_missing_paths_fail_before_any_weights_load(tmp_path, capsys, monkeypatch):
    def no_load(weights):
        raise AssertionError("weights were loaded for inputs that do not exist")

    monkeypatch.setattr(predict_mod, "_load_model", no_load)
    typo = tmp_path / "cta.jpg"
    rc, out, err = _predict(typo)
    assert rc == 1 and out == ""
    assert err.count(str(typo)) == 1 and "no such file" in err
    rc, out, err = _predict(typo, "--json")
    assert rc == 1 and json.loads(out) == [
        {"image": str(typo), "error": f"cannot read image {typo}: no such file"}]


def test_each_bad_image_is_reported_once(weights, tmp_path, capsys):
    good = _image(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    missing = tmp_path / "gone.png"
    for fmt in ((), ("--json",), ("--jsonl",)):
        rc, out, err = _predict(good, bad, missing, "--weights", weights, *fmt)
        assert rc == 1
        assert err.count(str(bad)) == 1 and err.count(str(missing)) == 1, fmt
        assert "2 of 3 images could not be classified" in err
        if not fmt:  # the table holds results; errors go to stderr only
            assert str(bad) not in out and out.startswith(good)


# ----------------------------------------------------------------- clean streams
def test_json_stdout_is_only_json_even_when_loading_prints(weights, tmp_path, capsys,
                                                           monkeypatch):
    import tf_mobilenet_v1.loaders.dispatch as dispatch

    load_any = dispatch.load_any

    def chatty(path, **kwargs):  # what keras.utils.get_file prints while downloading
        print("Downloading data from http://example/x.tgz\n 17/17 [=====] 0s/step")
        return load_any(path, **kwargs)

    monkeypatch.setattr(dispatch, "load_any", chatty)
    # --no-fast: the weights are a path, which a warm fast path would not load at all.
    rc, out, err = _predict(_image(tmp_path / "a.png"), "--weights", weights, "--json",
                            "--no-fast")
    assert rc == 0
    assert [r["image"] for r in json.loads(out)] == [str(tmp_path / "a.png")]
    assert "Downloading data" in err


def test_jsonl_streams_and_an_interrupted_run_keeps_what_it_finished(weights, tmp_path,
                                                                     capsys, monkeypatch):
    paths = [_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    rc, out, _ = _predict(*paths, "--weights", weights, "--jsonl", "--batch-size", "1")
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and [r["image"] for r in lines] == paths
    assert all(len(r["predictions"]) == 5 for r in lines)

    classify = predict_mod.classify

    def interrupted(*args, **kwargs):
        for n, result in enumerate(classify(*args, **kwargs)):
            if n == 2:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(predict_mod, "classify", interrupted)
    rc, out, err = _predict(*paths, "--weights", weights, "--jsonl", "--batch-size", "1")
    assert rc == 130 and "interrupted" in err
    assert [json.loads(line) for line in out.splitlines()] == lines[:2]


def test_table_escapes_control_characters_and_undecodable_names(tmp_path):
    model = tiny_model(seed=1, id2label={i: f"label{i}\x1b[2J\nforged" for i in range(1001)})
    weights = tmp_path / "evil.keras"
    model.save(weights)
    d = tmp_path / "imgs"
    d.mkdir()
    raw = os.fsencode(str(d)) + b"/\xff\x1b[31mred\rline.png"
    a = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    with open(raw, "wb") as f:
        Image.fromarray(a).save(f, format="PNG")
    run = cli("predict", d, "--weights", weights, "--top-k", "1")
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    out.encode("utf-8")  # strict: no lone surrogate (an undecodable byte) was written
    assert "\x1b" not in out and "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 2  # the file name line and one prediction: no forged lines
    assert lines[0].endswith("/\\xff\\x1b[31mred\\rline.png")
    assert lines[1].endswith("\\x1b[2J\\nforged")


# ----------------------------------------------------------------- conventional CLI
def test_version_help_and_module_entry_point():
    from tf_mobilenet_v1 import __version__

    proc = subprocess.run([sys.executable, "-m", "tf_mobilenet_v1", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mobilenet-v1 {__version__}"
    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0].choices
    assert set(subparsers) == {"info", "predict", "beam", "spark", "convert", "export"}
    for name, sub in subparsers.items():
        text = sub.format_help()
        assert "``" not in text and "%(" not in text, name  # no raw markup
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    predict_help = " ".join(subparsers["predict"].format_help().split())  # unwrapped
    assert "(default: 5)" in predict_help and "(default: model)" in predict_help
    assert "(default: mobilenet_v1_1.0_224)" in predict_help


@pytest.mark.slow  # a fresh interpreter or full exports: seconds
def test_broken_pipe_exits_quietly(weights, tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(40):
        _image(d / f"{i:02d}.png", seed=i)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "tf_mobilenet_v1", "predict", str(d),
                             "--weights", weights, "--jsonl", "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert json.loads(first)["image"].endswith("00.png")
    assert proc.returncode in (0, 141), err.decode()[-2000:]
    assert b"Traceback" not in err and b"BrokenPipe" not in err and b"Exception" not in err


def test_tflite_runs_without_the_xnnpack_notice():
    model = fixture_path("tflite", "mobilenet_v1_0.25_224_1_default_1.tflite")
    code = ("import numpy as np; from tf_mobilenet_v1.converters.tflite_inspect import run_tflite; "
            f"y = run_tflite({str(model)!r}, np.zeros((1, 224, 224, 3), np.float32)); "
            "print(y.shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(1, 1001)"
    assert "XNNPACK" not in proc.stderr and proc.stderr.strip() == ""


# ----------------------------------------------------------------- info
def test_info_shows_published_accuracy_url_and_cache_state(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert cli("info", "mobilenet_v1_1.0_224").returncode == 0
    out = capsys.readouterr().out
    assert "70.9% / 89.9% (published)" in out and "float32" in out
    assert "mobilenet_v1_2018_08_02/mobilenet_v1_1.0_224.tgz" in out
    assert "bundled with the package" in out
    assert cli("info", "mobilenet_v1_0.25_128_quant").returncode == 0
    out = capsys.readouterr().out
    assert out.startswith("mobilenet_v1_0.25_128_quant\n")
    assert "8-bit, quantization-aware trained" in out and "not downloaded yet" in out
    cached = tmp_path / "tf_mobilenet_v1" / "mobilenet_v1_0.25_128_quant.tgz"
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert cli("info", "mobilenet_v1_0.25_128_quant").returncode == 0
    assert f"cached ({cached})" in capsys.readouterr().out


def test_info_rejects_a_variant_that_was_never_published(capsys):
    assert cli("info", "mobilenet_v1_0.75_193").returncode == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mobilenet-v1: error: unknown variant 'mobilenet_v1_0.75_193'")
    assert "mobilenet_v1_0.75_192" in err and "\n" not in err


# ----------------------------------------------------------------- convert
def test_convert_directory_names_with_dots(weights, tmp_path, capsys):
    from safetensors.numpy import load_file

    mask = os.umask(0o022)
    try:
        assert cli("convert", weights, str(tmp_path / "mobilenet.v1") + "/").returncode == 0
        existing = tmp_path / "exists.v2"
        existing.mkdir()
        assert cli("convert", weights, str(existing), "--force").returncode == 0
    finally:
        os.umask(mask)
    capsys.readouterr()
    for d in (tmp_path / "mobilenet.v1", existing):
        assert sorted(os.listdir(d)) == ["config.json", "model.safetensors",
                                         "preprocessor_config.json"]
        for name in os.listdir(d):  # every file of the directory, not just some
            assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o644, name
        assert load_file(d / "model.safetensors")
    assert cli("convert", weights, str(tmp_path / "new.v3")).returncode == 1
    err = capsys.readouterr().err
    assert "cannot tell the output format" in err and f"{tmp_path / 'new.v3'}/" in err
    assert not (tmp_path / "new.v3").exists()


def test_convert_to_tflite_points_to_export(weights, tmp_path, capsys):
    assert cli("convert", weights, str(tmp_path / "m.tflite")).returncode == 1
    err = capsys.readouterr().err
    assert "mobilenet-v1 export" in err and not (tmp_path / "m.tflite").exists()


# ----------------------------------------------------------------- the real first run
@pytest.mark.slow
def test_readme_first_command_in_a_fresh_venv_without_network(tmp_path):
    """``pip install . && mobilenet-v1 predict IMAGE`` as the README writes it, with the network
    blocked and an empty Keras cache: the bundled weights classify the photo.

    The new venv gets this project as a built wheel (not editable, so the package data must
    really be in it); its dependencies come from the test environment through a ``.pth`` file,
    since pip has no network here either.
    """
    photo = fixture_path("images", "burger.jpg")
    readme = (ROOT / "README.md").read_text()
    assert "pip install . && mobilenet-v1 predict path/to/image.jpg" in readme
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(ROOT)], check=True,
                   timeout=600, capture_output=True)
    (wheel,) = wheels.glob("tf_mobilenet_v1-*.whl")
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "test_deps.pth").write_text("\n".join(deps) + "\n")
    blocked = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
               "PIP_NO_INDEX": "1", "NO_PROXY": "", "no_proxy": ""}
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "KERAS_HOME": str(tmp_path / "empty_keras_home"), "TF_CPP_MIN_LOG_LEVEL": "3",
           **blocked}
    # --ignore-installed: the test environment's own copy (on the .pth path) must neither
    # satisfy the install nor be uninstalled by it.
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
                    str(wheel)],
                   check=True, env=env, cwd=tmp_path, timeout=600, capture_output=True)
    code = "import tf_mobilenet_v1; print(tf_mobilenet_v1.__file__)"
    where = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env,
                           cwd=tmp_path, check=True)
    assert where.stdout.startswith(str(env_dir)), where.stdout  # the wheel, not the source tree
    proc = subprocess.run(["mobilenet-v1", "predict", str(photo)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == str(photo) and lines[1].rstrip().endswith("cheeseburger")
    # Keras writes its keras.json there on import; nothing was downloaded or cached.
    assert not (tmp_path / "empty_keras_home" / "tf_mobilenet_v1").exists()
    # The wheel carries the bundled weights' fast model: the first run converted nothing.
    assert not (tmp_path / ".cache" / "tf_mobilenet_v1").exists()


@pytest.mark.slow
@pytest.mark.interop
def test_cli_and_transformers_pipeline_agree_on_the_top5(capsys):
    """The default preprocessing is the weights' own: our CLI and transformers' pipeline on
    the bundled HF directory give the same top-5 for the fixture photos."""
    require_module("torch")
    transformers = require_module("transformers")
    from tf_mobilenet_v1 import registry

    bundled = registry.bundled_path("mobilenet_v1_1.0_224")
    photos = [str(fixture_path("images", name)) for name in PHOTOS]
    rc, out, err = _predict(*photos, "--json")
    assert rc == 0, err
    ours = {r["image"]: r["predictions"] for r in json.loads(out)}
    pipe = transformers.pipeline("image-classification", model=bundled, device="cpu")
    for path in photos:
        theirs = pipe(Image.open(path), top_k=5)
        assert [p["label"] for p in ours[path]] == [t["label"] for t in theirs], path
        np.testing.assert_allclose([p["score"] for p in ours[path]],
                                   [t["score"] for t in theirs], atol=1e-4)


@pytest.mark.slow
def test_cli_and_saved_model_bytes_signature_agree_on_the_top5(tmp_path, capsys):
    """The SavedModel's ``serving_bytes`` (in-graph decode, resize, crop) ranks the fixture
    photos as our CLI does with its default, the weights' own preprocessing."""
    import tensorflow as tf
    from tf_mobilenet_v1.converters.saved_model import export_saved_model

    from tf_mobilenet_v1 import MobileNetV1ForImageClassification

    photos = [str(fixture_path("images", name)) for name in PHOTOS]
    rc, out, err = _predict(*photos, "--json")
    assert rc == 0, err
    ours = {r["image"]: [p["index"] for p in r["predictions"]] for r in json.loads(out)}
    model = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    loaded = tf.saved_model.load(export_saved_model(model, tmp_path / "sm"))
    serve = loaded.signatures["serving_bytes"]
    for path in photos:
        got = serve(image_bytes=tf.constant([Path(path).read_bytes()]))
        assert got["top_k_indices"].numpy()[0].tolist() == ours[path], path


# ----------------------------------------------------------------- one preprocessing truth
def test_processor_follows_the_model_size_and_travels_with_the_weights(tmp_path):
    from tf_mobilenet_v1.converters.hf import save_hf

    from tf_mobilenet_v1 import MobileNetV1ForImageClassification
    from tf_mobilenet_v1.predict import classify
    from tf_mobilenet_v1.preprocessing import MobileNetV1ImageProcessor

    small = tiny_model(image_size=64)
    own = MobileNetV1ImageProcessor.for_model(small)
    assert own.output_size() == (64, 64) and own.size == {"shortest_edge": 96}

    resize = MobileNetV1ImageProcessor.for_variant(64, mode="resize")
    model = tiny_model(seed=2, image_size=64, image_processor=resize)
    assert MobileNetV1ImageProcessor.for_model(model).to_dict() == resize.to_dict()
    model.save(tmp_path / "m.keras")
    save_hf(model, str(tmp_path / "hf"))
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text()) == \
        resize.to_dict()
    photo = _image(tmp_path / "a.png")
    expected = list(classify([photo], model, "resize"))
    assert expected != list(classify([photo], model, "crop"))
    for path in (tmp_path / "m.keras", tmp_path / "hf"):
        loaded = MobileNetV1ForImageClassification.from_pretrained(str(path))
        assert loaded.image_processor.to_dict() == resize.to_dict(), path
        assert list(classify([photo], loaded)) == expected  # the default is the weights' own
    # A different image_size makes the carried crop stale: HF's crop at the new size instead.
    other = MobileNetV1ForImageClassification.from_pretrained(str(tmp_path / "hf"),
                                                              image_size=96)
    assert MobileNetV1ImageProcessor.for_model(other).output_size() == (96, 96)
