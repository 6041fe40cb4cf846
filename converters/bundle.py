"""Build the weights that ship inside the package: Google's official ``mobilenet_v1_1.0_224``,
converted by our own reader and HF writer into a Hugging Face directory.

    python -m tf_mobilenet_v1.converters.bundle \\
        ../shared/fixtures/official/mobilenet_v1_1.0_224 --force

The directory (``config.json``, ``preprocessor_config.json``, ``model.safetensors``) also loads
in transformers; ``tests/test_bundled_weights.py`` checks it is bit-exact with a fresh
conversion of the checkpoint.
"""

from __future__ import annotations

import argparse
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
    return save_hf(model, dst or bundled_path(BUNDLED_NAME, must_exist=False), force=force)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tf_mobilenet_v1.converters.bundle",
                                description=__doc__)
    p.add_argument("src", help="the official mobilenet_v1_1.0_224 slim checkpoint (directory)")
    p.add_argument("dst", nargs="?", default=None, help="default: the package's weights folder")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    args = p.parse_args(argv)
    print(f"wrote {build_bundle(args.src, args.dst, args.force)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
