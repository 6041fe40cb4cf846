"""One-line error messages: the CLI and every loader report the first line of a cause."""

from __future__ import annotations

import contextlib
import os
import sys
import threading


class PretrainedWarning(UserWarning):
    """A pretrained load that deliberately leaves out (or re-initializes) the classifier head."""


class InputRangeWarning(UserWarning):
    """``predict`` got raw pixels (uint8, or floats outside [-1, 1]) instead of model inputs."""


def did_you_mean(name: str, choices) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up notices (CUDA probe, oneDNN) kept off stderr."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():
        import tensorflow  # noqa: F401


_SILENCE = {"lock": threading.Lock(), "depth": 0, "saved": None}


@contextlib.contextmanager
def native_stderr_silenced():
    """Keep C++ notices (TensorFlow's start-up probes, LiteRT's "Created TensorFlow Lite
    XNNPACK delegate") off file descriptor 2 for the duration; Python exceptions still
    propagate. Safe from several threads at once: the first to enter redirects fd 2, the
    last to leave puts it back (overlapping calls once left it on /dev/null for good)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured or replaced stderr: nothing to do
        yield
        return
    with _SILENCE["lock"]:
        if _SILENCE["depth"] == 0:
            sys.stderr.flush()
            _SILENCE["saved"] = os.dup(fd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        _SILENCE["depth"] += 1
    try:
        yield
    finally:
        with _SILENCE["lock"]:
            _SILENCE["depth"] -= 1
            if _SILENCE["depth"] == 0:
                os.dup2(_SILENCE["saved"], fd)
                os.close(_SILENCE["saved"])
