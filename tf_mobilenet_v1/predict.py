"""Classify image files: the library function :func:`classify` and the CLI's :func:`run_predict`.

Decoding and preprocessing run in a ``tf.data`` pipeline (parallel, ordered, batched,
prefetched; memory stays bounded whatever the number of images). A file that cannot be read
gives an error result for that file only; the rest of its batch is still classified.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from .architecture import LOGITS_NAME
from .errors import first_line
from .images import find_images
from .outputs import decode_predictions, logits_of

# Pillow bilinear straight to the model's size, then [-1, 1]: the preprocessing of the TFLite /
# Coral examples and of the fixtures' reference logits, under which the official weights give
# the published top-1s (HF's center crop turns the Coral cat.bmp into a tabby).
DEFAULT_PREPROCESSING = "resize"


def _batch_logits(output) -> np.ndarray:
    logits = np.asarray(logits_of(output))
    if logits.ndim != 2:
        raise ValueError(f"expected (batch, num_labels) logits, got shape {logits.shape}; use "
                         "a model with global pooling or inputs of its image_size")
    return logits


def _dataset(paths: Sequence[str], processor, size: tuple[int, int], batch_size: int,
             errors: dict[int, str]):
    """Batches of ``(index, pixels, ok)``; a failed image yields zeros and ``ok=False``."""
    import tensorflow as tf

    h, w = size
    blank = np.zeros((h, w, 3), np.float32)

    def load(i):
        i = int(i)
        try:
            x = processor.preprocess_one(paths[i])
            if x.shape != blank.shape:
                raise ValueError(f"preprocessing gave shape {x.shape}, expected {blank.shape}")
            return x.astype(np.float32, copy=False), True
        except Exception as e:  # noqa: BLE001 - one bad image must not stop the others
            msg = first_line(e)
            errors[i] = msg if paths[i] in msg else f"cannot read image {paths[i]}: {msg}"
            return blank, False

    def tf_load(i):
        x, ok = tf.numpy_function(load, [i], (tf.float32, tf.bool))
        x.set_shape((h, w, 3))
        ok.set_shape(())
        return i, x, ok

    ds = tf.data.Dataset.range(len(paths))
    ds = ds.map(tf_load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(1)


def classify(paths: Sequence[str], model, processor=None, top_k: int = 5,
             batch_size: int = 32, progress=None) -> Iterator[dict]:
    """Classify image files in order; yield one result per path.

    A result is ``{"image": path, "predictions": [{"index", "label", "score"}, ...]}`` (top
    ``top_k`` softmax probabilities, best first) or ``{"image": path, "error": message}``.
    ``processor``: a name for :func:`~tf_mobilenet_v1.preprocessing.get_preprocessor`
    (``"resize"``, the default, ``"crop"`` or ``"slim"``, at the model's image size) or any
    object with ``preprocess_one(path)`` and ``output_size()``. ``progress`` (e.g. a tqdm
    bar) gets ``update(n)`` after each batch.
    """
    from .preprocessing import get_preprocessor

    if top_k < 1 or batch_size < 1:
        raise ValueError("top_k and batch_size must be at least 1")
    if not any(layer.name == LOGITS_NAME for layer in model.layers):
        raise ValueError("the model has no classification head (a backbone); load weights "
                         "with a Logits layer to classify images")
    config = model.config
    if processor is None or isinstance(processor, str):
        processor = get_preprocessor(processor or DEFAULT_PREPROCESSING, config.image_size)
    size = processor.output_size()
    if size is None:
        raise ValueError("the processor gives images of varying size; enable its center crop "
                         "or give it a fixed height and width")
    id2label = config.id2label
    paths = [os.fspath(p) for p in paths]
    errors: dict[int, str] = {}
    for idx, pixels, ok in _dataset(paths, processor, size, batch_size, errors):
        idx, ok = idx.numpy(), ok.numpy()
        top = [None] * len(idx)
        if ok.any():
            # Failed slots hold zeros; running the full batch keeps one traced shape.
            logits = _batch_logits(model.predict_on_batch(pixels))
            top = decode_predictions(logits, top_k, id2label)
        for i, good, preds in zip(idx, ok, top, strict=True):
            path = paths[int(i)]
            if good:
                yield {"image": path, "predictions": [
                    {"index": k, "label": label, "score": score} for k, label, score in preds]}
            else:
                yield {"image": path,
                       "error": errors.get(int(i), f"cannot read image {path}")}
        if progress is not None:
            progress.update(len(idx))


class _Counter:
    """A minimal stderr progress line for when tqdm is not installed."""

    def __init__(self, total: int, stream):
        self.total, self.n, self.stream = total, 0, stream

    def update(self, n: int):
        self.n += n
        self.stream.write(f"\rclassified {self.n}/{self.total} images")
        self.stream.flush()

    def write(self, text: str, file, end: str = "\n"):
        """Print ``text`` above the counter line, then redraw the counter."""
        self.stream.write("\r\033[K")
        self.stream.flush()
        file.write(text + end)
        file.flush()
        self.stream.write(f"\rclassified {self.n}/{self.total} images")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()


def _emit(bar, text: str, file, end: str = "\n") -> None:
    """Write a line; with a progress bar on screen, above it (the bar is redrawn below)."""
    if bar is None:
        file.write(text + end)
        file.flush()
    else:
        bar.write(text, file=file, end=end)


def _progress_bar(total: int, batch_size: int, stream):
    """A progress bar on ``stream`` (stderr) when it is a terminal and the run spans batches."""
    if total <= batch_size or not getattr(stream, "isatty", lambda: False)():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _Counter(total, stream)
    return tqdm(total=total, file=stream, unit="img", desc="classifying", leave=False)


def _table(result: dict) -> str:
    if "error" in result:
        return f"{result['image']}\n  error: {result['error']}\n"
    lines = [result["image"]]
    for rank, p in enumerate(result["predictions"], 1):
        lines.append(f"  {rank:>2}. {p['score']:7.2%}  {p['index']:>5}  {p['label']}")
    return "\n".join(lines) + "\n"


def _load_model(weights):
    from .loaders.dispatch import load_any

    return load_any(weights)


def run_predict(inputs: list[str], weights: str = "mobilenet_v1_1.0_224", top_k: int = 5,
                json_output: bool = False, batch_size: int = 32, stream=None,
                preprocessing: str = DEFAULT_PREPROCESSING) -> int:
    """``mobilenet-v1 predict``: classify files and directories, print a table or JSON.

    Directories are walked recursively (sorted; image extensions only); files named
    explicitly are always tried. Unreadable or missing images are reported on stderr (and in
    the JSON as ``{"image", "error"}``) while the others are classified. Returns 0 when every
    image was classified, 1 when some failed, 2 when no image was found at all (only empty
    directories). ``preprocessing``: ``"resize"`` (default), ``"crop"`` or ``"slim"``, see
    :func:`tf_mobilenet_v1.preprocessing.get_preprocessor`.
    """
    from .preprocessing import get_preprocessor

    stream = sys.stdout if stream is None else stream
    err = sys.stderr
    paths, missing, empty = find_images(inputs, keep_missing=True)
    for d in empty:
        print(f"mobilenet-v1: warning: no images found in {d}", file=err)
    if not paths:
        where = ", ".join(empty) if empty else ", ".join(map(str, inputs))
        print(f"mobilenet-v1: error: no images found in {where}", file=err)
        return 2
    get_preprocessor(preprocessing)  # reject a bad name before loading any weights
    # No model.folded(): inference already folds batch norm into the convolutions; a folded
    # copy is only a few percent faster, which repays the time to build it only after several
    # hundred images.
    model = _load_model(weights)
    processor = get_preprocessor(preprocessing, model.config.image_size)
    bar = _progress_bar(len(paths), batch_size, err)
    results, failed = [], 0
    try:
        with warnings.catch_warnings():
            # Pillow warns about damaged metadata from the decoding threads ("Truncated File
            # Read"...); such a file is reported by us, as an error, or decodes fine.
            warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
            for result in classify(paths, model, processor, top_k=top_k,
                                   batch_size=batch_size, progress=bar):
                if "error" in result:
                    failed += 1
                    _emit(bar, f"mobilenet-v1: {result['error']}", err)
                if json_output:
                    results.append(result)
                else:
                    _emit(bar, _table(result), stream, end="")
    finally:
        if bar is not None:
            bar.close()
    if json_output:
        json.dump(results, stream, indent=2)
        stream.write("\n")
    if failed:
        print(f"mobilenet-v1: {failed} of {len(paths)} images could not be classified",
              file=err)
        return 1
    return 0
