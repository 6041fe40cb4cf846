"""Runs inside .venv-mediapipe (never imports this package), under the dispatch-count shim:

    LD_PRELOAD=SHIM.so python run_gpu.py SHIM.so MODEL.tflite SIZE classify|embed OUT.json IMAGE...

Runs each image through MediaPipe Tasks' ImageClassifier (``classify``: all 1001 scores) or
ImageEmbedder (``embed``: the raw feature vector), once with the CPU delegate (TFLite's CPU
interpreter) and once with the GPU delegate (TFLite's OpenGL ES backend), and writes
``{"cpu": run, "gpu": run}``, each run ``{"outputs": [[floats] per image], "dispatches":
[glDispatchCompute calls per image], "log": native log text, "error": str or null}``.
Images are resized to SIZE x SIZE with Pillow first, so both delegates see the same pixels
(MediaPipe's GPU and CPU resizers differ) and the gap is the delegate's alone.
"""

import ctypes
import json
import os
import sys
import tempfile


def _task(task, model, delegate):
    from mediapipe.tasks.python import BaseOptions, vision

    base = BaseOptions(model_asset_path=model,
                       delegate=getattr(BaseOptions.Delegate, delegate.upper()))
    if task == "classify":
        return vision.ImageClassifier.create_from_options(
            vision.ImageClassifierOptions(base_options=base, max_results=-1))
    return vision.ImageEmbedder.create_from_options(
        vision.ImageEmbedderOptions(base_options=base, l2_normalize=False, quantize=False))


def _output(task, runner, image):
    if task == "embed":
        return [float(v) for v in runner.embed(image).embeddings[0].embedding]
    scores = [0.0] * 1001
    for c in runner.classify(image).classifications[0].categories:
        scores[c.index] = c.score
    return scores


def run(task, model, delegate, pixels, shim):
    import mediapipe as mp

    report = {"outputs": [], "dispatches": [], "error": None}
    runner = None
    try:
        runner = _task(task, model, delegate)
        for array in pixels:
            shim.dispatch_count_reset()
            out = _output(task, runner, mp.Image(image_format=mp.ImageFormat.SRGB, data=array))
            report["dispatches"].append(shim.dispatch_count())
            report["outputs"].append(out)
    except Exception as e:  # a delegate that refuses the model: the report says how
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        if runner is not None:
            try:
                runner.close()
            except Exception:  # closing a failed graph raises its error again
                pass
    return report


def logged(fn, *args):
    """``fn(*args)`` with file descriptor 2 (where the native code logs) captured."""
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            run = fn(*args)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        run["log"] = log.read().decode("utf-8", "replace")
    return run


def main():
    import numpy as np
    from PIL import Image

    shim_path, model, size, task, out, *images = sys.argv[1:]
    shim = ctypes.CDLL(shim_path)  # the preloaded copy: the same counter
    shim.dispatch_count.restype = ctypes.c_long
    size = int(size)
    pixels = [np.ascontiguousarray(np.asarray(
        Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)))
        for p in images]
    report = {d: logged(run, task, model, d, pixels, shim) for d in ("cpu", "gpu")}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
