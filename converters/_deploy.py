"""Helpers shared by the SavedModel and TFLite exporters."""

from __future__ import annotations

# What every exported model expects as float input: RGB scaled to [-1, 1] (slim's
# inception preprocessing, HF's image_mean = image_std = 0.5). In TFLite metadata terms this is
# mean 127.5, std 127.5 applied to 0..255 pixels.
NORM_MEAN = 127.5
NORM_STD = 127.5
LABELS_FILE = "labels.txt"
# What an export computes: class scores, or the backbone's pooled features (an embedding).
TASKS = ("classification", "feature-vector")
# A classifier's output: softmax probabilities (what Google's hosted models and the Android
# clients expect) or the raw logits.
OUTPUT_KINDS = ("probabilities", "logits")


def check_classifier(model):
    """``model`` ready to export: our classifier as it is, or a user's Keras classifier built
    around our backbone (keras.applications-style fine-tune), wrapped by ``fine_tuned``."""
    from tf_mobilenet_v1.models import MobileNetV1ForImageClassification

    if isinstance(model, MobileNetV1ForImageClassification):
        return model
    from .fine_tuned import fine_tuned

    wrapped = fine_tuned(model)
    if wrapped is None:
        raise ValueError(
            f"export needs a MobileNetV1ForImageClassification or a Keras model built around "
            f"one of our MobileNet V1 models, got {type(model).__name__}; load the weights "
            "with MobileNetV1ForImageClassification.from_pretrained")
    return wrapped


def at_size(model, image_size: int | None):
    """``model`` able to take ``image_size`` inputs: itself, or a same-weights copy rebuilt.

    Models with ``global_pool=True`` accept any size; slim's fixed-pool models have a static
    input shape and are rebuilt for another size. The logits must stay (batch, num_labels).
    """
    model = check_classifier(model)
    size = image_size or model.config.image_size
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"image_size must be an integer of at least 32, got {size!r}")
    h, w = model.input_shape[1:3]
    if (h, w) not in ((None, None), (size, size)):
        from tf_mobilenet_v1.models import MobileNetV1ForImageClassification

        if not isinstance(model, MobileNetV1ForImageClassification):
            raise ValueError(f"this model takes {h}x{w} inputs; export it at that size (a "
                             "model of your own is not rebuilt at another size)")
        cfg = model.get_config()
        cfg["input_shape"] = (size, size, model.config.num_channels)
        rebuilt = type(model).from_config(cfg)
        rebuilt.set_weights(model.get_weights())
        model = rebuilt
    out = model.compute_output_spec(_spec(size, model.config.num_channels))
    if len(out.shape) != 2:
        raise ValueError(
            f"at {size}x{size} this model (global_pool=False) gives spatial logits of shape "
            f"{tuple(out.shape)}; export at {model.config.image_size} or use global_pool=True"
        )
    return model, size


def check_task(task: str, outputs: str | None) -> str:
    """Validate ``task`` / ``outputs``; return the graph's head: probabilities, logits or
    features."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if task == "feature-vector":
        if outputs is not None:
            raise ValueError("--outputs applies to classifiers; a feature vector outputs the "
                             "pooled features")
        return "features"
    if outputs is None:
        return "probabilities"
    if outputs not in OUTPUT_KINDS:
        raise ValueError(f"unknown outputs {outputs!r}; use one of {', '.join(OUTPUT_KINDS)}")
    return outputs


def pooled_features(model):
    """``x -> (B, C)``: the backbone's pooled features (slim's ``AvgPool_1a``, the input of
    the Logits layer), of our classifier or of the backbone inside a user's fine-tune."""
    import keras

    from .fine_tuned import FineTuned

    inner = model.inner if isinstance(model, FineTuned) else model
    pool = inner.get_layer("AvgPool_1a")
    sub = keras.Model(inner.inputs[0], pool.output)
    channels = int(pool.output.shape[-1])

    def features(x):
        return keras.ops.reshape(sub(x, training=False), (-1, channels))

    return features


def head_fn(model, head: str):
    """``x -> output`` of an export's graph for ``head`` (see :func:`check_task`)."""
    import keras

    from tf_mobilenet_v1.architecture import LOGITS_NAME
    from tf_mobilenet_v1.models import MobileNetV1ForImageClassification

    if head == "features":
        return pooled_features(model)

    def logits(x):
        return model(x, training=False)

    if isinstance(model, MobileNetV1ForImageClassification):
        # Squeeze the (B, 1, 1, N) Logits conv with a constant (-1, N) shape: Keras's Reshape
        # reads the batch size at run time, which with a dynamic batch adds SHAPE /
        # STRIDED_SLICE / PACK ops that the GPU delegate does not take.
        conv = model.get_layer(LOGITS_NAME).output
        sub = keras.Model(model.inputs[0], conv)
        n = int(conv.shape[-1])

        def logits(x):  # noqa: F811 - the same function, with a static reshape
            return keras.ops.reshape(sub(x, training=False), (-1, n))

    if head == "logits":
        return logits
    return lambda x: keras.ops.softmax(logits(x), axis=-1)


def _spec(size, channels):
    import keras

    return keras.KerasTensor((1, size, size, channels), "float32")


def labels_of(model) -> list[str]:
    """Class names in index order from ``model.config.id2label``."""
    id2label = model.config.id2label
    return [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.config.num_labels)]


def labels_text(model) -> str:
    """``labels.txt`` content: one name per line, line i = class index i."""
    names = labels_of(model)
    bad = [n for n in names if "\n" in n or "\r" in n]
    if bad:
        raise ValueError(f"label names cannot contain line breaks: {bad[:3]}")
    return "\n".join(names) + "\n"


def same_text(path: str, text: str) -> bool:
    """True when ``path`` is a file holding exactly ``text``."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read() == text
    except (OSError, UnicodeDecodeError):
        return False


def human_size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB ({n:,} bytes)"
