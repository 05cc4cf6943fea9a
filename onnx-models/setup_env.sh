#!/usr/bin/env bash
# Sets up the Python environment that onnx-models/generate.py needs. Idempotent.
#
#   sudo bash onnx-models/setup_env.sh          # (runs as root on the project machines)
#   /opt/qfpy/bin/python onnx-models/generate.py
#
# torch comes from Debian (python3-torch 1.13.1, CPU) and is seen through
# --system-site-packages; onnx and onnxruntime come from PyPI, pinned in requirements.txt.
set -euo pipefail

VENV="${QFPY_VENV:-/opt/qfpy}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

need_apt=0
# libopenblas0-pthread: Debian's torch otherwise falls back to the reference BLAS (4x slower Linear layers)
APT_PKGS="python3-torch python3-venv python3-numpy libopenblas0-pthread"
for pkg in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt=1
done
if [ "$need_apt" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends $APT_PKGS
fi

if [ ! -x "$VENV/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

if ! "$VENV/bin/python" - "$HERE/requirements.txt" <<'PY' 2>/dev/null
import sys, importlib.metadata as md
want = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, ver = line.split("==")
        want[name] = ver
bad = [n for n, v in want.items() if md.version(n) != v]
sys.exit(1 if bad else 0)
PY
then
    "$VENV/bin/pip" install --disable-pip-version-check -r "$HERE/requirements.txt"
fi

"$VENV/bin/python" - <<'PY'
import numpy, torch, onnx, onnxruntime
print("numpy", numpy.__version__, "torch", torch.__version__,
      "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)
assert onnx.__version__ == "1.23.2" and onnxruntime.__version__ == "1.32.0"
assert numpy.__version__.startswith("1."), "torch 1.13 needs numpy 1.x"
t = torch.from_numpy(numpy.arange(3, dtype=numpy.float32))  # numpy interop works
assert t.numpy().tolist() == [0.0, 1.0, 2.0]
PY
