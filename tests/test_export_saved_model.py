"""SavedModel export: three signatures, run in a fresh process that never imports this package."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import cli, fixture_path, randomize, tiny_model
from PIL import Image
from tf_mobilenet_v1.converters import saved_model as sm
from tf_mobilenet_v1.converters.export import default_output, export

from tf_mobilenet_v1 import MobileNetV1ForImageClassification
from tf_mobilenet_v1.preprocessing import MobileNetV1Preprocessing

SIZE = 64

# Runs in a separate interpreter: only tensorflow and numpy. Arrays come in an .npz, encoded
# images as files; outputs go back in an .npz (strings as unicode arrays, never pickles).
FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf

path, inputs, outputs, *blobs = sys.argv[1:]
d = np.load(inputs)
m = tf.saved_model.load(path)
encoded = [open(b, "rb").read() for b in blobs]
calls = {
    "serving_default": dict(pixel_values=tf.constant(d["pixel_values"])),
    "serving_uint8": dict(images=tf.constant(d["images"])),
    "serving_bytes": dict(image_bytes=tf.constant(encoded)),
}
arrays = {}
for key, kwargs in calls.items():
    for name, value in m.signatures[key](**kwargs).items():
        value = value.numpy()
        arrays[f"{key}/{name}"] = value.astype(str) if value.dtype == object else value
np.savez(outputs, **arrays)
print(json.dumps({
    "signatures": sorted(m.signatures.keys()),
    "package_imported": any(k.split(".")[0] in ("tf_mobilenet_v1", "converters")
                            for k in sys.modules),
}))
"""


def _encode(images, fmt):
    out = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, fmt)
        out.append(buf.getvalue())
    return out


