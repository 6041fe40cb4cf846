"""Reading TensorFlow checkpoints (V1 or V2 format) into memory, and finding one in a directory."""

from __future__ import annotations

import glob
import os

import numpy as np

from ..errors import first_line

DATA_SUFFIX = ".data-00000-of-00001"
SOURCE_FORMS = ("a checkpoint prefix, a directory with a 'checkpoint' file, a release .tgz or a "
                "frozen_graph.pb")


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """Every tensor of a TF (V1 or V2 format) checkpoint ``prefix``, read into memory.

    A V2 ``.index`` is validated first (``ckpt_index``): TensorFlow aborts the process on some
    malformed entries instead of raising. One it cannot check (compressed blocks) is read once
    in a child process, so a crash there is an error here.
    """
    import tensorflow as tf

    from .ckpt_index import validate_index

    if os.path.isfile(prefix + ".index") and not validate_index(prefix):
        _read_in_child(prefix)
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: np.asarray(reader.get_tensor(name))
                for name in sorted(reader.get_variable_to_shape_map())}
    except tf.errors.NotFoundError:
        raise FileNotFoundError(
            f"no checkpoint at {prefix} (expected {prefix}.index and {prefix}{DATA_SUFFIX}); "
            f"pass {SOURCE_FORMS}"
        ) from None
    except (tf.errors.OpError, IndexError, ValueError, OSError) as e:
        first = first_line(e)
        raise ValueError(
            f"checkpoint {prefix} is unreadable ({first}); its .index or .data file is "
            "truncated or corrupt, so copy or download it again"
        ) from None


def checkpoint_prefix_in_dir(directory: str) -> str:
    """The prefix a directory's ``checkpoint`` file names (or its only ``*.index`` file)."""
    import tensorflow as tf

    if os.path.isfile(os.path.join(directory, "checkpoint")):
        prefix = tf.train.latest_checkpoint(directory)
        if prefix is None:
            raise FileNotFoundError(
                f"{directory}/checkpoint names a checkpoint whose files are missing; pass the "
                "checkpoint prefix (path/model.ckpt) directly"
            )
        return prefix
    indexes = sorted(glob.glob(os.path.join(glob.escape(directory), "*.index")))
    if len(indexes) == 1:
        return indexes[0][: -len(".index")]
    found = "several checkpoints" if indexes else "no checkpoint"
    raise FileNotFoundError(
        f"{directory} holds {found} and no 'checkpoint' file; pass a checkpoint prefix "
        "(path/model.ckpt), a .tgz or a frozen .pb"
    )


def _read_in_child(prefix: str) -> None:
    import subprocess
    import sys

    code = ("import sys, tensorflow as tf; r = tf.train.load_checkpoint(sys.argv[1]); "
            "[r.get_tensor(n) for n in r.get_variable_to_shape_map()]")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", code, prefix], capture_output=True, env=env,
                         timeout=600)
    if run.returncode < 0:
        raise ValueError(f"checkpoint {prefix} makes TensorFlow crash (signal "
                         f"{-run.returncode}); it is corrupt or crafted")
