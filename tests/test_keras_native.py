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
        print(json.dumps({"trainable": len(m.trainable_weights),
                          "warnings": [str(c.message) for c in caught],
                          "diff": float(np.abs(w - np.load("w.npy")).max())}))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["trainable"] == 2
    assert not [w for w in out["warnings"] if "Skipping variable loading" in w]
    assert out["diff"] < 1e-6  # the optimizer state came back: fit resumed exactly


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
    ({"dtype": "float16"}, "'dtype'"),
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


def test_applications_official_weights_offline():
    """``weights="imagenet"`` at 224 px is the bundled checkpoint: same logits, softmax on top."""
    ours = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    app = MobileNetV1()  # keras.applications' defaults: imagenet weights, softmax
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(ours.predict(x, verbose=0)))
    np.testing.assert_allclose(app.predict(x, verbose=0), expected, atol=1e-6)


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
