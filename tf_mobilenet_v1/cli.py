"""The mobilenet-v1 command line: each subcommand calls one public function.

Exit codes: 0 success, 1 a failure (bad file, failed conversion, some images unreadable),
2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import warnings

from .errors import did_you_mean, first_line, import_tensorflow_quietly
from .fileio import end_process
from .preprocessing import PREPROCESSING_NAMES

DEFAULT_WEIGHTS = "mobilenet_v1_1.0_224"


def _info(args) -> int:
    from .info import describe, list_variants

    if args.list == (args.variant is not None):
        print("mobilenet-v1 info: error: give a variant or --list", file=sys.stderr)
        return 2
    print(list_variants() if args.list else describe(args.variant))
    return 0


def _predict(args) -> int:
    from .predict import run_predict

    output = "jsonl" if args.jsonl else ("json" if args.json else "table")
    return run_predict(args.inputs, weights=args.weights, top_k=args.top_k, output=output,
                       batch_size=args.batch_size, preprocessing=args.preprocessing,
                       fast=False if args.no_fast else None, fast_decode=args.fast_decode)


def _beam(args) -> int:
    from .beam import run_beam

    return run_beam(args.input, args.output, args.pipeline_args, weights=args.weights,
                    top_k=args.top_k, preprocessing=args.preprocessing,
                    batch_size=args.batch_size)


def _spark(args) -> int:
    from .spark import run_spark

    return run_spark(args.input, args.output, master=args.master, weights=args.weights,
                     top_k=args.top_k, preprocessing=args.preprocessing,
                     batch_size=args.batch_size, fast=False if args.no_fast else None)


def _convert(args) -> int:
    from tf_mobilenet_v1.converters.convert import convert

    out = convert(args.src, args.dst, force=args.force, use_ema=args.use_ema)
    print(f"wrote {out}")
    return 0


def _export(args) -> int:
    from tf_mobilenet_v1.converters.export import export

    export(args.src, args.out, format=args.format, quantize=args.quantize,
           io_type=args.io_type, image_size=args.image_size,
           calibration_dir=args.calibration_dir, force=args.force, task=args.task,
           outputs=args.outputs, dynamic_batch=args.dynamic_batch)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tf-mobilenet-v1")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, but not the ``(default: None)`` of options without one."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with a suggestion for a mistyped command, choice or option."""

    def error(self, message):
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            message += did_you_mean(choice[1], re.findall(r"'([^']*)'", choice[2]))
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            options = [o for a in self._actions for o in a.option_strings]
            message += did_you_mean(unknown[1].split("=")[0], options)
        super().error(message)

    def subparser(self, command: str) -> argparse.ArgumentParser:
        """The parser of ``command`` (its usage and options), or this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(command, self)
        return self


def _add_model_options(s) -> None:
    """The options ``beam`` and ``spark`` share with ``predict``."""
    s.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help="as predict's --weights, or an exported .tflite / SavedModel")
    s.add_argument("--top-k", type=int, default=5, help="predictions per image")
    s.add_argument("--batch-size", type=int, default=32, help="largest batch per model call")
    s.add_argument("--preprocessing", choices=PREPROCESSING_NAMES, default="model",
                   help="as predict's --preprocessing")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="mobilenet-v1", formatter_class=_Formatter,
        description="MobileNet V1 in TensorFlow / Keras: classify images, convert and export "
        "weights.", epilog="Also runs as: python -m tf_mobilenet_v1")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, **kwargs):
        return sub.add_parser(name, formatter_class=_Formatter, **kwargs)

    s = add("info", help="print a variant's config, parameter count and MACs")
    s.add_argument("variant", nargs="?", help="a registry name such as "
                   "mobilenet_v1_0.75_192[_quant], or a weights path")
    s.add_argument("--list", action="store_true",
                   help="list the registry's names, published top-1 and cache state")
    s.set_defaults(func=_info)

    s = add("predict", help="classify images (files or directories)")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files, or directories searched recursively for images")
    s.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help="registry name, or a slim checkpoint, release .tgz, HF directory, "
                   ".safetensors or .keras path")
    s.add_argument("--top-k", type=int, default=5, help="predictions per image")
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="print one JSON document (only JSON on stdout)")
    fmt.add_argument("--jsonl", action="store_true",
                     help="print one JSON line per image as it is classified")
    s.add_argument("--batch-size", type=int, default=32, help="images per model call")
    s.add_argument("--preprocessing", choices=PREPROCESSING_NAMES, default="model",
                   help="model: the weights' own processor (Hugging Face's resize + centre "
                   "crop unless the weights say otherwise); crop: that crop at the model "
                   "size; resize: Pillow bilinear straight to the model size (the TFLite "
                   "examples'); slim: TF-slim's eval crop")
    s.add_argument("--no-fast", action="store_true",
                   help="always run the Keras model; by default, with ai-edge-litert "
                   "installed, local weights run as a float32 TFLite model built once and "
                   "cached (same results; also MOBILENET_V1_FAST=0)")
    s.add_argument("--fast-decode", action="store_true",
                   help="decode large JPEGs at a reduced scale (libjpeg's DCT scaling, the "
                   "shortest edge kept at least twice the resize target): about 2x faster "
                   "on 12 MP phone photos, but the pixels then differ from Hugging Face's "
                   "(agreement with the exact path in docs/speed.md); smaller JPEGs and "
                   "other formats decode as they are")
    s.set_defaults(func=_predict)

    s = add("beam", help="classify images at scale with Apache Beam RunInference",
            description="Runs on any Beam runner: arguments not listed here are Beam's "
            "pipeline options (--runner DataflowRunner --project P --region R "
            "--temp_location gs://..., --direct_running_mode multi_processing, ...). Writes "
            "OUTPUT-SSSSS-of-NNNNN.jsonl (predict --jsonl's lines) and OUTPUT-errors-*.jsonl.")
    s.add_argument("--input", action="append", required=True, metavar="PATTERN",
                   help="file pattern (local, gs://, s3://...; repeatable); only image "
                   "files are classified")
    s.add_argument("--output", required=True, help="output prefix, e.g. gs://bucket/preds")
    _add_model_options(s)
    s.set_defaults(func=_beam)

    s = add("spark", help="classify images with Apache Spark (a cluster or local[*])",
            description="Reads every image file INPUT matches with Spark's binaryFile source "
            "and classifies them with predict_batch_udf on the executors; writes predict "
            "--jsonl's lines into the new directory OUTPUT (part-*.txt). Local weights are "
            "shipped with the job. Run it as it is (--master), or under spark-submit.")
    s.add_argument("--input", required=True, metavar="GLOB",
                   help="a glob or a directory (read recursively): local, hdfs://, s3a://...; "
                   "only image files are classified")
    s.add_argument("--output", required=True, metavar="DIR", help="a directory to create")
    s.add_argument("--master", help="spark://HOST:7077, yarn, local[4]...; default: Spark's "
                   "own (spark-submit's, else local[*])")
    _add_model_options(s)
    s.add_argument("--no-fast", action="store_true",
                   help="run the Keras model on the executors, not the cached TFLite one")
    s.set_defaults(func=_spark)

    s = add("convert", help="convert weights between formats (by DST's form)",
                       description="DST forms: *.keras, *.weights.h5, *.ckpt (slim), "
                       "*.safetensors, *.bin, or a Hugging Face directory (an existing "
                       "directory, a name ending in /, or a name without one of those "
                       "suffixes). For .tflite or a SavedModel use the export command.")
    s.add_argument("src", help="registry name or any weights path (as predict's --weights)")
    s.add_argument("dst", help="output path; its form picks the format (see above)")
    s.add_argument("--force", action="store_true", help="replace an existing DST")
    s.add_argument("--use-ema", action="store_true",
                   help="load ExponentialMovingAverage shadows from a slim checkpoint")
    s.set_defaults(func=_convert)

    s = add("export", help="export a SavedModel, TFLite or ONNX model for deployment")
    s.add_argument("src", help="registry name or any weights path")
    s.add_argument("out", nargs="?", default=None,
                   help="output path (default saved_models/<variant>/...)")
    s.add_argument("--format", choices=("saved_model", "tflite", "onnx"), default="tflite",
                   help="deployment format (onnx needs the [onnx] extra)")
    s.add_argument("--task", choices=("classification", "feature-vector"),
                   default="classification",
                   help="feature-vector: output the backbone's pooled features (embeddings)")
    s.add_argument("--outputs", choices=("probabilities", "logits"), default=None,
                   help="what a TFLite classifier outputs (default probabilities, as the "
                   "Android Task Library and MediaPipe expect)")
    s.add_argument("--dynamic-batch", action="store_true",
                   help="TFLite input of any batch size (resize_tensor_input); SavedModel "
                   "and ONNX always take any batch")
    s.add_argument("--quantize", choices=("none", "float16", "dynamic", "int8"), default="none",
                   help="TFLite weight quantization (int8 calibrates on --calibration-dir)")
    s.add_argument("--io-type", choices=("float32", "uint8", "int8"), default=None,
                   help="input/output type of a full-int8 TFLite model")
    s.add_argument("--image-size", type=int, default=None,
                   help="input size of the exported model (default: the weights' own)")
    s.add_argument("--calibration-dir", default=None, help="images for int8 calibration")
    s.add_argument("--force", action="store_true", help="replace an existing output")
    s.set_defaults(func=_export)
    return p


def _load_tensorflow_if_needed(args) -> None:
    """Import TensorFlow (quietly) only for work that needs it, after the cheap checks: ``info``
    on a registry name and a missing source need none of its seconds of start-up. ``predict``
    imports it itself, and only when it runs the Keras model."""
    if args.command == "info":
        if args.variant is None or not (os.path.exists(args.variant)
                                        or os.path.exists(f"{args.variant}.index")):
            return
    elif args.command in ("convert", "export"):
        from .formats import recognise
        from .loaders.source import locate

        path, key = locate(args.src)  # a typo or missing file fails here, in milliseconds
        if key is None:
            recognise(path).check_needs(path)  # so does a missing torch for a .bin
        if args.command == "export":
            return  # it imports TensorFlow itself, after checking its options
    elif args.command != "beam":
        return
    import_tensorflow_quietly()


_OUT_OF_MEMORY = ("out of memory; use a smaller --batch-size or image size, or close other "
                  "programs")


def _end_on_signal(signum, frame):
    if signum == signal.SIGTERM:
        end_process(143, "mobilenet-v1: terminated")  # 143: what a shell reports for SIGTERM
    end_process(130, "mobilenet-v1: interrupted")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line of the CLI's own, not Python's two with a source line."""
    text = first_line(message) if isinstance(message, Warning) else str(message)
    print(f"mobilenet-v1: warning: {text}", file=file or sys.stderr)


