#!/usr/bin/env python3
"""Peer benchmark: the same OEU steps as qforget's int8 engine, in PyTorch CPU with fp32 fake-quant.

    /opt/qfpy/bin/python benches/peer_oeu.py                                  # torch side only
    /opt/qfpy/bin/python benches/peer_oeu.py --qforget target/release/qforget --out /tmp/peer.json

The torch twin of a QDQ model is built from the .onnx file itself (onnx package): every
DequantizeLinear of an int8 initializer becomes an f32 parameter (the dequantized weights) that is
fake-quantized in the forward pass with the file's per-channel (or per-tensor) scales and zero
points (`torch.fake_quantize_per_channel_affine`, range --weight-qmin..127); int32 biases are f32
parameters rounded to their scale (s_in * s_w[c]) with a straight-through estimator; every
QuantizeLinear -> DequantizeLinear pair on an activation becomes
`torch.fake_quantize_per_tensor_affine` with the file's scale and zero point (u8 0..255 or s8
-128..127). Gradients pass straight through rounding and are zero outside the clamp range. Ops:
Conv, Gemm, MatMul, Add, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Flatten.

OEU step (DESIGN.md, "OEU as implemented"), for a forget batch B_f and a retain batch B_r:
    L_f = -mean_i H(softmax(z_i)) / ln C        L_r = CE(B_r)
    g_f, g_r = grad L_f, grad L_r, flattened over all weights and biases
    g_f_perp = g_f - <g_f, g_r> / (|g_r|^2 + 1e-12) * g_r
    theta <- theta - lr * (g_f_perp + lambda * g_r), torch.optim.SGD(momentum=0.9)
One epoch = one pass over the (per-epoch seeded-shuffled) forget set in batches of --forget-batch,
each paired with the next batch of --retain-batch from a seeded shuffle of the retain set (the retain
cursor runs on across epochs; the retain set is reshuffled when it runs out). Forget set: a seeded
random --forget-random fraction of the training split, or every image of --forget-class K.

Each torch configuration runs in a fresh child process (so its peak RSS is its own): the child reads
the data and the model, then times each epoch (wall clock around the steps only; data is already in
memory as tensors). Peak RSS = getrusage(RUSAGE_SELF).ru_maxrss of that child; its RSS before torch
is imported (python + numpy + data reader) is reported for reference. The fidelity check (twin vs
onnxruntime ORT_DISABLE_ALL on the first --verify-n test images, top-1 agreement >= 99 % required)
runs in its own child so that onnxruntime does not count in the benchmark's memory.

With --qforget BIN it also runs, per thread count,
    BIN forget MODEL --dataset DIR --forget-random F --seed S --method oeu --epochs E --lr X --json
        --threads T --export TMP.onnx --lambda L --momentum M --forget-batch B --retain-batch B
(the last four spell out the torch side's OEU settings; --qforget-minimal leaves them to qforget's
defaults; --same-forget-set replaces --forget-random by --forget-ids with the torch side's set)
and reads `epoch_seconds` from its JSON; its peak RSS is the child's ru_maxrss from os.wait4. If
that command fails, its stderr is printed and the torch figures are still reported.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Passive OpenMP waits: spinning waits make torch several times slower when anything else uses a
# core. Override with OMP_WAIT_POLICY=ACTIVE in the environment for an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "onnx-models" / "fmnist_overfit_qdq.onnx"
DEFAULT_DATA = REPO / "data" / "fashion-mnist"


def maxrss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ----------------------------------------------------------------------------------------------
# data (numpy only)


def read_idx(path: Path):
    import numpy as np

    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, f"{path}: not an unsigned-byte idx file"
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(root: Path, split: str):
    import numpy as np

    prefix = {"train": "train", "test": "t10k"}[split]
    x = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    return (x.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28), y.astype(np.int64)


def forget_indices(n: int, args):
    """Forget set (sorted indices into the training split) and retain set."""
    import numpy as np

    if args.forget_class is not None:
        return None  # decided from the labels by the caller
    rng = np.random.default_rng(args.seed)
    k = int(round(args.forget_random * n))
    f = np.sort(rng.permutation(n)[:k])
    return f


# ----------------------------------------------------------------------------------------------
# the torch twin of a QDQ graph


def build_twin(model_path: Path, weight_qmin: int):
    import numpy as np
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import helper, numpy_helper

    m = onnx.load(str(model_path))
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    # A Constant node's value is an initializer to the ops that read it; nodes nothing reads
    # (onnxruntime's quantizer leaves the Constant bounds of a folded ReLU6 Clip behind) are
    # skipped, as onnxruntime skips them.
    for n in g.node:
        if n.op_type == "Constant":
            value = next(a for a in n.attribute if a.name == "value")
            inits[n.output[0]] = numpy_helper.to_array(value.t)
    init_names = set(inits)
    live, read = [], {o.name for o in g.output}
    for n in reversed(list(g.node)):
        if any(o in read for o in n.output):
            live.append(n)
            read.update(i for i in n.input if i)
    nodes = [n for n in reversed(live) if n.op_type != "Constant"]
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in nodes]

    params = []  # torch Parameters, in node order
    param_names = []
    plan = []  # (kind, node, attrs, extra)

    def qrange(dtype):
        if dtype == np.uint8:
            return 0, 255
        if dtype == np.int8:
            return -128, 127
        raise ValueError(f"unsupported activation dtype {dtype}")

    for n, a in zip(nodes, attrs):
        op = n.op_type
        if op == "DequantizeLinear" and n.input[0] in init_names:
            q = inits[n.input[0]]
            s = inits[n.input[1]].astype(np.float32)
            zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros_like(s, dtype=q.dtype)
            axis = a.get("axis", 1)
            if s.size == 1:  # per tensor
                deq = (q.astype(np.float32) - np.float32(zp.reshape(-1)[0])) * s.reshape(-1)[0]
            else:  # per channel along `axis`
                shape = [1] * q.ndim
                shape[axis] = -1
                deq = (q.astype(np.float32) - zp.astype(np.float32).reshape(shape)) * s.reshape(shape)
            p = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(deq, dtype=np.float32)))
            params.append(p)
            param_names.append(n.input[0])
            if q.dtype == np.int32:  # bias at scale s_in * s_w[c]: rounding only (int32 never clamps here)
                kind = ("bias", torch.from_numpy(np.broadcast_to(s.reshape(-1) if s.size > 1 else s.reshape(()),
                                                                 q.shape).astype(np.float32)))
            elif q.dtype == np.int8 and s.size > 1:
                kind = ("wpc", torch.from_numpy(s.reshape(-1).copy()),
                        torch.from_numpy(zp.reshape(-1).astype(np.int32)), axis, weight_qmin, 127)
            elif q.dtype == np.int8:
                kind = ("wpt", float(s.reshape(-1)[0]), int(zp.reshape(-1)[0]), weight_qmin, 127)
            else:  # uint8 "bias" of MatMul+Add graphs: quantized like an activation, but trainable
                lo, hi = qrange(q.dtype)
                kind = ("wpt", float(s.reshape(-1)[0]), int(zp.reshape(-1)[0]), lo, hi)
            plan.append(("param", n, a, (p, kind)))
        elif op == "QuantizeLinear":
            s = float(inits[n.input[1]].reshape(-1)[0])
            zp = inits[n.input[2]]
            lo, hi = qrange(zp.dtype)
            plan.append(("fq", n, a, (s, int(zp.reshape(-1)[0]), lo, hi)))
        elif op == "DequantizeLinear":
            plan.append(("id", n, a, None))
        elif op in ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool",
                    "GlobalAveragePool", "Flatten"):
            plan.append((op, n, a, None))
        else:
            raise ValueError(f"op {op} ({n.name}) is not supported by the torch twin")

    in_name = g.input[0].name
    out_name = g.output[0].name

    def const(name, env):
        if name in env:
            return env[name]
        return torch.from_numpy(inits[name].astype(np.float32))

    def pads2d(a):
        p = list(a.get("pads", [0, 0, 0, 0]))
        if p[0] != p[2] or p[1] != p[3]:
            raise ValueError(f"asymmetric pads {p}")
        return p[0], p[1]

    def forward(x):
        env = {in_name: x}
        for kind, n, a, extra in plan:
            if kind == "param":
                p, k = extra
                if k[0] == "wpc":
                    _, s, zp, axis, lo, hi = k
                    v = torch.fake_quantize_per_channel_affine(p, s, zp, axis, lo, hi)
                elif k[0] == "wpt":
                    _, s, zp, lo, hi = k
                    v = torch.fake_quantize_per_tensor_affine(p, s, zp, lo, hi)
                else:  # int32 bias: round to its scale, straight through
                    s = k[1]
                    v = p + (torch.round(p / s) * s - p).detach()
                env[n.output[0]] = v
            elif kind == "fq":
                s, zp, lo, hi = extra
                env[n.output[0]] = torch.fake_quantize_per_tensor_affine(env[n.input[0]], s, zp, lo, hi)
            elif kind == "id":
                env[n.output[0]] = env[n.input[0]]
            elif kind == "Conv":
                w = env[n.input[1]]
                b = env[n.input[2]] if len(n.input) > 2 and n.input[2] else None
                env[n.output[0]] = F.conv2d(env[n.input[0]], w, b, stride=tuple(a.get("strides", [1, 1])),
                                            padding=pads2d(a), dilation=tuple(a.get("dilations", [1, 1])),
                                            groups=a.get("group", 1))
            elif kind == "Gemm":
                A, B = env[n.input[0]], env[n.input[1]]
                if a.get("transA", 0):
                    A = A.t()
                if a.get("transB", 0):
                    B = B.t()
                y = a.get("alpha", 1.0) * (A @ B)
                if len(n.input) > 2 and n.input[2]:
                    y = y + a.get("beta", 1.0) * env[n.input[2]]
                env[n.output[0]] = y
            elif kind == "MatMul":
                env[n.output[0]] = const(n.input[0], env) @ const(n.input[1], env)
            elif kind == "Add":
                env[n.output[0]] = const(n.input[0], env) + const(n.input[1], env)
            elif kind == "Relu":
                env[n.output[0]] = torch.relu(env[n.input[0]])
            elif kind == "Clip":
                lo = float(inits[n.input[1]]) if len(n.input) > 1 and n.input[1] else None
                hi = float(inits[n.input[2]]) if len(n.input) > 2 and n.input[2] else None
                env[n.output[0]] = torch.clamp(env[n.input[0]], lo, hi)
            elif kind == "MaxPool":
                env[n.output[0]] = F.max_pool2d(env[n.input[0]], tuple(a["kernel_shape"]),
                                                tuple(a.get("strides", a["kernel_shape"])), pads2d(a),
                                                ceil_mode=bool(a.get("ceil_mode", 0)))
            elif kind == "AveragePool":
                env[n.output[0]] = F.avg_pool2d(env[n.input[0]], tuple(a["kernel_shape"]),
                                                tuple(a.get("strides", a["kernel_shape"])), pads2d(a),
                                                ceil_mode=bool(a.get("ceil_mode", 0)),
                                                count_include_pad=bool(a.get("count_include_pad", 0)))
            elif kind == "GlobalAveragePool":
                env[n.output[0]] = env[n.input[0]].mean(dim=(2, 3), keepdim=True)
            elif kind == "Flatten":
                env[n.output[0]] = torch.flatten(env[n.input[0]], a.get("axis", 1))
        return env[out_name]

    return forward, params, param_names


# ----------------------------------------------------------------------------------------------
# child: fidelity check against onnxruntime


def child_verify(args) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    torch.set_num_threads(max(args.threads_list))
    xte, yte = load_split(Path(args.dataset), "test")
    x = xte[: args.verify_n]
    forward, params, _ = build_twin(Path(args.model), args.weight_qmin)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(args.model), so, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = forward(torch.from_numpy(x)).numpy()
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    return dict(n=len(x), top1_agreement=agree, max_abs_logit_diff=float(np.abs(ref - got).max()),
                ort_acc=float((ref.argmax(1) == yte[: len(x)]).mean()),
                twin_acc=float((got.argmax(1) == yte[: len(x)]).mean()),
                n_params=int(sum(p.numel() for p in params)))


# ----------------------------------------------------------------------------------------------
# child: the timed OEU run


def child_bench(args) -> dict:
    rss_start = current_rss_mb()
    import numpy as np

    xtr, ytr = load_split(Path(args.dataset), "train")
    xte, yte = load_split(Path(args.dataset), "test")
    n = len(xtr)
    if args.forget_class is not None:
        fidx = np.flatnonzero(ytr == args.forget_class)
    else:
        fidx = forget_indices(n, args)
    mask = np.zeros(n, bool)
    mask[fidx] = True
    ridx = np.flatnonzero(~mask)
    rss_before_torch = current_rss_mb()
    maxrss_before_torch = maxrss_mb()

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)
    t_load = time.time()
    forward, params, names = build_twin(Path(args.model), args.weight_qmin)
    model_load_s = time.time() - t_load
    rss_after_load = current_rss_mb()

    Xtr, Ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    Xte, Yte = torch.from_numpy(xte), torch.from_numpy(yte)
    C = 10
    lnC = float(np.log(C))

    def accuracy(idx_or_none, X, Y):
        correct, tot = 0, 0
        idx = torch.arange(len(X)) if idx_or_none is None else torch.from_numpy(idx_or_none)
        with torch.no_grad():
            for i in range(0, len(idx), args.eval_batch):
                j = idx[i : i + args.eval_batch]
                correct += int((forward(X[j]).argmax(1) == Y[j]).sum())
                tot += len(j)
        return 100.0 * correct / tot  # percent, like qforget's JSON

    # class-wise forgetting: test accuracy on the other classes (as qforget reports it)
    test_idx = None if args.forget_class is None else np.flatnonzero(yte != args.forget_class)

    def metrics():
        return dict(forget_acc=accuracy(fidx, Xtr, Ytr), retain_acc=accuracy(ridx, Xtr, Ytr),
                    test_acc=accuracy(test_idx, Xte, Yte))

    before = metrics() if args.eval else None

    opt = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum)
    rng = np.random.default_rng(args.seed + 1)
    retain_order = rng.permutation(ridx)
    rcur = 0
    epoch_seconds, logs = [], []
    steps = 0
    for epoch in range(args.epochs):
        forder = torch.from_numpy(rng.permutation(fidx))
        t0 = time.perf_counter()
        dots, lf_sum, lr_sum, nb = 0.0, 0.0, 0.0, 0
        for i in range(0, len(forder), args.forget_batch):
            bf = forder[i : i + args.forget_batch]
            if rcur + args.retain_batch > len(retain_order):
                retain_order = rng.permutation(ridx)
                rcur = 0
            br = torch.from_numpy(retain_order[rcur : rcur + args.retain_batch])
            rcur += args.retain_batch

            zf = forward(Xtr[bf])
            logp = F.log_softmax(zf, dim=1)
            ent = -(logp.exp() * logp).sum(1)
            loss_f = -(ent.mean() / lnC)
            gf = torch.autograd.grad(loss_f, params)
            zr = forward(Xtr[br])
            loss_r = F.cross_entropy(zr, Ytr[br])
            gr = torch.autograd.grad(loss_r, params)

            gf_flat = torch.cat([t.reshape(-1) for t in gf])
            gr_flat = torch.cat([t.reshape(-1) for t in gr])
            dot = torch.dot(gf_flat, gr_flat)
            coef = dot / (torch.dot(gr_flat, gr_flat) + 1e-12)
            upd = gf_flat - coef * gr_flat + args.lam * gr_flat
            off = 0
            for p in params:
                k = p.numel()
                p.grad = upd[off : off + k].view_as(p)
                off += k
            opt.step()
            steps += 1
            nb += 1
            dots += float(dot)
            lf_sum += float(loss_f)
            lr_sum += float(loss_r)
        dt = time.perf_counter() - t0
        epoch_seconds.append(dt)
        logs.append(dict(epoch=epoch + 1, seconds=round(dt, 4), steps=nb, mean_forget_loss=lf_sum / nb,
                         mean_retain_loss=lr_sum / nb, mean_dot_gf_gr=dots / nb))

    after = metrics() if args.eval else None
    return dict(
        method="torch fp32 fake-quant", threads=args.threads, torch=torch.__version__,
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        epoch_seconds=epoch_seconds, epoch_mean_s=sum(epoch_seconds) / len(epoch_seconds),
        steps=steps, forget_n=int(len(fidx)), retain_n=int(len(ridx)), n_params=int(sum(p.numel() for p in params)),
        model_load_s=model_load_s, epochs_log=logs, before=before, after=after,
        rss_mb=dict(start=rss_start, before_torch=rss_before_torch, maxrss_before_torch=maxrss_before_torch,
                    after_model=rss_after_load, peak=maxrss_mb()),
    )


# ----------------------------------------------------------------------------------------------
# parent


def run_child(argv: list[str]):
    """Run a child process; return (returncode, stdout, stderr, peak RSS MB, wall s)."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.time()
        p = subprocess.Popen(argv, stdout=fo, stderr=fe)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - t0
        fo.seek(0)
        fe.seek(0)
        return p.returncode, fo.read().decode(errors="replace"), fe.read().decode(errors="replace"), \
            ru.ru_maxrss / 1024.0, wall


