"""The machine-learning layer: datasets, models, training, analysis, embeddings, search, projections.

Knows nothing about the registry, the queue or the dashboard: it reads and writes plain files in a run
folder (named by engine.files.RunPaths) and reports through callbacks.
"""
