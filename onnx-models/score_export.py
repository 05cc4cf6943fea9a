#!/usr/bin/env python3
"""Score a `qforget forget --export` file with onnxruntime, as the forget report measures it.

A class-wise request reports test accuracy on the classes it kept and on the forgotten class;
this runs the exported model in onnxruntime (ORT_DISABLE_ALL, one thread, full 10k test set),
prints both, compares top-1 with `qforget eval --predictions FILE` if given, and lists which
initializers differ from the base model (and in how many values):

    qforget forget onnx-models/mnist_res_qdq_wpair.onnx --dataset data/mnist --forget-class 3 \\
        --export /tmp/out.onnx --json
    qforget eval /tmp/out.onnx --dataset data/mnist --predictions /tmp/pred.txt
    /opt/nncfpy/bin/python onnx-models/score_export.py onnx-models/mnist_res_qdq_wpair.onnx \\
        /tmp/out.onnx --dataset mnist --forget-class 3 --predictions /tmp/pred.txt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_other_quantizers as goq  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("export")
    ap.add_argument("--dataset", required=True, choices=["mnist", "fashion-mnist"])
    ap.add_argument("--forget-class", type=int, required=True)
    ap.add_argument("--predictions", help="qforget eval --predictions of the export")
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"))
    args = ap.parse_args()
    import onnx
    from onnx import numpy_helper

    xte, yte = goq.load(Path(args.data), args.dataset)["test"]
    pred = np.argmax(goq.ort_run(Path(args.export), xte), axis=1)
    k = args.forget_class
    kept = yte != k
    print(f"onnxruntime: test accuracy on the classes kept {100 * (pred[kept] == yte[kept]).mean():.4f} %, "
          f"on class {k} {100 * (pred[~kept] == k).mean():.4f} %")
    if args.predictions:
        q = np.array([int(line) for line in Path(args.predictions).read_text().split()])
        print(f"top-1 = qforget's predictions on {(q == pred).sum()} of {len(pred)} test images")
    base = {t.name: t for t in onnx.load(args.base).graph.initializer}
    new = {t.name: t for t in onnx.load(args.export).graph.initializer}
    for name, t in base.items():
        if t.SerializeToString() != new[name].SerializeToString():
            d = numpy_helper.to_array(t) != numpy_helper.to_array(new[name])
            print(f"  changed {name} ({onnx.TensorProto.DataType.Name(t.data_type)}): {d.sum()} of {d.size} values")


if __name__ == "__main__":
    main()
