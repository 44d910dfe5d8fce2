"""Moving a collection through lander: import arrays, full sync, and reading the results back.

A full sync streams vectors out in batches, takes each point's kNN from the store's index, runs the
model and the decoder, and only then writes: first a ``writing`` meta record, then one complete
``lander`` payload per point (new ``generation``), then a ``complete`` record. Any bad input is found
before the first write, so a failed sync leaves the collection exactly as it was.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel
from qdrant_client import models
from tqdm import tqdm

from .decode import ClusterResult
from .dedup import regroup, unique_rows
from .errors import CollectionNotReady, InputError, StoredDataError
from .knn import KnnGraph, first_kept, nearest_rows, rows_of
from .model_card import ModelCard
from .payload import (CLUSTER_FIELD, KEY, PATH_FIELD, SYNC_META, LanderPayload, SyncState, unclustered_filter,
                      vector_name)
from .stores.base import Collection, Neighbours, Store
from .validate import check_embeddings, unit_batches

log = logging.getLogger(__name__)

KnnMode = Literal["auto", "exact", "index"]
# From this many distinct points the cluster stage runs for minutes with nothing to show (299 s at a million on
# one core, RESULTS.md session 38): the sync says so before it starts.
CLUSTER_NOTICE_POINTS = 200_000
EXACT_MAX_FLOATS = 5_000_000  # auto: full scan up to N*D = 5M (11,250 x 384 took 6.6 s CPU here)


class Clusterer(Protocol):
    """What sync needs from :class:`~qdrant_lander.Lander`."""

    domain: str

    @property
    def card(self) -> ModelCard: ...

    def for_data(self, x: np.ndarray) -> Clusterer: ...

    def predict_graph(self, vectors: np.ndarray, graph: KnnGraph, groups: np.ndarray | None = None) -> ClusterResult: ...


class SyncReport(BaseModel):
    collection: str
    points: int
    clusters: int
    levels: int
    tau: float  # the card's, or the one chosen for this collection (a card with tau_bias)
    domain: str  # the default model's preset decoded with (auto resolved); any: the model's own decoding
    generation: int
    model: str
    knn: Literal["exact", "index"]  # how neighbours were found
    copies: int = 0  # points whose vector repeats another point's: clustered with it (qdrant_lander.dedup)
    seconds: dict[str, float]  # wall time per stage: scroll, index, knn, cluster, write
    cpu_seconds: dict[str, float]  # CPU time of this process (all threads) per stage
    peak_rss_mb: float | None = None  # this process's peak resident memory by the end (None: the OS does not say)


class Status(BaseModel):
    collection: str
    points: int
    clustered: int
    unclustered: int
    clusters: int
    largest: list[tuple[int, int]]  # (cluster id, points), largest first
    model: str | None
    domain: str | None  # the decoding preset of the last full sync (auto resolved); None: not recorded
    generation: int | None
    state: str | None  # "complete", or "writing" if the last sync did not finish
    last_sync: datetime | None
    vector: str | None = None  # the named vector the last full sync clustered ("" / None: the unnamed one, or not recorded)
    unindexed: int | None = None  # points kNN queries scan, outside the vector index, at least (None: the store does not say)
    partition_by: str | None = None  # the payload key no cluster spans two values of (the last full sync's)


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MB, so that a user can size the machine for a sync
    (memory grows with the points: RESULTS.md, Sync); None where the OS does not report it (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


@contextmanager
def _stage(seconds: dict[str, float], cpu: dict[str, float], name: str) -> Iterator[None]:
    t, c = time.perf_counter(), time.process_time()
    yield
    seconds[name] = round(time.perf_counter() - t, 3)
    cpu[name] = round(time.process_time() - c, 3)
    peak = peak_rss_mb()
    memory = "" if peak is None else f", peak memory so far {peak} MB"
    log.info("%s: %.2f s (%.2f s CPU)%s", name, seconds[name], cpu[name], memory)


def _bar(total: int, desc: str, progress: bool, delay: float = 0.0) -> tqdm:
    return tqdm(total=total, desc=desc, unit="pt", disable=not progress, leave=False, delay=delay)


def stored_unit_vectors(ids: np.ndarray, v: np.ndarray, collection: str) -> np.ndarray:
    """Rows scaled to unit length; NaN/inf/zero vectors are named by point id."""
    try:
        return check_embeddings(v, min_points=1)
    except InputError:
        bad = ids[~np.isfinite(v).all(axis=1) | ~np.any(v != 0, axis=1)]
        raise StoredDataError(f"collection '{collection}' has {bad.size} vectors with NaN, inf or all zeros "
                         f"(point ids {bad[:5].tolist()}); fix or delete them and sync again") from None


def read_vectors(col: Collection, *, batch_size: int = 1024, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All point ids (ascending) and their unit-length vectors (points that arrive during the scroll may be
    among them or not)."""
    n = col.count()
    ids = np.empty(n, dtype=np.int64)
    x = np.empty((n, col.info().dim), dtype=np.float32)
    filled = 0
    with _bar(n, "read vectors", progress) as bar:
        for batch in col.scroll(batch_size=batch_size, vectors=True):
            m = len(batch.ids)
            if filled + m > len(ids):  # arrivals: room for an eighth more (preallocated to bound peak memory)
                more = max(m, len(ids) // 8)
                ids = np.concatenate([ids, np.empty(more, ids.dtype)])
                x = np.concatenate([x, np.empty((more, x.shape[1]), x.dtype)])
            ids[filled:filled + m] = batch.ids
            x[filled:filled + m] = stored_unit_vectors(batch.ids, batch.vectors, col.name)
            filled += m
            bar.update(m)
    ids, x = ids[:filled], x[:filled]
    if not np.all(ids[1:] > ids[:-1]):  # both stores scroll by id; keep rows findable by binary search
        order = np.argsort(ids, kind="stable")
        ids, x = ids[order], x[order]
    return ids, x


def read_groups(col: Collection, ids: np.ndarray, key: str, *, batch_size: int = 1024,
                codes: dict[tuple[str, Any], int] | None = None) -> np.ndarray:
    """A code per point of ``ids`` for its value of payload ``key`` (equal values, equal codes; a point without
    the key, or deleted since, gets code 0, "no value"): what :func:`full_sync`'s ``partition_by`` keeps apart. A dotted
    key names a nested value (``user.id``), as in Qdrant's filters. Codes are those of one call, or of every call
    given the same ``codes`` table (filled in place)."""
    codes = {} if codes is None else codes
    codes.setdefault(_value_key(None), 0)
    out = np.empty(len(ids), dtype=np.int64)
    for s in range(0, len(ids), batch_size):
        asked = ids[s:s + batch_size].tolist()
        got = col.retrieve(asked, payload=[key])
        values = [_value_at(p, key) for p in got.payloads or ()]
        if len(values) != len(asked):  # some were deleted: match by id
            by_id = dict(zip(got.ids.tolist(), values))
            values = [by_id.get(i) for i in asked]
        out[s:s + len(asked)] = [codes.setdefault(_value_key(v), len(codes)) for v in values]
    return out


def _value_at(payload: dict[str, Any], key: str) -> Any:
    """``payload[key]``, or the nested value a dotted key names (Qdrant's syntax: ``user.id``); None when absent."""
    if key in payload:
        return payload[key]
    value: Any = payload
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _value_key(v: Any) -> tuple[str, Any]:
    """A payload value as a dict key: its type kept (True is not 1), lists and objects by their JSON."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return type(v).__name__, v
    return "json", json.dumps(v, sort_keys=True)


def group_filters(key: str, codes: dict[tuple[str, Any], int], wanted: Sequence[int]) -> list[models.Filter | None]:
    """A filter per code of ``wanted`` for the points :func:`read_groups` gave it (in the table ``codes``): the
    key's value matched, or the key empty for code 0 ("no value"). It may find points of other codes too (Qdrant
    matches a list by any of its elements, and an empty list as empty): callers read the codes of what it finds.
    None for values no match filter names: lists, objects, and booleans (the embedded store matches none); a
    float's is a range of its one value. The table is inverted once per call (a pass with 20,000 tenants at its
    cap spent 3.5 s looking codes up one by one)."""
    value_of = {c: v for v, c in codes.items()}
    return [_value_filter(key, *value_of[code]) for code in wanted]


def _value_filter(key: str, kind: str, value: Any) -> models.Filter | None:
    if kind == "NoneType":
        return models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=key))])
    if kind in ("str", "int"):
        return models.Filter(must=[models.FieldCondition(key=key, match=models.MatchValue(value=value))])
    if kind == "float" and math.isfinite(value):  # no match filter names a float: a range of one value does
        return models.Filter(must=[models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))])
    return None


def fetch_knn(col: Collection, ids: np.ndarray, x: np.ndarray, k: int, *, rows: np.ndarray | None = None,
              batch_size: int = 1024, progress: bool = True, exact: bool = False) -> KnnGraph:
    """The level-0 kNN graph from the store's index, as row indices into ``ids`` (ascending): of every
    point, or of the points at ``rows`` (graph row i is ``rows[i]``'s)."""
    rows = np.arange(len(ids)) if rows is None else rows
    nbr = np.empty((len(rows), k), dtype=np.int64)
    sim = np.empty((len(rows), k), dtype=np.float32)
    with _bar(len(rows), "kNN", progress) as bar:
        for s in range(0, len(rows), batch_size):
            e = min(s + batch_size, len(rows))
            res = col.knn(ids[rows[s:e]], x[rows[s:e]], k, exact=exact)
            nbr[s:e], sim[s:e] = res.ids, res.sim
            bar.update(e - s)
    nbr = rows_of(ids, nbr)  # point ids -> rows, once for all batches (its lookup table is built over all ids)
    if (nbr < 0).any():
        _without_arrivals(col, ids, x, rows, nbr, sim, exact)
    return KnnGraph(nbr=nbr, sim=np.clip(sim, -1.0, 1.0))


def knn_kept(col: Collection, ids: np.ndarray, x: np.ndarray, k: int, keep: Callable[[np.ndarray], np.ndarray],
             limits: Sequence[int], **search: Any) -> tuple[Neighbours, np.ndarray]:
    """Each query's k nearest stored points among those ``keep`` (a bool array over neighbour ids) accepts:
    queries are asked with each of ``limits`` in turn until k are kept. Returns the lists (point ids) and the
    query rows no limit filled (their lists are undefined)."""
    nbr = np.empty((len(ids), k), dtype=np.int64)
    sim = np.empty((len(ids), k), dtype=np.float32)
    todo = np.arange(len(ids))
    for limit in limits:
        nb = col.knn(ids[todo], x[todo], limit, **search)
        kept = keep(nb.ids)
        done = kept.sum(axis=1) >= k
        nbr[todo[done]], sim[todo[done]] = first_kept(kept[done], k, nb.ids[done], nb.sim[done])
        todo = todo[~done]
        if not len(todo):
            break
    return Neighbours(nbr, sim), todo


def _without_arrivals(col: Collection, ids: np.ndarray, x: np.ndarray, rows: np.ndarray, nbr: np.ndarray,
                      sim: np.ndarray, exact: bool) -> None:
    """Refill, in place, the lists that name points which arrived after the scroll (row -1): the sync
    clusters what it read, and the next incremental pass labels the arrivals. Such rows are asked again
    with room for more arrivals; a row still short after that gets its exact neighbours among the points read."""
    k = nbr.shape[1]
    todo = np.flatnonzero((nbr < 0).any(axis=1))
    log.info("%d kNN lists of '%s' name points that arrived during the sync: asked again without them",
             len(todo), col.name)
    most = col.count() - 1  # a query cannot return more than the other points
    nb, short = knn_kept(col, ids[rows[todo]], x[rows[todo]], k, lambda got: rows_of(ids, got) >= 0,
                         [min(k << i, most) for i in (1, 2, 3)], exact=exact)
    filled = np.setdiff1d(np.arange(len(todo)), short)
    nbr[todo[filled]], sim[todo[filled]] = rows_of(ids, nb.ids[filled]), nb.sim[filled]
    if len(short):
        exact_rows = nearest_rows(x, rows[todo[short]], k)
        nbr[todo[short]], sim[todo[short]] = exact_rows.nbr, exact_rows.sim


def check_fits(col: Collection, card: ModelCard) -> int:
    """Number of points, after checking the collection can be clustered by this model at all."""
    info = col.info()
    if card.input_dim != "any" and info.dim != card.input_dim:
        raise StoredDataError(f"collection '{col.name}' has vectors of size {info.dim}, but model '{card.name}' takes "
                         f"size {card.input_dim}; pass a model trained for size {info.dim} (--model)")
    if info.points == 0:
        raise CollectionNotReady(f"collection '{col.name}' is empty; import points first")
    if info.points <= card.k:
        raise CollectionNotReady(f"collection '{col.name}' has {info.points} points; clustering needs more than k={card.k}")
    return info.points


def lander_payloads(ids: np.ndarray, res: ClusterResult, model: str, generation: int,
                    clusters: np.ndarray | None = None) -> Iterator[tuple[list[int], dict]]:
    """One complete ``lander`` payload per point, ordered by cluster so writes stay local.

    ``clusters`` (per point) replaces the peak-id names of the final clusters, also in ``path[-1]``.
    """
    path_ids = ids[res.paths]
    if clusters is not None:
        path_ids[:, -1] = clusters
    for r in np.lexsort((ids, res.labels)):
        value = LanderPayload(cluster=int(path_ids[r, -1]), path=path_ids[r].tolist(), density=float(res.density[r]),
                              peak=bool(res.peak[r]), model=model, generation=generation)
        yield [int(ids[r])], {KEY: value.model_dump()}


def last_sync(col: Collection) -> SyncState | None:
    """The record of the collection's last full sync (finished or not), None if it was never synced."""
    return col.get_record(SYNC_META, SyncState)


def ensure_indexes(col: Collection) -> None:
    """The payload indexes lander's reads need (idempotent): cluster for relabels, new-point scans and the
    cluster sizes (a store facets only an indexed field), path for id collision checks."""
    for field in (CLUSTER_FIELD, PATH_FIELD):
        col.create_index(field, models.PayloadSchemaType.INTEGER)


def index_partition_key(col: Collection, key: str, codes: dict[tuple[str, Any], int]) -> None:
    """A payload index on the partition ``key`` (its values: the keys of a :func:`read_groups` table) where it has
    none and its values are all strings (keyword) or all integers: passes filter on it where many tenants share
    vectors (200 tenants: those queries took 5.5 s of a 12.3 s pass without an index, 0.2 s with one), as Qdrant's
    multitenancy guide recommends. An index the user made is left as it is (it may hold tenant options)."""
    kinds = frozenset(kind for kind, _ in codes) - {"NoneType"}
    schema = {frozenset({"str"}): models.PayloadSchemaType.KEYWORD,
              frozenset({"int"}): models.PayloadSchemaType.INTEGER}.get(kinds)
    if schema is not None and key not in col.info().indexed_fields:
        col.create_index(key, schema)
        log.info("created a %s payload index on '%s' of '%s' (passes filter by tenant on it)", schema.value, key,
                 col.name)


def write_result(col: Collection, ids: np.ndarray, res: ClusterResult, model: str, *, batch_size: int = 1024,
                 progress: bool = True, clusters: np.ndarray | None = None, domain: str,
                 partition_by: str | None = None) -> SyncState:
    """Write a new generation of payloads, bracketed by ``writing``/``complete`` meta records."""
    prev = last_sync(col)
    generation = (prev.generation if prev else 0) + 1
    state = SyncState(state="writing", generation=generation, model=model, points=len(ids),
                      clusters=res.n_clusters, started_at=datetime.now(timezone.utc), tau=res.tau,
                      domain=domain, absorb_size=res.absorb_size, vector=col.vector, partition_by=partition_by)
    col.set_meta(SYNC_META, state.model_dump(mode="json"))
    ensure_indexes(col)
    batch: list[tuple[list[int], dict]] = []
    with _bar(len(ids), "write payload", progress) as bar:
        for item in lander_payloads(ids, res, model, generation, clusters):
            batch.append(item)
            if len(batch) == batch_size:
                col.set_payloads(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            col.set_payloads(batch)
            bar.update(len(batch))
    col.flush()
    state = state.model_copy(update={"state": "complete", "finished_at": datetime.now(timezone.utc)})
    col.set_meta(SYNC_META, state.model_dump(mode="json"))
    return state


@dataclass(frozen=True)
class Clustered:
    """A collection's points clustered in memory, nothing written yet (what a full sync then writes)."""

    ids: np.ndarray  # int64 [N], ascending: the result's rows
    result: ClusterResult  # labels and paths are row indices into ids
    lander: Clusterer  # the clusterer that decoded (auto resolved to its preset)
    exact: bool  # neighbours by a full scan (else the HNSW index)
    copies: int  # points whose vector repeats another point's (qdrant_lander.dedup)


def cluster_stored(col: Collection, lander: Clusterer, *, batch_size: int = 1024, progress: bool = True,
                   knn: KnnMode = "auto", seconds: dict[str, float] | None = None, cpu: dict[str, float] | None = None,
                   on_graph: Callable[[np.ndarray, np.ndarray, KnnGraph], None] | None = None,
                   partition_by: str | None = None) -> Clustered:
    """Read every point of ``col``, take its kNN from the store and cluster: the stages scroll, index, knn and
    cluster of a full sync (timed into ``seconds`` / ``cpu``). See :func:`full_sync` for ``knn``, ``on_graph`` and
    ``partition_by``."""
    seconds = {} if seconds is None else seconds
    cpu = {} if cpu is None else cpu
    card = lander.card
    n = check_fits(col, card)
    exact = knn == "exact" or (knn == "auto" and n * col.info().dim <= EXACT_MAX_FLOATS)
    with _stage(seconds, cpu, "scroll"):
        ids, x = read_vectors(col, batch_size=batch_size, progress=progress)
        codes: dict[tuple[str, Any], int] = {}
        groups = read_groups(col, ids, partition_by, batch_size=batch_size, codes=codes) if partition_by else None
        if groups is not None and len(ids) and not groups.any():  # code 0: no value
            raise StoredDataError(f"no point of collection '{col.name}' has the payload key '{partition_by}' to "
                                  "partition by (a nested key is written with dots: user.id)")
        vectors = unique_rows(x)  # copies of a vector are clustered once (qdrant_lander.dedup) ...
        distinct = vectors if groups is None else unique_rows(x, groups)  # ... once per partition value
        xu = distinct.take(x)
        lander = lander.for_data(xu)  # auto: the preset whose space these vectors resemble
        card = lander.card
        if len(vectors.rep) <= card.k:
            raise CollectionNotReady(f"collection '{col.name}' has {len(vectors.rep)} distinct vectors among {n} points; "
                             f"clustering needs more than k={card.k}")
        if distinct.copies:
            log.info("%d points of '%s' repeat another point's vector: each vector is clustered once and its copies "
                     "take its cluster", distinct.copies, col.name)
    with _stage(seconds, cpu, "index"):
        if not exact:
            col.prepare_knn()
        if partition_by:
            index_partition_key(col, partition_by, codes)
    with _stage(seconds, cpu, "knn"):
        extra = min(card.k, n - 1 - card.k) if vectors.copies else 0  # room for the copies dropped from each list
        fetched = fetch_knn(col, ids, x, card.k + extra, rows=vectors.rep, batch_size=batch_size, progress=progress,
                            exact=exact)
        graph = vectors.collapse(fetched, card.k, x)  # one entry per distinct vector, in whichever partition
        if groups is not None:  # a vector in several partitions: each row's list in its own
            graph = regroup(graph, vectors, distinct, groups)
        if on_graph is not None:
            on_graph(ids, x, distinct.expand_graph(graph))
    with _stage(seconds, cpu, "cluster"):
        if progress and len(xu) >= CLUSTER_NOTICE_POINTS:
            print(f"clustering {len(xu):,} points: the model scores them, then each level of supernodes (minutes on "
                  "a large collection; -vv logs each level)...", file=sys.stderr, flush=True)
        res = distinct.expand(lander.predict_graph(xu, graph, None if groups is None else groups[distinct.rep]))
    return Clustered(ids=ids, result=res, lander=lander, exact=exact, copies=distinct.copies)


def full_sync(col: Collection, lander: Clusterer, *, batch_size: int = 1024, progress: bool = True,
              knn: KnnMode = "auto",
              rename: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
              on_graph: Callable[[np.ndarray, np.ndarray, KnnGraph], None] | None = None,
              partition_by: str | None = None) -> SyncReport:
    """Cluster every point of ``col`` and write the result as ``lander`` payload.

    ``knn="exact"`` takes neighbours by a full scan in the store: the graph, hence the clustering, is
    exactly what ``Lander.predict`` builds in memory, but the cost grows with N^2. ``"index"`` asks the
    HNSW index: a few neighbours in a thousand differ from the exact ones, and the model can amplify
    that (CLINC150: Fp within 0.001-0.015 of exact). ``"auto"`` scans while N*D <= 5M, else uses the
    index, the way Qdrant itself scans small segments instead of searching their index.
    ``rename(point ids, cluster ids)`` may return other cluster ids to write (the daemon keeps the
    previous generation's ids stable this way, see :mod:`qdrant_lander.stable_ids`). ``on_graph(point
    ids, unit vectors, kNN graph)`` sees the level-0 graph (the daemon keeps it for its next passes).
    ``partition_by`` names a payload key (a tenant): no cluster holds points of two of its values (points
    without it: one more value), while neighbours are still found among all points. It is recorded, and
    incremental passes keep to it.
    """
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    # The vectors and the graph are gone once this returns, before the writes: Qdrant copies each rewritten point
    # out of its indexed segment (1.2 GB of a million-point sync's 9 GB peak; RESULTS.md, Sync).
    done = cluster_stored(col, lander, batch_size=batch_size, progress=progress, knn=knn, seconds=seconds, cpu=cpu,
                          on_graph=on_graph, partition_by=partition_by)
    ids, res, card = done.ids, done.result, done.lander.card
    with _stage(seconds, cpu, "write"):
        clusters = rename(ids, ids[res.labels]) if rename is not None else None
        state = write_result(col, ids, res, card.name, batch_size=batch_size, progress=progress, clusters=clusters,
                             domain=done.lander.domain, partition_by=partition_by)
    with _stage(seconds, cpu, "reindex"):  # the writes moved every point out of its indexed segment
        col.reindex_rewritten(progress=progress)
    return SyncReport(collection=col.name, points=len(ids), clusters=res.n_clusters, levels=res.n_levels, tau=res.tau,
                      domain=done.lander.domain, generation=state.generation, model=card.name,
                      knn="exact" if done.exact else "index", copies=done.copies, seconds=seconds, cpu_seconds=cpu,
                      peak_rss_mb=peak_rss_mb())


def import_points(store: Store, name: str, x: np.ndarray, payloads: Sequence[dict[str, Any]] | None = None, *,
                  start_id: int = 0, batch_size: int = 1024, progress: bool = True,
                  vector: str | None = None) -> Collection:
    """Upsert ``x`` as points ``start_id .. start_id+N-1`` (creating a cosine collection if needed), as
    the named ``vector`` of an existing collection that has several.

    Everything is checked before the first write: finite non-zero vectors, payload count and keys, and
    the dimension of an existing collection.
    """
    x = np.asarray(x)  # a memory-mapped file stays one: only the batch being written is copied
    batches = unit_batches(x, batch_size, min_points=1)  # every row checked here, each batch scaled when written
    if payloads is not None and len(payloads) != len(x):
        raise InputError(f"{len(payloads)} payloads for {len(x)} vectors")
    reserved = next((r for r, p in enumerate(payloads or ()) if KEY in p), None)
    if reserved is not None:  # a sync would overwrite it, and a pass before that would read it as a clustering
        raise InputError(f"payload row {reserved} has the key '{KEY}', which holds lander's clustering; rename it")
    if start_id < 0 or start_id + len(x) > 2**63:  # lander keys its arrays by int64 point id
        raise InputError(f"--start-id must be >= 0 and leave the ids below 2^63, got {start_id}")
    if name in store.collections():
        col = store.open(name, vector=vector)
        if col.info().dim != x.shape[1]:
            raise InputError(f"collection '{name}' has vectors of size {col.info().dim}, the array has {x.shape[1]}")
        if vector:
            _refuse_replacing_named(col, start_id, len(x), batch_size)
    elif vector is not None:
        raise InputError(f"collection '{name}' does not exist: a vector name picks a vector of an existing collection "
                         "(the collection import creates has one unnamed vector)")
    else:
        col = store.create(name, x.shape[1])
    with _bar(len(x), "import", progress) as bar:
        for s, rows in batches:
            e = s + len(rows)
            col.upsert(np.arange(start_id + s, start_id + e), rows, payloads[s:e] if payloads is not None else None)
            bar.update(e - s)
    col.flush()
    return col


def _refuse_replacing_named(col: Collection, start_id: int, n: int, batch_size: int) -> None:
    """An upsert writes whole points: one carrying only the named vector imported would lose the point's other
    vectors and its payload (the user's and lander's), so existing ids are refused before the first write."""
    for s in range(start_id, start_id + n, batch_size):
        found = col.retrieve(range(s, min(s + batch_size, start_id + n)), payload=False).ids
        if len(found):
            raise InputError(f"points {found[:5].tolist()} of collection '{col.name}' exist: importing "
                             f"{vector_name(col.vector)} replaces whole points, and their other vectors and payload "
                             "would be lost. "
                             "Import new points at a free --start-id, or add the vector to existing points with "
                             "qdrant-client's update_vectors")


def next_point_id(store: Store, name: str, vector: str | None = None) -> int:
    """One past the collection's highest point id (0 if it does not exist or is empty): where an import that
    adds points starts, so that a second batch never overwrites the first."""
    if name not in store.collections():
        return 0
    last = -1
    for batch in store.open(name, vector=vector).scroll(batch_size=4096, vectors=False):  # ascending: ends at the top
        if len(batch.ids):
            last = int(batch.ids[-1])
    return last + 1


def scroll_lander(col: Collection, *, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, list[dict | None]]]:
    """Every point's id with its ``lander`` value (None where it has none), a batch at a time."""
    for batch in col.scroll(batch_size=batch_size, vectors=False, payload=[KEY]):
        yield batch.ids, [p.get(KEY) or None for p in batch.payloads]


def read_labels(col: Collection, *, batch_size: int = 1024, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Point ids (ascending) and their cluster id, -1 where a point has none."""
    ids, labels = [], []
    # 15 s at 300k points; shown after 2 s, so a quick read (or its error line) stays one clean line
    with _bar(col.count() if progress else 0, "read labels", progress, delay=2.0) as bar:
        for batch_ids, values in scroll_lander(col, batch_size=batch_size):
            ids.append(batch_ids)
            labels.append([int(v.get("cluster", -1)) if v else -1 for v in values])
            bar.update(len(batch_ids))
    if not ids:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    ids_a, labels_a = np.concatenate(ids), np.concatenate(labels).astype(np.int64)
    order = np.argsort(ids_a, kind="stable")
    return ids_a[order], labels_a[order]


def status(col: Collection, *, top: int = 10) -> Status:
    """Counts from the collection itself; model/generation/time from the last full sync's record."""
    points = col.count()
    unclustered = col.count(unclustered_filter())
    sizes = col.facet(CLUSTER_FIELD, limit=max(points, 1)) if points > unclustered else []
    state = last_sync(col)
    return Status(collection=col.name, points=points, clustered=points - unclustered, unclustered=unclustered,
                  clusters=len(sizes), largest=[(int(v), c) for v, c in sizes[:top]],
                  model=state.model if state else None, domain=state.domain if state else None,
                  generation=state.generation if state else None,
                  state=state.state if state else None, vector=state.vector if state else None,
                  last_sync=(state.finished_at or state.started_at) if state else None, unindexed=col.unindexed(),
                  partition_by=state.partition_by if state else None)
