"""The one TFLite interpreter factory (LiteRT): predict's fast path, Beam's ``.tflite`` handler
and the exporters' checks all make their interpreters here."""

from __future__ import annotations

import contextlib
import os
import threading

from .errors import native_stderr_silenced

LITERT_HINT = "pip install ai-edge-litert (a dependency of this package)"


def make_interpreter(model, num_threads: int | None = None):
    """An allocated ``ai_edge_litert`` interpreter for a ``.tflite`` path or its bytes."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ImportError(f"running TFLite models needs ai-edge-litert: {LITERT_HINT} ({e})") \
            from None
    # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" once per process, with
    # the first interpreter; only that one is made with fd 2 silenced, so that worker threads
    # making theirs never hide what other threads write to stderr meanwhile.
    with _FIRST["lock"]:
        quiet = _FIRST["pending"]
        _FIRST["pending"] = False
    try:
        with native_stderr_silenced() if quiet else contextlib.nullcontext():
            if isinstance(model, (bytes, bytearray, memoryview)):
                interp = Interpreter(model_content=bytes(model), num_threads=num_threads)
            else:
                interp = Interpreter(model_path=os.fspath(model), num_threads=num_threads)
            interp.allocate_tensors()
    except BaseException:
        _FIRST["pending"] = _FIRST["pending"] or quiet  # the notice is still to come
        raise
    return interp


_FIRST = {"lock": threading.Lock(), "pending": True}
