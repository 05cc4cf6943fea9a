#!/usr/bin/env python3
"""A quantization-aware (QAT) W4 retrain reference for class3_fmnist_cnn_w4, next to the PTQ ones.

w4_reference_spread.py showed that the W4 gold standard (one float retrain, then 4-bit post-training
quantization) depends strongly on the training seed. This script measures the alternative: per seed,
the float retrain of the base recipe without class 3 (as w4_reference_spread.py: seed 1 is the
committed float retrain/float/class3_fmnist_cnn_f32.onnx, the committed reference's own float; other
seeds are trained here by generate.train_net with generate.py FLOAT_NETS["fmnist_cnn"], only the seed
changed, on the 54,000 retain images in dataset order, 1 torch thread, deterministic algorithms), then
a quantization-aware fine-tune in the deployed W4A8 format, then the very same onnxruntime W4 pipeline
as the base (generate_w4.quantize). Seed 1 is also retrained here once more (record seed1_retrained,
left out of the summary; --no-retrain-seed1 skips it): on the machine of this study that retrain did
not reproduce the committed float bit for bit, so the committed file is the seed-1 start.

QAT schedule (fine-tune from the float retrain, not QAT from scratch):
  - start: the float retrain's exported ONNX weights, i.e. BatchNorm folded into the convolutions
    exactly as the float model that PTQ quantizes (BN statistics therefore frozen);
  - QAT_EPOCHS epochs of Adam (fresh state) at QAT_LR (= the recipe's final-epoch LR), batch 128,
    cross-entropy on the retain images, shuffled by torch.Generator().manual_seed(FT_SEED_OFFSET + seed);
  - weights: onnxruntime's QInt4 per-channel grid, recomputed from the current weights at every step
    (symmetric: scale = 2*max|w_c|/15 per output channel, zero point 0, q = clip(round(w/scale), -8, 7));
    biases: int32 with scale = input scale * weight scale (as onnxruntime quantizes them);
  - activations: uint8, per tensor, asymmetric, on the tensors onnxruntime quantizes in this graph
    (input, the three ReLU outputs; MaxPool/Flatten reuse their input's scale, an identity on the grid;
    the logits); scale/zero point from onnxruntime's own compute_scale_zp on MinMax ranges of the FLOAT
    forward pass over the first 1000 retain images (what quantize_static will calibrate on), refreshed
    every RECALIB_EVERY steps and after each epoch;
  - straight-through estimator: identity gradient for weights and biases, clipped (zero outside the
    uint8 range) for the input and ReLU outputs, identity for the logits.
Then the QAT model's latent float weights are exported to ONNX (generate.export_onnx) and quantized
with generate_w4.quantize (QDQ, opset 21, QInt4 per-channel, uint8 activations, MinMax on the first
1000 retain images), as the reference and the spread study were.

A control separates "quantization-aware" from "two more epochs": the same fine-tune (same start,
schedule, shuffling) without fake quantization, then the same PTQ (--no-control skips it).

Scores (onnxruntime 1.32, ORT_DISABLE_ALL, 1 thread; argmax of the quantized logits, first maximum
on ties; floats: argmax of the float logits) on two splits:
  bundled_10k: the first 10,000 training images (= data/fashion-mnist/train-*): FA on its 1,019
    class-3 images, RA on its 8,981 others, TA on the 9,000 test images of the other classes
    (how qforget measures the gold standard: docs/RESULTS.md, RA 94.25 % for the committed reference);
  full: w4_reference_spread.py's split (retain 54,000, forget 6,000, test = all 10,000).

    OMP_NUM_THREADS=1 /opt/qfpy/bin/python onnx-models/retrain/w4_qat_reference.py [--seeds 1,2,3]

Writes the ONNX files to --out-dir (default /tmp/qat) and the record to --json
(default docs/results/w4-reference-spread/qat.json; rewritten after every seed).

--model mnist_res does the same for class3_mnist_res_w4 (base mnist_res_w4, dataset mnist, float recipe
generate.py FLOAT_NETS["mnist_res"], whose seed is 3: the committed retrain/float/class3_mnist_res_f32.onnx,
from which the committed gold standard was quantized, is therefore the seed-3 start, and seed 3 is the
"committed" run). The residual graph's quantized activations (what quantize_static writes for it):
input; the stem ReLU output (MaxPool reuses its scale); the res_conv1 ReLU output; the res_conv2 output
before the Add (signed range, own scale); the Add output after its ReLU (the ReLU is dropped by the QDQ
quantizer, the Add output quantized with the ReLU's range, zero point 0); the down and down2 ReLU outputs;
the GlobalAveragePool output (own scale; Flatten reuses it); the logits. Defaults for mnist_res:
--out-dir /tmp/qat_res, --json docs/results/w4-reference-spread/qat_mnist_res.json. No spread.json entry.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import generate as G  # noqa: E402
import generate_overfit as GO  # noqa: E402
import generate_references as R  # noqa: E402
import generate_w4 as W  # noqa: E402

BASE = "fmnist_cnn_w4"
QAT_EPOCHS = 2
QAT_LR = 1e-4
BATCH = 128
RECALIB_EVERY = 20
FT_SEED_OFFSET = 10_000
W4_QMIN, W4_QMAX = -8, 7  # onnxruntime QInt4, WeightSymmetric default (signed type): zero point 0
ACT_TENSORS = ("input", "act1", "act2", "act3", "logits")
RES_ACT_TENSORS = ("input", "relu0", "relu1", "res2", "relu2", "relu3", "relu4", "gap", "logits")

# --model -> the base, its float recipe, the committed float / reference, the quantized activations
MODELS = {
    "fmnist_cnn": dict(base="fmnist_cnn_w4", net="fmnist_cnn", dataset="fashion-mnist",
                       training="class3_fmnist_cnn", reference="class3_fmnist_cnn_w4",
                       committed_seed=1, out_dir="/tmp/qat", json="qat.json",
                       act_scales={"input": "input_scale", "act1": "/act1/Relu_output_0_scale",
                                   "act2": "/act2/Relu_output_0_scale", "act3": "/act3/Relu_output_0_scale",
                                   "logits": "logits_scale"}),
    "mnist_res": dict(base="mnist_res_w4", net="mnist_res", dataset="mnist",
                      training="class3_mnist_res", reference="class3_mnist_res_w4",
                      committed_seed=3, out_dir="/tmp/qat_res", json="qat_mnist_res.json",
                      act_scales={"input": "input_scale", "relu0": "/Relu_output_0_scale",
                                  "relu1": "/Relu_1_output_0_scale", "res2": "/res_conv2/Conv_output_0_scale",
                                  "relu2": "/Relu_2_output_0_scale", "relu3": "/Relu_3_output_0_scale",
                                  "relu4": "/Relu_4_output_0_scale",
                                  "gap": "/gap/GlobalAveragePool_output_0_scale", "logits": "logits_scale"}),
}


# ----------------------------------------------------------------------------------------------
# the BN-folded network, float or fake-quantized


def widen_ranges(stats: dict, names, tensors) -> None:
    """MinMax calibration: widen each named tensor's (min, max) in `stats` by this batch."""
    for k, t in zip(names, tensors):
        lo, hi = stats.get(k, (np.inf, -np.inf))
        stats[k] = (min(lo, float(t.min())), max(hi, float(t.max())))


