"""One incremental pass: label the points that have no ``lander`` payload yet, touching only their
neighbourhood.

The model runs on the new points' neighbourhood only: the new points and ``hops`` rings of their
neighbours with the kNN lists a full sync would read, so the new points' links and densities, and
their neighbours' densities, are computed on today's graph the way a full sync computes them, up to
two approximations: the outermost ring's lists are cut at the field's edge, and a daemon's cached list
gains an arrival only when the arrival lists it in turn (the reverse update), so it can miss one that is
not a mutual neighbour until the next full pass. Every new point then

* **attaches** to its most probable denser neighbour above tau (the decoder's own rule) and takes that
  point's ``cluster`` and ``path``; chains of new points resolve to the old point they end at;
* **starts a cluster** when no such neighbour exists (id = its own point id, as in a full sync);
* **merges** clusters when the decoder's rule, re-applied to a cluster's peak with today's
  neighbourhood, now gives that peak a parent in another cluster: new points that bridge two clusters
  do so by becoming the denser neighbour a peak now links to. The smaller cluster is relabelled with
  one filtered payload update; the larger keeps its id (a cluster the pass starts takes the old id).

Crash safety: decisions are computed before anything is written; merges and freshly allocated ids
are journaled in the ``incremental`` meta record first, applied, then the new points' payloads are
written (one whole ``lander`` object per point), flushed (when there were merges), and the journal
cleared. A crash anywhere
leaves unlabelled points (found again by the next pass) and at most a journal that the next pass
replays (relabelling is idempotent).

Cost: a pass reads kNN lists of the receptive field only; :class:`NeighbourCache` keeps them between
passes of a long-running daemon, so in steady state a pass queries the store for the new points alone.
:class:`LabelCache` keeps the labels the daemon wrote or read, so a pass reads from the store only
the labels of points it has not met yet (plus one count that checks the cached ones are still there).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel
from qdrant_client import models

from .decode import decode_level, forest_roots, heaviest_targets
from .dedup import one_per_vector, unique_rows
from .errors import CollectionNotReady, StoreError, StoredDataError, TooFewNeighbours
from .features import edge_features, node_terms
from .caches import Label, LabelCache, Labels, NeighbourCache
from .knn import KnnGraph, repeated, rows_of
from .model_card import ModelCard
from .runtime import OnnxScorer
from .payload import CLUSTER_FIELD, KEY, PATH_FIELD, LanderPayload, SyncState, cluster_filter, unclustered_filter
from .stores.base import Collection, Neighbours
from .sync import SyncReport, group_filters, knn_kept, last_sync, read_groups, stored_unit_vectors

log = logging.getLogger(__name__)

INCREMENTAL_META = "incremental"
# HNSW search breadth of a pass's queries (a full sync's use the store's default, 128): half the breadth
# cut a pass at 100k points by ~9% and moved the streams' Fp by at most 0.001 (CLINC150, Banking77, a
# synthetic 100k; benchmarks/RESULTS.md, session 14), though it finds fewer of the true neighbours.
PASS_EF = 64
FRESH_ID_START = 1 << 40  # ids handed out when a point id is still in use as a cluster/supernode id


class NeedsFullSync(StoreError):
    """The collection has no complete full sync to build on (never synced, or a sync crashed mid-write)."""


class IncrementalState(BaseModel):
    """The ``incremental`` meta record: the merge journal and the fresh-id counter."""

    pending_merges: list[tuple[int, int]] = []  # (absorbed cluster, surviving cluster), not yet relabelled
    next_fresh_id: int = FRESH_ID_START
    # The full sync generation the journaled ids name: a full sync since then renamed the clusters, so its
    # merges must not be replayed onto the new ones (None: a journal written before this was recorded).
    generation: int | None = None


class PassReport(BaseModel):
    """What one pass did; ``log_line`` is the daemon's one line per pass."""

    new: int = 0
    attached: int = 0
    created: int = 0
    absorbed: int = 0  # clusters the pass started that joined a larger one (cards with absorb_share > 0)
    merged: int = 0
    relabelled: int = 0  # stored points a merge rewrote (on the embedded store they leave the vector index)
    deleted_seen: int = 0
    field: int = 0  # points in the receptive field the model ran on
    seconds: float = 0.0
    model_seconds: float = 0.0
    full: bool = False
    domain: str | None = None  # the decoding preset the pass used (set by the daemon)
    # Points left without a label when the pass ended (arrived during it, or beyond max_new; set by the
    # daemon): a figure that keeps growing pass after pass means arrivals outpace the daemon.
    waiting: int = 0
    sync: SyncReport | None = None  # a full pass's own report (clusters, levels, tau, generation, stages)

    def log_line(self) -> str:
        kind = "full" if self.full else "incremental"
        domain = f" domain={self.domain}" if self.domain else ""
        full = f" clusters={self.sync.clusters} generation={self.sync.generation}" if self.sync else ""
        return (f"{kind} pass: new={self.new} attached={self.attached} created={self.created} "
                f"absorbed={self.absorbed} merged={self.merged} relabelled={self.relabelled} field={self.field} "
                f"waiting={self.waiting} "
                f"seconds={self.seconds:.3f}{domain}{full}")


def sync_state(col: Collection) -> SyncState:
    """The last full sync's record, or :class:`NeedsFullSync` if there is none or it did not finish."""
    state = last_sync(col)
    if state is None:
        raise NeedsFullSync(f"collection '{col.name}' has never been synced; run a full sync first")
    state.check_vector(col.name, col.vector)
    if state.state != "complete":
        raise NeedsFullSync(f"the last full sync of '{col.name}' did not finish (generation {state.generation}); "
                            "a full sync is needed")
    return state


