"""The Keras models: padding semantics, shapes, outputs, serialization, folding and training,
and what ``predict`` does with inputs it cannot trust (raw pixels, empty batches)."""

import re
import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import fixture_path, randomize, tiny_model

from tf_mobilenet_v1 import (
    MobileNetV1Config,
    MobileNetV1ForImageClassification,
    MobileNetV1ImageProcessor,
    MobileNetV1Model,
    decode_predictions,
)
from tf_mobilenet_v1.architecture import output_size
from tf_mobilenet_v1.errors import InputRangeWarning
from tf_mobilenet_v1.layers import ConvBlock

TINY = dict(depth_multiplier=0.25, num_labels=5)


def _identity_bn_block(kind, stride, tf_padding, channels=4):
    block = ConvBlock(kind, channels, kernel_size=3, strides=stride, tf_padding=tf_padding,
                      activation="linear", epsilon=1e-3)
    block.build((None, None, None, channels))
    rng = np.random.default_rng(1)
    block.conv.kernel.assign(rng.normal(size=block.conv.kernel.shape).astype("float32"))
    gamma, beta, mean, var = (w for w in block.bn.weights)
    gamma.assign(np.ones(channels, "float32"))
    beta.assign(np.zeros(channels, "float32"))
    mean.assign(np.zeros(channels, "float32"))
    var.assign(np.full(channels, 1 - 1e-3, "float32"))  # BN becomes the identity
    return block


@pytest.mark.parametrize("size", [9, 10, 17])
@pytest.mark.parametrize("kind", ["conv", "depthwise"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("tf_padding", [True, False])
def test_padding_matches_tf_nn(size, kind, stride, tf_padding):
    block = _identity_bn_block(kind, stride, tf_padding)
    x = np.random.default_rng(size).normal(size=(2, size, size + 1, 4)).astype("float32")
    k = block.conv.kernel
    if tf_padding:
        xp, padding = x, "SAME"
    else:
        xp, padding = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]), "VALID"
    if kind == "conv":
        ref = tf.nn.conv2d(xp, k, stride, padding)
    else:
        ref = tf.nn.depthwise_conv2d(xp, k, [1, stride, stride, 1], padding)
    out = block(x, training=False)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("tf_padding", [True, False])
@pytest.mark.parametrize("size", [32, 33, 64, 97])
def test_last_hidden_state_size(tf_padding, size):
    m = MobileNetV1Model(depth_multiplier=0.25, tf_padding=tf_padding)
    out = m(np.zeros((1, size, size, 3), "float32"))
    expected = size
    from tf_mobilenet_v1.architecture import layer_specs
    for s in layer_specs(depth_multiplier=0.25):
        expected = output_size(expected, s, tf_padding)
    assert out["last_hidden_state"].shape == (1, expected, expected, 256)
    if tf_padding:
        assert expected == -(-size // 32)  # SAME: ceil, e.g. 33 -> 2 (225 -> 8)


def test_hidden_states_and_pooler():
    m = MobileNetV1Model(depth_multiplier=0.25, output_hidden_states=True)
    out = m(np.random.rand(2, 64, 64, 3).astype("float32"))
    hs = out["hidden_states"]
    assert len(hs) == 26
    assert hs[0].shape == (2, 32, 32, 8) and hs[-1].shape == (2, 2, 2, 256)
    np.testing.assert_array_equal(hs[-1], out["last_hidden_state"])
    np.testing.assert_allclose(out["pooler_output"], np.mean(hs[-1], axis=(1, 2)), atol=1e-6)


def test_feature_layers_multi_output():
    names = ["Conv2d_5_pointwise", "Conv2d_11_pointwise", "Conv2d_12_pointwise",
             "Conv2d_13_pointwise"]
    m = MobileNetV1Model(depth_multiplier=0.25, feature_layers=names)
    out = m(np.zeros((1, 96, 96, 3), "float32"))
    assert list(out) == names
    assert [tuple(out[n].shape[1:3]) for n in names] == [(12, 12), (6, 6), (3, 3), (3, 3)]
    with pytest.raises(ValueError, match="unknown feature layers"):
        MobileNetV1Model(depth_multiplier=0.25, feature_layers=["Conv2d_99"])


@pytest.mark.parametrize("output_stride,size", [(8, 12), (16, 6), (32, 3)])
def test_output_stride_map_size(output_stride, size):
    m = MobileNetV1Model(depth_multiplier=0.25, output_stride=output_stride)
    out = m(np.zeros((1, 96, 96, 3), "float32"))
    assert out["last_hidden_state"].shape == (1, size, size, 256)


def test_global_pool_false_spatial_logits():
    m = MobileNetV1ForImageClassification(global_pool=False, input_shape=(320, 320, 3), **TINY)
    assert m.output_shape == (None, 2, 2, 5)
    small = MobileNetV1ForImageClassification(global_pool=False, image_size=64, **TINY)
    assert small.output_shape == (None, 5)  # the 7x7 kernel shrinks to the 2x2 map


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="minimum of 32x32"):
        MobileNetV1Model(input_shape=(16, 16, 3))