def last_json(text: str):
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    i = text.find("{")
    return json.loads(text[i:]) if i >= 0 else None


def self_argv(args, mode: str, threads: int | None = None) -> list[str]:
    a = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--model", str(args.model),
         "--dataset", str(args.dataset), "--seed", str(args.seed), "--epochs", str(args.epochs),
         "--lr", repr(args.lr), "--lam", repr(args.lam), "--momentum", repr(args.momentum),
         "--forget-batch", str(args.forget_batch), "--retain-batch", str(args.retain_batch),
         "--weight-qmin", str(args.weight_qmin), "--verify-n", str(args.verify_n),
         "--eval-batch", str(args.eval_batch), "--threads", str(threads or max(args.threads_list))]
    if args.forget_class is not None:
        a += ["--forget-class", str(args.forget_class)]
    else:
        a += ["--forget-random", repr(args.forget_random)]
    if not args.eval:
        a += ["--no-eval"]
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATA, help="idx.gz directory (train-*, t10k-*)")
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--forget-random", type=float, default=0.1)
    sel.add_argument("--forget-class", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--lam", "--lambda", dest="lam", type=float, default=1.0, help="weight of g_r in the update")
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--forget-batch", type=int, default=64)
    ap.add_argument("--retain-batch", type=int, default=64)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts, one run each")
    ap.add_argument("--weight-qmin", type=int, default=-127, help="lower clamp of int8 weights (file: -127)")
    ap.add_argument("--verify-n", type=int, default=1000, help="test images for the twin-vs-onnxruntime check")
    ap.add_argument("--no-verify", dest="verify", action="store_false")
    ap.add_argument("--no-eval", dest="eval", action="store_false",
                    help="skip forget/retain/test accuracy before and after (outside the timing anyway)")
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--qforget", type=Path, help="qforget binary: also run `qforget forget ... --json`")
    ap.add_argument("--qforget-extra", default="", help="extra arguments for qforget forget (one string)")
    ap.add_argument("--same-forget-set", action="store_true",
                    help="give qforget the torch side's forget set (--forget-ids) instead of --forget-random")
    ap.add_argument("--qforget-minimal", action="store_true",
                    help="pass qforget only the brief's flags (not --lambda/--momentum/--forget-batch/--retain-batch)")
    ap.add_argument("--out", type=Path, help="write every figure as JSON")
    ap.add_argument("--child", choices=["verify", "bench"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.threads_list = [int(t) for t in str(args.threads).split(",") if t.strip()]

    if args.child:
        args.threads = args.threads_list[0]
        res = child_verify(args) if args.child == "verify" else child_bench(args)
        print(json.dumps(res))
        return

    report = dict(model=str(args.model), dataset=str(args.dataset), seed=args.seed, epochs=args.epochs,
                  lr=args.lr, lam=args.lam, momentum=args.momentum, forget_batch=args.forget_batch,
                  retain_batch=args.retain_batch,
                  forget=(f"class {args.forget_class}" if args.forget_class is not None
                          else f"random {args.forget_random}"),
                  cpu=cpu_name(), nproc=os.cpu_count(), loadavg_start=os.getloadavg(), runs=[])
    if args.verify:
        rc, out, err, rss, _ = run_child(self_argv(args, "verify"))
        if rc != 0:
            sys.exit(f"twin check failed:\n{err}")
        v = last_json(out)
        report["twin_check"] = v
        print(f"twin vs onnxruntime on {v['n']} test images: top-1 agreement {100 * v['top1_agreement']:.2f} %, "
              f"max |logit diff| {v['max_abs_logit_diff']:.4g}, acc ORT {100 * v['ort_acc']:.2f} % / twin "
              f"{100 * v['twin_acc']:.2f} %", file=sys.stderr)
        if v["top1_agreement"] < 0.99:
            sys.exit("the torch twin agrees with onnxruntime on fewer than 99 % of the images; not benchmarking")

    for t in args.threads_list:
        rc, out, err, rss, wall = run_child(self_argv(args, "bench", t))
        if rc != 0:
            print(f"torch run with {t} threads failed:\n{err}", file=sys.stderr)
            continue
        r = last_json(out)
        r["peak_rss_mb_wait4"] = rss
        r["process_wall_s"] = wall
        report["runs"].append(r)
        print(f"torch {t} thread(s): epochs {[round(s, 3) for s in r['epoch_seconds']]} s, peak RSS "
              f"{r['rss_mb']['peak']:.0f} MB (before torch {r['rss_mb']['before_torch']:.0f} MB)", file=sys.stderr)

        if args.qforget:
            with tempfile.TemporaryDirectory() as td:
                cmd = [str(args.qforget), "forget", str(args.model), "--dataset", str(args.dataset)]
                if args.forget_class is not None:
                    cmd += ["--forget-class", str(args.forget_class)]
                elif args.same_forget_set:  # the torch side's exact forget set
                    ids = Path(td) / "forget_ids.txt"
                    n = len(read_idx(Path(args.dataset) / "train-labels-idx1-ubyte.gz"))
                    ids.write_text("".join(f"{i}\n" for i in forget_indices(n, args)))
                    cmd += ["--forget-ids", str(ids)]
                else:
                    cmd += ["--forget-random", repr(args.forget_random)]
                cmd += ["--seed", str(args.seed), "--method", "oeu", "--epochs", str(args.epochs),
                        "--lr", repr(args.lr), "--json", "--threads", str(t),
                        "--export", str(Path(td) / "x.onnx")]
                if not args.qforget_minimal:  # the OEU settings the torch side uses, spelled out
                    cmd += ["--lambda", repr(args.lam), "--momentum", repr(args.momentum),
                            "--forget-batch", str(args.forget_batch), "--retain-batch", str(args.retain_batch)]
                cmd += args.qforget_extra.split()
                rc, out, err, rss, wall = run_child(cmd)
                q = dict(method="qforget int8", threads=t, command=" ".join(cmd), returncode=rc,
                         peak_rss_mb_wait4=rss, process_wall_s=wall)
                js = None
                if rc == 0:
                    try:
                        js = last_json(out)
                    except (json.JSONDecodeError, ValueError):
                        js = None
                if rc != 0 or not js or not js.get("epoch_seconds"):
                    print(f"qforget run with {t} threads failed (exit {rc}):\n  {' '.join(cmd)}\n"
                          f"stderr:\n{err.strip()}\nstdout (head):\n{out.strip()[:2000]}", file=sys.stderr)
                    q["error"] = err.strip()[-4000:] or "no epoch_seconds in its JSON"
                else:
                    q.update(epoch_seconds=js["epoch_seconds"],
                             epoch_mean_s=sum(js["epoch_seconds"]) / len(js["epoch_seconds"]),
                             before=js.get("before"), after=js.get("after"), seconds=js.get("seconds"),
                             steps=js.get("steps"), forget_n=js.get("forget_count"),
                             retain_n=js.get("retain_count"), settings=js.get("settings"), notes=js.get("notes"))
                q["rss_mb"] = dict(peak=rss)
                report["runs"].append(q)

    report["loadavg_end"] = os.getloadavg()
    print_table(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def print_table(report: dict) -> None:
    runs = report["runs"]
    torch_by_t = {r["threads"]: r for r in runs if r["method"].startswith("torch") and "epoch_mean_s" in r}
    q_by_t = {r["threads"]: r for r in runs if r["method"].startswith("qforget") and "epoch_mean_s" in r}
    print(f"OEU peer benchmark: {Path(report['model']).name}, {report['dataset']}, forget {report['forget']}, "
          f"seed {report['seed']}, {report['epochs']} epochs, lr {report['lr']}, lambda {report['lam']}, "
          f"batches {report['forget_batch']}/{report['retain_batch']}; {report['cpu']} ({report['nproc']} cpus), "
          f"load average {report['loadavg_start'][0]:.2f} at start, {report['loadavg_end'][0]:.2f} at end\n")
    print("| method | threads | per-epoch s (mean) | epochs (s) | ratio torch/qforget | peak RSS MB | FA / RA / TA % before → after |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        t = r["threads"]
        if "epoch_mean_s" not in r:
            print(f"| {r['method']} | {t} | failed | | | {r.get('rss_mb', {}).get('peak', 0):.0f} | |")
            continue
        ratio = ""
        if t in torch_by_t and t in q_by_t:
            ratio = f"{torch_by_t[t]['epoch_mean_s'] / q_by_t[t]['epoch_mean_s']:.2f}× time, " \
                    f"{torch_by_t[t]['rss_mb']['peak'] / q_by_t[t]['rss_mb']['peak']:.2f}× RSS"
        after = r.get("after") or {}
        before = r.get("before") or {}
        acc = " / ".join(f"{after[k]:.2f}" for k in ("forget_acc", "retain_acc", "test_acc") if k in after)
        if before and after:
            acc = " / ".join(f"{before[k]:.2f}" for k in ("forget_acc", "retain_acc", "test_acc")) + " → " + acc
        eps = ", ".join(f"{s:.3f}" for s in r["epoch_seconds"])
        print(f"| {r['method']} | {t} | {r['epoch_mean_s']:.3f} | {eps} | {ratio} | {r['rss_mb']['peak']:.0f} | {acc} |")
    for r in runs:
        if r["method"].startswith("torch"):
            m = r["rss_mb"]
            print(f"\ntorch {r['threads']} thread(s): RSS before importing torch {m['before_torch']:.0f} MB "
                  f"(python + numpy + data), after loading the twin {m['after_model']:.0f} MB, peak {m['peak']:.0f} MB")
            break


if __name__ == "__main__":
    main()
