#!/usr/bin/env python3
"""Memorizing fixtures: small CNNs trained to (near) 100 % train accuracy on the bundled 10k
training subsets, for random-sample forgetting experiments (DESIGN.md, "Measuring honestly").

    /opt/qfpy/bin/python onnx-models/generate_overfit.py                # train, export, quantize, reference
    /opt/qfpy/bin/python onnx-models/generate_overfit.py --skip-train   # re-quantize the committed *_f32.onnx
    /opt/qfpy/bin/python onnx-models/generate_overfit.py --only mnist_overfit

Makes, per net (fmnist_overfit, mnist_overfit: plain CNN; fmnist_res_overfit: residual CNN):
    <net>_f32.onnx   float model, opset 17 (Conv+bias, Relu, MaxPool, Flatten, Gemm; the residual
                     net: Conv+bias, Relu, MaxPool, Add, GlobalAveragePool, Flatten, Gemm)
    <net>_qdq.onnx   onnxruntime quantize_static, QDQ, per-channel int8 weights, u8 activations,
                     MinMax calibration on training images 0-999 (as every other fixture)
    expected/<net>_qdq.{logits.npy,json,predictions.txt,graph.txt}   (test split, like generate.py)
    expected/<net>_qdq.train.predictions.txt   argmax of the quantized model on the 10k train subset

Training data is exactly the repository's bundled `data/<set>/train-*` (the FIRST 10,000 training
images, file order), checked against the sha256 table in data/README.md. No augmentation, no weight
decay, no dropout (the plain CNNs have no BN; the residual net has BN, folded into its convs by the
export, as in generate.py's mnist_res); Adam, batch 32, lr 1e-3 until the float train accuracy reaches 99.8 %,
then 5 epochs at 1e-4; fixed seeds; 2 torch threads (`--threads` to change);
deterministic algorithms. Training details and the quantized model's train accuracy go into
expected/<model>.json ("training", "train_int8_accuracy") and a table in README.md between the
overfit-table markers. Helpers (export, quantization, reference outputs) come from generate.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate as G  # noqa: E402

REPO = HERE.parent
BUNDLE = REPO / "data"
N_TRAIN = 10_000

# name -> hyper-parameters. Schedule (deterministic, decided by the float model's train accuracy):
# phase 1 at `lr` until the float train accuracy after an epoch reaches `phase1_target` (at most
# `max_epochs`), then phase 2: `lr_final_epochs` more epochs at `lr_final` (the low-lr tail widens
# the memorized margins so that they survive int8 quantization).
OVERFIT_NETS = {
    "fmnist_overfit": dict(dataset="fashion-mnist", seed=11, batch=32, lr=1e-3, phase1_target=0.998, max_epochs=150,
                           lr_final_epochs=5, lr_final=1e-4, optimizer="Adam", betas=[0.9, 0.999], weight_decay=0.0),
    "mnist_overfit": dict(dataset="mnist", seed=12, batch=32, lr=1e-3, phase1_target=0.998, max_epochs=150,
                          lr_final_epochs=5, lr_final=1e-4, optimizer="Adam", betas=[0.9, 0.999], weight_decay=0.0),
}
HIDDEN = 128

# the residual net (its hp has net="res"; the two plain CNNs have no "net" key, so their committed
# training records stay as they were). Channel widths: stem and residual block, then the two
# stride-2 convs. Unlike the plain CNNs it has BatchNorm (folded by the export), like mnist_res.
OVERFIT_NETS["fmnist_res_overfit"] = dict(
    dataset="fashion-mnist", net="res", widths=[32, 64, 128], seed=13, batch=32, lr=1e-3, phase1_target=0.998,
    max_epochs=150, lr_final_epochs=5, lr_final=1e-4, optimizer="Adam", betas=[0.9, 0.999], weight_decay=0.0)


def arch_of(hp: dict) -> tuple[str, int]:
    """(architecture description, multiply-accumulates per image) of a net's hyper-parameters."""
    if hp.get("net", "cnn") == "cnn":
        return (("conv(1->16,3x3,pad1,bias)-ReLU-maxpool2 -> conv(16->32,3x3,pad1,bias)-ReLU-maxpool2 -> "
                 f"flatten(1568) -> fc(1568->{HIDDEN})-ReLU -> fc({HIDDEN}->10)"),
                28 * 28 * 16 * 9 + 14 * 14 * 32 * 16 * 9 + 1568 * HIDDEN + HIDDEN * 10)
    c, d1, d2 = hp["widths"]
    return ((f"stem conv(1->{c},3x3,pad1)-BN-ReLU-maxpool2 -> residual block at {c}x14x14: "
             f"conv({c}->{c},3x3,pad1)-BN-ReLU-conv({c}->{c},3x3,pad1)-BN, identity skip via Add, ReLU -> "
             f"conv({c}->{d1},3x3,stride2,pad1)-BN-ReLU (7x7) -> conv({d1}->{d2},3x3,stride2,pad1)-BN-ReLU "
             f"(4x4) -> GlobalAveragePool -> flatten({d2}) -> fc({d2}->10); BN folded into the convs by the export"),
            28 * 28 * c * 9 + 2 * 14 * 14 * c * c * 9 + 7 * 7 * d1 * c * 9 + 4 * 4 * d2 * d1 * 9 + d2 * 10)


