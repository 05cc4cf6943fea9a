#!/usr/bin/env python3
"""A ShuffleNet-style CNN: PReLU, grouped 1x1 convs, a channel shuffle and a mean over
`x.view(N, C, -1)`, the idioms of the small networks edge classifiers are built from:

    conv(1->32, 3, s2)-PReLU(32)                              28x28 -> 14x14
    -> gconv1x1(32->64, groups 4)-ReLU
    -> channel shuffle: x.view(N, 4, 16, H, W).transpose(1, 2).contiguous().view(N, 64, H, W)
    -> dwconv3x3(64)-BN -> gconv1x1(64->64, groups 4)-BN, + the shuffled input (residual), ReLU
    -> maxpool2                                               -> 7x7
    -> x.view(N, 64, -1).mean(-1) -> fc(64->10)

The exporter (opset 13, dynamic axis N) writes the shuffle as Reshape (to rank 5) -> Transpose
-> Reshape and the pooling as Reshape -> ReduceMean over the last axis; onnxruntime quantizes
Reshape and Transpose (a Q/DQ pair around each in QDQ, on the uint8 tensor in QOperator) and
leaves PRelu and ReduceMean in float between DequantizeLinear and QuantizeLinear. qforget moves
the values with Permute layers (src/onnx/reshape.rs).

Trained on Fashion-MNIST, quantized by onnxruntime quantize_static (MinMax, first 1000 training
images, per-channel int8 weights, uint8 activations) in both formats:
  fmnist_shuffle_qdq.onnx  QDQ
  fmnist_shuffle_qop.onnx  QOperator
References in expected/ (onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, full test set) through
generate.py's functions, so the Rust fixture tests pick them up unchanged.

    /opt/qfpy/bin/python onnx-models/generate_shuffle.py [--data /work/shared/data] [--skip-train]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "fmnist_shuffle"
HP = dict(dataset="fashion-mnist", arch=NAME, seed=53, epochs=10, batch=128, lr=2e-3, lr_final_epochs=1,
          lr_final=2e-4, optimizer="Adam", weight_decay=0.0)
NOTE = "PReLU, grouped 1x1 convs, channel shuffle (Reshape/Transpose), view(N, C, -1).mean(-1)"
SPECS = [
    dict(name=f"{NAME}_qdq", src=NAME, fmt="QDQ", per_channel=True, act="u8", pre_opt=False, note=NOTE),
    dict(name=f"{NAME}_qop", src=NAME, fmt="QOperator", per_channel=True, act="u8", pre_opt=False, note=NOTE),
]


def build():
    import torch.nn as nn
    import torch.nn.functional as F

    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 32, 3, 2, 1)
            self.act = nn.PReLU(32)
            self.g1 = nn.Conv2d(32, 64, 1, groups=4)
            self.dw = nn.Conv2d(64, 64, 3, 1, 1, groups=64, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.g2 = nn.Conv2d(64, 64, 1, groups=4, bias=False)
            self.bn2 = nn.BatchNorm2d(64)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.act(self.stem(x))
            x = F.relu(self.g1(x))
            n, c, h, w = x.shape
            x = x.view(n, 4, c // 4, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
            x = F.relu(self.bn2(self.g2(self.bn1(self.dw(x)))) + x)
            x = F.max_pool2d(x, 2)
            return self.fc(x.view(x.size(0), x.size(1), -1).mean(-1))

    return Shuffle


def main() -> None:
    gen.extra_fixture_main(__doc__, NAME, HP, build, SPECS)


if __name__ == "__main__":
    main()
