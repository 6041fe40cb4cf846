"""The real TFLite GPU delegate runs our exports, and the static GPU checker agrees with it.

MediaPipe Tasks (``.venv-mediapipe``, built by ``bash .ci/client_venvs.sh``) runs the
delegate's OpenGL ES backend, compiled into ``libmediapipe.so``, on Mesa's software renderer
(llvmpipe) through surfaceless EGL. tests/gpu/run_gpu.py classifies the fixture photos with
the CPU and the GPU delegate in a subprocess, under an ``LD_PRELOAD`` shim
(tests/gpu/dispatch_count.c, compiled here) that counts ``glDispatchCompute`` calls: the proof
that the delegate ran rather than a silent CPU fallback. Exports: the official 0.25_128
weights (fixtures) in every kind, and 1.0_224 (bundled) once, as float16.
"""

import contextlib
import ctypes
import io
import json
import os
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path, tiny_model

pytestmark = [pytest.mark.gpu_delegate, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "gpu" / "run_gpu.py"
SHIM_SOURCE = ROOT / "tests" / "gpu" / "dispatch_count.c"
VENV = ".venv-mediapipe"
PHOTOS = ("bird.bmp", "burger.jpg", "cat.bmp", "grace_hopper.bmp")
FIX = "run `bash .ci/client_venvs.sh` (it builds .venv-mediapipe and installs the Debian " \
      "packages libegl1 libgles2 libegl-mesa0 libgl1-mesa-dri)"
GL_ENV = {
    "EGL_PLATFORM": "surfaceless",  # no display server: EGL on Mesa's surfaceless platform
    "LIBGL_ALWAYS_SOFTWARE": "1",   # llvmpipe, whatever hardware the machine has
    # MediaPipe refuses a renderer named llvmpipe ("GPU emulation detected"); this Mesa driconf
    # option changes only the name it reports, the rendering stays llvmpipe's.
    "force_gl_renderer": "generic-gpu",
}
# The delegate's log line when it leaves part of the graph to the CPU.
CPU_PARTITION = ("will run on the CPU", "not supported by GPU delegate")

# kind: (source, export() keyword arguments, task). 0.25_128 is the official checkpoint in
# the fixtures; int8 calibrates on the four fixture photos (a GPU-vs-CPU check, not accuracy).
SMALL = "0.25_128"
KINDS = {
    "float32": (SMALL, {}, "classify"),
    "float16": (SMALL, {"quantize": "float16"}, "classify"),
    "dynamic": (SMALL, {"quantize": "dynamic"}, "classify"),
    "int8_float_io": (SMALL, {"quantize": "int8", "io_type": "float32"}, "classify"),
    "int8_uint8_io": (SMALL, {"quantize": "int8"}, "classify"),
    "dynamic_batch": (SMALL, {"dynamic_batch": True}, "classify"),
    "logits": (SMALL, {"outputs": "logits"}, "classify"),
    "feature_vector": (SMALL, {"task": "feature-vector"}, "embed"),
    "1.0_224_float16": ("1.0_224", {"quantize": "float16"}, "classify"),
}
GPU_KINDS = [k for k in KINDS if k != "int8_uint8_io"]
# Largest GPU-vs-CPU probability gap allowed: the delegate computes in float16 by default.
MAX_GAP = {"int8_float_io": 0.15}
MAX_GAP_FLOAT = 0.05


def _mediapipe_python() -> Path:
    python = ROOT / VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{VENV}/ is missing: {FIX}", pytrace=False)
    return python


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    """The dispatch-counting shim, compiled for this run."""
    for lib in ("libEGL.so.1", "libGLESv2.so.2", "libEGL_mesa.so.0"):
        try:
            ctypes.CDLL(lib)
        except OSError:
            pytest.fail(f"{lib} is missing: {FIX}", pytrace=False)
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build tests/gpu/dispatch_count.c", pytrace=False)
    out = tmp_path_factory.mktemp("gpu_shim") / "libdispatch_count.so"
    proc = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out),
                           str(SHIM_SOURCE), "-ldl"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def _export(src, out: Path, **kwargs) -> tuple[str, str]:
    """``export()`` as the command line runs it; returns the path and the printed summary."""
    from tf_mobilenet_v1.converters.export import export

    text = io.StringIO()
    with contextlib.redirect_stdout(text), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int8 calibration on 4 photos warns that it is few
        path = export(src, out, **kwargs)
    return path, text.getvalue()


