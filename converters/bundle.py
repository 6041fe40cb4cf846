"""Build the weights that ship inside the package: Google's official ``mobilenet_v1_1.0_224``,
converted by our own reader and HF writer into a Hugging Face directory.

    python -m tf_mobilenet_v1.converters.bundle \\
        ../shared/fixtures/official/mobilenet_v1_1.0_224 --force

The directory (``config.json``, ``preprocessor_config.json``, ``model.safetensors``) also loads
in transformers; ``tests/test_bundled_weights.py`` checks it is bit-exact with a fresh
conversion of the checkpoint. Beside the weights: their float32 TFLite model for ``predict``'s
fast path (``fast.tflite`` + ``fast.json``), so a new install's first run converts nothing;
the tests check it matches these files and this version (``--fast-model-only`` rebuilds it).
"""

from __future__ import annotations

import argparse
import os
import sys

BUNDLED_NAME = "mobilenet_v1_1.0_224"


def build_bundle(src: str, dst: str | None = None, force: bool = False) -> str:
    """Convert the official slim checkpoint ``src`` into the bundled HF directory ``dst``."""
    from tf_mobilenet_v1.loaders.dispatch import load_any
    from tf_mobilenet_v1.registry import bundled_path

    from .hf import save_hf

    model = load_any(src)
    if model.config.variant != BUNDLED_NAME or model.config.num_labels != 1001:
        raise ValueError(f"{src} holds {model.config.variant} with {model.config.num_labels} "
                         f"labels, not the official {BUNDLED_NAME} classifier")
    folder = save_hf(model, dst or bundled_path(BUNDLED_NAME, must_exist=False), force=force)
    write_fast_model(folder, model)
    return folder


def write_fast_model(folder: str, model=None) -> str:
    """Write the fast model of the bundled weights in ``folder`` beside them (``fast.tflite``
    + ``fast.json``, fast_predict's entry for exactly these files and this version), so that
    ``predict``'s first run converts nothing. ``model``: those weights, already loaded."""
    from tf_mobilenet_v1 import fast_predict
    from tf_mobilenet_v1.loaders.dispatch import load_any

    files = fast_predict.weight_files(folder)
    if files is None:
        raise ValueError(f"{folder} is not a Hugging Face directory the fast path takes")
    model = model if model is not None else load_any(folder)
    content, meta = fast_predict.build_entry(model, fast_predict.cache_key(files))
    fast_predict.write_entry(os.path.join(folder, fast_predict.SHIPPED_MODEL),
                             os.path.join(folder, fast_predict.SHIPPED_META), content, meta)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tf_mobilenet_v1.converters.bundle",
                                description=__doc__)
    p.add_argument("src", nargs="?",
                   help="the official mobilenet_v1_1.0_224 slim checkpoint (directory)")
    p.add_argument("dst", nargs="?", default=None, help="default: the package's weights folder")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--fast-model-only", action="store_true",
                   help="only rebuild the shipped fast model of the bundle in DST (or the "
                   "package's) from its weights, SRC unused: after a version bump")
    args = p.parse_args(argv)
    if args.fast_model_only:
        from tf_mobilenet_v1.registry import bundled_path

        print(f"wrote {write_fast_model(args.dst or bundled_path(BUNDLED_NAME))}")
        return 0
    if args.src is None:
        p.error("give the official checkpoint SRC, or --fast-model-only")
    print(f"wrote {build_bundle(args.src, args.dst, args.force)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
