#!/usr/bin/env python3
"""A fixture whose output is quantized class probabilities, exported the way a deployment
script often does it: fixed batch 1, `x.view(x.size(0), -1)`, a Softmax at the end.

    conv(1->8)-ReLU-maxpool2 -> conv(8->16)-ReLU-maxpool2 -> view -> fc(784->64)-ReLU
    -> fc(64->10) -> Softmax

Trained on MNIST on the logits (cross-entropy), exported with a fixed input of [1,1,28,28]
(opset 13, no dynamic axes) and quantized by onnxruntime quantize_static with its defaults for
QDQ (MinMax on the first 1000 training images fed one at a time, per-tensor int8 weights,
uint8 activations). onnxruntime's QDQ quantizer quantizes the Softmax too, so the model ends in
`DQ(logits) -> Softmax -> QuantizeLinear -> DequantizeLinear`: its output is the probabilities
on a grid of 1/256, and a runtime's top-1 is taken on them (the first class on ties).

The same float model quantized in QOperator form gives `mnist_softmax_b1_qop.onnx`, whose
classifier ends in com.microsoft `QLinearSoftmax → DequantizeLinear`.

References in expected/softmax/ (kept apart from expected/, whose files are logits), from
onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, one image per run, the full test set (the same
files for `_qop`):
  mnist_softmax_b1_qdq.logits.npy       uint8 [10000,10]: the quantized logits (the Softmax's input)
  mnist_softmax_b1_qdq.probs.npy        uint8 [10000,10]: the quantized probabilities (the output)
  mnist_softmax_b1_qdq.predictions.txt  first argmax of the probabilities
  mnist_softmax_b1_qdq.json             parameters, accuracy, ties

    /opt/qfpy/bin/python onnx-models/generate_softmax.py [--data /work/shared/data] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as gen  # noqa: E402

NAME = "mnist_softmax_b1"
OUT_DIR = HERE / "expected" / "softmax"
HP = dict(dataset="mnist", seed=19, epochs=2, batch=128, lr=1e-3)


def build():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class ViewNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 16, 3, padding=1)
            self.f1 = nn.Linear(16 * 7 * 7, 64)
            self.f2 = nn.Linear(64, 10)
            self.softmax = True

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.c1(x)), 2)
            x = F.max_pool2d(F.relu(self.c2(x)), 2)
            z = self.f2(F.relu(self.f1(x.view(x.size(0), -1))))
            return F.softmax(z, dim=1) if self.softmax else z

    return ViewNet()


def train(model, data):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(HP["seed"])
    xtr, ytr = data["train"]
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    opt = torch.optim.Adam(model.parameters(), lr=HP["lr"])
    gen_ = torch.Generator().manual_seed(HP["seed"])
    model.softmax = False
    for epoch in range(HP["epochs"]):
        model.train()
        perm = torch.randperm(len(xt), generator=gen_)
        for i in range(0, len(perm), HP["batch"]):
            idx = perm[i : i + HP["batch"]]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  epoch {epoch + 1}: test {gen.torch_accuracy(model, *data['test']):.4f}", flush=True)
    model.softmax = True
    model.eval()


def export(model, path: Path) -> None:
    import onnx
    import torch

    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(path), opset_version=13,
                      do_constant_folding=True, input_names=["input"], output_names=["probs"])
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def quantize(f32: Path, out: Path, xcal: np.ndarray, fmt: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = iter([{"input": xcal[i : i + 1]} for i in range(len(xcal))])

    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(f32), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)


def params(m, dq_output: str):
    """scale and zero point of the DequantizeLinear producing `dq_output`."""
    from onnx import numpy_helper

    inits = gen.init_map(m)
    node = next(n for n in m.graph.node if dq_output in n.output)
    assert node.op_type == "DequantizeLinear", node.op_type
    return np.float32(numpy_helper.to_array(inits[node.input[1]])), numpy_helper.to_array(inits[node.input[2]])


def softmax_input(m):
    """The Softmax's float input (QDQ: a DequantizeLinear output) and its parameters, or for
    QLinearSoftmax its quantized input with the scale and zero point the node states."""
    from onnx import numpy_helper

    inits = gen.init_map(m)
    node = next(n for n in m.graph.node if n.op_type in ("Softmax", "QLinearSoftmax"))
    if node.op_type == "Softmax":
        return (node.input[0], *params(m, node.input[0]))
    return (node.input[0], np.float32(numpy_helper.to_array(inits[node.input[1]])),
            numpy_helper.to_array(inits[node.input[2]]))


def write_reference(model_path: Path, data: dict) -> dict:
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(model_path))
    logits_name, ls, lz = softmax_input(m)
    ps, pz = params(m, m.graph.output[0].name)
    quantized_input = next(n for n in m.graph.node if logits_name in n.output).op_type != "DequantizeLinear"
    # Run with the Softmax's input as a second output.
    probe = onnx.load(str(model_path))
    elem = onnx.TensorProto.UINT8 if quantized_input else onnx.TensorProto.FLOAT
    probe.graph.output.append(onnx.helper.make_tensor_value_info(logits_name, elem, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    xte, yte = data["test"]
    out_name = m.graph.output[0].name
    outs = [sess.run([out_name, logits_name], {"input": xte[i : i + 1]}) for i in range(len(xte))]
    probs = gen.requantize(np.concatenate([o[0] for o in outs]), ps, pz)
    raw = np.concatenate([o[1] for o in outs])
    logits = raw.astype(lz.dtype) if quantized_input else gen.requantize(raw, ls, lz)
    pred = gen.first_argmax(probs)
    stem = model_path.stem
    OUT_DIR.mkdir(exist_ok=True)
    np.save(OUT_DIR / f"{stem}.probs.npy", probs)
    np.save(OUT_DIR / f"{stem}.logits.npy", logits)
    (OUT_DIR / f"{stem}.predictions.txt").write_text("".join(f"{p}\n" for p in pred))
    rec = {
        "model": model_path.name,
        "dataset": HP["dataset"],
        "split": "test",
        "n": int(len(xte)),
        "reference": f"onnxruntime {ort.__version__} ORT_DISABLE_ALL, one image per run",
        "logits_scale": float(ls),
        "logits_zero_point": int(lz),
        "probs_scale": float(ps),
        "probs_zero_point": int(pz),
        "int8_accuracy": float((pred == yte).mean()),
        "probs_ties": gen.n_ties(probs),
        "logits_ties": gen.n_ties(logits),
        "top1_probs_vs_logits_differ": int((pred != gen.first_argmax(logits)).sum()),
        "sha256": gen.sha256_file(model_path),
        "ops": gen.op_histogram(m),
        "input_shape": [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim],
        "training": dict(HP, optimizer="Adam", loss="cross-entropy on the logits"),
    }
    (OUT_DIR / f"{stem}.json").write_text(json.dumps(rec, indent=2) + "\n")
    print(stem, json.dumps({k: rec[k] for k in ("int8_accuracy", "probs_ties", "logits_ties",
                                                "top1_probs_vs_logits_differ", "ops")}))
    return rec


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
    data = gen.load_dataset(root, HP["dataset"])
    f32 = HERE / f"{NAME}_f32.onnx"
    if not args.skip_train:
        import torch

        torch.set_num_threads(2)
        torch.use_deterministic_algorithms(True)
        model = build()
        train(model, data)
        export(model, f32)
    for fmt in ("QDQ", "QOperator"):
        path = HERE / f"{NAME}_{'qdq' if fmt == 'QDQ' else 'qop'}.onnx"
        quantize(f32, path, data["train"][0][: gen.CALIB_N], fmt)
        write_reference(path, data)
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
