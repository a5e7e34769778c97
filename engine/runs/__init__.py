"""The runs layer: the registry and run folders, the job queue, sweeps, and the worker that runs jobs."""
