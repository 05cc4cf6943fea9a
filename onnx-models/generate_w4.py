#!/usr/bin/env python3
"""W4A8 fixtures: 4-bit weights, 8-bit activations, made by onnxruntime's own quantizer from the
committed float models, with onnxruntime's outputs as the reference (tract 0.23 cannot load INT4).

    /opt/qfpy/bin/python onnx-models/generate_w4.py      # ≈1 min on 2 cores; no training
    /opt/qfpy/bin/python onnx-models/generate_w4.py --only fmnist_cat_w4   # one fixture

Makes, per entry of W4_MODELS:
    <name>.onnx                  QDQ, opset 21, INT4 (or UINT4) weights, uint8 activations
    expected/w4/<name>.{logits.npy,json,predictions.txt,graph.txt}   the 10k test set
    expected/w4/<name>.train.predictions.txt                        the bundled 10k train subset

Steps (deterministic: single-threaded onnxruntime, fixed calibration data):
 1. read the float model `<src>_f32.onnx` (opset 17) and convert it to opset 21 with
    onnx.version_converter (IR version 10): onnxruntime's quantizer writes 4-bit types in the
    standard DequantizeLinear/QuantizeLinear only from opset 21 on (before, it moves them to the
    com.microsoft domain);
 2. quant_pre_process, then quantize_static, QDQ, MinMax calibration on training images 0-999
    of the model's dataset (the repository's data/ bundle), batches of 100, uint8 activations,
    weight_type QInt4 or QUInt4, reduce_range False, no extra_options;
 3. run the full 10k test set (and the 10k train subset) through onnxruntime 1.32.0 with
    ORT_DISABLE_ALL, single thread, and write the references as generate.py does.

The references go to expected/w4/, apart from expected/: the tests that read expected/ also
cross-check every model with tract, which cannot load INT4. tests/it/w4.rs reads expected/w4/.
Helpers (reading data, onnxruntime sessions, requantization, graph dump) come from generate.py.
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as G  # noqa: E402

REPO = HERE.parent
BUNDLE = REPO / "data"
OUT = HERE / "expected" / "w4"
OPSET = 21
IR_VERSION = 10

# name -> float source, dataset, weight type, per-channel
W4_MODELS = {
    "fmnist_cnn_w4": dict(src="fmnist_cnn", dataset="fashion-mnist", weight="QInt4", per_channel=True,
                          note="W4A8 of the product's default model"),
    "mnist_res_w4": dict(src="mnist_res", dataset="mnist", weight="QInt4", per_channel=True,
                         note="W4A8 of the residual net (Add, GlobalAveragePool)"),
    "fmnist_overfit_w4": dict(src="fmnist_overfit", dataset="fashion-mnist", weight="QInt4", per_channel=True,
                              note="W4A8 of the memorizing CNN (trained on the 10k bundle)"),
    "fmnist_cnn_w4u_pt": dict(src="fmnist_cnn", dataset="fashion-mnist", weight="QUInt4", per_channel=False,
                              note="UINT4 weights, per-tensor, asymmetric zero points (the unsigned path)"),
    "fmnist_cat_w4": dict(src="fmnist_cat", dataset="fashion-mnist", weight="QInt4", per_channel=True,
                          note="W4A8 of the concatenating CNN: an AveragePool at opset 21, which onnxruntime "
                               "sums row by row (MLAS, up to opset 18, column by column)"),
}


def quantize(name: str, spec: dict, xcal: np.ndarray, src: Path | None = None, out: Path | None = None) -> None:
    """`src` (default `<spec src>_f32.onnx` here) quantized as `spec` says into `out` (default
    `<name>.onnx` here); retrain/generate_w4_references.py quantizes the retrained floats with it."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = iter([{"input": xcal[i : i + G.CALIB_BATCH]} for i in range(0, len(xcal), G.CALIB_BATCH)])

    with tempfile.TemporaryDirectory() as td:
        f21 = Path(td) / "f21.onnx"
        pre = Path(td) / "pre.onnx"
        src = src or HERE / f"{spec['src']}_f32.onnx"
        out = out or HERE / f"{name}.onnx"
        m = version_converter.convert_version(onnx.load(str(src)), OPSET)
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m, full_check=True)
        onnx.save(m, str(f21))
        quant_pre_process(str(f21), str(pre))
        quantize_static(
            str(pre), str(out), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=spec["per_channel"], reduce_range=False,
            activation_type=QuantType.QUInt8, weight_type=getattr(QuantType, spec["weight"]),
            calibrate_method=CalibrationMethod.MinMax,
        )
    q = onnx.load(str(out))
    onnx.checker.check_model(q, full_check=True)
    bad = [n.op_type for n in q.graph.node if n.domain not in ("", "ai.onnx")]
    assert not bad, f"{name}: non-standard domains for {bad}"


