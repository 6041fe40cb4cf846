"""Benchmark MobileNet V1: our Keras model against keras.applications, Hugging Face and TFLite.

Usage::

    python benchmarks/run.py                 # full run, 1.0_224 float32 (about 10 minutes)
    python benchmarks/run.py --quick         # smoke run: same model, few iterations
    python benchmarks/run.py --contenders 'ours_*,app_*' --json results.json

Method (the machines are shared and noisy, so only ratios within one run mean anything):

* Timing: every contender is set up once in THIS process, warmed up, then measured in rounds;
  each round visits every contender (in a rotated order) for a few batch-1 calls and a few
  batch-N calls, so all contenders see the same time window and the same background load.
  Figures are medians over all rounds. Load paths and exports are timed the same way, one call
  per round, after one untimed warm-up call (a "warm process": TensorFlow already imported).
* Peak RSS: measured per contender in a fresh child process that sets up only that contender
  and runs it a few times (its ``VmHWM``, or ``ru_maxrss`` of a process it ran itself, the
  CLI's). Children run one at a time after the timing rounds, so they do not disturb the
  timings. Files that a contender
  needs (checkpoints, .tflite models) are written by the parent first, so a TFLite child never
  imports TensorFlow.

Each contender imports what it needs lazily: a missing optional package or project module only
turns its row into ``n/a: reason``.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import importlib.metadata
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Collection
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tf_mobilenet_v1.errors import first_line

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
FROZEN_TGZ = FIXTURES / "official" / "mobilenet_v1_0.25_128_frozen.tgz"
BURGER = FIXTURES / "images" / "burger.jpg"
RSS_MARK = "BENCH_RSS_RESULT "


@dataclasses.dataclass
class Settings:
    """What to measure and how often."""

    depth_multiplier: float = 1.0
    image_size: int = 224
    batch: int = 32  # the throughput batch size
    rounds: int = 10  # interleaved measurement rounds
    iters_b1: int = 5  # timed batch-1 calls per contender per round (after 1 untimed)
    iters_bn: int = 2  # timed batch-N calls per contender per round
    warmup: int = 2  # untimed calls per batch size before the rounds
    slow_rounds: int = 3  # rounds for slow contenders (exports, CLI, XLA on CPU)
    threads: int = 2  # torch threads; TensorFlow uses its default (all cores)
    calibration_images: int = 8  # int8 calibration set size (random images)
    seed: int = 0


QUICK = dict(rounds=2, iters_b1=3, iters_bn=1, warmup=1, slow_rounds=1)


@dataclasses.dataclass
class Runner:
    """What a contender's setup returns: an inference ``make`` or a ``load`` callable."""

    make: Callable[[np.ndarray], Callable[[], object]] | None = None
    load: Callable[[], object] | None = None
    same_weights: bool = False  # outputs comparable with our Keras model's
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    group: str  # keras | hf | tflite | load | export
    what: str
    setup: Callable[[Context], Runner]
    slow: bool = False  # timed for ``slow_rounds`` rounds only


CONTENDERS: dict[str, Contender] = {}


def _register(name, group, what, setup, slow=False):
    CONTENDERS[name] = Contender(name, group, what, setup, slow)


class Unavailable(Exception):
    """A contender cannot run here (missing package, module or fixture)."""


# --------------------------------------------------------------------------------------------
# Shared state: models and files, built once and reused by every contender that needs them.


