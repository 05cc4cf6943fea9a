#!/usr/bin/env python3
"""A fixture with the smooth activations exporters write as several nodes (issue 10, item 2):
SiLU, `x * sigmoid(x)`, and GELU, `x * 0.5 * (1 + erf(x / sqrt(2)))` (opset 13 has no Gelu op).

    conv(1->8)-SiLU-maxpool2 -> conv(8->16)-SiLU-maxpool2 -> flatten -> fc(784->64)-GELU
    -> fc(64->10)

Trained on MNIST, quantized by onnxruntime quantize_static (MinMax, first 1000 training
images, per-channel int8 weights, uint8 activations) in both formats:
  mnist_gelu_qdq.onnx  every node of both activations in its own Q/DQ pair: Sigmoid and Erf as
                       float functions, `DQ x, DQ s -> Mul -> Q` (a product of two activations),
                       `DQ erf, DQ 1 -> Add -> Q` and `DQ y, DQ 0.5 -> Mul -> Q` (quantized
                       constants); scales of 1/127.5 on both sides of the Add put half of its
                       bytes on a rounding tie, so the float order of the QDQ form matters
  mnist_gelu_qop.onnx  com.microsoft QLinearSigmoid and QLinearMul (two activations, and an
                       activation by a quantized constant), QLinearAdd, Erf in float
References in expected/ (onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, full test set) through
generate.py's functions, so the Rust fixture tests pick them up unchanged.

    /opt/qfpy/bin/python onnx-models/generate_gelu.py [--data /work/shared/data] [--skip-train]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "mnist_gelu"
HP = dict(dataset="mnist", arch=NAME, seed=23, epochs=2, batch=128, lr=1e-3, lr_final_epochs=1,
          lr_final=1e-4, optimizer="Adam", weight_decay=0.0)
SPECS = [
    dict(name=f"{NAME}_qdq", src=NAME, fmt="QDQ", per_channel=True, act="u8", pre_opt=False,
         note="SiLU (Sigmoid, Mul of two activations) and GELU (Div, Erf, Add, Mul) in Q/DQ pairs"),
    dict(name=f"{NAME}_qop", src=NAME, fmt="QOperator", per_channel=True, act="u8", pre_opt=False,
         note="QLinearSigmoid, QLinearMul, QLinearAdd, Erf in float"),
]


def build():
    import torch.nn as nn

    class ActNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.GELU(), nn.Linear(64, 10))

        def forward(self, x):
            return self.f(x)

    return ActNet


def main() -> None:
    gen.extra_fixture_main(__doc__, NAME, HP, build, SPECS)


if __name__ == "__main__":
    main()
