#!/usr/bin/env python3
"""A fixture with LayerNormalization (opset 17, one node per LayerNorm):

    flatten -> fc(784->128) -> LayerNorm(128) -> ReLU -> fc(128->64) -> LayerNorm(64) -> GELU
    -> fc(64->10)

Trained on MNIST, quantized by onnxruntime quantize_static (MinMax, first 1000 training
images, per-channel int8 weights, uint8 activations) in both formats:
  mnist_ln_qdq.onnx  `DQ x, DQ gamma (int8), DQ beta (int32) -> LayerNormalization -> Q`, the
                     ReLU folded into the Q after the first one; GELU's nodes in Q/DQ pairs
  mnist_ln_qop.onnx  LayerNormalization in float between DequantizeLinear and QuantizeLinear,
                     QLinearMatMul/QGemm around it
NNCF's form (mnist_ln_nncf.onnx: the float result of a quantized Gemm straight into the
LayerNormalization, float gamma and beta, then Relu -> Q) is made from this script's float
model by generate_other_quantizers.py.

With --decomposed: the same network and recipe exported at opset 13 (torch 1.13's default is
14), where each LayerNorm is spelled out as ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps)
-> Sqrt -> Div -> Mul(gamma) -> Add(beta):
  mnist_ln13_qdq.onnx  onnxruntime QDQ: the Sub/Pow/ReduceMean run in float on a dequantized
                       input, Q/DQ pairs after the variance, the Add of eps, the Div and the Mul
  mnist_ln13_qop.onnx  QOperator: QLinearAdd of eps, QLinearMul by gamma (one value per feature),
                       the rest in float
References in expected/ (onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, full test set) through
generate.py's functions, so the Rust fixture tests pick them up unchanged.

    /opt/qfpy/bin/python onnx-models/generate_layernorm.py [--data /work/shared/data] [--skip-train]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "mnist_ln"
HP = dict(dataset="mnist", arch=NAME, seed=31, epochs=2, batch=128, lr=1e-3, lr_final_epochs=1,
          lr_final=1e-4, optimizer="Adam", weight_decay=0.0)
SPECS = [
    dict(name=f"{NAME}_qdq", src=NAME, fmt="QDQ", per_channel=True, act="u8", pre_opt=False,
         note="LayerNormalization between Q/DQ pairs, gamma int8 and beta int32 through DequantizeLinear"),
    dict(name=f"{NAME}_qop", src=NAME, fmt="QOperator", per_channel=True, act="u8", pre_opt=False,
         note="LayerNormalization in float between DequantizeLinear and QuantizeLinear"),
]


def build():
    import torch.nn as nn

    class LnNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(
                nn.Flatten(), nn.Linear(784, 128), nn.LayerNorm(128), nn.ReLU(),
                nn.Linear(128, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 10))

        def forward(self, x):
            return self.f(x)

    return LnNet


def main() -> None:
    if "--decomposed" in sys.argv:
        sys.argv.remove("--decomposed")
        gen.OPSET = 13
        name = f"{NAME}13"
        specs = [dict(s, name=s["name"].replace(NAME, name), src=name) for s in SPECS]
        specs[0]["note"] = "LayerNorm as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add (opset 13), QDQ"
        specs[1]["note"] = "the same in QOperator form: QLinearAdd of eps, QLinearMul by gamma"
        gen.extra_fixture_main(__doc__, name, dict(HP, arch=name), build, specs)
        return
    assert gen.OPSET >= 17, "LayerNormalization is one ONNX node from opset 17"
    gen.extra_fixture_main(__doc__, NAME, HP, build, SPECS)


if __name__ == "__main__":
    main()
