"""SavedModel export for TF Serving, Vertex AI and Beam RunInference.

Signatures (all batched, any batch size, outputs by name):

* ``serving_default``: ``pixel_values`` float32 (B, H, W, 3), already normalized to [-1, 1]
  -> ``logits`` (B, num_labels), ``probabilities`` (softmax).
* ``serving_uint8``: ``images`` uint8 (B, H, W, 3) RGB of any size, preprocessed in the graph
  by :class:`~tf_mobilenet_v1.preprocessing.MobileNetV1Preprocessing` -> the same plus
  ``top_k_indices`` (int32), ``top_k_labels`` (string) and ``top_k_probabilities``.
* ``serving_bytes``: ``image_bytes`` string (B,), encoded JPEG / PNG / GIF / BMP (TF Serving's
  REST API turns ``{"b64": ...}`` into these bytes) -> the same outputs as ``serving_uint8``.

With ``task="feature-vector"`` the same three signatures output ``features`` (B, C): the
backbone's pooled features, for embeddings and retrieval.

The graph holds only TensorFlow ops: ``tf.saved_model.load`` runs it without this package.
``assets.extra/labels.txt`` holds the class names (line i = index i) and
``assets.extra/preprocessor_config.json`` the image signatures' preprocessing.
"""

from __future__ import annotations

import os

from tf_mobilenet_v1.fileio import atomic_output, check_writable

from ._deploy import (
    LABELS_FILE,
    at_size,
    check_classifier,
    check_task,
    head_fn,
    labels_of,
    labels_text,
)

SIGNATURES = ("serving_default", "serving_uint8", "serving_bytes")
PREPROCESSING_MODES = ("crop", "resize")
DEFAULT_TOP_K = 5


def _outputs(tf, logits, labels, top_k):
    probs = tf.nn.softmax(logits, axis=-1)
    out = {"logits": logits, "probabilities": probs}
    if labels is not None:
        top = tf.math.top_k(probs, k=top_k)
        out.update(top_k_indices=top.indices, top_k_probabilities=top.values,
                   top_k_labels=tf.gather(labels, top.indices))
    return out


def _decode(tf, data):
    """Encoded image -> (H, W, 3) uint8; JPEG with the accurate IDCT, as Pillow decodes it."""
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False),
    )


def build_archive(model, *, top_k: int | None = None, preprocessing: str = "crop",
                  image_size: int | None = None, task: str = "classification"):
    """A ``keras.export.ExportArchive`` with the three serving signatures (not yet written).

    ``image_size`` (default: the config's) is what the uint8 / bytes signatures resize to;
    ``top_k`` defaults to 5, or to ``num_labels`` when there are fewer classes.
    """
    import keras
    import tensorflow as tf

    from tf_mobilenet_v1.preprocessing import MobileNetV1Preprocessing

    model, size = at_size(check_classifier(model), image_size)
    cfg = model.config
    if top_k is None:  # five, or every class of a smaller head
        top_k = min(DEFAULT_TOP_K, cfg.num_labels)
    if not 1 <= int(top_k) <= cfg.num_labels:
        raise ValueError(f"top_k must be between 1 and num_labels={cfg.num_labels}, got {top_k}")
    if preprocessing not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING_MODES}, "
                         f"got {preprocessing!r}")
    top_k = int(top_k)
    channels = cfg.num_channels
    h, w = model.input_shape[1:3]
    prep = MobileNetV1Preprocessing(image_size=size, mode=preprocessing)
    labels = tf.constant(labels_of(model))

    if check_task(task, None) == "features":
        features = head_fn(model, "features")

        def outputs(pixels, with_labels):
            return {"features": features(pixels)}
    else:
        logits = head_fn(model, "logits")

        def outputs(pixels, with_labels):
            return _outputs(tf, logits(pixels), labels if with_labels else None, top_k)

    def serve_float(pixel_values):
        return outputs(pixel_values, False)

    def serve_uint8(images):
        return outputs(prep(images), True)

    def serve_bytes(image_bytes):
        pixels = tf.map_fn(lambda b: prep(_decode(tf, b)), image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return outputs(pixels, True)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_float, input_signature=[
        tf.TensorSpec([None, h, w, channels], tf.float32, name="pixel_values")])
    if channels == 3:  # image signatures only make sense for RGB models
        archive.add_endpoint("serving_uint8", serve_uint8, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        archive.add_endpoint("serving_bytes", serve_bytes, input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes")])
    return archive


def _processor(model, preprocessing: str, image_size: int | None):
    """What the image signatures do, as an HF processor: so a client feeding the float
    signature itself (Beam's handler, a server) prepares pixels the same way."""
    from tf_mobilenet_v1.preprocessing import MobileNetV1ImageProcessor

    size = image_size or model.config.image_size
    if preprocessing == "crop":
        own = MobileNetV1ImageProcessor.for_model(model)
        if own.output_size() == (size, size):
            return own
    return MobileNetV1ImageProcessor.for_variant(size, mode=preprocessing)


def export_saved_model(model, dst, *, force: bool = False, top_k: int | None = None,
                       preprocessing: str = "crop", image_size: int | None = None,
                       task: str = "classification") -> str:
    """Write a SavedModel directory with the signatures above; return ``dst``.

    ``task``: ``"classification"`` (logits and probabilities) or ``"feature-vector"``.
    ``preprocessing`` for the uint8 / bytes signatures: ``"crop"`` (Hugging Face's resize of
    the shortest edge to size + 32, then center crop; the accuracy protocol) or ``"resize"``
    (straight to size x size, as the Android Task Library does). Written atomically: a failed
    export leaves nothing, and an existing ``dst`` is replaced only with ``force``.
    """
    dst = check_writable(os.fspath(dst).rstrip(os.sep) or os.sep, force)
    model = check_classifier(model)
    archive = build_archive(model, top_k=top_k, preprocessing=preprocessing,
                            image_size=image_size, task=task)
    with atomic_output(dst, force, directory=True) as tmp:
        try:
            archive.write_out(tmp, verbose=False)
        except (TypeError, ValueError, AttributeError) as e:
            raise RuntimeError(f"SavedModel export failed: {e}") from e
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, LABELS_FILE), "w", encoding="utf-8", newline="\n") as f:
            f.write(labels_text(model))
        _processor(model, preprocessing, image_size).save_pretrained(extra)
    return dst


def saved_model_signatures(path) -> dict[str, dict[str, dict[str, tuple]]]:
    """``{signature: {"inputs": {name: (dtype, shape)}, "outputs": {...}}}`` of a SavedModel."""
    import tensorflow as tf

    loaded = tf.saved_model.load(os.fspath(path))
    result = {}
    for key, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        result[key] = {
            "inputs": {k: (v.dtype.name, tuple(v.shape)) for k, v in sorted(kwargs.items())},
            "outputs": {k: (v.dtype.name, tuple(v.shape))
                        for k, v in sorted(fn.structured_outputs.items())},
        }
    return result
