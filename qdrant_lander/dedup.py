"""Exact duplicate vectors: clustered once, labelled alike.

Real collections hold copies (the same ticket text sent thirty times, a photo imported twice). Left in,
a vector's copies fill its kNN list at cosine 1.0 and push its real neighbours out, so a group of
copies turns into a cluster of its own, apart from its class (CLINC150, 5% of the queries copied 30
times: Fp of the original points 0.740 -> 0.647; benchmarks/RESULTS.md). So every distinct vector is
clustered once, from a graph among distinct vectors only, and its copies take its labels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .knn import KnnGraph, first_kept, knn_graph, nearest_rows, repeated
from .validate import group_codes

if TYPE_CHECKING:  # decode uses graph_per_group
    from .decode import ClusterResult
    from .knn import DeepKnn


@dataclass(frozen=True)
class UniqueRows:
    """The distinct rows of an array: ``rep`` the first row of each (ascending), ``inverse`` each row's."""

    rep: np.ndarray  # int64 [U]
    inverse: np.ndarray  # int64 [N], x[rep[inverse]] == x

    @property
    def copies(self) -> int:
        """Rows that repeat an earlier row."""
        return len(self.inverse) - len(self.rep)

    def take(self, x: np.ndarray) -> np.ndarray:
        """The distinct rows of ``x``: ``x`` itself when none repeats (a large array is not copied)."""
        return x[self.rep] if self.copies else x

    def collapse(self, graph: KnnGraph, k: int, x: np.ndarray, known: np.ndarray | None = None) -> KnnGraph:
        """The kNN graph among distinct rows from ``graph``, whose row ``i`` lists neighbours (rows of
        ``x``, most similar first; more than ``k`` so that copies can be dropped) of row ``rep[i]``.

        Copies of the row itself and repeats of one distinct vector are dropped, and so are entries not
        ``known`` to be among the row's nearest (a deep graph's, :class:`~qdrant_lander.knn.DeepKnn`); a row
        left with fewer than ``k`` neighbours gets its exact ones among the distinct rows of ``x`` (unit length).
        """
        if not self.copies and known is None:
            return KnnGraph(graph.nbr[:, :k], graph.sim[:, :k])
        nbr = self.inverse[graph.nbr if known is None else np.where(known, graph.nbr, 0)]
        keep = ~repeated(nbr, among=known) & (nbr != np.arange(len(nbr))[:, None])
        if known is not None:
            keep &= known
        short = keep.sum(axis=1) < k
        out_nbr = np.empty((len(nbr), k), dtype=np.int64)
        out_sim = np.empty((len(nbr), k), dtype=np.float32)
        full = np.flatnonzero(~short)
        out_nbr[full], out_sim[full] = first_kept(keep[full], k, nbr[full], graph.sim[full])
        if short.any():  # e.g. a vector whose neighbourhood is one large group of copies
            rows = np.flatnonzero(short)
            exact = nearest_rows(self.take(x), rows, k)
            out_nbr[rows], out_sim[rows] = exact.nbr, exact.sim
        return KnnGraph(out_nbr, np.clip(out_sim, -1.0, 1.0))

    def expand_graph(self, graph: KnnGraph) -> KnnGraph:
        """A graph among distinct rows as one over all rows (neighbours as rows of the full array): a
        copy lists what its distinct vector lists."""
        if not self.copies:
            return graph
        return KnnGraph(self.rep[graph.nbr][self.inverse], graph.sim[self.inverse])

    def expand(self, res: ClusterResult) -> ClusterResult:
        """Clusters of the distinct rows as clusters of all rows: a copy takes its vector's cluster, path
        and density; ids stay row indices of peaks (now of the full array), and only a peak itself is one."""
        if not self.copies:
            return res
        labels = self.rep[res.labels][self.inverse]
        return replace(res, labels=labels, paths=self.rep[res.paths][self.inverse], density=res.density[self.inverse],
                       peak=labels == np.arange(len(labels)))


