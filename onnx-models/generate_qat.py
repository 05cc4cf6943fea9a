#!/usr/bin/env python3
"""Fixtures quantized by PyTorch itself (quantization-aware training), not by onnxruntime.

A residual MNIST CNN with BatchNorm, trained with torch 1.13's eager-mode QAT (QuantStub /
DeQuantStub, fuse_modules_qat, `get_default_qat_qconfig("fbgemm", version=0)`: activations
0..127 (`reduce_range`), per-channel symmetric int8 weights), exported two ways at opset 13:

  mnist_res_qat.onnx      the fake-quantized model (eval, observers and BN statistics frozen):
                          float weights -> QuantizeLinear -> DequantizeLinear -> Conv, then
                          Div(gamma/sigma) -> BatchNormalization -> Relu -> QuantizeLinear ->
                          Clip(max=127) -> DequantizeLinear (the 0..127 range); the pooled
                          features reach the classifier unquantized; an unfused nn.ReLU between
                          the two Linear layers is a float Relu of a dequantized tensor.
  mnist_res_qat_int.onnx  the converted (integer) model, torch.onnx.export of Q.convert(...):
                          int8 weights and int32 biases in Constant nodes, a bias zero point made
                          by ConstantOfShape -> Cast, a no-op Cast(to=UINT8) between each
                          QuantizeLinear and DequantizeLinear.
  mnist_res_qat_f32.onnx  the same trained network with fake quantization switched off (the
                          float accuracy the references quote).

and their references in expected/ through generate_other_quantizers.reference (onnxruntime
1.32.0, ORT_DISABLE_ALL, one thread, full test set).

    /opt/qfpy/bin/python onnx-models/generate_qat.py [--data /work/shared/data]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402
import generate_other_quantizers as goq  # noqa: E402

NAME = "mnist_res_qat"
EPOCHS, BATCH, LR, SEED = 2, 128, 1e-3, 5


def build():
    import torch.nn as nn
    import torch.ao.quantization as Q

    class ResQat(nn.Module):
        """stem 3x3 conv+BN+ReLU -> MaxPool -> residual block (two 3x3 conv+BN, add_relu) ->
        two stride-2 conv+BN+ReLU -> AdaptiveAvgPool -> Linear 64->32 -> ReLU (unfused) ->
        Linear 32->10."""

        def __init__(self):
            super().__init__()
            self.quant = Q.QuantStub()
            self.stem, self.stem_bn, self.stem_relu = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.c1, self.bn1, self.relu1 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
            self.c2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
            self.skip = nn.quantized.FloatFunctional()
            self.d1, self.d1_bn, self.d1_relu = nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
            self.d2, self.d2_bn, self.d2_relu = nn.Conv2d(32, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
            self.gap, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
            self.fc1, self.fc_relu, self.fc2 = nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
            self.dequant = Q.DeQuantStub()

        def forward(self, x):
            x = self.pool(self.stem_relu(self.stem_bn(self.stem(self.quant(x)))))
            h = self.bn2(self.c2(self.relu1(self.bn1(self.c1(x)))))
            x = self.skip.add_relu(x, h)
            x = self.d2_relu(self.d2_bn(self.d2(self.d1_relu(self.d1_bn(self.d1(x))))))
            return self.dequant(self.fc2(self.fc_relu(self.fc1(self.flatten(self.gap(x))))))

        def fuse(self):
            Q.fuse_modules_qat(self, [["stem", "stem_bn", "stem_relu"], ["c1", "bn1", "relu1"], ["c2", "bn2"],
                                      ["d1", "d1_bn", "d1_relu"], ["d2", "d2_bn", "d2_relu"]], inplace=True)

    return ResQat


def export(model, path: Path) -> None:
    import torch

    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(path), opset_version=13, do_constant_folding=True,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i:i + 1000])).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred.numpy() == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"))
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import torch
    import torch.ao.quantization as Q
    import torch.nn.functional as F

    assert onnx.__version__ == "1.23.2", onnx.__version__
    assert ort.__version__ == "1.32.0", ort.__version__
    t0 = time.time()
    root = Path(args.data)
    gen.verify_data(root)
    data = {"mnist": gen.load_dataset(root, "mnist")}
    (xtr, ytr), (xte, yte) = data["mnist"]["train"], data["mnist"]["test"]
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    model = build()()
    model.train()
    model.fuse()
    model.qconfig = Q.get_default_qat_qconfig("fbgemm", version=0)
    Q.prepare_qat(model, inplace=True)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  epoch {epoch + 1}/{EPOCHS}: loss {float(loss):.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    model.apply(Q.disable_observer)
    model.apply(torch.nn.intrinsic.qat.freeze_bn_stats)
    print(f"  torch fake-quant test acc {accuracy(model, xte, yte):.4f}", flush=True)

    export(model, HERE / f"{NAME}.onnx")
    floating = copy.deepcopy(model)
    floating.apply(Q.disable_fake_quant)
    export(floating, HERE / f"{NAME}_f32.onnx")
    torch.backends.quantized.engine = "onednn"  # this torch build has no fbgemm engine
    converted = Q.convert(copy.deepcopy(model), inplace=False)
    print(f"  torch converted test acc {accuracy(converted, xte, yte):.4f}", flush=True)
    export(converted, HERE / f"{NAME}_int.onnx")

    how = {"tool": f"torch {torch.__version__} eager-mode QAT", "qconfig": "fbgemm, version 0",
           "epochs": EPOCHS, "batch": BATCH, "lr": LR, "seed": SEED}
    goq.reference(NAME, "mnist", data, {**how, "export": "fake-quantized model"}, f"{NAME}_f32.onnx")
    goq.reference(f"{NAME}_int", "mnist", data, {**how, "export": "converted model"}, f"{NAME}_f32.onnx")
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
