"""Lensboard's engine: datasets, models, training, the run store, jobs, embeddings and search.

Importing the engine changes no environment variable: the thread policy is set at the entry points
(the CLI, the worker, the benchmarks) by engine.ml.threads.configure_threads.
"""
