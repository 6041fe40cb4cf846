"""The model code on every Keras backend: build, predict, fit and ``.keras`` round trips under
``KERAS_BACKEND=jax`` and ``torch``, with the official weights' logits equal to TensorFlow's.

Each backend runs in its own interpreter (Keras fixes the backend at import); this is a focused
subset, not the whole suite again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import require_module, tiny_model

from tf_mobilenet_v1 import MobileNetV1ForImageClassification

pytestmark = [pytest.mark.slow, pytest.mark.backends]
SIZE = 64

SCRIPT = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    import tf_mobilenet_v1  # registers our classes: nothing else is imported by name
    from tf_mobilenet_v1 import MobileNetV1ForImageClassification
    from tf_mobilenet_v1.applications import MobileNetV1

    out, x_path, tf_keras = sys.argv[1:4]
    x = np.load(x_path)
    report = {"backend": keras.backend.backend()}

    official = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    np.save(out + "/official.npy", official.predict(x, verbose=0))

    # A .keras saved under TensorFlow loads here and gives TensorFlow's numbers.
    np.save(out + "/from_tf.npy", keras.saving.load_model(tf_keras).predict(x[:, :64, :64]))

    # keras.applications-style fine-tune: frozen backbone, new head, fit, save, reload, resume.
    base = MobileNetV1(include_top=False, weights=None, alpha=0.25, pooling="avg",
                       input_shape=(64, 64, 3))
    base.trainable = False
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(base(inputs, training=False)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xs, ys = x[:, :64, :64], np.arange(len(x)) % 3
    model.fit(xs, ys, epochs=1, batch_size=2, shuffle=False, verbose=0)
    model.save(out + "/fine_tuned.keras")
    again = keras.saving.load_model(out + "/fine_tuned.keras")
    report["trainable"] = [len(model.trainable_weights), len(again.trainable_weights)]
    report["reload_diff"] = float(np.abs(model.predict(xs, verbose=0)
                                         - again.predict(xs, verbose=0)).max())
    model.fit(xs, ys, epochs=1, batch_size=2, shuffle=False, verbose=0)
    again.fit(xs, ys, epochs=1, batch_size=2, shuffle=False, verbose=0)
    report["resume_diff"] = float(np.abs(model.predict(xs, verbose=0)
                                         - again.predict(xs, verbose=0)).max())
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def tf_reference(tmp_path_factory):
    """Inputs, TensorFlow-backend logits of the official weights, and a .keras saved under TF."""
    assert keras.backend.backend() == "tensorflow"
    tmp = tmp_path_factory.mktemp("tf_reference")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype("float32")
    np.save(tmp / "x.npy", x)
    official = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    small = tiny_model(image_size=SIZE)
    small.save(tmp / "tiny.keras")
    return {"dir": tmp, "official": official.predict(x, verbose=0),
            "tiny": small.predict(x[:, :SIZE, :SIZE], verbose=0)}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_builds_predicts_fits_and_round_trips(backend, tf_reference, tmp_path):
    require_module(backend)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    ref = tf_reference["dir"]
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(ref / "x.npy"),
                          str(ref / "tiny.keras")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    np.testing.assert_allclose(np.load(tmp_path / "official.npy"), tf_reference["official"],
                               atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "from_tf.npy"), tf_reference["tiny"],
                               atol=1e-5)
    assert report["trainable"] == [2, 2]  # only the new Dense head, before and after reload
    assert report["reload_diff"] == 0.0
    assert report["resume_diff"] < 1e-5  # the optimizer state came back with the weights