class Context:
    """Settings, inputs, a work directory for artifacts, and a cache of built models."""

    def __init__(self, settings: Settings, workdir: str | os.PathLike):
        self.s = settings
        self.workdir = Path(workdir)
        self._cache: dict[str, object] = {}
        rng = np.random.default_rng(settings.seed)
        shape = (settings.image_size, settings.image_size, 3)
        self.x1 = rng.uniform(-1, 1, (1, *shape)).astype(np.float32)
        self.xn = rng.uniform(-1, 1, (settings.batch, *shape)).astype(np.float32)

    def cached(self, key: str, build: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def artifact(self, name: str, write: Callable[[Path], object], probe: str = "") -> Path:
        """A file in the work directory, written once (children find the parent's copy)."""
        path = self.workdir / name
        if not Path(str(path) + probe).exists():
            write(path)
        return path

    @property
    def variant(self) -> str:
        return f"mobilenet_v1_{self.s.depth_multiplier!r}_{self.s.image_size}"

    # ----- models -----
    def config(self):
        from tf_mobilenet_v1 import MobileNetV1Config

        return MobileNetV1Config(depth_multiplier=self.s.depth_multiplier,
                                 image_size=self.s.image_size)

    def ours(self):
        """Our 1001-class classifier with random, non-trivial weights (seeded)."""

        def build():
            from tf_mobilenet_v1 import MobileNetV1ForImageClassification

            return randomize_keras(MobileNetV1ForImageClassification(self.config()), self.s.seed)

        return self.cached("ours", build)

    def ours_fused(self):
        return self.cached("ours_fused", lambda: self.ours().fused())

    def ours_keras_bn(self):
        """Our model as it ran before inference folding: Keras's BatchNormalization layers."""

        def build():
            from tf_mobilenet_v1.layers import ConvBlock

            model = self.ours_copy()
            for layer in model.layers:
                if isinstance(layer, ConvBlock):
                    layer.fold_inference_bn = False
            return model

        return self.cached("ours_keras_bn", build)

    def ours_copy(self, fused: bool = False):
        """A separate model object with the same weights (for per-model predict settings)."""
        src = self.ours_fused() if fused else self.ours()
        model = type(src).from_config(src.get_config())
        model.set_weights(src.get_weights())
        return model

    def app(self):
        """keras.applications.MobileNet, same width, size and class count, random weights."""

        def build():
            import keras

            model = keras.applications.MobileNet(
                input_shape=(self.s.image_size, self.s.image_size, 3),
                alpha=self.s.depth_multiplier, weights=None, classes=1001,
                classifier_activation=None)
            return randomize_keras(model, self.s.seed)

        return self.cached("app", build)

    def reference(self) -> np.ndarray:
        """Our Keras model's batch-1 logits: what same-weight contenders are compared with."""
        return self.cached("reference", lambda: np.asarray(self.ours()(self.x1, training=False)))

    # ----- files -----
    def slim_checkpoint(self) -> Path:
        def write(path):
            from tf_mobilenet_v1.slim_checkpoint import save_slim_checkpoint

            save_slim_checkpoint(self.ours(), str(path), force=True)

        return self.artifact(f"{self.variant}.ckpt", write, probe=".index")

    def release_tgz(self) -> Path:
        """A tarball laid out like Google's releases: ``<variant>.ckpt.*`` at the top level."""

        def write(path):
            from tf_mobilenet_v1.fileio import atomic_output

            prefix = self.slim_checkpoint()
            files = sorted(p for p in prefix.parent.iterdir() if p.name.startswith(prefix.name))
            with atomic_output(path, force=True, suffix=".tgz") as tmp:
                with tarfile.open(tmp, "w:gz") as tar:
                    for f in files:
                        tar.add(f, arcname=f.name)

        return self.artifact(f"{self.variant}.tgz", write)

    def hf_dir(self) -> Path:
        def write(path):
            from converters.hf import save_hf

            save_hf(self.ours(), str(path), force=True)

        return self.artifact(f"{self.variant}_hf", write)

    def tflite(self, quantize: str, app: bool = False) -> Path:
        name = f"{'app' if app else 'ours'}_{quantize}.tflite"
        return self.artifact(name, functools.partial(self._export_tflite, quantize, app))

    def _export_tflite(self, quantize, app, path):
        if app:
            from tf_mobilenet_v1.fileio import atomic_output

            # The same converter and settings as our exporter's float32 path (see tflite_bytes).
            with atomic_output(path, force=True, suffix=".tflite") as tmp:
                Path(tmp).write_bytes(tflite_bytes(self.app(), self.s.image_size))
            return
        from converters.tflite import export_tflite

        kwargs = {}
        if quantize == "int8":
            rng = np.random.default_rng(self.s.seed + 1)
            kwargs["calibration_images"] = rng.uniform(
                -1, 1, (self.s.calibration_images, self.s.image_size, self.s.image_size, 3)
            ).astype(np.float32)
        export_tflite(self.ours(), str(path), quantize=quantize, force=True, **kwargs)


def tflite_bytes(model, image_size: int) -> bytes:
    """Float32 TFLite bytes of any Keras model, converted as ``converters.tflite`` does.

    The same converter call and settings as our exporter (a batch-1 concrete function, its
    variables owned by a plain ``tf.Module`` so that they are frozen, builtin ops only), so
    keras.applications' model goes through exactly the converter that ours does; the converter
    folds its batch norms itself.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32)])
    def serve(x):
        return model(x, training=False)

    holder = tf.Module()
    holder.model_variables = [v.value for v in model.variables]
    holder.serve = serve
    conv = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()],
                                                           holder)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv.convert()


def randomize_keras(model, seed: int = 0):
    """Random non-trivial weights and BN statistics (no denormals, realistic activations)."""
    from tf_mobilenet_v1.random_weights import randomize

    return randomize(model, seed)


def randomize_torch(model, seed: int = 0):
    """The same scheme for a PyTorch module (parameters and BN buffers)."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not t.is_floating_point():
                continue
            shape = tuple(t.shape)
            if name.endswith("running_var"):
                value = rng.uniform(0.5, 2.0, shape)
            elif "normalization" in name and name.endswith("weight"):
                value = rng.uniform(0.5, 1.5, shape)
            elif name.endswith(("bias", "running_mean")):
                value = rng.normal(0, 0.2, shape)
            else:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                value = rng.normal(0, np.sqrt(2.0 / max(fan_in, 1)), shape)
            t.copy_(torch.from_numpy(value.astype(np.float32)))
    return model


def _require(module: str, pip_name: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Unavailable(f"{module} is not installed (pip install {pip_name})") from None


# --------------------------------------------------------------------------------------------
# Contenders


def _keras_predict(model_fn, same_weights, note=""):
    def setup(ctx):
        model = model_fn(ctx)

        def make(x):
            return lambda: model.predict(x, batch_size=len(x), verbose=0)

        return Runner(make=make, same_weights=same_weights, note=note)

    return setup


def _keras_function(model_fn, jit_compile, same_weights):
    def setup(ctx):
        import tensorflow as tf

        model = model_fn(ctx)

        @tf.function(jit_compile=jit_compile, autograph=False)
        def call(x):
            return model(x, training=False)

        return Runner(make=lambda x: (lambda: call(x).numpy()), same_weights=same_weights)

    return setup


def _predict_on_batch(ctx):
    model = ctx.ours()
    return Runner(make=lambda x: (lambda: model.predict_on_batch(x)), same_weights=True)


def _predict_on_batch_fused(ctx):
    model = ctx.ours_fused()
    return Runner(make=lambda x: (lambda: model.predict_on_batch(x)), same_weights=True)


def _predict_xla(fused):
    def setup(ctx):
        model = ctx.ours_copy(fused=fused)
        model.jit_compile = True  # read when predict builds its function
        return _keras_predict(lambda _: model, True)(ctx)

    return setup


_register("ours_predict", "keras", "ours, model.predict (default)",
          _keras_predict(lambda c: c.ours(), True))
_register("ours_predict_keras_bn", "keras", "ours, Keras BatchNormalization layers, predict",
          _keras_predict(lambda c: c.ours_keras_bn(), True))
_register("ours_predict_on_batch", "keras", "ours, model.predict_on_batch", _predict_on_batch)
_register("ours_predict_on_batch_fused", "keras", "ours, fused BN, model.predict_on_batch",
          _predict_on_batch_fused)
_register("ours_predict_fused", "keras", "ours, fused BN, model.predict",
          _keras_predict(lambda c: c.ours_fused(), True))
_register("ours_predict_xla", "keras", "ours, model.predict, jit_compile=True",
          _predict_xla(False), slow=True)
_register("ours_tf_function", "keras", "ours, tf.function(model)",
          _keras_function(lambda c: c.ours(), False, True))
_register("ours_tf_function_fused", "keras", "ours, fused BN, tf.function",
          _keras_function(lambda c: c.ours_fused(), False, True))
_register("ours_tf_function_xla", "keras", "ours, tf.function(jit_compile=True)",
          _keras_function(lambda c: c.ours(), True, True), slow=True)
_register("ours_tf_function_xla_fused", "keras", "ours, fused BN, tf.function(jit_compile)",
          _keras_function(lambda c: c.ours_fused(), True, True), slow=True)
_register("app_predict", "keras", "keras.applications.MobileNet, predict",
          _keras_predict(lambda c: c.app(), False))
_register("app_tf_function", "keras", "keras.applications.MobileNet, tf.function",
          _keras_function(lambda c: c.app(), False, False))


def _hf(tf_padding: bool):
    def setup(ctx):
        torch = _require("torch", "torch")
        transformers = _require("transformers", "transformers")
        torch.set_num_threads(ctx.s.threads)
        transformers.utils.logging.disable_progress_bar()
        same = False
        model = None
        if tf_padding:
            try:  # our weights through our HF exporter: the outputs must then match ours
                model = transformers.MobileNetV1ForImageClassification.from_pretrained(
                    str(ctx.hf_dir()))
                same = True
            except Exception:  # noqa: BLE001 - the exporter may be missing: use random weights
                model = None
        if model is None:
            cfg = transformers.MobileNetV1Config(
                depth_multiplier=ctx.s.depth_multiplier, image_size=ctx.s.image_size,
                tf_padding=tf_padding, num_labels=1001, classifier_dropout_prob=0.001)
            model = randomize_torch(transformers.MobileNetV1ForImageClassification(cfg),
                                    ctx.s.seed)
        model.eval()

        def make(x):
            pixels = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

            def run():
                with torch.inference_mode():
                    return model(pixel_values=pixels).logits.numpy()

            return run

        note = "our weights via save_hf" if same else "random weights"
        return Runner(make=make, same_weights=same, note=note)

    return setup


_register("hf_torch_tfpad", "hf", "HF PyTorch, tf_padding=True", _hf(True))
_register("hf_torch_nopad", "hf", "HF PyTorch, tf_padding=False", _hf(False))


def _tflite(quantize: str, threads: int, app: bool = False):
    def setup(ctx):
        litert = _require("ai_edge_litert.interpreter", "ai-edge-litert")
        path = ctx.tflite(quantize, app=app)

        def make(x):
            # The exported models are batch-1 (as deployed on phones; XNNPACK cannot reshape
            # their fixed-shape graph), so batch N is N back-to-back invokes.
            interp = litert.Interpreter(model_path=str(path), num_threads=threads)
            interp.allocate_tensors()
            inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
            rows = [_quantize(x[i:i + 1], inp) for i in range(len(x))]
            oscale, ozero = out["quantization"]

            def run():
                ys = []
                for row in rows:
                    interp.set_tensor(inp["index"], row)
                    interp.invoke()
                    ys.append(interp.get_tensor(out["index"]))
                y = np.concatenate(ys)
                return (y.astype(np.float32) - ozero) * oscale if oscale else y

            return run

        return Runner(make=make, same_weights=not app,
                      note="XNNPACK; batch N = N batch-1 invokes")

    return setup


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


for _q, _label in (("none", "float32"), ("float16", "float16"), ("int8", "int8")):
    for _t in (1, 2):
        _register(f"ours_tflite_{_label}_t{_t}", "tflite",
                  f"ours, TFLite {_label}, {_t} thread{'s' * (_t > 1)}", _tflite(_q, _t))
for _t in (1, 2):
    _register(f"app_tflite_float32_t{_t}", "tflite",
              f"keras.applications, TFLite float32, {_t} thread{'s' * (_t > 1)}",
              _tflite("none", _t, app=True))


def _load(path_fn, what_note=""):
    def setup(ctx):
        from tf_mobilenet_v1 import MobileNetV1ForImageClassification

        path = str(path_fn(ctx))
        return Runner(load=lambda: MobileNetV1ForImageClassification.from_pretrained(path),
                      note=what_note)

    return setup


def _fixture(ctx):
    if not FROZEN_TGZ.exists():
        raise Unavailable(f"fixture {FROZEN_TGZ} is missing")
    return FROZEN_TGZ


_register("load_slim_ckpt", "load", "slim checkpoint -> Keras",
          _load(lambda c: c.slim_checkpoint()))
_register("load_release_tgz", "load", "release tarball (ckpt) -> Keras",
          _load(lambda c: c.release_tgz()))
_register("load_hf_dir", "load", "HF directory -> Keras", _load(lambda c: c.hf_dir()))
_register("load_frozen_tgz_0.25_128", "load", "official 0.25_128 frozen .tgz -> Keras",
          _load(_fixture, "real fixture, always 0.25_128"))


def _cli_predict(ctx):
    tgz = _fixture(ctx)
    if not BURGER.exists():
        raise Unavailable(f"fixture {BURGER} is missing")
    exe = shutil.which("mobilenet-v1")
    cmd = [exe] if exe else [sys.executable, "-m", "tf_mobilenet_v1.cli"]
    cmd += ["predict", str(BURGER), "--weights", str(tgz), "--top-k", "1"]
    return Runner(load=_process(cmd, "cheeseburger"),
                  note="new process; checks top-1 is cheeseburger")


def _import_tensorflow(ctx):
    cmd = [sys.executable, "-c", "import tensorflow, keras; print('imported')"]
    return Runner(load=_process(cmd, "imported"), note="new process: the CLI's fixed cost")


def _process(cmd: list[str], expect: str) -> Callable[[], str]:
    """Run ``cmd`` in a new process; fail unless it exits 0 and prints ``expect``."""

    def run():
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        if proc.returncode != 0 or expect not in proc.stdout:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}): {last}")
        return proc.stdout

    return run


