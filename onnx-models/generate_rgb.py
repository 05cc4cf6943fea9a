#!/usr/bin/env python3
"""The 3-channel fixture: a tiny int8 CNN on coloured MNIST digits, and a small dataset in both
of the forms `--dataset` reads besides idx (an .npy folder and a PNG image folder).

    /opt/qfpy/bin/python onnx-models/generate_rgb.py

Why it exists: every other fixture takes one grey channel with pixel = byte / 255. This one
takes RGB input normalised per channel, ((byte / 255) - mean[c]) / std[c], with mean and std
carried in the model's metadata_props (keys "mean" and "std", comma-separated), so the tests
can drive the 3-channel, normalisation, npy and image-folder paths end to end through the CLI.

Steps (deterministic: fixed seeds, 2 torch threads, single-threaded onnxruntime):
 1. colour the bundled MNIST (data/mnist, 10k train + 10k test): each image gets a seeded random
    bright foreground colour and dark background colour (ranges differ per channel), pixel = bg·(1 − a) + fg·a with
    a = byte / 255; then 2×2 mean pooling to 14×14, rounded to uint8 (3×14×14 per image);
 2. mean/std per channel over the 10k training images (rounded to 3 decimals);
 3. train conv(3→8)+relu+maxpool, conv(8→16)+relu+maxpool, fc(144→10) on the 10k training
    images (normalised), 4 epochs of Adam; export ONNX opset 17;
 4. onnxruntime quantize_static, QDQ, per-tensor, uint8 activations, int8 weights, MinMax on the
    first 1000 training images; mean/std written into the quantized file's metadata_props;
 5. the committed dataset: the first 256 training and first 128 test images, as
    data/rgb-digits/npy/{train,test}_{images,labels}.npy (images uint8 N×14×14×3, labels int64)
    and data/rgb-digits/png/{train,test}/<digit>/<index>.png (8-bit RGB PNG, index = position in
    the split, zero-padded so that sorted file names keep the split's order);
 6. onnxruntime (ORT_DISABLE_ALL, one thread) on those 128 test and 256 train images →
    onnx-models/expected/rgb_digits_qdq.json (accuracy and predictions; tests/it/data_formats.rs
    checks qforget against it).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_other_quantizers as goq  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_MODEL = HERE / "rgb_digits_qdq.onnx"
OUT_F32 = HERE / "rgb_digits_f32.onnx"
OUT_JSON = HERE / "expected" / "rgb_digits_qdq.json"
OUT_DATA = ROOT / "data" / "rgb-digits"
N_TRAIN, N_TEST = 256, 128


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def colour(images: np.ndarray, seed: int) -> np.ndarray:
    """N×28×28 grey → N×14×14×3 uint8 coloured digits."""
    rng = np.random.default_rng(seed)
    n = len(images)
    # The channels differ in range, so that their means and deviations differ too.
    fg = rng.uniform([0.6, 0.3, 0.1], [1.0, 1.0, 0.8], size=(n, 1, 1, 3))
    bg = rng.uniform([0.0, 0.0, 0.1], [0.1, 0.3, 0.5], size=(n, 1, 1, 3))
    a = images.astype(np.float64)[..., None] / 255.0
    rgb = bg * (1 - a) + fg * a  # N×28×28×3 in [0, 1]
    small = rgb.reshape(n, 14, 2, 14, 2, 3).mean(axis=(2, 4))
    return np.clip(np.rint(small * 255), 0, 255).astype(np.uint8)


def to_float(hwc: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 N×H×W×3 → float32 NCHW, ((byte / 255) − mean) / std in float32 (qforget's order)."""
    x = hwc.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return (x - mean[None, :, None, None]) / std[None, :, None, None]


