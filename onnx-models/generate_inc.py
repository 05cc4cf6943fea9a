#!/usr/bin/env python3
"""Fixtures from Intel Neural Compressor's ONNX quantizer (issue 10, item 3).

Quantizes committed float models (no training here) with onnx-neural-compressor's
`quantize(model, out, StaticQuantConfig(...))` (MinMax calibration on the first 300 training images
of the model's dataset), and writes reference outputs from onnxruntime with graph optimizations
disabled (one thread, full 10k test set) through generate_other_quantizers.reference, so the Rust
fixture tests pick them up unchanged:

  fmnist_cnn_inc.onnx      INC defaults: QOperator, per-tensor weights, uint8 activations
  mnist_res_inc_qdq.onnx   QDQ, per-channel weights

INC runs onnxruntime's basic graph optimizations first and saves every initializer over 1 KB in an
external data file next to the model (`<model>.onnx_data`), which is how these fixtures come: they
exercise qforget's external-data loading.

Environment: a venv of its own (INC pulls numpy 1.26 and onnxruntime-extensions):
    python3 -m venv /opt/incpy
    /opt/incpy/bin/pip install onnx-neural-compressor==1.0 onnx==1.23.2 onnxruntime==1.32.0 \
        prettytable psutil py-cpuinfo scipy
    /opt/incpy/bin/python onnx-models/generate_inc.py [--data /work/shared/data]
    /opt/incpy/bin/python onnx-models/generate_inc.py --extra /tmp/inc_extra   # not committed
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate_other_quantizers as goq  # noqa: E402


def inc_quantize(src: Path, out: Path, xcal, **kw) -> dict:
    from importlib.metadata import version

    from onnx_neural_compressor import data_reader
    from onnx_neural_compressor.quantization import config, quantize

    for p in (out, out.with_name(out.name + "_data")):
        p.unlink(missing_ok=True)
    reader = goq.calibration_reader(data_reader.CalibrationDataReader, xcal)
    quantize(str(src), str(out), config.StaticQuantConfig(reader, **kw))
    return {"tool": f"onnx-neural-compressor {version('onnx-neural-compressor')} quantize, StaticQuantConfig",
            **{k: str(v) for k, v in kw.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"))
    ap.add_argument("--extra", help="instead, write uncommitted variants into this directory (other "
                    "float models, QOperator defaults and QDQ per channel) and print onnxruntime's accuracy")
    args = ap.parse_args()
    from onnxruntime.quantization import QuantFormat

    root = Path(args.data)
    data = {ds: goq.load(root, ds) for ds in ("mnist", "fashion-mnist")}
    cal = {ds: data[ds]["train"][0][: goq.CALIB_N] for ds in data}
    goq.EXPECTED.mkdir(exist_ok=True)
    fixtures = [
        ("fmnist_cnn_inc", "fmnist_cnn_f32.onnx", "fashion-mnist", {}),
        ("mnist_res_inc_qdq", "mnist_res_f32.onnx", "mnist",
         dict(quant_format=QuantFormat.QDQ, per_channel=True)),
    ]
    if args.extra:
        # 2026-12-06 (third session); each judged with `qforget eval` against onnxruntime's top-1.
        qdq = dict(quant_format=QuantFormat.QDQ, per_channel=True)
        variants = [("mnv2_inc", "fmnist_mnv2_f32.onnx", "fashion-mnist", {}),
                    ("mnv2_inc_qdq", "fmnist_mnv2_f32.onnx", "fashion-mnist", qdq),
                    ("mnv3_inc_qdq", "mnist_mnv3_f32.onnx", "mnist", qdq),
                    ("cat_inc", "fmnist_cat_f32.onnx", "fashion-mnist", {}),
                    ("act_inc", "mnist_act_f32.onnx", "mnist", {}),
                    ("gelu_inc_qdq", "mnist_gelu_f32.onnx", "mnist", qdq),
                    ("resof_inc", "fmnist_res_overfit_f32.onnx", "fashion-mnist", {}),
                    ("ln_inc_qdq", "mnist_ln_f32.onnx", "mnist", qdq),
                    ("shuffle_inc_qdq", "fmnist_shuffle_f32.onnx", "fashion-mnist", qdq),
                    ("bn_inc", "fmnist_cnn_bn_f32.onnx", "fashion-mnist", {})]
        extra = Path(args.extra)
        extra.mkdir(parents=True, exist_ok=True)
        for name, src, ds, kw in variants:
            out = extra / f"{name}.onnx"
            try:
                inc_quantize(HERE / src, out, cal[ds], **kw)
            except Exception as e:  # INC's own failures are reported, not fatal
                print(f"  {name}: INC failed: {str(e)[:200]}", flush=True)
                continue
            xte, yte = data[ds]["test"]
            y = goq.ort_run(out, xte)
            print(f"  {name}: ORT acc {float((y.argmax(1) == yte).mean()):.4f}", flush=True)
        return
    for name, src, ds, kw in fixtures:
        print(f"quantize {name}", flush=True)
        how = inc_quantize(HERE / src, HERE / f"{name}.onnx", cal[ds], **kw)
        goq.reference(name, ds, data, how, src)


if __name__ == "__main__":
    main()