def test_classifier_outputs_logits_and_probabilities():
    m = randomize(MobileNetV1ForImageClassification(**TINY))
    x = np.random.rand(3, 48, 48, 3).astype("float32")
    logits = m.predict(x, verbose=0)
    assert logits.shape == (3, 5)
    p = m.predict_proba(x, verbose=0)
    np.testing.assert_allclose(p.sum(-1), 1, atol=1e-5)
    assert (p.argmax(-1) == logits.argmax(-1)).all()
    top = decode_predictions(logits, top_k=2, id2label=m.config.id2label)
    assert top[0][0][0] == int(logits[0].argmax()) and top[0][0][1].startswith("LABEL_")
    with pytest.raises(ValueError, match="top_k"):
        decode_predictions(logits, top_k=0)
    # One output contract: a classifier returns its logits, hidden states come from the backbone
    hs_model = MobileNetV1ForImageClassification(output_hidden_states=True, **TINY)
    assert hs_model(x).shape == (3, hs_model.config.num_labels)
    assert len(hs_model.decode(hs_model.predict(x), top_k=1)) == 3
    hs = hs_model.backbone(x)
    assert set(hs) == {"last_hidden_state", "pooler_output", "hidden_states"}
    assert len(hs["hidden_states"]) == 26


def test_keras_file_round_trip_is_exact(tmp_path):
    import keras

    m = randomize(MobileNetV1ForImageClassification(output_stride=16, **TINY))
    x = np.random.rand(2, 64, 64, 3).astype("float32")
    path = tmp_path / "m.keras"
    m.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MobileNetV1ForImageClassification)
    assert loaded.config == m.config
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))
    cfg = m.get_config()
    assert cfg["depth_multiplier"] == 0.25 and cfg["output_stride"] == 16  # flat


def test_classifier_contains_its_backbone(tmp_path):
    import keras

    m = randomize(MobileNetV1ForImageClassification(**TINY))
    backbone = m.backbone
    assert isinstance(backbone, MobileNetV1Model) and backbone.config == m.config
    # One set of weights, at the slim paths, shared by the classifier and its backbone
    assert [v.path for v in m.weights[:-2]] == [v.path for v in backbone.weights]
    assert m.weights[0] is backbone.weights[0] and m.weights[-1].path == "Logits/bias"
    assert m.get_layer("Conv2d_13_pointwise") is backbone.get_layer("Conv2d_13_pointwise")
    with pytest.raises(ValueError, match="Conv2d_99"):
        m.get_layer("Conv2d_99")
    x = np.random.rand(2, 32, 32, 3).astype("float32")
    # The classifier's pre-logits features are the backbone's pooled output
    pre_logits = keras.Model(m.input, m.get_layer("AvgPool_1a").output)(x)
    np.testing.assert_allclose(np.asarray(pre_logits)[:, 0, 0],
                               backbone(x)["pooler_output"], atol=1e-6)
    # keras-hub's fine-tuning idiom: a frozen backbone survives a .keras round trip
    backbone.trainable = False
    assert [v.path for v in m.trainable_weights] == ["Logits/kernel", "Logits/bias"]
    m.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert not loaded.backbone.trainable
    assert [v.path for v in loaded.trainable_weights] == ["Logits/kernel", "Logits/bias"]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))
    # A user's model around the classifier holds one model of ours (the exporters' view)
    from tf_mobilenet_v1.converters.fine_tuned import fine_tuned

    inputs = keras.Input((32, 32, 3))
    user = keras.Model(inputs, keras.layers.Dense(3)(m(inputs)))
    assert fine_tuned(user).inner is m


def test_a_flat_classifier_of_earlier_versions_is_named(tmp_path):
    """A classifier .keras in the earlier flat layout (blocks at the top of the weights file)
    gets one line saying what it is and what to do, not Keras's list of unloaded objects."""
    import io
    import zipfile

    import h5py

    tiny_model().save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    buffer = io.BytesIO(files["model.weights.h5"])
    with h5py.File(buffer, "r+") as f:
        for name in list(f["layers/mobile_net_v1_model/layers"]):
            if name not in f["layers"]:  # the pools of both: no weights
                f.move(f"layers/mobile_net_v1_model/layers/{name}", f"layers/{name}")
        del f["layers/mobile_net_v1_model"]
    files["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(tmp_path / "old.keras", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(ValueError, match="saved by an earlier tf_mobilenet_v1, whose layers "
                       "were one flat graph") as caught:
        MobileNetV1ForImageClassification.from_pretrained(str(tmp_path / "old.keras"))
    assert "\n" not in str(caught.value)


