"""Exact cosine kNN graphs for in-memory arrays.

Used for whole arrays (``cluster``/``eval``/training) and for the supernode levels of the hierarchy
(far fewer nodes than points, refreshed level to level: :class:`DeepKnn`). Level 0 of a Qdrant
collection comes from the store's HNSW index instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

# Similarities per block of an exact search (32 MB, and a mask of 8 MB): blocks of 2,048 rows took 4 GB
# above the inputs at N = 90k (with argpartition's int64 indices), these 38 MB, and ran 2x faster
# (benchmarks/RESULTS.md, Sync). At least MIN_BLOCK_ROWS rows, so that a block's matrix product still
# reads all of x for many rows.
BLOCK_ENTRIES = 1 << 23
MIN_BLOCK_ROWS = 64


@dataclass(frozen=True)
class KnnGraph:
    """Fixed-degree kNN graph: row i lists i's k neighbours (self excluded), most similar first.

    The fixed degree is deliberate: the model then aggregates with a gather and a reshape instead of
    scatter ops, which export to ONNX exactly and need no per-edge index bookkeeping.
    """

    nbr: np.ndarray  # int64 [N, k]
    sim: np.ndarray  # float32 [N, k], cosine similarity, descending along each row

    @property
    def n(self) -> int:
        return int(self.nbr.shape[0])

    @property
    def k(self) -> int:
        return int(self.nbr.shape[1])


def knn_graph(x: np.ndarray, k: int, *, block_entries: int = BLOCK_ENTRIES) -> KnnGraph:
    """Exact kNN of unit-length rows by blocked matrix products.

    Memory stays at about ``block_entries`` similarities whatever N is (up to ``MIN_BLOCK_ROWS x N``).
    Ties are broken by index so the result is deterministic.
    """
    n = x.shape[0]
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if n < k + 1:
        raise InputError(f"need more than k={k} points to build a kNN graph, got {n}")
    if not np.isfinite(x).all():  # a NaN similarity is never among a row's k largest: its rows would come up short
        raise InputError(f"{int((~np.isfinite(x).all(axis=1)).sum())} rows contain NaN or inf: a kNN graph needs "
                         "finite unit-length rows (check_embeddings makes them)")
    return nearest_rows(x, np.arange(n), k, block_entries=block_entries)


def nearest_rows(x: np.ndarray, rows: np.ndarray, k: int, *, block_entries: int = BLOCK_ENTRIES) -> KnnGraph:
    """The exact k nearest rows of ``x`` (unit length, more than k rows) to each of its rows ``rows``,
    self excluded, ties broken by index; the graph's row i belongs to ``rows[i]``.

    Each block holds ``rows x N`` similarities and a mask over them, so the rows per block shrink as N
    grows (see ``BLOCK_ENTRIES``)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    nbr = np.empty((len(rows), k), dtype=np.int64)
    sim = np.empty((len(rows), k), dtype=np.float32)
    block_rows = max(MIN_BLOCK_ROWS, min(2048, block_entries // x.shape[0]))
    for start in range(0, len(rows), block_rows):
        block = rows[start:start + block_rows]
        s = x[block] @ x.T
        s[np.arange(len(block)), block] = -np.inf  # exclude self
        nbr[start:start + len(block)], sim[start:start + len(block)] = top_columns(s, k)
    return KnnGraph(nbr=nbr, sim=np.clip(sim, -1.0, 1.0))


def top_columns(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The columns of the ``k`` largest entries of each row of ``s`` (at least k columns) and their values,
    largest first, ties by column.

    ``np.argpartition`` over whole rows cost as much as the matrix product that made them (0.6 s for 1,000
    rows x 30k); this reads each row twice instead: the k-th largest of ~256 column chunks' maxima is a
    floor that at least k entries reach, and only the few entries at or above it are sorted (0.13 s).
    """
    n, m = s.shape
    chunks = min(m, max(4 * k, 256))
    floor = np.maximum.reduceat(s, (np.arange(chunks) * m) // chunks, axis=1)
    floor = np.partition(floor, chunks - k, axis=1)[:, chunks - k]
    rows, cols = np.nonzero(s >= floor[:, None])
    vals = s[rows, cols]
    order = np.lexsort((-vals, rows))  # by row, then most similar first; stable, so ties keep column order
    take = np.searchsorted(rows[order], np.arange(n))[:, None] + np.arange(k)
    return cols[order][take], vals[order][take]


def rows_of(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position in ``ids`` (distinct point ids) of each entry of ``wanted`` (any shape); -1 where absent.

    Point ids are mostly small integers (0..N), so a table indexed by id serves: mapping an
    incremental pass's field lists (400k ids into 20k) took 5 ms with it, 38 ms by binary search,
    which remains for sparse ids (a table would be larger than the ids it maps)."""
    if not len(ids):
        return np.full(wanted.shape, -1, dtype=np.int64)
    lo, hi = int(ids.min()), int(ids.max())
    if lo >= 0 and hi < 8 * len(ids) + 65536:
        table = np.full(hi + 2, -1, dtype=np.int64)  # the last entry answers ids out of range
        table[ids] = np.arange(len(ids))
        return table[np.where((wanted >= 0) & (wanted <= hi), wanted, hi + 1)]
    order = np.argsort(ids, kind="stable")
    pos = np.minimum(np.searchsorted(ids[order], wanted), len(ids) - 1)
    return np.where(ids[order][pos] == wanted, order[pos], -1)


def repeated(ids: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """Entries of each row of ``ids`` that repeat an id listed earlier in that row (bool, same shape). With
    ``among`` (bool, same shape) only the entries it holds count: the others (ids >= 0 there) neither repeat nor
    are repeated."""
    if among is not None:  # each left-out entry an id of its own, below every real one
        ids = np.where(among, ids, -1 - np.arange(ids.size).reshape(ids.shape))
    by_id = np.argsort(ids, axis=1, kind="stable")  # equal ids side by side, the earlier listed first
    sorted_ids = np.take_along_axis(ids, by_id, axis=1)
    out = np.zeros(ids.shape, dtype=bool)
    np.put_along_axis(out, by_id, np.pad(sorted_ids[:, 1:] == sorted_ids[:, :-1], ((0, 0), (1, 0))), axis=1)
    return out


def first_kept(keep: np.ndarray, k: int, *lists: np.ndarray) -> tuple[np.ndarray, ...]:
    """The first ``k`` entries of each row of every array in ``lists`` where ``keep`` holds, in list order
    (every row must keep at least ``k``)."""
    cols = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return tuple(np.take_along_axis(a, cols, axis=1) for a in lists)


@dataclass(frozen=True)
class DeepKnn:
    """A kNN graph kept deeper than a level uses, so that the next level's graph can be refreshed
    from it (:func:`coarsened_knn`) instead of searched again among all supernodes.

    The top levels of a large hierarchy merge few nodes each (at a million points, ~33k supernodes
    at each of ten levels); an exact search per level made the cluster stage grow faster than N.
    Invariant: no node missing from row i's list is more similar to i than ``bound[i]``, so the
    row's entries at or above ``bound[i]`` are its true nearest, and there are at least the k a
    level uses. The entries below it are true similarities of possibly not the nearest nodes.
    """

    graph: KnnGraph
    bound: np.ndarray  # float32 [N]

    def level(self, k: int) -> KnnGraph:
        """The k nearest of each row."""
        return KnnGraph(nbr=self.graph.nbr[:, :k], sim=self.graph.sim[:, :k])


def deep_knn(x: np.ndarray, depth: int) -> DeepKnn:
    """Exact kNN of every row to ``depth`` (at most N - 1), by :func:`knn_graph`."""
    graph = knn_graph(x, depth)
    return DeepKnn(graph, _bound_after(graph.sim, x.shape[0]))


def _bound_after(sim: np.ndarray, n: int) -> np.ndarray:
    """Similarity no unlisted node exceeds, for rows listed exactly in full: -inf when they list every node."""
    if sim.shape[1] >= n - 1:
        return np.full(sim.shape[0], -np.inf, dtype=np.float32)
    return sim[:, -1].copy()


def coarsened_knn(prev: DeepKnn, node_map: np.ndarray, x: np.ndarray, k: int) -> DeepKnn:
    """The next level's deep graph, after nodes ``i`` of ``prev`` became ``node_map[i]`` with unit vectors ``x``.

    A node that took no other node keeps its vector, so its similarity to every other such node is
    unchanged and its list only loses the nodes that merged and gains the merged ones' new vectors
    (one product with those). Rows left with fewer than ``k`` entries known to be nearest, and the
    merged nodes' own rows, are searched again exactly; when that is most rows, the whole level is.
    The result's first k columns equal :func:`knn_graph` on ``x`` up to ties and rounding.
    """
    n = x.shape[0]
    depth = min(prev.graph.k, n - 1)
    members = np.bincount(node_map, minlength=n)
    merged = np.flatnonzero(members > 1)
    kept_old = np.flatnonzero(members[node_map] == 1)  # old rows whose node stands alone at the next level
    if depth <= k or depth == n - 1 or 2 * len(merged) > n:
        return deep_knn(x, depth)
    kept_new = node_map[kept_old]
    # each kept row's entries that name kept nodes, renamed, with their (unchanged) similarities
    old_nbr = prev.graph.nbr[kept_old]
    valid = (old_nbr >= 0) & (members[node_map[old_nbr]] == 1)  # -1: no entry (a row short of candidates)
    cand_nbr = np.where(valid, node_map[old_nbr], -1)
    cand_sim = np.where(valid, prev.graph.sim[kept_old], -np.inf).astype(np.float32)
    nbr = np.empty((n, depth), dtype=np.int64)
    sim = np.empty((n, depth), dtype=np.float32)
    known = np.zeros(n, dtype=np.int64)  # leading entries of each row known to be its nearest
    bound = np.full(n, np.inf, dtype=np.float32)
    xm = np.ascontiguousarray(x[merged], dtype=np.float32)
    block_rows = max(MIN_BLOCK_ROWS, BLOCK_ENTRIES // (len(merged) + depth))
    for start in range(0, len(kept_old), block_rows):
        rows = slice(start, start + block_rows)
        m = len(kept_new[rows])
        # a last (-1, -inf) column: every row has a candidate past its depth
        ids = np.concatenate([cand_nbr[rows], np.broadcast_to(merged, (m, len(merged))), np.full((m, 1), -1)], axis=1)
        s = np.concatenate([cand_sim[rows], x[kept_new[rows]] @ xm.T, np.full((m, 1), -np.inf, np.float32)], axis=1)
        cols, top_sim = top_columns(s, depth + 1)
        top_ids = np.take_along_axis(ids, cols, axis=1)
        order = np.lexsort((top_ids, -top_sim), axis=1)  # most similar first, ties by node
        top_ids, top_sim = np.take_along_axis(top_ids, order, axis=1), np.take_along_axis(top_sim, order, axis=1)
        # nothing missing from the list beats the old bound, nor the best candidate it had no room for
        b = np.maximum(prev.bound[kept_old[rows]], top_sim[:, depth])
        nbr[kept_new[rows]], sim[kept_new[rows]] = top_ids[:, :depth], top_sim[:, :depth]
        known[kept_new[rows]] = (top_sim[:, :depth] >= b[:, None]).sum(axis=1)
        bound[kept_new[rows]] = b
    again = np.flatnonzero(known < k)  # the merged nodes' rows (none known) and rows short of k
    if 2 * len(again) > n:
        return deep_knn(x, depth)
    if len(again):
        fresh = nearest_rows(x, again, depth)
        nbr[again], sim[again], bound[again] = fresh.nbr, fresh.sim, _bound_after(fresh.sim, n)
    return DeepKnn(KnnGraph(nbr=nbr, sim=np.clip(sim, -1.0, 1.0)), bound)