def build_net(hp: dict):
    import torch
    import torch.nn as nn

    class OverfitCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.act1 = nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.act2 = nn.ReLU()
            self.pool2 = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(32 * 7 * 7, HIDDEN)
            self.act3 = nn.ReLU()
            self.fc2 = nn.Linear(HIDDEN, 10)

        def forward(self, x):
            x = self.pool1(self.act1(self.conv1(x)))
            x = self.pool2(self.act2(self.conv2(x)))
            return self.fc2(self.act3(self.fc1(self.flatten(x))))

    class OverfitRes(nn.Module):
        """generate.py's mnist_res layout, wider: stem conv-BN-ReLU-maxpool2 -> residual block
        (conv-BN-ReLU-conv-BN, identity skip via Add, ReLU) -> two stride-2 conv-BN-ReLU ->
        GlobalAveragePool -> flatten -> fc10. BN makes it memorize in tens of epochs instead of
        hundreds; the export folds it into the convolutions (Conv with bias, no BN node)."""

        def __init__(self, c, d1, d2):
            super().__init__()
            self.stem = nn.Conv2d(1, c, 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(c)
            self.pool = nn.MaxPool2d(2)
            self.res_conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.res_bn1 = nn.BatchNorm2d(c)
            self.res_conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.res_bn2 = nn.BatchNorm2d(c)
            self.down = nn.Conv2d(c, d1, 3, stride=2, padding=1, bias=False)
            self.down_bn = nn.BatchNorm2d(d1)
            self.down2 = nn.Conv2d(d1, d2, 3, stride=2, padding=1, bias=False)
            self.down2_bn = nn.BatchNorm2d(d2)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(d2, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.stem_bn(self.stem(x))))
            h = torch.relu(self.res_bn1(self.res_conv1(x)))
            h = self.res_bn2(self.res_conv2(h))
            x = torch.relu(x + h)
            x = torch.relu(self.down_bn(self.down(x)))
            x = torch.relu(self.down2_bn(self.down2(x)))
            return self.fc(self.flatten(self.gap(x)))

    if hp.get("net", "cnn") == "cnn":
        return OverfitCNN()
    return OverfitRes(*hp["widths"])


