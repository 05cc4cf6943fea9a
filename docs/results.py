#!/usr/bin/env python3
"""Generate docs/RESULTS.md from qforget's CLI with default settings only (stdlib only).

    cargo build --release
    python3 docs/results.py [--qforget target/release/qforget] [--seeds 0 1 2] [--baseline-seeds 0]

Every run is `qforget forget MODEL --dataset DIR <request> --seed S --method M --json
--reference GOLD --out DELTA` and nothing else: no learning rate, epoch budget or stopping rule
is typed in, so every method gets the same defaults (target from the request, retain guard,
budget). The gold standard is the PyTorch retrain of each base model's own recipe without the
forget set, quantized like the base (`onnx-models/retrain/`, made by `generate_references.py`),
measured by qforget on the same samples as the run (Avg. Gap = mean |Δ| over FA, RA, TA, MIA).
qforget's own Retrain is the on-device baseline and is run only with `--with-retrain` (it trains
from scratch: hours on this 2-core machine for all scenarios).

Scenarios: class-wise forgetting of class 3 on every fixture architecture, on the bundled 10k
training images (`data/`); random 10 % forgetting (the id lists the PyTorch references left
out, one per seed) on the memorizing fixtures. A refused request (exit 1: target not met within
the retain budget) writes nothing; its row shows what the run reached, counted in "refused".
Raw JSON of every run: docs/results/<scenario>/. Nothing is typed in by hand: rerun to regenerate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results"
REF = "onnx-models/retrain"

CLASSWISE = [
    ("mnist_res_s8", "mnist", "residual CNN, int8 activations, per-tensor weights"),
    ("mnist_res_qdq_u8", "mnist", "residual CNN, uint8 activations"),
    ("mnist_mlp_matmul_qdq", "mnist", "MLP (MatMul)"),
    ("fmnist_cnn_qdq", "fashion-mnist", "CNN"),
    ("fmnist_cnn_bn_qdq", "fashion-mnist", "CNN with BatchNorm kept as its own layers, Q/DQ between conv and BN"),
    ("fmnist_cnn_relu6_qdq", "fashion-mnist", "CNN with ReLU6"),
    ("fmnist_cnn_w4", "fashion-mnist", "CNN, 4-bit weights (W4A8)"),
    ("mnist_res_w4", "mnist", "residual CNN, 4-bit weights (W4A8)"),
    ("fmnist_mnv2_qdq", "fashion-mnist", "MobileNetV2-style: depthwise 3×3, inverted residuals, ReLU6"),
]
RANDOM = [
    ("fmnist_overfit_qdq", "fmnist_overfit", "fashion-mnist", "memorizing CNN"),
    ("mnist_overfit_qdq", "mnist_overfit", "mnist", "memorizing CNN"),
    ("fmnist_res_overfit_qdq", "fmnist_res_overfit", "fashion-mnist", "memorizing residual CNN"),
    ("fmnist_overfit_w4", "fmnist_overfit_w4", "fashion-mnist", "memorizing CNN, 4-bit weights (W4A8)"),
]
METHODS = ["oeu", "finetune", "grad-ascent", "random-label", "qmul"]
NAMES = {"none": "Original (do nothing)", "retrain": "qforget Retrain (on device)", "oeu": "**OEU**",
         "finetune": "FT", "grad-ascent": "GA", "random-label": "RL", "qmul": "Q-MUL"}


def scenarios():
    for stem, data, what in CLASSWISE:
        yield dict(key=f"class3_{stem}", kind="class", model=f"onnx-models/{stem}.onnx", data=f"data/{data}",
                   title=f"Class-wise (class 3) — `{stem}` ({what}), bundled 10k {data} training images",
                   request=lambda seed: ["--forget-class", "3"],
                   gold=lambda seed, stem=stem: f"{REF}/class3_{stem}.onnx")
    for stem, ref, data, what in RANDOM:
        yield dict(key=f"random10_{ref}", kind="random", model=f"onnx-models/{stem}.onnx", data=f"data/{data}",
                   title=f"Random 10 % — `{stem}` ({what}), bundled 10k {data} training images",
                   request=lambda seed: ["--forget-ids", f"{REF}/ids/random10_seed{seed}.txt"],
                   gold=lambda seed, ref=ref: f"{REF}/random10_{ref}_seed{seed}.onnx")


def run(cmd: list[str], out_delta: Path) -> dict:
    t0 = time.time()
    p = subprocess.run(cmd + ["--out", str(out_delta)], capture_output=True, text=True)
    try:
        r = json.loads(p.stdout)
    except json.JSONDecodeError:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    r["exit_code"] = p.returncode
    r["delta_bytes"] = out_delta.stat().st_size if out_delta.exists() else None
    r["model_bytes"] = Path(cmd[2]).stat().st_size
    print(f"  {time.time() - t0:6.1f} s  rc {p.returncode}  {' '.join(cmd[1:])}", flush=True)
    return r


def ms(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qforget", default=str(ROOT / "target" / "release" / "qforget"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for OEU")
    ap.add_argument("--baseline-seeds", type=int, nargs="+", default=None,
                    help="seeds for the baselines (default: the same as --seeds)")
    ap.add_argument("--only", nargs="*", help="scenario keys to run (default: all)")
    ap.add_argument("--methods", nargs="+", default=METHODS, help="methods to run (default: all)")
    ap.add_argument("--with-retrain", action="store_true", help="also run qforget's own Retrain")
    ap.add_argument("--commit", default=None, help="commit the binary was built from (default: HEAD)")
    ap.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from docs/results/")
    args = ap.parse_args()
    if args.commit is None:
        args.commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, cwd=ROOT).stdout.strip()
    bseeds = args.baseline_seeds if args.baseline_seeds is not None else args.seeds
    os.chdir(ROOT)
    sections, summary, commits, kernels = [], [], set(), set()
    for sc in scenarios():
        if args.only and sc["key"] not in args.only:
            continue
        d = OUT / sc["key"]
        d.mkdir(parents=True, exist_ok=True)
        plan = [("oeu", s) for s in args.seeds if "oeu" in args.methods]
        plan += [(m, s) for m in args.methods if m != "oeu" for s in bseeds]
        if args.with_retrain:
            plan += [("retrain", s) for s in bseeds]
        if not args.render_only:
            print(f"== {sc['key']}", flush=True)
            for m, seed in plan:
                cmd = [args.qforget, "forget", sc["model"], "--dataset", sc["data"], *sc["request"](seed),
                       "--seed", str(seed), "--method", m, "--reference", sc["gold"](seed), "--json"]
                with tempfile.TemporaryDirectory() as tmp:
                    r = run(cmd, Path(tmp) / "request.qfd")
                r["command"] = " ".join(cmd[1:])
                r["commit"] = args.commit
                (d / f"{m}_seed{seed}.json").write_text(json.dumps(r, indent=1))
        rows: dict[str, list[dict]] = {}
        shown = [("none", s) for s in args.seeds] + [("oeu", s) for s in args.seeds]
        for m, seed in shown + [p for p in plan if p[0] != "oeu"]:
            src = d / f"{'oeu' if m == 'none' else m}_seed{seed}.json"
            if not src.exists():
                continue
            r = json.loads(src.read_text())
            if m == "none":
                row = {**r["before"], "gap": r["before"].get("gap"), "seconds": 0.0, "refused": False,
                       "steps": 0, "delta_pct": None}
            else:
                row = {**r["after"], "seconds": r["seconds"], "refused": bool(r.get("refused")),
                       "steps": r["steps"],
                       "delta_pct": (100.0 * r["delta_bytes"] / r["model_bytes"]) if r.get("delta_bytes") else None}
            row["gold"] = r.get("reference")
            commits.add(r.get("commit", "?"))
            if m != "none":
                kernels.add(r.get("kernel", "not recorded"))
            rows.setdefault(m, []).append(row)
        if not rows:
            continue
        gold = rows["oeu"][0]["gold"] or {}
        lines = [f"### {sc['title']}", "",
                 f"Model `{sc['model']}`; gold standard `{sc['gold'](args.seeds[0]).replace('seed0', 'seed<S>')}` "
                 f"(PyTorch retrain without the forget set, quantized like the base; seed 0: FA "
                 f"{gold.get('forget_acc', 0):.2f}, RA {gold.get('retain_acc', 0):.2f}, TA {gold.get('test_acc', 0):.2f}, "
                 f"MIA {gold.get('mia', 0):.2f}). Mean ± std over the seeds run; raw runs: `docs/results/{sc['key']}/`.",
                 "",
                 "| method | seeds | refused | FA (%) | RA (%) | TA (%) | MIA (%) | Avg. Gap to gold (pp) | steps | wall time (s) | delta (% of model file) |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for m, rs in rows.items():
            col = lambda k: ms([r.get(k) for r in rs])  # noqa: E731
            lines.append(f"| {NAMES[m]} | {len(rs)} | {sum(r['refused'] for r in rs)} | {col('forget_acc')} | "
                         f"{col('retain_acc')} | {col('test_acc')} | {col('mia')} | {col('gap')} | {col('steps')} | "
                         f"{col('seconds')} | {col('delta_pct')} |")
        golds = [r["gold"] for r in rows["oeu"] if r["gold"]]
        lines += ["", "Gold standard over the same seeds: FA " + ms([g["forget_acc"] for g in golds]) +
                  ", RA " + ms([g["retain_acc"] for g in golds]) + ", TA " + ms([g["test_acc"] for g in golds]) +
                  ", MIA " + ms([g["mia"] for g in golds]) + "."]
        gold_json = [json.loads(Path(sc["gold"](sd).replace(".onnx", ".json")).read_text()) for sd in args.seeds]
        gold_secs = mean([j.get("training", {}).get("train_seconds") for j in gold_json])
        oeu_secs = mean([r["seconds"] for r in rows["oeu"]])
        if gold_secs:
            lines.append(f"The PyTorch retrain took {gold_secs:.0f} s of training (fp32, its own recipe, see "
                         f"`onnx-models/retrain/`); OEU's wall time is {100 * oeu_secs / gold_secs:.1f} % of it.")
        if sc["kind"] == "class":
            lines.append("TA is on the test images of the other classes.")
        sections.append("\n".join(lines))
        summary.append(dict(key=sc["key"], kind=sc["kind"], rows=rows, golds=golds, gold_secs=gold_secs))
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1))
    write_md(sections, summary, args, sorted(commits), sorted(kernels))


def checks_of(summary) -> list[str]:
    out = []
    for s in summary:
        rows, golds = s["rows"], s["golds"]
        m = lambda meth, k: mean([r.get(k) for r in rows.get(meth, [])])  # noqa: E731
        g = lambda k: mean([x[k] for x in golds])  # noqa: E731
        refused = sum(r["refused"] for r in rows["oeu"])
        start_ra = m("none", "retain_acc")
        if s["kind"] == "random":
            gap = m("oeu", "gap")
            others = {k: m(k, "gap") for k in rows if k not in ("oeu",) and m(k, "gap") is not None}
            ok = gap is not None and gap <= 1.5 and all(gap < v for v in others.values())
            oth = ", ".join(f"{NAMES[k]} {v:.2f}" for k, v in others.items())
            out.append(f"- {s['key']}: OEU Avg. Gap {gap:.2f} pp (target ≤ 1.5 and below every other row: {oth}); "
                       f"refused {refused}/{len(rows['oeu'])} — {'met' if ok else '**not met**'}")
        else:
            fa, dra, dta = m("oeu", "forget_acc"), m("oeu", "retain_acc") - g("retain_acc"), m("oeu", "test_acc") - g("test_acc")
            ok = fa <= 1.0 and abs(dra) <= 1.0 and abs(dta) <= 1.0 and refused == 0
            out.append(f"- {s['key']}: OEU FA {fa:.2f} % (target ≤ 1), RA − gold {dra:+.2f} pp, TA − gold {dta:+.2f} pp "
                       f"(targets within ±1); refused {refused}/{len(rows['oeu'])} — {'met' if ok else '**not met**'}")
        drop = start_ra - m("oeu", "retain_acc")
        out.append(f"- {s['key']}: OEU retain accuracy {start_ra:.2f} → {m('oeu', 'retain_acc'):.2f} % "
                   f"(target: at most 2 pp below the start) — {'met' if drop <= 2 else '**not met**'}")
        if s.get("gold_secs"):
            pct = 100 * m("oeu", "seconds") / s["gold_secs"]
            out.append(f"- {s['key']}: OEU wall time {pct:.1f} % of the PyTorch retrain's training time "
                       f"(target ≤ 5 %) — {'met' if pct <= 5 else '**not met**'}")
        dp = m("oeu", "delta_pct")
        if dp is not None:
            out.append(f"- {s['key']}: OEU delta {dp:.2f} % of the model file (target ≤ 5 %) — "
                       f"{'met' if dp <= 5 else '**not met**'}")
    return out


def write_md(sections, summary, args, commits, kernels) -> None:
    commit = ", ".join(commits)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    md = ["# qforget — unlearning results", "",
          "Generated by `python3 docs/results.py` from `qforget forget --json` runs with **default settings "
          "only**; do not edit by hand.",
          f"Machine: {cpu}, {os.cpu_count()} cores; binary `{Path(args.qforget).name}` built "
          f"at commit {commit}; int8 kernel tier {', '.join(kernels)} (from the runs' JSON; runs made before "
          f"the JSON carried it say 'not recorded'); generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. The machine is "
          "shared: wall times are indicative.", "",
          "Metrics (DESIGN.md): FA = accuracy on the forget set, RA = on the retain set, TA = on the test set "
          "(class-wise: of the other classes), MIA = MIA-efficacy (share of forget samples an RBF-SVM on "
          "true-label confidence, members = retain samples, non-members = test samples, the forgotten class's included, calls non-members), "
          "Avg. Gap = mean |Δ| over FA, RA, TA, MIA to the gold standard, a PyTorch retrain without the forget "
          "set quantized like the base (`onnx-models/retrain/`), measured by qforget on the same samples. "
          "Wall time is the method's own run; delta = the `--out` file over the model file.", "",
          "Every method runs with the CLI's defaults (`forget MODEL --dataset DIR <request> --method M`): the "
          "target from the request (class-wise: FA ≤ 1 %; samples: FA ≤ the model's test accuracy), the retain "
          "guard (2 pp on a held-out probe), the same epoch budget rules (up to 3 more budgets for a run that "
          "spends one while on pace for its target). A refused request writes nothing (the "
          "device keeps its model); its row shows what the run reached.", "",
          "## Targets (issue 9)", ""] + checks_of(summary) + ["", "## Tables", "", "\n\n".join(sections), ""]
    md += ["## Earlier results", "",
           "The hand-tuned runs of issue 4 (before the retain guard) are generated by `docs/results_issue4.py`; "
           "their raw JSON stays in `docs/results/random10_*`, `class3_fmnist`, `class3_mnist`.", ""]
    md += peer_section()
    (ROOT / "docs" / "RESULTS.md").write_text("\n".join(md))
    print("wrote docs/RESULTS.md")


def peer_section() -> list[str]:
    """The newest peer benchmark run (`docs/results/peer-<date><run>-<cpu>/`, the last name in
    sort order), one row per model and thread count; `benches/README.md` has every run."""
    runs = sorted(d for d in OUT.glob("peer-*") if d.is_dir())
    if not runs:
        return []
    newest = runs[-1]
    rows, cpu, versions = {}, "", []
    for f in sorted(newest.glob("*.json")):
        d = json.loads(f.read_text())
        cpu = d.get("cpu", cpu)
        torch = next((r["torch"].split("+")[0] for r in d["runs"] if r.get("torch")), "?")
        if torch not in versions:
            versions.append(torch)
        for r in d["runs"]:
            side = "torch" if r.get("torch") else "qforget"
            key = (Path(d["model"]).stem, d["epochs"], r["threads"])
            rows.setdefault(key, {})[(side, torch)] = (r["epoch_mean_s"], r["rss_mb"]["peak"])
    head = ["model (epochs)", "threads"]
    for v in versions:
        head += [f"torch {v} s/epoch", "qforget s/epoch", f"qforget speed vs {v}"]
    head += ["peak RSS MB (" + " / ".join(f"torch {v}" for v in versions) + " / qforget)"]
    md = ["## Peer benchmark: the same OEU steps in PyTorch (CPU, fp32 fake-quant)", "",
          f"The newest run of `benches/peer_oeu.py` (`docs/results/{newest.name}/`, CPU {cpu}; kernel tier "
          "and every earlier run in `benches/README.md`): random 10 %, batches 64/64, both sides in one run, "
          "speed = torch s / qforget s.", "",
          "| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for (model, epochs, threads), sides in sorted(rows.items()):
        cells, rss = [f"`{model}` ({epochs})", str(threads)], []
        for v in versions:
            t, q = sides.get(("torch", v)), sides.get(("qforget", v))
            cells += [f"{t[0]:.3f}" if t else "—", f"{q[0]:.3f}" if q else "—",
                      f"{t[0] / q[0]:.2f}×" if t and q else "—"]
            rss.append(f"{t[1]:.0f}" if t else "—")
        q_rss = [sides[k][1] for k in sides if k[0] == "qforget"]
        rss.append(f"{max(q_rss):.0f}" if q_rss else "—")
        md.append("| " + " | ".join(cells + [" / ".join(rss)]) + " |")
    return md + [""]


if __name__ == "__main__":
    main()
