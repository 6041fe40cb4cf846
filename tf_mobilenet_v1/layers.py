"""The building blocks: convolution (full, depthwise or 1x1) + batch norm + activation, and
slim's fixed average pool."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

BN_MOMENTUM = 0.9997
_PACKAGE = "tf_mobilenet_v1"

_ACTIVATIONS = {
    "relu6": ops.relu6,
    "relu": ops.relu,
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "silu": ops.silu,
    "swish": ops.silu,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "linear": lambda x: x,
}


def bn_scale_shift(gamma, beta, mean, variance, epsilon):
    """Inference batch norm as ``x * scale + shift`` (numpy arrays or tensors)."""
    scale = gamma / (variance + epsilon) ** 0.5
    return scale, beta - mean * scale


def scale_kernel(kernel, scale, kind: str):
    """Multiply each output channel of a conv (k, k, in, out) or depthwise (k, k, C, 1) kernel."""
    return kernel * (scale[:, None] if kind == "depthwise" else scale)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvBlock(keras.layers.Layer):
    """Conv (no bias) + BatchNormalization + activation, named after its slim scope.

    ``kind`` is ``"conv"``, ``"depthwise"`` or ``"pointwise"``. ``tf_padding=True`` uses
    TensorFlow's SAME padding (no pad op); ``False`` pads ``kernel // 2`` on every side, then
    VALID, as PyTorch does. ``fold_batchnorm=True`` is the inference-time folded form: the
    convolution gets a bias and there is no batch-norm layer (see ``folded_weights``).

    At inference (``training`` false, or a frozen batch norm) the batch norm is applied in a
    form TensorFlow fuses into the convolution kernel, from the live variables, so it never
    goes stale; training with a trainable batch norm uses Keras's own layer.
    """

    def __init__(
        self,
        kind: str,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        dilation_rate: int = 1,
        tf_padding: bool = True,
        activation: str = "relu6",
        epsilon: float = 1e-3,
        momentum: float = BN_MOMENTUM,
        initializer_range: float = 0.02,
        fold_batchnorm: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in ("conv", "depthwise", "pointwise"):
            raise ValueError(f"ConvBlock kind must be conv, depthwise or pointwise, got {kind!r}")
        self.kind, self.filters, self.kernel_size = kind, filters, kernel_size
        self.strides, self.dilation_rate, self.tf_padding = strides, dilation_rate, tf_padding
        self.activation_name, self.epsilon, self.momentum = activation, epsilon, momentum
        self.initializer_range, self.fold_batchnorm = initializer_range, bool(fold_batchnorm)
        self._pad = 0 if tf_padding else (kernel_size // 2) * dilation_rate
        common = dict(
            kernel_size=kernel_size,
            strides=strides,
            dilation_rate=dilation_rate,
            padding="same" if tf_padding else "valid",
            use_bias=self.fold_batchnorm,
            dtype=self.dtype_policy,
        )
        init = keras.initializers.RandomNormal(stddev=initializer_range)
        if kind == "depthwise":
            self.conv = keras.layers.DepthwiseConv2D(
                depthwise_initializer=init, name="depthwise", **common)
        else:
            self.conv = keras.layers.Conv2D(filters, kernel_initializer=init, name="conv",
                                            **common)
        self.bn = (
            keras.layers.BatchNormalization(epsilon=epsilon, momentum=momentum,
                                            name="BatchNorm", dtype=self.dtype_policy)
            if not self.fold_batchnorm else None
        )
        self._act = _ACTIVATIONS[activation]
        # Runtime switch, not saved: False runs Keras's BatchNormalization at inference too.
        self.fold_at_inference = True

    def build(self, input_shape):
        if self._pad:
            n, h, w, c = input_shape
            p = 2 * self._pad
            input_shape = (n, None if h is None else h + p, None if w is None else w + p, c)
        self.conv.build(input_shape)
        if self.bn is not None:
            self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        if self._pad:
            p = self._pad
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        bn = self.bn
        if bn is not None and not (training and bn.trainable) and self._can_fold_at_inference():
            x = self._conv_bn_inference(x)
        else:
            x = self.conv(x)
            if bn is not None:
                x = bn(x, training=training)
        return self._act(x)

    def _can_fold_at_inference(self) -> bool:
        # The fused ops need float32 batch-norm statistics and TensorFlow tensors.
        return (self.fold_at_inference and self.compute_dtype == "float32"
                and keras.backend.backend() == "tensorflow")

    def _conv_bn_inference(self, x):
        """Conv + inference batch norm as ops that grappler fuses into one conv kernel.

        Keras's batch norm is a separate multiply and add over the activations, a full extra
        pass over memory after every convolution; this form lets the optimizer remove it
        (``benchmarks``: ``ours_predict`` against ``ours_predict_keras_bn``).
        Conv2D + FusedBatchNorm is fused as is; a depthwise conv is only fused with a bias, so
        its small kernel is scaled instead.
        """
        import tensorflow as tf  # this path runs on the TensorFlow backend only

        conv, bn = self.conv, self.bn
        args = dict(strides=conv.strides, padding=conv.padding, dilation_rate=conv.dilation_rate)
        if self.kind == "depthwise":
            scale, shift = bn_scale_shift(bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance,
                                          bn.epsilon)
            y = ops.depthwise_conv(x, scale_kernel(conv.kernel, scale, self.kind), **args)
            return tf.nn.bias_add(y, shift)
        y = ops.conv(x, conv.kernel, **args)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            y, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance, epsilon=bn.epsilon,
            is_training=False)
        return y

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape

        def size(s):
            if s is None:
                return None
            if self.tf_padding:
                return -(-s // self.strides)
            eff = (self.kernel_size - 1) * self.dilation_rate + 1
            return (s + 2 * self._pad - eff) // self.strides + 1

        filters = self.conv.kernel.shape[2] if self.kind == "depthwise" and self.conv.built \
            else self.filters
        return (n, size(h), size(w), filters)

    def folded_weights(self) -> list[np.ndarray]:
        """Kernel and bias with inference batch norm folded in (``[kernel, bias]``)."""
        kernel = np.asarray(self.conv.kernel)
        if self.bn is None:
            return [kernel, np.asarray(self.conv.bias)]
        gamma, beta, mean, var = (np.asarray(v, np.float64) for v in self.bn.get_weights())
        scale, bias = bn_scale_shift(gamma, beta, mean, var, self.epsilon)
        kernel = scale_kernel(kernel, scale, self.kind)
        return [kernel.astype(np.float32), bias.astype(np.float32)]

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "tf_padding": self.tf_padding,
            "activation": self.activation_name,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
            "initializer_range": self.initializer_range,
            "fold_batchnorm": self.fold_batchnorm,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SlimAvgPool(keras.layers.Layer):
    """slim's ``AvgPool_1a`` when ``global_pool=False``: a VALID ``kernel`` x ``kernel`` average
    pool with stride ``strides``, the kernel reduced to the feature map where the map is
    smaller (``_reduced_kernel_size_for_small_input``).

    Unlike slim it also works when the input size is unknown until run time: each axis is then
    pooled separately (an average over a window is the average of per-axis averages), choosing
    full window or whole axis from the runtime size.
    """

    def __init__(self, kernel: int = 7, strides: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.kernel, self.strides = int(kernel), int(strides)

    def _size(self, s):
        if s is None:
            return None
        return 1 if s < self.kernel else (s - self.kernel) // self.strides + 1

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, self._size(h), self._size(w), c)

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        if h is not None and w is not None:
            pool = (min(h, self.kernel), min(w, self.kernel))
            return ops.average_pool(x, pool, self.strides, padding="valid")
        return self._pool_axis(self._pool_axis(x, 1), 2)

    def _pool_axis(self, x, axis: int):
        k, s = self.kernel, self.strides
        pool = (k, 1) if axis == 1 else (1, k)
        strides = (s, 1) if axis == 1 else (1, s)
        size = x.shape[axis]
        if size is not None:
            if size < k:
                return ops.mean(x, axis=axis, keepdims=True)
            return ops.average_pool(x, pool, strides, padding="valid")
        return ops.cond(ops.shape(x)[axis] < k,
                        lambda: ops.mean(x, axis=axis, keepdims=True),
                        lambda: ops.average_pool(x, pool, strides, padding="valid"))

    def get_config(self):
        return {**super().get_config(), "kernel": self.kernel, "strides": self.strides}
