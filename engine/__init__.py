"""Lensboard's engine: datasets, models, training, the run store, jobs, embeddings and search."""

import os

# The worker, the dashboard and a browser share a few cores. OpenMP threads that spin while they wait
# then starve each other: on the 2-core dev box under load, an epoch with torch's default (active)
# waiting ran 7-40x slower than with passive waiting. This takes effect only when the engine is
# imported before torch (the CLI, the worker, the benchmarks); set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