def test_config_object_and_kwargs_agree():
    a = MobileNetV1Model(MobileNetV1Config(depth_multiplier=0.5))
    b = MobileNetV1Model(depth_multiplier=0.5)
    assert a.count_params() == b.count_params() and a.config == b.config


@pytest.mark.parametrize("tf_padding", [True, False])
def test_fused_batchnorm_matches(tf_padding):
    m = randomize(MobileNetV1ForImageClassification(tf_padding=tf_padding, **TINY), seed=3)
    fused = m.folded()
    assert not any("BatchNorm" in w.path for w in fused.weights)
    x = np.random.rand(2, 64, 64, 3).astype("float32")
    ref = m.predict(x, verbose=0)
    assert np.abs(ref).max() > 0.1  # non-trivial outputs
    np.testing.assert_allclose(fused.predict(x, verbose=0), ref, atol=1e-4)


@pytest.mark.slow  # a fresh process or a training run: seconds, not milliseconds
def test_fit_reduces_loss_and_new_head():
    import keras

    keras.utils.set_random_seed(0)
    m = MobileNetV1ForImageClassification(depth_multiplier=0.25, num_labels=3,
                                          classifier_dropout_prob=0.0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 16)
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32") * 0.1 + y[:, None, None, None]
    m.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = m.fit(x, y, epochs=8, batch_size=8, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_array_predict_fast_path_equals_keras_predict():
    import keras

    m = randomize(MobileNetV1Model(output_hidden_states=True, **TINY))
    x = np.random.rand(37, 32, 32, 3).astype("float32")  # a partial last batch
    fast = m.predict(x, batch_size=16)
    slow = keras.Model.predict(m, x, batch_size=16, verbose=0)
    np.testing.assert_array_equal(fast["pooler_output"], slow["pooler_output"])
    assert len(fast["hidden_states"]) == 26
    for a, b in zip(fast["hidden_states"], slow["hidden_states"], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def burger():
    """Official 1.0_224 (bundled) and the burger photo, preprocessed the model's way."""
    from tf_mobilenet_v1 import MobileNetV1ForImageClassification

    model = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    pixels = MobileNetV1ImageProcessor()(str(fixture_path("images", "burger.jpg")))
    return model, pixels["pixel_values"]


@pytest.mark.slow
def test_raw_pixels_warn_once_and_normalized_ones_not(burger):
    model, x = burger
    raw = np.round((x + 1) * 127.5).astype(np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        good = model.decode(model.predict(x), 1)[0][0][1]
        assert not caught
        for batch in (raw, raw, raw.astype(np.float32)):
            bad = model.decode(model.predict(batch), 1)[0][0][1]
    assert good == "cheeseburger" and bad != "cheeseburger"  # why the warning matters
    ranged = [w for w in caught if issubclass(w.category, InputRangeWarning)]
    assert len(ranged) == 1, [str(w.message) for w in caught]
    assert "got uint8 pixels" in str(ranged[0].message)
    assert "[-1, 1]" in str(ranged[0].message)
    assert ranged[0].filename == __file__  # points at the caller's line


@pytest.mark.parametrize("spatial_squeeze", [True, False])
def test_empty_batch(spatial_squeeze):
    model = tiny_model(spatial_squeeze=spatial_squeeze)
    out = model.predict(np.zeros((0, 32, 32, 3), np.float32))
    assert out.shape == ((0, 1001) if spatial_squeeze else (0, 1, 1, 1001))
    assert out.dtype == np.float32
    assert model.predict_proba(np.zeros((0, 32, 32, 3), np.float32)).shape[0] == 0


def test_empty_batch_with_hidden_states():
    model = tiny_model(output_hidden_states=True)
    assert model.predict(np.zeros((0, 32, 32, 3), np.float32)).shape == (0, 1001)
    out = model.backbone.predict(np.zeros((0, 32, 32, 3), np.float32))
    assert out["pooler_output"].shape[0] == 0
    assert all(h.shape[0] == 0 for h in out["hidden_states"])


@pytest.mark.parametrize("shape, fill, words", [
    ((2, 3, 32, 32), 0.0, "channels-first (NCHW): pass x.transpose(0, 2, 3, 1)"),
    ((2, 32, 32, 4), 0.0, "drop the alpha channel"),
    ((32, 32, 3), 0.0, "add the batch axis"),
    ((2, 32, 32, 3), np.nan, "NaN or infinite pixel values"),
    ((2, 32, 32, 3), np.inf, "NaN or infinite pixel values"),
])
def test_predict_checks_its_input_first(shape, fill, words):
    """NCHW, RGBA, a missing batch axis or NaN pixels: one line saying what was expected,
    before TensorFlow's "Graph execution error:" or silent NaN scores."""
    model = tiny_model()
    with pytest.raises(ValueError, match=re.escape(words)) as info:
        model.predict(np.full(shape, fill, np.float32))
    assert len(str(info.value).splitlines()) == 1
