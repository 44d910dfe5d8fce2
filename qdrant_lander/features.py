"""Model inputs for one level of the hierarchy, computed in numpy.

Training (torch) and serving (onnxruntime) both call :func:`level_inputs`, so the model sees exactly
the same features in both places. Edge features describe the kNN *structure* (similarities, ranks,
shared neighbours) rather than absolute coordinates: a head that reads coordinates memorises the
training classes' regions and fails on unseen classes (shared/design/METHOD.md, prototype notes).

Every similarity-valued feature is standardised by the mean and spread of the level's own kNN
similarities: encoders put their cosines on very different scales (faces 0.8-1.0, text 0.2-0.9), and
on raw cosines one set of weights needs a different tau per encoder (benchmarks/RESULTS.md, "Similarity
scale"). Ranks, overlaps and sizes are scale-free already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .knn import KnnGraph
from .validate import row_norms

NodeMode = Literal["structure", "embedding"]

EDGE_FEATURES: tuple[str, ...] = (
    "sim",
    "rank_in_i",  # position of j in i's list, 0 = nearest, 1 = k-th
    "rank_in_j",  # position of i in j's list, 1 when absent
    "mutual",
    "jaccard",  # shared neighbours of i and j (each list including the node itself)
    "sim_minus_mean_i",
    "sim_minus_mean_j",
    "sim_minus_first_i",
    "sim_minus_first_j",
    "sim_minus_kth_i",
    "sim_minus_kth_j",
    "log_size_i",
    "log_size_j",
    "j_to_nbrs_of_i",  # mean cosine of j to i's other neighbours: does j sit inside i's neighbourhood?
    "i_to_nbrs_of_j",  # mean cosine of i to j's neighbours (i itself counts 1 when it is in j's list)
    "j_to_nbrs_of_i_minus_mean_i",
    "i_to_nbrs_of_j_minus_mean_j",
    "centroid_cos",  # cosine of the two neighbourhood centroids (a smoothed, dimension-free same-class cue)
    "centroid_cos_minus_sim",
)

MIN_SPREAD = 1e-3  # a level whose similarities are (nearly) all equal is not stretched beyond this

STRUCTURE_NODE_FEATURES: tuple[str, ...] = ("mean_sim", "first_sim", "kth_sim", "std_sim", "log_size",
                                            "centroid_norm")


def node_width(node_mode: NodeMode, dim: int) -> int:
    """Width of the model's node input ``x``: the structure features, or a node's peak and mean embeddings."""
    return len(STRUCTURE_NODE_FEATURES) if node_mode == "structure" else 2 * dim


@dataclass(frozen=True)
class LevelInputs:
    """Everything the model reads for one level, plus bookkeeping the decoder needs.

    ``x``, ``nbr``, ``sim`` and ``edge_attr`` are the model's inputs; edge (i, m) is the link between
    node i and its m-th neighbour ``nbr[i, m]``. ``peak_index`` maps each node to its peak point in
    the original array and ``size`` counts the points under it; neither is fed to the model.
    """

    x: np.ndarray  # float32 [N, Dn]
    nbr: np.ndarray  # int64 [N, k]
    sim: np.ndarray  # float32 [N, k]
    edge_attr: np.ndarray  # float32 [N, k, Fe]
    peak_index: np.ndarray  # int64 [N]
    size: np.ndarray  # int64 [N]


def _edge_keys(nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every edge (i, nbr[i, m]) as the key i * N + nbr[i, m], sorted, with each key's flat position
    (whose remainder by k is its rank m): what :func:`_reverse_rank` searches."""
    n = nbr.shape[0]
    own = (np.arange(n)[:, None] * n + nbr).reshape(-1)
    order = np.argsort(own)
    return own[order], order


