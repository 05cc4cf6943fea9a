"""Accuracy of a (patched) .onnx on the Fashion-MNIST/MNIST test split with onnxruntime.

Used by hand to check that models rebuilt by `qforget apply` load and run in onnxruntime and
score what qforget's own engine (and the journal) says:

    /opt/qfpy/bin/python scripts/ort_accuracy.py NEW.onnx data/fashion-mnist
"""
import gzip
import sys

import numpy as np
import onnxruntime as ort


def idx(path):
    with gzip.open(path) as f:
        b = f.read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


def main(model, data):
    x = idx(f"{data}/t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    y = idx(f"{data}/t10k-labels-idx1-ubyte.gz")
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    shape = s.get_inputs()[0].shape
    if len(shape) == 3:
        x = x[:, 0]
    pred = np.concatenate(
        [s.run(None, {name: x[i:i + 1]})[0].argmax(-1) for i in range(len(x))]
        if not isinstance(shape[0], str) and shape[0] == 1
        else [s.run(None, {name: x[i:i + 500]})[0].argmax(-1) for i in range(0, len(x), 500)]
    )
    print(f"{model}: onnxruntime accuracy {np.mean(pred == y):.4f} on {len(y)} images")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