def load_state(col: Collection) -> IncrementalState:
    return col.get_record(INCREMENTAL_META, IncrementalState) or IncrementalState()


def relabel(col: Collection, absorbed: int, survivor: int) -> None:
    """One filtered update: every point of cluster ``absorbed`` now belongs to ``survivor``.

    Only ``cluster`` and ``peak`` change (a nested update inside ``lander``); ``path`` keeps naming
    the supernodes the points were decoded into, so ``path[-1]`` shows which merged group they came from.
    """
    col.set_payload_by_filter(cluster_filter(absorbed), {"cluster": int(survivor), "peak": False}, key=KEY)


def replay_journal(col: Collection) -> int:
    """Apply merges a crashed pass journaled but may not have finished; returns how many. A journal of an
    earlier generation (a full sync ran since the crash) is dropped: its ids may name other clusters now."""
    state = load_state(col)
    if not state.pending_merges:
        return 0
    sync = last_sync(col)
    current = sync.generation if sync else None
    if state.generation is not None and state.generation != current:
        col.set_meta(INCREMENTAL_META, state.model_copy(update={"pending_merges": []}).model_dump())
        log.info("dropped %d journaled merge(s) of generation %d: generation %s re-clustered everything since",
                 len(state.pending_merges), state.generation, current)
        return 0
    for absorbed, survivor in state.pending_merges:
        relabel(col, absorbed, survivor)
    col.flush()
    n = len(state.pending_merges)
    col.set_meta(INCREMENTAL_META, state.model_copy(update={"pending_merges": []}).model_dump())
    log.info("replayed %d journaled merge(s) of an interrupted pass", n)
    return n


class _Field:
    """The receptive field of a batch of new points: rings of point ids, the new points first."""

    def __init__(self, rings: list[np.ndarray]):
        self.rings = rings
        self.ids = np.concatenate(rings)

    @classmethod
    def grow(cls, col: Collection, cache: NeighbourCache, new_ids: np.ndarray, hops: int,
             batch_size: int) -> tuple[_Field, np.ndarray]:
        """Rings 0..hops around ``new_ids`` with every ring's lists cached; also the deleted ids met."""
        gone = cache.fetch(col, new_ids, ef=PASS_EF, batch_size=batch_size)
        rings = [new_ids[~np.isin(new_ids, gone)]]
        seen = rings[0]
        for _ in range(hops):
            listed = cache.lists(rings[-1])[0].reshape(-1)
            _, first = np.unique(listed, return_index=True)
            nxt = listed[np.sort(first)]  # each once, first listed first
            nxt = nxt[~np.isin(nxt, seen)]
            gone = np.union1d(gone, cache.fetch(col, nxt, ef=PASS_EF, batch_size=batch_size))
            nxt = nxt[~np.isin(nxt, gone)]
            seen = np.concatenate([seen, nxt])
            rings.append(nxt)
        return cls(rings), gone

    def graph(self, cache: NeighbourCache) -> tuple[KnnGraph, np.ndarray]:
        """Local kNN graph and the field's unit vectors; lists of the outermost ring may leave the field and
        point at the row itself there. Those rows only feed node features: their similarity terms are exact,
        their neighbour-centroid terms approximate (the row stands in for each neighbour outside the field)."""
        nbr_ids, sim, x = cache.gather(self.ids)
        rows = rows_of(self.ids, nbr_ids)
        rows = np.where(rows >= 0, rows, np.arange(len(self.ids))[:, None])
        return KnnGraph(nbr=rows, sim=np.clip(sim, -1.0, 1.0)), x