def run_fresh(path, tmp_path, pixel_values, images, encoded):
    """Run the three signatures in a fresh interpreter; return (info, outputs)."""
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, pixel_values=pixel_values, images=images)
    blobs = []
    for i, data in enumerate(encoded):
        blobs.append(tmp_path / f"image{i}.bin")
        blobs[-1].write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", FRESH, str(path), str(inputs), str(outputs),
                           *map(str, blobs)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(outputs) as data:
        return info, {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(image_size=SIZE)


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    return sm.export_saved_model(tiny, tmp_path_factory.mktemp("sm") / "saved_model")


def test_signatures(exported):
    sigs = sm.saved_model_signatures(exported)
    assert set(sigs) == set(sm.SIGNATURES)
    assert sigs["serving_default"]["inputs"] == {"pixel_values": ("float32", (None, None, None, 3))}
    assert set(sigs["serving_default"]["outputs"]) == {"logits", "probabilities"}
    assert sigs["serving_uint8"]["inputs"] == {"images": ("uint8", (None, None, None, 3))}
    assert sigs["serving_bytes"]["inputs"] == {"image_bytes": ("string", (None,))}
    for key in ("serving_uint8", "serving_bytes"):
        outs = sigs[key]["outputs"]
        assert outs["top_k_indices"] == ("int32", (None, 5))
        assert outs["top_k_labels"] == ("string", (None, 5))
        assert outs["logits"] == ("float32", (None, 1001))


@pytest.mark.slow  # a fresh process or a training run: seconds, not milliseconds
def test_fresh_process_matches_keras(tiny, exported, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    images = rng.integers(0, 256, (2, 90, 70, 3), dtype=np.uint8)
    info, out = run_fresh(exported, tmp_path, x, images, _encode(images, "PNG"))
    assert info["signatures"] == sorted(sm.SIGNATURES)
    assert not info["package_imported"]

    logits = tiny.predict(x, verbose=0)
    assert np.abs(out["serving_default/logits"] - logits).max() < 1e-5
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    assert np.abs(out["serving_default/probabilities"] - probs).max() < 1e-5

    # uint8 images: the package's preprocessing layer in the graph, then the model.
    expected = tiny.predict(np.asarray(MobileNetV1Preprocessing(SIZE)(images)), verbose=0)
    for key in ("serving_uint8", "serving_bytes"):  # PNG decodes to the same pixels
        assert np.abs(out[f"{key}/logits"] - expected).max() < 1e-5
        top = np.argsort(-expected, axis=-1, kind="stable")[:, :5]
        np.testing.assert_array_equal(out[f"{key}/top_k_indices"], top)
        names = [[tiny.config.id2label[int(i)] for i in row] for row in top]
        assert out[f"{key}/top_k_labels"].tolist() == names
        np.testing.assert_allclose(out[f"{key}/top_k_probabilities"],
                                   np.take_along_axis(out[f"{key}/probabilities"], top, -1))


def test_labels_asset(tiny, exported):
    text = open(os.path.join(exported, "assets.extra", "labels.txt"), encoding="utf-8").read()
    assert text.splitlines() == [tiny.config.id2label[i] for i in range(1001)]


@pytest.mark.slow
def test_force_replaces_directory(tmp_path):
    a = randomize(MobileNetV1ForImageClassification(depth_multiplier=0.25, image_size=SIZE,
                                                    num_labels=3), 1)
    dst = tmp_path / "sm"
    sm.export_saved_model(a, dst, top_k=2)
    # A file our exports never write, at any depth, makes the folder not ours: refused.
    (dst / "assets.extra" / "stale.txt").write_text("the user's")
    with pytest.raises(FileExistsError, match="assets.extra/stale.txt"):
        sm.export_saved_model(a, dst, top_k=3, force=True)
    assert (dst / "assets.extra" / "stale.txt").read_text() == "the user's"
    (dst / "assets.extra" / "stale.txt").unlink()
    sm.export_saved_model(a, dst, top_k=3, force=True)
    sigs = sm.saved_model_signatures(dst)
    assert sigs["serving_uint8"]["outputs"]["top_k_indices"] == ("int32", (None, 3))
    assert sorted(os.listdir(tmp_path)) == ["sm"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_k=0), "top_k"), (dict(top_k=2000), "top_k"),
    (dict(preprocessing="center"), "preprocessing"),
])
def test_bad_options(tiny, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sm.export_saved_model(tiny, tmp_path / "sm", **kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # real exports: seconds
def test_export_default_path_and_cli(tiny, tmp_path, monkeypatch, capsys):

    monkeypatch.chdir(tmp_path)
    out = export(tiny, format="saved_model")
    assert out == default_output("mobilenet_v1_0.25_64", "saved_model")
    assert os.path.isfile(os.path.join(out, "saved_model.pb"))
    summary = capsys.readouterr().out
    assert "signature serving_bytes: image_bytes string[None]" in summary
    with pytest.raises(ValueError, match="TFLite only"):
        export(tiny, "x", format="saved_model", quantize="float16")
    tiny.save(tmp_path / "tiny.keras")
    assert cli("export", "tiny.keras", out, "--format", "saved_model").returncode == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_official_weights_fresh_process_on_fixture_photos(tmp_path):
    path = fixture_path("official", "mobilenet_v1_0.25_128")
    model = MobileNetV1ForImageClassification.from_pretrained(str(path))
    ref = np.load(path / "reference_logits.npz")
    photos = [fixture_path("images", str(n)) for n in ref["images"]]
    dst = sm.export_saved_model(model, tmp_path / "sm", preprocessing="resize")
    # serving_uint8 needs one batch size: resize the photos to a common size first.
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((160, 120))) for p in photos])
    encoded = [p.read_bytes() for p in photos if p.suffix == ".bmp"]
    info, out = run_fresh(dst, tmp_path, ref["inputs"], images, encoded)
    assert not info["package_imported"]
    keras_logits = model.predict(ref["inputs"], verbose=0)
    assert np.abs(out["serving_default/logits"] - keras_logits).max() < 1e-5
    assert np.abs(out["serving_default/logits"] - ref["logits"]).max() < 1e-4
    prep = MobileNetV1Preprocessing(128, mode="resize")
    expected = model.predict(np.asarray(prep(images)), verbose=0)
    assert np.abs(out["serving_uint8/logits"] - expected).max() < 1e-5
    # BMP photos through the bytes signature: same top-1 as the reference (PIL resize).
    bmp = [i for i, p in enumerate(photos) if p.suffix == ".bmp"]
    np.testing.assert_array_equal(out["serving_bytes/top_k_indices"][:, 0],
                                  ref["logits"][bmp].argmax(-1))


