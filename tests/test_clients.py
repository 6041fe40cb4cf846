"""Real Android-side clients load our exports: the TFLite Task Library (tflite-support 0.4.4)
and MediaPipe Tasks, each in its own venv built by ``bash .ci/client_venvs.sh``.

They run tests/clients/run_client.py in a subprocess (no network) on the official 1.0_224
weights exported to a tmp dir, and must give the Keras model's top-1 with probability scores
and label names; MetadataDisplayer must read our metadata back.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path

pytestmark = [pytest.mark.clients, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "clients" / "run_client.py"
PHOTOS = ("bird.bmp", "burger.jpg", "cat.bmp", "grace_hopper.bmp")
VENVS = {"tasklib": ".venv-tasklib", "mediapipe": ".venv-mediapipe"}


def _client_python(client: str) -> Path:
    python = ROOT / VENVS[client] / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{VENVS[client]}/ is missing: run `bash .ci/client_venvs.sh` (it builds "
                    "the Task Library and MediaPipe venvs; the README test command does)",
                    pytrace=False)
    return python


def run_client(client: str, model, tmp_path) -> dict:
    out = tmp_path / f"{client}_{Path(model).stem}.json"
    photos = [str(fixture_path("images", p)) for p in PHOTOS]
    proc = subprocess.run([str(_client_python(client)), str(SCRIPT), client, str(model),
                           str(out), *photos], capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, f"{client} failed:\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def official():
    """The bundled official 1.0_224 weights, their exports and Keras's top-1 per photo
    (Pillow bilinear straight to 224 x 224, as the clients resize)."""
    from tf_mobilenet_v1 import MobileNetV1ForImageClassification
    from tf_mobilenet_v1.images import read_image
    from tf_mobilenet_v1.preprocessing import MobileNetV1Preprocessing

    model = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    prep = MobileNetV1Preprocessing(image_size=224, mode="resize")
    x = np.concatenate([np.asarray(prep(read_image(fixture_path("images", p))[None]))
                        for p in PHOTOS])
    logits = model.predict(x, verbose=0)
    return model, logits.argmax(-1)


@pytest.fixture(scope="module")
def exports(official, tmp_path_factory):
    from tf_mobilenet_v1.converters.tflite import export_tflite

    root = tmp_path_factory.mktemp("clients")
    model = official[0]
    return {
        "float32": export_tflite(model, root / "model_float32.tflite"),
        "int8": export_tflite(model, root / "model_int8_io_uint8.tflite", quantize="int8",
                              calibration_images=fixture_path("images")),
    }


def _check(report, official, exact_scores=True):
    model, top1 = official
    results = report["results"]
    assert [Path(r["image"]).name for r in results] == list(PHOTOS)
    for r, expected in zip(results, top1, strict=True):
        assert r["count"] == 1001
        assert r["top_index"] == expected, (r, model.config.id2label[int(expected)])
        assert r["top_label"] == model.config.id2label[int(expected)]  # names, not indices
        assert 0 < r["top_score"] <= 1
        # Probabilities: the 1001 scores sum to 1 (quantized ones to within their steps).
        assert abs(r["score_sum"] - 1) < (1e-3 if exact_scores else 0.1), r


@pytest.mark.parametrize("kind", ["float32", "int8"])
@pytest.mark.parametrize("client", ["tasklib", "mediapipe"])
def test_image_classifier(exports, official, tmp_path, client, kind):
    """The Task Library's and MediaPipe Tasks' ImageClassifier on our exports."""
    report = run_client(client, exports[kind], tmp_path)
    _check(report, official, exact_scores=kind == "float32")
    print(json.dumps(report["results"]))


def test_task_library_metadata_displayer_reads_our_metadata(exports, tmp_path):
    from tf_mobilenet_v1.converters.tflite_metadata import read_metadata

    shown = run_client("tasklib", exports["float32"], tmp_path)["metadata"]
    ours = read_metadata(exports["float32"])
    meta = shown["json"]
    assert meta["name"] == ours["name"] and meta["license"] == ours["license"]
    assert shown["packed_files"] == ["labels.txt"]
    assert shown["labels_head"].startswith("background\n")
    # tflite-support's own populator would stamp the same minimum parser version.
    assert shown["computed_min_parser_version"] == ours["min_parser_version"]
    (inp,) = meta["subgraph_metadata"][0]["input_tensor_metadata"]
    assert inp["content"]["content_properties"]["color_space"] == "RGB"
    norm = inp["process_units"][0]
    assert norm["options_type"] == "NormalizationOptions"
    assert norm["options"] == {"mean": [127.5], "std": [127.5]}
    (out,) = meta["subgraph_metadata"][0]["output_tensor_metadata"]
    assert out["associated_files"][0]["type"] == "TENSOR_AXIS_LABELS"


def test_missing_venv_fails_with_the_fix(monkeypatch, tmp_path):
    """No skip: a missing client venv is a failure that says what to run."""
    monkeypatch.setitem(VENVS, "tasklib", ".venv-does-not-exist")
    with pytest.raises(pytest.fail.Exception, match="run `bash .ci/client_venvs.sh`"):
        _client_python("tasklib")
    assert sys.executable  # the main venv itself is untouched
