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
    for name, src, ds, kw in fixtures:
        print(f"quantize {name}", flush=True)
        how = inc_quantize(HERE / src, HERE / f"{name}.onnx", cal[ds], **kw)
        goq.reference(name, ds, data, how, src)


if __name__ == "__main__":
    main()
