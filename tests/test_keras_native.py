"""Keras users' habits: registration on import, frozen layers through .keras, strict
arguments, and the keras.applications calling convention (``MobileNetV1``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import tiny_model

from tf_mobilenet_v1 import (
    MobileNetV1,
    MobileNetV1ForImageClassification,
    MobileNetV1Model,
    MobileNetV1Preprocessing,
)

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


def _fresh(code: str, tmp_path) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter (nothing of ours imported unless it says so)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "always"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype("float32"), np.arange(n) % 3


# ----------------------------------------------------------------- registration
@pytest.mark.slow  # a fresh process or a training run: seconds, not milliseconds
def test_import_registers_every_class_for_a_users_own_model(tmp_path):
    """A Functional model of the user's, holding our preprocessing layer and backbone, loads
    after only ``import tf_mobilenet_v1``, whichever of keras and ours is imported first."""
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = MobileNetV1Preprocessing(SIZE, mode="resize")(inputs)
    x = tiny_model(MobileNetV1Model)(x)["pooler_output"]
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.save(tmp_path / "user.keras")
    pixels = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", pixels)
    np.save(tmp_path / "y.npy", model.predict(pixels, verbose=0))
    for imports in ("import keras, tf_mobilenet_v1", "import tf_mobilenet_v1, keras"):
        proc = _fresh(f"""
            {imports}
            import sys
            import numpy as np
            assert "tf_mobilenet_v1.models" in sys.modules  # registered, not just importable
            m = keras.saving.load_model("user.keras")
            y = m.predict(np.load("x.npy"), verbose=0)
            print(float(np.abs(y - np.load("y.npy")).max()))
        """, tmp_path)
        assert proc.returncode == 0, (imports, proc.stderr[-2000:])
        assert float(proc.stdout.strip()) == 0.0


def test_light_import_stays_light(tmp_path):
    proc = _fresh("""
        import sys, tf_mobilenet_v1
        print(sorted(m for m in ("keras", "tensorflow") if m in sys.modules))
    """, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-2000:]


# ----------------------------------------------------------------- frozen layers
def _fine_tune_model():
    base = MobileNetV1(include_top=False, weights=None, alpha=0.25, input_shape=(SIZE, SIZE, 3),
                       pooling="avg")
    inner = next(layer for layer in base.layers if isinstance(layer, MobileNetV1Model))
    inner.trainable = False
    model = keras.Model(base.inputs, keras.layers.Dense(3, name="head")(base.outputs[0]))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


@pytest.mark.slow  # a fresh process or a training run: seconds, not milliseconds
def test_fine_tune_saves_reloads_in_a_fresh_process_and_resumes_exactly(tmp_path):
    keras.utils.set_random_seed(0)
    model = _fine_tune_model()
    x, y = _data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    assert len(model.trainable_weights) == 2
    model.save(tmp_path / "ft.keras")
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)  # the run, continued
    np.save(tmp_path / "w.npy", np.concatenate([w.ravel() for w in model.get_weights()]))
    proc = _fresh("""
        import json, warnings
        import numpy as np
        import keras, tf_mobilenet_v1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = keras.saving.load_model("ft.keras")
        m.fit(np.load("x.npy"), np.load("y.npy"), epochs=1, batch_size=4, shuffle=False,
              verbose=0)
        w = np.concatenate([v.ravel() for v in m.get_weights()])
        # ... and the resumed fine-tune exports like our own classifier
        from tf_mobilenet_v1.converters.tflite import export_tflite
        from tf_mobilenet_v1.converters.tflite_inspect import run_tflite
        export_tflite(m, "ft.tflite", outputs="logits")
        x = np.load("x.npy")
        lite = run_tflite("ft.tflite", x)
        print(json.dumps({"trainable": len(m.trainable_weights),
                          "warnings": [str(c.message) for c in caught],
                          "diff": float(np.abs(w - np.load("w.npy")).max()),
                          "tflite_diff": float(np.abs(lite - m.predict(x, verbose=0)).max()),
                          "labels": open("labels.txt").read().split()}))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["trainable"] == 2
    assert not [w for w in out["warnings"] if "Skipping variable loading" in w]
    assert out["diff"] < 1e-6  # the optimizer state came back: fit resumed exactly
    assert out["tflite_diff"] < 1e-4
    assert out["labels"] == ["LABEL_0", "LABEL_1", "LABEL_2"]