def reference(name: str, spec: dict, data: dict) -> dict:
    import onnx
    import onnxruntime as ort

    path = HERE / f"{name}.onnx"
    m = onnx.load(str(path))
    xte, yte = data["test"]
    y = G.ort_run(path, xte)
    scale, zp = G.output_quant(m)
    q = G.requantize(y, scale, zp)
    pred = G.first_argmax(q)
    acc = float((pred == yte).mean())
    xtr, ytr = data["train"]
    ptr = G.first_argmax(G.requantize(G.ort_run(path, xtr), scale, zp))
    float_path = HERE / f"{spec['src']}_f32.onnx"
    float_acc = float((G.first_argmax(G.ort_run(float_path, xte)) == yte).mean())
    y1 = G.ort_run(path, xte[:200], batch=1)

    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / f"{name}.logits.npy", q)
    (OUT / f"{name}.predictions.txt").write_text("".join(f"{p}\n" for p in pred))
    (OUT / f"{name}.train.predictions.txt").write_text("".join(f"{p}\n" for p in ptr))
    (OUT / f"{name}.graph.txt").write_text(G.describe_graph(m))
    four_bit = {t.name: dict(dtype={21: "uint4", 22: "int4"}[t.data_type], dims=list(t.dims),
                             storage=G.tensor_storage(t))
                for t in m.graph.initializer if t.data_type in (21, 22)}
    rec = {
        "model": path.name,
        "dataset": spec["dataset"],
        "split": "test",
        "n": int(len(xte)),
        "reference": f"onnxruntime {ort.__version__} ORT_DISABLE_ALL",
        "output_dtype": str(zp.dtype),
        "output_scale": float(scale),
        "output_zero_point": int(zp),
        "int8_accuracy": acc,
        "float_accuracy": float_acc,
        "train_subset_accuracy": float((ptr == ytr).mean()),
        "sha256": G.sha256_file(path),
        "ops": G.op_histogram(m),
        "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import if o.domain in ("", "ai.onnx")},
        "ir_version": m.ir_version,
        "float_model": float_path.name,
        "format": "QDQ",
        "weights": f"{spec['weight']} {'per-channel' if spec['per_channel'] else 'per-tensor'}",
        "activations": "uint8",
        "four_bit_initializers": four_bit,
        "argmax_ties": G.n_ties(q),
        "argmax_rule": "first maximum on ties",
        "batch1_equals_batch1000_first200": bool(np.array_equal(y1, y[:200])),
        "calibration": f"MinMax, first {G.CALIB_N} training images of {spec['dataset']} (data/ bundle), "
                       f"batches of {G.CALIB_BATCH}",
        "quantize_static": dict(quant_format="QDQ", per_channel=spec["per_channel"], reduce_range=False,
                                activation_type="QUInt8", weight_type=spec["weight"], calibrate_method="MinMax",
                                extra_options={}),
        "note": spec["note"],
    }
    (OUT / f"{name}.json").write_text(json.dumps(rec, indent=2) + "\n")
    print(f"  {name}: test acc {acc:.4f} (float {float_acc:.4f}), train subset {rec['train_subset_accuracy']:.4f}, "
          f"ties {rec['argmax_ties']}, 4-bit tensors {collections.Counter(v['dtype'] for v in four_bit.values())}",
          flush=True)
    return rec


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="make only this fixture (repeatable)")
    args = ap.parse_args()
    datasets = {}
    for name, spec in W4_MODELS.items():
        if args.only and name not in args.only:
            continue
        ds = spec["dataset"]
        if ds not in datasets:
            datasets[ds] = G.load_dataset(BUNDLE, ds)
        data = datasets[ds]
        quantize(name, spec, data["train"][0][: G.CALIB_N])
        reference(name, spec, data)


if __name__ == "__main__":
    main()
