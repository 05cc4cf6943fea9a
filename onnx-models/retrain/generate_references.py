#!/usr/bin/env python3
"""Retrain references: the gold standard for unlearning results (DESIGN.md, "Baselines").

For each scenario, the base model's own recipe (same architecture, optimizer, schedule, seed and
stopping rule, from generate.py / generate_overfit.py) is trained from scratch on the training data
WITHOUT the forget set, exported to ONNX and quantized exactly like the base (same quantize_static
settings), with MinMax calibration on the first 1000 training images that are not in the forget set.

    /opt/qfpy/bin/python onnx-models/retrain/generate_references.py             # every scenario not made yet
    /opt/qfpy/bin/python onnx-models/retrain/generate_references.py --only 'class3_mnist_res_*'
    /opt/qfpy/bin/python onnx-models/retrain/generate_references.py --list
    /opt/qfpy/bin/python onnx-models/retrain/generate_references.py --requantize   # reuse float/*_f32.onnx
    /opt/qfpy/bin/python onnx-models/retrain/generate_references.py --skip '*_qop*'  # leave some out
    /opt/qfpy/bin/python onnx-models/retrain/generate_references.py --readme-only    # the table in ../README.md

Scenarios:
  random10_<model>_seed<k>   model in fmnist_overfit, mnist_overfit, fmnist_res_overfit (bundled 10k
                             training images, data/<set>/train-*); forget set ids/random10_seed<k>.txt =
                             numpy.random.default_rng(k).choice(10000, 1000, replace=False), sorted
                             (the same file for both datasets); k = 0, 1, 2. Quantized as <model>_qdq.
  class3_<quantized model>   every quantized model generate.py makes from fmnist_cnn (qdq, qop,
                             qdq_s8_pt, and the BN-preserving export cnn_bn_qdq), fmnist_cnn_relu6,
                             mnist_res (s8, qdq_u8, qop_u8), mnist_mlp_matmul (qdq, qop); trained on the
                             full 60k training set (--data, default /work/shared/data) minus every
                             class-3 image. One float training serves all quantized forms of a net.

Writes, per scenario: <scenario>.onnx (the quantized retrained model) and <scenario>.json
(int8 accuracies from onnxruntime with ORT_DISABLE_ALL on train / retain / forget / test, the float
model's, training details; for QOperator models the int8 accuracies come from qop_numpy_check.py's
exact integer re-computation, because onnxruntime's QOperator kernels saturate on AVX2 CPUs without
VNNI, and onnxruntime's figures are kept beside them). Per training: float/<training>_f32.onnx
(plus float/class3_fmnist_cnn_bn_f32.onnx, exported from the class-3 fmnist_cnn weights like
generate.py does) and float/<training>.training.json (hyper-parameters, per-epoch log, timings). Resumable: a scenario whose JSON exists is skipped, and a
training whose float models and record exist is not redone.

Threads: torch.set_num_threads(1) (--threads), OMP_WAIT_POLICY=PASSIVE, deterministic algorithms,
single-threaded onnxruntime. Helpers come from generate.py (G) and generate_overfit.py (GO).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent
FLOAT_DIR = HERE / "float"
IDS_DIR = HERE / "ids"
sys.path.insert(0, str(FIXTURES))
import generate as G  # noqa: E402
import generate_overfit as GO  # noqa: E402
import generate_mobilenet as GM  # noqa: E402

# The MobileNetV2-style fixture (generate_mobilenet.py) trains with generate.py's train_net and
# quantizes with its quantize: register its recipe and quantized form like generate.py's own nets.
G.FLOAT_NETS.setdefault(GM.NAME, GM.HP)
if not any(q["name"] == GM.SPEC["name"] for q in G.QUANT_MODELS):
    G.QUANT_MODELS.append(GM.SPEC)

FORGET_CLASS = 3
RANDOM_MODELS = ("fmnist_overfit", "mnist_overfit", "fmnist_res_overfit")
RANDOM_SEEDS = (0, 1, 2)
RANDOM_N, RANDOM_K = GO.N_TRAIN, 1000
# priority order (the brief's): the residual net first, then the default model's net, then the rest
CLASS_NETS = ("mnist_res", "fmnist_cnn", "fmnist_cnn_relu6", "mnist_mlp_matmul", GM.NAME)


# ----------------------------------------------------------------------------------------------
# forget sets


def random_ids(seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(RANDOM_N, RANDOM_K, replace=False))


def ids_file(seed: int) -> Path:
    return IDS_DIR / f"random10_seed{seed}.txt"


def write_ids(seed: int) -> np.ndarray:
    """ids/random10_seed<k>.txt for `qforget forget --forget-ids FILE`; checked if it exists."""
    ids = random_ids(seed)
    text = (f"# random 10 % forget set, seed {seed}: numpy.random.default_rng({seed}).choice({RANDOM_N}, "
            f"{RANDOM_K}, replace=False), sorted\n"
            f"# 0-based indices into the bundled {RANDOM_N}-image training subsets data/{{mnist,fashion-mnist}}/"
            f"train-* (same file for both); written by onnx-models/retrain/generate_references.py\n"
            + "".join(f"{i}\n" for i in ids))
    p = ids_file(seed)
    if p.exists():
        if p.read_text() != text:
            sys.exit(f"{p} differs from what numpy {np.__version__} draws for seed {seed}")
    else:
        IDS_DIR.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return ids


def read_ids(path: Path) -> np.ndarray:
    out = []
    for line in path.read_text().splitlines():
        s = line.split("#", 1)[0].strip()
        if s:
            out.append(int(s))
    return np.array(out, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# scenarios


def trainings() -> list[dict]:
    """One entry per float training, with the quantized scenarios it serves."""
    out = []
    for net in CLASS_NETS:
        floats = [net] + [d for d, v in G.DERIVED_FLOAT.items() if v["from_net"] == net]
        specs = [s for s in G.QUANT_MODELS if s["src"] in floats]
        tag = f"class{FORGET_CLASS}_{net}"
        out.append(dict(kind="class", tag=tag, net=net, dataset=G.FLOAT_NETS[net]["dataset"],
                        floats={f: f"class{FORGET_CLASS}_{f}" for f in floats},
                        scenarios=[(f"class{FORGET_CLASS}_{s['name']}", s) for s in specs]))
    for model in RANDOM_MODELS:
        for seed in RANDOM_SEEDS:
            tag = f"random10_{model}_seed{seed}"
            spec = dict(name=f"{model}_qdq", src=model, fmt="QDQ", per_channel=True, act="u8", pre_opt=True)
            out.append(dict(kind="random", tag=tag, net=model, seed=seed,
                            dataset=GO.OVERFIT_NETS[model]["dataset"], floats={model: tag},
                            scenarios=[(tag, spec)]))
    return out


def load_split(t: dict, data_root: Path, cache: dict) -> dict:
    """train (all), retain / forget index arrays, test; pixels as the models take them."""
    ds = t["dataset"]
    if t["kind"] == "class":
        key = ("full", ds)
        if key not in cache:
            if "verified" not in cache:
                G.verify_data(data_root)
                cache["verified"] = True
            cache[key] = G.load_dataset(data_root, ds)
        d = cache[key]
        ytr = d["train"][1]
        forget = np.flatnonzero(ytr == FORGET_CLASS)
        source = f"{data_root}/{ds}/train-* (all {len(ytr)} training images)"
        rule = f"every training image of class {FORGET_CLASS}"
    else:
        key = ("bundle", ds)
        if key not in cache:
            cache[key] = GO.load_bundle(ds)
        d = cache[key]
        forget = write_ids(t["seed"])
        assert np.array_equal(read_ids(ids_file(t["seed"])), forget)
        source = f"data/{ds}/train-* (bundled first {GO.N_TRAIN} training images)"
        rule = f"ids/{ids_file(t['seed']).name} ({len(forget)} ids)"
    n = len(d["train"][1])
    retain = np.setdiff1d(np.arange(n), forget)
    return dict(d=d, forget=forget, retain=retain, source=source, rule=rule)


def retain_data(s: dict) -> dict:
    """What the training and the calibration see: the retain images in dataset order, and the test set."""
    xtr, ytr = s["d"]["train"]
    return {"train": (xtr[s["retain"]], ytr[s["retain"]]), "test": s["d"]["test"]}


@contextlib.contextmanager
def fixtures_dir(path: Path):
    """generate.quantize reads <HERE>/<src>_f32.onnx and writes <HERE>/<name>.onnx: point it at `path`."""
    old = G.HERE
    G.HERE = path
    try:
        yield
    finally:
        G.HERE = old


# ----------------------------------------------------------------------------------------------
# training


def train(t: dict, s: dict, threads: int) -> dict:
    import onnx
    import onnxruntime as ort
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    ds = t["dataset"]
    data = retain_data(s)
    t0 = time.time()
    if t["kind"] == "class":
        hp = dict(G.FLOAT_NETS[t["net"]])
        model, rec = G.train_net(t["tag"], hp, {ds: data}, dict(G.build_torch_models(), **{GM.NAME: GM.build()}))
        recipe = f"generate.py FLOAT_NETS[{t['net']!r}] (fixed epochs)"
    else:
        hp = dict(GO.OVERFIT_NETS[t["net"]])
        model, rec = GO.train_overfit(t["tag"], hp, data)
        recipe = f"generate_overfit.py OVERFIT_NETS[{t['net']!r}] (train-accuracy stopping rule on the retain set)"
    wall = time.time() - t0
    FLOAT_DIR.mkdir(parents=True, exist_ok=True)
    x = data["test"][0][:500]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    checks = {}
    for f, out in t["floats"].items():
        path = FLOAT_DIR / f"{out}_f32.onnx"
        G.export_onnx(model, path, preserve_bn=(f in G.DERIVED_FLOAT))
        err = float(np.abs(ref - G.ort_run(path, x)).max())
        assert err < 1e-3, (path.name, err)
        checks[path.name] = err
        print(f"  {path.name} vs torch: max |d| {err:.2e}", flush=True)
    rec.pop("software", None)
    rec.update(
        recipe=recipe,
        training_data=s["source"] + f" minus the forget set ({s['rule']}): {len(s['retain'])} images in dataset order",
        n_forget=int(len(s["forget"])),
        threads=torch.get_num_threads(),
        deterministic_algorithms=True,
        wall_seconds=round(wall, 1),
        export_max_abs_diff_vs_torch_500_test=checks,
        float_models={f: f"float/{o}_f32.onnx" for f, o in t["floats"].items()},
        software=dict(torch=torch.__version__, numpy=np.__version__, onnx=onnx.__version__,
                      onnxruntime=ort.__version__, python=sys.version.split()[0]),
    )
    (FLOAT_DIR / f"{t['tag']}.training.json").write_text(json.dumps(rec, indent=2) + "\n")
    return rec


# ----------------------------------------------------------------------------------------------
# quantization and measurement


def cpu_info() -> dict:
    model, flags = "?", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    return dict(model=model, avx2="avx2" in flags, avx512_vnni="avx512_vnni" in flags, avx_vnni="avx_vnni" in flags)


def ort_int8(path: Path, x: np.ndarray) -> np.ndarray:
    """The quantized output logits from onnxruntime (ORT_DISABLE_ALL, 1 thread), as generate.py stores them."""
    import onnx

    scale, zp = G.output_quant(onnx.load(str(path)))
    return G.requantize(G.ort_run(path, x), scale, zp)


def exact_int8(path: Path, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """The quantized output logits of a QOperator model in exact integer arithmetic
    (qop_numpy_check.py), re-quantized like qop_numpy_check.check does."""
    import onnx
    import qop_numpy_check

    scale, zp = G.output_quant(onnx.load(str(path)))
    y = np.concatenate([qop_numpy_check.run(path, x[k : k + batch]) for k in range(0, len(x), batch)])
    info = np.iinfo(zp.dtype)
    return np.clip(np.rint(y.astype(np.float64) / np.float64(scale)) + int(zp), info.min, info.max).astype(zp.dtype)


def lsb_diff(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return dict(max_abs_diff_lsb=int(d.max()), values_differing=int((d > 0).sum()), values_total=int(d.size),
                top1_differences=int((G.first_argmax(a) != G.first_argmax(b)).sum()))


def accuracies(pred: np.ndarray, s: dict, pred_test: np.ndarray) -> dict:
    ytr = s["d"]["train"][1]
    yte = s["d"]["test"][1]
    acc = lambda p, y: float((p == y).mean())  # noqa: E731
    r = dict(train=acc(pred, ytr), retain=acc(pred[s["retain"]], ytr[s["retain"]]),
             forget=acc(pred[s["forget"]], ytr[s["forget"]]), test=acc(pred_test, yte))
    return r


def quantize_and_measure(t: dict, s: dict, name: str, spec: dict, training: dict, qop_siblings: dict) -> dict:
    import onnx
    import onnxruntime as ort

    ds = t["dataset"]
    fsrc = t["floats"][spec["src"]]
    q = dict(spec, name=name, src=fsrc)
    G.FLOAT_DATASET[fsrc] = ds
    with fixtures_dir(FLOAT_DIR):
        qinfo = G.quantize(q, {ds: retain_data(s)})
    out = HERE / f"{name}.onnx"
    os.replace(FLOAT_DIR / f"{name}.onnx", out)

    xtr, ytr = s["d"]["train"]
    xte, yte = s["d"]["test"]
    qop = spec["fmt"] == "QOperator"
    qtr_ort, qte_ort = ort_int8(out, xtr), ort_int8(out, xte)
    if qop:  # see the README: onnxruntime's QOperator kernels are not exact on every CPU
        print(f"  exact integer re-computation of {name} on {len(xtr) + len(xte)} images", flush=True)
        qtr, qte = exact_int8(out, xtr), exact_int8(out, xte)
    else:
        qtr, qte = qtr_ort, qte_ort
    pred_tr, ties_tr = G.first_argmax(qtr), G.n_ties(qtr)
    pred_te, ties_te = G.first_argmax(qte), G.n_ties(qte)
    fpath = FLOAT_DIR / f"{fsrc}_f32.onnx"
    fpred_tr = G.first_argmax(G.ort_run(fpath, xtr))
    fpred_te = G.first_argmax(G.ort_run(fpath, xte))
    int8 = accuracies(pred_tr, s, pred_te)
    flt = accuracies(fpred_tr, s, fpred_te)
    m = onnx.load(str(out))
    scale, zp = G.output_quant(m)
    rec = dict(
        scenario=name,
        model=f"retrain/{out.name}",
        sha256=G.sha256_file(out),
        base_model=f"{spec['name']}.onnx",
        dataset=ds,
        kind="class-wise" if t["kind"] == "class" else "random",
        forget_set=s["rule"],
        train_set=s["source"],
        n=dict(train=int(len(ytr)), retain=int(len(s["retain"])), forget=int(len(s["forget"])), test=int(len(yte))),
        int8_accuracy=int8,
        float_accuracy=flt,
        reference=(f"onnxruntime {ort.__version__} ORT_DISABLE_ALL, 1 thread" if not qop else
                   "exact integer re-computation (onnx-models/qop_numpy_check.py), not onnxruntime: see "
                   "onnxruntime_int8_accuracy and onnxruntime_vs_exact")
                  + "; argmax of the quantized logits, first maximum on ties",
        cpu=cpu_info(),
        argmax_ties=dict(train=ties_tr, test=ties_te),
        output_dtype=str(zp.dtype), output_scale=float(scale), output_zero_point=int(zp),
        ops=G.op_histogram(m),
        format=spec["fmt"],
        weights="int8 per-channel" if spec["per_channel"] else "int8 per-tensor",
        activations="uint8" if spec["act"] == "u8" else "int8",
        calibration=f"MinMax, the first {G.CALIB_N} training images not in the forget set (dataset order), "
                    f"batches of {G.CALIB_BATCH}; retain indices {int(s['retain'][0])}..{int(s['retain'][G.CALIB_N - 1])}",
        quantize_static=dict(quant_format=spec["fmt"], per_channel=spec["per_channel"], reduce_range=False,
                             activation_type="QUInt8" if spec["act"] == "u8" else "QInt8", weight_type="QInt8",
                             calibrate_method="MinMax", extra_options={}),
        quant_pre_process=dict(skip_optimization=not spec["pre_opt"], ops_after=qinfo["preprocessed_float_ops"]),
        float_model=f"retrain/float/{fsrc}_f32.onnx",
    )
    if t["kind"] == "class":
        c = yte == FORGET_CLASS
        rec["int8_accuracy"]["test_forget_class"] = float((pred_te[c] == yte[c]).mean())
        rec["int8_accuracy"]["test_other_classes"] = float((pred_te[~c] == yte[~c]).mean())
        # the same split restricted to the first 10k training images (what data/<set> bundles)
        b = np.arange(GO.N_TRAIN)
        bf = b[ytr[b] == FORGET_CLASS]
        br = b[ytr[b] != FORGET_CLASS]
        rec["int8_accuracy_bundled_10k"] = dict(
            n_forget=int(len(bf)), n_retain=int(len(br)),
            forget=float((pred_tr[bf] == ytr[bf]).mean()), retain=float((pred_tr[br] == ytr[br]).mean()))
    if qop:
        rec["onnxruntime_int8_accuracy"] = accuracies(G.first_argmax(qtr_ort), s, G.first_argmax(qte_ort))
        rec["onnxruntime_vs_exact"] = dict(test=lsb_diff(qte_ort, qte), train=lsb_diff(qtr_ort, qtr))
        if spec.get("sibling"):
            # the exact re-computation against the QDQ sibling (same float net and calibration, run by
            # onnxruntime as float ops between Q/DQ pairs): they differ only by float rounding
            sib = f"class{FORGET_CLASS}_{spec['sibling']}"
            qs = qop_siblings.get(sib)
            if qs is None:
                qs = ort_int8(HERE / f"{sib}.onnx", xte)
            rec["exact_vs_qdq_sibling_test"] = dict(qdq_sibling=sib, **lsb_diff(qte, qs))
            if rec["exact_vs_qdq_sibling_test"]["max_abs_diff_lsb"] > 2:
                raise AssertionError(f"{name}: exact integer output differs from {sib} by "
                                     f"{rec['exact_vs_qdq_sibling_test']['max_abs_diff_lsb']} LSB")
        o = rec["onnxruntime_vs_exact"]["test"]
        print(f"  {name}: onnxruntime vs exact integer on test: max |d| {o['max_abs_diff_lsb']} LSB, "
              f"{o['values_differing']} values, {o['top1_differences']} top-1 differ", flush=True)
    qop_siblings[name] = qte
    keep = ("recipe", "seed", "epochs", "phase1_epochs", "lr", "lr_final", "lr_final_epochs", "batch",
            "train_accuracy", "test_accuracy", "train_seconds", "wall_seconds", "threads", "n_train")
    rec["training"] = {k: training[k] for k in keep if k in training}
    rec["training"]["record"] = f"retrain/float/{t['tag']}.training.json"
    (HERE / f"{name}.json").write_text(json.dumps(rec, indent=2) + "\n")
    a = rec["int8_accuracy"]
    print(f"  {name}: int8 forget {a['forget']:.4f} retain {a['retain']:.4f} test {a['test']:.4f} "
          f"(train {a['train']:.4f})", flush=True)
    return rec


# ----------------------------------------------------------------------------------------------
# README table


TABLE_BEGIN = "<!-- retrain-table:begin (written by retrain/generate_references.py) -->"
TABLE_END = "<!-- retrain-table:end -->"


def update_readme() -> None:
    rows = ["| scenario | base model | forget set | int8 FA | int8 RA | int8 TA | train acc (all) | "
            "epochs | train time | sha256 (first 12) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in trainings():
        for n, _ in t["scenarios"]:
            p = HERE / f"{n}.json"
            if not p.exists():
                continue
            r = json.loads(p.read_text())
            a, tr = r["int8_accuracy"], r["training"]
            note = " ¹" if r["format"] == "QOperator" else ""
            ep = (f"{tr['epochs']} ({tr['phase1_epochs']} + {tr['lr_final_epochs']})" if "phase1_epochs" in tr
                  else f"{tr['epochs']}")
            rows.append(f"| `{n}`{note} | `{r['base_model']}` | {r['n']['forget']} of {r['n']['train']} | "
                        f"{100 * a['forget']:.2f} % | {100 * a['retain']:.2f} % | {100 * a['test']:.2f} % | "
                        f"{100 * a['train']:.2f} % | {ep} | {tr['train_seconds']:.0f} s | `{r['sha256'][:12]}` |")
    readme = FIXTURES / "README.md"
    text = readme.read_text()
    block = TABLE_BEGIN + "\n" + "\n".join(rows) + "\n" + TABLE_END
    if TABLE_BEGIN in text and TABLE_END in text:
        head, rest = text.split(TABLE_BEGIN, 1)
        _, tail = rest.split(TABLE_END, 1)
        text = head + block + tail
    else:
        text += "\n" + block + "\n"
    readme.write_text(text)


# ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("QFORGET_SRC_DATA", "/work/shared/data"),
                    help="the original 60k datasets (class-wise scenarios)")
    ap.add_argument("--only", action="append", metavar="PATTERN",
                    help="scenario names or fnmatch patterns (repeatable)")
    ap.add_argument("--skip", action="append", metavar="PATTERN", default=[],
                    help="leave out scenarios matching these fnmatch patterns (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and whether they exist")
    ap.add_argument("--requantize", action="store_true",
                    help="redo quantization and measurements from the existing float models (never train)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--readme-only", action="store_true", help="only rewrite the table in ../README.md")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    assert onnx.__version__ == "1.23.2", onnx.__version__
    assert ort.__version__ == "1.32.0", ort.__version__
    if args.readme_only:
        update_readme()
        return
    want = lambda n: ((not args.only or any(fnmatch.fnmatchcase(n, p) for p in args.only))  # noqa: E731
                      and not any(fnmatch.fnmatchcase(n, p) for p in args.skip))
    todo = [t for t in trainings() if any(want(n) for n, _ in t["scenarios"])]
    if args.list:
        for t in todo:
            for n, _ in t["scenarios"]:
                if want(n):
                    print(f"{n:45s} {'done' if (HERE / f'{n}.json').exists() else '-'}")
        return
    for seed in RANDOM_SEEDS:
        write_ids(seed)
    cache = {}
    t_all = time.time()
    for t in todo:
        names = [(n, spec) for n, spec in t["scenarios"] if want(n)]
        if not args.requantize:
            names = [(n, spec) for n, spec in names if not (HERE / f"{n}.json").exists()]
        if not names:
            continue
        s = load_split(t, Path(args.data), cache)
        rec_path = FLOAT_DIR / f"{t['tag']}.training.json"
        have = rec_path.exists() and all((FLOAT_DIR / f"{o}_f32.onnx").exists() for o in t["floats"].values())
        if have:
            training = json.loads(rec_path.read_text())
        elif args.requantize:
            sys.exit(f"--requantize: {rec_path} or a float model of {t['tag']} is missing")
        else:
            print(f"train {t['tag']}: {len(s['retain'])} retain images, forget {s['rule']}", flush=True)
            training = train(t, s, args.threads)
        # QDQ siblings before their QOperator twins (the cross-check reads the sibling's output)
        qop_siblings = {}
        for n, spec in sorted(names, key=lambda ns: ns[1]["fmt"] != "QDQ"):
            print(f"quantize {n}", flush=True)
            quantize_and_measure(t, s, n, spec, training, qop_siblings)
    update_readme()
    print(f"done in {time.time() - t_all:.0f}s", flush=True)


if __name__ == "__main__":
    main()