def test_partly_frozen_backbone_keeps_its_flags(tmp_path):
    model = tiny_model()
    model.get_layer("Conv2d_0").trainable = False
    model.get_layer("Conv2d_1_depthwise").bn.trainable = False
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [v.path for v in loaded.trainable_weights] == [v.path for v in model.trainable_weights]
    assert len(loaded.trainable_weights) < len(loaded.weights)


# ----------------------------------------------------------------- strict arguments
@pytest.mark.parametrize("kwargs, match", [
    ({"depth_mutliplier": 0.5}, "'depth_mutliplier'; did you mean 'depth_multiplier'"),
    ({"include_top": False}, "'include_top'; it is a keras.applications argument"),
    ({"weights": "imagenet"}, "'weights'; it is a keras.applications argument"),
    ({"pooling": "avg"}, "'pooling'"),
    ({"dtpye": "float16"}, "'dtpye'; did you mean 'dtype'"),
])
def test_unknown_keyword_arguments_are_type_errors(kwargs, match):
    for cls in (MobileNetV1Model, MobileNetV1ForImageClassification):
        with pytest.raises(TypeError, match=match):
            cls(depth_multiplier=0.25, image_size=SIZE, **kwargs)


def test_unknown_call_arguments_and_from_pretrained_typos(tmp_path):
    model = tiny_model()
    x = _data(1)[0]
    with pytest.raises(TypeError, match="output_hidden_states"):
        model(x, output_hidden_states=True)
    np.testing.assert_allclose(model(x, training=False), model.predict(x, verbose=0), atol=1e-5)
    model.save(tmp_path / "m.keras")
    with pytest.raises(TypeError, match="depth_mutliplier"):
        MobileNetV1ForImageClassification.from_pretrained(str(tmp_path / "m.keras"),
                                                          depth_mutliplier=0.5)


# ----------------------------------------------------------------- keras.applications
def test_applications_arguments_without_weights():
    x = _data(2)[0]
    top = MobileNetV1(weights=None, alpha=0.25, input_shape=(SIZE, SIZE, 3), classes=10)
    probs = top.predict(x, verbose=0)
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)  # softmax in the graph
    logits = MobileNetV1(weights=None, alpha=0.25, input_shape=(SIZE, SIZE, 3), classes=10,
                         classifier_activation=None)
    assert isinstance(logits, MobileNetV1ForImageClassification)
    for pooling, shape in ((None, (2, 1, 1, 256)), ("avg", (2, 256)), ("max", (2, 256))):
        base = MobileNetV1(include_top=False, weights=None, alpha=0.25, pooling=pooling,
                           input_shape=(SIZE, SIZE, 3))
        out = base.predict(x, verbose=0)
        out = out["last_hidden_state"] if isinstance(out, dict) else out
        assert out.shape == shape, pooling
    tensor = keras.Input((48, 48, 3))
    app = MobileNetV1(include_top=False, weights=None, alpha=0.25, input_tensor=tensor,
                      pooling="avg")
    assert app.inputs[0] is tensor and app.output.shape == (None, 256)
    with pytest.raises(ValueError, match="1001 classes"):
        MobileNetV1(classes=10)
    with pytest.raises(ValueError, match="pooling must be"):
        MobileNetV1(weights=None, pooling="sum")


