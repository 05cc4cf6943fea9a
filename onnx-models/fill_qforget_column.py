#!/usr/bin/env python3
"""Fill the "qforget eval" column of README.md from the qforget CLI itself (stdlib only).

For every quantized model in the table: `qforget eval MODEL --dataset ../data/<dataset> --json
--predictions tmp`, then compare the predictions with expected/<model>.predictions.txt (the
reference's). Writes "<accuracy> %, top-1 = reference on k/n".

    cargo build --release && python3 onnx-models/fill_qforget_column.py [path/to/qforget]
"""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "release" / "qforget"


def cell(model: str) -> str:
    exp = json.loads((HERE / "expected" / model.replace(".onnx", ".json")).read_text())
    with tempfile.TemporaryDirectory() as d:
        pred = Path(d) / "p.txt"
        out = subprocess.run(
            [str(BIN), "eval", str(HERE / model), "--dataset", str(ROOT / "data" / exp["dataset"]),
             "--json", "--predictions", str(pred)],
            check=True, capture_output=True, text=True).stdout
        r = json.loads(out)
        ours = pred.read_text().split()
    ref = (HERE / "expected" / model.replace(".onnx", ".predictions.txt")).read_text().split()
    same = sum(a == b for a, b in zip(ours, ref))
    return f"{100 * r['accuracy']:.2f} %, top-1 = reference on {same}/{len(ref)}"


def main() -> None:
    readme = HERE / "README.md"
    lines = readme.read_text().splitlines()
    out = []
    for line in lines:
        m = re.match(r"\| `([^`]+\.onnx)` \|", line)
        cols = line.split(" | ")
        if m and "_f32" not in m.group(1) and len(cols) == 10:
            cols[-1] = cell(m.group(1)) + " |"
            line = " | ".join(cols)
            print(line.split(" | ")[0], "→", cols[-1])
        out.append(line)
    readme.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
