"""The one small interface both stores implement: the embedded Qdrant Edge shard and a Qdrant server.

Sync (and the incremental daemon built on it) only ever talk to a :class:`Store` and its
:class:`Collection`, so every operation here has to work on both engines. Filters are qdrant-client's
``models.Filter`` everywhere (the type users already know from their own queries); the Edge adapter
translates the subset of conditions it supports.

Point ids are integers. Per-collection bookkeeping (sync state, a lease) lives in a separate small
collection, ``_lander_meta``, never in the user's collection, so their counts and searches are untouched.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError
from qdrant_client import models

from ..errors import StoreError, StoredDataError, TooFewNeighbours
from ..payload import vector_name

META_COLLECTION = "_lander_meta"
# Meta records are written by the main thread and by Lease.kept's renewal thread: one lock for every
# collection of the process (meta writes are rare) keeps a read-modify-write or a store that is not
# thread-safe (qdrant-client's local mode) from interleaving them.
META_LOCK = threading.Lock()
M = TypeVar("M", bound=BaseModel)  # a meta record's model (Collection.get_record)
HNSW_EF = 128  # kNN search breadth of full syncs on either store: default ef misses ~15% of true neighbours on hard data


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    dim: int
    vector: str  # the vector we cluster; "" is the unnamed default vector
    points: int
    indexed_fields: tuple[str, ...]


@dataclass(frozen=True)
class Points:
    """A batch of points; ``vectors``/``payloads`` are None when not requested."""

    ids: np.ndarray  # int64 [n]
    vectors: np.ndarray | None = None  # float32 [n, D], as stored
    payloads: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Neighbours:
    """kNN of a batch of stored points by point id: self excluded, most similar first."""

    ids: np.ndarray  # int64 [n, k], point ids
    sim: np.ndarray  # float32 [n, k], cosine similarity


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    payload: dict[str, Any]


def check_vector_config(collection: str, dense: dict[str, tuple[int, str]], sparse: Sequence[str],
                        multi: Sequence[str], vector: str | None, *, reading: bool = False) -> tuple[str, int]:
    """Pick the dense vector to cluster: ``(name, dim)``, or a StoreError that says what to pass.

    ``dense`` maps vector name ("" = unnamed) to (size, distance name); ``sparse`` and ``multi`` name the vectors
    that are not one dense vector per point (sparse ones; ColBERT-style ones, several per point).
    ``reading``: the caller reads a clustering (payload, meta), so any dense vector will do when none is named and
    the distance is not checked.
    """
    others = {**dict.fromkeys(sparse, "sparse"), **dict.fromkeys(multi, "multi")}
    if vector is not None and vector in others:
        raise StoreError(f"{vector_name(vector)} of collection '{collection}' holds {others[vector]} vectors: lander "
                         "clusters one dense vector per point")
    if not dense:
        kinds = "; ".join(f"{kind} vectors: {', '.join(sorted(n or '(unnamed)' for n, k in others.items() if k == kind))}"
                          for kind in sorted(set(others.values())))
        raise StoreError(f"collection '{collection}' has no dense vectors to cluster" + (f" (it has only {kinds})"
                                                                                          if others else ""))
    if vector is None:
        if "" in dense:
            vector = ""
        elif len(dense) == 1 or reading:
            vector = min(dense)
        else:
            raise StoreError(f"collection '{collection}' has named vectors {sorted(dense)}: choose one with --vector NAME")
    elif vector not in dense:
        names = sorted(n or "(unnamed default)" for n in dense)
        raise StoreError(f"collection '{collection}' has no vector named '{vector}'; it has {names}")
    size, distance = dense[vector]
    if distance.lower() != "cosine" and not reading:
        raise StoreError(f"collection '{collection}' uses {distance} distance for {vector_name(vector)}; "
                         "lander clusters by cosine similarity, so the collection must use Cosine")
    return vector, size


def missing_index(collection: str, key: str) -> StoredDataError:
    """A store facets only an indexed key; sync creates lander's indexes, so a missing one was dropped by hand."""
    return StoredDataError(f"collection '{collection}' has no payload index on '{key}' (dropped?): "
                           f"`qdrant-lander sync {collection} --once` creates it again")


