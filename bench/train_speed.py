"""Training throughput of the whole-network recipe, by how batches are fed.

    .venv/bin/python bench/train_speed.py [--size 128] [--steps 20] [--batch-size 32]

Builds the bundled recipe's classifier (EfficientNet-Lite0, batch norm folded, resized inside to
``--size``) and times ``fit`` on random pixels, fed two ways: in-memory float arrays (Keras' own
tf.data pipeline), and the ``keras.utils.PyDataset`` that ``whole_network`` trains with (a view and a
flip/rotation chosen per image in Python). The gap is what a native input pipeline could win.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(feed: str, *, size: int, steps: int, batch_size: int, intra: int, inter: int) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)

    from inference.whole_network import WholeNetworkConfig, _batches, build_classifier

    classifier = build_classifier(WholeNetworkConfig(whole_network_size=size), 8)
    trainer = keras.Model(classifier.input, classifier.output["logits"])
    trainer.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(0)
    n = batch_size * steps
    pixels = rng.integers(0, 256, (2, n, 224, 224, 3), dtype=np.uint8)
    labels = rng.integers(0, 8, n)
    weights = np.ones(8, np.float32)
    warm = batch_size * 3
    if feed == "pydataset":
        trainer.fit(_batches(pixels[:, :warm], labels[:warm], weights, batch_size=batch_size, seed=0), verbose=0)
        started = time.perf_counter()
        trainer.fit(_batches(pixels, labels, weights, batch_size=batch_size, seed=0), verbose=0)
    else:
        x = pixels[0].astype(np.float32)
        trainer.fit(x[:warm], labels[:warm], batch_size=batch_size, verbose=0)
        started = time.perf_counter()
        trainer.fit(x, labels, sample_weight=weights[labels], batch_size=batch_size, verbose=0)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--intra", type=int, default=0, help="TensorFlow intra-op threads (0: its default)")
    parser.add_argument("--inter", type=int, default=0, help="TensorFlow inter-op threads (0: its default)")
    parser.add_argument("--feed", choices=["arrays", "pydataset"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feed:
        rate = measure(
            args.feed, size=args.size, steps=args.steps, batch_size=args.batch_size, intra=args.intra, inter=args.inter
        )
        print(json.dumps(rate))
        return
    import os
    import subprocess

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    threads = f"intra-op {args.intra or 'default'}, inter-op {args.inter or 'default'}"
    print(f"whole network at {args.size} px, batch {args.batch_size}, {args.steps} steps, {threads}")
    print("| fed by | images/s |\n|---|---|")
    for feed in ("arrays", "pydataset"):
        # One process per measurement, so neither warms the other's caches or thread pools.
        command = [sys.executable, __file__, "--feed", feed, "--size", str(args.size)]
        command += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
        command += ["--intra", str(args.intra), "--inter", str(args.inter)]
        output = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        print(f"| {feed} | {float(output.stdout.strip().splitlines()[-1]):.1f} |")


if __name__ == "__main__":
    main()