def _reverse_rank(nbr: np.ndarray, edge_keys: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Rank of i in j's list for every edge (i, m) of ``rows``, j = nbr[i, m]; k when i is not in j's list."""
    n, k = nbr.shape
    sorted_keys, order = edge_keys
    keys = nbr[rows].reshape(-1) * n + np.repeat(rows, k)  # edge seen from j: (j, i)
    # searched in sorted order, each search starts near the last in memory: 7.7x faster on a 1M-node graph
    # (100k rows, 3.09 -> 0.40 s; RESULTS.md, session 38)
    by_key = np.argsort(keys)
    pos = np.empty_like(by_key)
    pos[by_key] = np.minimum(np.searchsorted(sorted_keys, keys[by_key]), sorted_keys.size - 1)
    rank = np.where(sorted_keys[pos] == keys, order[pos] % k, k)
    return rank.reshape(len(rows), k)


def _jaccard(nbr: np.ndarray, rows: np.ndarray, cells: int = 1 << 24) -> np.ndarray:
    """|N+(i) & N+(j)| / |N+(i) | N+(j)| for the edges of ``rows``, with N+(v) = v's list plus v itself.

    Each block of rows marks its own N+ in a ``[rows, N]`` boolean table (``cells`` bytes at most)
    and counts the marked members of each neighbour's N+: one lookup per probe instead of a binary
    search (5x faster than searching sorted keys on a 6k-node field, 3x on a 100k graph).
    """
    n, k = nbr.shape
    full = np.concatenate([np.arange(n)[:, None], nbr], axis=1)  # [N, k+1], no duplicates per row
    out = np.empty((len(rows), k), dtype=np.float32)
    step = max(1, cells // n)
    mark = np.zeros(min(step, len(rows)) * n, dtype=bool)
    for s in range(0, len(rows), step):
        block = rows[s:s + step]
        base = (np.arange(len(block)) * n)[:, None]
        own = base + full[block]
        mark[own] = True
        inter = mark[base[:, :, None] + full[nbr[block]]].sum(axis=2)
        mark[own] = False
        out[s:s + len(block)] = inter / (2 * (k + 1) - inter)
    return out


def _centroids(vectors: np.ndarray, nbr: np.ndarray, block_rows: int = 2048) -> np.ndarray:
    """c_i = mean of i's neighbours' vectors, in row blocks (memory ``block_rows x D``).

    One neighbour column at a time: summing ``k`` gathered ``[rows, D]`` slabs is ~4x faster than
    averaging a gathered ``[rows, k, D]`` block (RESULTS.md, "Incremental")."""
    c = np.empty_like(vectors)
    for s in range(0, len(nbr), block_rows):
        block = nbr[s:s + block_rows]
        acc = np.take(vectors, block[:, 0], axis=0)
        for m in range(1, block.shape[1]):
            acc += np.take(vectors, block[:, m], axis=0)
        c[s:s + block_rows] = acc / block.shape[1]
    return c


def _neighbourhood_terms(nodes: NodeTerms, nbr: np.ndarray, rows: np.ndarray,
                         block_rows: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosines between nodes and neighbourhood centroids for the edges of ``rows``.

    All are linear in c, so they cost O(R k D) (no k x k similarity matrices) and read only cosines,
    never coordinates: the features stay dimension-free. Returns (j to i's other neighbours,
    i to j's neighbours, cosine of the centroids) per edge.
    """
    v, c, k = nodes.vectors, nodes.centroid, nbr.shape[1]
    j_dot_ci, i_in_j, centroid_cos = (np.empty((len(rows), k), dtype=np.float32) for _ in range(3))
    for s in range(0, len(rows), block_rows):
        block, part = rows[s:s + block_rows], slice(s, s + block_rows)
        vi, ci = v[block], c[block]
        for m in range(k):  # a column at a time, as in _centroids (2x faster than batched matmuls)
            vj, cj = np.take(v, nbr[block, m], axis=0), np.take(c, nbr[block, m], axis=0)
            j_dot_ci[part, m] = np.einsum("nd,nd->n", vj, ci)  # x_j . c_i, includes x_j . x_j = 1 once
            i_in_j[part, m] = np.einsum("nd,nd->n", cj, vi)
            centroid_cos[part, m] = np.einsum("nd,nd->n", cj, ci)
    centroid_cos /= np.maximum(nodes.c_norm[nbr[rows]] * nodes.c_norm[rows, None], 1e-12)
    j_in_i = (k * j_dot_ci - 1.0) / (k - 1) if k > 1 else np.zeros_like(j_dot_ci)
    return j_in_i, i_in_j, centroid_cos


@dataclass(frozen=True)
class NodeTerms:
    """Per-node quantities of one level: the model's node input ``x`` and what the edge features read
    (plus the level's sorted edge keys, so rows scored in several calls share one sort).

    Split from the edge features so that a caller who needs the links of a few rows only (an
    incremental pass) computes every node's input but the edges of those rows alone.
    """

    x: np.ndarray  # float32 [N, Dn], the model's node input
    vectors: np.ndarray  # float32 [N, D], unit member-mean embeddings
    centroid: np.ndarray  # float32 [N, D], mean of each node's neighbours' vectors
    c_norm: np.ndarray  # [N]
    mean_sim: np.ndarray  # [N]
    first: np.ndarray  # [N]
    kth: np.ndarray  # [N]
    log_size: np.ndarray  # [N]
    centre: float  # mean of the level's similarities
    spread: float  # their standard deviation (at least MIN_SPREAD)
    edge_keys: tuple[np.ndarray, np.ndarray]  # _edge_keys of the level's graph


def node_terms(graph: KnnGraph, *, peak: np.ndarray, mean: np.ndarray, size: np.ndarray,
               node_mode: NodeMode) -> NodeTerms:
    """Node inputs of one level; see :func:`level_inputs` for the arguments."""
    sim = graph.sim.astype(np.float32)
    centre, spread = float(sim.mean()), max(float(sim.std()), MIN_SPREAD)
    mean_sim, first, kth = sim.mean(axis=1), sim[:, 0], sim[:, -1]
    log_size = np.log(size.astype(np.float32))
    v = np.ascontiguousarray(mean, dtype=np.float32)
    c = _centroids(v, graph.nbr)
    c_norm = row_norms(c)
    if node_mode == "structure":
        x = np.stack([(mean_sim - centre) / spread, (first - centre) / spread, (kth - centre) / spread,
                      sim.std(axis=1) / spread, log_size, c_norm], axis=1)
    else:
        x = np.concatenate([peak, mean], axis=1)
    return NodeTerms(np.ascontiguousarray(x, dtype=np.float32), v, c, c_norm, mean_sim, first, kth, log_size,
                     centre, spread, _edge_keys(graph.nbr))


def edge_features(graph: KnnGraph, nodes: NodeTerms, rows: np.ndarray | None = None) -> np.ndarray:
    """Edge features ``[R, k, Fe]`` (:data:`EDGE_FEATURES`) of the edges of ``rows`` (default: all)."""
    nbr = graph.nbr
    n, k = nbr.shape
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    sim, nb = graph.sim[rows].astype(np.float32), nbr[rows]
    centre, spread = nodes.centre, nodes.spread
    rank_ji = _reverse_rank(nbr, nodes.edge_keys, rows)
    j_in_i, i_in_j, centroid_cos = _neighbourhood_terms(nodes, nbr, rows)
    mean_sim, first, kth, log_size = nodes.mean_sim, nodes.first, nodes.kth, nodes.log_size
    r = len(rows)

    def level(v: np.ndarray) -> np.ndarray:  # a similarity on the level's standard scale
        return (v - centre) / spread

    def columns():  # one [R, k] column at a time, written straight into the output (bounded memory)
        yield level(sim)
        yield np.broadcast_to(np.arange(k, dtype=np.float32) / max(k - 1, 1), (r, k))
        yield np.minimum(rank_ji, k - 1) / max(k - 1, 1) + (rank_ji == k)
        yield (rank_ji < k).astype(np.float32)
        yield _jaccard(nbr, rows)
        yield (sim - mean_sim[rows, None]) / spread
        yield (sim - mean_sim[nb]) / spread
        yield (sim - first[rows, None]) / spread
        yield (sim - first[nb]) / spread
        yield (sim - kth[rows, None]) / spread
        yield (sim - kth[nb]) / spread
        yield np.broadcast_to(log_size[rows, None], (r, k))
        yield log_size[nb]
        yield level(j_in_i)
        yield level(i_in_j)
        yield (j_in_i - mean_sim[rows, None]) / spread
        yield (i_in_j - mean_sim[nb]) / spread
        yield level(centroid_cos)
        yield (centroid_cos - sim) / spread

    out = np.empty((r, k, len(EDGE_FEATURES)), dtype=np.float32)
    for f, column in enumerate(columns()):
        out[:, :, f] = column
    return out


def level_inputs(
    graph: KnnGraph,
    *,
    peak: np.ndarray,
    mean: np.ndarray,
    size: np.ndarray,
    peak_index: np.ndarray,
    node_mode: NodeMode,
) -> LevelInputs:
    """Build the model inputs for one level.

    ``peak`` and ``mean`` are the unit-length peak and member-mean embeddings of each node (equal at
    level 0). ``node_mode="structure"`` gives dimension-free node features (the universal model);
    ``"embedding"`` gives the paper's ``peak || mean`` node input.
    """
    nodes = node_terms(graph, peak=peak, mean=mean, size=size, node_mode=node_mode)
    return level_inputs_from(graph, nodes, edge_attr=edge_features(graph, nodes), peak_index=peak_index, size=size)


def level_inputs_from(graph: KnnGraph, nodes: NodeTerms, *, edge_attr: np.ndarray, peak_index: np.ndarray,
                      size: np.ndarray) -> LevelInputs:
    """One level's inputs from its node terms and the edge features given (empty ``[N, k, 0]`` where a
    caller builds them a block of rows at a time instead: :func:`qdrant_lander.decode.score_level0`)."""
    return LevelInputs(
        x=nodes.x,
        nbr=np.ascontiguousarray(graph.nbr, dtype=np.int64),
        sim=np.ascontiguousarray(graph.sim, dtype=np.float32),
        edge_attr=edge_attr,
        peak_index=np.asarray(peak_index, dtype=np.int64),
        size=np.asarray(size, dtype=np.int64),
    )
