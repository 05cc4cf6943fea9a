#!/usr/bin/env python3
"""onnxruntime's LayerNormalization on rows of 64, 100 and 128 features, for
`src/graph/layer_norm.rs`'s test.

Writes `expected/layer_norm_<F>_{x,g,b,mean,istd,y}.npy` (float32): 200 rows of `F` features
(normal samples, per-row scales 0.1..10 and offsets, so the mean matters), γ and β, and
onnxruntime's three outputs (Y, Mean, InvStdDev; graph optimizations off, one thread, CPU
execution provider, epsilon 1e-5). 100 features leave a tail of 4 after the eight-lane
variance sums. Run on x86-64 with FMA.

    /opt/qfpy/bin/python onnx-models/generate_layer_norm.py   (the venv of setup_env.sh)
"""
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent / "expected"
ROWS = 200


def run(x, g, b):
    f = x.shape[1]
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean", "istd"],
                            axis=-1, epsilon=1e-5)
    graph = helper.make_graph(
        [node], "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, f])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["y", "mean", "istd"]],
        [numpy_helper.from_array(g, "g"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def main():
    rng = np.random.default_rng(7)
    for f in [64, 100, 128]:
        g = rng.normal(1, 0.3, f).astype(np.float32)
        b = rng.normal(0, 0.3, f).astype(np.float32)
        x = (rng.normal(0.5, 2.0, (ROWS, f)) * rng.uniform(0.1, 10, (ROWS, 1))
             + rng.normal(0, 3, (ROWS, 1))).astype(np.float32)
        y, mean, istd = run(x, g, b)
        for name, v in [("x", x), ("g", g), ("b", b), ("mean", mean.reshape(-1)),
                        ("istd", istd.reshape(-1)), ("y", y)]:
            np.save(OUT / f"layer_norm_{f}_{name}.npy", np.ascontiguousarray(v, np.float32))
        print(f"{f} features: {ROWS} rows written")


if __name__ == "__main__":
    main()
