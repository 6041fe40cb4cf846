"""Child-process helpers, for tests where a process is the point: the CLI under resource
limits (``run_process``, ``run_cli_many``) and the peak memory of a load."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

from conftest import Run

_MANY = """
import contextlib, io, json, resource, signal, sys
from tf_mobilenet_v1.cli import main
calls, limit = json.loads(sys.argv[1]), int(sys.argv[2])
out = []
for args in calls:
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    out.append([code, err.getvalue()])
print(json.dumps(out))
"""


def run_cli_many(calls, file_size_limit: int = 0, timeout: float = 600) -> list[Run]:
    """Several CLI invocations in one child process (TensorFlow is imported once): each one
    under the file size limit, its stderr captured separately."""
    import json

    calls = [[str(a) for a in args] for args in calls]
    proc = subprocess.run([sys.executable, "-c", _MANY, json.dumps(calls), str(file_size_limit)],
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


def leftovers(directory) -> list[str]:
    """Temporary files or directories our writers may have left in ``directory``."""
    return sorted(n for n in os.listdir(directory) if n.endswith((".tmp", ".old")))
