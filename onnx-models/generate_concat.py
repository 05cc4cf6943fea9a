#!/usr/bin/env python3
"""A fixture with channel concatenation (issue 10, item 2: Concat between DequantizeLinear and
QuantizeLinear, and QOperator's QLinearConcat): a Fashion-MNIST CNN with an inception-style
block whose three branches keep their own activation and scale, and a second block whose two
linear branches are concatenated and then go through one ReLU.

    conv(1->16)-ReLU -> avgpool2 -> { conv1x1(16->8)-ReLU, conv3x3(16->8)-Sigmoid,
    conv5x5(16->8)-ReLU } -> Concat (24) -> { conv3x3 s2 (24->16), conv1x1 s2 (24->16) }
    -> Concat (32) -> ReLU -> flatten -> fc(1568->10, no bias)

Quantized by onnxruntime quantize_static (MinMax, first 1000 training images, per-channel int8
weights, uint8 activations) in both formats:
  fmnist_cat_qdq.onnx   `DQ a, DQ b, DQ c -> Concat -> Q` (each input with its own scale)
  fmnist_cat_qop.onnx   `QLinearConcat` (com.microsoft)
References in expected/ (onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, full test set) through
generate.py's functions, so the Rust fixture tests pick them up unchanged.

    /opt/qfpy/bin/python onnx-models/generate_concat.py [--data /work/shared/data] [--skip-train]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "fmnist_cat"
HP = dict(dataset="fashion-mnist", arch=NAME, seed=17, epochs=3, batch=128, lr=1e-3, lr_final_epochs=1,
          lr_final=1e-4, optimizer="Adam", weight_decay=0.0)
SPECS = [
    dict(name=f"{NAME}_qdq", src=NAME, fmt="QDQ", per_channel=True, act="u8", pre_opt=False,
         note="Concat of three dequantized branches (own scales), and Concat then Relu"),
    dict(name=f"{NAME}_qop", src=NAME, fmt="QOperator", per_channel=True, act="u8", pre_opt=False,
         note="QLinearConcat"),
]


def build():
    import torch
    import torch.nn as nn

    class CatNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 16, 3, padding=1)
            self.pool = nn.AvgPool2d(2)
            self.b1 = nn.Conv2d(16, 8, 1)
            self.b3 = nn.Conv2d(16, 8, 3, padding=1)
            self.b5 = nn.Conv2d(16, 8, 5, padding=2)
            self.down3 = nn.Conv2d(24, 16, 3, stride=2, padding=1)
            self.down1 = nn.Conv2d(24, 16, 1, stride=2)
            self.fc = nn.Linear(32 * 7 * 7, 10, bias=False)

        def forward(self, x):
            x = self.pool(torch.relu(self.stem(x)))
            x = torch.cat([torch.relu(self.b1(x)), torch.sigmoid(self.b3(x)), torch.relu(self.b5(x))], 1)
            x = torch.relu(torch.cat([self.down3(x), self.down1(x)], 1))
            return self.fc(x.flatten(1))

    return CatNet


def main() -> None:
    gen.extra_fixture_main(__doc__, NAME, HP, build, SPECS)


if __name__ == "__main__":
    main()
