"""Smoke test of benchmarks/run.py on a tiny model: every row measured, no timing assertions."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RUN_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"

TINY = dict(depth_multiplier=0.25, image_size=64, batch=4, rounds=2, iters_b1=2, iters_bn=1,
            warmup=1, slow_rounds=1, calibration_images=2)
NAMES = ["ours_predict", "ours_predict_keras_bn", "ours_tf_function_folded", "app_predict",
         "hf_torch_tfpad", "ours_tflite_float32_t1", "ours_tflite_int8_t1", "app_tflite_float32_t1",
         "load_slim_ckpt", "export_tflite", "cli_predict_fast"]
RSS = ["ours_predict", "ours_tflite_float32_t1"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_measures_every_row(bench, tmp_path):
    settings = bench.Settings(**TINY)
    result = bench.run_benchmarks(settings, NAMES, tmp_path, rss=RSS, log=lambda _: None)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == NAMES
    for name, row in rows.items():
        if name == "hf_torch_tfpad" and importlib.util.find_spec("transformers") is None:
            # torch is checked first; the quick start's venv has neither
            assert row["status"].startswith(("n/a: transformers is not installed",
                                             "n/a: torch is not installed")), row["status"]
            continue
        assert row["status"] == "ok", (name, row["status"])
        rounds = settings.slow_rounds if bench.CONTENDERS[name].slow else settings.rounds
        if row["group"] in ("load", "export"):
            assert row["load_s"] > 0 and len(row["samples"]["load"]) == rounds
        else:
            assert 0 < row["b1_ms_min"] <= row["b1_ms"]
            assert row["bn_ips"] > 0 and len(row["samples"]["b1"]) == rounds * 2
    # Same-weights contenders really ran our model: float32 paths agree with it.
    assert rows["ours_tf_function_folded"]["max_abs_diff"] < 1e-4
    assert rows["ours_predict_keras_bn"]["max_abs_diff"] < 1e-4
    assert rows["ours_tflite_float32_t1"]["max_abs_diff"] < 1e-4
    # Peak RSS is per child: a TFLite-only child never imports TensorFlow.
    assert "rss_mb" not in rows["app_predict"]
    assert 0 < rows["ours_tflite_float32_t1"]["rss_mb"] < rows["ours_predict"]["rss_mb"]

    report = bench.format_report(result)
    for name in NAMES:
        assert f"| {name} |" in report
    targets = {t["target"]: t for t in result["targets"]}
    tflite = [t for t in result["targets"] if t["ours"] == "ours_tflite_float32_t1"]
    assert tflite and tflite[0]["ratio"] > 0
    assert any(t["ours"] == "load_slim_ckpt" and t["ratio"] > 0 for t in targets.values())
    # The float32 floor: measured matrix-product peak, the model's MACs, and a row per HF target.
    floor = result["floor"]
    assert floor["peak_gflops"] > 1 and floor["macs"] == 3_584_768  # 0.25_64 + the classifier
    assert floor["b1_ms"] == pytest.approx(2 * floor["macs"] / floor["peak_gflops"] / 1e6)
    # Batch 32 only: the batch-1 5x HF target was dropped (the floor itself is ~3x HF there).
    assert [t["other"] for t in result["targets"] if t["ours"] == bench.FLOOR] == [
        "hf_torch_tfpad"]
    assert not any("batch-1 speed" in t["target"] for t in result["targets"])
    cli = [t for t in result["targets"] if t["ours"] == "cli_predict_fast"]
    assert len(cli) == 1 and cli[0]["ratio"] == rows["cli_predict_fast"]["load_s"] > 0
    assert "float32 compute floor" in report
    json.dumps(result)  # what --json writes


def test_cli_lists_contenders_and_refuses_to_overwrite(bench, tmp_path, capsys):
    assert bench.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("ours_predict", "app_predict", "hf_torch_nopad", "ours_tflite_int8_t2",
                 "load_release_tgz", "cli_predict", "import_tensorflow",
                 "convert_tflite_folded"):
        assert name in listed
    assert bench.select("ours_tflite_*_t2,cli_predict") == [
        "ours_tflite_float32_t2", "ours_tflite_float16_t2", "ours_tflite_int8_t2", "cli_predict"]
    with pytest.raises(ValueError, match="no contender matches"):
        bench.select("nothing_*")
    out = tmp_path / "results.json"
    out.write_text("{}")
    with pytest.raises(FileExistsError):  # checked before a long run starts
        bench.main(["--json", str(out), "--contenders", "ours_predict"])
    assert out.read_text() == "{}"


# ----------------------------------------------------------------- benchmarks/folder.py
FOLDER_PY = RUN_PY.with_name("folder.py")


@pytest.fixture(scope="module")
def folder_bench():
    spec = importlib.util.spec_from_file_location("benchmarks_folder", FOLDER_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_folder_targets_report_and_agreement(folder_bench):
    rows = {"ours_fast": {"status": "ok", "ips": 120.0, "wall_s": 4.2, "rss_mb": 150.0,
                          "rss_mb_fifth": 149.0},
            "hf_pipeline": {"status": "ok", "ips": 20.0, "wall_s": 25.0, "rss_mb": 430.0},
            "onnxruntime": {"status": "n/a: tf2onnx not installed: pip install x"}}
    floor = {"bn_ips": 160.0, "peak_gflops": 180.0}
    targets = {t["target"]: t for t in folder_bench.targets(rows)}
    assert targets["ours_fast vs hf_pipeline (>= 5x)"]["ratio"] == pytest.approx(6.0)
    assert targets["ours_fast vs hf_pipeline (>= 5x)"]["pass"] is True
    assert targets["ours_fast vs onnxruntime (>= 1x)"]["ratio"] is None
    assert targets["ours_fast vs onnxruntime (>= 1x)"]["pass"] is None  # not run: no verdict
    assert not any("floor" in name for name in targets)  # issue 18's target, retired
    rows["ours_fast"]["ips"] = 90.0
    assert not folder_bench.targets(rows)[0]["pass"]  # 5x HF: missed
    result = {"images": 500, "repeats": 1, "rows": rows, "floor": floor,
              "targets": folder_bench.targets(rows), "agreement_vs_ours_keras": {}}
    report = folder_bench.format_report(result)
    assert "| onnxruntime | n/a: tf2onnx not installed" in report
    assert "150 (149 at 100 images)" in report
    ours = {"a.jpg": [(1, 0.9), (2, 0.05)], "b.jpg": [(3, 0.5), (4, 0.4)]}
    other = {"a.jpg": [(1, 0.9), (2, 0.05)], "b.jpg": [(4, 0.45), (3, 0.45)]}
    assert folder_bench.compare(ours, other) == {"images": 2, "top1_same": 1, "top5_same": 1,
                                                 "max_score_diff": pytest.approx(0.05)}


@pytest.mark.onnx  # it hides one of the [onnx] packages, so it needs them installed
def test_folder_reports_a_missing_onnx_runtime_with_how_to_install(folder_bench, tmp_path,
                                                                   monkeypatch):
    import importlib.util as util

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    why = folder_bench.prepare(tmp_path, ["onnxruntime"])
    assert why == {"onnxruntime": "tf2onnx not installed: " + folder_bench.ONNX_HINT}
    assert "pip install '.[onnx]' in the checkout" in why["onnxruntime"]


@pytest.mark.slow
def test_folder_run_measures_the_fast_cli_against_the_keras_one(folder_bench):
    pytest.importorskip("ai_edge_litert")
    result = folder_bench.run(["ours_fast", "ours_keras"], images=10, repeats=1,
                              log=lambda _: None)
    rows = result["rows"]
    assert rows["ours_fast"]["status"] == rows["ours_keras"]["status"] == "ok"
    assert rows["ours_fast"]["ips"] > 0 and rows["ours_fast"]["rss_mb_fifth"] > 0
    # The fast CLI never imports TensorFlow: far less memory than the Keras CLI.
    assert rows["ours_fast"]["rss_mb"] < rows["ours_keras"]["rss_mb"] / 2
    agree = result["agreement_vs_ours_keras"]["ours_fast"]
    assert agree["images"] == 10 and agree["top5_same"] == 10
    assert agree["max_score_diff"] < 1e-4
    b = rows["ours_fast"]["breakdown"]  # where the time goes, measured in the same run
    assert b["prep_ms"] > 0 and b["model_ips"] > 0 and b["start_s"] > 0 and b["cores"] >= 1
    report = folder_bench.format_report(result)
    assert "ours_fast vs the model alone (>= 0.72x)" in report  # small photos
    assert "floor (>=" not in report  # issue 18's target, retired by issue 31
    assert f"{b['model_ips']:.0f} img/s" in report and "decode + preprocess" in report
