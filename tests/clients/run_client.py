"""Runs inside a client venv (.venv-tasklib / .venv-mediapipe), never imports this package.

    python run_client.py tasklib|mediapipe MODEL.tflite OUT.json IMAGE...

Classifies each image with the client's ImageClassifier (all classes returned) and writes
``{"results": [{"image", "top_index", "top_label", "top_score", "score_sum", "count"}],
"metadata": {...}}``; with tasklib, ``metadata`` is what MetadataDisplayer reads back.
"""

import json
import sys


def tasklib(model, images):
    from tflite_support.task import core, processor, vision

    options = vision.ImageClassifierOptions(
        base_options=core.BaseOptions(file_name=model),
        classification_options=processor.ClassificationOptions(max_results=-1))
    classifier = vision.ImageClassifier.create_from_options(options)
    results = []
    for path in images:
        result = classifier.classify(vision.TensorImage.create_from_file(path))
        cats = result.classifications[0].categories
        results.append(_summary(path, [(c.index, c.category_name, c.score) for c in cats]))
    return results


def tasklib_metadata(model):
    from tensorflow_lite_support.metadata.cc.python import _pywrap_metadata_version
    from tflite_support import metadata

    shown = metadata.MetadataDisplayer.with_model_file(model)
    buf = shown.get_metadata_buffer()
    files = shown.get_packed_associated_file_list()
    return {"json": json.loads(shown.get_metadata_json()), "packed_files": files,
            # The version tflite-support's own populator would stamp on this metadata.
            "computed_min_parser_version":
                _pywrap_metadata_version.GetMinimumMetadataParserVersion(bytes(buf)),
            "labels_head": shown.get_associated_file_buffer(files[0]).decode()[:200]
            if files else None}


def mediapipe(model, images):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=model), max_results=-1)
    results = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for path in images:
            result = classifier.classify(mp.Image.create_from_file(path))
            cats = result.classifications[0].categories
            results.append(_summary(path, [(c.index, c.category_name, c.score) for c in cats]))
    return results


def _summary(path, cats):
    index, label, score = max(cats, key=lambda c: c[2])
    return {"image": path, "top_index": int(index), "top_label": label,
            "top_score": float(score), "score_sum": float(sum(c[2] for c in cats)),
            "count": len(cats)}


def main():
    client, model, out, *images = sys.argv[1:]
    if client == "tasklib":
        report = {"results": tasklib(model, images), "metadata": tasklib_metadata(model)}
    elif client == "mediapipe":
        report = {"results": mediapipe(model, images)}
    else:
        raise SystemExit(f"unknown client {client}")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
