#!/usr/bin/env python3
"""The integer design for 16-bit activations (A16W8), checked against onnxruntime in numpy.

    /opt/qfpy/bin/python onnx-models/a16_numpy_check.py [--n 10000]

qforget refuses 16-bit activations for now (onnx-models/README.md). This recomputes the
committed mnist_res_qdq_a16.onnx (onnxruntime QUInt16 activations, int8 weights) the way an
integer import would: every Conv/Gemm as exact integer sums of (x - x_zp)(w - w_zp) plus the
int32 bias, requantized with the float32 multiplier x_scale * w_scale[c] / y_scale (round half
to even, + zp, clamp to uint16), and its 16-bit inputs split into high and low bytes, each
multiplied by the int8 weights separately (what the u8 x s8 GEMM kernels can do) and
recombined as 256 * hi + lo - zp (asserted equal to the direct sum); MaxPool, Flatten on the
integers; Add and GlobalAveragePool in float32 as onnxruntime runs them with optimizations off.
It prints how far that lands from onnxruntime's references in expected/a16/ (ORT_DISABLE_ALL,
which runs DequantizeLinear -> float op -> QuantizeLinear). --float instead runs Conv/Gemm in
float32 on the dequantized values (numpy's summation order, not onnxruntime's), the other
design.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate_other_quantizers as goq  # noqa: E402
from qop_numpy_check import _f32, conv_acc, max_pool, quantize_linear, requant  # noqa: E402


def split_conv(xq, xzp, wq, wzp, pads, strides, dil, group):
    """conv_acc through two byte planes: 256 * conv(hi) + conv(lo), zero point applied once."""
    hi, lo = (xq >> 8).astype(np.uint8), (xq & 0xFF).astype(np.uint8)
    zero = np.zeros((), np.uint8)
    acc = 256.0 * conv_acc(hi, zero, wq, wzp, pads, strides, dil, group) + \
        conv_acc(lo, zero, wq, wzp, pads, strides, dil, group)
    # The zero point: sum over each window of (w - w_zp), padding included (the padded input
    # is x_zp, i.e. 0 after the shift; conv_acc pads the unsplit planes with 0, so correct here).
    ones = np.ones_like(xq, dtype=np.uint16)
    window = conv_acc(ones, np.zeros((), np.uint16), wq, wzp, pads, strides, dil, group)
    return acc - float(xzp) * window


def float_conv(x, w, b, pads, strides):
    """Conv in float32 (numpy's float32 matrix product, not onnxruntime's summation order)."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - kh) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - kw) // strides[1] + 1
    cols = np.empty((n, c, kh, kw, oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i : i + strides[0] * oh : strides[0], j : j + strides[1] * ow : strides[1]]
    cols = cols.reshape(n, c * kh * kw, oh * ow)
    y = np.matmul(w.reshape(m, -1).astype(np.float32), cols)
    return (y.reshape(n, m, oh, ow) + b.reshape(1, -1, 1, 1)).astype(np.float32)


def run(path: Path, x: np.ndarray, floating: bool = False) -> np.ndarray:
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    env = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    env[m.graph.input[0].name] = x
    deq = {}  # name -> (q, scale, zero point) of a DequantizeLinear output
    pending = {}  # name -> (integer accumulator, its real step per channel)
    for node in m.graph.node:
        a = {k.name: helper.get_attribute_value(k) for k in node.attribute}
        op, ins, out = node.op_type, list(node.input), node.output[0]
        if op == "DequantizeLinear":
            q, s, z = (env[ins[0]], env[ins[1]], env[ins[2]])
            deq[out] = (q, s, z)
            env[out] = (q.astype(np.int64) - z.astype(np.int64)).astype(np.float32) * _f32(s) if np.ndim(s) == 0 \
                else None
            continue
        if op == "QuantizeLinear":
            s, z = env[ins[1]], env[ins[2]]
            if ins[0] in pending:
                acc, step = pending[ins[0]]
                y = requant(acc, (step / _f32(s)).astype(np.float32), z)
            else:
                y = quantize_linear(env[ins[0]], s, z)
            env[out] = y
            continue
        if op in ("Conv", "Gemm") and floating:
            xf, wf = env[ins[0]], deq_float(deq[ins[1]])
            bf = deq_float(deq[ins[2]])
            if op == "Conv":
                env[out] = float_conv(xf, wf, bf, a.get("pads", [0] * 4), a.get("strides", [1, 1]))
            else:
                env[out] = (np.matmul(xf, wf.T) + bf.reshape(1, -1)).astype(np.float32)
            continue
        if op in ("Conv", "Gemm"):
            xq, xs, xz = deq[ins[0]]
            wq, ws, wz = deq[ins[1]]
            bq, bs, _ = deq[ins[2]]
            if op == "Conv":
                args = (a.get("pads", [0] * 4), a.get("strides", [1, 1]), a.get("dilations", [1, 1]),
                        a.get("group", 1))
                acc = conv_acc(xq, xz, wq, wz, *args)
                split = split_conv(xq, xz, wq, wz, *args)
                assert np.array_equal(acc, split), "byte planes do not recombine"
                acc = acc + bq.astype(np.float64).reshape(1, -1, 1, 1)
                step = (_f32(xs) * _f32(ws)).reshape(1, -1, 1, 1)
            else:
                assert a.get("transB", 0) == 1
                wzv = wz.astype(np.float64).reshape(-1, 1) if np.ndim(wz) else float(wz)
                acc = (xq.astype(np.float64) - float(xz)) @ (wq.astype(np.float64) - wzv).T
                acc = acc + bq.astype(np.float64).reshape(1, -1)
                step = (_f32(xs) * _f32(ws)).reshape(1, -1)
            assert np.abs(acc).max() < 2**53
            pending[out] = (acc, step.astype(np.float32))
            continue
        i = [env[n] for n in ins]
        if op == "MaxPool":
            y = max_pool(i[0], a["kernel_shape"], a.get("strides", [1, 1]), a.get("pads", [0] * 4))
        elif op == "Add":
            y = (i[0] + i[1]).astype(np.float32)
        elif op == "GlobalAveragePool":
            y = i[0].mean(axis=(2, 3), keepdims=True, dtype=np.float32)
        elif op == "Flatten":
            y = i[0].reshape(i[0].shape[0], -1)
        else:
            raise NotImplementedError(op)
        env[out] = y
    return env[m.graph.output[0].name]


def deq_float(d):
    """A dequantized constant, per channel along axis 0 where the scale is a vector."""
    q, s, z = d
    shape = (-1,) + (1,) * (q.ndim - 1)
    zz = np.asarray(z, np.int64).reshape(shape) if np.ndim(z) else np.int64(z)
    ss = _f32(s).reshape(shape) if np.ndim(s) else np.float32(s)
    return (q.astype(np.int64) - zz).astype(np.float32) * ss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--float", action="store_true",
                    help="Conv/Gemm in float32 on dequantized values instead (the float design)")
    ap.add_argument("--data", default=str(HERE.parent / "data"))
    args = ap.parse_args()
    xte, yte = goq.load(Path(args.data), "mnist")["test"]
    xte, yte = xte[: args.n], yte[: args.n]
    want = np.load(HERE / "expected" / "a16" / "mnist_res_qdq_a16.logits.npy")[: args.n].astype(np.int64)
    got = np.concatenate([run(HERE / "mnist_res_qdq_a16.onnx", xte[i : i + 500], args.float)
                          for i in range(0, len(xte), 500)])
    # The graph output is the final DequantizeLinear: back to its uint16 integers.
    import onnx
    from onnx import numpy_helper

    mdl = onnx.load(str(HERE / "mnist_res_qdq_a16.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in mdl.graph.initializer}
    s, z = inits["logits_scale"], inits["logits_zero_point"]
    q = np.clip(np.rint(got / _f32(s)) + np.float32(z), 0, 65535).astype(np.int64)
    d = np.abs(q - want)
    top = (np.argmax(q, 1) == np.argmax(want, 1)).sum()
    print(f"{len(q)} images: max |d| {d.max()} LSB, {int((d > 0).sum())} of {d.size} logits off, "
          f"{int((d > 1).sum())} more than 1 LSB; top-1 equal on {top}/{len(q)}; "
          f"accuracy {float((np.argmax(q, 1) == yte).mean()):.4f}")


if __name__ == "__main__":
    main()
