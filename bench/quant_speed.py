"""CPU per cell of a model folder's LiteRT artifact against quantized exports of the same Keras model.

    .venv/bin/python bench/quant_speed.py [--model-dir inference/bundled] [--work-dir var/bench/quant] \
        [--export int8,dynamic,float16] [--candidate LABEL=PATH[:no-xnnpack|:xnnpack-latest]] \
        [--calls 300] [--rounds 2] [--json]

Serving runs each cell with its mirror image on one thread per pool process, so a call here is a batch of 2
(a cell and its mirror) on one thread, and the figure is ``time.process_time`` per call: CPU, not wall time,
which on the shared machine mostly measures the queue. Rounds interleave the candidates so a load change hits
all of them. Inputs are PBC *validation* crops (never the test split).

``--export`` writes candidates of the folder's ``model.keras`` into ``--work-dir`` (skipped when the file is
there): ``int8`` (full integer: per-channel int8 weights, int8 activations, float input/output, calibrated on
PBC train crops and olympus train cells), ``dynamic`` (int8 weights, float activations), ``float16``
(float16 weights). Each candidate's ops are listed with their tensor types and the number of XNNPACK
partitions: one partition means every op runs in XNNPACK; more mean some ran in LiteRT's own kernels.
``LABEL=PATH:no-xnnpack`` runs a file without the default delegate (LiteRT's built-in kernels);
``LABEL=PATH:xnnpack-latest`` with the delegate's latest features switched on.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"


def calibration_pixels(preprocessing: dict, *, pbc: int = 300, olympus: int = 150, seed: int = 0):
    """uint8 model inputs: random PBC train crops and olympus train cells cut as serving cuts them."""
    import numpy as np

    from inference.data import load_rgb
    from inference.field_data import read_manifest, training_window
    from inference.locate import cell_window, locate_cells
    from inference.preprocessing import fit_to_input

    rng = np.random.default_rng(seed)
    files = sorted((SHARED / "pbc" / "train").rglob("*.jpg"))
    pixels = [
        np.asarray(fit_to_input(load_rgb(files[i]), preprocessing), dtype=np.uint8)
        for i in rng.choice(len(files), min(pbc, len(files)), replace=False)
    ]
    samples = read_manifest(SHARED / "olympus", split="train") if (SHARED / "olympus").is_dir() else []
    taken = 0
    for index in rng.permutation(len(samples)):
        if taken >= olympus:
            break
        image = load_rgb(samples[index].path)
        location = locate_cells(image)
        box = training_window(samples[index], location)
        if box is not None:
            pixels.append(
                np.asarray(fit_to_input(cell_window(image, box, location.window_px), preprocessing), np.uint8)
            )
            taken += 1
    return np.stack(pixels)


def _batches(pixels, scale: str):
    from inference.preprocessing import scale_pixels

    return lambda: (scale_pixels(pixels[start : start + 32], scale) for start in range(0, len(pixels), 32))


def export_candidates(model_dir: Path, work_dir: Path, kinds: list[str]) -> dict[str, Path]:
    import keras

    from inference.export import export_tflite
    from inference.model_folder import read_model_metadata

    metadata = read_model_metadata(model_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    model = None
    paths = {}
    for kind in kinds:
        path = work_dir / f"{kind}.tflite"
        paths[kind] = path
        if path.is_file():
            continue
        model = model or keras.models.load_model(model_dir / metadata["keras_artifact"], compile=False)
        if kind == "int8":
            pixels = calibration_pixels(metadata["preprocessing"])
            export_tflite(model, path, int8_calibration=_batches(pixels, metadata["preprocessing"]["scale"]))
        elif kind == "dynamic":
            export_tflite(model, path, dynamic_range=True)
        elif kind == "float16":
            export_tflite(model, path, float16=True)
        else:
            raise SystemExit(f"unknown export {kind!r} (int8, dynamic, float16)")
    return paths


def describe_ops(path: Path) -> dict:
    """Op counts by type and first-input dtype, and how many XNNPACK partitions the default delegate made."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    plain = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    ops = collections.Counter()
    for op in plain._get_ops_details():
        dtype = plain._get_tensor_details(op["inputs"][0], 0)["dtype"].__name__ if len(op["inputs"]) else "-"
        ops[f"{op['op_name']}:{dtype}"] += 1
    delegated = Interpreter(model_path=str(path), num_threads=1)
    delegated.allocate_tensors()
    partitions = sum(1 for op in delegated._get_ops_details() if op["op_name"] == "DELEGATE")
    return {"ops": dict(ops), "xnnpack_partitions": partitions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "inference" / "bundled")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "var" / "bench" / "quant")
    parser.add_argument("--export", default="", help="comma-separated: int8, dynamic, float16")
    parser.add_argument("--candidate", action="append", default=[], help="LABEL=PATH[:no-xnnpack|:xnnpack-latest]")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from inference.data import load_rgb
    from inference.model_folder import SERVING_ARTIFACT, read_model_metadata
    from inference.preprocessing import fit_to_input, scale_pixels

    metadata = read_model_metadata(args.model_dir)
    specs = [("float32", args.model_dir / SERVING_ARTIFACT, "")]
    kinds = [kind for kind in args.export.split(",") if kind]
    specs += [(kind, path, "") for kind, path in export_candidates(args.model_dir, args.work_dir, kinds).items()]
    for text in args.candidate:
        label, _, target = text.partition("=")
        path, _, option = target.partition(":")
        specs.append((label, Path(path), option))

    files = sorted((SHARED / "pbc" / "val").rglob("*.jpg"))[::25][:50]
    pixels = np.stack([np.asarray(fit_to_input(load_rgb(path), metadata["preprocessing"]), np.uint8) for path in files])
    views = scale_pixels(pixels, metadata["preprocessing"]["scale"])
    pairs = [np.ascontiguousarray(np.stack([view, view[:, ::-1]])) for view in views]

    runs = []
    for label, path, option in specs:
        kwargs = {}
        if option == "no-xnnpack":
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        elif option == "xnnpack-latest":
            kwargs["experimental_default_delegate_latest_features"] = True
        interpreter = Interpreter(model_path=str(path), num_threads=1, **kwargs)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, pairs[0].shape)
        interpreter.allocate_tensors()
        runs.append((label, interpreter, index))
    cpu = {label: [] for label, _, _ in runs}
    for _ in range(args.rounds):
        for label, interpreter, index in runs:
            for pair in pairs[:5]:
                interpreter.set_tensor(index, pair)
                interpreter.invoke()
            started = time.process_time()
            for call in range(args.calls):
                interpreter.set_tensor(index, pairs[call % len(pairs)])
                interpreter.invoke()
            cpu[label].append(round((time.process_time() - started) / args.calls * 1000.0, 2))
            if not args.json:
                print(f"{label:12s} {cpu[label][-1]:6.2f} ms CPU per call (a cell and its mirror)", flush=True)
    result = {
        "calls": args.calls,
        "rounds": args.rounds,
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "candidates": {
            label: {
                "path": str(path),
                "option": option,
                "bytes": path.stat().st_size,
                "cpu_ms_per_call": cpu[label],
                **describe_ops(path),
            }
            for label, path, option in specs
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for label, entry in result["candidates"].items():
            print(label, entry["bytes"], "bytes", entry["xnnpack_partitions"], "XNNPACK partition(s)", entry["ops"])
        print("load average", result["load_average"])


if __name__ == "__main__":
    main()
