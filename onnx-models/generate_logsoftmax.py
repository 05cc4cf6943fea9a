#!/usr/bin/env python3
"""PyTorch's classic MNIST example as users copy it: a network that ends in `F.log_softmax`,
flattens with `x.view(-1, 320)`, and has Dropout2d/Dropout (gone at export):

    conv(1->10, 5)-maxpool2-ReLU -> conv(10->20, 5)-Dropout2d-maxpool2-ReLU -> view(-1, 320)
    -> fc(320->50)-ReLU-Dropout -> fc(50->10) -> LogSoftmax

Trained on MNIST with the NLL loss, exported at opset 13 with a dynamic batch axis, quantized
by onnxruntime quantize_static (MinMax on the first 1000 training images, per-tensor int8
weights, uint8 activations) in both formats. onnxruntime quantizes neither LogSoftmax form, so
the model's output is float log-probabilities of dequantized logits:
  mnist_logsoftmax_qdq.onnx  ... -> QuantizeLinear -> DequantizeLinear -> LogSoftmax
  mnist_logsoftmax_qop.onnx  ... QGemm -> DequantizeLinear -> LogSoftmax

References in expected/logsoftmax/ (kept apart from expected/, whose outputs are the models'
own), from onnxruntime 1.32.0, ORT_DISABLE_ALL, one thread, the full test set:
  <stem>.logits.npy       uint8 [10000,10]: the LogSoftmax's input, requantized with the
                          parameters of the DequantizeLinear in front of it
  <stem>.predictions.txt  first argmax of onnxruntime's log-probabilities
  <stem>.json             parameters, accuracy, ties

    /opt/qfpy/bin/python onnx-models/generate_logsoftmax.py [--data /work/shared/data] [--skip-train]
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
import generate_softmax as gsm  # noqa: E402

NAME = "mnist_logsoftmax"
OUT_DIR = HERE / "expected" / "logsoftmax"
HP = dict(dataset="mnist", seed=47, epochs=2, batch=64, lr=1e-3)


def build():
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
            self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
            self.conv2_drop = nn.Dropout2d()
            self.fc1 = nn.Linear(320, 50)
            self.fc2 = nn.Linear(50, 10)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = x.view(-1, 320)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, training=self.training)
            return F.log_softmax(self.fc2(x), dim=1)

    return Net()


def train(model, data):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(HP["seed"])
    xt, yt = (torch.from_numpy(a) for a in data["train"])
    opt = torch.optim.Adam(model.parameters(), lr=HP["lr"])
    g = torch.Generator().manual_seed(HP["seed"])
    for epoch in range(HP["epochs"]):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(perm), HP["batch"]):
            idx = perm[i : i + HP["batch"]]
            loss = F.nll_loss(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        print(f"  epoch {epoch + 1}: test {gen.torch_accuracy(model, *data['test']):.4f}", flush=True)


def write_reference(model_path: Path, data: dict) -> dict:
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(model_path))
    node = next(n for n in m.graph.node if n.op_type == "LogSoftmax")
    assert m.graph.output[0].name == node.output[0], "LogSoftmax is the last node"
    logits_name = node.input[0]
    ls, lz = gsm.params(m, logits_name)
    probe = onnx.load(str(model_path))
    probe.graph.output.append(onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    xte, yte = data["test"]
    outs = [sess.run([node.output[0], logits_name], {"input": xte[i : i + 500]}) for i in range(0, len(xte), 500)]
    logp = np.concatenate([o[0] for o in outs])
    logits = gen.requantize(np.concatenate([o[1] for o in outs]), ls, lz)
    pred = gen.first_argmax(logp)
    stem = model_path.stem
    OUT_DIR.mkdir(exist_ok=True)
    np.save(OUT_DIR / f"{stem}.logits.npy", logits)
    (OUT_DIR / f"{stem}.predictions.txt").write_text("".join(f"{p}\n" for p in pred))
    rec = {
        "model": model_path.name,
        "dataset": HP["dataset"],
        "split": "test",
        "n": int(len(xte)),
        "reference": f"onnxruntime {ort.__version__} ORT_DISABLE_ALL, batches of 500",
        "logits_scale": float(ls),
        "logits_zero_point": int(lz),
        "int8_accuracy": float((pred == yte).mean()),
        "logits_ties": int(sum((r == r.max()).sum() > 1 for r in logits)),
        "top1_logprobs_vs_logits_differ": int((gen.first_argmax(logits) != pred).sum()),
        "ops": gen.op_histogram(m),
    }
    (OUT_DIR / f"{stem}.json").write_text(json.dumps(rec, indent=2) + "\n")
    print(stem, json.dumps({k: rec[k] for k in ("int8_accuracy", "logits_ties", "top1_logprobs_vs_logits_differ", "ops")}))
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
        torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(f32), opset_version=13, do_constant_folding=True,
                          input_names=["input"], output_names=["log_probs"],
                          dynamic_axes={"input": {0: "N"}, "log_probs": {0: "N"}})
        onnx.checker.check_model(onnx.load(str(f32)), full_check=True)
    for fmt in ("QDQ", "QOperator"):
        path = HERE / f"{NAME}_{'qdq' if fmt == 'QDQ' else 'qop'}.onnx"
        gsm.quantize(f32, path, data["train"][0][: gen.CALIB_N], fmt)
        write_reference(path, data)
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