def point_ids(ids: Sequence[Any], collection: str) -> np.ndarray:
    """Ids as int64, or a StoredDataError: lander keys its arrays by integer point id. A UUID is refused
    even where ``int()`` would take it (Edge returns ``uuid.UUID``): as a number it could equal another point's id."""
    bad = next((i for i in ids if not isinstance(i, (int, np.integer))), None)
    if bad is not None:
        raise StoredDataError(f"collection '{collection}' has non-integer point ids (e.g. {bad!r}); "
                              "lander needs integer ids")
    return np.fromiter(ids, dtype=np.int64, count=len(ids))


def vector_rows(vectors: Sequence[Any], name: str | None, dim: int, ids: np.ndarray, collection: str) -> np.ndarray:
    """The clustered vector of each record as float32 [N, dim]; with named vectors a point may lack the chosen one
    (another tool wrote only its other vectors), and a StoredDataError names such points."""
    if name:
        missing = [int(i) for i, v in zip(ids.tolist(), vectors) if not v or name not in v]
        if missing:
            raise StoredDataError(f"collection '{collection}' has points without a vector '{name}' (point ids "
                                  f"{missing[:5]}); give them one (qdrant-client's update_vectors keeps their other vectors and "
                                  "payload) or delete them")
        vectors = [v[name] for v in vectors]
    return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dim)


def drop_self(ids: np.ndarray, rows: list[list[tuple[Any, float]]], k: int, name: str) -> Neighbours:
    """Take each row's first k hits that are not the query point itself."""
    nbr = np.empty((len(ids), k), dtype=np.int64)
    sim = np.empty((len(ids), k), dtype=np.float32)
    for r, (pid, hits) in enumerate(zip(ids.tolist(), rows)):
        kept = [(h, s) for h, s in hits if h != pid][:k]
        if len(kept) < k:
            raise TooFewNeighbours(f"collection '{name}' returned {len(kept)} neighbours for point {pid}, need {k} "
                                   "(fewer than k+1 points, or points deleted during the sync)")
        nbr[r] = [h for h, _ in kept]
        sim[r] = [s for _, s in kept]
    return Neighbours(nbr, sim)


def in_asked_order(records: Sequence[Any], ids: Sequence[int]) -> list[Any]:
    """Retrieved records (anything with ``.id``) in the order the ids were asked, missing ones left out."""
    by_id = {r.id: r for r in records}
    return [by_id[int(i)] for i in ids if int(i) in by_id]


