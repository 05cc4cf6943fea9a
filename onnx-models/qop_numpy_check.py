#!/usr/bin/env python3
"""An independent integer re-computation of the QOperator fixtures, in numpy.

    /opt/qfpy/bin/python onnx-models/qop_numpy_check.py            # all *_qop*.onnx fixtures
    (also run by generate.py, which stores the figures in expected/crosscheck.json)

onnxruntime runs QOperator graphs with its own integer kernels (MLAS), even with
ORT_DISABLE_ALL. This script recomputes the same graphs the plain way: int32 accumulation of
(x - x_zp) * (w - w_zp), plus the int32 bias, then requantization with the float32 multiplier
x_scale * w_scale[c] / y_scale, round half to even, + y_zp, clamp. It is both a check that the
references are exact integer results (not saturated by a CPU's int8 kernels) and an executable
statement of the arithmetic qforget has to reproduce. Sums are computed in float64 matrix products,
which are exact here (|sum| < 2^53).

Ops: QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul, com.microsoft.QGemm,
com.microsoft.QLinearAdd, com.microsoft.QLinearGlobalAveragePool, com.microsoft.QLinearAveragePool,
MaxPool, Flatten, Reshape.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _f32(a):
    return np.asarray(a, dtype=np.float32)


def requant(acc: np.ndarray, mult: np.ndarray, zp: np.ndarray) -> np.ndarray:
    """float32(acc) * float32 multiplier, round half to even, + zero point, clamp to zp's type."""
    info = np.iinfo(zp.dtype)
    v = np.rint(acc.astype(np.float32) * _f32(mult)) + np.float32(zp)
    return np.clip(v, info.min, info.max).astype(zp.dtype)


def quantize_linear(x, s, zp):
    info = np.iinfo(zp.dtype)
    v = np.rint(_f32(x) / np.float32(s)) + np.float32(zp)
    return np.clip(v, info.min, info.max).astype(zp.dtype)


