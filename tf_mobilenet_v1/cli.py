"""``mobilenet-v1`` command line: each subcommand calls one public function.

Exit codes: 0 success, 1 a failure (bad file, failed conversion, some images unreadable),
2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import first_line

DEFAULT_WEIGHTS = "mobilenet_v1_1.0_224"


def _info(args) -> int:
    from .info import describe

    print(describe(args.variant))
    return 0


def _predict(args) -> int:
    from .predict import run_predict

    return run_predict(args.inputs, weights=args.weights, top_k=args.top_k,
                       json_output=args.json, batch_size=args.batch_size,
                       preprocessing=args.preprocessing)


def _convert(args) -> int:
    from converters.convert import convert

    out = convert(args.src, args.dst, force=args.force, use_ema=args.use_ema)
    print(f"wrote {out}")
    return 0


def _export(args) -> int:
    from converters.export import export

    export(args.src, args.out, format=args.format, quantize=args.quantize,
           io_type=args.io_type, image_size=args.image_size,
           calibration_dir=args.calibration_dir, force=args.force)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mobilenet-v1", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="print a variant's config, parameter count and MACs")
    s.add_argument("variant", help="e.g. mobilenet_v1_0.75_192, or a weights path (as --weights)")
    s.set_defaults(func=_info)

    s = sub.add_parser("predict", help="classify images (files or directories)")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    s.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help=f"registry name or checkpoint/HF/Keras path (default {DEFAULT_WEIGHTS})")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--preprocessing", choices=("resize", "crop", "slim"), default="resize",
                   help="resize: Pillow bilinear to the model size (default, as Google's "
                   "reference and TFLite examples); crop: Hugging Face's resize + center crop; "
                   "slim: TF-slim's eval crop")
    s.set_defaults(func=_predict)

    s = sub.add_parser("convert", help="convert weights between formats (by DST's form)",
                       description="DST forms: *.keras, *.weights.h5, *.ckpt (slim), "
                       "*.safetensors, *.bin, or a directory (Hugging Face).")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--force", action="store_true", help="replace an existing DST")
    s.add_argument("--use-ema", action="store_true",
                   help="load ExponentialMovingAverage shadows from a slim checkpoint")
    s.set_defaults(func=_convert)

    s = sub.add_parser("export", help="export a SavedModel or TFLite model for deployment")
    s.add_argument("src", help="registry name or any weights path")
    s.add_argument("out", nargs="?", default=None,
                   help="output path (default saved_models/<variant>/...)")
    s.add_argument("--format", choices=("saved_model", "tflite"), default="tflite")
    s.add_argument("--quantize", choices=("none", "float16", "dynamic", "int8"), default="none")
    s.add_argument("--io-type", choices=("float32", "uint8", "int8"), default=None,
                   help="input/output type of a full-int8 TFLite model")
    s.add_argument("--image-size", type=int, default=None)
    s.add_argument("--calibration-dir", default=None, help="images for int8 calibration")
    s.add_argument("--force", action="store_true", help="replace an existing output")
    s.set_defaults(func=_export)
    return p


def _import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up notices (CUDA probe, oneDNN) kept off stderr."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _import_tensorflow_quietly()
    if getattr(args, "top_k", 1) < 1 or getattr(args, "batch_size", 1) < 1:
        print("mobilenet-v1: error: --top-k and --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("mobilenet-v1: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, KeyError, RuntimeError) as e:
        msg = first_line(e)
        print(f"mobilenet-v1: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