def png_bytes(img: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an H×W×3 uint8 array (no PIL in the venv; the format is small)."""
    h, w, _ = img.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def train(x: np.ndarray, y: np.ndarray):
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    torch.set_num_threads(2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(16 * 3 * 3, 10)

        def forward(self, t):
            t = torch.max_pool2d(torch.relu(self.c1(t)), 2)
            t = torch.max_pool2d(torch.relu(self.c2(t)), 2)
            return self.fc(torch.flatten(t, 1))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    g = torch.Generator().manual_seed(0)
    for epoch in range(4):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xt[b]), yt[b])
            loss.backward()
            opt.step()
    net.eval()
    return net


def main() -> None:
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = ROOT / "data" / "mnist"
    tr_x = colour(read_idx(src / "train-images-idx3-ubyte.gz"), 1)
    tr_y = read_idx(src / "train-labels-idx1-ubyte.gz")
    te_x = colour(read_idx(src / "t10k-images-idx3-ubyte.gz"), 2)
    te_y = read_idx(src / "t10k-labels-idx1-ubyte.gz")

    f = tr_x.astype(np.float64) / 255.0
    mean = np.round(f.mean(axis=(0, 1, 2)), 3).astype(np.float32)
    std = np.round(f.std(axis=(0, 1, 2)), 3).astype(np.float32)
    mean_s = ",".join(f"{v:.3f}" for v in mean)
    std_s = ",".join(f"{v:.3f}" for v in std)

    net = train(to_float(tr_x, mean, std), tr_y)
    with torch.no_grad():
        torch_acc = float((net(torch.from_numpy(to_float(te_x, mean, std))).argmax(1).numpy() == te_y).mean())
    torch.onnx.export(
        net, torch.zeros(1, 3, 14, 14), str(OUT_F32), opset_version=17, do_constant_folding=True,
        input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
    )

    xcal = to_float(tr_x[:1000], mean, std)

    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(OUT_F32), str(pre), skip_optimization=False)
        reader = goq.calibration_reader(CalibrationDataReader, xcal)
        quantize_static(
            str(pre), str(OUT_MODEL), reader, quant_format=QuantFormat.QDQ, per_channel=False,
            reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    m = onnx.load(str(OUT_MODEL))
    onnx.helper.set_model_props(m, {"mean": mean_s, "std": std_s})
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(OUT_MODEL))
    OUT_F32.unlink()  # only the quantized file is a fixture

    # the committed dataset
    if OUT_DATA.exists():
        shutil.rmtree(OUT_DATA)
    npy = OUT_DATA / "npy"
    npy.mkdir(parents=True)
    splits = {"train": (tr_x[:N_TRAIN], tr_y[:N_TRAIN]), "test": (te_x[:N_TEST], te_y[:N_TEST])}
    for name, (x, y) in splits.items():
        np.save(npy / f"{name}_images.npy", x)
        np.save(npy / f"{name}_labels.npy", y.astype(np.int64))
        for i, (img, label) in enumerate(zip(x, y)):
            d = OUT_DATA / "png" / name / str(int(label))
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:05d}.png").write_bytes(png_bytes(img))

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(OUT_MODEL), so, providers=["CPUExecutionProvider"])
    ref = {"model": OUT_MODEL.name, "mean": mean_s, "std": std_s, "torch_f32_test_accuracy_10k": torch_acc,
           "onnxruntime": ort.__version__}
    for name, (x, y) in splits.items():
        logits = sess.run(["logits"], {"input": to_float(x, mean, std)})[0]
        pred = logits.argmax(1)  # first maximum on ties, as qforget's top-1
        ref[name] = {"n": int(len(y)), "correct": int((pred == y).sum()), "predictions": [int(p) for p in pred]}
    full = sess.run(["logits"], {"input": to_float(te_x, mean, std)})[0].argmax(1)
    ref["int8_test_accuracy_10k"] = float((full == te_y).mean())
    OUT_JSON.write_text(json.dumps(ref, indent=1) + "\n")
    print(json.dumps({k: v for k, v in ref.items() if k not in ("train", "test")}))
    print({k: (ref[k]["correct"], ref[k]["n"]) for k in ("train", "test")})


if __name__ == "__main__":
    main()
