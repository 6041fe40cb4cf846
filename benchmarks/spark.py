"""Spark throughput: ``mobilenet-v1 spark`` on a standalone cluster against ``mobilenet-v1
predict DIR`` on the same folder.

Usage::

    python benchmarks/spark.py                    # 400 JPEGs, 2 workers of 1 core each
    python benchmarks/spark.py --images 1000 --workers 2 --cores 1 --repeats 2

Needs the [spark] extra and a JDK. A cluster (one master, ``--workers`` workers) is started
on localhost from pyspark's jars and always stopped; its start is timed apart. Both commands
run end to end in a new process with the bundled 1.0_224 weights and default settings (the
cached TFLite model, warmed by an untimed run of each first), rounds interleaved; the figure
is images per second of wall time, best of ``--repeats``. The Spark command's time includes
its driver's JVM start and the executors' Python workers opening the model, which a long job
pays once; ``spark_job_warm`` is one more job run from a driver that is already up, on
executors that already opened the model. Both outputs are checked to hold the same lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages sit one level up
    sys.path.insert(0, str(ROOT))

from benchmarks.folder import make_folder  # noqa: E402


def _timed(cmd: list[str], env: dict, stdout=subprocess.DEVNULL) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=stdout, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def run(images: int, workers: int, cores: int, repeats: int, log=print) -> dict:
    from tf_mobilenet_v1.spark import standalone_cluster

    cli = [sys.executable, "-m", "tf_mobilenet_v1"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = make_folder(work, images)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "SPARK_LOCAL_IP": "127.0.0.1",
               "PYSPARK_PYTHON": sys.executable,
               "MOBILENET_V1_CACHE": str(work / "cache")}
        # The cluster's workers (and so the executors) inherit these.
        os.environ.update({k: env[k] for k in ("SPARK_LOCAL_IP", "PYSPARK_PYTHON",
                                               "MOBILENET_V1_CACHE")})
        start = time.perf_counter()
        with standalone_cluster(workers, cores, log_dir=str(work / "logs")) as url:
            cluster_start = time.perf_counter() - start
            log(f"cluster {url} up in {cluster_start:.1f} s")
            predict = [*cli, "predict", str(folder), "--jsonl"]

            def spark(out):
                return [*cli, "spark", "--input", str(folder), "--output", str(out),
                        "--master", url]

            with open(work / "predict.jsonl", "wb") as f:
                _timed(predict, env, f)  # untimed warm-up: builds the cached model
            _timed(spark(work / "warm"), env)
            times: dict[str, list[float]] = {"predict": [], "spark": []}
            for r in range(repeats):
                times["predict"].append(_timed(predict, env))
                times["spark"].append(_timed(spark(work / f"out{r}"), env))
                log(f"round {r + 1}: predict {times['predict'][-1]:.1f} s, "
                    f"spark {times['spark'][-1]:.1f} s")
            # The job alone: a driver already up and executors that have opened the model
            # (what each further job, or a long one, costs per image).
            from tf_mobilenet_v1.spark import run_spark, session

            spark = session(url)
            try:
                run_spark(str(folder), str(work / "job-warm"), spark=spark)
                start = time.perf_counter()
                run_spark(str(folder), str(work / "job"), spark=spark)
                times["spark_job_warm"] = [time.perf_counter() - start]
            finally:
                spark.stop()
        ours = sorted(line for p in (work / "out0").glob("part-*")
                      for line in p.read_text().splitlines())
        same = ours == sorted((work / "predict.jsonl").read_text().splitlines())
    best = {k: min(v) for k, v in times.items()}
    return {"images": images, "workers": workers, "cores_per_worker": cores,
            "cluster_start_s": round(cluster_start, 1),
            "seconds": {k: round(v, 1) for k, v in best.items()},
            "images_per_s": {k: round(images / v, 1) for k, v in best.items()},
            "same_lines": same}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=1, help="cores per worker")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    result = run(args.images, args.workers, args.cores, args.repeats,
                 log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result, indent=2))
    return 0 if result["same_lines"] else 1


if __name__ == "__main__":
    sys.exit(main())
