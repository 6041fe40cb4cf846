"""The one building block: convolution (full, depthwise or 1x1) + batch norm + activation."""

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


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvBlock(keras.layers.Layer):
    """Conv (no bias) + BatchNormalization + activation, named after its slim scope.

    ``kind`` is ``"conv"``, ``"depthwise"`` or ``"pointwise"``. ``tf_padding=True`` uses
    TensorFlow's SAME padding (no pad op); ``False`` pads ``kernel // 2`` on every side, then
    VALID, as PyTorch does. ``use_batchnorm=False`` is the inference-time folded form: the
    convolution gets a bias and there is no batch-norm layer (see ``fold_batchnorm``).
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
        use_batchnorm: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in ("conv", "depthwise", "pointwise"):
            raise ValueError(f"ConvBlock kind must be conv, depthwise or pointwise, got {kind!r}")
        self.kind, self.filters, self.kernel_size = kind, filters, kernel_size
        self.strides, self.dilation_rate, self.tf_padding = strides, dilation_rate, tf_padding
        self.activation_name, self.epsilon, self.momentum = activation, epsilon, momentum
        self.initializer_range, self.use_batchnorm = initializer_range, use_batchnorm
        self._pad = 0 if tf_padding else (kernel_size // 2) * dilation_rate
        common = dict(
            kernel_size=kernel_size,
            strides=strides,
            dilation_rate=dilation_rate,
            padding="same" if tf_padding else "valid",
            use_bias=not use_batchnorm,
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
            if use_batchnorm else None
        )
        self._act = _ACTIVATIONS[activation]

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
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return self._act(x)

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
        scale = gamma / np.sqrt(var + self.epsilon)
        if self.kind == "depthwise":
            kernel = kernel * scale[None, None, :, None]  # (k, k, C, 1)
        else:
            kernel = kernel * scale  # (k, k, in, out)
        bias = beta - mean * scale
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
            "use_batchnorm": self.use_batchnorm,
        }
