"""The benchmark's contenders: what is measured, each set up lazily from a shared context.

Every contender imports what it needs inside its setup, so a missing optional package or
fixture only turns its row into ``n/a: reason``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
FROZEN_TGZ = FIXTURES / "official" / "mobilenet_v1_0.25_128_frozen.tgz"
BURGER = FIXTURES / "images" / "burger.jpg"


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

    def ours_folded(self):
        return self.cached("ours_folded", lambda: self.ours().folded())

    def ours_keras_bn(self):
        """Our model as it ran before inference folding: Keras's BatchNormalization layers."""

        def build():
            from tf_mobilenet_v1.layers import ConvBlock

            model = self.ours_copy()
            for layer in model.layers:
                if isinstance(layer, ConvBlock):
                    layer.fold_at_inference = False
            return model

        return self.cached("ours_keras_bn", build)

    def ours_copy(self, folded: bool = False):
        """A separate model object with the same weights (for per-model predict settings)."""
        src = self.ours_folded() if folded else self.ours()
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
            from tf_mobilenet_v1.converters.slim import save_slim_checkpoint

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
            from tf_mobilenet_v1.converters.hf import save_hf

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
        import inspect

        from tf_mobilenet_v1.converters.tflite import export_tflite

        # Logits, as the Keras model outputs (the exporter's default became probabilities).
        params = inspect.signature(export_tflite).parameters
        kwargs = {"outputs": "logits"} if "outputs" in params else {}
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


def _predict_on_batch_folded(ctx):
    model = ctx.ours_folded()
    return Runner(make=lambda x: (lambda: model.predict_on_batch(x)), same_weights=True)


def _predict_xla(folded):
    def setup(ctx):
        model = ctx.ours_copy(folded=folded)
        model.jit_compile = True  # read when predict builds its function
        return _keras_predict(lambda _: model, True)(ctx)

    return setup


_register("ours_predict", "keras", "ours, model.predict (default)",
          _keras_predict(lambda c: c.ours(), True))
_register("ours_predict_keras_bn", "keras", "ours, Keras BatchNormalization layers, predict",
          _keras_predict(lambda c: c.ours_keras_bn(), True))
_register("ours_predict_on_batch", "keras", "ours, model.predict_on_batch", _predict_on_batch)
_register("ours_predict_on_batch_folded", "keras", "ours, folded BN, model.predict_on_batch",
          _predict_on_batch_folded)
_register("ours_predict_folded", "keras", "ours, folded BN, model.predict",
          _keras_predict(lambda c: c.ours_folded(), True))
_register("ours_predict_xla", "keras", "ours, model.predict, jit_compile=True",
          _predict_xla(False), slow=True)
_register("ours_tf_function", "keras", "ours, tf.function(model)",
          _keras_function(lambda c: c.ours(), False, True))
_register("ours_tf_function_folded", "keras", "ours, folded BN, tf.function",
          _keras_function(lambda c: c.ours_folded(), False, True))
_register("ours_tf_function_xla", "keras", "ours, tf.function(jit_compile=True)",
          _keras_function(lambda c: c.ours(), True, True), slow=True)
_register("ours_tf_function_xla_folded", "keras", "ours, folded BN, tf.function(jit_compile)",
          _keras_function(lambda c: c.ours_folded(), True, True), slow=True)
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


def _cli_predict_fast(cold: bool):
    """``mobilenet-v1 predict burger.jpg`` with the bundled weights on the TFLite fast path:
    warm (the cache entry built by an untimed first call) or cold (an empty cache each call:
    TensorFlow import, weights load, conversion, caching)."""

    def setup(ctx):
        _require("ai_edge_litert.interpreter", "ai-edge-litert")
        if not BURGER.exists():
            raise Unavailable(f"fixture {BURGER} is missing")
        exe = shutil.which("mobilenet-v1")
        cmd = [exe] if exe else [sys.executable, "-m", "tf_mobilenet_v1.cli"]
        cmd += ["predict", str(BURGER), "--top-k", "1"]
        cache = ctx.workdir / ("tflite_cache_cold" if cold else "tflite_cache")
        run = _process(cmd, "cheeseburger", {"MOBILENET_V1_CACHE": str(cache)})
        if not cold:
            return Runner(load=run, note="new process, cached TFLite model; checks top-1")

        def fresh():
            shutil.rmtree(cache, ignore_errors=True)
            return run()

        return Runner(load=fresh, note="new process, empty cache: converts and caches")

    return setup


# Every local weight form predict takes (issue 31: each on the fast path, cached by the content
# hash of what the loader read). The bundled 1.0_224 weights, written by our own converter; the
# frozen graph is the real 0.25_224 release's (nothing here writes frozen graphs).
WEIGHT_FORMS = {"slim_ckpt": "bundled.ckpt", "release_tgz": "bundled_ckpt.tgz",
                "frozen_graph": None, "keras": "bundled.keras",
                "weights_h5": "bundled.weights.h5", "hf_dir": "bundled_hf",
                "safetensors": "bundled.safetensors"}
