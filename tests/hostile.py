"""Helpers for the tests that feed the program hostile input: child processes where a process
is the point (the CLI under resource limits, ``run_process`` and ``run_cli_many``; the peak
memory of a load), and the tally of bad inputs tried and the error messages they gave."""

from __future__ import annotations

import collections
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

from conftest import Run
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_MANY = """
import contextlib, io, json, resource, signal, sys
from tf_mobilenet_v1.cli import main
calls, limits = json.loads(sys.argv[1]), json.loads(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
out = []
for args, limit in zip(calls, limits):
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    out.append([code, err.getvalue()])
print(json.dumps(out))
"""


def run_cli_many(calls, file_size_limit: int | list[int] = 0, timeout: float = 600) -> list[Run]:
    """Several CLI invocations in one child process (TensorFlow is imported once), each with
    its stderr captured apart: under ``file_size_limit`` bytes (0: none), one for all calls or
    one per call."""
    import json

    calls = [[str(a) for a in args] for args in calls]
    limits = file_size_limit if isinstance(file_size_limit, list) \
        else [file_size_limit] * len(calls)
    proc = subprocess.run([sys.executable, "-c", _MANY, json.dumps(calls), json.dumps(limits)],
                          capture_output=True, text=True, timeout=timeout, env=child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [Run(code, "", err) for code, err in json.loads(proc.stdout.splitlines()[-1])]


def child_env(**extra) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore", **extra}
    return env


def run_process(*args, file_size_limit: int | None = None, timeout: float = 300,
                cwd=None, **env) -> Run:
    """``python -m tf_mobilenet_v1 ARGS`` in a child process, where a process is the point.
    ``file_size_limit`` makes every write past that many bytes fail with EFBIG, as a full disk
    does, without needing a small file system."""
    def limit():
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    proc = subprocess.run([sys.executable, "-m", "tf_mobilenet_v1", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=child_env(**env), preexec_fn=limit)
    return Run(proc.returncode, proc.stdout, proc.stderr)


_PEAK = """
import resource, sys
from tf_mobilenet_v1.loaders.dispatch import load_any
try:
    load_any(sys.argv[1])
    outcome = "loaded"
except Exception as e:
    outcome = f"{type(e).__name__}: {e}"
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
print(outcome)
"""


def peak_load_mib(source) -> tuple[int, str]:
    """``(peak resident MiB, outcome)`` of ``load_any(source)`` in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(source)], capture_output=True,
                          text=True, timeout=600, env=child_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak, outcome = proc.stdout.strip().split("\n", 1)
    return int(peak), outcome


def killed_writes(folder, stale: str, fresh: str, other: str):
    """Three temporary directories as a SIGKILLed write leaves them in ``folder``: ``stale``
    and ``other`` an hour old, ``fresh`` (a write running now) new; returns their paths."""
    paths = [folder / name for name in (stale, fresh, other)]
    old = time.time() - 3600
    for i, d in enumerate(paths):
        d.mkdir()
        (d / "out0").write_bytes(b"x" * 1000)
        if i != 1:
            os.utime(d, (old, old))
    return paths


def leftovers(directory) -> list[str]:
    """Temporary files or directories our writers may have left in ``directory``."""
    return sorted(n for n in os.listdir(directory) if n.endswith((".tmp", ".old")))


TALLIES: list = []  # written at the end of the session (conftest.pytest_sessionfinish)


class Tally:
    """Counts bad inputs tried and the distinct (path- and number-free) error messages seen."""

    def __init__(self, name: str):
        self.name, self.tried, self.messages = name, 0, collections.Counter()
        TALLIES.append(self)
        self.undetected = 0  # damage a format cannot see (e.g. a flipped weight byte)

    def bad(self, fn, *names: str, allow_success: bool = False):
        """Run ``fn`` on a bad input; return its result when it may succeed, else the error's
        first line (checked: a clean type, one meaningful line, naming one of ``names``)."""
        self.tried += 1
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - the point is to look at whatever comes out
            first = check_clean(e, names)
            self.messages[normalize(first)] += 1
            return e
        assert allow_success, f"no error for a bad input (expected one naming {names})"
        self.undetected += 1
        return result

    def write(self):
        out = os.environ.get("HARDENING_SUMMARY_DIR")
        if out:
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, f"{self.name}.json"), "w") as f:
                json.dump({"tried": self.tried, "undetected": self.undetected,
                           "distinct_messages": len(self.messages),
                           "messages": dict(self.messages.most_common())}, f, indent=1)


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s'\"():;,]+)+")


_NUMBER = re.compile(r"\d+")


def normalize(message: str) -> str:
    return _NUMBER.sub("N", _PATH.sub("<path>", message))


def check_clean(e: BaseException, names=()) -> str:
    """Assert ``e`` is an error a user can act on; return its first line."""
    assert isinstance(e, (ValueError, OSError)), f"raw {type(e).__module__}.{type(e).__name__}: {e}"
    module = type(e).__module__
    assert module == "builtins" or module.startswith(("tf_mobilenet_v1", "converters")), \
        f"library exception {module}.{type(e).__name__} leaked: {e}"
    assert not isinstance(e, UnicodeError), f"raw UnicodeError leaked: {e}"
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    assert len(first) > 20, f"uninformative message {first!r} ({type(e).__name__})"
    assert "Traceback" not in text
    if names:
        assert any(str(n) in first for n in names), f"{first!r} names none of {names}"
    return first


# derandomize: the same examples every run, so that CI is reproducible
FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def corruptions(draw, size: int):
    """``(name, function bytes -> bytes)``: truncation, byte flips, junk, or nothing."""
    kind = draw(st.sampled_from(["none", "truncate", "flip", "junk_head", "empty", "append"]))
    if kind == "truncate":
        cut = draw(st.integers(0, max(0, size - 1)))
        return kind, lambda b: b[:cut]
    if kind == "flip":
        spots = draw(st.lists(st.tuples(st.integers(0, max(0, size - 1)), st.integers(1, 255)),
                              min_size=1, max_size=8))

        def flip(b):
            b = bytearray(b)
            for at, x in spots:
                b[at % len(b)] ^= x
            return bytes(b)
        return kind, flip
    if kind == "junk_head":
        junk = draw(st.binary(min_size=1, max_size=64))
        return kind, lambda b: junk + b[len(junk):]
    if kind == "empty":
        return kind, lambda b: b""
    if kind == "append":
        tail = draw(st.binary(min_size=1, max_size=64))
        return kind, lambda b: b + tail
    return kind, lambda b: b