@pytest.mark.slow  # the full-size 1.0_224 weights
def test_applications_official_weights_offline():
    """``weights="imagenet"`` at 224 px is the bundled checkpoint: same logits, softmax on top."""
    ours = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    app = MobileNetV1()  # keras.applications' defaults: imagenet weights, softmax
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(ours.predict(x, verbose=0)))
    np.testing.assert_allclose(app.predict(x, verbose=0), expected, atol=1e-6)


@pytest.mark.slow  # the full-size 1.0_224 weights
def test_applications_backbone_from_official_weights_is_quiet_and_exact():
    """``include_top=False`` asks for no head: no warning about the one left out."""
    import warnings

    ours = MobileNetV1Model.from_pretrained("mobilenet_v1_1.0_224")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base = MobileNetV1(include_top=False, pooling="avg", input_shape=(96, 96, 3))
    x = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3)).astype("float32")
    expected = ours.predict(x, verbose=0)["pooler_output"]
    np.testing.assert_allclose(base.predict(x, verbose=0), expected.reshape(1, -1), atol=1e-5)


# ----------------------------------------------------------------- dtype policies
def test_dtype_policies_are_honoured_and_saved(tmp_path):
    x = _data(2)[0]
    ref = tiny_model()
    for policy in ("mixed_bfloat16", "bfloat16"):
        model = MobileNetV1ForImageClassification(depth_multiplier=0.25, image_size=SIZE,
                                                  dtype=policy)
        model.set_weights(ref.get_weights())
        assert model.get_layer("Conv2d_3_pointwise").dtype_policy.name == policy
        y = model.predict(x, verbose=0)
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        variables = {keras.backend.standardize_dtype(v.dtype) for v in model.weights}
        assert variables == ({"float32"} if policy.startswith("mixed") else {"bfloat16"})
        np.testing.assert_allclose(np.asarray(y, "float32"), ref.predict(x, verbose=0),
                                   atol=0.1, rtol=0.05)  # bfloat16 has 8 bits of mantissa
        model.save(tmp_path / f"{policy}.keras")
        again = keras.saving.load_model(tmp_path / f"{policy}.keras")
        assert again.get_layer("Logits").dtype_policy.name == policy
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:  # keras.mixed_precision.set_global_policy, as keras.applications users do
        assert tiny_model().get_layer("Conv2d_0").compute_dtype == "bfloat16"
    finally:
        keras.config.set_dtype_policy(previous)


# ----------------------------------------------------------------- slim's head options
def test_num_labels_zero_is_slims_pre_logits(tmp_path):
    classifier = tiny_model()
    classifier.save(tmp_path / "m.keras")
    x = _data(2)[0]
    backbone = MobileNetV1Model.from_pretrained(str(tmp_path / "m.keras"))
    features = backbone.predict(x, verbose=0)["pooler_output"]
    for none in (0, None):
        pre = MobileNetV1ForImageClassification.from_pretrained(str(tmp_path / "m.keras"),
                                                                num_labels=none)
        assert pre.config.num_labels == 0 and pre.config.id2label == {}
        assert "Logits" not in [layer.name for layer in pre.layers]
        np.testing.assert_array_equal(pre.predict(x, verbose=0), features)
    with pytest.raises(ValueError, match="num_labels=0"):
        pre.decode(features)
    pre.save(tmp_path / "pre.keras")
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "pre.keras")
                                  .predict(x, verbose=0), features)


