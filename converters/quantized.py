"""Full-integer TFLite from the quantization ranges a model carries, no calibration photos.

A quantization-aware checkpoint (``_quant``) or an imported uint8 ``.tflite`` brings the
ranges it was trained with, in ``model.quant_ranges`` (``{scope: (min, max)}``). They are put
back where training had them, as fake-quantization ops on each layer's weights and
activations of the folded model, and the graph is converted the way Google's ``_quant``
releases were: uint8 in and out, per-tensor uint8 weights. Re-exporting Google's
``mobilenet_v1_0.5_160_quant.tflite`` this way gives its own outputs.
"""

from __future__ import annotations

import os

from tf_mobilenet_v1.architecture import LOGITS_NAME, layer_specs
from tf_mobilenet_v1.fileio import scratch_directory

SCOPE = "MobilenetV1"
LOGITS_SCOPE = f"{SCOPE}/Logits/Conv2d_1c_1x1"
# uint8 pixels q stand for (q - 128) / 128, the [-1, 1] inputs of every MobileNet V1.
INPUT_RANGE = (-1.0, 127 / 128)
PROBABILITY_RANGE = (0.0, 255 / 256)  # TFLite's fixed uint8 softmax output: scale 1/256
RANGES = "ranges"  # calibration_images value: use the model's own ranges


def ranges_needed(model, head: str) -> list[str]:
    """The ``quant_ranges`` scopes a conversion of ``model`` reads."""
    scopes = [f"{SCOPE}/{s.name}" for s in layer_specs(model.config)]
    needed = [f"{s}/{kind}" for s in scopes for kind in ("weights_quant", "act_quant")]
    if head != "features":
        needed += [f"{LOGITS_SCOPE}/weights_quant", f"{LOGITS_SCOPE}/act_quant"]
    return needed


def convert_with_ranges(model, size: int, head: str) -> bytes:
    """uint8 TFLite bytes of ``model`` (folded here if it is not) from its ``quant_ranges``;
    ``head``: ``probabilities``, ``logits`` or ``features``. A missing range is an error
    that says to calibrate instead."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    ranges = dict(getattr(model, "quant_ranges", None) or {})
    missing = [s for s in ranges_needed(model, head) if s not in ranges]
    if missing:
        raise ValueError(f"the model carries no quantization range for {missing[0]} (and "
                         f"{len(missing) - 1} more); pass --calibration-dir to calibrate "
                         "instead")
    model = model.folded()
    weights = {v.path: v.numpy() for v in model.weights}
    specs = layer_specs(model.config)

    def fake(x, scope):
        low, high = ranges[scope] if isinstance(scope, str) else scope
        return tf.quantization.fake_quant_with_min_max_args(x, min=float(low), max=float(high),
                                                            num_bits=8)

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
    def serve(x):
        x = fake(x, INPUT_RANGE)
        for spec in specs:
            scope = f"{SCOPE}/{spec.name}"
            part = "depthwise" if spec.kind == "depthwise" else "conv"
            kernel = fake(tf.constant(weights[f"{spec.name}/{part}/kernel"]),
                          f"{scope}/weights_quant")
            strides = [1, spec.stride, spec.stride, 1]
            rate = [spec.dilation] * 2
            if spec.kind == "depthwise":
                y = tf.nn.depthwise_conv2d(x, kernel, strides, "SAME", dilations=rate)
            else:
                y = tf.nn.conv2d(x, kernel, strides, "SAME", dilations=rate)
            y = tf.nn.bias_add(y, weights[f"{spec.name}/{part}/bias"])
            x = fake(tf.nn.relu6(y), f"{scope}/act_quant")
        last = f"{SCOPE}/{specs[-1].name}/act_quant"  # an average keeps its input's range
        x = fake(tf.nn.avg_pool2d(x, x.shape[1:3], 1, "VALID"), last)
        if head == "features":
            return {"features": tf.reshape(x, [1, -1])}
        kernel = fake(tf.constant(weights[f"{LOGITS_NAME}/kernel"]),
                      f"{LOGITS_SCOPE}/weights_quant")
        y = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), weights[f"{LOGITS_NAME}/bias"])
        y = tf.reshape(fake(y, f"{LOGITS_SCOPE}/act_quant"), [1, -1])
        if head == "logits":
            return {"logits": y}
        return {"probabilities": fake(tf.nn.softmax(y), PROBABILITY_RANGE)}

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    inp = frozen.inputs[0].name.split(":")[0]
    out = frozen.outputs[0].name.split(":")[0]
    with scratch_directory("mobilenet_v1_ranges_") as tmp:
        # The uint8 (per-tensor, asymmetric) path of the converter reads a frozen graph.
        tf.io.write_graph(frozen.graph.as_graph_def(), tmp, "frozen.pb", as_text=False)
        converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
            os.path.join(tmp, "frozen.pb"), [inp], [out], {inp: [1, size, size, 3]})
        converter.inference_type = tf.uint8
        converter.quantized_input_stats = {inp: (128.0, 128.0)}  # mean, std of the uint8 input
        try:
            return converter.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises assorted TF errors
            raise RuntimeError("TFLite conversion from quantization ranges failed: "
                               f"{str(e).strip().splitlines()[0]}") from None