@pytest.mark.slow  # a fresh interpreter or full exports: seconds
def test_feature_vector_signatures(tiny, tmp_path):
    """task="feature-vector": every signature outputs the backbone's pooled features."""
    import keras
    import tensorflow as tf

    out = export(tiny, str(tmp_path / "fv"), format="saved_model", task="feature-vector")
    loaded = tf.saved_model.load(out)
    x = np.random.default_rng(0).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    sub = keras.Model(tiny.inputs[0], tiny.get_layer("AvgPool_1a").output)
    ref = np.asarray(sub(x)).reshape(3, -1)
    got = loaded.signatures["serving_default"](pixel_values=tf.constant(x))
    assert set(got) == {"features"}
    assert np.abs(got["features"].numpy() - ref).max() < 1e-5
    images = np.random.default_rng(1).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)
    got = loaded.signatures["serving_uint8"](images=tf.constant(images))["features"].numpy()
    prep = MobileNetV1Preprocessing(SIZE, mode="crop")
    assert np.abs(got - np.asarray(sub(prep(images))).reshape(2, -1)).max() < 1e-5
    assert out == str(tmp_path / "fv")
    assert default_output("v", "saved_model", task="feature-vector") == os.path.join(
        "saved_models", "v", "feature_vector_saved_model")
    with pytest.raises(ValueError, match="--outputs applies to TFLite"):
        export(tiny, str(tmp_path / "x"), format="saved_model", outputs="logits")
    assert not os.path.exists(tmp_path / "x")


def test_predict_runs_the_export_as_it_is(tiny, exported):
    """``predict --weights SM``: the export's own graph, labels and processor give the Keras
    model's results; its graph passes the op check that foreign graphs fail."""
    from tf_mobilenet_v1.graph_check import check_saved_model
    from tf_mobilenet_v1.predict import classify

    check_saved_model(exported)
    photos = [fixture_path("images", n) for n in ("burger.jpg", "cat.bmp")]
    want = list(classify(photos, tiny, top_k=3))
    run = cli("predict", "--jsonl", "--top-k", "3", "--weights", exported, *photos)
    assert run.returncode == 0, run.stderr
    got = [json.loads(line) for line in run.stdout.splitlines()]
    for g, w in zip(got, want, strict=True):
        assert [p["label"] for p in g["predictions"]] == [p["label"] for p in w["predictions"]]
        np.testing.assert_allclose([p["score"] for p in g["predictions"]],
                                   [p["score"] for p in w["predictions"]], atol=1e-5)


def test_a_foreign_saved_model_is_refused_before_it_runs(tmp_path):
    """A SavedModel is a program: one whose serving signature writes a file (or runs any op
    our exports never have) is refused from its saved_model.pb, before TensorFlow loads it,
    by predict and Beam alike; nothing is written."""
    import tensorflow as tf

    target = tmp_path / "planted.txt"

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def serve(self, pixel_values):
            tf.io.write_file(str(target), "owned")
            return {"logits": tf.reduce_mean(pixel_values, axis=[1, 2])}

    module = Hostile()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    assert not target.exists()
    run = cli("predict", "--weights", tmp_path / "sm", fixture_path("images", "cat.bmp"))
    assert run.returncode == 1
    line = run.one_line_error()
    assert "runs TensorFlow ops that an exported MobileNet V1 never has (WriteFile)" in line
    assert not target.exists()
    from tf_mobilenet_v1.engines import open_engine  # what Beam's workers load

    with pytest.raises(ValueError, match="WriteFile"):
        open_engine(str(tmp_path / "sm"))
    assert not target.exists()