FROZEN_PB = FIXTURES / "official" / "mobilenet_v1_0.25_224" / "frozen_graph.pb"


def _weights_form(ctx, form: str) -> Path:
    """The weights in ``form``, written once into the work directory (untimed)."""
    if form == "frozen_graph":
        if not FROZEN_PB.exists():
            raise Unavailable(f"fixture {FROZEN_PB} is missing")
        return FROZEN_PB
    name = WEIGHT_FORMS[form]
    if form == "release_tgz":
        def tarball(path):
            prefix = _weights_form(ctx, "slim_ckpt")
            with tarfile.open(path, "w:gz") as tar:
                for f in sorted(prefix.parent.glob(prefix.name + ".*")):
                    tar.add(f, arcname=f.name)

        return ctx.artifact(name, tarball)

    def write(path):
        from tf_mobilenet_v1.converters.convert import convert

        convert("mobilenet_v1_1.0_224", str(path), force=True)

    return ctx.artifact(name, write, probe=".index" if form == "slim_ckpt" else "")


def _cli_predict_form(form: str):
    """Warm ``mobilenet-v1 predict burger.jpg --weights <form>``: the cache entry is built by
    the harness's untimed first call, then each timed call should read it."""

    def setup(ctx):
        _require("ai_edge_litert.interpreter", "ai-edge-litert")
        if not BURGER.exists():
            raise Unavailable(f"fixture {BURGER} is missing")
        weights = _weights_form(ctx, form)
        exe = shutil.which("mobilenet-v1")
        cmd = [exe] if exe else [sys.executable, "-m", "tf_mobilenet_v1.cli"]
        cmd += ["predict", str(BURGER), "--top-k", "1", "--weights", str(weights)]
        run = _process(cmd, "cheeseburger",
                       {"MOBILENET_V1_CACHE": str(ctx.workdir / "tflite_cache")})
        return Runner(load=run, note="new process, warm cache; checks top-1")

    return setup


def _import(modules: str):
    def setup(ctx):
        cmd = [sys.executable, "-c", f"import {modules}; print('imported')"]
        return Runner(load=_process(cmd, "imported"), note="new process: the CLI's fixed cost")

    return setup


def _process(cmd: list[str], expect: str, env: dict | None = None) -> Callable[[], str]:
    """Run ``cmd`` in a new process; fail unless it exits 0 and prints ``expect``."""
    extra = env or {}

    def run():
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        if proc.returncode != 0 or expect not in proc.stdout:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}): {last}")
        return proc.stdout

    return run


_register("cli_predict", "load", "CLI predict of burger.jpg, 0.25_128 .tgz (Keras path)",
          _cli_predict,
          slow=True)
_register("cli_predict_fast", "load", "CLI predict of burger.jpg, bundled weights, TFLite cache",
          _cli_predict_fast(False), slow=True)
_register("cli_predict_fast_cold", "load", "the same with an empty cache (first run)",
          _cli_predict_fast(True), slow=True)
_register("import_tensorflow", "load", "python -c 'import tensorflow, keras'",
          _import("tensorflow, keras"), slow=True)
_register("import_tensorflow_alone", "load", "python -c 'import tensorflow'",
          _import("tensorflow"), slow=True)
for _form in WEIGHT_FORMS:
    _register(f"cli_predict_{_form}", "load",
              f"CLI predict of burger.jpg, {_form} weights, warm TFLite cache",
              _cli_predict_form(_form), slow=True)


def _fold(ctx):
    model = ctx.ours()
    return Runner(load=model.folded, note="a new model with folded weights")


_register("fold_batchnorm", "load", "model.folded() (BN folding)", _fold)


def _export(ctx):
    try:
        from tf_mobilenet_v1.converters.tflite import export_tflite
    except ImportError as e:
        raise Unavailable(f"converters.tflite is missing ({e})") from None
    model, dst = ctx.ours(), str(ctx.workdir / "export" / "model.tflite")
    return Runner(load=lambda: export_tflite(model, dst, force=True),
                  note="our exporter (folds BN itself)")


def _convert(folded: bool):
    def setup(ctx):
        model, size = ctx.ours(), ctx.s.image_size
        if folded:
            return Runner(load=lambda: tflite_bytes(model.folded(), size),
                          note="includes model.folded()")
        return Runner(load=lambda: tflite_bytes(model, size),
                      note="the converter folds BN")

    return setup


_register("export_tflite", "export", "export_tflite(model), float32 file", _export, slow=True)
_register("convert_tflite_bn", "export", "TFLite converter on the model with BN",
          _convert(False), slow=True)
_register("convert_tflite_folded", "export", "TFLite converter on model.folded()",
          _convert(True), slow=True)
