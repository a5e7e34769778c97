"""Every error Lensboard reports to a person derives from LensboardError.

Each message says what was wrong and what is allowed, in one line, so the CLI and the pages
catch this one base at their boundary and print or show the message as it is. The classes
also derive from the builtin they refine (ValueError, LookupError, ...), so a caller that
catches the builtin keeps working.
"""

from __future__ import annotations


class LensboardError(Exception):
    """The root of Lensboard's errors: its message is meant for the user, as it is."""


class ConfigError(LensboardError, ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


class DatasetError(LensboardError, RuntimeError):
    """A dataset is missing or unreadable; the message says where and what was expected."""


class ModelError(LensboardError, RuntimeError):
    """A model cannot be built or loaded (unknown arch, images too small, missing weights)."""


class ImageError(LensboardError, ValueError):
    """An image file (an upload, a `search --image` file, a folder dataset's image) cannot be used; the
    message says why and what is accepted."""


UploadError = ImageError  # the name the upload pages and commands know it by


class EmbeddingError(LensboardError, RuntimeError):
    """Embeddings cannot be computed or read for a run."""


class RetrievalError(LensboardError, ValueError):
    """A search or an index request that cannot be done (bad k, unknown index type, ...)."""


class ProjectionError(LensboardError, ValueError):
    """A t-SNE or PCA request that cannot be done (bad perplexity, too few points, ...)."""


class ResultsError(LensboardError, RuntimeError):
    """The results root cannot be used (not a folder, not writable, not a Lensboard database)."""


class RunNotFound(LensboardError, LookupError):
    """No run with that id (or folder) in the results root."""


class InvalidRunId(RunNotFound, ValueError):
    """A run id that is not a safe folder name (`../../victim`): it is never used as a path."""


class JobError(LensboardError, ValueError):
    """A queue request that cannot be done (e.g. cancelling a finished run); the message says why."""


class UsageError(LensboardError, ValueError):
    """A command-line value that cannot be used (e.g. a malformed list); the message says what is allowed."""


class SearchSpaceError(ConfigError):
    """A search space or search setting is invalid; the message names the flag and what is allowed."""


class SweepNotFound(RunNotFound):
    """No sweep (or no search, where only a search will do) with that id in the results root."""


class ReplayError(ConfigError):
    """An early-stopping replay that cannot be done (the sweep already stopped trials early, or has no epochs)."""


class CompareError(LensboardError, ValueError):
    """Runs that cannot be compared (a single group, a run without the metric); the message says what would work."""


class Cancelled(LensboardError):
    """Control flow, not a failure: long work (embeddings, t-SNE) stopped because it was asked to."""


class RegistryBusy(ResultsError):
    """The results database stayed locked by another process for longer than its busy timeout."""


class RunFolderGone(LensboardError):
    """A run's folder was deleted while the run was being written to."""