def test_spatial_squeeze_false_keeps_the_1x1_map(tmp_path):
    from tf_mobilenet_v1.converters.hf import save_hf

    model = tiny_model(spatial_squeeze=False)
    assert model.output.shape == (None, 1, 1, 1001)
    ref = tiny_model()
    x = _data(2)[0]
    np.testing.assert_array_equal(model.predict(x, verbose=0)[:, 0, 0], ref.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    save_hf(model, tmp_path / "hf")
    for path in (tmp_path / "m.keras", tmp_path / "hf"):
        assert MobileNetV1ForImageClassification.from_pretrained(str(path)).output.shape == \
            (None, 1, 1, 1001)


def test_fixed_pool_at_any_size_without_rebuilding(tmp_path):
    """``global_pool=False`` with an open input size: slim's reduced kernel on small maps,
    spatial logits on large ones, from one model."""
    ref = tiny_model(global_pool=False)
    open_size = MobileNetV1ForImageClassification(ref.config, input_shape=(None, None, 3))
    open_size.set_weights(ref.get_weights())
    assert open_size.output.shape == (None, None, None, 1001)
    for size, spatial in ((32, 1), (45, 1), (96, 1), (320, 2)):  # 320 px: a 10x10 map
        x = np.random.default_rng(size).uniform(-1, 1, (2, size, size, 3)).astype("float32")
        fixed = MobileNetV1ForImageClassification(ref.config, input_shape=(size, size, 3))
        fixed.set_weights(ref.get_weights())
        expected = fixed.predict(x, verbose=0).reshape(2, spatial, spatial, 1001)
        got = open_size.predict(x, verbose=0)
        assert got.shape == (2, spatial, spatial, 1001), size
        np.testing.assert_allclose(got, expected, atol=1e-5)
    open_size.save(tmp_path / "open.keras")
    assert keras.saving.load_model(tmp_path / "open.keras").input_shape == (None, None, None, 3)


# ----------------------------------------------------------------- config edits
def test_config_edits_stay_consistent():
    from tf_mobilenet_v1 import MobileNetV1Config

    config = MobileNetV1Config()
    config.num_labels = 3  # HF style
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    config.id2label = {0: "cat", 1: "dog"}
    assert config.num_labels == 2 and config.label2id == {"cat": 0, "dog": 1}
    config.label2id = {"dog": 0, "cat": 1}
    assert config.id2label == {0: "dog", 1: "cat"}
    with pytest.raises(AttributeError, match="did you mean 'depth_multiplier'"):
        config.depth_mutliplier = 0.5
    with pytest.raises(ValueError, match="num_labels must be an integer"):
        config.num_labels = -1
    with pytest.raises(ValueError, match="id2label keys must be 0..1"):
        config.id2label = {0: "a", 5: "b"}
    assert config.num_labels == 2 and config.id2label == {0: "dog", 1: "cat"}  # unchanged


def test_a_built_models_config_only_renames_labels(tmp_path):
    model = tiny_model(num_labels=3)
    with pytest.raises(AttributeError, match="cannot change num_labels"):
        model.config.num_labels = 4
    with pytest.raises(AttributeError, match="cannot change depth_multiplier"):
        model.config.depth_multiplier = 0.5
    with pytest.raises(AttributeError, match="must name exactly 3"):
        model.config.id2label = {0: "cat"}
    model.config.id2label = {0: "cat", 1: "dog", 2: "bird"}
    assert model.config.label2id == {"cat": 0, "dog": 1, "bird": 2}
    assert model.decode(np.eye(3, dtype="float32"), top_k=1)[1][0][1] == "dog"
    model.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras").config.id2label[2] == "bird"
    from tf_mobilenet_v1 import MobileNetV1Config

    given = MobileNetV1Config(depth_multiplier=0.25, image_size=SIZE)
    MobileNetV1Model(given)
    given.num_labels = 5  # the caller's own config object stays free to edit


def test_config_and_processor_save_pretrained_round_trip(tmp_path):
    from tf_mobilenet_v1 import MobileNetV1Config, MobileNetV1ImageProcessor

    config = MobileNetV1Config(depth_multiplier=0.5, image_size=160, num_labels=2,
                               id2label={0: "no", 1: "yes"})
    path = config.save_pretrained(tmp_path / "d")
    assert Path(path).name == "config.json"
    assert MobileNetV1Config.from_pretrained(tmp_path / "d") == config
    config.to_json_file(tmp_path / "c.json")
    assert MobileNetV1Config.from_pretrained(tmp_path / "c.json") == config
    assert json.loads((tmp_path / "c.json").read_text())["model_type"] == "mobilenet_v1"
    assert MobileNetV1Config.from_pretrained("mobilenet_v1_0.5_160").image_size == 160
    proc = MobileNetV1ImageProcessor.from_pretrained("mobilenet_v1_0.5_160")  # no download
    assert proc.crop_size == {"height": 160, "width": 160}
    proc.save_pretrained(tmp_path / "d")
    again = MobileNetV1ImageProcessor.from_pretrained(tmp_path / "d")
    assert again.to_dict() == proc.to_dict()
    proc.to_json_file(tmp_path / "p.json")
    assert MobileNetV1ImageProcessor.from_pretrained(tmp_path / "p.json").to_dict() == \
        proc.to_dict()


@pytest.mark.interop
def test_transformers_reads_our_config_processor_and_pre_logits_dir(tmp_path):
    """What HF users get from our saves: num_labels=0 is HF's identity classifier."""
    import torch
    from conftest import require_module

    transformers = require_module("transformers")
    from tf_mobilenet_v1.converters.hf import save_hf

    from tf_mobilenet_v1 import MobileNetV1ImageProcessor

    pre = MobileNetV1ForImageClassification(depth_multiplier=0.25, image_size=SIZE,
                                            num_labels=0)
    save_hf(pre, tmp_path / "hf")
    theirs = transformers.MobileNetV1ForImageClassification.from_pretrained(tmp_path / "hf")
    assert isinstance(theirs.classifier, torch.nn.Identity)
    x = _data(2)[0]
    with torch.no_grad():
        out = theirs(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()
    np.testing.assert_allclose(out, pre.predict(x, verbose=0), atol=1e-4)
    MobileNetV1ImageProcessor.for_variant(160).save_pretrained(tmp_path / "p")
    their_proc = transformers.AutoImageProcessor.from_pretrained(tmp_path / "p")
    assert their_proc.crop_size["height"] == 160 and their_proc.size["shortest_edge"] == 192


@pytest.mark.slow  # a fresh interpreter or full exports: seconds
def test_export_takes_a_users_model_file_and_refuses_other_models(tmp_path):
    import tensorflow as tf
    from tf_mobilenet_v1.converters.export import export

    model = _fine_tune_model()
    model.save(tmp_path / "ft.keras")
    out = export(str(tmp_path / "ft.keras"), str(tmp_path / "sm"), format="saved_model")
    x = _data(2)[0]
    served = tf.saved_model.load(out).signatures["serving_default"](pixel_values=tf.constant(x))
    np.testing.assert_allclose(served["logits"].numpy(), model.predict(x, verbose=0), atol=1e-5)
    assert served["probabilities"].shape == (2, 3)
    inputs = keras.Input((SIZE, SIZE, 3))
    plain = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="built around one of our MobileNet V1 models"):
        export(plain, str(tmp_path / "x.tflite"))


@pytest.mark.slow  # a child process: importing Keras alone takes seconds
def test_a_saved_config_is_short(tmp_path):
    """ImageNet's 1001 names are rebuilt from num_labels, not saved: the config in a .keras is
    under a kilobyte (60 KB before), so Keras's error when ``tf_mobilenet_v1`` was never
    imported shows a config a person can read; custom names are still saved."""
    import subprocess
    import sys
    import zipfile

    from hostile import child_env

    tiny_model().save(tmp_path / "m.keras")
    assert len(zipfile.ZipFile(tmp_path / "m.keras").read("config.json")) < 1024
    code = "import keras, sys; keras.saving.load_model(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.keras")],
                          capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode != 0 and "MobileNetV1ForImageClassification" in proc.stderr
    assert len(proc.stderr) < 8000, len(proc.stderr)
    named = tiny_model(num_labels=2)
    named.config.id2label = {0: "cat", 1: "dog"}
    named.save(tmp_path / "n.keras")
    assert keras.saving.load_model(tmp_path / "n.keras").config.id2label == {0: "cat", 1: "dog"}
