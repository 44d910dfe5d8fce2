"""Exceptions with messages a user can act on.

Every error the library raises for bad input derives from :class:`LanderError`, so the CLI can turn
all of them into a one-line message and a non-zero exit code instead of a traceback.
"""


class LanderError(Exception):
    """Base class: something the user can fix (bad input, missing model, missing extra)."""

    exit_code = 2  # what the CLI exits with


class InputError(LanderError, ValueError):
    """Embeddings, labels or parameters that cannot be clustered as given."""


class ModelError(LanderError):
    """A model file that is missing, unreadable, or made for other inputs."""


class MissingExtraError(LanderError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class StoreError(LanderError):
    """A collection that is missing, empty, or shaped differently from what we need."""


class StoredDataError(StoreError, InputError):
    """Stored vectors that cannot be clustered as they are (wrong size, NaN/inf/zero): retrying a pass cannot
    help, so watch mode stops with the input exit code instead of retrying."""


class CollectionNotReady(StoreError):
    """A collection with too few (distinct) points to cluster yet: watch mode waits for more to arrive."""


class TooFewNeighbours(StoreError):
    """A search that returned fewer neighbours than asked for: fewer points than k + 1 (in its filter), points
    deleted meanwhile, or a filtered HNSW search that missed some."""


class StoreBusy(StoreError):
    """Another process has the collection open (the embedded store allows one process per collection): the
    embedded store's form of another writer holding the collection, so the same exit code as a held lease."""

    exit_code = 3


class StoreUnreachable(StoreError):
    """The Qdrant server does not answer: the CLI exits 4 like a daemon that gave up, so a supervisor retries later."""

    exit_code = 4
