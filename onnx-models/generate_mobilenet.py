#!/usr/bin/env python3
"""The MobileNetV2-style fixture (issue 10, item 4): depthwise 3x3 convs, ReLU6, inverted residual
blocks with a linear bottleneck (residual Add without activation), GlobalAveragePool, Gemm;
BatchNorm folded by the exporter; trained on Fashion-MNIST (full 60k training set).

Writes, next to this script:
  fmnist_mnv2_f32.onnx     the float model (torch export, opset 17, BN folded)
  fmnist_mnv2_qdq.onnx     onnxruntime quantize_static: QDQ, per-channel int8 weights, uint8
                           activations, MinMax on the first 1000 training images (as generate.py)
and its references in expected/ (onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, full test set),
through the same functions as generate.py, so the Rust fixture tests pick it up unchanged.
NNCF's form of the same float model is made by generate_other_quantizers.py (its own venv).

    /opt/qfpy/bin/python onnx-models/generate_mobilenet.py [--data /work/shared/data]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "fmnist_mnv2"
HP = dict(dataset="fashion-mnist", arch=NAME, seed=7, epochs=3, batch=128, lr=2e-3, lr_final_epochs=1,
          lr_final=2e-4, optimizer="Adam", weight_decay=0.0)
SPEC = dict(name=f"{NAME}_qdq", src=NAME, fmt="QDQ", per_channel=True, act="u8", pre_opt=True,
            note="MobileNetV2-style: depthwise 3x3, ReLU6 (Clip), inverted residuals with linear bottleneck")


def build():
    import torch.nn as nn

    def cbr(cin, cout, k, s, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6())
        return layers

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = [] if expand == 1 else cbr(cin, hidden, 1, 1)
            layers += cbr(hidden, hidden, 3, stride, groups=hidden)  # depthwise
            layers += cbr(hidden, cout, 1, 1, act=False)  # linear bottleneck
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    class MobileNetV2Small(nn.Module):
        """stem conv 1->16 (28x28) -> IR(16,t1) -> IR(24,s2,t4) -> IR(24,t4, residual) ->
        IR(32,s2,t4) -> IR(32,t4, residual) -> conv1x1 32->96 -> GAP -> Gemm 96->10."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *cbr(1, 16, 3, 1),
                InvertedResidual(16, 16, 1, 1),
                InvertedResidual(16, 24, 2, 4),
                InvertedResidual(24, 24, 1, 4),
                InvertedResidual(24, 32, 2, 4),
                InvertedResidual(32, 32, 1, 4),
                *cbr(32, 96, 1, 1),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(96, 10)

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))

    return MobileNetV2Small


def main() -> None:
    gen.extra_fixture_main(__doc__, NAME, HP, build, [SPEC])


if __name__ == "__main__":
    main()
