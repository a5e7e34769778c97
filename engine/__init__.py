"""Lensboard's engine: datasets, models, training, the run store, jobs, embeddings and search.

Layers, each importing only those below it: `cli` > `runs` > `ml` > (`config`, `files`, `errors`,
`settings`). See docs/ARCHITECTURE.md. Importing the engine changes no environment variable.
"""