def conv_acc(xq, xzp, wq, wzp, pads, strides, dilations, group):
    assert group == 1 and tuple(dilations) == (1, 1)
    n, c, h, w = xq.shape
    m, _, kh, kw = wq.shape
    x = xq.astype(np.float64) - float(xzp)  # padding holds the zero point, i.e. 0 after this shift
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - kh) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - kw) // strides[1] + 1
    cols = np.empty((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i : i + strides[0] * oh : strides[0], j : j + strides[1] * ow : strides[1]]
    cols = cols.reshape(n, c * kh * kw, oh * ow)
    wz = wq.astype(np.float64) - wzp.astype(np.float64).reshape(-1, *([1] * (wq.ndim - 1)))
    acc = np.einsum("mk,nkp->nmp", wz.reshape(m, -1), cols, optimize=True)
    return acc.reshape(n, m, oh, ow)


def max_pool(x, kernel, strides, pads):
    assert not any(pads)
    n, c, h, w = x.shape
    oh = (h - kernel[0]) // strides[0] + 1
    ow = (w - kernel[1]) // strides[1] + 1
    out = None
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            v = x[:, :, i : i + strides[0] * oh : strides[0], j : j + strides[1] * ow : strides[1]]
            out = v if out is None else np.maximum(out, v)
    return out


def run(model_path: Path, x: np.ndarray) -> np.ndarray:
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(model_path))
    env = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    env[m.graph.input[0].name] = x
    for node in m.graph.node:
        a = {k.name: helper.get_attribute_value(k) for k in node.attribute}
        i = [env[n] if n else None for n in node.input]
        op = node.op_type
        if op == "QuantizeLinear":
            y = quantize_linear(i[0], i[1], i[2])
        elif op == "DequantizeLinear":
            y = (i[0].astype(np.int32) - np.int32(i[2])).astype(np.float32) * np.float32(i[1])
        elif op == "QLinearConv":
            xq, xs, xzp, wq, ws, wzp, ys, yzp = i[:8]
            acc = conv_acc(xq, xzp, wq, wzp, a.get("pads", [0] * 4), a.get("strides", [1, 1]),
                           a.get("dilations", [1, 1]), a.get("group", 1))
            if len(i) > 8 and i[8] is not None:
                acc = acc + i[8].astype(np.float64).reshape(1, -1, 1, 1)
            mult = (_f32(xs) * _f32(ws) / _f32(ys)).reshape(1, -1, 1, 1)
            y = requant(acc, mult, yzp)
        elif op in ("QGemm", "QLinearMatMul"):
            if op == "QGemm":
                aq, as_, azp, bq, bs, bzp, c, ys, yzp = i[:9]
                assert a.get("alpha", 1.0) == 1.0 and not a.get("transA", 0)
                if a.get("transB", 0):
                    bq, bs_axis = bq.T, 1
                else:
                    bs_axis = 1
            else:
                aq, as_, azp, bq, bs, bzp, ys, yzp = i[:8]
                c, bs_axis = None, 1
            bz = bq.astype(np.float64) - np.asarray(bzp, np.float64).reshape(1, -1) if np.ndim(bzp) else \
                bq.astype(np.float64) - float(bzp)
            acc = (aq.astype(np.float64) - float(azp)) @ bz
            if c is not None:
                acc = acc + c.astype(np.float64).reshape(1, -1)
            mult = (_f32(as_) * _f32(bs) / _f32(ys)).reshape(1, -1)
            y = requant(acc, mult, yzp)
        elif op == "QLinearAdd":
            aq, as_, azp, bq, bs, bzp, cs, czp = i
            ra, rb = np.float32(as_) / np.float32(cs), np.float32(bs) / np.float32(cs)
            v = (ra * (aq.astype(np.float32) - np.float32(azp)) + rb * (bq.astype(np.float32) - np.float32(bzp)))
            info = np.iinfo(czp.dtype)
            y = np.clip(np.rint(v) + np.float32(czp), info.min, info.max).astype(czp.dtype)
        elif op == "QLinearGlobalAveragePool":
            xq, xs, xzp, ys, yzp = i
            assert a.get("channels_last", 0) == 0
            hw = xq.shape[2] * xq.shape[3]
            acc = xq.astype(np.int64).sum(axis=(2, 3), keepdims=True) - int(xzp) * hw
            # MLAS: multiplier = x_scale / float(image_size) / y_scale, bias = -x_zp * image_size
            y = requant(acc, _f32(xs) / np.float32(hw) / _f32(ys), yzp)
        elif op == "QLinearAveragePool":
            # onnxruntime's kernel works in float: dequantize each input, sum over the window in
            # row-major order, divide by the element count, then nearbyint(y / y_scale + y_zp).
            xq, xs, xzp, ys, yzp = i
            k, s = a["kernel_shape"], a["strides"]
            assert not any(a.get("pads", [0] * 4)) and not a.get("channels_last", 0)
            n, ch, h, w = xq.shape
            oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
            acc = np.zeros((n, ch, oh, ow), np.float32)
            for r in range(k[0]):
                for q in range(k[1]):
                    win = xq[:, :, r : r + s[0] * oh : s[0], q : q + s[1] * ow : s[1]].astype(np.int32) - int(xzp)
                    acc = acc + np.float32(xs) * win.astype(np.float32)
            acc = acc / np.float32(k[0] * k[1])
            info = np.iinfo(yzp.dtype)
            y = np.clip(np.rint(acc / np.float32(ys) + np.float32(yzp)), info.min, info.max).astype(yzp.dtype)
        elif op == "MaxPool":
            y = max_pool(i[0], a["kernel_shape"], a.get("strides", [1, 1]), a.get("pads", [0] * 4))
        elif op == "Flatten":
            ax = a.get("axis", 1)
            y = i[0].reshape(int(np.prod(i[0].shape[:ax])), -1)
        elif op == "Reshape":
            y = i[0].reshape(i[1])
        else:
            raise NotImplementedError(f"{node.domain}.{op}")
        env[node.output[0]] = y
    return env[m.graph.output[0].name]


def check(model_path: Path, x: np.ndarray, expected_q: np.ndarray, out_scale: float, out_zp: int,
          batch: int = 500) -> dict:
    outs = [run(model_path, x[k : k + batch]) for k in range(0, len(x), batch)]
    y = np.concatenate(outs)
    q = np.clip(np.rint(y.astype(np.float64) / out_scale) + out_zp,
                np.iinfo(expected_q.dtype).min, np.iinfo(expected_q.dtype).max).astype(np.int32)
    d = np.abs(q - expected_q.astype(np.int32))
    return dict(model=model_path.name, n=int(len(x)), max_abs_diff_lsb=int(d.max()),
                values_differing=int((d > 0).sum()), values_total=int(d.size),
                top1_agreement=float((q.argmax(1) == expected_q.argmax(1)).mean()))


def main() -> None:
    import json

    sys.path.insert(0, str(HERE))
    import generate as G

    root = Path(G.os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"))
    data = {ds: G.load_dataset(root, ds) for ds in ("mnist", "fashion-mnist")}
    for spec in G.QUANT_MODELS:
        if spec["fmt"] != "QOperator":
            continue
        rec = json.loads((G.EXPECTED / f"{spec['name']}.json").read_text())
        exp = np.load(G.EXPECTED / f"{spec['name']}.logits.npy")
        r = check(HERE / rec["model"], data[rec["dataset"]]["test"][0], exp, rec["output_scale"],
                  rec["output_zero_point"])
        print(json.dumps(r))


if __name__ == "__main__":
    main()