class Collection(ABC):
    """One collection and the one vector in it that lander clusters."""

    name: str
    vector: str  # "" is the unnamed default vector

    @abstractmethod
    def info(self) -> CollectionInfo: ...

    @abstractmethod
    def count(self, filter: models.Filter | None = None) -> int: ...

    @abstractmethod
    def scroll(self, *, batch_size: int = 1024, filter: models.Filter | None = None, vectors: bool = True,
               payload: bool | Sequence[str] = False) -> Iterator[Points]:
        """All matching points in batches, ascending point id."""

    @abstractmethod
    def retrieve(self, ids: Sequence[int], *, vectors: bool = False, payload: bool | Sequence[str] = True) -> Points:
        """The given points that exist, in the order asked; ``payload`` may name the keys to return."""

    def prepare_knn(self) -> None:
        """Make kNN queries fast (build the vector index) before a large batch of them."""

    def reindex_rewritten(self, *, progress: bool = False) -> None:
        """Rebuild the vector index after every point was rewritten (a full sync's payloads), where the store does not
        do it by itself: a rewritten point leaves its indexed segment (copy-on-write), and until the index is
        rebuilt every query scans the whole collection (a server's background optimizer does it: nothing here)."""

    def index_arrivals(self) -> None:
        """Keep the vector index up with the points added since it was built, between full passes (a
        server's background optimizer does it by itself: nothing to do by default)."""

    def unindexed(self) -> int | None:
        """Points that kNN queries scan because they are not in the vector index yet (at least this many);
        None where the store does not say (a server indexes in the background, the client's local mode
        has no index at all)."""
        return None

    @abstractmethod
    def knn(self, ids: np.ndarray, vectors: np.ndarray, k: int, *, exact: bool = False,
            ef: int | None = None, filter: models.Filter | None = None) -> Neighbours:
        """The k nearest stored points of stored points ``ids`` (whose vectors are ``vectors``).

        ``exact`` scans all vectors instead of the HNSW index: reproducible, slower on large collections.
        ``ef`` is the HNSW search breadth (at least k + 1 is used); None: the store's default.
        ``filter`` keeps the search to the points it matches (every query the same).

        A server uses the ids (its stored vectors never travel); Qdrant Edge cannot query by id and
        uses the vectors. Raises :class:`TooFewNeighbours` when fewer than k neighbours come back.
        """

    @abstractmethod
    def search(self, vector: np.ndarray, *, limit: int, filter: models.Filter | None = None) -> list[Hit]: ...

    @abstractmethod
    def upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: Sequence[dict[str, Any]] | None = None) -> None: ...

    @abstractmethod
    def set_payloads(self, items: Sequence[tuple[Sequence[int], dict[str, Any]]]) -> None:
        """Apply several (point ids, payload) writes, each merging top-level keys into the payload.

        One request on a server; a key written here replaces that key's whole value, other keys stay.
        Points deleted since they were read are skipped (another client may delete while a sync runs).
        """

    @abstractmethod
    def set_payload_by_filter(self, filter: models.Filter, payload: dict[str, Any], *, key: str | None = None) -> None:
        """Merge ``payload`` into every point matching ``filter`` (e.g. relabel a merged cluster).

        With ``key``, merge into that nested object instead of the top level (``key="lander"`` changes
        ``lander.cluster`` and keeps the rest of each point's ``lander`` value).
        """

    @abstractmethod
    def delete_payload(self, ids: Sequence[int], keys: Sequence[str]) -> None: ...

    @abstractmethod
    def create_index(self, field: str, schema: models.PayloadSchemaType) -> None:
        """Create a payload index where the engine supports it (qdrant-client local mode does not)."""

    @abstractmethod
    def facet(self, key: str, *, limit: int, filter: models.Filter | None = None) -> list[tuple[Any, int]]:
        """Most frequent values of a payload key with their exact counts, largest first; values no point holds
        are left out."""

    def flush(self) -> None:
        """Make every write so far durable (a server has done so when each call returns)."""

    @abstractmethod
    def get_meta(self, key: str) -> dict[str, Any] | None:
        """A small JSON record kept for this collection in ``_lander_meta`` (None if never set)."""

    @abstractmethod
    def set_meta(self, key: str, value: dict[str, Any]) -> None: ...

    def get_record(self, key: str, model: type[M]) -> M | None:
        """The meta record ``key`` read as ``model`` (None if never set). One that does not fit (edited by hand,
        or written by a newer version) is a StoredDataError saying which record, not a traceback."""
        meta = self.get_meta(key)
        if not meta:
            return None
        try:
            return model(**meta)
        except (TypeError, ValidationError) as e:
            raise StoredDataError(f"the '{key}' record of collection '{self.name}' is not one this qdrant-lander "
                                  f"wrote ({str(e).splitlines()[0]}); {self.meta_where(key)}") from None

    @abstractmethod
    def meta_where(self, key: str) -> str:
        """How to remove the record ``key`` (the labels are in the payloads; a plain sync rewrites the records)."""


class Store(ABC):
    """A place that holds collections: a Qdrant Edge directory or a Qdrant server."""

    description: str  # for messages: "embedded store at ./qdrant_data" / "Qdrant server at http://..."

    @abstractmethod
    def collections(self) -> list[str]:
        """User collection names (the meta collection is hidden)."""

    @abstractmethod
    def open(self, name: str, *, vector: str | None = None, reading: bool = False) -> Collection:
        """An existing collection, or a StoreError listing the ones that exist (``reading``: see
        :func:`check_vector_config`)."""

    @abstractmethod
    def create(self, name: str, dim: int) -> Collection:
        """A new empty collection with one unnamed cosine vector of size ``dim``."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _missing(self, name: str) -> StoreError:
        existing = ", ".join(sorted(self.collections())) or "none"
        return StoreError(f"collection '{name}' does not exist in the {self.description} (existing: {existing})")
