#!/usr/bin/env bash
# The second PyTorch of the peer benchmark (benches/peer_oeu.py): the current release from PyPI
# (a CUDA build; it runs on the CPU), in its own venv beside the project's /opt/qfpy (Debian's
# torch 1.13, onnx-models/setup_env.sh), with the onnx and onnxruntime the torch twin needs.
# Idempotent. Not used by CI or the tests: peer benchmarks only.
#
#   bash benches/setup_torch_current.sh            # makes /opt/qfpy2 (QFPY2_VENV=DIR for another)
#   /opt/qfpy2/bin/python benches/peer_oeu.py --qforget target/release/qforget ...
set -euo pipefail

VENV="${QFPY2_VENV:-/opt/qfpy2}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# torch unpinned on purpose (the point is the current release); onnx 1.17 reads the fixtures'
# opsets and installs next to the newest torch; onnxruntime as in onnx-models/requirements.txt.
"$VENV/bin/pip" install -q torch onnx==1.17.0 onnxruntime==1.32.0 numpy
"$VENV/bin/python" -c 'import torch, onnx, onnxruntime; print("torch", torch.__version__, "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)'