def _google_reshape(out: Path) -> str:
    """Google's hosted 0.25_224 model with its final SQUEEZE turned into the RESHAPE that our
    exports end with: the same graph and numbers otherwise, metadata and labels kept."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    from tf_mobilenet_v1.converters import tflite_metadata as tfm

    original = fixture_path("tflite", "mobilenet_v1_0.25_224_1_metadata_1.tflite").read_bytes()
    m = schema.ModelT.InitFromPackedBuf(original, 0)
    sg = m.subgraphs[0]
    (op,) = [op for op in sg.operators if m.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode
             == schema.BuiltinOperator.SQUEEZE]
    code = m.operatorCodes[op.opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.RESHAPE
    op.builtinOptionsType = schema.BuiltinOptions.ReshapeOptions
    op.builtinOptions = schema.ReshapeOptionsT()
    op.builtinOptions.newShape = [int(d) for d in sg.tensors[op.outputs[0]].shape]
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    with zipfile.ZipFile(io.BytesIO(original)) as z:
        files = {name: z.read(name) for name in z.namelist()}
    out.write_bytes(tfm.populate(bytes(b.Output()), tfm.metadata_buffer(original), files))
    return str(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """kind -> (path, export summary, input size, task, photos run), each made on first use."""
    from tf_mobilenet_v1.loaders.dispatch import load_any

    root = tmp_path_factory.mktemp("gpu_exports")
    official = {}

    class Models(dict):
        def __missing__(self, kind):
            if kind in KINDS:
                source, kwargs, task = KINDS[kind]
                if source == SMALL and SMALL not in official:
                    official[SMALL] = load_any(str(fixture_path(
                        "official", "mobilenet_v1_0.25_128")))
                src = official.get(source, "mobilenet_v1_1.0_224")  # bundled weights
                if kwargs.get("quantize") == "int8":
                    kwargs = {**kwargs, "calibration_dir": str(fixture_path("images"))}
                path, summary = _export(src, root / f"{kind}.tflite", **kwargs)
                size = 224 if source == "1.0_224" else 128
                self[kind] = (path, summary, size, task, PHOTOS)
            elif kind == "google_squeeze":
                path = fixture_path("tflite", "mobilenet_v1_0.25_224_1_metadata_1.tflite")
                self[kind] = (str(path), "", 224, "classify", PHOTOS[:1])
            elif kind == "google_reshape":
                path = _google_reshape(root / "google_reshape.tflite")
                self[kind] = (path, "", 224, "classify", PHOTOS[:1])
            elif kind == "tf_padding_false":  # explicit PAD ops (random weights, 64 px)
                path, summary = _export(tiny_model(image_size=64, tf_padding=False, seed=1),
                                        root / "pad.tflite")
                self[kind] = (path, summary, 64, "classify", PHOTOS[:1])
            return self[kind]

    return Models()


@pytest.fixture(scope="module")
def reports(models, shim, tmp_path_factory):
    """kind -> what run_gpu.py reports for its model: ``{"cpu": run, "gpu": run}``."""
    root = tmp_path_factory.mktemp("gpu_runs")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(GL_ENV, LD_PRELOAD=str(shim),
               MESA_SHADER_CACHE_DIR=str(root / "mesa_shader_cache"))  # not the user's ~/.cache

    class Reports(dict):
        def __missing__(self, kind):
            path, _, size, task, photos = models[kind]
            out = root / f"{kind}.json"
            proc = subprocess.run(
                [str(_mediapipe_python()), str(SCRIPT), str(shim), path, str(size), task,
                 str(out), *(str(fixture_path("images", p)) for p in photos)],
                capture_output=True, text=True, timeout=600, env=env)
            assert proc.returncode == 0, f"run_gpu.py failed on {kind}:\n{proc.stderr[-3000:]}"
            self[kind] = json.loads(out.read_text())
            return self[kind]

    return Reports()


def _partition_lines(run) -> list[str]:
    return [line for line in run["log"].splitlines() if any(s in line for s in CPU_PARTITION)]


def _delegate_ran_whole(run) -> bool:
    """The delegate took every op: it ran, dispatched GPU work, and left nothing to the CPU."""
    return run["error"] is None and min(run["dispatches"], default=0) > 0 \
        and not _partition_lines(run)


def _probabilities(kind, outputs) -> np.ndarray:
    x = np.asarray(outputs, np.float64)
    if kind == "logits":
        x = np.exp(x - x.max(-1, keepdims=True))
        x /= x.sum(-1, keepdims=True)
    return x


@pytest.mark.parametrize("kind", GPU_KINDS)
def test_gpu_delegate_runs_every_gpu_export_whole(kind, models, reports):
    """Each export kind that the summary calls GPU-ready runs whole on the real delegate, with
    the CPU interpreter's top-1 on the four photos."""
    from tf_mobilenet_v1.converters.tflite_inspect import tflite_op_names

    path, summary, _, task, _ = models[kind]
    cpu, gpu = reports[kind]["cpu"], reports[kind]["gpu"]
    assert cpu["error"] is None and gpu["error"] is None, (cpu["error"], gpu["log"][-3000:])
    assert len(cpu["outputs"]) == len(gpu["outputs"]) == len(PHOTOS)
    assert cpu["dispatches"] == [0] * len(PHOTOS)  # the shim counts GPU work only
    # MediaPipe itself dispatches 3 per image (image to tensor, tensor in and out); each
    # convolution the delegate runs is at least one more.
    convs = sum(n in ("CONV_2D", "DEPTHWISE_CONV_2D") for n in tflite_op_names(path))
    assert min(gpu["dispatches"]) >= convs, gpu["dispatches"]
    assert _partition_lines(gpu) == []
    c, g = np.asarray(cpu["outputs"]), np.asarray(gpu["outputs"])
    if task == "embed":
        cosine = (c * g).sum(-1) / np.linalg.norm(c, axis=-1) / np.linalg.norm(g, axis=-1)
        print(f"\n{kind}: dispatches {gpu['dispatches']}, no CPU partition, feature cosine "
              f"GPU vs CPU min {cosine.min():.6f}, max |diff| {np.abs(c - g).max():.3g} "
              f"(features up to {np.abs(c).max():.3g})")
        assert cosine.min() > 0.999
    else:
        pc, pg = _probabilities(kind, c), _probabilities(kind, g)
        gap = np.abs(pc - pg).max()
        print(f"\n{kind}: dispatches {gpu['dispatches']}, no CPU partition, top-1 CPU "
              f"{pc.argmax(-1).tolist()} GPU {pg.argmax(-1).tolist()}, max probability gap "
              f"GPU vs CPU {gap:.3g}")
        assert pg.argmax(-1).tolist() == pc.argmax(-1).tolist()
        assert gap < MAX_GAP.get(kind, MAX_GAP_FLOAT)
    assert "GPU delegate: compatible" in summary
    assert "runs whole on it in MediaPipe's GPU mode" in summary


