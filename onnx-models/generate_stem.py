#!/usr/bin/env python3
"""A ResNet-style stem with int8 *symmetric* activations (zero point 0), where an AveragePool's
output rounding depends on when the zero point is added:

    conv 7x7 s2 (1->16, no bias) -> BatchNorm -> ReLU -> MaxPool 3 s2 p1
    -> residual block: x + BN(conv 3x3 (16->16)) -> ReLU
    -> AveragePool 3 s2 p1 (count_include_pad=False) -> Flatten -> fc(256->10)

Trained on MNIST (BatchNorm folded by the exporter), quantized by onnxruntime quantize_static
(MinMax, first 1000 training images, per-tensor int8 weights, int8 activations with
ActivationSymmetric and WeightSymmetric) in both formats:
  mnist_stem_sym_qdq.onnx  DQ -> AveragePool -> Q on int8 with zero point 0: QuantizeLinear rounds
                           avg/s and adds the zero point after (qforget added int8's storage
                           shift of 128 first and rounded f32 near-ties the other way: 15 of
                           10,000 top-1 differed on an unseen model of this shape)
  mnist_stem_sym_qop.onnx  QLinearAveragePool on int8 (the file's zero point inside the rounding)
References in expected/ (onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, full test set) through
generate.py's functions, so the Rust fixture tests pick them up unchanged.

    /opt/qfpy/bin/python onnx-models/generate_stem.py [--data /work/shared/data] [--skip-train]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "mnist_stem"
HP = dict(dataset="mnist", arch=NAME, seed=41, epochs=2, batch=128, lr=1e-3, lr_final_epochs=1,
          lr_final=1e-4, optimizer="Adam", weight_decay=0.0)
SYM = {"ActivationSymmetric": True, "WeightSymmetric": True}
SPECS = [
    dict(name=f"{NAME}_sym_qdq", src=NAME, fmt="QDQ", per_channel=False, act="s8", pre_opt=False,
         extra_options=SYM, note="int8 symmetric activations: AveragePool between Q/DQ pairs on zero point 0"),
    dict(name=f"{NAME}_sym_qop", src=NAME, fmt="QOperator", per_channel=False, act="s8", pre_opt=False,
         extra_options=SYM, note="int8 symmetric activations: QLinearAveragePool, QLinearAdd"),
]


def build():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Stem(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 16, 7, 2, 3, bias=False)
            self.bn = nn.BatchNorm2d(16)
            self.p = nn.MaxPool2d(3, 2, 1)
            self.c2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.ap = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
            self.fc = nn.Linear(16 * 4 * 4, 10)

        def forward(self, x):
            x = self.p(F.relu(self.bn(self.c(x))))
            x = F.relu(x + self.bn2(self.c2(x)))
            return self.fc(torch.flatten(self.ap(x), 1))

    return Stem


def main() -> None:
    gen.extra_fixture_main(__doc__, NAME, HP, build, SPECS)


if __name__ == "__main__":
    main()
