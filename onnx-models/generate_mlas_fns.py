#!/usr/bin/env python3
"""onnxruntime's Sigmoid, Tanh and Erf on 60,009 inputs, for `src/graph/mlas_fns.rs`'s test.

Writes `expected/mlas_fns_x.npy` (float32 inputs: a grid over -20..20 in steps of 0.001,
20,000 normal samples with sigma 3, and a few extremes) and `expected/mlas_fns_<Op>.npy`
(onnxruntime's outputs, graph optimizations off, CPU execution provider). Run on x86-64 with
FMA (every CPU qforget targets): MLAS picks its FMA kernels there, which the Rust functions
reproduce bit for bit.

    /opt/qfpy/bin/python onnx-models/generate_mlas_fns.py   (the venv of setup_env.sh)
"""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parent / "expected"


def run(op, x):
    node = helper.make_node(op, ["x"], ["y"])
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def main():
    rng = np.random.default_rng(0)
    extremes = np.array([0.0, -0.0, 1e-30, -1e-30, 17.9, -17.9, 1e30, -1e30], np.float32)
    x = np.concatenate([np.linspace(-20, 20, 40_001, dtype=np.float32),
                        rng.normal(0, 3, 20_000).astype(np.float32), extremes]).astype(np.float32)
    np.save(OUT / "mlas_fns_x.npy", x)
    for op in ["Sigmoid", "Tanh", "Erf"]:
        y = run(op, x).astype(np.float32)
        np.save(OUT / f"mlas_fns_{op}.npy", y)
        print(op, y.shape, "onnxruntime", ort.__version__)


if __name__ == "__main__":
    main()