def test_int8_with_uint8_io_fails_on_the_gpu_and_the_summary_says_so(models, reports):
    """The GPU path feeds float32 only, so the default int8 export (uint8 pixels in, uint8
    scores out) runs on the CPU and fails on the GPU: the summary points GPUs elsewhere."""
    _, summary, _, _, _ = models["int8_uint8_io"]
    cpu, gpu = reports["int8_uint8_io"]["cpu"], reports["int8_uint8_io"]["gpu"]
    assert cpu["error"] is None
    float_io = reports["int8_float_io"]["cpu"]  # same weights and calibration, float I/O
    assert np.argmax(cpu["outputs"], -1).tolist() == np.argmax(float_io["outputs"], -1).tolist()
    assert gpu["error"] is not None and "ToTensorConverter: input data size" in gpu["error"]
    print(f"\nint8_uint8_io: GPU fails: {gpu['error'].splitlines()[-1][-160:]}")
    assert "GPU delegate: NOT for the TFLite GPU delegate: uint8 input" in summary
    assert "CPU, NNAPI or an Edge TPU" in summary
    assert "--quantize float16, or --quantize int8 --io-type float32" in summary
    assert "runs whole on it" not in summary


# Models the delegate splits or refuses, and ones it takes whole that a checker might doubt.
CHECKER_CASES = {"google_squeeze": False, "google_reshape": True, "int8_uint8_io": False,
                 "tf_padding_false": True}


@pytest.mark.parametrize("kind", list(CHECKER_CASES))
def test_static_gpu_checker_agrees_with_the_real_delegate(kind, models, reports):
    """``gpu_compatibility`` says what the delegate does: Google's hosted model ends in a
    SQUEEZE that the delegate leaves to the CPU; the same graph with RESHAPE runs whole."""
    from tf_mobilenet_v1.converters.tflite_inspect import gpu_compatibility

    path = models[kind][0]
    gpu = reports[kind]["gpu"]
    verdict = gpu_compatibility(path)
    print(f"\n{kind}: checker {verdict}; delegate: dispatches {gpu['dispatches']}, "
          f"partition {_partition_lines(gpu)[-1:]}, error {(gpu['error'] or '')[-120:]!r}")
    assert _delegate_ran_whole(gpu) == verdict.compatible == CHECKER_CASES[kind]
    if kind == "google_squeeze":
        assert any("29 operations will run on the GPU, and the remaining 2" in line
                   for line in _partition_lines(gpu))
        assert [p for p in verdict.problems if "SQUEEZE" in p] == list(verdict.problems)


def test_missing_venv_fails_with_the_fix(monkeypatch):
    """No skip: a missing MediaPipe venv is a failure that says what to run."""
    monkeypatch.setitem(globals(), "VENV", ".venv-does-not-exist")
    with pytest.raises(pytest.fail.Exception, match="run `bash .ci/client_venvs.sh`"):
        _mediapipe_python()