def bundle_sums() -> dict:
    """sha256 per bundled file, from the table in data/README.md."""
    sums = {}
    for line in (BUNDLE / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*`([^`]+\.gz)`\s*\|\s*\d+\s*\|\s*`([0-9a-f]{64})`", line)
        if m:
            sums[m.group(1)] = m.group(2)
    return sums


def load_bundle(name: str) -> dict:
    sums = bundle_sums()
    for f in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        rel = f"{name}/{f}-ubyte.gz"
        got = G.sha256_file(BUNDLE / rel)
        if sums.get(rel) != got:
            sys.exit(f"data/{rel}: sha256 {got} does not match data/README.md ({sums.get(rel)})")
    d = G.load_dataset(BUNDLE, name)
    assert len(d["train"][0]) == N_TRAIN and len(d["test"][0]) == 10_000, (name, len(d["train"][0]))
    return d


def train_overfit(name: str, hp: dict, data: dict):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(hp["seed"])
    np.random.seed(hp["seed"])
    model = build_net(hp)
    xtr, ytr = data["train"]
    xte, yte = data["test"]
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]),
                           weight_decay=hp["weight_decay"])
    gen = torch.Generator().manual_seed(hp["seed"])
    log = []
    t0 = time.time()
    phase1_epochs = None  # epochs at hp["lr"] once the target is reached (or max_epochs)
    epoch = 0
    while True:
        if phase1_epochs is not None and epoch >= phase1_epochs + hp["lr_final_epochs"]:
            break
        lr = hp["lr"] if phase1_epochs is None else hp["lr_final"]
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        te0 = time.time()
        perm = torch.randperm(len(xt), generator=gen)
        tot, n = 0.0, 0
        for i in range(0, len(perm), hp["batch"]):
            idx = perm[i : i + hp["batch"]]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss) * len(idx)
            n += len(idx)
        secs = time.time() - te0
        epoch += 1
        tr = G.torch_accuracy(model, xtr, ytr)
        te = G.torch_accuracy(model, xte, yte)
        log.append(dict(epoch=epoch, lr=lr, train_loss=round(tot / n, 6), train_acc=tr, test_acc=te,
                        seconds=round(secs, 2)))
        print(f"  {name} epoch {epoch} lr {lr:g} loss {tot / n:.5f} train {tr:.4f} "
              f"test {te:.4f} ({time.time() - t0:.0f}s)", flush=True)
        if phase1_epochs is None and (tr >= hp["phase1_target"] or epoch >= hp["max_epochs"]):
            phase1_epochs = epoch
    model.eval()
    rec = dict(hp)
    arch, macs = arch_of(hp)
    rec.update(
        arch=arch,
        macs_per_image=macs,
        parameters=int(sum(p.numel() for p in model.parameters())),
        epochs=len(log),
        phase1_epochs=phase1_epochs,
        epochs_log=log,
        train_accuracy=G.torch_accuracy(model, xtr, ytr),
        test_accuracy=G.torch_accuracy(model, xte, yte),
        train_seconds=round(time.time() - t0, 1),
        n_train=len(xtr),
        train_data=f"data/{hp['dataset']}/train-* (first {N_TRAIN} training images, file order)",
        loss="cross-entropy",
        augmentation="none",
        regularization=("none (no weight decay, no dropout, no BN)" if hp.get("net", "cnn") == "cnn" else
                        "none (no weight decay, no dropout); BatchNorm2d (torch defaults, momentum 0.1) after "
                        "every conv, folded into the conv by the export"),
        shuffle="torch.randperm per epoch, torch.Generator seeded with `seed`",
        init="torch defaults after torch.manual_seed(seed)",
        threads=torch.get_num_threads(),
        deterministic_algorithms=True,
        input="float32 NCHW [N,1,28,28], pixel = byte/255",
        framework="torch " + torch.__version__,
    )
    return model, rec


TABLE_BEGIN = "<!-- overfit-table:begin (written by generate_overfit.py) -->"
TABLE_END = "<!-- overfit-table:end -->"


def update_readme(records: dict) -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    rows = ["| model | dataset | format | weights | activations | ops | train acc, 10k subset: float / int8 | "
            "test acc: float / int8 | epochs (Adam, lr) | train time | sha256 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in sorted(records):
        r = records[name]
        t = r["training"]
        ops = ", ".join(f"{k}×{v}" for k, v in r["ops"].items())
        rows.append(f"| `{r['model']}` (float: `{r['float_model']}`) | {r['dataset']} | {r['format']} | per-channel | "
                    f"u8 | {ops} | {100 * r['train_float_accuracy']:.2f} % / **{100 * r['train_int8_accuracy']:.2f} %** | "
                    f"{100 * r['float_accuracy']:.2f} % / **{100 * r['int8_accuracy']:.2f} %** | "
                    f"{t['epochs']} ({t['phase1_epochs']} at {t['lr']:g}, "
                    f"{t['lr_final_epochs']} at {t['lr_final']:g}) | {t['train_seconds']:.0f} s | `{r['sha256']}` |")
    block = TABLE_BEGIN + "\n" + "\n".join(rows) + "\n" + TABLE_END
    if TABLE_BEGIN in text and TABLE_END in text:
        head, rest = text.split(TABLE_BEGIN, 1)
        _, tail = rest.split(TABLE_END, 1)
        text = head + block + tail
    else:
        text += "\n" + block + "\n"
    readme.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-train", action="store_true", help="reuse the committed *_overfit_f32.onnx and the "
                    "training record in expected/<model>.json")
    ap.add_argument("--only", choices=sorted(OVERFIT_NETS), action="append")
    ap.add_argument("--max-epochs", type=int, help="override (for trials; the committed fixtures use the table)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--readme-only", action="store_true", help="only rewrite the README table from expected/")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    assert onnx.__version__ == "1.23.2", onnx.__version__
    assert ort.__version__ == "1.32.0", ort.__version__
    names = args.only or sorted(OVERFIT_NETS)
    records = {}
    for f in sorted(OVERFIT_NETS):  # keep the README rows of models not redone now
        p = G.EXPECTED / f"{f}_qdq.json"
        if (f not in names or args.readme_only) and p.exists():
            records[f] = json.loads(p.read_text())

    if args.readme_only:
        update_readme(records)
        return
    for name in names:
        hp = dict(OVERFIT_NETS[name])
        if args.max_epochs:
            hp["max_epochs"] = args.max_epochs
        ds = hp["dataset"]
        data = {ds: load_bundle(ds)}
        G.FLOAT_DATASET[name] = ds
        f32 = HERE / f"{name}_f32.onnx"
        qname = f"{name}_qdq"
        if args.skip_train:
            training = json.loads((G.EXPECTED / f"{qname}.json").read_text())["training"]
        else:
            import torch

            torch.set_num_threads(args.threads)
            torch.use_deterministic_algorithms(True)
            print(f"train {name} on {ds} ({N_TRAIN} images)", flush=True)
            model, training = train_overfit(name, hp, data[ds])
            training["software"] = dict(torch=torch.__version__, numpy=np.__version__, onnx=onnx.__version__,
                                        onnxruntime=ort.__version__, python=sys.version.split()[0])
            G.export_onnx(model, f32)
            x = data[ds]["test"][0][:500]
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            err = float(np.abs(ref - G.ort_run(f32, x)).max())
            assert err < 1e-3, (name, err)
            print(f"  {f32.name} vs torch: max |d| {err:.2e}", flush=True)

        onnx.checker.check_model(onnx.load(str(f32)), full_check=True)
        xtr, ytr = data[ds]["train"]
        xte, yte = data[ds]["test"]
        pred_f = G.first_argmax(G.ort_run(f32, xte))
        float_acc = {name: float((pred_f == yte).mean()), "_pred": {name: pred_f}}
        train_float = float((G.first_argmax(G.ort_run(f32, xtr)) == ytr).mean())

        spec = dict(name=qname, src=name, fmt="QDQ", per_channel=True, act="u8", pre_opt=True,
                    note=f"memorizing model for random-sample forgetting: trained only on the bundled first "
                         f"{N_TRAIN} training images of {ds} (generate_overfit.py)")
        print(f"quantize {qname}", flush=True)
        qinfo = G.quantize(spec, data)
        rec = G.reference(spec, data, qinfo, float_acc)
        # the quantized model on the training subset, same onnxruntime settings as the reference
        m = onnx.load(str(HERE / f"{qname}.onnx"))
        scale, zp = G.output_quant(m)
        qtr = G.requantize(G.ort_run(HERE / f"{qname}.onnx", xtr), scale, zp)
        ptr = G.first_argmax(qtr)
        (G.EXPECTED / f"{qname}.train.predictions.txt").write_text("".join(f"{p}\n" for p in ptr))
        rec.update(
            train_split=f"data/{ds}/train-* ({N_TRAIN} images, the first of the official training set)",
            train_int8_accuracy=float((ptr == ytr).mean()),
            train_float_accuracy=train_float,
            train_int8_errors=int((ptr != ytr).sum()),
            train_argmax_ties=G.n_ties(qtr),
            train_predictions=f"{qname}.train.predictions.txt",
            training=training,
        )
        (G.EXPECTED / f"{qname}.json").write_text(json.dumps(rec, indent=2) + "\n")
        records[name] = rec
        print(f"  {qname}: train int8 {rec['train_int8_accuracy']:.4f} (float {train_float:.4f}), "
              f"test int8 {rec['int8_accuracy']:.4f} (float {rec['float_accuracy']:.4f})", flush=True)
        if rec["train_int8_accuracy"] < 0.995:
            print(f"WARNING: {qname} train accuracy {rec['train_int8_accuracy']:.4f} < 0.995", flush=True)
    update_readme(records)


if __name__ == "__main__":
    main()