def regroup(graph: KnnGraph, vectors: UniqueRows, rows: UniqueRows, groups: np.ndarray) -> KnnGraph:
    """The graph among ``rows`` (distinct per vector *and* group) from ``graph`` among ``vectors`` (distinct per
    vector): a row lists its vector's neighbours, each as the row of that vector in the row's own group where there
    is one (else any row of it). Why: the same vector held by several groups (one FAQ text in every tenant's data)
    would otherwise fill a list with copies no edge may join, and those points ended up alone (10 tenants sharing 450
    queries: Fp 0.08; benchmarks/RESULTS.md, session 39). No vector in two groups: ``rows`` are ``vectors``, and
    ``graph`` is returned as it is."""
    if len(rows.rep) == len(vectors.rep):
        return graph
    g = group_codes(groups, len(rows.inverse))
    vec_of_row = vectors.inverse[rows.rep]  # each row's distinct vector
    at = copy_in_group(graph.nbr[vec_of_row], g[rows.rep][:, None], vec_of_row, g[rows.rep])
    any_row = rows.inverse[vectors.rep]  # a row holding each distinct vector
    return KnnGraph(np.where(at >= 0, at, any_row[graph.nbr[vec_of_row]]), graph.sim[vec_of_row])


def graph_per_group(x: np.ndarray, vectors: UniqueRows, groups: np.ndarray, k: int,
                    deep: DeepKnn | None = None) -> KnnGraph | None:
    """The exact kNN graph among the rows of ``x`` (unit length; at most ``k`` per list) by the rule of
    :func:`regroup`, for supernode levels: supernodes of several groups holding the same points' vectors have
    the same mean, and past ~k groups sharing them a plain list held copies only, no edge of which the decoder may
    follow (25 tenants sharing CLINC queries: 2 levels and Fp 0.80 instead of 4 and 0.91). None where no vector is
    in two groups (or one group holds a vector twice, or fewer than two vectors are distinct): the plain graph
    serves.

    ``deep``: the level's deep graph among all rows (:class:`~qdrant_lander.knn.DeepKnn`), whose entries known to be
    nearest give each distinct vector's list; only rows left short of ``k`` distinct vectors are searched again.
    Without it every distinct vector is searched (an exact search among them at every level: 77k points with 300
    shared vectors in 20 tenants took 92 s in six searches, against 21 s for the deep graph refreshed level by
    level). ``vectors``: :func:`unique_rows` of ``x``."""
    if not vectors.copies or len(vectors.rep) < 2:
        return None
    rows = unique_rows(x, groups)
    if rows.copies:
        return None
    k = min(k, len(vectors.rep) - 1)
    if deep is None:
        return regroup(knn_graph(vectors.take(x), k), vectors, rows, groups)
    at = vectors.rep
    lists = KnnGraph(deep.graph.nbr[at], deep.graph.sim[at])
    nearest = (lists.nbr >= 0) & (lists.sim >= deep.bound[at, None])  # entries known to be the row's nearest
    return regroup(vectors.collapse(lists, k, x, known=nearest), vectors, rows, groups)


def copy_in_group(vec: np.ndarray, group: np.ndarray, item_vec: np.ndarray, item_group: np.ndarray) -> np.ndarray:
    """For each wanted vector ``vec`` (codes >= 0, any shape) in group ``group`` (codes >= 0, broadcast with
    ``vec``), the first of the items (``item_vec``, ``item_group``: 1-d) holding that vector in that group; -1
    where none does. The lookup behind "a vector's copy in the row's own group": :func:`regroup`,
    :func:`one_per_vector`."""
    if not len(item_vec):
        return np.full(np.broadcast(vec, group).shape, -1, dtype=np.int64)
    n_groups = int(max(np.max(group, initial=0), item_group.max(initial=0))) + 1
    key = item_vec * n_groups + item_group  # (vector, group) of each item
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    want = vec * n_groups + group
    pos = np.minimum(np.searchsorted(sorted_key, want), len(key) - 1)
    return np.where(sorted_key[pos] == want, order[pos], -1)


