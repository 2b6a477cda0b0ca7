"""Speed and memory of the bundled model: Keras called directly vs the serving runtime(s).

    .venv/bin/python bench/model_speed.py [--model-dir inference/bundled] [--threads 2] [--json]
    .venv/bin/python bench/model_speed.py --runtimes keras,litert,onnxruntime   # needs requirements/bench.txt

Each runtime is measured in its own subprocess, so the resident memory (RSS) is that of a process
holding only that runtime and model. Latency is one preprocessed 224 px image per call (model only;
preprocessing a full-size upload is reported separately); throughput uses batches of 32.
``onnxruntime`` exports the Keras model to ONNX (tf2onnx) once, in a process of its own, into
``var/bench/``, then measures ONNX Runtime's CPU provider on it: a comparison, not a serving path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as stream:
        for line in stream:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _inputs(metadata: dict, count: int):
    import numpy as np
    from PIL import Image

    from inference.preprocessing import preprocess_batch

    shared = ROOT.parent / "shared" / "datasets" / "pbc" / "test"
    files = sorted(shared.rglob("*.jpg"))[:count] if shared.is_dir() else []
    if files:
        images = [Image.open(path) for path in files]
    else:
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 255, (363, 360, 3), dtype=np.uint8)) for _ in range(count)]
    return preprocess_batch(images, metadata["preprocessing"])


def _preprocess_ms(metadata: dict) -> float:
    import numpy as np
    from PIL import Image

    from inference.preprocessing import preprocess

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (363, 360, 3), dtype=np.uint8))
    preprocess(image, metadata["preprocessing"])
    started = time.perf_counter()
    for _ in range(50):
        preprocess(image, metadata["preprocessing"])
    return (time.perf_counter() - started) / 50 * 1000


def measure(runtime: str, model_dir: Path, threads: int, seconds: float) -> dict:
    import numpy as np

    from inference.model_folder import read_model_metadata

    metadata = read_model_metadata(model_dir)
    batch = _inputs(metadata, 32)
    if runtime == "keras":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras

        model = keras.saving.load_model(model_dir / metadata["keras_artifact"], compile=False)
        call = tf.function(lambda x: model(x, training=False)["logits"], reduce_retracing=True)

        def run(x):
            return np.asarray(call(tf.constant(x)))
    elif runtime == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(_onnx_path(model_dir)), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        logits_name = next(o.name for o in session.get_outputs() if "logits" in o.name)

        def run(x):
            return session.run([logits_name], {input_name: x})[0]
    else:
        from inference.runtimes import open_runtime

        artifact = {"litert": metadata["serving_artifact"]}.get(runtime, runtime)
        engine = open_runtime(model_dir / artifact, num_threads=threads)

        def run(x):
            return engine.run(x)[0]

    rss_loaded = _rss_mb()
    single = batch[:1]
    for _ in range(5):
        run(single)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(latencies) < 30:
        started = time.perf_counter()
        run(single)
        latencies.append((time.perf_counter() - started) * 1000)
    run(batch)
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or images < 64:
        run(batch)
        images += len(batch)
    throughput = images / (time.perf_counter() - started)
    return {
        "runtime": runtime,
        "threads": threads,
        "input_size": metadata["input_size"],
        "latency_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "latency_p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "throughput_img_s": round(throughput, 1),
        "rss_mb": round(max(rss_loaded, _rss_mb()), 1),
        "preprocess_ms_full_size_upload": round(_preprocess_ms(metadata), 2),
    }


def _onnx_path(model_dir: Path) -> Path:
    import hashlib

    digest = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:12]
    return ROOT / "var" / "bench" / f"{digest}.onnx"


def export_onnx(model_dir: Path) -> None:
    import keras
    import numpy as np

    from inference.model_folder import read_model_metadata

    metadata = read_model_metadata(model_dir)
    model = keras.saving.load_model(model_dir / metadata["keras_artifact"], compile=False)
    path = _onnx_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = metadata["input_size"]
    model(np.zeros((1, size, size, 3), np.float32), training=False)  # the exporter wants a called model
    model.export(str(path), format="onnx", verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "inference" / "bundled")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument(
        "--runtimes", default="keras,litert", help="comma-separated: keras, litert, or extra artifact file names"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--export-onnx", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_onnx:
        export_onnx(args.model_dir)
        return
    if args.worker:
        print(json.dumps(measure(args.worker, args.model_dir, args.threads, args.seconds)))
        return
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    results = {}
    runtimes = args.runtimes.split(",")
    if "onnxruntime" in runtimes and not _onnx_path(args.model_dir).is_file():
        command = [sys.executable, __file__, "--export-onnx", "--model-dir", str(args.model_dir)]
        output = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if output.returncode != 0:
            raise SystemExit(f"ONNX export failed (pip install -r requirements/bench.txt?):\n{output.stderr[-2000:]}")
    for runtime in runtimes:
        command = [sys.executable, __file__, "--worker", runtime, "--model-dir", str(args.model_dir)]
        command += ["--threads", str(args.threads), "--seconds", str(args.seconds)]
        output = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if output.returncode != 0:
            raise SystemExit(f"{runtime} failed:\n{output.stderr[-2000:]}")
        results[runtime] = json.loads(output.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(results))
        return
    print(f"model: {args.model_dir}  threads: {args.threads}")
    print("| runtime | p50 ms | p95 ms | images/s (batch 32) | RSS MB |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        print(
            f"| {name} | {row['latency_p50_ms']} | {row['latency_p95_ms']} | {row['throughput_img_s']} "
            f"| {row['rss_mb']} |"
        )
    first = next(iter(results.values()))
    print(f"preprocessing one 360x363 upload: {first['preprocess_ms_full_size_upload']} ms")


if __name__ == "__main__":
    main()
