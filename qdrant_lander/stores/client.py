"""A Qdrant server (or qdrant-client's local mode, for tests) through qdrant-client.

Neighbourhoods come from the server's own HNSW index by point id (``query_batch_points``), so vectors
never travel for kNN. Only calls that a real server serves are used; local mode just runs them by
brute force (fine for the small collections tests use).
"""

from __future__ import annotations

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
                   check_vector_config, drop_self, in_asked_order, point_ids, vector_rows)

log = logging.getLogger(__name__)

INDEX_WAIT_S = 600  # longest wait for the server's background indexing before kNN starts anyway


class ServerCollection(Collection):
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
            ef: int | None = None) -> Neighbours:
        params = models.SearchParams(hnsw_ef=max(ef or HNSW_EF, k + 1), exact=exact)
        requests = [models.QueryRequest(query=int(i), using=self.vector or None, limit=k + 1, params=params)
                    for i in ids]
        with warnings.catch_warnings():  # local mode (tests) says it ignores search params; servers use them
            warnings.filterwarnings("ignore", message="Local mode performs exact")
            results = self.client.query_batch_points(self.name, requests=requests)
        return drop_self(ids, [[(p.id, p.score) for p in r.points] for r in results], k, self.name)

    def search(self, vector: np.ndarray, *, limit: int, filter: models.Filter | None = None) -> list[Hit]:
        res = self.client.query_points(self.name, query=np.asarray(vector, dtype=np.float32).tolist(),
                                       using=self.vector or None, limit=limit, query_filter=filter, with_payload=True)
        return [Hit(int(p.id), float(p.score), p.payload or {}) for p in res.points]

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: Sequence[dict[str, Any]] | None = None) -> None:
        rows = vectors.tolist()
        batch = models.Batch(ids=[int(i) for i in ids], vectors={self.vector: rows} if self.vector else rows,
                             payloads=list(payloads) if payloads is not None else None)
        self.client.upsert(self.name, points=batch, wait=True)

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
        with warnings.catch_warnings():  # local mode warns that indexes are a no-op there; servers use them
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            self.client.create_payload_index(self.name, field_name=field, field_schema=schema, wait=True)

    def facet(self, key: str, *, limit: int, filter: models.Filter | None = None) -> list[tuple[Any, int]]:
        res = self.client.facet(self.name, key=key, limit=limit, exact=True, facet_filter=filter)
        return [(h.value, h.count) for h in res.hits]

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
            self.client.upsert(META_COLLECTION, points=[point], wait=True)


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
        dense = {n: (p.size, p.distance.value) for n, p in (vecs or {}).items()}
        vec, dim = check_vector_config(name, dense, sorted(params.sparse_vectors or {}), vector,
                                       reading=reading)
        return ServerCollection(self.client, name, vec, dim)

    def create(self, name: str, dim: int) -> ServerCollection:
        if self.client.collection_exists(name):
            raise StoreError(f"collection '{name}' already exists on the {self.description}")
        self.client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
        if self.client.collection_exists(META_COLLECTION):  # records outlive a collection dropped by another client
            self.client.delete(META_COLLECTION, wait=True, points_selector=models.FilterSelector(filter=models.Filter(
                must=[models.FieldCondition(key="collection", match=models.MatchValue(value=name))])))
        return ServerCollection(self.client, name, "", dim)

    def close(self) -> None:
        self.client.close()