def one_per_vector(nbr: np.ndarray, sim: np.ndarray, vec: np.ndarray, grp: np.ndarray, own_vec: np.ndarray,
                   own_grp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour lists of points (ids ``nbr``, similarities ``sim``, most similar first) cut to the rule of
    :func:`regroup`: one entry per distinct vector, that vector's copy in the row's own group where the lists
    hold one (else its first entry). Entries' vector codes are ``vec`` (-1: an entry to leave out; equal codes,
    equal vectors) and group codes ``grp`` (-1: unknown, never taken as a copy in a group); ``own_vec`` and
    ``own_grp`` are each row's. The row's own vector, which a full sync's list leaves out, is kept as its first
    copy in the row's group only (a labelled copy gives an incremental pass's point its label).

    Returns the first ``k`` kept entries of each row (ids, similarities) and how many each row kept: a row that
    kept fewer than ``k`` takes its first ``k`` usable entries (``vec >= 0``), distinct vectors first, in list order,
    an id already taken (the own group's copy swapped in for an earlier entry) last.
    """
    usable = vec >= 0
    own = usable & (vec == own_vec[:, None])
    own_in_group = own & (grp == own_grp[:, None])
    keep = usable & ~own & ~repeated(vec, among=usable)
    keep |= own_in_group & (np.cumsum(own_in_group, axis=1) == 1)
    known = usable & (grp >= 0)
    at = copy_in_group(vec, own_grp[:, None], vec[known], grp[known])
    swap = keep & ~own & (at >= 0)  # the row's own vector: never another row's point (that may be the row itself)
    ids = nbr.copy()
    ids[swap] = nbr[known][at[swap]]
    found = keep.sum(axis=1)
    short = found < k
    if short.any():  # its distinct entries, then its first other usable ones, back in list order
        rank = np.where(keep, 0, np.where(usable, 1 + repeated(ids), 3))  # kept ids are never repeats: listed first
        chosen = np.zeros((int(short.sum()), keep.shape[1]), dtype=bool)
        np.put_along_axis(chosen, np.argsort(rank[short], axis=1, kind="stable")[:, :k], True, axis=1)
        keep[short] = chosen
    return (*first_kept(keep, k, ids, sim), found)


HASH_BLOCK_ROWS = 1 << 14


def _hash_weights(words: int) -> np.ndarray:
    """Odd 64-bit multipliers, one per 32-bit word of a row (fixed: hashes are compared within one call)."""
    return np.random.default_rng(0).integers(0, 2**64 - 1, size=words, dtype=np.uint64, endpoint=True) | np.uint64(1)


def _first_appearance(keys: np.ndarray) -> UniqueRows:
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return UniqueRows(rep=first[order].astype(np.int64), inverse=rank[inverse.ravel()].astype(np.int64))


def _words(rows: np.ndarray) -> np.ndarray:
    """float32 rows as 32-bit words, -0.0 written as 0.0: the two are one value, and one vector."""
    return np.where(rows == NEGATIVE_ZERO, np.uint32(0), rows)


NEGATIVE_ZERO = np.uint32(0x80000000)


def unique_rows(x: np.ndarray, groups: np.ndarray | None = None) -> UniqueRows:
    """The distinct rows of ``x`` (float32 rows equal value for value are copies), in order of first appearance;
    with ``groups`` (int [N], e.g. tenants), rows of two groups are never copies of each other.

    Rows are grouped by a 64-bit hash of their bits, then every copy is compared with its group's first
    row: sorting the rows themselves took a copy of the array and more (~2 GB at a million 256-d rows,
    the peak of a sync's first stage). A collision, which the comparison would catch, falls back to that
    sort.
    """
    x = np.ascontiguousarray(x)
    words = x.reshape(len(x), -1).view(np.uint32)  # float32 rows: one word per value
    if groups is not None:  # one more word per row: the group as a dense code (< N: 31 bits, never read as -0.0)
        words = np.concatenate([words, group_codes(groups, len(x)).astype(np.uint32)[:, None]], axis=1)
    weights = _hash_weights(words.shape[1])
    h = np.empty(len(x), dtype=np.uint64)
    for s in range(0, len(x), HASH_BLOCK_ROWS):  # wraps modulo 2**64, as a hash should
        h[s:s + HASH_BLOCK_ROWS] = (_words(words[s:s + HASH_BLOCK_ROWS]).astype(np.uint64) * weights).sum(axis=1)
    u = _first_appearance(h)
    copies = np.flatnonzero(u.rep[u.inverse] != np.arange(len(x)))
    for s in range(0, len(copies), HASH_BLOCK_ROWS):
        rows = copies[s:s + HASH_BLOCK_ROWS]
        if not np.array_equal(_words(words[rows]), _words(words[u.rep[u.inverse[rows]]])):
            keys = np.ascontiguousarray(_words(words))  # -0.0 written as 0.0
            return _first_appearance(keys.view(np.dtype((np.void, keys.itemsize * keys.shape[1]))).ravel())
    return u
