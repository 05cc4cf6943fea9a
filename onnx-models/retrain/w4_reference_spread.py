#!/usr/bin/env python3
"""How far one W4 retrain reference can lie from another: the spread behind issue 11's last miss.

`class3_fmnist_cnn_w4.onnx` (generate_w4_references.py) is ONE PyTorch retrain (seed 1, the base's
own recipe) quantized to 4-bit weights after training. This script retrains the same recipe at
other seeds (only the seed changes: generate.py FLOAT_NETS["fmnist_cnn"]), quantizes each float
exactly like the reference (generate_w4.py: QDQ, opset 21, INT4 per-channel weights, uint8
activations, MinMax on the first 1000 retain images), and also re-quantizes the seed-1 float with
three other random calibration subsets of 1000 retain images. Every model is scored in float
(onnxruntime) and after quantization (onnxruntime ORT_DISABLE_ALL, argmax of the quantized logits)
on the full Fashion-MNIST split: retain = the 54,000 training images not of class 3.

    /opt/qfpy/bin/python onnx-models/retrain/w4_reference_spread.py OUT_DIR [--seeds 1,2,3]

Writes OUT_DIR/spread.json (one record per model) and the trained floats / quantized models
beside it; ≈4 min per seed on 1 thread. The committed result: docs/results/w4-reference-spread/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import generate as G  # noqa: E402
import generate_references as R  # noqa: E402
import generate_w4 as W  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", default="1,2,3", help="training seeds; 1 is the committed reference's float")
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    s = R.load_split(dict(kind="class", dataset="fashion-mnist", seed=None), Path(args.data), {})
    xtr, _ = s["d"]["train"]
    xte, _ = s["d"]["test"]
    retain_x = xtr[s["retain"]]
    records = []

    def measure(tag: str, f32: Path, xcal: np.ndarray, note: str) -> None:
        out = args.out / f"{tag}_w4.onnx"
        W.quantize(tag, W.W4_MODELS["fmnist_cnn_w4"], xcal, src=f32, out=out)
        w4 = R.accuracies(G.first_argmax(R.ort_int8(out, xtr)), s, G.first_argmax(R.ort_int8(out, xte)))
        fl = R.accuracies(G.first_argmax(G.ort_run(f32, xtr)), s, G.first_argmax(G.ort_run(f32, xte)))
        rec = dict(tag=tag, note=note, float_model=str(f32.name), w4_sha256=G.sha256_file(out),
                   w4=w4, f32=fl, retain_drop_pp=round(100 * (fl["retain"] - w4["retain"]), 2))
        records.append(rec)
        print(json.dumps(rec), flush=True)

    for seed in (int(x) for x in args.seeds.split(",")):
        if seed == 1:
            f32 = R.FLOAT_DIR / "class3_fmnist_cnn_f32.onnx"
        else:
            hp = dict(G.FLOAT_NETS["fmnist_cnn"], seed=seed)
            t0 = time.time()
            model, _ = G.train_net(f"seed{seed}", hp, {"fashion-mnist": R.retain_data(s)}, G.build_torch_models())
            f32 = args.out / f"class3_fmnist_cnn_seed{seed}_f32.onnx"
            G.export_onnx(model, f32)
            print(f"seed {seed}: trained in {time.time() - t0:.0f} s", flush=True)
        measure(f"seed{seed}", f32, retain_x[: G.CALIB_N], f"seed {seed}, first {G.CALIB_N} retain images")
        if seed == 1:
            for k in (1, 2, 3):
                idx = np.sort(np.random.default_rng(k).choice(len(retain_x), G.CALIB_N, replace=False))
                measure(f"seed1_calib{k}", f32, retain_x[idx], f"seed 1, {G.CALIB_N} random retain images (rng {k})")
    import onnxruntime as ort

    doc = dict(script="onnx-models/retrain/w4_reference_spread.py", cpu=R.cpu_info(),
               software=dict(torch=torch.__version__, onnxruntime=ort.__version__, numpy=np.__version__),
               split="full Fashion-MNIST: retain = 54,000 training images not of class 3; test = 10,000",
               records=records)
    (args.out / "spread.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
