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

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"))
    ap.add_argument("--skip-train", action="store_true", help="reuse the committed float model")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    assert onnx.__version__ == "1.23.2", onnx.__version__
    assert ort.__version__ == "1.32.0", ort.__version__
    t0 = time.time()
    root = Path(args.data)
    gen.verify_data(root)
    data = {"mnist": gen.load_dataset(root, "mnist")}
    gen.FLOAT_DATASET[NAME] = "mnist"
    f32 = HERE / f"{NAME}_f32.onnx"

    if not args.skip_train:
        import torch

        torch.set_num_threads(2)
        torch.use_deterministic_algorithms(True)
        model, rec = gen.train_net(NAME, HP, data, {NAME: build()})
        rec["_software"] = dict(torch=torch.__version__, numpy=np.__version__, onnx=onnx.__version__,
                                onnxruntime=ort.__version__, python=sys.version.split()[0])
        gen.export_onnx(model, f32)
        x = data["mnist"]["test"][0][:500]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        err = float(np.abs(ref - gen.ort_run(f32, x)).max())
        assert err < 1e-3, err
        print(f"  {f32.name} vs torch: max |d| {err:.2e}")
        (gen.EXPECTED / f"{NAME}.training.json").write_text(json.dumps(rec, indent=2) + "\n")

    xte, yte = data["mnist"]["test"]
    pred = gen.first_argmax(gen.ort_run(f32, xte))
    float_acc = {NAME: float((pred == yte).mean()), "_pred": {NAME: pred}}
    print(f"float {NAME}: ORT test acc {float_acc[NAME]:.4f}; ops {gen.op_histogram(onnx.load(str(f32)))}")
    for spec in SPECS:
        qinfo = gen.quantize(spec, data)
        gen.reference(spec, data, qinfo, float_acc)
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
