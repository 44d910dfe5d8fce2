"""The embedded default store: Qdrant Edge (Qdrant's engine in-process) in a local directory.

Layout: ``<path>/<collection>/shard/`` is one Edge shard per collection; ``<path>/<collection>/
lander_meta.json`` holds that collection's meta records (written atomically by rename). An Edge shard
is locked by the process that opens it, so one process works on a collection at a time and a second
one gets a clear error.

Edge differs from the server: no query by point id (we pass the vectors), no background optimizer
(HNSW is built only when :meth:`prepare_knn` or :meth:`index_arrivals` call ``optimize()``; before that
every search scans the points outside the index), and its own filter classes (translated from qdrant-client's here).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from ..errors import InputError, StoreBusy, StoredDataError, StoreError
from .base import (HNSW_EF, META_LOCK, Collection, CollectionInfo, Hit, Neighbours, Points, Store, check_vector_config,
                   drop_self, in_asked_order, missing_index, point_ids, vector_rows)

log = logging.getLogger(__name__)

SHARD_DIR = "shard"
META_FILE = "lander_meta.json"
# Collections we create keep an int8 copy of the vectors in RAM: HNSW walks it (~2x faster per query at
# 100k x 256) and the best `OVERSAMPLING * limit` candidates are rescored with the float vectors, so
# the recall matches float search (0.934 vs 0.933 of the exact 11 nearest, synthetic 100k x 256, ef 128).
QUANTIZATION = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
OVERSAMPLING = 2.0
# Collections we create aim at this many segments (Edge's default: one per CPU core), so the points the
# daemon indexes between full passes get segments of their own (merged with each other later) instead of
# being merged into the big one, whose whole index the merge rebuilds: the pass indexing 10k arrivals on
# a 100k collection took 3.0 s with 4, 14.5 s with Edge's 2. More segments cost every query a search
# more: 8 gave 624 new points/s after 30k-50k arrivals on 10k, 4 gave 666 (benchmarks/RESULTS.md).
SEGMENTS = 4
INDEXING_THRESHOLD_KB = 10_000  # vectors outside the index before optimize() builds one (Qdrant's default, set
# explicitly so that when arrivals get indexed does not move with the Edge version: ~10k points of 256-d)

_SCHEMA = {
    models.PayloadSchemaType.INTEGER: qe.PayloadSchemaType.Integer,
    models.PayloadSchemaType.KEYWORD: qe.PayloadSchemaType.Keyword,
    models.PayloadSchemaType.FLOAT: qe.PayloadSchemaType.Float,
    models.PayloadSchemaType.BOOL: qe.PayloadSchemaType.Bool,
}


def _match(m: Any) -> Any:
    if isinstance(m, models.MatchValue):
        if isinstance(m.value, bool):  # qdrant-edge-py 0.9 matches no point on a boolean value: say so, not 0 hits
            raise StoreError("the embedded store (qdrant-edge-py 0.9) cannot match boolean payload values in a "
                             "filter; match a keyword or integer field instead, or use a Qdrant server")
        return qe.MatchValue(m.value)
    if isinstance(m, models.MatchAny):
        return qe.MatchAny(list(m.any))
    if isinstance(m, models.MatchExcept):
        return qe.MatchExcept(list(m.except_))
    raise StoreError(f"filter match {type(m).__name__} is not supported by the embedded store")


def _condition(c: Any) -> Any:
    if isinstance(c, models.FieldCondition):
        rng = None
        if c.range is not None:
            rng = qe.RangeFloat(gte=c.range.gte, gt=c.range.gt, lte=c.range.lte, lt=c.range.lt)
        return qe.FieldCondition(key=c.key, match=_match(c.match) if c.match is not None else None, range=rng)
    if isinstance(c, models.IsEmptyCondition):
        return qe.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return qe.IsNullCondition(c.is_null.key)
    if isinstance(c, models.HasIdCondition):
        return qe.HasIdCondition(set(c.has_id))
    if isinstance(c, models.Filter):
        return to_edge_filter(c)
    raise StoreError(f"filter condition {type(c).__name__} is not supported by the embedded store")


def to_edge_filter(f: models.Filter | None) -> qe.Filter | None:
    """qdrant-client ``Filter`` -> Edge ``Filter`` (must / should / must_not of common conditions)."""
    if f is None:
        return None

    def conds(part: Any) -> list[Any] | None:
        if part is None:
            return None
        return [_condition(c) for c in (part if isinstance(part, list) else [part])]

    return qe.Filter(must=conds(f.must), should=conds(f.should), must_not=conds(f.must_not))


def _edge_error(e: Exception, where: str) -> StoreError:
    msg = str(e)
    if "WouldBlock" in msg:
        return StoreBusy(f"{where} is open in another process (a running sync or watch daemon?); "
                          "the embedded store allows one process per collection (sync --wait-lease SECONDS waits for it)")
    return StoreError(f"{where}: {msg}")


class EdgeCollection(Collection):
    def __init__(self, name: str, root: Path, shard: qe.EdgeShard, vector: str, dim: int, segments: int | None):
        self.name, self.root, self.shard, self.vector, self.dim = name, root, shard, vector, dim
        self.segments = segments  # the shard's target segment count; None: Edge's default
        self._said_unindexed = False  # index_arrivals explained once why it leaves arrivals to full passes

    def info(self) -> CollectionInfo:
        i = self.shard.info()
        return CollectionInfo(self.name, self.dim, self.vector, i.points_count, tuple(sorted(i.payload_schema)))

    def count(self, filter: models.Filter | None = None) -> int:
        return self.shard.count(qe.CountRequest(exact=True, filter=to_edge_filter(filter)))

    def _with_vector(self, vectors: bool) -> Any:
        return ([self.vector] if self.vector else True) if vectors else False

    @staticmethod
    def _with_payload(payload: bool | Sequence[str]) -> Any:
        return qe.PayloadSelector.Include(list(payload)) if isinstance(payload, (list, tuple)) else payload

    def _points(self, records: Sequence[Any], vectors: bool, payload: Any) -> Points:
        ids = point_ids([r.id for r in records], self.name)
        return Points(ids, vector_rows([r.vector for r in records], self.vector, self.dim, ids, self.name) if vectors
                      else None, [r.payload or {} for r in records] if payload else None)

    def scroll(self, *, batch_size: int = 1024, filter: models.Filter | None = None, vectors: bool = True,
               payload: bool | Sequence[str] = False) -> Iterator[Points]:
        edge_filter, with_payload = to_edge_filter(filter), self._with_payload(payload)
        offset = None
        while True:
            records, offset = self.shard.scroll(qe.ScrollRequest(
                offset=offset, limit=batch_size, filter=edge_filter, with_payload=with_payload,
                with_vector=self._with_vector(vectors)))
            if records:
                yield self._points(records, vectors, payload)
            if offset is None:
                return

    def retrieve(self, ids: Sequence[int], *, vectors: bool = False, payload: bool | Sequence[str] = True) -> Points:
        records = self.shard.retrieve([int(i) for i in ids], with_payload=self._with_payload(payload),
                                      with_vector=self._with_vector(vectors))
        return self._points(in_asked_order(records, ids), vectors, payload)

    def prepare_knn(self) -> None:
        """Run Qdrant's optimizers now (Edge has no background ones): they build HNSW on segments above
        the indexing threshold and rebuild segments that payload writes emptied (an update moves a point
        out of an indexed segment, copy-on-write). Below the threshold search stays a fast scan."""
        log.info("optimizing '%s' (%d points): builds the vector index if needed", self.name, self.shard.info().points_count)
        self.shard.optimize()

    def reindex_rewritten(self, *, progress: bool = False) -> None:
        # Measured after a plain sync (RESULTS.md, session 37): 500 kNN queries at 20k points 0.45 s before, 0.05 s
        # after; a `sync --once` of 5,000 points at 300k, 1,501 s. Silent for minutes at a million points: said.
        if progress:
            print(f"rebuilding the vector index of '{self.name}' (the payload writes moved every point out of it; "
                  "a few minutes on a large collection)...", file=sys.stderr, flush=True)
        self.prepare_knn()

    def unindexed(self) -> int:
        """A lower bound: Edge counts the old copy a payload write leaves in an indexed segment (the point
        itself moves to the unindexed one, copy-on-write) as indexed until a vacuum drops it, so after a
        daemon's relabels the plain difference can even turn negative (-1,400 at 100k points)."""
        i = self.shard.info()
        return max(0, i.points_count - i.indexed_vectors_count)

    def index_arrivals(self) -> None:
        """Run the optimizers after a pass wrote points: every search scans the points outside the index,
        so without this the daemon's kNN queries slow down in proportion to what arrived since the last
        full pass (25% of the collection with the default ``growth``; 40,000 such points cost 1.7 s per
        1,000 queries, 0.26 s once indexed: benchmarks/RESULTS.md). Below Edge's own indexing threshold
        (~10 MB of vectors) ``optimize()`` returns at once and indexes nothing; it is called without
        asking :meth:`unindexed` first, which can read 0 while relabelled points wait outside the index.
        Only on collections that keep segments apart (``SEGMENTS``: the ones qdrant-lander creates): with
        Edge's default, one per core, the arrivals' segment would be merged into the main one, rebuilding
        its whole index."""
        if self.segments is None:
            if not self._said_unindexed:
                log.info("'%s' has no segment target (made by another tool or an older qdrant-lander): points that "
                         "arrive stay outside the vector index until the next full pass", self.name)
                self._said_unindexed = True
            return
        t0, before = time.perf_counter(), self.shard.info().indexed_vectors_count
        self.shard.optimize()
        indexed = self.shard.info().indexed_vectors_count - before
        if indexed > 0:
            log.info("indexed %d points of '%s' that arrived since the last full pass (%.1f s)", indexed, self.name,
                     time.perf_counter() - t0)

    @staticmethod
    def _params(limit: int, exact: bool = False, ef: int = HNSW_EF) -> qe.SearchParams:
        quantization = qe.QuantizationSearchParams(ignore=exact, rescore=True, oversampling=OVERSAMPLING)
        return qe.SearchParams(hnsw_ef=max(ef, limit), exact=exact, quantization=quantization)

    def _nearest(self, v: np.ndarray, limit: int, params: qe.SearchParams, filter: qe.Filter | None = None,
                 payload: bool = False) -> qe.QueryRequest:
        return qe.QueryRequest(limit=limit, query=qe.Query.Nearest(v.tolist(), using=self.vector or None),
                               filter=filter, params=params, with_payload=payload)

    def knn(self, ids: np.ndarray, vectors: np.ndarray, k: int, *, exact: bool = False,
            ef: int | None = None, filter: models.Filter | None = None) -> Neighbours:
        params, only = self._params(k + 1, exact, ef or HNSW_EF), to_edge_filter(filter)
        results = self.shard.query_batch(qe.QueryBatchRequest([self._nearest(v, k + 1, params, only) for v in vectors]))
        return drop_self(ids, [[(h.id, h.score) for h in r] for r in results], k, self.name)

    def search(self, vector: np.ndarray, *, limit: int, filter: models.Filter | None = None) -> list[Hit]:
        req = self._nearest(np.asarray(vector, dtype=np.float32), limit, self._params(limit), to_edge_filter(filter),
                            payload=True)
        return [Hit(int(h.id), float(h.score), h.payload or {}) for h in self.shard.query(req)]

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: Sequence[dict[str, Any]] | None = None) -> None:
        payloads = payloads if payloads is not None else [None] * len(ids)
        rows = vectors.tolist()
        pts = [qe.Point(int(i), {self.vector: v} if self.vector else v, p) for i, v, p in zip(ids, rows, payloads)]
        self.shard.update(qe.UpdateOperation.upsert_points(pts))

    def set_payloads(self, items: Sequence[tuple[Sequence[int], dict[str, Any]]]) -> None:
        for ids, payload in items:
            try:
                self.shard.update(qe.UpdateOperation.set_payload([int(i) for i in ids], payload))
            except Exception as e:  # the binding raises bare Exception
                if "No point with id" not in str(e):
                    raise
                present = self.retrieve(ids, payload=False).ids  # deleted since read: a gone point needs no label
                if len(present):
                    self.shard.update(qe.UpdateOperation.set_payload(present.tolist(), payload))

    def set_payload_by_filter(self, filter: models.Filter, payload: dict[str, Any], *, key: str | None = None) -> None:
        self.shard.update(qe.UpdateOperation.set_payload_by_filter(to_edge_filter(filter), payload, key))

    def delete_payload(self, ids: Sequence[int], keys: Sequence[str]) -> None:
        self.shard.update(qe.UpdateOperation.delete_payload([int(i) for i in ids], list(keys)))

    def create_index(self, field: str, schema: models.PayloadSchemaType) -> None:
        if field not in self.shard.info().payload_schema:
            self.shard.update(qe.UpdateOperation.create_field_index(field, _SCHEMA[schema]))

    def facet(self, key: str, *, limit: int, filter: models.Filter | None = None) -> list[tuple[Any, int]]:
        try:
            res = self.shard.facet(qe.FacetRequest(key=key, limit=limit, exact=True, filter=to_edge_filter(filter)))
        except Exception as e:  # noqa: BLE001 - Edge raises plain Exception
            if "No appropriate index" not in str(e):
                raise
            raise missing_index(self.name, key) from None
        # Edge's payload index keeps a value no point holds any more (after a relabel or a cleared payload) with
        # count 0 until the segment is rebuilt: status counted such merged-away clusters.
        return [(h.value, h.count) for h in res.hits if h.count > 0]

    def _meta(self) -> dict[str, Any]:
        f = self.root / META_FILE
        try:
            meta = json.loads(f.read_text()) if f.exists() else {}
            problem = None if isinstance(meta, dict) else "not a JSON object"
        except json.JSONDecodeError as e:
            problem = str(e)
        if problem:
            raise StoredDataError(f"{f} is damaged ({problem}): delete it (it holds the sync, lease and pass records; "
                                  f"the labels are in the payloads), then run `qdrant-lander sync {self.name}`")
        return meta

    def meta_where(self, key: str) -> str:
        return (f"remove the key '{key}' from {self.root / META_FILE}, then run `qdrant-lander sync {self.name}`")

    def get_meta(self, key: str) -> dict[str, Any] | None:
        return self._meta().get(key)

    def set_meta(self, key: str, value: dict[str, Any]) -> None:
        with META_LOCK:  # read-modify-write: a renewal in Lease.kept's thread must not undo a sync's record
            meta = self._meta()
            meta[key] = value
            tmp = self.root / (META_FILE + ".tmp")
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, self.root / META_FILE)  # atomic: a crash leaves the old or the new file

    def flush(self) -> None:
        self.shard.flush()