def build_folded(arch: str = "fmnist_cnn"):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    a_qmin, a_qmax = get_qmin_qmax_for_qType(TensorProto.UINT8)

    def w_scale(w):
        """onnxruntime's symmetric per-channel scale for QInt4 (axis 0), float64 then stored float32."""
        absmax = w.detach().abs().reshape(w.shape[0], -1).amax(1).double()
        s = (2.0 * absmax / (W4_QMAX - W4_QMIN)).float()
        return torch.where(s < torch.finfo(torch.float32).tiny, torch.ones_like(s), s)

    def fq_weight(w):
        s = w_scale(w)
        sv = s.view(-1, *([1] * (w.dim() - 1)))
        q = torch.clamp(torch.round(w.detach() / sv), W4_QMIN, W4_QMAX)
        return w + (q * sv - w).detach(), s, q

    def fq_bias(b, s_in, s_w):
        sb = torch.tensor(s_in, dtype=torch.float32) * s_w  # float32 product, as numpy computes it
        q = torch.round(b.detach().double() / sb.double())
        return b + (q.float() * sb - b).detach()

    def fq_act(x, scale, zp, clipped=True):
        v = x.detach() / scale + zp
        q = torch.clamp(torch.round(v), a_qmin.item(), a_qmax.item())
        y = ((q - zp) * scale).detach()
        if not clipped:
            return y + (x - x.detach())
        mask = ((v >= a_qmin.item()) & (v <= a_qmax.item())).to(x.dtype)
        return y + mask * (x - x.detach())

    def fq_layer(layer, x, s_in, **conv_args):
        """A Conv2d or Linear on the deployed grid: INT4 weights, the int32 bias of input scale s_in."""
        w, sw, _ = fq_weight(layer.weight)
        b = fq_bias(layer.bias, s_in, sw)
        return F.conv2d(x, w, b, **conv_args) if isinstance(layer, nn.Conv2d) else F.linear(x, w, b)

    class FoldedCNN(nn.Module):
        """generate.py's FmnistCNN with BatchNorm folded into the convolutions (the exported graph:
        Conv(+bias)-Relu-MaxPool-Conv(+bias)-Relu-MaxPool-Flatten-Gemm-Relu-Gemm)."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=True)
            self.act1 = nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=True)
            self.act2 = nn.ReLU()
            self.pool2 = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(32 * 7 * 7, 128)
            self.act3 = nn.ReLU()
            self.fc2 = nn.Linear(128, 10)
            self.fake = False
            self.ranges: dict = {}

        def float_forward(self, x, stats=None):
            a1 = self.act1(self.conv1(x))
            a2 = self.act2(self.conv2(self.pool1(a1)))
            a3 = self.act3(self.fc1(self.flatten(self.pool2(a2))))
            out = self.fc2(a3)
            if stats is not None:
                widen_ranges(stats, ACT_TENSORS, (x, a1, a2, a3, out))
            return out

        def forward(self, x):
            if not self.fake:
                return self.float_forward(x)
            r = self.ranges
            x = fq_act(x, *r["input"])
            h = fq_layer(self.conv1, x, r["input"][0], padding=1)
            h = self.pool1(fq_act(torch.relu(h), *r["act1"]))
            h = fq_layer(self.conv2, h, r["act1"][0], padding=1)
            h = self.flatten(self.pool2(fq_act(torch.relu(h), *r["act2"])))
            h = fq_act(torch.relu(fq_layer(self.fc1, h, r["act2"][0])), *r["act3"])
            out = fq_layer(self.fc2, h, r["act3"][0])
            return fq_act(out, *r["logits"], clipped=False)

        @torch.no_grad()
        def calibrate(self, xcal: np.ndarray) -> None:
            """MinMax over the float forward pass, batches of G.CALIB_BATCH, then onnxruntime's
            compute_scale_zp (uint8, asymmetric): what quantize_static will do with these weights."""
            stats: dict = {}
            for i in range(0, len(xcal), G.CALIB_BATCH):
                self.float_forward(torch.from_numpy(xcal[i : i + G.CALIB_BATCH]), stats)
            for k, (lo, hi) in stats.items():
                zp, scale = compute_scale_zp(np.array(lo, dtype=np.float32), np.array(hi, dtype=np.float32),
                                             a_qmin, a_qmax)
                self.ranges[k] = (float(scale), int(zp))

        def int4_weights(self) -> dict:
            return {n: fq_weight(getattr(self, n).weight)[2].numpy().astype(np.int8)
                    for n in ("conv1", "conv2", "fc1", "fc2")}

    class FoldedRes(nn.Module):
        """generate.py's MnistRes with BatchNorm folded into the convolutions (the exported graph:
        Conv-Relu-MaxPool-Conv-Relu-Conv-Add(pool, conv)-Relu-Conv/2-Relu-Conv/2-Relu-GlobalAveragePool-
        Flatten-Gemm). Module and functional call order as in MnistRes, so the export names match."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=True)
            self.pool = nn.MaxPool2d(2)
            self.res_conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=True)
            self.res_conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=True)
            self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=True)
            self.down2 = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=True)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(64, 10)
            self.fake = False
            self.ranges: dict = {}

        def float_forward(self, x, stats=None):
            r0 = torch.relu(self.stem(x))
            p = self.pool(r0)
            r1 = torch.relu(self.res_conv1(p))
            c2 = self.res_conv2(r1)
            r2 = torch.relu(p + c2)
            r3 = torch.relu(self.down(r2))
            r4 = torch.relu(self.down2(r3))
            g = self.gap(r4)
            out = self.fc(self.flatten(g))
            if stats is not None:
                widen_ranges(stats, RES_ACT_TENSORS, (x, r0, r1, c2, r2, r3, r4, g, out))
            return out

        def forward(self, x):
            if not self.fake:
                return self.float_forward(x)
            r = self.ranges
            x = fq_act(x, *r["input"])
            h = fq_layer(self.stem, x, r["input"][0], padding=1)
            p = self.pool(fq_act(torch.relu(h), *r["relu0"]))  # MaxPool: same scale, identity on the grid
            h = fq_layer(self.res_conv1, p, r["relu0"][0], padding=1)
            h = fq_act(torch.relu(h), *r["relu1"])
            h = fq_layer(self.res_conv2, h, r["relu1"][0], padding=1)
            c2 = fq_act(h, *r["res2"])
            h = fq_act(torch.relu(p + c2), *r["relu2"])
            h = fq_layer(self.down, h, r["relu2"][0], stride=2, padding=1)
            h = fq_act(torch.relu(h), *r["relu3"])
            h = fq_layer(self.down2, h, r["relu3"][0], stride=2, padding=1)
            h = fq_act(torch.relu(h), *r["relu4"])
            g = self.flatten(fq_act(self.gap(h), *r["gap"]))  # Flatten: same scale
            out = fq_layer(self.fc, g, r["gap"][0])
            return fq_act(out, *r["logits"], clipped=False)

        calibrate = FoldedCNN.calibrate

        def int4_weights(self) -> dict:
            return {n: fq_weight(getattr(self, n).weight)[2].numpy().astype(np.int8)
                    for n in ("stem", "res_conv1", "res_conv2", "down", "down2", "fc")}

    return FoldedRes if arch == "mnist_res" else FoldedCNN


