#!/usr/bin/env python3
"""A CNN whose flatten is shape arithmetic on the batch size, as a training script often writes
it and PyTorch exports it with a dynamic batch axis:

    conv(1->8)-ReLU-maxpool2 -> conv(8->16)-ReLU-maxpool2
    -> x.reshape(x.size(0), x.size(1) * x.size(2) * x.size(3)) -> fc(784->64)-ReLU
    -> x.view(x.size(0), -1) -> fc(64->10)

The exporter (opset 13, dynamic axis N) writes each flatten as
`Shape -> Gather -> (Mul) -> Unsqueeze -> Concat -> Reshape`, not a constant target shape, and
onnxruntime's quantize_static (no pre-processing) leaves those int64 nodes beside the quantized
tensors. qforget evaluates the chain at import (src/onnx/shape_fold.rs).

Trained on MNIST, quantized by onnxruntime quantize_static (MinMax, first 1000 training
images, per-channel int8 weights, uint8 activations) in both formats:
  mnist_dynview_qdq.onnx  QDQ
  mnist_dynview_qop.onnx  QOperator
References in expected/ (onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, full test set) through
generate.py's functions, so the Rust fixture tests pick them up unchanged.

    /opt/qfpy/bin/python onnx-models/generate_dynview.py [--data /work/shared/data] [--skip-train]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "mnist_dynview"
HP = dict(dataset="mnist", arch=NAME, seed=43, epochs=2, batch=128, lr=1e-3, lr_final_epochs=1,
          lr_final=1e-4, optimizer="Adam", weight_decay=0.0)
SPECS = [
    dict(name=f"{NAME}_qdq", src=NAME, fmt="QDQ", per_channel=True, act="u8", pre_opt=False,
         note="flatten as Shape/Gather/Mul/Unsqueeze/Concat/Reshape on the batch size"),
    dict(name=f"{NAME}_qop", src=NAME, fmt="QOperator", per_channel=True, act="u8", pre_opt=False,
         note="flatten as Shape/Gather/Mul/Unsqueeze/Concat/Reshape on the batch size"),
]


def build():
    import torch.nn as nn
    import torch.nn.functional as F

    class DynView(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 8, 3, 1, 1)
            self.c2 = nn.Conv2d(8, 16, 3, 1, 1)
            self.f1 = nn.Linear(16 * 7 * 7, 64)
            self.f2 = nn.Linear(64, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.c1(x)), 2)
            x = F.max_pool2d(F.relu(self.c2(x)), 2)
            x = x.reshape(x.size(0), x.size(1) * x.size(2) * x.size(3))
            x = F.relu(self.f1(x))
            return self.f2(x.view(x.size(0), -1))

    return DynView


def main() -> None:
    gen.extra_fixture_main(__doc__, NAME, HP, build, SPECS)


if __name__ == "__main__":
    main()