def main(argv=None) -> int:
    """Run the command line; ``argv=None`` (a real invocation) reads ``sys.argv``."""
    if argv is None and threading.current_thread() is threading.main_thread():
        # A real process ends at once on SIGTERM / Ctrl-C, temporary outputs removed and the
        # results printed so far flushed; an exception raised into TensorFlow's C++ code would
        # come out mangled or not at all. Called as a function, Ctrl-C stays KeyboardInterrupt.
        signal.signal(signal.SIGTERM, _end_on_signal)
        signal.signal(signal.SIGINT, _end_on_signal)
    with warnings.catch_warnings():  # restores Python's own display afterwards
        warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "beam":
        parser.subparser(args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    args.pipeline_args = extra  # Beam's own options
    if getattr(args, "top_k", 1) < 1 or getattr(args, "batch_size", 1) < 1:
        print("mobilenet-v1: error: --top-k and --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        _load_tensorflow_if_needed(args)
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit-time flush
        # from failing on the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE
    except KeyboardInterrupt:
        print("mobilenet-v1: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"mobilenet-v1: error: {_OUT_OF_MEMORY}", file=sys.stderr)
        return 1
    except (ValueError, OSError, ImportError, KeyError, RuntimeError) as e:
        print(f"mobilenet-v1: error: {first_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:
        if type(e).__name__ != "ResourceExhaustedError":  # TensorFlow's out-of-memory error
            raise
        print(f"mobilenet-v1: error: {_OUT_OF_MEMORY} ({first_line(e)[:200]})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
