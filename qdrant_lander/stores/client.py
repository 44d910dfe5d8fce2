"""A Qdrant server (or qdrant-client's local mode, for tests) through qdrant-client.

Neighbourhoods come from the server's own HNSW index by point id (``query_batch_points``), so vectors
never travel for kNN. Only calls that a real server serves are used; local mode just runs them by
brute force (fine for the small collections tests use).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ..errors import InputError, StoreError, StoreUnreachable
from .base import (HNSW_EF, META_COLLECTION, META_LOCK, Collection, CollectionInfo, Hit, Neighbours, Points, Store,
                   check_vector_config, drop_self, in_asked_order, missing_index, point_ids, vector_rows)

log = logging.getLogger(__name__)

INDEX_WAIT_S = 600  # longest wait for the server's background indexing before kNN starts anyway
MAX_REQUEST_BYTES = 24 * 2**20  # under a server's default 32 MiB request limit, with room for JSON overhead
JSON_FLOAT_BYTES = 22  # a float32 as qdrant-client's JSON writes it: 21 on average at 384-3,072 dimensions, 24 at most


def create_index(client: QdrantClient, collection: str, field: str, schema: models.PayloadSchemaType) -> None:
    """A payload index (idempotent on a server)."""
    with warnings.catch_warnings():  # local mode warns that indexes are a no-op there; servers use them
        warnings.filterwarnings("ignore", message="Payload indexes have no effect")
        client.create_payload_index(collection, field_name=field, field_schema=schema, wait=True)


def request_slices(dim: int, payloads: Sequence[dict[str, Any]] | None, n: int, limit: int) -> Iterator[slice]:
    """Consecutive slices of ``n`` points whose upsert request stays under ``limit`` bytes. A server refuses bodies
    above its ``max_request_size_mb`` (32 MiB by default, fixed on Qdrant Cloud), and 1,024 points of 3,072
    floats are 64 MiB as JSON: a batch counted in points is not enough."""
    sizes = np.full(n, dim * JSON_FLOAT_BYTES + 32, dtype=np.int64)  # + the id and the brackets
    if payloads is not None:
        sizes += [len(json.dumps(p, default=str)) for p in payloads]
    start, total = 0, 0
    for i, size in enumerate(sizes.tolist()):
        if total + size > limit and i > start:
            yield slice(start, i)
            start, total = i, 0
        total += size
    if n > start:
        yield slice(start, n)


class ServerCollection(Collection):
    max_request_bytes = MAX_REQUEST_BYTES

    def __init__(self, client: QdrantClient, name: str, vector: str, dim: int):
        self.client, self.name, self.vector, self.dim = client, name, vector, dim

    def info(self) -> CollectionInfo:
        schema = self.client.get_collection(self.name).payload_schema or {}
        return CollectionInfo(self.name, self.dim, self.vector, self.count(), tuple(sorted(schema)))

    def count(self, filter: models.Filter | None = None) -> int:
        return self.client.count(self.name, count_filter=filter, exact=True).count

    def _with_vectors(self, vectors: bool) -> Any:
        return ([self.vector] if self.vector else True) if vectors else False

    def _points(self, records: Sequence[Any], vectors: bool, payload: Any) -> Points:
        ids = point_ids([r.id for r in records], self.name)
        return Points(ids, vector_rows([r.vector for r in records], self.vector, self.dim, ids, self.name) if vectors
                      else None, [r.payload or {} for r in records] if payload else None)

    @staticmethod
    def _with_payload(payload: bool | Sequence[str]) -> bool | list[str]:
        return list(payload) if isinstance(payload, (list, tuple)) else payload

    def scroll(self, *, batch_size: int = 1024, filter: models.Filter | None = None, vectors: bool = True,
               payload: bool | Sequence[str] = False) -> Iterator[Points]:
        offset, with_payload = None, self._with_payload(payload)
        while True:
            records, offset = self.client.scroll(self.name, scroll_filter=filter, limit=batch_size, offset=offset,
                                                 with_payload=with_payload, with_vectors=self._with_vectors(vectors))
            if records:
                yield self._points(records, vectors, payload)
            if offset is None:
                return

    def retrieve(self, ids: Sequence[int], *, vectors: bool = False, payload: bool | Sequence[str] = True) -> Points:
        records = self.client.retrieve(self.name, [int(i) for i in ids], with_payload=self._with_payload(payload),
                                       with_vectors=self._with_vectors(vectors))
        return self._points(in_asked_order(records, ids), vectors, payload)

    def prepare_knn(self) -> None:
        """Wait until the server's background optimizer is done (right after an import it is still
        indexing, and unindexed segments are searched by exact scan: same results, much slower)."""
        deadline = time.monotonic() + INDEX_WAIT_S
        while (info := self.client.get_collection(self.name)).status != models.CollectionStatus.GREEN:
            if info.status == models.CollectionStatus.RED:
                raise StoreError(f"collection '{self.name}' has a failed optimizer on the server: {info.optimizer_status}")
            if info.status == models.CollectionStatus.GREY:  # pending until the next update (e.g. after a restart)
                log.warning("'%s' has optimizations pending on the server; kNN goes on (slower)", self.name)
                return
            if time.monotonic() > deadline:
                log.warning("'%s' is still being indexed after %d s; kNN goes on (slower)", self.name, INDEX_WAIT_S)
                return
            log.info("waiting for the server to index '%s' (%s)", self.name, info.status.value)
            time.sleep(2)

    def knn(self, ids: np.ndarray, vectors: np.ndarray, k: int, *, exact: bool = False,
            ef: int | None = None, filter: models.Filter | None = None) -> Neighbours:
        params = models.SearchParams(hnsw_ef=max(ef or HNSW_EF, k + 1), exact=exact)

        def query(part: slice, by_vector: set[int]) -> list[Any]:
            requests = [models.QueryRequest(query=v.tolist() if int(i) in by_vector else int(i),
                                            using=self.vector or None, limit=k + 1, params=params,
                                            filter=filter)
                        for i, v in zip(ids[part], vectors[part])]
            with warnings.catch_warnings():  # local mode (tests) says it ignores search params; servers use them
                warnings.filterwarnings("ignore", message="Local mode performs exact")
                return self.client.query_batch_points(self.name, requests=requests)

        try:  # by id: the vectors stay on the server
            results = query(slice(None), set())
        except (UnexpectedResponse, ValueError) as e:  # a server answers 404, local mode raises ValueError
            if not (e.status_code == 404 if isinstance(e, UnexpectedResponse) else "is not found" in str(e)):
                raise
            # A point deleted since it was read fails the whole batch: query it by the vector in hand, as the
            # embedded store does for every point (it is no longer in the index, so it is not its own hit). Requests
            # by vector are as large as an upsert's: cut alike.
            gone = {int(i) for i in ids} - set(self.retrieve(ids, payload=False).ids.tolist())
            results = [r for part in request_slices(vectors.shape[1], None, len(ids), self.max_request_bytes)
                       for r in query(part, gone)]
        return drop_self(ids, [[(p.id, p.score) for p in r.points] for r in results], k, self.name)

    def search(self, vector: np.ndarray, *, limit: int, filter: models.Filter | None = None) -> list[Hit]:
        res = self.client.query_points(self.name, query=np.asarray(vector, dtype=np.float32).tolist(),
                                       using=self.vector or None, limit=limit, query_filter=filter, with_payload=True)
        return [Hit(int(p.id), float(p.score), p.payload or {}) for p in res.points]

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: Sequence[dict[str, Any]] | None = None) -> None:
        for part in request_slices(vectors.shape[1], payloads, len(ids), self.max_request_bytes):
            rows = vectors[part].tolist()
            batch = models.Batch(ids=[int(i) for i in ids[part]], vectors={self.vector: rows} if self.vector else rows,
                                 payloads=list(payloads[part]) if payloads is not None else None)
            try:
                self.client.upsert(self.name, points=batch, wait=True)
            except UnexpectedResponse as e:  # Qdrant answers 400 "JSON payload (N bytes) is larger than allowed"
                if not (e.status_code == 413 or e.status_code == 400 and "larger than allowed" in str(e)):
                    raise
                raise StoreError(f"the server refused {part.stop - part.start} points in one request as too large: "
                                 f"its max_request_size_mb is below {self.max_request_bytes / 2**20:.0f} MiB; "
                                 "raise it, or give a smaller --batch-size") from None

    def set_payloads(self, items: Sequence[tuple[Sequence[int], dict[str, Any]]]) -> None:
        try:
            self._set_payloads(items)
        except (UnexpectedResponse, KeyError) as e:  # a server answers 404, local mode raises KeyError
            if isinstance(e, UnexpectedResponse) and e.status_code != 404:
                raise
            # Points deleted since they were read need no label; writing the others again is idempotent.
            present = set(self.retrieve([i for ids, _ in items for i in ids], payload=False).ids.tolist())
            kept = [(alive, p) for ids, p in items if (alive := [int(i) for i in ids if int(i) in present])]
            if kept:
                self._set_payloads(kept)

    def _set_payloads(self, items: Sequence[tuple[Sequence[int], dict[str, Any]]]) -> None:
        ops = [models.SetPayloadOperation(set_payload=models.SetPayload(payload=p, points=[int(i) for i in ids]))
               for ids, p in items]
        self.client.batch_update_points(self.name, update_operations=ops, wait=True)

    def set_payload_by_filter(self, filter: models.Filter, payload: dict[str, Any], *, key: str | None = None) -> None:
        self.client.set_payload(self.name, payload=payload, points=models.FilterSelector(filter=filter), key=key,
                                wait=True)

    def delete_payload(self, ids: Sequence[int], keys: Sequence[str]) -> None:
        self.client.delete_payload(self.name, keys=list(keys), points=[int(i) for i in ids], wait=True)

    def create_index(self, field: str, schema: models.PayloadSchemaType) -> None:
        create_index(self.client, self.name, field, schema)

    def facet(self, key: str, *, limit: int, filter: models.Filter | None = None) -> list[tuple[Any, int]]:
        try:
            res = self.client.facet(self.name, key=key, limit=limit, exact=True, facet_filter=filter)
        except UnexpectedResponse as e:  # the segment's own error, as Edge words it
            if e.status_code != 400 or "No appropriate index" not in str(e):
                raise
            raise missing_index(self.name, key) from None
        # A server lists the values a segment's index still holds, with count 0 for those a merge emptied.
        return [(h.value, h.count) for h in res.hits if h.count > 0]

    def _meta_id(self, key: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"qdrant-lander/{self.name}/{key}"))

    def get_meta(self, key: str) -> dict[str, Any] | None:
        if not self.client.collection_exists(META_COLLECTION):
            return None
        # A majority read meets a majority write (deploy/CLUSTER.md): the lease's confirming read sees the last write.
        rec = self.client.retrieve(META_COLLECTION, [self._meta_id(key)], with_payload=True,
                                   consistency=models.ReadConsistencyType.MAJORITY)
        return rec[0].payload["value"] if rec else None

    def meta_where(self, key: str) -> str:
        return (f"delete point {self._meta_id(key)} of collection '{META_COLLECTION}', then run "
                f"`qdrant-lander sync {self.name}`")

    def set_meta(self, key: str, value: dict[str, Any]) -> None:
        with META_LOCK:
            if not self.client.collection_exists(META_COLLECTION):
                try:
                    self.client.create_collection(META_COLLECTION, vectors_config={})  # payload-only records
                except Exception:
                    if not self.client.collection_exists(META_COLLECTION):
                        raise
                    # another writer (a second daemon starting) created it between our check and our create
            point = models.PointStruct(id=self._meta_id(key), vector={},
                                       payload={"collection": self.name, "key": key, "value": value})
            # strong ordering: two writers' records (the lease) reach every replica in one order (deploy/CLUSTER.md)
            self.client.upsert(META_COLLECTION, points=[point], wait=True, ordering=models.WriteOrdering.STRONG)


class ServerStore(Store):
    """Collections of a Qdrant server (``QdrantClient(url=...)``) or of qdrant-client's local mode."""

    def __init__(self, client: QdrantClient, description: str = "Qdrant server"):
        self.client = client
        self.description = description

    def collections(self) -> list[str]:
        with self._reached():
            return sorted(c.name for c in self.client.get_collections().collections if c.name != META_COLLECTION)

    @contextmanager
    def _reached(self) -> Iterator[None]:
        """Every command's first call: a server that does not answer, or refuses our key, is one line, not a
        traceback. A refused key is bad configuration (exit 2): a supervisor must not restart it forever."""
        try:
            yield
        except ResponseHandlingException as e:
            raise StoreUnreachable(f"cannot reach the {self.description}: {e}") from None
        except UnexpectedResponse as e:
            if e.status_code not in (401, 403):
                raise
            raise InputError(f"the {self.description} refused the request ({e.status_code} {e.reason_phrase}): "
                             "check the API key (--api-key / QLANDER_API_KEY)") from None

    def open(self, name: str, *, vector: str | None = None, reading: bool = False) -> ServerCollection:
        with self._reached():
            exists = self.client.collection_exists(name)
        if name == META_COLLECTION or not exists:
            raise self._missing(name)
        params = self.client.get_collection(name).config.params
        vecs = params.vectors
        if isinstance(vecs, models.VectorParams):
            vecs = {"": vecs}
        multi = [n for n, p in (vecs or {}).items() if p.multivector_config is not None]
        dense = {n: (p.size, p.distance.value) for n, p in (vecs or {}).items() if n not in multi}
        vec, dim = check_vector_config(name, dense, list(params.sparse_vectors or {}), multi, vector, reading=reading)
        return ServerCollection(self.client, name, vec, dim)

    def create(self, name: str, dim: int) -> ServerCollection:
        if self.client.collection_exists(name):
            raise StoreError(f"collection '{name}' already exists on the {self.description}")
        self.client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
        if self.client.collection_exists(META_COLLECTION):  # records outlive a collection dropped by another client
            # indexed first: a server in strict mode (Qdrant Cloud's default) refuses a delete by an unindexed key
            create_index(self.client, META_COLLECTION, "collection", models.PayloadSchemaType.KEYWORD)
            self.client.delete(META_COLLECTION, wait=True, points_selector=models.FilterSelector(filter=models.Filter(
                must=[models.FieldCondition(key="collection", match=models.MatchValue(value=name))])))
        return ServerCollection(self.client, name, "", dim)

    def close(self) -> None:
        self.client.close()
