#!/usr/bin/env python3
"""Gold standards for the W4A8 fixtures: the retrained float models of generate_references.py
(float/<training>_f32.onnx, trained without the forget set) quantized exactly like each W4 base
(generate_w4.py: opset 21, QDQ, INT4 per-channel weights, uint8 activations, MinMax), with
calibration on the first 1000 retain images in dataset order, as generate_references.py
calibrates the 8-bit references. No training: the floats are shared with the 8-bit references.

    /opt/qfpy/bin/python onnx-models/retrain/generate_w4_references.py     # ≈1 min on 2 cores

Writes <scenario>.onnx and <scenario>.json (int8 accuracies on retain / forget / test from
onnxruntime with ORT_DISABLE_ALL, one thread; argmax of the quantized logits, first maximum on ties):
  class3_fmnist_cnn_w4, class3_mnist_res_w4          (full 60k training set minus class 3)
  random10_fmnist_overfit_w4_seed<k>, k = 0, 1, 2    (bundled 10k, minus ids/random10_seed<k>.txt)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import generate as G  # noqa: E402
import generate_references as R  # noqa: E402
import generate_w4 as W  # noqa: E402

# scenario -> (W4 base, float retraining, training entry kind, dataset, seed)
SCENARIOS = {
    "class3_fmnist_cnn_w4": ("fmnist_cnn_w4", "class3_fmnist_cnn", "class", "fashion-mnist", None),
    "class3_mnist_res_w4": ("mnist_res_w4", "class3_mnist_res", "class", "mnist", None),
    **{f"random10_fmnist_overfit_w4_seed{k}": ("fmnist_overfit_w4", f"random10_fmnist_overfit_seed{k}",
                                                "random", "fashion-mnist", k) for k in (0, 1, 2)},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"),
                    help="folder with the original mnist/ and fashion-mnist/ idx files and SHA256SUMS")
    args = ap.parse_args()
    cache: dict = {}
    for name, (base, training, kind, ds, seed) in SCENARIOS.items():
        t = dict(kind=kind, dataset=ds, seed=seed)
        s = R.load_split(t, Path(args.data), cache)
        xtr, ytr = s["d"]["train"]
        xte, yte = s["d"]["test"]
        xcal = xtr[s["retain"]][: G.CALIB_N]
        out = HERE / f"{name}.onnx"
        W.quantize(name, W.W4_MODELS[base], xcal, src=R.FLOAT_DIR / f"{training}_f32.onnx", out=out)
        pred_tr = G.first_argmax(R.ort_int8(out, xtr))
        pred_te = G.first_argmax(R.ort_int8(out, xte))
        acc = R.accuracies(pred_tr, s, pred_te)
        rec = dict(scenario=name, model=f"retrain/{out.name}", sha256=G.sha256_file(out),
                   base_model=f"{base}.onnx", float_model=f"retrain/float/{training}_f32.onnx",
                   dataset=ds, kind="class-wise" if kind == "class" else "random", forget_set=s["rule"],
                   train_set=s["source"], calibration=f"first {G.CALIB_N} retain images in dataset order",
                   quantization=dict(script="onnx-models/generate_w4.py", **W.W4_MODELS[base]),
                   n=dict(train=int(len(ytr)), retain=int(len(s["retain"])), forget=int(len(s["forget"])),
                          test=int(len(yte))),
                   int8_accuracy=acc,
                   reference="onnxruntime ORT_DISABLE_ALL, 1 thread; argmax of the quantized logits, "
                             "first maximum on ties")
        tr = json.loads((R.FLOAT_DIR / f"{training}.training.json").read_text())
        rec["training"] = dict({k: tr.get(k) for k in ("seed", "epochs", "lr", "batch", "train_accuracy",
                                                         "test_accuracy", "train_seconds", "threads",
                                                         "n_train")},
                               record=f"retrain/float/{training}.training.json")
        (HERE / f"{name}.json").write_text(json.dumps(rec, indent=1) + "\n")
        print(f"{name}: {acc}", flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
