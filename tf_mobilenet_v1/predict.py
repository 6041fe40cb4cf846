"""Classify images: :func:`classify`, which makes every result (``predict``, Beam, library
calls) from any :mod:`~tf_mobilenet_v1.engines` engine, and the CLI's :func:`run_predict`.

:func:`run_predict` runs a cached float32 TFLite model where it can
(:mod:`tf_mobilenet_v1.fast_predict`), else the Keras model, with the same processor and
results either way.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import re
import sys
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .engines import Engine, KerasEngine, cores, is_export, open_engine
from .errors import import_tensorflow_quietly
from .images import find_images, load_pixels
from .outputs import decode_predictions
from .preprocessing import LookupProcessor, MobileNetV1ImageProcessor

# The processor that belongs to the weights (HF semantics: shortest edge image_size + 32, centre
# crop, [-1, 1]) so that predict, MobileNetV1ImageProcessor, transformers' pipeline and the
# SavedModel's bytes signature agree; "resize" (the TFLite / Coral examples') stays by name.
DEFAULT_PREPROCESSING = "model"
# --fast-decode keeps a reduced JPEG's shortest edge at least this many times the resize
# target: decoding to just the target changed the top-5 set on 19 of 69 real photos.
FAST_DECODE_MARGIN = 2


def draft_edge(processor) -> int | None:
    """The shortest edge a reduced JPEG decode must keep for ``processor``
    (``FAST_DECODE_MARGIN`` x its ``resize_edge()``); ``None`` where it does not resize or is
    not one of ours (the image is then decoded in full)."""
    edge = processor.resize_edge() if hasattr(processor, "resize_edge") else None
    return None if edge is None else math.ceil(FAST_DECODE_MARGIN * edge)


def classify(inputs: Iterable, model, processor=None, top_k: int = 5, batch_size: int = 32,
             progress=None, fast_decode: bool = False) -> Iterator[dict]:
    """Classify images in order; yield one result per input.

    ``inputs``: image paths, or ``(name, bytes)`` pairs of files already read (Beam, a
    server); ``name`` then only labels the result. ``model``: an
    :class:`~tf_mobilenet_v1.engines.Engine` (a TFLite model, a SavedModel...) or a Keras
    classifier, run with ``processor``: a name for
    :func:`~tf_mobilenet_v1.preprocessing.get_preprocessor` (``"model"``, the default: the
    weights' own processor; ``"crop"``, ``"resize"`` or ``"slim"`` at the model's image size)
    or any object with ``preprocess_one(image)`` and ``output_size()``.

    A result is ``{"image": name, "predictions": [{"index", "label", "score"}, ...]}`` (top
    ``top_k`` softmax probabilities, best first) or ``{"image": name, "error": message}``: one
    unreadable image never stops the others. Worker threads decode and preprocess the next
    images while the model runs (a per-image engine runs in them too), with a bounded number
    in flight. ``progress`` (e.g. a tqdm bar) gets ``update(n)`` every ``batch_size`` images.
    ``fast_decode``: decode large JPEGs at a reduced scale (see :func:`draft_edge`): several
    times faster on phone photos, with pixels that differ from Hugging Face's.
    """
    if top_k < 1 or batch_size < 1:
        raise ValueError("top_k and batch_size must be at least 1")
    engine = model if isinstance(model, Engine) else KerasEngine(model, processor)
    processor = engine.processor
    if isinstance(processor, MobileNetV1ImageProcessor):
        processor = LookupProcessor(processor)  # the same pixels, faster
    size = processor.output_size()
    if size is None:
        raise ValueError("the processor gives images of varying size; enable its center crop "
                         "or give it a fixed height and width")
    shape = (*size, 3)
    items = [(x[0], x[1]) if isinstance(x, tuple) else (os.fspath(x), None) for x in inputs]
    workers = max(1, min(cores(), len(items)))
    threads = max(1, cores() // workers)
    step = 1 if engine.per_image else batch_size  # a per-image engine's results stream out
    ahead = 4 * workers if engine.per_image else batch_size
    draft = draft_edge(processor) if fast_decode else None

    def job(item):
        x, error = load_pixels(item[0], processor, shape, data=item[1], draft=draft)
        if error is None and engine.per_image:
            return engine.logits(x[None], threads=threads), None
        return x, error

    pool = ThreadPoolExecutor(workers, thread_name_prefix="mobilenet-v1")
    pending: collections.deque = collections.deque()
    submitted = 0
    try:
        for start in range(0, len(items), step):
            chunk = items[start:start + step]
            while submitted < min(len(items), start + len(chunk) + ahead):
                pending.append(pool.submit(job, items[submitted]))
                submitted += 1
            done = [pending.popleft().result() for _ in chunk]
            good = [i for i, (_, error) in enumerate(done) if error is None]
            top = {}
            if good:
                if engine.per_image:
                    logits = np.concatenate([done[i][0] for i in good])
                else:
                    # Failed slots stay zeros: one batch shape keeps one traced function.
                    pixels = np.zeros((len(chunk), *shape), np.float32)
                    for i in good:
                        pixels[i] = done[i][0]
                    logits = np.asarray(engine.logits(pixels))[good]
                top = dict(zip(good, decode_predictions(logits, top_k, engine.id2label),
                               strict=True))
            for i, (name, _) in enumerate(chunk):
                if i in top:
                    yield {"image": name, "predictions": [
                        {"index": k, "label": label, "score": score}
                        for k, label, score in top[i]]}
                else:
                    yield {"image": name, "error": done[i][1]}
            end = start + len(chunk)
            if progress is not None and (end % batch_size == 0 or end == len(items)):
                progress.update(end % batch_size or batch_size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def json_safe(result: dict) -> dict:
    """``result`` with each undecodable byte of a non-UTF-8 file name (a lone surrogate,
    which strict JSON parsers reject) written as the text ``\\xNN``, in its image and error."""
    def fix(text: str) -> str:
        return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c
                       for c in text)

    return {k: fix(v) if k in ("image", "error") else v for k, v in result.items()}


def _table(result: dict) -> str:
    lines = [printable(result["image"])]
    for rank, p in enumerate(result["predictions"], 1):
        lines.append(f"  {rank:>2}. {p['score']:7.2%}  {p['index']:>5}  {printable(p['label'])}")
    return "\n".join(lines) + "\n"


def _load_model(weights):
    """Load weights with anything they print (download progress) sent to stderr, so stdout
    holds only results."""
    def load(source):
        from .loaders.dispatch import load_any  # imports Keras: after the quiet TF import

        return load_any(source)

    return _quietly(load, weights)


def _quietly(load, *args):
    """``load(*args)`` with TensorFlow's start-up notices off stderr and anything printed
    (download progress) on stderr, so stdout holds only results."""
    if not str(args[0]).lower().endswith(".tflite"):
        # The CLI leaves TensorFlow unimported for predict (the TFLite path needs none).
        import_tensorflow_quietly()
    with contextlib.redirect_stdout(sys.stderr):
        return load(*args)


def open_classifier(weights: str, preprocessing: str = DEFAULT_PREPROCESSING,
                    fast: bool | None = None, announce: bool = False) -> Engine:
    """The engine ``predict`` runs for ``weights``: an export as it is, else the cached fast
    TFLite model (built and cached on first use), else the Keras model; see
    :func:`run_predict` for ``fast``. ``announce``: say on stderr when the first run builds
    the fast model (for a person watching a terminal)."""
    # No model.folded(): inference already folds batch norm into the convolutions; a folded
    # copy is only a few percent faster, which repays the time to build it only after several
    # hundred images.
    from . import fast_predict

    use_fast = fast_predict.enabled(fast) and not is_export(weights)
    engine = fast_predict.open_cached(weights, preprocessing) if use_fast else None
    if engine is not None:
        return engine
    if is_export(weights):  # checking an export: run the file itself
        return _quietly(open_engine, weights, preprocessing)
    model = _load_model(weights)
    if use_fast:  # first run on these weights (or a damaged entry): build and cache
        if announce and fast_predict.eligible(weights, preprocessing):
            # The conversion takes 10-20 s, once.
            print("mobilenet-v1: first run with these weights: building a fast TFLite "
                  f"model once (10-20 s), cached in {fast_predict.cache_dir()}",
                  file=sys.stderr)
        engine = fast_predict.build(weights, model, preprocessing)
    return engine if engine is not None else KerasEngine(model, preprocessing)


OUTPUT_FORMATS = ("table", "json", "jsonl")


def run_predict(inputs: list[str], weights: str = "mobilenet_v1_1.0_224", top_k: int = 5,
                json_output: bool = False, batch_size: int = 32, stream=None,
                preprocessing: str = DEFAULT_PREPROCESSING, output: str | None = None,
                fast: bool | None = None, fast_decode: bool = False) -> int:
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
    ``MOBILENET_V1_FAST=0``, ``False`` always runs the Keras model. ``fast_decode``: see
    :func:`classify`.
    """
    from .preprocessing import get_preprocessor

    output = output or ("json" if json_output else "table")
    if output not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output {output!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    stream = sys.stdout if stream is None else stream
    err = sys.stderr
    skipped: list[str] = []
    paths, missing, empty = find_images(inputs, skipped=skipped)
    for d in empty:
        print(f"mobilenet-v1: warning: no images found in {printable(d)}", file=err)
    if skipped:
        print(f"mobilenet-v1: note: skipped {len(skipped)} file(s) in the folders without an "
              f"image extension, e.g. {printable(skipped[0])}; name a file explicitly to "
              "classify it anyway", file=err)
    results: list[dict] = []

    def report(result: dict, bar=None) -> None:
        if "error" in result:
            _emit(bar, f"mobilenet-v1: {printable(result['error'])}", err)
        if output == "json":
            results.append(result)
        elif output == "jsonl":
            _emit(bar, json.dumps(json_safe(result)), stream)
        elif "error" not in result:
            _emit(bar, _table(result), stream, end="")

    for path in missing:  # a typo fails now, not after the weights load
        why = "URLs are not fetched; download the image first (curl -O URL)" \
            if re.match(r"(?i)(https?|ftp|gs|s3)://", path) else "no such file"
        report({"image": path, "error": f"cannot read image {path}: {why}"})
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
    engine = open_classifier(weights, preprocessing, fast, announce=err.isatty())
    bar = _progress_bar(len(paths), batch_size, err)
    failed = len(missing)
    try:
        with warnings.catch_warnings():
            # Pillow warns about damaged metadata from the decoding threads ("Truncated File
            # Read"...); such a file is reported by us, as an error, or decodes fine.
            warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
            for result in classify(paths, engine, top_k=top_k, batch_size=batch_size,
                                   progress=bar, fast_decode=fast_decode):
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
        json.dump([json_safe(r) for r in results], stream, indent=2)
        stream.write("\n")
        stream.flush()
