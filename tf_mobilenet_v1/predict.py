"""Classify image files: the library function :func:`classify` and the CLI's :func:`run_predict`.

Decoding and preprocessing run in a ``tf.data`` pipeline (parallel, ordered, batched,
prefetched; memory stays bounded whatever the number of images). A file that cannot be read
gives an error result for that file only; the rest of its batch is still classified.
:func:`run_predict` (the CLI) runs a cached float32 TFLite model instead where it can
(:mod:`tf_mobilenet_v1.fast_predict`), with the same processor, results and reporting.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import unicodedata
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from .architecture import LOGITS_NAME
from .errors import native_stderr_silenced
from .images import find_images, load_pixels
from .outputs import decode_predictions, logits_of

# The processor that belongs to the weights (HF semantics: shortest edge image_size + 32, centre
# crop, [-1, 1]) so that predict, MobileNetV1ImageProcessor, transformers' pipeline and the
# SavedModel's bytes signature agree; "resize" (the TFLite / Coral examples') stays by name.
DEFAULT_PREPROCESSING = "model"


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
        x, error = load_pixels(paths[i], processor, blank.shape)
        if error is None:
            return x, True
        errors[i] = error
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
    (``"model"``, the default: the weights' own processor; ``"crop"``, ``"resize"`` or
    ``"slim"`` at the model's image size) or any object with ``preprocess_one(path)`` and
    ``output_size()``. ``progress`` (e.g. a tqdm
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
        processor = get_preprocessor(processor or DEFAULT_PREPROCESSING, config.image_size,
                                     model=model)
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


def printable(text: str) -> str:
    """``text`` safe for a terminal line: control and format characters, line breaks and the
    undecodable bytes of non-UTF-8 file names (surrogate escapes) shown as escapes."""
    out = []
    for c in text:
        if 0xDC80 <= ord(c) <= 0xDCFF:  # a raw byte that os.fsdecode could not decode
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(c.encode("unicode_escape").decode("ascii"))
        else:
            out.append(c)
    return "".join(out)


def _table(result: dict) -> str:
    lines = [printable(result["image"])]
    for rank, p in enumerate(result["predictions"], 1):
        lines.append(f"  {rank:>2}. {p['score']:7.2%}  {p['index']:>5}  {printable(p['label'])}")
    return "\n".join(lines) + "\n"


def _load_model(weights):
    """Load weights with anything they print (download progress) sent to stderr, so stdout
    holds only results."""
    if "tensorflow" not in sys.modules:
        # The CLI leaves TensorFlow unimported for predict (the TFLite path needs none), so
        # keep its C++ start-up notices (CUDA probe, oneDNN) off stderr here.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with native_stderr_silenced():
            import tensorflow  # noqa: F401
    from .loaders.dispatch import load_any

    with contextlib.redirect_stdout(sys.stderr):
        return load_any(weights)


OUTPUT_FORMATS = ("table", "json", "jsonl")


def run_predict(inputs: list[str], weights: str = "mobilenet_v1_1.0_224", top_k: int = 5,
                json_output: bool = False, batch_size: int = 32, stream=None,
                preprocessing: str = DEFAULT_PREPROCESSING, output: str | None = None,
                fast: bool | None = None) -> int:
    """``mobilenet-v1 predict``: classify files and directories, print a table or JSON.

    Directories are walked recursively (sorted; image extensions only); files named
    explicitly are always tried. Missing paths are reported before any weights load.
    ``output``: ``"table"`` (default), ``"json"`` (one document, written at the end; also
    ``json_output=True``) or ``"jsonl"`` (one result per line as it is classified, so an
    interrupted run keeps what it finished). Each unreadable image is reported once on stderr
    (and, in JSON, as ``{"image", "error"}``). Returns 0 when every image was classified, 1 when
    some failed, 2 when no image was found at all (only empty directories).
    ``preprocessing``: ``"model"`` (default, the weights' own processor), ``"crop"``,
    ``"resize"`` or ``"slim"``, see :func:`tf_mobilenet_v1.preprocessing.get_preprocessor`.
    ``fast``: run a cached float32 TFLite model when ai-edge-litert is installed and the
    weights qualify (see :mod:`tf_mobilenet_v1.fast_predict`; the same results to float32
    rounding, without importing TensorFlow once it is cached); ``None`` (default) unless
    ``MOBILENET_V1_FAST=0``, ``False`` always runs the Keras model.
    """
    from .preprocessing import get_preprocessor

    output = output or ("json" if json_output else "table")
    if output not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output {output!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    stream = sys.stdout if stream is None else stream
    err = sys.stderr
    paths, missing, empty = find_images(inputs)
    for d in empty:
        print(f"mobilenet-v1: warning: no images found in {printable(d)}", file=err)
    results: list[dict] = []

    def report(result: dict, bar=None) -> None:
        if "error" in result:
            _emit(bar, f"mobilenet-v1: {printable(result['error'])}", err)
        if output == "json":
            results.append(result)
        elif output == "jsonl":
            _emit(bar, json.dumps(result), stream)
        elif "error" not in result:
            _emit(bar, _table(result), stream, end="")

    for path in missing:  # a typo fails now, not after the weights load
        report({"image": path, "error": f"cannot read image {path}: no such file"})
    total = len(paths) + len(missing)
    if not paths:
        if missing:
            _finish(output, results, stream)
            print(f"mobilenet-v1: {len(missing)} of {total} images could not be classified",
                  file=err)
            return 1
        where = ", ".join(empty) if empty else ", ".join(map(str, inputs))
        print(f"mobilenet-v1: error: no images found in {printable(where)}", file=err)
        return 2
    get_preprocessor(preprocessing)  # reject a bad name before loading any weights
    # No model.folded(): inference already folds batch norm into the convolutions; a folded
    # copy is only a few percent faster, which repays the time to build it only after several
    # hundred images.
    from . import fast_predict

    use_fast = fast_predict.enabled(fast)
    engine = fast_predict.open_cached(weights, preprocessing) if use_fast else None
    if engine is None:
        model = _load_model(weights)
        if use_fast:  # first run on these weights (or a damaged entry): build and cache
            if err.isatty() and fast_predict.eligible(weights, preprocessing):
                # Said only to a person watching: the conversion takes 10-20 s, once.
                print("mobilenet-v1: first run with these weights: building a fast TFLite "
                      f"model once (10-20 s), cached in {fast_predict.cache_dir()}", file=err)
            engine = fast_predict.build(weights, model, preprocessing)
    if engine is None:
        processor = get_preprocessor(preprocessing, model.config.image_size, model=model)

        def run(progress):
            return classify(paths, model, processor, top_k=top_k, batch_size=batch_size,
                            progress=progress)
    else:
        def run(progress):
            return engine.classify(paths, top_k=top_k, batch_size=batch_size,
                                   progress=progress)
    bar = _progress_bar(len(paths), batch_size, err)
    failed = len(missing)
    try:
        with warnings.catch_warnings():
            # Pillow warns about damaged metadata from the decoding threads ("Truncated File
            # Read"...); such a file is reported by us, as an error, or decodes fine.
            warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
            for result in run(bar):
                failed += "error" in result
                report(result, bar)
    finally:
        if bar is not None:
            bar.close()
    _finish(output, results, stream)
    if failed:
        print(f"mobilenet-v1: {failed} of {total} images could not be classified", file=err)
        return 1
    return 0


def _finish(output: str, results: list[dict], stream) -> None:
    if output == "json":
        json.dump(results, stream, indent=2)
        stream.write("\n")
        stream.flush()