class EdgeStore(Store):
    """Collections of the embedded store under one directory (default ``./qdrant_data``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.description = f"embedded store at {self.path}"
        self._open: dict[str, EdgeCollection] = {}

    def collections(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(d.name for d in self.path.iterdir() if (d / SHARD_DIR / "edge_config.json").exists())

    def _load(self, name: str) -> qe.EdgeShard:
        try:
            return qe.EdgeShard.load(str(self.path / name / SHARD_DIR))
        except Exception as e:  # the binding raises bare Exception
            raise _edge_error(e, f"collection '{name}' in the {self.description}") from None

    def open(self, name: str, *, vector: str | None = None, reading: bool = False) -> EdgeCollection:
        root = self.path / name
        if name not in self._open and name not in self.collections():
            raise self._missing(name)
        cfg = json.loads((root / SHARD_DIR / "edge_config.json").read_text())
        vectors = cfg.get("vectors", {})
        multi = [n for n, p in vectors.items() if p.get("multivector_config")]
        dense = {n: (p["size"], p["distance"]) for n, p in vectors.items() if n not in multi}
        vec, dim = check_vector_config(name, dense, list(cfg.get("sparse_vectors", {})), multi, vector, reading=reading)
        col = self._open.get(name)
        if col is None or col.vector != vec:  # one shard per collection (the OS lock allows one), a view per vector
            segments = (cfg.get("optimizers") or {}).get("default_segment_number")
            shard = col.shard if col else self._load(name)
            col = self._open[name] = EdgeCollection(name, root, shard, vec, dim, segments)
        return col

    def create(self, name: str, dim: int) -> EdgeCollection:
        if not name or name in {".", ".."} or any(c in name for c in "/\\\0"):  # a directory under --path, nowhere else
            raise InputError(f"collection name {name!r} is not allowed: use a plain name (no '/', '\\' or '..')")
        if name in self.collections():
            raise StoreError(f"collection '{name}' already exists in the {self.description}")
        root = self.path / name
        cfg = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
                            quantization_config=QUANTIZATION,
                            optimizers=qe.EdgeOptimizersConfig(default_segment_number=SEGMENTS,
                                                               indexing_threshold=INDEXING_THRESHOLD_KB))
        try:
            shard = qe.EdgeShard.create(str(root / SHARD_DIR), cfg)
        except Exception as e:
            raise _edge_error(e, f"cannot create collection '{name}' in the {self.description}") from None
        (root / META_FILE).unlink(missing_ok=True)  # a dropped collection's records (its shard deleted by hand)
        self._open[name] = EdgeCollection(name, root, shard, "", dim, SEGMENTS)
        return self._open[name]

    def close(self) -> None:
        for c in self._open.values():
            c.shard.flush()
            c.shard.close()
        self._open.clear()
