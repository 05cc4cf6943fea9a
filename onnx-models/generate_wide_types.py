#!/usr/bin/env python3
"""Fixtures for the quantizer options qforget used to refuse (issue 10, second round).

Quantizes committed float models (no training here) with onnxruntime quantize_static, QDQ,
MinMax calibration on the first 300 training images of the bundled data/<set>:
  - fmnist_cnn_qdq_wu8pt: weight_type=QUInt8, per_channel=False. Asymmetric uint8 weights,
    one zero point per tensor anywhere in 0..255 (per channel, onnxruntime keeps QUInt8 weights
    symmetric around 128).
  - mnist_res_qdq_wu8pt: the same options on the residual CNN (Add, GlobalAveragePool).
  - mnist_res_qdq_a16: activation_type=QUInt16 (uint16 activations, int8 per-channel weights:
    A16W8), extra_options UseQDQContribOps=False and opset 21 (onnxruntime needs opset >= 21 to
    write 16-bit QuantizeLinear/DequantizeLinear in the ai.onnx domain).
and writes onnxruntime's reference outputs (ORT_DISABLE_ALL, one thread, the full 10k test set)
through generate_other_quantizers.reference, like the other fixtures (the 16-bit one's into
expected/a16/: qforget refuses 16-bit activations by name for now, see README.md).

    /opt/qfpy/bin/python onnx-models/generate_wide_types.py [--data data] [--only NAME]
        [--extra DIR]   # also the other layer mixes (MLP WU8 PT, CNN/residual/MLP A16), uncommitted
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_other_quantizers as goq  # noqa: E402

HERE = goq.HERE


def to_opset(src: Path, dst: Path, opset: int) -> None:
    """The float model converted to `opset` (onnxruntime writes 16-bit Q/DQ only at opset 21)."""
    import onnx
    from onnx import version_converter

    m = onnx.load(str(src))
    if m.opset_import[0].version < opset:
        m = version_converter.convert_version(m, opset)
    onnx.save(m, str(dst))


def wu8pt(s: Path, o: Path, x: np.ndarray) -> dict:
    from onnxruntime.quantization import QuantType

    return goq.ort_quantize(s, o, x, None, per_channel=False, weight_type=QuantType.QUInt8)


def a16(act_type: str, weight_type: str = "QInt8", per_channel: bool = True):
    def q(s: Path, o: Path, x: np.ndarray) -> dict:
        from onnxruntime.quantization import QuantType

        with tempfile.TemporaryDirectory() as td:
            s21 = Path(td) / "f21.onnx"
            to_opset(s, s21, 21)
            how = goq.ort_quantize(s21, o, x, None, per_channel=per_channel,
                                   activation_type=getattr(QuantType, act_type),
                                   weight_type=getattr(QuantType, weight_type),
                                   extra_options={"UseQDQContribOps": False})
        how["float_model_opset"] = "converted to 21"
        return how

    return q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent / "data"))
    ap.add_argument("--only", action="append")
    ap.add_argument("--extra", help="also write uncommitted variants into this directory")
    args = ap.parse_args()
    root = Path(args.data)
    data = {ds: goq.load(root, ds) for ds in ("mnist", "fashion-mnist")}
    cal = {ds: data[ds]["train"][0][: goq.CALIB_N] for ds in data}
    expected = goq.EXPECTED
    fixtures = [
        ("fmnist_cnn_qdq_wu8pt", "fmnist_cnn_f32.onnx", "fashion-mnist", wu8pt),
        # The residual net with the same weights: its class-wise request was refused until the
        # guard's back-off stopped releasing the re-quantization band's drift at once.
        ("mnist_res_qdq_wu8pt", "mnist_res_f32.onnx", "mnist", wu8pt),
        ("mnist_res_qdq_a16", "mnist_res_f32.onnx", "mnist", a16("QUInt16")),
    ]
    for name, src, ds, quant in fixtures:
        if args.only and name not in args.only:
            continue
        print(f"quantize {name}", flush=True)
        how = quant(HERE / src, HERE / f"{name}.onnx", cal[ds])
        # 16-bit references go to expected/a16/ (uint16 logits; qforget refuses the model for
        # now, so the fixture test over expected/ must not pick them up).
        goq.EXPECTED = expected / "a16" if "a16" in name else expected
        goq.EXPECTED.mkdir(exist_ok=True)
        goq.reference(name, ds, data, how, src)
    if args.extra:
        extra = Path(args.extra)
        extra.mkdir(parents=True, exist_ok=True)
        variants = [
            ("mlp_wu8pt", "mnist_mlp_matmul_f32.onnx", "mnist", wu8pt),
            ("cnn_a16", "fmnist_cnn_f32.onnx", "fashion-mnist", a16("QUInt16")),
            ("cnn_a16s", "fmnist_cnn_f32.onnx", "fashion-mnist", a16("QInt16")),
            ("res_a16s", "mnist_res_f32.onnx", "mnist", a16("QInt16")),
            ("mlp_a16", "mnist_mlp_matmul_f32.onnx", "mnist", a16("QUInt16")),
            ("cnn_a16_wu8pt", "fmnist_cnn_f32.onnx", "fashion-mnist", a16("QUInt16", "QUInt8", False)),
        ]
        for name, src, ds, quant in variants:
            if args.only and name not in args.only:
                continue
            out = extra / f"{name}.onnx"
            try:
                quant(HERE / src, out, cal[ds])
            except Exception as e:  # reported, not fatal
                print(f"  {name}: quantizer failed: {e}")
                continue
            xte, yte = data[ds]["test"]
            y = goq.ort_run(out, xte)
            np.save(extra / f"{name}.logits.npy", y)
            print(f"  {name}: ORT acc {float((np.argmax(y, 1) == yte).mean()):.4f}", flush=True)


if __name__ == "__main__":
    main()
