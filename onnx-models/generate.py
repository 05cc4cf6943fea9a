#!/usr/bin/env python3
"""Regenerate every ONNX fixture of qforget and its reference outputs.

    bash onnx-models/setup_env.sh                 # once: venv /opt/qfpy (torch + onnx + onnxruntime)
    /opt/qfpy/bin/python onnx-models/generate.py  # everything: train, export, quantize, reference

Options:
    --data DIR      idx.gz datasets (default $QFORGET_SRC_DATA or /work/shared/data); must hold
                    {mnist,fashion-mnist}/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz and a
                    SHA256SUMS file, which is checked first.
    --skip-train    reuse the committed *_f32.onnx files and expected/training.json instead of
                    training again (quantization and references are always redone).

Steps (all deterministic: fixed seeds, 2 torch threads, single-threaded onnxruntime):
 1. verify the datasets against SHA256SUMS, read them (pixel = byte / 255, no normalisation);
 2. train the float networks with torch 1.13 (CPU) and export them to ONNX opset 17, dynamic batch,
    eval mode, constant folding (BN folded into Conv, except for the *_bn variant);
 3. onnxruntime.quantization: quant_pre_process, then quantize_static with MinMax calibration on the
    first 1000 training images of the model's dataset (inside data/'s 10k bundle);
 4. run the full 10k test set through onnxruntime 1.32.0 with ORT_DISABLE_ALL, single thread, and
    write expected/<model>.{logits.npy,json,predictions.txt,graph.txt};
 5. cross-check QOperator models against their QDQ siblings, and update the table in README.md
    (keeping whatever the "qforget eval" column holds).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

# OpenMP threads that spin while waiting make torch 10x slower when the other core is busy (a
# cargo build beside us); passive waiting costs nothing when the machine is idle. Set before torch
# is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected"
OPSET = 17
CALIB_N = 1000  # first CALIB_N training images of the model's dataset
CALIB_BATCH = 100
REF_BATCH = 1000

# ----------------------------------------------------------------------------------------------
# data


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_data(root: Path) -> None:
    sums = root / "SHA256SUMS"
    n = 0
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split()
        got = sha256_file(root / name)
        if got != digest:
            sys.exit(f"sha256 mismatch for {root / name}: {got} != {digest}")
        n += 1
    for ds in ("mnist", "fashion-mnist"):
        for f in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
            p = f"{ds}/{f}-ubyte.gz"
            if p not in sums.read_text():
                sys.exit(f"{p} is not listed in {sums}")
    print(f"data: {n} files match {sums}")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, f"{path}: not an unsigned-byte idx file"
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    assert arr.size == int(np.prod(dims)), f"{path}: size mismatch"
    return arr.reshape(dims)


def load_dataset(root: Path, name: str) -> dict:
    d = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(root / name / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(root / name / f"{prefix}-labels-idx1-ubyte.gz")
        assert x.shape[0] == y.shape[0]
        # the input convention of every model: float32 NCHW [N,1,28,28], pixel = byte / 255
        d[split] = ((x.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28), y.astype(np.int64))
    return d


# ----------------------------------------------------------------------------------------------
# float networks (torch)


def build_torch_models():
    import torch
    import torch.nn as nn

    class FmnistCNN(nn.Module):
        """conv(1->16)-BN-act-maxpool2 -> conv(16->32)-BN-act-maxpool2 -> flatten -> fc128-act -> fc10."""

        def __init__(self, act=nn.ReLU):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.act1 = act()
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(32)
            self.act2 = act()
            self.pool2 = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(32 * 7 * 7, 128)
            self.act3 = act()
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = self.pool1(self.act1(self.bn1(self.conv1(x))))
            x = self.pool2(self.act2(self.bn2(self.conv2(x))))
            return self.fc2(self.act3(self.fc1(self.flatten(x))))

    class MnistRes(nn.Module):
        """stem conv(1->16)-BN-ReLU-maxpool2 -> residual block (16ch, 14x14, identity skip via Add,
        then ReLU) -> conv(16->32, stride 2)-BN-ReLU (7x7) -> conv(32->64, stride 2)-BN-ReLU (4x4)
        -> GlobalAveragePool -> flatten -> fc10. (With only the first stride-2 conv the receptive
        field before the global pool is 16 px and the net stalls near 98.3 %.)"""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(16)
            self.pool = nn.MaxPool2d(2)
            self.res_conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.res_bn1 = nn.BatchNorm2d(16)
            self.res_conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.res_bn2 = nn.BatchNorm2d(16)
            self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
            self.down_bn = nn.BatchNorm2d(32)
            self.down2 = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)
            self.down2_bn = nn.BatchNorm2d(64)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.stem_bn(self.stem(x))))
            h = torch.relu(self.res_bn1(self.res_conv1(x)))
            h = self.res_bn2(self.res_conv2(h))
            x = torch.relu(x + h)
            x = torch.relu(self.down_bn(self.down(x)))
            x = torch.relu(self.down2_bn(self.down2(x)))
            return self.fc(self.flatten(self.gap(x)))

    class MnistMLP(nn.Module):
        """AveragePool 2x2 on the input -> flatten (196) -> x @ W1 + b1 -> ReLU -> h @ W2 + b2.

        Written with explicit parameters and `@` so that the export gives MatMul + Add, not Gemm.
        count_include_pad=False keeps torch from emitting a (zero) Pad before AveragePool."""

        def __init__(self, hidden=256):
            super().__init__()
            self.pool = nn.AvgPool2d(2, count_include_pad=False)
            self.w1 = nn.Parameter(torch.empty(196, hidden))
            self.b1 = nn.Parameter(torch.zeros(hidden))
            self.w2 = nn.Parameter(torch.empty(hidden, 10))
            self.b2 = nn.Parameter(torch.zeros(10))
            nn.init.kaiming_uniform_(self.w1.T, a=5**0.5)  # same init as nn.Linear
            nn.init.kaiming_uniform_(self.w2.T, a=5**0.5)
            nn.init.uniform_(self.b1, -(196**-0.5), 196**-0.5)
            nn.init.uniform_(self.b2, -(hidden**-0.5), hidden**-0.5)

        def forward(self, x):
            h = torch.relu(self.pool(x).flatten(1) @ self.w1 + self.b1)
            return h @ self.w2 + self.b2

    return {
        "fmnist_cnn": lambda: FmnistCNN(nn.ReLU),
        "fmnist_cnn_relu6": lambda: FmnistCNN(nn.ReLU6),
        "mnist_res": MnistRes,
        "mnist_mlp_matmul": MnistMLP,
    }


# name -> (dataset, constructor key, hyper-parameters)
FLOAT_NETS = {
    "fmnist_cnn": dict(dataset="fashion-mnist", arch="fmnist_cnn", seed=1, epochs=6, batch=128, lr=1e-3,
                       lr_final_epochs=1, lr_final=1e-4, optimizer="Adam", weight_decay=0.0),
    "fmnist_cnn_relu6": dict(dataset="fashion-mnist", arch="fmnist_cnn_relu6", seed=2, epochs=4, batch=128,
                             lr=1e-3, lr_final_epochs=1, lr_final=1e-4, optimizer="Adam", weight_decay=0.0),
    "mnist_res": dict(dataset="mnist", arch="mnist_res", seed=3, epochs=5, batch=128, lr=1e-3,
                      lr_final_epochs=1, lr_final=1e-4, optimizer="Adam", weight_decay=0.0),
    "mnist_mlp_matmul": dict(dataset="mnist", arch="mnist_mlp_matmul", seed=4, epochs=8, batch=128, lr=1e-3,
                             lr_final_epochs=2, lr_final=1e-4, optimizer="Adam", weight_decay=0.0),
}
# float graphs derived from a trained net without training again
DERIVED_FLOAT = {"fmnist_cnn_bn": dict(from_net="fmnist_cnn", how="same weights as fmnist_cnn, exported with "
                                        "training=TrainingMode.PRESERVE so Conv and BatchNormalization stay apart")}


def torch_accuracy(model, x, y, batch=2000):
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(x[i : i + batch]))
            correct += int((logits.argmax(1).numpy() == y[i : i + batch]).sum())
    return correct / len(x)


def train_net(name: str, hp: dict, data: dict, ctors: dict):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(hp["seed"])
    np.random.seed(hp["seed"])
    model = ctors[hp["arch"]]()
    xtr, ytr = data[hp["dataset"]]["train"]
    xte, yte = data[hp["dataset"]]["test"]
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    gen = torch.Generator().manual_seed(hp["seed"])
    log = []
    t0 = time.time()
    for epoch in range(hp["epochs"]):
        lr = hp["lr_final"] if epoch >= hp["epochs"] - hp["lr_final_epochs"] else hp["lr"]
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        tot, n = 0.0, 0
        for i in range(0, len(perm), hp["batch"]):
            idx = perm[i : i + hp["batch"]]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss) * len(idx)
            n += len(idx)
        te = torch_accuracy(model, xte, yte)
        log.append(dict(epoch=epoch + 1, lr=lr, train_loss=round(tot / n, 5), test_acc=te))
        print(f"  {name} epoch {epoch + 1}/{hp['epochs']} lr {lr:g} loss {tot / n:.4f} test {te:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    rec = dict(hp)
    rec.update(
        epochs_log=log,
        train_accuracy=torch_accuracy(model, xtr, ytr),
        test_accuracy=torch_accuracy(model, xte, yte),
        train_seconds=round(time.time() - t0, 1),
        n_train=len(xtr),
        loss="cross-entropy",
        augmentation="none",
        input="float32 NCHW [N,1,28,28], pixel = byte/255",
        framework="torch " + torch.__version__,
    )
    return model, rec


# ----------------------------------------------------------------------------------------------
# ONNX export and clean-up


def export_onnx(model, path: Path, preserve_bn: bool = False) -> None:
    import onnx
    import torch

    model.eval()
    kwargs = {}
    if preserve_bn:
        # EVAL (the default) runs torch's eval peephole, which folds BN into the Conv weights;
        # PRESERVE keeps BatchNormalization (training_mode=0 since the module is in eval mode).
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "m.onnx"
        torch.onnx.export(
            model, torch.zeros(1, 1, 28, 28), str(tmp), opset_version=OPSET, do_constant_folding=True,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, **kwargs,
        )
        m = onnx.load(str(tmp))
    tidy_float_graph(m)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def tidy_float_graph(m) -> None:
    """Cosmetic, function-preserving clean-up of a torch export:
    - Identity nodes fed by an initializer (torch dedups equal-valued initializers, e.g. BN stats)
      become initializers of their own;
    - initializers torch named 'onnx::Conv_17' get the name of the layer they belong to
      ('conv1.weight', 'conv1.bias'), since qforget keys weight deltas by initializer name."""
    import onnx
    from onnx import numpy_helper

    g = m.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            t = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0])
            g.initializer.append(t)
            inits[t.name] = t
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)

    used = {i for n in g.node for i in n.input}
    for t in list(g.initializer):
        if t.name not in used:
            g.initializer.remove(t)

    rename = {}
    taken = {t.name for t in g.initializer}
    for node in g.node:
        layer = node.name.strip("/").rsplit("/", 1)[0] if "/" in node.name.strip("/") else node.name.strip("/")
        layer = layer.replace("/", ".")
        for slot, inp in enumerate(node.input):
            if inp.startswith("onnx::") and inp in inits and inp not in rename:
                role = {1: "weight", 2: "bias"}.get(slot, f"in{slot}")
                new = f"{layer}.{role}"
                while new in taken:
                    new += "_"
                rename[inp] = new
                taken.add(new)
    for t in g.initializer:
        t.name = rename.get(t.name, t.name)
    for node in g.node:
        for k, inp in enumerate(node.input):
            if inp in rename:
                node.input[k] = rename[inp]
    for vi in g.value_info:
        vi.name = rename.get(vi.name, vi.name)
    # drop stale value_info; shape inference recomputes it
    del g.value_info[:]
    m.CopyFrom(onnx.shape_inference.infer_shapes(m))


# ----------------------------------------------------------------------------------------------
# quantization (onnxruntime)

# name, float source, format, per-channel weights, activation type, quant_pre_process optimization
QUANT_MODELS = [
    dict(name="fmnist_cnn_qdq", src="fmnist_cnn", fmt="QDQ", per_channel=True, act="u8", pre_opt=True,
         note="the product's default model"),
    dict(name="fmnist_cnn_qop", src="fmnist_cnn", fmt="QOperator", per_channel=True, act="u8", pre_opt=True,
         sibling="fmnist_cnn_qdq"),
    dict(name="fmnist_cnn_qdq_s8_pt", src="fmnist_cnn", fmt="QDQ", per_channel=False, act="s8", pre_opt=True),
    dict(name="fmnist_cnn_bn_qdq", src="fmnist_cnn_bn", fmt="QDQ", per_channel=True, act="u8", pre_opt=False,
         note="BatchNormalization kept in the float graph; pre-process optimization skipped (it would fuse BN)"),
    dict(name="fmnist_cnn_relu6_qdq", src="fmnist_cnn_relu6", fmt="QDQ", per_channel=True, act="u8",
         pre_opt=True, note="ReLU6 exported as Clip(min=0, max=6)"),
    dict(name="mnist_res_s8", src="mnist_res", fmt="QDQ", per_channel=False, act="s8", pre_opt=True),
    dict(name="mnist_res_qdq_u8", src="mnist_res", fmt="QDQ", per_channel=True, act="u8", pre_opt=True,
         note="QDQ sibling of mnist_res_qop_u8 (same settings), for the cross-check"),
    dict(name="mnist_res_qop_u8", src="mnist_res", fmt="QOperator", per_channel=True, act="u8", pre_opt=True,
         sibling="mnist_res_qdq_u8"),
    dict(name="mnist_mlp_matmul_qdq", src="mnist_mlp_matmul", fmt="QDQ", per_channel=True, act="u8",
         pre_opt=False, note="pre-process optimization skipped: ORT's MatMulAddFusion would turn MatMul+Add "
                             "into Gemm"),
    dict(name="mnist_mlp_matmul_qop", src="mnist_mlp_matmul", fmt="QOperator", per_channel=True, act="u8",
         pre_opt=False, sibling="mnist_mlp_matmul_qdq"),
]

FLOAT_DATASET = {"fmnist_cnn": "fashion-mnist", "fmnist_cnn_bn": "fashion-mnist",
                 "fmnist_cnn_relu6": "fashion-mnist", "mnist_res": "mnist", "mnist_mlp_matmul": "mnist"}


def quantize(spec: dict, data: dict) -> dict:
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = HERE / f"{spec['src']}_f32.onnx"
    out = HERE / f"{spec['name']}.onnx"
    xcal = data[FLOAT_DATASET[spec["src"]]]["train"][0][:CALIB_N]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = iter([{"input": xcal[i : i + CALIB_BATCH]} for i in range(0, len(xcal), CALIB_BATCH)])

    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_optimization=not spec["pre_opt"])
        pre_ops = op_histogram(onnx.load(str(pre)))
        act = QuantType.QUInt8 if spec["act"] == "u8" else QuantType.QInt8
        quantize_static(
            str(pre), str(out), Reader(),
            quant_format=QuantFormat.QDQ if spec["fmt"] == "QDQ" else QuantFormat.QOperator,
            per_channel=spec["per_channel"], reduce_range=False,
            activation_type=act, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=spec.get("op_types"),
            extra_options=spec.get("extra_options"),
        )
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    return dict(preprocessed_float_ops=pre_ops)


# ----------------------------------------------------------------------------------------------
# reference outputs (onnxruntime, graph optimizations disabled)


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_run(path: Path, x: np.ndarray, batch: int = REF_BATCH) -> np.ndarray:
    sess = ort_session(path)
    outs = [sess.run(["logits"], {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def op_histogram(m) -> dict:
    c = collections.Counter(n.op_type for n in m.graph.node)
    return dict(sorted(c.items()))


def op_domains(m) -> dict:
    return dict(sorted({n.op_type: n.domain for n in m.graph.node if n.domain not in ("", "ai.onnx")}.items()))


def init_map(m) -> dict:
    return {t.name: t for t in m.graph.initializer}


def tensor_storage(t) -> str:
    for f in ("raw_data", "int32_data", "int64_data", "float_data", "double_data", "string_data",
              "uint64_data"):
        v = getattr(t, f)
        if len(v):
            return f
    if t.HasField("data_location") and t.data_location == 1:
        return "external"
    return "empty"


def output_quant(m):
    """scale and zero point of the DequantizeLinear that produces the graph output."""
    from onnx import numpy_helper

    inits = init_map(m)
    out = m.graph.output[0].name
    node = next(n for n in m.graph.node if out in n.output)
    assert node.op_type == "DequantizeLinear", f"graph output comes from {node.op_type}"
    scale = numpy_helper.to_array(inits[node.input[1]])
    zp = numpy_helper.to_array(inits[node.input[2]])
    assert scale.shape == () and zp.shape == (), "per-tensor output quantization expected"
    return np.float32(scale), zp


def input_quant(m):
    from onnx import numpy_helper

    inits = init_map(m)
    inp = m.graph.input[0].name
    node = next(n for n in m.graph.node if inp in n.input)
    if node.op_type != "QuantizeLinear":
        return None
    return dict(scale=float(numpy_helper.to_array(inits[node.input[1]])),
                zero_point=int(numpy_helper.to_array(inits[node.input[2]])),
                dtype=str(numpy_helper.to_array(inits[node.input[2]]).dtype))


def requantize(y: np.ndarray, scale: np.float32, zp: np.ndarray) -> np.ndarray:
    info = np.iinfo(zp.dtype)
    q = np.rint(y.astype(np.float64) / np.float64(scale)) + int(zp)  # rint: round half to even
    q = np.clip(q, info.min, info.max).astype(zp.dtype)
    # lossless: dequantizing (as DequantizeLinear does, in float32) gives back ORT's output bit for bit
    back = (q.astype(np.int32) - np.int32(zp)).astype(np.float32) * scale
    if not np.array_equal(back.view(np.uint32), y.astype(np.float32).view(np.uint32)):
        bad = int((back != y).sum())
        raise AssertionError(f"re-quantized logits do not dequantize back exactly ({bad} values differ)")
    return q


def first_argmax(a: np.ndarray) -> np.ndarray:
    return np.argmax(a, axis=1)  # numpy returns the first index on ties


def n_ties(a: np.ndarray) -> int:
    mx = a.max(axis=1, keepdims=True)
    return int(((a == mx).sum(axis=1) > 1).sum())


def describe_graph(m) -> str:
    """A readable dump of a quantized graph: nodes with their inputs (initializers with dtype,
    shape, storage field and, when small, value) and outputs."""
    from onnx import helper, numpy_helper

    inits = init_map(m)
    lines = [f"# {len(m.graph.node)} nodes; opset_import: "
             + ", ".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in m.opset_import),
             f"# inputs: {[(i.name, str(i.type.tensor_type.shape.dim)) for i in m.graph.input]}".replace("\n", " "),
             f"# outputs: {[o.name for o in m.graph.output]}",
             f"# metadata: {[(p.key, p.value) for p in m.metadata_props]}", ""]

    def fmt_input(name):
        if name == "":
            return "<none>"
        if name not in inits:
            return name
        t = inits[name]
        a = numpy_helper.to_array(t)
        s = f"{name} [{a.dtype} {list(a.shape)} {tensor_storage(t)}]"
        if a.size <= 4:
            s += f" = {a.tolist()}"
        elif a.dtype in (np.int8, np.uint8, np.int32):
            s += f" range [{a.min()}, {a.max()}]"
        else:
            s += f" range [{a.min():.6g}, {a.max():.6g}]"
        return s

    for n in m.graph.node:
        dom = f"{n.domain}." if n.domain else ""
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        lines.append(f"{dom}{n.op_type}  name={n.name!r}  attrs={attrs}")
        for i in n.input:
            lines.append(f"    in : {fmt_input(i)}")
        for o in n.output:
            lines.append(f"    out: {o}")
    return "\n".join(lines) + "\n"


def reference(spec: dict, data: dict, qinfo: dict, float_acc: dict) -> dict:
    import onnx
    import onnxruntime as ort

    name = spec["name"]
    path = HERE / f"{name}.onnx"
    ds = FLOAT_DATASET[spec["src"]]
    xte, yte = data[ds]["test"]
    m = onnx.load(str(path))
    y = ort_run(path, xte)
    scale, zp = output_quant(m)
    q = requantize(y, scale, zp)
    pred = first_argmax(q)
    acc = float((pred == yte).mean())

    # the reference must not depend on the batch size it was run with
    y1 = ort_run(path, xte[:200], batch=1)
    batch_invariant = bool(np.array_equal(y1, y[:200]))

    np.save(EXPECTED / f"{name}.logits.npy", q)
    (EXPECTED / f"{name}.predictions.txt").write_text("".join(f"{p}\n" for p in pred))
    (EXPECTED / f"{name}.graph.txt").write_text(describe_graph(m))
    inits = init_map(m)
    storage = collections.Counter(f"{np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))}:"
                                  f"{tensor_storage(t)}" for t in inits.values())
    rec = {
        "model": path.name,
        "dataset": ds,
        "split": "test",
        "n": int(len(xte)),
        "reference": f"onnxruntime {ort.__version__} ORT_DISABLE_ALL",
        "output_dtype": str(zp.dtype),
        "output_scale": float(scale),
        "output_zero_point": int(zp),
        "int8_accuracy": acc,
        "float_accuracy": float_acc[spec["src"]],
        "sha256": sha256_file(path),
        "ops": op_histogram(m),
        # extras
        "float_model": f"{spec['src']}_f32.onnx",
        "format": spec["fmt"],
        "weights": "int8 per-channel" if spec["per_channel"] else "int8 per-tensor",
        "activations": "uint8" if spec["act"] == "u8" else "int8",
        "input_quant": input_quant(m),
        "op_domains": op_domains(m),
        "argmax_ties": n_ties(q),
        "argmax_rule": "first maximum on ties",
        "top1_agreement_with_float": float((pred == float_acc["_pred"][spec["src"]]).mean()),
        "batch1_equals_batch1000_first200": batch_invariant,
        "initializer_storage": dict(sorted(storage.items())),
        "calibration": f"MinMax, first {CALIB_N} training images of {ds}, batches of {CALIB_BATCH}",
        "quantize_static": dict(quant_format=spec["fmt"], per_channel=spec["per_channel"], reduce_range=False,
                                activation_type="QUInt8" if spec["act"] == "u8" else "QInt8",
                                weight_type="QInt8", calibrate_method="MinMax", extra_options={},
                                **({"op_types_to_quantize": spec["op_types"]} if spec.get("op_types") else {})),
        "quant_pre_process": dict(skip_optimization=not spec["pre_opt"], skip_onnx_shape=False,
                                  skip_symbolic_shape=False, ops_after=qinfo["preprocessed_float_ops"]),
        "note": spec.get("note", ""),
    }
    (EXPECTED / f"{name}.json").write_text(json.dumps(rec, indent=2) + "\n")
    print(f"  {name}: int8 acc {acc:.4f} (float {rec['float_accuracy']:.4f}), out {zp.dtype} "
          f"scale {float(scale):.6g} zp {int(zp)}, ties {rec['argmax_ties']}, batch-invariant {batch_invariant}",
          flush=True)
    return rec


def crosscheck(records: dict, data: dict) -> dict:
    import qop_numpy_check

    res = {}
    for spec in QUANT_MODELS:
        sib = spec.get("sibling")
        if not sib:
            continue
        a, b = records[spec["name"]], records[sib]
        qa = np.load(EXPECTED / f"{spec['name']}.logits.npy").astype(np.int32)
        qb = np.load(EXPECTED / f"{sib}.logits.npy").astype(np.int32)
        same_q = (a["output_scale"], a["output_zero_point"]) == (b["output_scale"], b["output_zero_point"])
        d = np.abs(qa - qb)
        r = dict(qoperator=spec["name"], qdq=sib, same_output_quantization=same_q,
                 max_abs_diff_lsb=int(d.max()), mean_abs_diff_lsb=float(d.mean()),
                 values_differing=int((d > 0).sum()), values_total=int(d.size),
                 histogram_abs_diff={str(k): int(v) for k, v in zip(*np.unique(d, return_counts=True))},
                 top1_agreement=float((first_argmax(qa) == first_argmax(qb)).mean()),
                 accuracy_qop=a["int8_accuracy"], accuracy_qdq=b["int8_accuracy"])
        # an independent plain-integer re-computation of the QOperator graph (qop_numpy_check.py)
        xte = data[a["dataset"]]["test"][0]
        qa_raw = np.load(EXPECTED / f"{spec['name']}.logits.npy")
        r["numpy_integer_check"] = qop_numpy_check.check(HERE / a["model"], xte, qa_raw, a["output_scale"],
                                                         a["output_zero_point"])
        res[spec["name"]] = r
        print(f"  {spec['name']} vs {sib}: max |d| {r['max_abs_diff_lsb']} LSB, mean {r['mean_abs_diff_lsb']:.4f}, "
              f"{r['values_differing']}/{r['values_total']} differ, top-1 agreement {r['top1_agreement']:.4f}; "
              f"numpy integer re-computation: max |d| {r['numpy_integer_check']['max_abs_diff_lsb']} LSB, "
              f"{r['numpy_integer_check']['values_differing']} differ", flush=True)
    (EXPECTED / "crosscheck.json").write_text(json.dumps(res, indent=2) + "\n")
    # QOperator models run onnxruntime's integer kernels even with ORT_DISABLE_ALL. On an x86 CPU
    # without VNNI those u8*s8 kernels can saturate 16-bit pair sums (vpmaddubsw); a reference made
    # there would be wrong by many LSB, and the QDQ sibling (float arithmetic) would show it.
    for r in res.values():
        if r["numpy_integer_check"]["max_abs_diff_lsb"] > 1:
            raise AssertionError(f"{r['qoperator']}: onnxruntime's integer kernels disagree with plain integer "
                                 f"arithmetic by {r['numpy_integer_check']['max_abs_diff_lsb']} LSB")
        if not r["same_output_quantization"] or r["max_abs_diff_lsb"] > 2:
            raise AssertionError(f"{r['qoperator']} disagrees with {r['qdq']} by {r['max_abs_diff_lsb']} LSB: "
                                 "suspect saturating int8 kernels on this CPU; do not commit these references")
    return res


# ----------------------------------------------------------------------------------------------
# README table


TABLE_BEGIN = "<!-- models-table:begin (written by generate.py; the qforget eval column is kept) -->"
TABLE_END = "<!-- models-table:end -->"


def update_readme_table(records: dict, training: dict) -> None:
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else f"# ONNX fixtures\n\n{TABLE_BEGIN}\n{TABLE_END}\n"
    if TABLE_BEGIN not in text or TABLE_END not in text:
        text += f"\n{TABLE_BEGIN}\n{TABLE_END}\n"
    head, rest = text.split(TABLE_BEGIN, 1)
    old, tail = rest.split(TABLE_END, 1)
    kept = {}
    for line in old.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[0].startswith("`"):
            kept[cells[0].strip("`")] = cells[9]
    rows = ["| model | dataset | format | weights | activations | ops | float test acc | int8 test acc "
            "(ORT_DISABLE_ALL) | sha256 | qforget eval |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for spec in QUANT_MODELS:
        r = records[spec["name"]]
        ops = ", ".join(f"{r['op_domains'].get(k, '') + '.' if k in r['op_domains'] else ''}{k}×{v}"
                        for k, v in r["ops"].items())
        rows.append(f"| `{r['model']}` | {r['dataset']} | {r['format']} | "
                    f"{'per-channel' if spec['per_channel'] else 'per-tensor'} | {spec['act']} | {ops} | "
                    f"{100 * r['float_accuracy']:.2f} % | {100 * r['int8_accuracy']:.2f} % | "
                    f"`{r['sha256']}` | {kept.get(r['model'], '')} |")
    rows.append("")
    rows.append("| float model | dataset | train acc | test acc (ORT) | sha256 |")
    rows.append("| --- | --- | --- | --- | --- |")
    for f in sorted(FLOAT_DATASET):
        p = HERE / f"{f}_f32.onnx"
        src = f if f in training else DERIVED_FLOAT[f]["from_net"]
        rows.append(f"| `{p.name}` | {FLOAT_DATASET[f]} | {100 * training[src]['train_accuracy']:.2f} % | "
                    f"{100 * records['_float_acc'][f]:.2f} % | `{sha256_file(p)}` |")
    readme.write_text(head + TABLE_BEGIN + "\n" + "\n".join(rows) + "\n" + TABLE_END + tail)


# ----------------------------------------------------------------------------------------------


def extra_fixture_main(doc: str, name: str, hp: dict, network, specs: list) -> None:
    """The command line of a script that adds one trained float network to the fixtures
    (generate_mobilenet.py, generate_float_ops.py): train the class `network()` returns with
    `hp` (unless --skip-train reuses the committed `<name>_f32.onnx`), export it, then quantize
    it per `specs` with `quantize` and write each reference with `reference`, as main() does for
    its own nets."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"))
    ap.add_argument("--skip-train", action="store_true", help="reuse the committed float model")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    assert onnx.__version__ == "1.23.2", onnx.__version__
    assert ort.__version__ == "1.32.0", ort.__version__
    t0 = time.time()
    root = Path(args.data)
    verify_data(root)
    ds = hp["dataset"]
    data = {ds: load_dataset(root, ds)}
    FLOAT_DATASET[name] = ds
    f32 = HERE / f"{name}_f32.onnx"

    if not args.skip_train:
        import torch

        torch.set_num_threads(2)
        torch.use_deterministic_algorithms(True)
        model, rec = train_net(name, hp, data, {name: network()})
        rec["_software"] = dict(torch=torch.__version__, numpy=np.__version__, onnx=onnx.__version__,
                                onnxruntime=ort.__version__, python=sys.version.split()[0])
        export_onnx(model, f32)
        x = data[ds]["test"][0][:500]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        err = float(np.abs(ref - ort_run(f32, x)).max())
        assert err < 1e-3, err
        print(f"  {f32.name} vs torch: max |d| {err:.2e}")
        (EXPECTED / f"{name}.training.json").write_text(json.dumps(rec, indent=2) + "\n")

    xte, yte = data[ds]["test"]
    pred = first_argmax(ort_run(f32, xte))
    float_acc = {name: float((pred == yte).mean()), "_pred": {name: pred}}
    print(f"float {name}: ORT test acc {float_acc[name]:.4f}; ops {op_histogram(onnx.load(str(f32)))}")
    for spec in specs:
        qinfo = quantize(spec, data)
        reference(spec, data, qinfo, float_acc)
    print(f"done in {time.time() - t0:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"))
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    assert onnx.__version__ == "1.23.2", onnx.__version__
    assert ort.__version__ == "1.32.0", ort.__version__
    t_start = time.time()
    root = Path(args.data)
    verify_data(root)
    data = {ds: load_dataset(root, ds) for ds in ("mnist", "fashion-mnist")}
    EXPECTED.mkdir(exist_ok=True)
    training_path = EXPECTED / "training.json"

    if args.skip_train:
        training = json.loads(training_path.read_text())
    else:
        import torch

        torch.set_num_threads(2)
        torch.use_deterministic_algorithms(True)
        ctors = build_torch_models()
        training = {}
        trained = {}
        for name, hp in FLOAT_NETS.items():
            print(f"train {name}", flush=True)
            model, rec = train_net(name, hp, data, ctors)
            trained[name] = model
            training[name] = rec
            export_onnx(model, HERE / f"{name}_f32.onnx")
        export_onnx(trained["fmnist_cnn"], HERE / "fmnist_cnn_bn_f32.onnx", preserve_bn=True)
        training["_derived"] = DERIVED_FLOAT
        training["_software"] = dict(torch=torch.__version__, numpy=np.__version__, onnx=onnx.__version__,
                                     onnxruntime=ort.__version__, python=sys.version.split()[0])
        training_path.write_text(json.dumps(training, indent=2) + "\n")
        # the exported float graphs compute what torch computes
        for f, src in (("fmnist_cnn", "fmnist_cnn"), ("fmnist_cnn_bn", "fmnist_cnn"),
                       ("fmnist_cnn_relu6", "fmnist_cnn_relu6"), ("mnist_res", "mnist_res"),
                       ("mnist_mlp_matmul", "mnist_mlp_matmul")):
            x = data[FLOAT_DATASET[f]]["test"][0][:500]
            with torch.no_grad():
                ref = trained[src](torch.from_numpy(x)).numpy()
            got = ort_run(HERE / f"{f}_f32.onnx", x)
            err = float(np.abs(ref - got).max())
            assert err < 1e-3, (f, err)
            print(f"  {f}_f32.onnx vs torch: max |d| {err:.2e}")

    # float accuracies, same ORT settings as the references
    float_acc = {"_pred": {}}
    for f, ds in FLOAT_DATASET.items():
        p = HERE / f"{f}_f32.onnx"
        onnx.checker.check_model(onnx.load(str(p)), full_check=True)
        xte, yte = data[ds]["test"]
        pred = first_argmax(ort_run(p, xte))
        float_acc[f] = float((pred == yte).mean())
        float_acc["_pred"][f] = pred
        print(f"float {f}: ORT test acc {float_acc[f]:.4f}; ops {op_histogram(onnx.load(str(p)))}", flush=True)

    records = {}
    for spec in QUANT_MODELS:
        print(f"quantize {spec['name']}", flush=True)
        qinfo = quantize(spec, data)
        records[spec["name"]] = reference(spec, data, qinfo, float_acc)
    print("cross-check QOperator vs QDQ", flush=True)
    crosscheck(records, data)
    summary = {k: {kk: v[kk] for kk in ("model", "dataset", "format", "weights", "activations", "float_accuracy",
                                        "int8_accuracy", "ops", "sha256")} for k, v in records.items()}
    (EXPECTED / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    records["_float_acc"] = {k: v for k, v in float_acc.items() if k != "_pred"}
    update_readme_table(records, training)
    print(f"done in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
