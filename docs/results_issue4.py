#!/usr/bin/env python3
"""Generate docs/RESULTS.md from qforget's CLI (stdlib only; no numpy, no torch).

    cargo build --release
    python3 docs/results.py [--qforget target/release/qforget] [--seeds 0 1 2] [--shared ../shared/data]

For every scenario (random 10 % forgetting on the memorizing fixtures and the bundled 10k
training images; class-wise forgetting on the full-training-set fixtures and the full sets in
../shared/data) and every seed it runs `qforget forget --json` for Retrain first, then for every
other method with `--reference <retrain run>.json`, keeps every raw JSON under
docs/results/<scenario>/, and writes mean ± std tables. The "do nothing" row is the original
model (the `before` metrics of the runs). Nothing is typed in by hand: rerun to regenerate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results"

# The stopping rule shared by every method that sees the forget set in random forgetting:
# stop once forget accuracy is at or below the original model's test accuracy (a target a device
# knows without retraining: forgotten samples should look like unseen ones).
SCENARIOS = [
    dict(
        key="random10_fmnist",
        title="Random 10 % forgetting — Fashion-MNIST (memorizing CNN, 10k training images)",
        model="onnx-models/fmnist_overfit_qdq.onnx",
        data="data/fashion-mnist",
        forget=["--forget-random", "0.1"],
        stop_at_test_acc=True,
        retrain=["--epochs", "15", "--lr", "0.01"],
    ),
    dict(
        key="random10_mnist",
        title="Random 10 % forgetting — MNIST (memorizing CNN, 10k training images)",
        model="onnx-models/mnist_overfit_qdq.onnx",
        data="data/mnist",
        forget=["--forget-random", "0.1"],
        stop_at_test_acc=True,
        retrain=["--epochs", "15", "--lr", "0.01"],
    ),
    dict(
        key="class3_fmnist",
        title="Class-wise forgetting (class 3) — Fashion-MNIST (CNN trained on all 60k images)",
        model="onnx-models/fmnist_cnn_qdq.onnx",
        data="{shared}/fashion-mnist",
        forget=["--forget-class", "3"],
        stop_at_test_acc=False,
        retrain=["--epochs", "3", "--lr", "0.01"],
    ),
    dict(
        key="class3_mnist",
        title="Class-wise forgetting (class 3) — MNIST (residual CNN trained on all 60k images)",
        model="onnx-models/mnist_res_s8.onnx",
        data="{shared}/mnist",
        forget=["--forget-class", "3"],
        stop_at_test_acc=False,
        retrain=["--epochs", "3", "--lr", "0.01"],
    ),
]

METHODS = ["oeu", "finetune", "grad-ascent", "random-label", "qmul"]

# Random forgetting on a memorizing model: the entropy gradient of a confident prediction is tiny,
# so the forget-set methods get a larger step and a budget of 8 epochs, with the stopping rule
# checked every 2 steps; all of them get the same budget (FT keeps its defaults: it never sees
# the forget set). Picked from a small sweep on seed 1 of Fashion-MNIST (lr 0.02–0.2, λ 0.25–2,
# retain batch 64–512), reported in the closing note of issue 4.
FORGET_BUDGET = ["--lr", "0.05", "--epochs", "8", "--check-every", "2", "--retain-batch", "256"]
RANDOM_SETTINGS = {
    "oeu": FORGET_BUDGET + ["--lambda", "0.5"],
    "grad-ascent": FORGET_BUDGET,
    "random-label": FORGET_BUDGET,
    "qmul": FORGET_BUDGET,
}
# Class-wise: CLI defaults (lr 0.01, 3 epochs), stopping once forget accuracy ≤ 1 %, checked
# every 10 steps, for every method that sees the forget set.
CLASS_STOP = ["--stop-forget-acc", "1", "--check-every", "10"]
CLASS_SETTINGS = {m: CLASS_STOP for m in ["oeu", "grad-ascent", "random-label", "qmul"]}
# FT's epoch is a pass over 54k retain images (as long as a Retrain epoch): one epoch.
CLASS_SETTINGS["finetune"] = ["--epochs", "1"]
NAMES = {
    "none": "Original (do nothing)",
    "retrain": "Retrain (gold standard)",
    "oeu": "**OEU**",
    "finetune": "FT",
    "grad-ascent": "GA",
    "random-label": "RL",
    "qmul": "Q-MUL",
}


def run(cmd: list[str]) -> dict:
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    print(f"  {time.time() - t0:6.1f} s  {' '.join(cmd[1:])}", flush=True)
    return json.loads(p.stdout)


def eval_acc(q: str, model: str, data: str, split: str) -> float:
    p = subprocess.run([q, "eval", model, "--dataset", data, "--split", split, "--json"],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)["accuracy"] * 100.0


def ms(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qforget", default=str(ROOT / "target" / "release" / "qforget"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--only", nargs="*", help="scenario keys to run (default: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite RESULTS.md from the raw runs in docs/results/ without running methods")
    args = ap.parse_args()
    q = args.qforget
    os.chdir(ROOT)
    sections = []
    summary = []
    for sc in SCENARIOS:
        if args.only and sc["key"] not in args.only:
            continue
        data = sc["data"].format(shared=args.shared)
        d = OUT / sc["key"]
        d.mkdir(parents=True, exist_ok=True)
        if not args.render_only:
            print(f"== {sc['key']}", flush=True)
            for seed in args.seeds:
                common = [q, "forget", sc["model"], "--dataset", data, *sc["forget"], "--seed", str(seed), "--json"]
                if args.threads:
                    common += ["--threads", str(args.threads)]
                rt = run(common + ["--method", "retrain", *sc["retrain"]])
                (d / f"retrain_seed{seed}.json").write_text(json.dumps(rt, indent=1))
                ref = str(d / f"retrain_seed{seed}.json")
                for m in METHODS:
                    if sc["stop_at_test_acc"]:
                        extra = ["--stop-forget-acc", f"{rt['before']['test_acc']:.2f}", *RANDOM_SETTINGS.get(m, [])]
                    else:
                        extra = CLASS_SETTINGS.get(m, [])
                    r = run(common + ["--method", m, "--reference", ref, *extra])
                    (d / f"{m}_seed{seed}.json").write_text(json.dumps(r, indent=1))
        # Tables come from the raw runs on disk.
        rows: dict[str, list[dict]] = {m: [] for m in ["none", "retrain"] + METHODS}
        for seed in args.seeds:
            rt = json.loads((d / f"retrain_seed{seed}.json").read_text())
            rows["retrain"].append({**rt["after"], "gap": 0.0, "seconds": rt["seconds"]})
            for m in METHODS:
                r = json.loads((d / f"{m}_seed{seed}.json").read_text())
                rows[m].append({**r["after"], "seconds": r["seconds"]})
                if m == "oeu":
                    rows["none"].append({**r["before"], "seconds": 0.0})
        base_train = eval_acc(q, sc["model"], data, "train")
        base_test = eval_acc(q, sc["model"], data, "test")
        lines = [f"### {sc['title']}", "",
                 f"Model `{sc['model']}`: train accuracy {base_train:.2f} %, test accuracy {base_test:.2f} % "
                 f"(int8, qforget's engine). Data `{sc['data'].replace('{shared}', '../shared/data')}`. "
                 f"Seeds {', '.join(map(str, args.seeds))}; mean ± std. Raw runs: `docs/results/{sc['key']}/`.", "",
                 "| method | FA (%) | RA (%) | TA (%) | MIA (%) | Avg. Gap to Retrain (pp) | wall time (s) |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for m, rs in rows.items():
            col = lambda k: ms([r[k] for r in rs])  # noqa: E731
            lines.append(f"| {NAMES[m]} | {col('forget_acc')} | {col('retain_acc')} | {col('test_acc')} | "
                         f"{col('mia')} | {col('gap')} | {col('seconds')} |")
        oeu_t = statistics.mean(r["seconds"] for r in rows["oeu"])
        rt_t = statistics.mean(r["seconds"] for r in rows["retrain"])
        lines += ["", f"OEU wall time is {100 * oeu_t / rt_t:.1f} % of Retrain's "
                      f"({oeu_t:.1f} s vs {rt_t:.1f} s)."]
        if sc["key"].startswith("class"):
            lines.append("TA is measured on the test images of the other classes; the test accuracy on the "
                         "forgotten class itself is in the raw JSON (`test_forgotten_class_acc`).")
        sections.append("\n".join(lines))
        summary.append(dict(key=sc["key"], rows=rows, oeu_t=oeu_t, rt_t=rt_t))
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1))
    write_md(sections, summary, args)


def write_md(sections, summary, args) -> None:
    checks = []
    for s in summary:
        rows = s["rows"]
        mean = lambda m, k: statistics.mean(r[k] for r in rows[m])  # noqa: E731
        if s["key"].startswith("random"):
            gap = mean("oeu", "gap")
            others = {m: mean(m, "gap") for m in METHODS if m != "oeu"}
            best_other = min(others, key=others.get)
            ok = gap <= 1.5 and all(gap < v for v in others.values())
            checks.append(f"- {s['key']}: OEU Avg. Gap {gap:.2f} pp (target ≤ 1.5 and below every other method; "
                          f"best other: {NAMES[best_other]} {others[best_other]:.2f} pp) — "
                          f"{'met' if ok else '**not met**'}")
        else:
            fa = mean("oeu", "forget_acc")
            dra = mean("oeu", "retain_acc") - mean("retrain", "retain_acc")
            dta = mean("oeu", "test_acc") - mean("retrain", "test_acc")
            ok = fa <= 1.0 and abs(dra) <= 1.0 and abs(dta) <= 1.0
            checks.append(f"- {s['key']}: OEU FA {fa:.2f} % (target ≤ 1), RA − Retrain {dra:+.2f} pp, "
                          f"TA − Retrain {dta:+.2f} pp (targets within ±1) — {'met' if ok else '**not met**'}")
        pct = 100 * s["oeu_t"] / s["rt_t"]
        checks.append(f"- {s['key']}: OEU wall time {pct:.1f} % of Retrain's (target ≤ 5 %) — "
                      f"{'met' if pct <= 5 else '**not met**'}")
    md = ["# qforget — unlearning results", "",
          "Generated by `python3 docs/results.py` from `qforget forget --json` runs; do not edit by hand.",
          f"Machine: {os.cpu_count()} cores; binary `{Path(args.qforget).name}`; "
          f"generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
          "Metrics (DESIGN.md): FA = accuracy on the forget set, RA = on the retain set, TA = on the test set, "
          "MIA = MIA-efficacy (share of forget samples an RBF-SVM on true-label confidence, trained with "
          "retain samples as members and test samples as non-members, calls non-members), Avg. Gap = mean "
          "|Δ| to Retrain over FA, RA, TA, MIA (same seed). Wall time is the method's own run (metrics excluded).",
          "",
          "Settings (all in `docs/results.py`): every method runs on qforget's int8 engine (int8 backward, "
          "STE), SGD momentum 0.9, batch 64 (forget) + 64 (retain). Random forgetting: OEU, GA, RL and Q-MUL "
          "get lr 0.05, up to 8 epochs, retain batch 256 (OEU λ = 0.5), and stop once forget accuracy is at "
          "or below the original model's test accuracy (`--stop-forget-acc`, checked every 2 steps); FT keeps "
          "the defaults (lr 0.01, 2 epochs over the retain set). Class-wise: defaults (lr 0.01, up to 3 "
          "epochs), stopping once forget accuracy ≤ 1 % (checked every 10 steps). Retrain trains from random "
          "init with activation observers and a cosine learning rate (random: 15 epochs; class-wise: 3 epochs "
          "over the 54k retain images); class-wise FT runs 1 epoch over the retain set.",
          "", "**Stale since 2026-12-01 (issue 9).** These runs predate the retain guard, the targets taken "
          "from the request, the normalized OEU forget step and the losses on pre-requantization logits; they "
          "were not re-run with the new defaults (no time on a shared 2-core machine). What the new defaults "
          "measure, with the PyTorch retrain references as gold standard, is in "
          "[`docs/results/issue9-defaults.md`](results/issue9-defaults.md).",
          "", "## Targets", ""] + checks + ["", "## Worse than hoped (read this before the tables)", "",
          "- **Class-wise MNIST is a failed run, not a result.** On `mnist_res_s8.onnx` (residual CNN, int8 "
          "activations, per-tensor weights) Retrain from scratch on the 54k retain images diverged to chance "
          "(RA 11 %) in all three seeds, so its Avg. Gap column compares against a broken reference; and every "
          "method that uses the forget set (OEU, GA, RL, Q-MUL) damaged the model within 10–30 steps at lr 0.01 "
          "(OEU RA 30–74 %). On the same data with 10k images, Retrain reaches 81 % in 2 epochs, and OEU on "
          "the uint8 twin `mnist_res_qdq_u8.onnx` keeps RA at 96 %. What is known (bundled 10k, class 3, "
          "defaults): the collapse is OEU's projection on this model, not the int8 backward — with "
          "`--grad-path f32` RA still falls to 63 %, with `--projection none` RA stays 98.1 % (FA 6.5 %), and "
          "at lr 0.001 RA stays 98.8 % (FA 13.8 %). The root cause is not found yet.",
          "- **Retrain is under-trained.** 15 epochs (random) / 3 epochs (class-wise) leave its retain accuracy "
          "below the original's (Fashion-MNIST random: 95.7 % vs 100 %; class-wise: 91.9 % vs 95.4 %), so "
          "methods that keep RA high are penalised in the Avg. Gap, and class-wise RA/TA within 1 pp of "
          "Retrain is missed for that reason.",
          "- **Random forgetting on Fashion-MNIST:** OEU has the smallest gap of all methods (3.4 pp) but not "
          "≤ 1.5 pp; the entropy gradient of a confident (memorized) prediction is tiny, so OEU needs a large "
          "step and many steps, and its wall time is 38 % of Retrain's, not ≤ 5 %.",
          "- **RL and GA at lr 0.05** collapse the model (RA 10–25 %); they were given the same budget as OEU "
          "and not tuned separately.",
          "- **Peer benchmark:** qforget's OEU epoch is 1.5× *slower* than PyTorch's fp32 fake-quant (oneDNN) "
          "on this CPU, far from the 3× faster target; its peak RSS is 7.9× smaller (target: 4×).",
          "", "## Tables", ""] + ["\n\n".join(sections), ""]
    peer = OUT / "peer.md"
    if peer.exists():
        md += ["## Peer benchmark: the same OEU steps in PyTorch (CPU, fp32 fake-quant)", "",
               "Generated by `benches/peer_oeu.py` (see `benches/README.md`) into `docs/results/peer.md`; "
               "both sides in one run, qforget with `--no-metrics` so its peak RSS is the request's own.", "",
               peer.read_text().strip(), ""]
    (ROOT / "docs" / "RESULTS.md").write_text("\n".join(md))
    print("wrote docs/RESULTS.md")


if __name__ == "__main__":
    main()
