"""Lensboard's engine: datasets, models, training, the run store, jobs, embeddings and search."""