_register("cli_predict", "load", "CLI predict of burger.jpg, end to end", _cli_predict,
          slow=True)
_register("import_tensorflow", "load", "python -c 'import tensorflow, keras'",
          _import_tensorflow, slow=True)


def _fold(ctx):
    model = ctx.ours()
    return Runner(load=model.fused, note="a new model with folded weights")


_register("fold_batchnorm", "load", "model.fused() (BN folding)", _fold)


def _export(ctx):
    try:
        from converters.tflite import export_tflite
    except ImportError as e:
        raise Unavailable(f"converters.tflite is missing ({e})") from None
    model, dst = ctx.ours(), str(ctx.workdir / "export" / "model.tflite")
    return Runner(load=lambda: export_tflite(model, dst, force=True),
                  note="our exporter (folds BN itself)")


def _convert(fused: bool):
    def setup(ctx):
        model, size = ctx.ours(), ctx.s.image_size
        if fused:
            return Runner(load=lambda: tflite_bytes(model.fused(), size),
                          note="includes model.fused()")
        return Runner(load=lambda: tflite_bytes(model, size),
                      note="the converter folds BN")

    return setup


_register("export_tflite", "export", "export_tflite(model), float32 file", _export, slow=True)
_register("convert_tflite_bn", "export", "TFLite converter on the model with BN",
          _convert(False), slow=True)
