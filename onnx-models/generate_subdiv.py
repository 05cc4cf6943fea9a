#!/usr/bin/env python3
"""A fixture with the Sub and the Div of two computed tensors (issue 10, item 2): an MNIST CNN
whose two parallel convolutions meet in a difference, divided by a gate of one of them.

    conv(1->8) -> Relu -> maxpool2 -> { a = conv_a(8->16), b = conv_b(8->16) }
    -> (a - b) / (1 + Sigmoid(b)) -> Relu -> maxpool2 -> flatten -> fc(784->10)

Quantized by onnxruntime quantize_static (MinMax, first 1000 training images, per-channel int8
weights, uint8 activations, QDQ) with Sub and Div added to its default operator types, so
both sit between DequantizeLinears of two activations and a QuantizeLinear:
  mnist_subdiv_qdq.onnx   `DQ a, DQ b -> Sub -> Q` and `DQ d, DQ g -> Div -> Q`
References in expected/ (onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, full test set) through
generate.py's functions, so the Rust fixture tests pick them up unchanged.

    /opt/qfpy/bin/python onnx-models/generate_subdiv.py [--data /work/shared/data] [--skip-train]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "mnist_subdiv"
HP = dict(dataset="mnist", arch=NAME, seed=13, epochs=2, batch=128, lr=2e-3, lr_final_epochs=1,
          lr_final=2e-4, optimizer="Adam", weight_decay=0.0)


def op_types() -> list:
    """onnxruntime's default operator types for QDQ, plus Sub and Div."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry) | {"Sub", "Div"})


SPECS = [
    dict(name=f"{NAME}_qdq", src=NAME, fmt="QDQ", per_channel=True, act="u8", pre_opt=False,
         op_types=op_types(),
         note="Sub and Div of two dequantized activations, each closed by a QuantizeLinear"),
]


def build():
    import torch
    import torch.nn as nn

    class SubDiv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv_a = nn.Conv2d(8, 16, 3, padding=1)
            self.conv_b = nn.Conv2d(8, 16, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(16 * 7 * 7, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv1(x)))
            a, b = self.conv_a(x), self.conv_b(x)
            y = (a - b) / (1 + torch.sigmoid(b))
            return self.fc(self.pool(torch.relu(y)).flatten(1))

    return SubDiv


def main() -> None:
    gen.extra_fixture_main(__doc__, NAME, HP, build, SPECS)


if __name__ == "__main__":
    main()
