#!/usr/bin/env bash
# GPU training speed per model and precision (benchmarks/gpu.py); says so and exits 0 without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" benchmarks/gpu.py "$@"
