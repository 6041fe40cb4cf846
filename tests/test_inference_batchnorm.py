"""Inference batch norm folded into the convolutions on the fly: same numbers, never stale."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomize

from tf_mobilenet_v1 import MobileNetV1ForImageClassification
from tf_mobilenet_v1.architecture import layer_specs
from tf_mobilenet_v1.layers import ConvBlock

TINY = dict(depth_multiplier=0.25, num_labels=5)


def _block(kind, stride=1, dilation=1, tf_padding=True, channels=8, seed=0, **kwargs):
    kwargs.setdefault("activation", "linear")  # ReLU6 would clip away differences
    block = ConvBlock(kind, channels, kernel_size=1 if kind == "pointwise" else 3,
                      strides=stride, dilation_rate=dilation, tf_padding=tf_padding, **kwargs)
    block.build((None, None, None, channels))
    rng = np.random.default_rng(seed)
    block.conv.kernel.assign(rng.normal(size=block.conv.kernel.shape).astype("float32"))
    for w, (lo, hi) in zip(block.bn.weights, [(0.5, 1.5), (-0.5, 0.5), (-0.5, 0.5), (0.5, 2)],
                           strict=True):  # gamma, beta, moving mean, moving variance
        w.assign(rng.uniform(lo, hi, channels).astype("float32"))
    return block


def _keras_bn_path(block, x, training=False):
    """What the block computed before: Keras's conv layer, then its BatchNormalization."""
    block.fold_at_inference = False
    try:
        return block(x, training=training)
    finally:
        block.fold_at_inference = True


def _keras_bn_model(model):
    """A copy of ``model`` with the same weights whose blocks use Keras's BN layer."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    for layer in copy.backbone.layers:
        if isinstance(layer, ConvBlock):
            layer.fold_at_inference = False
    return copy


@pytest.mark.parametrize("kind,stride,dilation", [("conv", 2, 1), ("depthwise", 1, 1),
                                                  ("depthwise", 2, 1), ("depthwise", 1, 2),
                                                  ("pointwise", 1, 1)])
@pytest.mark.parametrize("tf_padding", [True, False])
def test_block_matches_keras_batchnorm(kind, stride, dilation, tf_padding):
    block = _block(kind, stride, dilation, tf_padding)
    x = np.random.default_rng(1).normal(size=(2, 11, 12, 8)).astype("float32")
    ref = np.asarray(_keras_bn_path(block, x))
    assert np.abs(ref).max() > 0.5
    np.testing.assert_allclose(np.asarray(block(x, training=False)), ref, atol=1e-5)
    graph = tf.function(lambda t: block(t))  # training=None means inference, as in Keras
    np.testing.assert_allclose(graph(x).numpy(), ref, atol=1e-5)


def test_inference_graph_has_fusable_ops_and_training_graph_does_not():
    model = MobileNetV1ForImageClassification(**TINY)

    def op_types(training, m=model):
        fn = tf.function(lambda t: m(t, training=training))
        graph = fn.get_concrete_function(tf.TensorSpec((1, 32, 32, 3))).graph
        return [op.type for op in graph.get_operations()]

    specs = layer_specs(depth_multiplier=TINY["depth_multiplier"])
    full = sum(s.kind != "depthwise" for s in specs)
    inference = op_types(False)
    # One FusedBatchNorm after each full / 1x1 conv (grappler merges it into the conv), a bias
    # after each depthwise conv (its kernel carries the scale), no separate BN arithmetic.
    assert inference.count("FusedBatchNormV3") == full == 14
    assert inference.count("BiasAdd") == len(specs) - full + 1  # + the Logits conv
    assert "Rsqrt" not in inference
    assert "FusedBatchNormV3" not in op_types(True)  # Keras's BN: batch statistics
    switched_off = op_types(False, _keras_bn_model(model))  # fold_at_inference = False
    assert "FusedBatchNormV3" not in switched_off and "Rsqrt" in switched_off


@pytest.mark.slow  # a training run
def test_predictions_follow_training_no_stale_fold():
    keras.utils.set_random_seed(0)
    model = randomize(MobileNetV1ForImageClassification(classifier_dropout_prob=0.0, **TINY))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 5, 16)
    before = model.predict(x, verbose=0)
    mean = model.get_layer("Conv2d_3_pointwise").bn.moving_mean
    mean_before = np.asarray(mean).copy()
    model.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.abs(np.asarray(mean) - mean_before).max() > 1e-4  # batch statistics were used
    after = model.predict(x, verbose=0)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, _keras_bn_model(model).predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(after, model.folded().predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("kind", ["depthwise", "pointwise"])
def test_frozen_batchnorm_trains_through_the_folded_path(kind):
    block = _block(kind)
    block.bn.trainable = False  # fine-tuning recipe: BN frozen, inference statistics in fit
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 9, 9, 8)).astype("float32"))
    stats = [np.asarray(w).copy() for w in block.bn.weights]
    grads = []
    for run in (lambda: block(x, training=True), lambda: _keras_bn_path(block, x, True)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(run() ** 2)
        grads.append(tape.gradient(loss, block.conv.kernel).numpy())
    assert np.abs(grads[1]).max() > 0.1
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)
    for w, before in zip(block.bn.weights, stats, strict=True):
        np.testing.assert_array_equal(np.asarray(w), before)


def test_mixed_precision_keeps_keras_batchnorm():
    block = _block("pointwise", dtype="mixed_float16")
    assert not block._can_fold_at_inference()
    x = np.random.default_rng(3).normal(size=(1, 5, 5, 8)).astype("float32")
    out = block(x, training=False)
    assert out.dtype == "float16"
    ref = _keras_bn_path(_block("pointwise"), x)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), atol=2e-2)


@pytest.mark.parametrize("kind", ["depthwise", "pointwise"])
def test_tiny_epsilon_is_honoured(kind):
    # Some fused batch-norm kernels clamp epsilon to 1.001e-5; HF configs may set any value.
    block = _block(kind, epsilon=1e-7)
    block.bn.moving_variance.assign(np.full(8, 1e-6, "float32"))
    x = np.random.default_rng(4).normal(size=(1, 6, 6, 8)).astype("float32")
    ref = np.asarray(_keras_bn_path(block, x))
    np.testing.assert_allclose(np.asarray(block(x, training=False)), ref, rtol=1e-5, atol=1e-4)