_register("convert_tflite_fused", "export", "TFLite converter on model.fused()",
          _convert(True), slow=True)


# --------------------------------------------------------------------------------------------
# Measurement


def select(patterns: str | None) -> list[str]:
    """Contender names matching comma-separated glob patterns (all when empty)."""
    if not patterns:
        return list(CONTENDERS)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    names = [n for n in CONTENDERS if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if not names:
        raise ValueError(f"no contender matches {patterns!r}; see --list")
    return names


def _why(e: BaseException) -> str:
    msg = first_line(e)
    return msg if isinstance(e, Unavailable) else f"{type(e).__name__}: {msg}"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compute_floor(settings: Settings, size: int = 2048, repeats: int = 7) -> dict:
    """The float32 speed limit of this machine for the benchmarked model.

    Peak = the best of ``repeats`` float32 ``size``-square matrix products through numpy's
    BLAS (all cores); floor = the model's 2 x MACs at that rate. No float32 implementation on
    this machine can beat it by much: 1x1 convolutions, 95% of the MACs, are matrix products.
    """
    from tf_mobilenet_v1.architecture import count_macs, layer_specs

    rng = np.random.default_rng(settings.seed)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    a @ b  # BLAS thread pool up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    peak = 2 * size**3 / best / 1e9
    macs = count_macs(layer_specs(settings.depth_multiplier), settings.image_size,
                      num_labels=1001)
    floor_ms = 2 * macs / (peak * 1e9) * 1000
    return {"peak_gflops": peak, "macs": macs, "b1_ms": floor_ms,
            "bn_ips": 1000 / floor_ms}


def run_benchmarks(settings: Settings, names: list[str], workdir: str | os.PathLike,
                   rss: bool | Collection[str] = True,
                   log: Callable[[str], None] = print) -> dict:
    """Set up, warm up and time the named contenders in interleaved rounds; return results.

    ``rss``: measure peak RSS in a child process for every contender (True), none (False) or
    the named ones.
    """
    ctx = Context(settings, workdir)
    rows: dict[str, dict] = {}
    live: dict[str, dict] = {}
    floor = compute_floor(settings)
    log(f"float32 peak {floor['peak_gflops']:.0f} GFLOP/s: floor {floor['b1_ms']:.2f} ms an image")
    for name in names:
        c = CONTENDERS[name]
        row = rows[name] = {"name": name, "group": c.group, "what": c.what, "status": "ok"}
        t0 = time.perf_counter()
        try:
            runner = c.setup(ctx)
            calls = {}
            if runner.make is not None:
                calls = {"b1": runner.make(ctx.x1), "bn": runner.make(ctx.xn)}
                for _ in range(max(settings.warmup, 1)):
                    out1 = calls["b1"]()
                    calls["bn"]()
                if runner.same_weights:
                    ref = ctx.reference()
                    row["max_abs_diff"] = float(np.max(np.abs(
                        np.asarray(out1, np.float32).reshape(ref.shape) - ref)))
            else:
                runner.load()  # warm-up call (first load / compile caches)
            row["note"] = runner.note
            live[name] = {"runner": runner, "calls": calls, "b1": [], "bn": [], "load": []}
        except Exception as e:  # noqa: BLE001 - one broken contender must not stop the run
            row["status"] = f"n/a: {_why(e)}"
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
        row["setup_s"] = time.perf_counter() - t0
        log(f"setup {name}: {row['status']} ({row['setup_s']:.1f} s)")

    order = list(live)
    for r in range(settings.rounds):
        t_round = time.perf_counter()
        shift = r % max(len(order), 1)
        for name in order[shift:] + order[:shift]:
            item, c = live[name], CONTENDERS[name]
            if r >= (settings.slow_rounds if c.slow else settings.rounds) \
                    or rows[name]["status"] != "ok":
                continue
            try:
                if item["calls"]:
                    item["calls"]["b1"]()  # untimed: caches and thread pools back to warm
                    item["b1"] += [_timed(item["calls"]["b1"]) for _ in range(settings.iters_b1)]
                    item["bn"] += [_timed(item["calls"]["bn"]) for _ in range(settings.iters_bn)]
                else:
                    item["load"].append(_timed(item["runner"].load))
            except Exception as e:  # noqa: BLE001
                rows[name]["status"] = f"n/a: failed while timing: {_why(e)}"
        log(f"round {r + 1}/{settings.rounds} done ({time.perf_counter() - t_round:.1f} s)")

    for name, item in live.items():
        row = rows[name]
        if not row["status"].startswith("ok"):
            continue
        if item["b1"]:
            row["b1_ms"] = 1000 * statistics.median(item["b1"])
            row["b1_ms_p25"], row["b1_ms_p75"] = (1000 * float(v) for v in
                                                  np.percentile(item["b1"], [25, 75]))
            row["b1_ms_min"] = 1000 * min(item["b1"])
            row["bn_ms"] = 1000 * statistics.median(item["bn"])
            row["bn_ips"] = settings.batch / statistics.median(item["bn"])
            row["bn_ips_best"] = settings.batch / min(item["bn"])
        if item["load"]:
            row["load_s"] = statistics.median(item["load"])
            row["load_s_min"] = min(item["load"])
        row["samples"] = {k: item[k] for k in ("b1", "bn", "load") if item[k]}

    end = compute_floor(settings)  # a second reading: the peak is the higher of the two
    if end["peak_gflops"] > floor["peak_gflops"]:
        floor = end

    if rss:
        for name in live:
            if rows[name]["status"] == "ok" and (rss is True or name in rss):
                rows[name]["rss_mb"] = _child_rss(name, settings, workdir, log)
    return {"settings": dataclasses.asdict(settings), "rows": list(rows.values()),
            "floor": floor, "targets": targets(rows, settings, floor), "machine": machine_info(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _child_rss(name: str, settings: Settings, workdir, log) -> float | str:
    """Peak RSS (MiB) of a fresh process that sets up and runs only ``name``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", name,
           "--workdir", str(workdir), "--settings-json", json.dumps(dataclasses.asdict(settings))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(RSS_MARK):
            value = json.loads(line[len(RSS_MARK):])
            log(f"rss {name}: {value}")
            return value
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    log(f"rss {name}: child failed: {tail}")
    return f"n/a: child exited {proc.returncode}: {tail[:200]}"


def rss_child(name: str, settings: Settings, workdir) -> float:
    """Body of the RSS child: set up one contender, run it a few times, return peak MiB."""
    ctx = Context(settings, workdir)
    runner = CONTENDERS[name].setup(ctx)
    for _ in range(2):
        if runner.make is not None:
            runner.make(ctx.x1)()
            runner.make(ctx.xn)()
        else:
            runner.load()
    # Not RUSAGE_SELF: Linux carries ru_maxrss over fork + exec, so this child would report
    # the (large) benchmark parent's peak. VmHWM belongs to this process's own address space.
    # RUSAGE_CHILDREN covers a process this one ran (the CLI), forked from this small one.
    peak_kib = max(_vm_hwm_kib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(peak_kib / 1024, 1)


def _vm_hwm_kib() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):  # not Linux: the best available figure
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --------------------------------------------------------------------------------------------
# Targets and report


def _get(rows, name, key):
    row = rows.get(name)
    if not row or row.get("status") != "ok" or not isinstance(row.get(key), (int, float)):
        return None
    return row[key]


BEST = {"b1_ms": "b1_ms_min", "bn_ips": "bn_ips_best", "load_s": "load_s_min"}


FLOOR = "float32_floor"


def targets(rows: dict[str, dict], settings: Settings, floor: dict | None = None) -> list[dict]:
    """The issue's targets as ratios from this run (None where a contender is missing).

    With ``floor`` (see ``compute_floor``) the HF targets get one more row: the ratio that a
    float32 model running at this machine's BLAS peak would reach, i.e. whether the target
    can be met at all here.
    """
    out = []
    if floor:
        rows = {**rows, FLOOR: {"status": "ok", "b1_ms": floor["b1_ms"],
                                "b1_ms_min": floor["b1_ms"], "bn_ips": floor["bn_ips"],
                                "bn_ips_best": floor["bn_ips"]}}

    def add(target, num, den, key, ok, inverse=False):
        if num not in rows or den not in rows:  # not selected in this run
            return

        def ratio(k):
            a, b = _get(rows, num, k), _get(rows, den, k)
            return None if a is None or b is None else (b / a if inverse else a / b)

        r = ratio(key)
        best = ratio(BEST[key])  # the same ratio from each side's fastest sample
        out.append({"target": target, "ours": num, "other": den, "ratio": r,
                    "ratio_best": best, "pass": None if r is None else bool(ok(r))})

    n = settings.batch
    # Same path on both sides, then our fastest exact path (a candidate default) vs their
    # default predict.
    for ours, app in (("ours_predict", "app_predict"), ("ours_tf_function", "app_tf_function"),
                      ("ours_predict_on_batch_fused", "app_predict")):
        add(f"Keras batch-{n} throughput >= 1.0x keras.applications", ours, app, "bn_ips",
            lambda r: r >= 1.0)
    for ours in ("ours_predict", "ours_tf_function", "ours_predict_on_batch_fused",
                 "ours_tflite_float32_t2", FLOOR):
        add("batch-1 speed >= 5x HF tf_padding=True (latency ratio HF/ours)", ours,
            "hf_torch_tfpad", "b1_ms", lambda r: r >= 5.0, inverse=True)
        add(f"batch-{n} throughput >= 5x HF tf_padding=True", ours, "hf_torch_tfpad",
            "bn_ips", lambda r: r >= 5.0)
    for t in (1, 2):
        add(f"TFLite float32 batch-1 latency <= 1.05x keras.applications' ({t} thr)",
            f"ours_tflite_float32_t{t}", f"app_tflite_float32_t{t}", "b1_ms",
            lambda r: r <= 1.05)
    if "load_slim_ckpt" not in rows:
        return out
    load = _get(rows, "load_slim_ckpt", "load_s")
    out.append({"target": "slim checkpoint -> Keras load < 1 s (warm process)",
                "ours": "load_slim_ckpt", "other": None, "ratio": load,
                "ratio_best": _get(rows, "load_slim_ckpt", "load_s_min"),
                "pass": None if load is None else load < 1.0})
    return out


def _fmt(v, spec=".1f"):
    return format(v, spec) if isinstance(v, (int, float)) else ("n/a" if v is None else str(v))


def format_report(result: dict) -> str:
    """Markdown tables: inference, load/export, targets."""
    s = result["settings"]
    rows = result["rows"]
    lines = [f"MobileNet V1 {s['depth_multiplier']}_{s['image_size']} float32, batch-1 latency "
             f"and batch-{s['batch']} throughput; medians over {s['rounds']} interleaved rounds",
             "",
             f"| contender | what | batch-1 ms (p25-p75) | batch-1 min ms "
             f"| batch-{s['batch']} img/s | peak RSS MiB | max abs diff vs ours | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["group"] in ("load", "export"):
            continue
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['what']} | {r['status']} | | | | | |")
            continue
        b1 = f"{_fmt(r.get('b1_ms'))} ({_fmt(r.get('b1_ms_p25'))}-{_fmt(r.get('b1_ms_p75'))})"
        diff = _fmt(r.get("max_abs_diff"), ".1e") if "max_abs_diff" in r else "-"
        lines.append(f"| {r['name']} | {r['what']} | {b1} | {_fmt(r.get('b1_ms_min'))} | "
                     f"{_fmt(r.get('bn_ips'))} | {_fmt(r.get('rss_mb'))} | {diff} | "
                     f"{r.get('note', '')} |")
    lines += ["", "| load / export | what | median s | min s | peak RSS MiB | note |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        if r["group"] not in ("load", "export"):
            continue
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['what']} | {r['status']} | | | |")
            continue
        lines.append(f"| {r['name']} | {r['what']} | {_fmt(r.get('load_s'), '.3f')} | "
                     f"{_fmt(r.get('load_s_min'), '.3f')} | {_fmt(r.get('rss_mb'))} | "
                     f"{r.get('note', '')} |")
    floor = result.get("floor")
    if floor:
        lines += ["", f"float32 compute floor: {floor['macs']:,} MACs at this machine's "
                  f"{floor['peak_gflops']:.0f} GFLOP/s float32 matrix-product peak = "
                  f"{floor['b1_ms']:.2f} ms an image ({floor['bn_ips']:.0f} img/s); "
                  f"row {FLOOR} below"]
    lines += ["", "| target | ours | other | value (medians) | met | value (best samples) |",
              "|---|---|---|---|---|---|"]
    for t in result["targets"]:
        met = {True: "yes", False: "NO", None: "n/a"}[t["pass"]]
        lines.append(f"| {t['target']} | {t['ours']} | {t['other'] or '-'} | "
                     f"{_fmt(t['ratio'], '.2f')} | {met} | {_fmt(t['ratio_best'], '.2f')} |")
    return "\n".join(lines)


def machine_info() -> dict:
    """CPU model, cores, RAM and package versions (read without importing the packages)."""
    cpu = platform.processor() or platform.machine()
    mem_gib = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
        with open("/proc/meminfo") as f:
            kib = next(int(ln.split()[1]) for ln in f if ln.startswith("MemTotal"))
            mem_gib = round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    versions = {}
    for pkg in ("tensorflow", "keras", "numpy", "torch", "transformers", "ai-edge-litert"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": mem_gib,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "versions": versions}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few rounds and iterations")
    p.add_argument("--contenders", default=None,
                   help="comma-separated glob patterns, e.g. 'ours_*,app_*' (default all)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write results as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--list", action="store_true", help="list the contenders and exit")
    p.add_argument("--no-rss", action="store_true", help="skip the per-contender RSS children")
    p.add_argument("--depth-multiplier", type=float, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--workdir", default=None, help="artifact folder (default: a temp dir)")
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--settings-json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices etc.
    if args.rss_child:
        settings = Settings(**json.loads(args.settings_json))
        print(RSS_MARK + json.dumps(rss_child(args.rss_child, settings, args.workdir)),
              flush=True)
        return 0
    if args.list:
        for c in CONTENDERS.values():
            print(f"{c.name:28s} {c.group:7s} {c.what}")
        return 0

    settings = Settings(**(QUICK if args.quick else {}))
    for field, value in (("depth_multiplier", args.depth_multiplier),
                         ("image_size", args.image_size), ("batch", args.batch_size),
                         ("rounds", args.rounds)):
        if value is not None:
            setattr(settings, field, value)
    if args.json:
        from tf_mobilenet_v1.fileio import check_writable

        check_writable(args.json, args.force)  # fail now, not after a 15-minute run
    names = select(args.contenders)
    workdir = args.workdir or tempfile.mkdtemp(prefix="mobilenet_bench_")
    os.makedirs(workdir, exist_ok=True)
    try:
        log = functools.partial(print, file=sys.stderr, flush=True)
        result = run_benchmarks(settings, names, workdir, rss=not args.no_rss, log=log)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    m = result["machine"]
    print(f"{result['date']}  {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
          f"load average at end {m['load_avg']}")
    print(", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    print()
    print(format_report(result))
    if args.json:
        from tf_mobilenet_v1.fileio import atomic_output

        with atomic_output(args.json, force=args.force, suffix=".json") as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