class _Groups:
    """Union-find over clusters: old cluster ids (>= 0) and provisional new trees (-1 - row)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, g: int) -> int:
        self.parent.setdefault(g, g)
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def components(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for g in list(self.parent):
            out.setdefault(self.find(g), []).append(g)
        return out


def _absorb_new(groups: _Groups, group: np.ndarray, known: np.ndarray, nbr: np.ndarray, link: np.ndarray,
                new_size: dict[int, int], max_size: int, stored_sizes: Callable[[list[int]], dict[int, int]],
                allowed: np.ndarray | None = None) -> tuple[int, dict[int, int]]:
    """A pass's :func:`~qdrant_lander.decode.absorb_fragments`: every cluster of at most ``max_size`` points
    (the full sync's resolved size) that this pass started, with no old member, joins, in ``groups``, the
    larger cluster that receives most of its new points' links (``nbr``, ``link``: the new rows'). Why only
    those: the full pass judged the old clusters; without this a stream keeps the small clusters a full sync
    absorbs (benchmarks/RESULTS.md, session 25). ``new_size``: new points per group. Returns how many moved and
    the stored sizes it read."""
    rows = np.flatnonzero(known)  # new rows are known; an unknown row's group is undefined
    vals, inv = np.unique(group[rows], return_inverse=True)
    comp = np.zeros(len(group), dtype=np.int64)
    comp[rows] = np.asarray([groups.find(int(v)) for v in vals.tolist()], dtype=np.int64)[inv]
    members = groups.components()
    new_count = {c: sum(new_size.get(g, 0) for g in m) for c, m in members.items()}
    small = {c for c, m in members.items() if new_count[c] <= max_size and all(g < 0 for g in m)}
    src = np.repeat(np.arange(nbr.shape[0]), nbr.shape[1])
    dst = nbr.reshape(-1)
    edge = np.isin(comp[src], list(small)) & known[dst] & (comp[dst] != comp[src])
    if allowed is not None:  # partition_by: a fragment never moves along an edge into another value of the key
        edge &= allowed.reshape(-1)
    if not edge.any():
        return 0, {}
    n_edges = int(edge.sum())
    ids, inv = np.unique(np.r_[comp[src[edge]], comp[dst[edge]]], return_inverse=True)  # compact cluster indices
    src_c, dst_c = inv[:n_edges], inv[n_edges:]
    sizes = stored_sizes([g for t in np.unique(dst_c).tolist() for g in members[int(ids[t])] if g >= 0])
    size = np.asarray([new_count[c] + sum(sizes.get(g, 0) for g in members[c] if g >= 0)
                       for c in ids.tolist()])
    larger = size[dst_c] > size[src_c]  # a small cluster's size is its new points: it has no old member
    sources, targets = heaviest_targets(src_c[larger], dst_c[larger], link.reshape(-1)[edge][larger], ids.size)
    for a, b in zip(ids[sources].tolist(), ids[targets].tolist()):  # targets are larger: union-find ends chains
        groups.union(a, b)
    return len(sources), sizes


def _read_new(col: Collection, max_new: int | None, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    ids, vecs, n = [], [], 0
    for batch in col.scroll(batch_size=batch_size, filter=unclustered_filter(), vectors=True):
        ids.append(batch.ids)
        vecs.append(batch.vectors)
        n += len(batch.ids)
        if max_new is not None and n >= max_new:
            break
    if not ids:
        return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
    ids_a, x = np.concatenate(ids), np.concatenate(vecs)
    if max_new is not None:
        ids_a, x = ids_a[:max_new], x[:max_new]
    return ids_a, stored_unit_vectors(ids_a, x, col.name)


def _ids_in_use(col: Collection, candidates: Sequence[int]) -> set[int]:
    """Candidates already used as a cluster id or supernode id by some labelled point (a re-upserted
    peak, say); one count call in the usual case where none is."""
    if not candidates:
        return set()

    def used(values: list[int]) -> bool:
        any_ = models.MatchAny(any=values)
        return col.count(models.Filter(should=[models.FieldCondition(key=CLUSTER_FIELD, match=any_),
                                               models.FieldCondition(key=PATH_FIELD, match=any_)])) > 0

    if not used(list(candidates)):
        return set()
    return {c for c in candidates if used([c])}


def _fresh_ids(col: Collection, start: int, n: int) -> tuple[list[int], int]:
    """``n`` fresh ids from ``start`` on that no point uses (the counter's record may have been lost or be older
    than the payloads), and the counter after them."""
    fresh: list[int] = []
    while len(fresh) < n:
        candidates = list(range(start, start + n - len(fresh)))
        used = _ids_in_use(col, candidates)
        fresh += [c for c in candidates if c not in used]
        start += len(candidates)
    return fresh, start


def _sizes(col: Collection, clusters: list[int]) -> dict[int, int]:
    """Points per cluster for a few clusters, in one facet call."""
    if not clusters:
        return {}
    f = models.Filter(must=[models.FieldCondition(key=CLUSTER_FIELD, match=models.MatchAny(any=clusters))])
    return {int(v): c for v, c in col.facet(CLUSTER_FIELD, limit=len(clusters), filter=f)}


def _has_peak(col: Collection, cluster: int, batch_size: int) -> bool:
    """Whether a stored point is ``cluster``'s peak. Its members' flags are read (rare: re-upserted peaks only),
    because the embedded store (qdrant-edge-py 0.9) matches no boolean payload value in a filter."""
    members = col.scroll(batch_size=batch_size, filter=cluster_filter(cluster), vectors=False, payload=[KEY])
    return any((p.get(KEY) or {}).get("peak") for batch in members for p in batch.payloads)


def _labels(col: Collection, ids: np.ndarray, cache: LabelCache, batch_size: int) -> Labels:
    """Labels of ``ids`` (``known`` where they have one): cached ones from ``cache``, the rest read and cached."""
    missing = ids[~cache.find(ids).known].tolist()
    for s in range(0, len(missing), batch_size):
        pts = col.retrieve(missing[s:s + batch_size], payload=[KEY])
        read = [(pid, Label.of(p[KEY])) for pid, p in zip(pts.ids.tolist(), pts.payloads) if p.get(KEY)]
        if read:
            cache.put(np.asarray([pid for pid, _ in read], dtype=np.int64), Labels.of([lb for _, lb in read]))
    return cache.find(ids)


def _gone(col: Collection, ids: np.ndarray) -> np.ndarray:
    """The ids that no longer exist; one count when none is gone (the usual case)."""
    if col.count(models.Filter(must=[models.HasIdCondition(has_id=ids.tolist())])) == len(ids):
        return np.empty(0, dtype=np.int64)
    return ids[~np.isin(ids, col.retrieve(ids.tolist(), vectors=False, payload=False).ids)]


def _check_cached(col: Collection, cache: LabelCache, ids: np.ndarray) -> None:
    """Drop the cached labels of ``ids`` if any of them lost its label in the store (a re-upsert
    replaced the payload); one count."""
    cached = ids[cache.find(ids).known]
    if len(cached) and col.count(models.Filter(must=[
            models.HasIdCondition(has_id=cached.tolist()),
            models.IsEmptyCondition(is_empty=models.PayloadField(key=CLUSTER_FIELD))])):
        cache.forget(cached)


def _knn_without(col: Collection, ids: np.ndarray, x: np.ndarray, k: int, skip: np.ndarray) -> Neighbours:
    """The stored points' k nearest, leaving out the points ``skip`` (copies decided with their first):
    k more are asked for, and rows that lose more than that are asked again with room for all of ``skip``."""
    if not len(skip):
        return col.knn(ids, x, k, ef=PASS_EF)
    most = col.count() - 1  # a query cannot return more than the other points
    nb, short = knn_kept(col, ids, x, k, lambda got: ~np.isin(got, skip),
                         [min(k + extra, most) for extra in (min(k, len(skip)), len(skip))], ef=PASS_EF)
    if len(short):
        raise CollectionNotReady(f"collection '{col.name}' has too few points besides copies for k={k} neighbours")
    return nb


SAME_SIM = 1e-6  # neighbours this close in similarity to a query may be copies of one vector: their vectors are read
MAX_PER_VECTOR_LIMIT = 16  # a partitioned pass asks for at most 16 k neighbours, to find k distinct vectors


def _knn_one_per_vector(col: Collection, cache: NeighbourCache, ids: np.ndarray, x: np.ndarray, groups: np.ndarray,
                        k: int, skip: np.ndarray, read_groups_of: Callable[[np.ndarray], np.ndarray],
                        filters_of: Callable[[Sequence[int]], list[models.Filter | None]]) -> Neighbours:
    """:func:`_knn_without` for a collection partitioned by a payload key (``groups``: the points' codes, and
    ``read_groups_of`` reads other points' in the same codes): each list holds one entry per distinct vector, the
    copy in the point's own group where there is one, as a full sync's lists (:func:`dedup.one_per_vector`). The
    same vector held by several values of the key (one FAQ text in every tenant's data) would otherwise fill a
    list with copies no edge may follow. Rows with fewer than k distinct vectors are asked again, with room for
    as many more as their share of copies calls for (at least twice as many, at most 16 k); a row still short
    (more than ~16 groups hold its nearest vectors) adds its own group's nearest points (``filters_of``: the filters
    of group codes, :func:`_with_own_group`), and fills its list with copies only if that is not enough."""
    most = col.count() - 1  # a query cannot return more than the other points
    limit, cap = min(k + min(k, len(skip)), most), min(MAX_PER_VECTOR_LIMIT * k + len(skip), most)
    nbr = np.empty((len(ids), k), dtype=np.int64)
    sim = np.empty((len(ids), k), dtype=np.float32)
    group_of = _GroupsRead(ids, groups, read_groups_of)

    def cut(rows: np.ndarray, lists: Neighbours, x_q: np.ndarray, of: np.ndarray,
            usable: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:func:`one_per_vector` of the points ``rows``, whose lists are rows ``of`` of ``lists`` (queries ``x_q``);
        also each row's count of usable entries."""
        vec, grp, own_vec = _vector_codes(col, cache, lists, usable, x_q, ids, x, group_of)
        vec = np.where(lists.ids[of] == ids[rows, None], -1, vec[of])  # the query's own point is another row's copy
        return (*one_per_vector(lists.ids[of], lists.sim[of], vec, grp[of], own_vec[of], groups[rows], k),
                (vec >= 0).sum(axis=1))

    vectors = unique_rows(x)  # a vector several groups' new points hold is asked for once, for all of them
    todo = np.arange(len(vectors.rep))  # distinct vectors still asked for
    while True:
        q = vectors.rep[todo]
        nb = col.knn(ids[q], x[q], limit, ef=PASS_EF)
        rows = np.flatnonzero(np.isin(vectors.inverse, todo))  # the points holding those vectors
        of = rows_of(todo, vectors.inverse[rows])  # each one's list
        got_nbr, got_sim, found, usable = cut(rows, nb, x[q], of, ~np.isin(nb.ids, skip))
        at_cap = (found < k) & (limit >= cap)
        own_k = 2 * k  # a tenant holding its vectors several times (one ticket sent thrice) needs more: 4x, to 16 k
        while at_cap.any():
            short = rows[at_cap]
            lists = _with_own_group(col, ids[short], x[short], groups[short], Neighbours(nb.ids[of[at_cap]],
                                    nb.sim[of[at_cap]]), own_k, filters_of)
            got_nbr[at_cap], got_sim[at_cap], found[at_cap], usable[at_cap] = cut(
                short, lists, x[short], np.arange(len(short)), (lists.ids >= 0) & ~np.isin(lists.ids, skip)
                & ~repeated(lists.ids))
            if own_k >= MAX_PER_VECTOR_LIMIT * k:
                break
            at_cap &= found < k
            own_k = min(4 * own_k, MAX_PER_VECTOR_LIMIT * k)
        done = (found >= k) | (limit >= cap)
        if not (usable[done] >= k).all():
            raise CollectionNotReady(f"collection '{col.name}' has too few points besides copies for k={k} neighbours")
        nbr[rows[done]], sim[rows[done]] = got_nbr[done], got_sim[done]
        if done.all():
            return Neighbours(nbr, sim)
        # room for k distinct vectors at the share of them these lists held (most rows need no third query)
        wanted = np.ceil(1.25 * limit * k / np.maximum(found[~done], 1))
        limit = min(cap, max(2 * limit, int(np.quantile(wanted, 0.9))))
        todo = np.unique(vectors.inverse[rows[~done]])


def _with_own_group(col: Collection, ids: np.ndarray, x: np.ndarray, groups: np.ndarray, lists: Neighbours, k: int,
                    filters_of: Callable[[Sequence[int]], list[models.Filter | None]]) -> Neighbours:
    """``lists`` of points ``ids`` (vectors ``x``, group codes ``groups``) with each point's k nearest in its own
    group added, most similar first (an id can be listed twice; -1 pads): copies of a vector that many groups hold
    can fill a list of any length, but a group holds each vector once or a few times. Groups without a filter
    (``filters_of`` None) add nothing."""
    extra = np.full((len(ids), k), -1, dtype=np.int64)
    extra_sim = np.full((len(ids), k), -np.inf, dtype=np.float32)
    codes, inverse = np.unique(groups, return_inverse=True)
    by_group = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    for rows, only in zip(by_group, filters_of(codes.tolist())):
        if only is None:
            continue
        try:
            nb = col.knn(ids[rows], x[rows], k, ef=PASS_EF, filter=only)
        except TooFewNeighbours:  # a group of k points or fewer (or a filtered search that missed some): all of it
            n = min(k, col.count(only) - 1)
            if n <= 0:
                continue
            nb = col.knn(ids[rows], x[rows], n, exact=True, filter=only)
        extra[rows, :nb.ids.shape[1]], extra_sim[rows, :nb.ids.shape[1]] = nb.ids, nb.sim
    nbr, sim = np.hstack([lists.ids, extra]), np.hstack([lists.sim, extra_sim])
    order = np.argsort(-sim, axis=1, kind="stable")
    return Neighbours(np.take_along_axis(nbr, order, axis=1), np.take_along_axis(sim, order, axis=1))


class _GroupsRead:
    """Group codes of points, each read once per pass (the new points' are known)."""

    def __init__(self, ids: np.ndarray, groups: np.ndarray, read: Callable[[np.ndarray], np.ndarray]):
        self.ids, self.groups, self.read = ids, groups, read

    def __call__(self, pids: np.ndarray) -> np.ndarray:
        at = rows_of(self.ids, pids)
        if (at < 0).any():
            missing = pids[at < 0]
            self.groups = np.concatenate([self.groups, self.read(missing)])
            self.ids = np.concatenate([self.ids, missing])
            at = rows_of(self.ids, pids)
        return self.groups[at]


def _vector_codes(col: Collection, cache: NeighbourCache, nb: Neighbours, usable: np.ndarray, x_rows: np.ndarray,
                  new_ids: np.ndarray, x_new: np.ndarray,
                  group_of: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes for :func:`dedup.one_per_vector` of lists ``nb`` of queries whose vectors are ``x_rows``: equal codes,
    equal vectors (-1 where not ``usable``), the entries' groups, the queries' vector codes. Only entries that
    could be copies are read (their vectors and groups): those as similar to the query as a neighbour next to
    them in the list, or as the query itself; the others get a code of their own and an unknown group."""
    with np.errstate(invalid="ignore"):  # -inf pads (_with_own_group): -inf - -inf is nan, never near
        near = np.abs(np.diff(nb.sim, axis=1)) <= SAME_SIM
    maybe = np.pad(near, ((0, 0), (1, 0))) | np.pad(near, ((0, 0), (0, 1))) | (nb.sim >= 1 - SAME_SIM)
    maybe &= usable
    pids = np.unique(nb.ids[maybe])
    vectors = np.empty((len(pids), x_rows.shape[1]), dtype=np.float32)
    have = np.zeros(len(pids), dtype=bool)
    at = rows_of(new_ids, pids)  # the new points' vectors are in hand, the others mostly cached
    have[at >= 0], vectors[at >= 0] = True, x_new[at[at >= 0]]
    cached, cached_x = cache.known_vectors(pids[~have])
    if cached.any():
        rows = np.flatnonzero(~have)[cached]
        vectors[rows], have[rows] = cached_x, True
    if not have.all():
        pts = col.retrieve(pids[~have].tolist(), vectors=True, payload=False)
        if len(pts.ids):
            got = rows_of(pids, pts.ids)
            vectors[got], have[got] = stored_unit_vectors(pts.ids, pts.vectors, col.name), True
    pids, vectors = pids[have], vectors[have]  # deleted since the query: no copy of anything
    u = unique_rows(np.concatenate([x_rows, vectors]))
    entry = rows_of(pids, nb.ids)
    maybe &= entry >= 0
    vec = len(u.inverse) + np.arange(nb.ids.size).reshape(nb.ids.shape)  # a code of its own ...
    vec[maybe] = u.inverse[len(x_rows):][entry[maybe]]  # ... or its vector's
    grp = np.full(nb.ids.shape, -1, dtype=np.int64)
    if len(pids):
        grp[maybe] = group_of(pids)[entry[maybe]]
    return np.where(usable, vec, -1), grp, u.inverse[:len(x_rows)]


def _old_copies(graph: KnnGraph, x: np.ndarray, known: np.ndarray, n_new: int,
                groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """New rows whose vector equals a labelled old row's, value for value (and of its group, with ``groups``):
    (that old row, the new rows)."""
    nbr = graph.nbr[:n_new]
    rows, cols = np.nonzero((graph.sim[:n_new] >= 1 - 1e-6) & (nbr >= n_new) & known[nbr])
    same = (x[rows] == x[nbr[rows, cols]]).all(axis=1)
    if groups is not None:
        same &= groups[rows] == groups[nbr[rows, cols]]
    rows, first = np.unique(rows[same], return_index=True)
    return nbr[rows, cols[same][first]], rows


def _score_parents(score: Callable[[np.ndarray], None], nbr: np.ndarray, link: np.ndarray, density: np.ndarray,
                   rows: np.ndarray, tau: float, rounds: int = 2) -> None:
    """Score (``score`` fills ``density``) enough neighbours of ``rows`` for the decoder's rule.

    A row's parent is its most probable link above tau to a denser neighbour, so its candidates are
    tried best link first and a row stops at the first denser one: most rows stop at their first
    (80-90% on the benchmark's data). After ``rounds`` rounds the remaining candidates of the rows
    still open (mostly density peaks, which have no denser neighbour) are scored at once.
    """
    order = np.argsort(-link, axis=1, kind="stable")  # ties by position, as decode_level's argmax
    cand = np.take_along_axis(nbr, order, axis=1)
    above = np.take_along_axis(link, order, axis=1) > tau  # a prefix of each row
    open_ = above[:, 0].copy()
    for pos in range(nbr.shape[1]):
        if not open_.any():
            return
        want = cand[open_, pos:][above[open_, pos:]] if pos == rounds else cand[open_, pos]
        want = np.unique(want[np.isnan(density[want])])
        if len(want):
            score(want)
        if pos == rounds:
            return
        open_ &= ~(density[cand[:, pos]] > density[rows])
        if pos + 1 < nbr.shape[1]:
            open_ &= above[:, pos + 1]


def incremental_pass(col: Collection, scorer: OnnxScorer, card: ModelCard, *, cache: NeighbourCache | None = None,
                     labels: LabelCache | None = None, hops: int = 1, max_new: int | None = None,
                     batch_size: int = 1024) -> PassReport:
    """Label the collection's unlabelled points (at most ``max_new`` of them) from their neighbourhood.

    ``hops`` rings of neighbours around the new points are scored with their true kNN lists; rows of
    the outermost ring see only the field (their features are approximate). On CLINC150 (9,000 ->
    11,250 points in batches of 100) 1, 2 and 3 rings gave the same Fp (0.710, 0.712, 0.707) while the
    field, and the cost, grows 2-3x per ring, hence the default of 1. Raises :class:`NeedsFullSync`
    when there is no complete full sync. ``cache`` and ``labels`` are kept between the passes of one
    daemon (:class:`NeighbourCache`, :class:`LabelCache`); without them the pass reads what it needs.
    """
    t0 = time.perf_counter()
    state = sync_state(col)
    labels = labels if labels is not None else LabelCache()
    if replay_journal(col):  # a pass failed mid-write: what was cached may be older than the store
        labels.clear()
    cache = cache if cache is not None else NeighbourCache(card.k)
    new_ids, x_new = _read_new(col, max_new, batch_size)
    report = PassReport(new=len(new_ids))
    if not len(new_ids):
        report.seconds = round(time.perf_counter() - t0, 4)
        return report
    if card.input_dim != "any" and x_new.shape[1] != card.input_dim:
        raise StoredDataError(f"collection '{col.name}' has vectors of size {x_new.shape[1]}, but model '{card.name}' "
                         f"takes size {card.input_dim}")
    # Copies among the new points (as in a full sync, qdrant_lander.dedup): the first of each vector is decided
    # with the others left out of every list, and the others take its label.
    key = state.partition_by  # the full sync's: no cluster spans two of its values
    codes: dict = {}  # one table of the key's values for every read of it in this pass
    new_groups = read_groups(col, new_ids, key, batch_size=batch_size, codes=codes) if key else None
    distinct = unique_rows(x_new, new_groups)
    leader = new_ids[distinct.rep[distinct.inverse]]
    followers = {int(f): int(lead) for f, lead in zip(new_ids.tolist(), leader.tolist()) if f != lead}
    follower_ids = np.fromiter(followers, dtype=np.int64, count=len(followers))
    new_ids, x_new = new_ids[distinct.rep], distinct.take(x_new)
    if new_groups is not None:
        new_groups = new_groups[distinct.rep]
    grouped_ids = new_ids

    def lists_of(ids: np.ndarray) -> Neighbours:
        """Lists of new points (some of ``grouped_ids``), copies left out as above; with a key, each vector once."""
        at = rows_of(grouped_ids, ids)
        if new_groups is None:
            return _knn_without(col, ids, x_new[at], card.k, follower_ids)
        return _knn_one_per_vector(col, cache, ids, x_new[at], new_groups[at], card.k, follower_ids,
                                   lambda pids: read_groups(col, pids, key, batch_size=batch_size, codes=codes),
                                   lambda wanted: group_filters(key, codes, wanted))

    nb = lists_of(new_ids)
    # Re-upserted, or met as a neighbour while it waited for its pass: a changed vector's list and every list
    # naming it at the old similarity go (also when its own list went before: its vector is still known).
    known, old_x = cache.known_vectors(new_ids)
    if known.any():
        cache.forget(new_ids[known][(old_x != x_new[known]).any(axis=1)])
    cache.add_arrivals(new_ids, x_new, nb.ids.astype(np.int64), nb.sim.astype(np.float32))

    # The receptive field; cached lists that name deleted points are dropped and the field grown again.
    for _ in range(5):
        field, gone = _Field.grow(col, cache, new_ids, hops, batch_size)
        # the outermost ring's lists reach past the field: their similarities feed its rows' features too
        gone = np.union1d(gone, _gone(col, np.union1d(field.ids, cache.lists(field.rings[-1])[0])))
        if not len(gone):
            break
        report.deleted_seen += len(gone)
        cache.forget(gone)
        labels.forget(gone)
        new_ids = new_ids[~np.isin(new_ids, gone)]  # deleted since the scroll: nothing to label
        lost = new_ids[~cache.has(new_ids)]  # lists that named a deleted point: by the same rule again, not by
        if len(lost):  # the field's plain query (which would list copies and followers)
            again = lists_of(lost)
            cache.put(lost, again.ids, again.sim, x_new[rows_of(grouped_ids, lost)])
    else:
        raise StoreError(f"points of '{col.name}' keep being deleted under the pass; run it again")
    if not len(new_ids):
        report.new, report.seconds = 0, round(time.perf_counter() - t0, 4)
        return report
    ids, n, n_new = field.ids, len(field.ids), len(field.rings[0])
    report.new, report.field = n_new, n

    graph, xv = field.graph(cache)
    nodes = node_terms(graph, peak=xv, mean=xv, size=np.ones(n, dtype=np.int64), node_mode=card.node_mode)

    # Labels of ring 1 (where new points attach and whose peaks are re-checked) and of the peaks' neighbours:
    # the old rows a pass reads labels of; the others count as unlabelled, cached or not (as in a cold pass).
    ring1_rows = np.arange(n_new, n_new + len(field.rings[1]))
    _check_cached(col, labels, ids[n_new:])
    ring1 = _labels(col, field.rings[1], labels, batch_size)
    peak_rows = ring1_rows[ring1.known & ring1.peak]
    asked = np.zeros(n, dtype=bool)
    asked[ring1_rows] = True
    if len(peak_rows):
        extra = graph.nbr[peak_rows].reshape(-1)
        extra = np.unique(extra[(extra >= n_new) & ~asked[extra]])
        _labels(col, ids[extra], labels, batch_size)
        asked[extra] = True
    lab = labels.find(ids)
    known = np.ones(n, dtype=bool)
    known[n_new:] = lab.known[n_new:] & asked[n_new:]

    # A card with tau_bias or tau_by_spread chose its tau for this collection at the full sync: reuse it (same
    # model only). Any other card's tau is its own, so a pass follows the model's current decoding (e.g. a new
    # --domain preset).
    per_dataset = card.tau_per_dataset and state.tau is not None and state.model == card.name
    tau = state.tau if per_dataset else card.tau
    # The model scores only the rows whose parent this pass decides (new points, old peaks), then the
    # densities of their possible parents (see _score_parents): the decisions equal those of scoring
    # the whole field, at a fraction of its edges. Rows left unscored have no links and an unknown
    # (NaN) density, which is never denser.
    tm = time.perf_counter()
    table = scorer.node_table(nodes.x, graph.nbr, graph.sim)
    link = np.zeros(graph.nbr.shape, dtype=np.float32)
    density = np.full(n, np.nan, dtype=np.float32)

    def score(rows: np.ndarray) -> None:
        link[rows], density[rows] = scorer.head(table, graph.nbr[rows], graph.sim[rows],
                                                edge_features(graph, nodes, rows), rows)

    decided = np.union1d(np.arange(n_new), peak_rows)
    score(decided)
    # Points that arrived after this pass began have no label yet: they cannot be parents until the next pass.
    usable = np.where(known[graph.nbr], link, 0.0)
    part = same_part = None
    if new_groups is not None:  # the new points' values as read above, in the same codes
        part = np.concatenate([new_groups[rows_of(grouped_ids, ids[:n_new])],
                               read_groups(col, ids[n_new:], key, batch_size=batch_size, codes=codes)])
        same_part = part[:, None] == part[graph.nbr]  # no parent, merge or absorption across two values of the key
        usable = np.where(same_part, usable, 0.0)
    _score_parents(score, graph.nbr[decided], usable[decided], density, decided, tau)
    report.model_seconds = round(time.perf_counter() - tm, 4)

    rule = decode_level(graph.nbr, usable, density, tau)  # the decoder's parent choice (read for `decided` rows)
    parent = np.full(n, -1, dtype=np.int64)
    parent[:n_new] = rule[:n_new]  # old points keep their labels: chains stop at them
    copy_row, copied = _old_copies(graph, xv, known, n_new, part)
    parent[copied] = copy_row  # a copy of a labelled vector takes its label, as in a full sync (qdrant_lander.dedup)
    root = forest_roots(parent)
    # Old rows: their cluster id; new rows: their tree's, provisionally ``-1 - root row`` for a new tree.
    group = lab.cluster.copy()
    group[:n_new] = np.where(root[:n_new] >= n_new, lab.cluster[root[:n_new]], -1 - root[:n_new])
    new_group = group[:n_new]

    groups = _Groups()
    for g in new_group.tolist():
        groups.find(g)
    if len(peak_rows):  # the decoder's rule re-applied to a cluster's peak on today's neighbourhood
        for q, b in zip(peak_rows.tolist(), rule[peak_rows].tolist()):
            if b >= 0:
                groups.union(int(group[q]), int(group[b]))
    # A re-upserted peak (its payload replaced, its vector kept) has no denser neighbour and would start a cluster
    # of one, leaving its old cluster without a peak that later merges start from: it rejoins the cluster named
    # after it when that cluster is among its neighbours, as its peak only when the cluster has none (a full
    # pass's stable ids can name a cluster after a member that is not its peak: one peak per cluster).
    not_peak: set[int] = set()
    for r in np.flatnonzero(root[:n_new] == np.arange(n_new)).tolist():
        pid, nbr = int(ids[r]), graph.nbr[r]
        named = known[nbr] & (lab.cluster[nbr] == pid)
        if part is not None:  # a point whose key changed does not rejoin its old value's cluster
            named &= part[nbr] == part[r]
        if named.any():
            groups.union(int(new_group[r]), pid)
            if _has_peak(col, pid, batch_size):
                not_peak.add(r)

    new_size: dict[int, int] = Counter(new_group.tolist())
    read_sizes: dict[int, int] = {}
    if card.absorb_share and state.absorb_size and state.model == card.name:  # the size the full sync resolved
        report.absorbed, read_sizes = _absorb_new(groups, group, known, graph.nbr[:n_new], usable[:n_new], new_size,
                                                  state.absorb_size, lambda clusters: _sizes(col, clusters),
                                                  None if same_part is None else same_part[:n_new])

    # One id per component: the largest old cluster keeps its id (by its stored size); a cluster this pass starts
    # names a component only when it holds no old one. Its id was never visible, and were old points relabelled
    # to it, a crash before the new points are written would leave them under an id the next pass hands
    # elsewhere (the journal replays the relabel, the new points are decided again).
    comps = groups.components()
    need = [g for members in comps.values() if len(members) > 1 for g in members if g >= 0 and g not in read_sizes]
    old_size = read_sizes | _sizes(col, need)
    inc = load_state(col)
    roots_new = sorted(g for g in new_size if g < 0)
    taken = _ids_in_use(col, [int(ids[-1 - g]) for g in roots_new])
    provisional: dict[int, int] = {}
    fresh, next_fresh = _fresh_ids(col, inc.next_fresh_id, sum(int(ids[-1 - g]) in taken for g in roots_new))
    for g in roots_new:
        pid = int(ids[-1 - g])
        if pid in taken:  # e.g. a re-upserted peak whose old cluster still has members
            pid = fresh.pop(0)
        provisional[g] = pid
    final: dict[int, int] = {}
    merges: list[tuple[int, int]] = []
    for members in comps.values():
        winner = max(members, key=lambda g: (g >= 0, old_size.get(g, 0) + new_size.get(g, 0), -abs(g)))
        win_id = winner if winner >= 0 else provisional[winner]
        for g in members:
            final[g] = win_id
            if g >= 0 and g != winner:
                merges.append((g, win_id))

    # Writes: journal, relabel merged clusters, new payloads, flush, clear the journal.
    inc = inc.model_copy(update={"pending_merges": merges, "next_fresh_id": next_fresh, "generation": state.generation})
    if merges or taken:
        col.set_meta(INCREMENTAL_META, inc.model_dump())
    for absorbed, survivor in merges:
        relabel(col, absorbed, survivor)
    levels = int(lab.depth[n_new:][known[n_new:]].max(initial=1))
    copies_of: dict[int, list[int]] = {}  # a leader deleted under the pass leaves its copies to the next one
    gone_copies = set(_gone(col, follower_ids).tolist()) if followers else set()
    for f, lead in followers.items():
        if f not in gone_copies:
            copies_of.setdefault(lead, []).append(f)
    items: list[tuple[list[int], dict]] = []
    written: list[tuple[int, Label]] = []
    for r in range(n_new):
        rt, g = int(root[r]), int(new_group[r])
        path = lab.path[rt, :lab.depth[rt]].tolist() if rt >= n_new else [provisional[g]] * levels
        value = LanderPayload(cluster=final[g], path=path, density=float(density[r]),
                              peak=rt == r and r not in not_peak and final[g] in (provisional.get(g), int(ids[r])),
                              model=card.name, generation=state.generation)
        items.append(([int(ids[r])], {KEY: value.model_dump()}))
        written.append((int(ids[r]), Label(value.cluster, value.peak, tuple(path))))
        if copies := copies_of.get(int(ids[r])):
            items.append((copies, {KEY: value.model_copy(update={"peak": False}).model_dump()}))
            written.extend((pid, Label(value.cluster, False, tuple(path))) for pid in copies)
    # Until every write is done the cache must not answer for these points: a re-upserted point's old label would
    # outlive a pass that fails after writing its new one (the next pass reads them from the store instead).
    labels.forget(np.asarray([pid for pid, _ in written], dtype=np.int64))
    for s in range(0, len(items), batch_size):
        col.set_payloads(items[s:s + batch_size])
    if merges:  # the relabels must be durable before the journal that would replay them goes
        col.flush()
    col.set_meta(INCREMENTAL_META, inc.model_copy(update={"pending_merges": []}).model_dump())
    for absorbed, survivor in merges:  # the store now holds all of this pass: so does the cache
        labels.relabel(absorbed, survivor)
    labels.put(np.asarray([pid for pid, _ in written], dtype=np.int64), Labels.of([lb for _, lb in written]))

    n_copies = sum(len(copies_of.get(int(pid), ())) for pid in new_ids.tolist())
    report.new += n_copies
    report.attached = int((root[:n_new] >= n_new).sum()) + n_copies
    report.created = sum(final[g] == provisional[g] for g in roots_new)
    report.merged = len(merges)
    report.relabelled = sum(old_size.get(g, 0) for g, _ in merges)
    report.seconds = round(time.perf_counter() - t0, 4)
    return report