def load_folded(FoldedCNN, f32: Path):
    """A FoldedCNN holding the initializers of an exported float model (BN already folded)."""
    import onnx
    import torch
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(f32)).graph.initializer}
    model = FoldedCNN()
    sd = model.state_dict()
    assert set(sd) == set(inits), (sorted(sd), sorted(inits))
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in inits.items()})
    for k, v in model.state_dict().items():
        assert v.shape == tuple(inits[k].shape), k
    return model


def sim_predict(model, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([G.first_argmax(model(torch.from_numpy(x[i : i + batch])).numpy())
                               for i in range(0, len(x), batch)])


def finetune(model, data: dict, seed: int, fake: bool, xcal: np.ndarray, tag: str) -> tuple[list, float]:
    import torch
    import torch.nn.functional as F

    xtr, ytr = data["train"]
    xte, yte = data["test"]
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    model.fake = fake
    opt = torch.optim.Adam(model.parameters(), lr=QAT_LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(FT_SEED_OFFSET + seed)
    log, step, t0 = [], 0, time.time()
    for epoch in range(QAT_EPOCHS):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        tot, n = 0.0, 0
        for i in range(0, len(perm), BATCH):
            if fake and step % RECALIB_EVERY == 0:
                model.calibrate(xcal)
            idx = perm[i : i + BATCH]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss) * len(idx)
            n += len(idx)
            step += 1
        if fake:
            model.calibrate(xcal)
        te = float((sim_predict(model, xte) == yte).mean())
        log.append(dict(epoch=epoch + 1, lr=QAT_LR, train_loss=round(tot / n, 5), test_acc_torch=te))
        print(f"  {tag} epoch {epoch + 1}/{QAT_EPOCHS} loss {tot / n:.4f} test (torch{', fake-quant' if fake else ''}) "
              f"{te:.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    return log, round(time.time() - t0, 1)


# ----------------------------------------------------------------------------------------------
# measurement


def summarize(pred_tr: np.ndarray, pred_te: np.ndarray, s: dict) -> dict:
    ytr = s["d"]["train"][1]
    yte = s["d"]["test"][1]
    full = R.accuracies(pred_tr, s, pred_te)
    c = yte == R.FORGET_CLASS
    full["test_forget_class"] = float((pred_te[c] == yte[c]).mean())
    full["test_other_classes"] = float((pred_te[~c] == yte[~c]).mean())
    b = np.arange(GO.N_TRAIN)
    bf, br = b[ytr[b] == R.FORGET_CLASS], b[ytr[b] != R.FORGET_CLASS]
    bundled = dict(FA=float((pred_tr[bf] == ytr[bf]).mean()), RA=float((pred_tr[br] == ytr[br]).mean()),
                   TA=full["test_other_classes"], n_forget=int(len(bf)), n_retain=int(len(br)),
                   n_test=int((~c).sum()))
    return dict(bundled_10k=bundled, full=full)


def measure(path: Path, quantized: bool, s: dict) -> tuple[dict, np.ndarray]:
    xtr, xte = s["d"]["train"][0], s["d"]["test"][0]
    run = (lambda p, x: R.ort_int8(p, x)) if quantized else G.ort_run
    pred_tr = G.first_argmax(run(path, xtr))
    pred_te = G.first_argmax(run(path, xte))
    return summarize(pred_tr, pred_te, s), pred_te


def w4_quant_checks(model, q_path: Path, names: dict | None = None, zero_points: bool = False) -> dict:
    """The int4 weights and activation scales onnxruntime wrote against the fake quantizer's
    (with zero_points: also the activation zero points, and that the quantized graph has no other
    activation QuantizeLinear scales than `names`)."""
    import onnx
    from onnx import numpy_helper

    qg = onnx.load(str(q_path)).graph
    inits = {t.name: t for t in qg.initializer}
    mine = model.int4_weights()
    w = {}
    for n, q in mine.items():
        ort_q = numpy_helper.to_array(inits[f"{n}.weight_quantized"]).astype(np.int8)
        w[n] = int((ort_q != q).sum())
    names = names or {"input": "input_scale", "act1": "/act1/Relu_output_0_scale",
                      "act2": "/act2/Relu_output_0_scale", "act3": "/act3/Relu_output_0_scale",
                      "logits": "logits_scale"}
    a = {}
    for k, n in names.items():
        ort_s = float(numpy_helper.to_array(inits[n]))
        a[k] = dict(onnxruntime=ort_s, fake_quant=model.ranges[k][0],
                    rel_diff=abs(ort_s - model.ranges[k][0]) / ort_s)
        if zero_points:
            ort_z = int(numpy_helper.to_array(inits[n[: -len("scale")] + "zero_point"]))
            a[k].update(zero_point_onnxruntime=ort_z, zero_point_fake_quant=model.ranges[k][1])
    if zero_points:
        q_scales = sorted({n.input[1] for n in qg.node if n.op_type == "QuantizeLinear"})
        assert q_scales == sorted(names.values()), (q_scales, sorted(names.values()))
        return dict(int4_weights_differing=w, int4_weights_total={n: int(q.size) for n, q in mine.items()},
                    activation_scales=a, quantizelinear_scales_in_graph=q_scales)
    return dict(int4_weights_differing=w, int4_weights_total={n: int(q.size) for n, q in mine.items()},
                activation_scales=a)


def pp(x: float) -> float:
    return round(100 * x, 2)


def stats(vals: list) -> dict:
    v = np.array(vals, dtype=np.float64)
    return dict(mean=round(float(v.mean()), 3), sd=round(float(v.std(ddof=1)), 3) if len(v) > 1 else None,
                min=round(float(v.min()), 2), max=round(float(v.max()), 2), n=int(len(v)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3", help="training seeds; 1 is the committed reference's float")
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"))
    ap.add_argument("--model", choices=sorted(MODELS), default="fmnist_cnn",
                    help="the class-3 W4 scenario: class3_fmnist_cnn_w4 (default) or class3_mnist_res_w4")
    ap.add_argument("--out-dir", type=Path, default=None, help="default /tmp/qat (fmnist_cnn), /tmp/qat_res")
    ap.add_argument("--json", type=Path, default=None,
                    help="default docs/results/w4-reference-spread/qat.json (fmnist_cnn), qat_mnist_res.json")
    ap.add_argument("--no-control", action="store_true", help="skip the float fine-tune control")
    ap.add_argument("--no-retrain-seed1", action="store_true",
                    help="skip the extra run on seed 1 retrained here (a reproduction check of the committed float)"
                         "; with --model mnist_res: on seed 3, the recipe's seed")
    args = ap.parse_args()
    cfg = MODELS[args.model]
    res = args.model != "fmnist_cnn"
    args.out_dir = args.out_dir or Path(cfg["out_dir"])
    args.json = args.json or REPO / "docs/results/w4-reference-spread" / cfg["json"]
    cseed = cfg["committed_seed"]

    import onnx
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t_all = time.time()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    s = R.load_split(dict(kind="class", dataset=cfg["dataset"], seed=None), Path(args.data), {})
    xtr, ytr = s["d"]["train"]
    # the bundled 10k split is the first 10,000 training images: check it
    bundle = GO.load_bundle(cfg["dataset"])
    assert np.array_equal(bundle["train"][0], xtr[: GO.N_TRAIN]) and np.array_equal(bundle["train"][1],
                                                                                       ytr[: GO.N_TRAIN])
    assert np.array_equal(bundle["test"][1], s["d"]["test"][1])
    data = R.retain_data(s)
    xcal = xtr[s["retain"]][: G.CALIB_N]
    spec = W.W4_MODELS[cfg["base"]]
    FoldedCNN = build_folded(cfg["net"])
    if res:
        spread_by_tag = {}
    else:
        spread = json.loads((REPO / "docs/results/w4-reference-spread/spread.json").read_text())
        spread_by_tag = {r["tag"]: r for r in spread["records"]}
    qchecks = dict(names=cfg["act_scales"], zero_points=True) if res else {}

    ref_path = HERE / f"{cfg['reference']}.onnx"
    t0 = time.time()
    ref_m, _ = measure(ref_path, True, s)
    committed = dict(model=f"onnx-models/retrain/{cfg['reference']}.onnx", sha256=G.sha256_file(ref_path),
                     **ref_m, eval_seconds=round(time.time() - t0, 1))
    print(f"committed reference: bundled {committed['bundled_10k']}", flush=True)

    doc = dict(
        script="onnx-models/retrain/w4_qat_reference.py",
        **(dict(model="mnist_res", base="onnx-models/mnist_res_w4.onnx", scenario="class3_mnist_res_w4",
                command=f"w4_qat_reference.py --model mnist_res --seeds {args.seeds}"
                        + (" --no-control" if args.no_control else "")
                        + (" --no-retrain-seed1" if args.no_retrain_seed1 else "")) if res else {}),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=R.cpu_info(), cores=os.cpu_count(),
        software=dict(torch=torch.__version__, onnx=onnx.__version__, onnxruntime=ort.__version__,
                      numpy=np.__version__, python=platform.python_version()),
        threads=dict(torch=torch.get_num_threads(), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS"),
                     onnxruntime="intra 1, inter 1, ORT_DISABLE_ALL"),
        splits=dict(bundled_10k="first 10,000 training images (= data/fashion-mnist/train-*): FA on its class-3 "
                                "images, RA on the others, TA on the 9,000 test images not of class 3",
                    full="retain = 54,000 training images not of class 3, forget = 6,000, test = all 10,000 "
                         "(w4_reference_spread.py)"),
        float_recipe="seed 1: the committed onnx-models/retrain/float/class3_fmnist_cnn_f32.onnx (as "
                     "w4_reference_spread.py); other seeds and seed1_retrained: "
                     "generate.py FLOAT_NETS['fmnist_cnn'] with seed=<seed>, trained by generate.train_net on "
                     "the 54,000 retain images in dataset order (as w4_reference_spread.py), 1 torch thread, "
                     "deterministic algorithms; exported by generate.export_onnx",
        ptq="generate_w4.quantize with W4_MODELS['fmnist_cnn_w4'] (QDQ, opset 21, QInt4 per-channel, uint8 "
            "activations, MinMax) on the first 1000 retain images in dataset order",
        qat=dict(schedule="fine-tune from the float retrain of the same seed (BN folded as in its exported ONNX, "
                          "so BN statistics frozen)",
                 epochs=QAT_EPOCHS, lr=QAT_LR, optimizer="Adam (fresh state), weight_decay 0", batch=BATCH,
                 shuffle=f"torch.Generator().manual_seed({FT_SEED_OFFSET} + seed)",
                 weights="fake-quantized to onnxruntime's QInt4 per-channel (axis 0) symmetric grid: "
                         "scale = float32(2*max|w_c|/15), zero point 0, q = clip(round(w/scale), -8, 7); "
                         "recomputed every step",
                 biases="int32, scale = input scale * weight scale (onnxruntime's bias quantization)",
                 activations="uint8 per-tensor asymmetric on input, ReLU outputs and logits; onnxruntime "
                             "compute_scale_zp on MinMax of the float forward over the first 1000 retain "
                             f"images, refreshed every {RECALIB_EVERY} steps and after each epoch",
                 ste="identity for weights/biases/logits, clipped (zero outside [0,255]) for input and ReLUs",
                 export="latent float weights -> generate.export_onnx -> the same PTQ as above"),
        control=None if args.no_control else
        "same fine-tune (start, epochs, LR, optimizer, shuffling) without fake quantization, then the same PTQ",
        committed_reference=committed,
        seeds=[],
        complete=False,
    )
    if res:
        doc.update(
            splits=dict(bundled_10k="first 10,000 training images (= data/mnist/train-*): FA on its class-3 "
                                    "images, RA on the others, TA on the test images not of class 3",
                        full="retain = 53,869 mnist training images not of class 3, forget = 6,131, "
                             "test = all 10,000"),
            float_recipe="seed 3 (the recipe's seed): the committed onnx-models/retrain/float/class3_mnist_res_f32.onnx "
                         "(the float the committed gold standard class3_mnist_res_w4.onnx was quantized from); "
                         "other seeds: generate.py FLOAT_NETS['mnist_res'] with seed=<seed>, trained by "
                         "generate.train_net on the 53,869 retain images in dataset order (as "
                         "generate_references.py), 1 torch thread, deterministic algorithms; exported by "
                         "generate.export_onnx",
            ptq="generate_w4.quantize with W4_MODELS['mnist_res_w4'] (QDQ, opset 21, QInt4 per-channel, uint8 "
                "activations, MinMax) on the first 1000 retain images in dataset order (as "
                "generate_w4_references.py)",
        )
        doc["qat"]["activations"] = (
            "uint8 per-tensor asymmetric on the tensors quantize_static quantizes in this graph: input, stem "
            "ReLU output (MaxPool reuses its scale), res_conv1 ReLU output, res_conv2 output before the Add, "
            "Add output after its ReLU (ReLU dropped by the QDQ quantizer; zero point 0), down and down2 ReLU "
            "outputs, GlobalAveragePool output (Flatten reuses its scale), logits; onnxruntime compute_scale_zp "
            "on MinMax of the float forward over the first 1000 retain images, refreshed every "
            f"{RECALIB_EVERY} steps and after each epoch")
        doc["qat"]["ste"] = ("identity for weights/biases/logits, clipped (zero outside [0,255]) for the input, "
                             "the ReLU outputs, the res_conv2 output and the GlobalAveragePool output")

    def write() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")

    runs = [(int(x), "committed" if int(x) == cseed else "retrain") for x in args.seeds.split(",")]
    if not args.no_retrain_seed1:
        runs.append((cseed, "retrain"))
    for seed, source in runs:
        ts = time.time()
        tag = f"seed{seed}" + ("_retrained" if seed == cseed and source == "retrain" else "")
        rec: dict = dict(tag=tag, seed=seed, float_source=source)
        timings: dict = {}
        committed_f32 = R.FLOAT_DIR / f"{cfg['training']}_f32.onnx"
        if source == "committed":
            # the reference's own float, as w4_reference_spread.py uses it for seed 1
            f32 = committed_f32
            rec["float"] = dict(onnx=f"onnx-models/retrain/float/{cfg['training']}_f32.onnx",
                                sha256=G.sha256_file(f32), training_record=
                                f"onnx-models/retrain/float/{cfg['training']}.training.json")
        else:
            # 1. the float retrain, exactly as w4_reference_spread.py makes it
            hp = dict(G.FLOAT_NETS[cfg["net"]], seed=seed)
            t0 = time.time()
            model, trec = G.train_net(tag, hp, {cfg["dataset"]: data}, G.build_torch_models())
            timings["float_train_s"] = round(time.time() - t0, 1)
            f32 = out / f"{tag}_f32.onnx"
            G.export_onnx(model, f32)
            rec["float"] = dict(onnx=str(f32), sha256=G.sha256_file(f32), epochs_log=trec["epochs_log"],
                                torch_test_accuracy=trec["test_accuracy"])
            if seed == cseed:
                rec["float"]["sha256_equals_committed_float"] = rec["float"]["sha256"] == G.sha256_file(committed_f32)
                a = G.ort_run(f32, s["d"]["test"][0])
                b = G.ort_run(committed_f32, s["d"]["test"][0])
                rec["float"]["max_abs_logit_diff_vs_committed_float_test"] = float(np.abs(a - b).max())
                rec["float"]["top1_agreement_vs_committed_float_test"] = float(
                    (G.first_argmax(a) == G.first_argmax(b)).mean())
        t0 = time.time()
        rec["float"].update(measure(f32, False, s)[0])
        timings["float_eval_s"] = round(time.time() - t0, 1)

        # 2. PTQ W4 of that float (the reference's method)
        ptq = out / f"{tag}_ptq_w4.onnx"
        t0 = time.time()
        W.quantize(f"{tag}_ptq_w4", spec, xcal, src=f32, out=ptq)
        m, ptq_pred_te = measure(ptq, True, s)
        timings["ptq_eval_s"] = round(time.time() - t0, 1)
        sp = spread_by_tag.get(tag)
        rec["ptq_w4"] = dict(onnx=str(ptq), sha256=G.sha256_file(ptq), **m)
        if sp:
            rec["ptq_w4"]["spread_json"] = dict(w4_sha256=sp["w4_sha256"], sha256_equal=sp["w4_sha256"] ==
                                                rec["ptq_w4"]["sha256"], retain=sp["w4"]["retain"],
                                                test=sp["w4"]["test"])
        if res and source == "committed":
            rec["ptq_w4"]["sha256_equals_committed_reference"] = rec["ptq_w4"]["sha256"] == committed["sha256"]

        # 3. the fake-quantizer reproduces the PTQ model before any training (a check of the format)
        start = load_folded(FoldedCNN, f32)
        x500 = s["d"]["test"][0][:500]
        with torch.no_grad():
            d = float(np.abs(start(torch.from_numpy(x500)).numpy() - G.ort_run(f32, x500)).max())
        assert d < 1e-4, d
        start.calibrate(xcal)
        start.fake = True
        rec["ptq_w4"]["fake_quant_check"] = dict(
            top1_agreement_test=float((sim_predict(start, s["d"]["test"][0]) == ptq_pred_te).mean()),
            **w4_quant_checks(start, ptq, **qchecks))
        print(f"  seed {seed}: fake-quant vs onnxruntime PTQ, top-1 agreement on test "
              f"{rec['ptq_w4']['fake_quant_check']['top1_agreement_test']:.4f}", flush=True)

        # 4. QAT fine-tune, export, the same PTQ pipeline
        qmodel = load_folded(FoldedCNN, f32)
        log, timings["qat_train_s"] = finetune(qmodel, data, seed, True, xcal, f"{tag} qat")
        qf32 = out / f"{tag}_qat_f32.onnx"
        qmodel.fake = False
        G.export_onnx(qmodel, qf32)
        assert G.op_histogram(onnx.load(str(qf32))) == G.op_histogram(onnx.load(str(f32)))
        qw4 = out / f"{tag}_qat_w4.onnx"
        t0 = time.time()
        W.quantize(f"{tag}_qat_w4", spec, xcal, src=qf32, out=qw4)
        m, qat_pred_te = measure(qw4, True, s)
        lf, _ = measure(qf32, False, s)
        timings["qat_eval_s"] = round(time.time() - t0, 1)
        qmodel.calibrate(xcal)
        qmodel.fake = True
        rec["qat_w4"] = dict(onnx=str(qw4), sha256=G.sha256_file(qw4), latent_float_onnx=str(qf32),
                             latent_float_sha256=G.sha256_file(qf32), epochs_log=log, **m,
                             latent_float=lf,
                             fake_quant_check=dict(top1_agreement_test=float(
                                 (sim_predict(qmodel, s["d"]["test"][0]) == qat_pred_te).mean()),
                                 **w4_quant_checks(qmodel, qw4, **qchecks)))

        # 5. control: the same fine-tune in float, then PTQ
        if not args.no_control:
            cmodel = load_folded(FoldedCNN, f32)
            clog, timings["control_train_s"] = finetune(cmodel, data, seed, False, xcal, f"{tag} control")
            cf32 = out / f"{tag}_ft_f32.onnx"
            G.export_onnx(cmodel, cf32)
            cw4 = out / f"{tag}_ft_ptq_w4.onnx"
            t0 = time.time()
            W.quantize(f"{tag}_ft_ptq_w4", spec, xcal, src=cf32, out=cw4)
            m, _ = measure(cw4, True, s)
            cf, _ = measure(cf32, False, s)
            timings["control_eval_s"] = round(time.time() - t0, 1)
            rec["control_ft_ptq_w4"] = dict(onnx=str(cw4), sha256=G.sha256_file(cw4), float_onnx=str(cf32),
                                            float_sha256=G.sha256_file(cf32), epochs_log=clog, **m, float=cf)
        timings["seed_total_s"] = round(time.time() - ts, 1)
        rec["timings"] = timings
        doc["seeds"].append(rec)
        b = lambda k: rec[k]["bundled_10k"]  # noqa: E731
        print(f"{tag}: bundled RA float {pp(b('float')['RA'])} PTQ {pp(b('ptq_w4')['RA'])} QAT "
              f"{pp(b('qat_w4')['RA'])} (FA {pp(b('qat_w4')['FA'])}, TA {pp(b('qat_w4')['TA'])})"
              + (f" control {pp(b('control_ft_ptq_w4')['RA'])}" if not args.no_control else "")
              + f"; {timings}", flush=True)
        write()

    summ = {}
    for key in ("float", "ptq_w4", "qat_w4", "control_ft_ptq_w4"):
        recs = [r[key] for r in doc["seeds"] if key in r and r["tag"] != f"seed{cseed}_retrained"]
        if not recs:
            continue
        summ[key] = dict(
            bundled_10k={k: stats([pp(r["bundled_10k"][k]) for r in recs]) for k in ("FA", "RA", "TA")},
            full={k: stats([pp(r["full"][k]) for r in recs]) for k in ("forget", "retain", "test")})
    doc["summary_pp"] = dict(note=f"percent over --seeds (seed {cseed} = the committed float; seed{cseed}_retrained "
                                  "left out); sd with ddof=1", **summ)
    doc["total_seconds"] = round(time.time() - t_all, 1)
    doc["complete"] = True
    write()
    print(f"done in {doc['total_seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
