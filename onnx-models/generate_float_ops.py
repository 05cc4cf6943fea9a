#!/usr/bin/env python3
"""A fixture whose activations onnxruntime's quantizer leaves to float lookups (issue 10, item 2):
an MNIST CNN with HardSwish, LeakyRelu and Sigmoid activations.

    conv(1->16)+BN -> HardSwish -> maxpool2 -> conv(16->32)+BN -> LeakyRelu(0.1) -> maxpool2
    -> flatten -> fc(1568->64) -> Sigmoid -> fc(64->10)

Quantized by onnxruntime quantize_static (MinMax, first 1000 training images, per-channel int8
weights, uint8 activations) in both forms:
  mnist_act_qdq.onnx   QDQ: each activation sits between a DequantizeLinear and a
                       QuantizeLinear and runs in float (`DQ -> HardSwish -> Q`, ...)
  mnist_act_qop.onnx   QOperator: com.microsoft QLinearLeakyRelu / QLinearSigmoid, and a float
                       HardSwish between DequantizeLinear and QuantizeLinear
References in expected/ (onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, full test set) through
generate.py's functions, so the Rust fixture tests pick them up unchanged.

    /opt/qfpy/bin/python onnx-models/generate_float_ops.py [--data /work/shared/data] [--skip-train]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "mnist_act"
HP = dict(dataset="mnist", arch=NAME, seed=11, epochs=2, batch=128, lr=1e-3, lr_final_epochs=1,
          lr_final=1e-4, optimizer="Adam", weight_decay=0.0)
SPECS = [
    dict(name=f"{NAME}_qdq", src=NAME, fmt="QDQ", per_channel=True, act="u8", pre_opt=False,
         note="HardSwish, LeakyRelu, Sigmoid in float between DequantizeLinear and QuantizeLinear"),
    dict(name=f"{NAME}_qop", src=NAME, fmt="QOperator", per_channel=True, act="u8", pre_opt=False,
         note="QLinearLeakyRelu, QLinearSigmoid; HardSwish in float"),
]


def build():
    import torch.nn as nn

    class ActMix(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.act1 = nn.Hardswish()
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(32)
            self.act2 = nn.LeakyReLU(0.1)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(32 * 7 * 7, 64)
            self.act3 = nn.Sigmoid()
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            x = self.pool(self.act1(self.bn1(self.conv1(x))))
            x = self.pool(self.act2(self.bn2(self.conv2(x))))
            return self.fc2(self.act3(self.fc1(x.flatten(1))))

    return ActMix


def main() -> None:
    gen.extra_fixture_main(__doc__, NAME, HP, build, SPECS)


if __name__ == "__main__":
    main()
