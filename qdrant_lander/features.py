"""Model inputs for one level of the hierarchy, computed in numpy.

Training (torch) and serving (onnxruntime) both call :func:`level_inputs`, so the model sees exactly
the same features in both places. Edge features describe the kNN *structure* (similarities, ranks,
shared neighbours) rather than absolute coordinates: a head that reads coordinates memorises the
training classes' regions and fails on unseen classes (METHOD.md, prototype notes).

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


def _reverse_rank(nbr: np.ndarray) -> np.ndarray:
    """Rank of i in j's list for every edge (i, m), j = nbr[i, m]; k when i is not in j's list."""
    n, k = nbr.shape
    keys = nbr.reshape(-1) * n + np.repeat(np.arange(n), k)  # edge seen from j: (j, i)
    own = np.arange(n)[:, None] * n + nbr  # (i, nbr[i, m]) with its rank m
    order = np.argsort(own.reshape(-1))
    sorted_keys = own.reshape(-1)[order]
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, sorted_keys.size - 1)
    found = sorted_keys[pos] == keys
    rank = np.where(found, order[pos] % k, k)
    return rank.reshape(n, k)


def _jaccard(nbr: np.ndarray, block_rows: int = 65536) -> np.ndarray:
    """|N+(i) & N+(j)| / |N+(i) | N+(j)| with N+(v) = v's list plus v itself.

    Rows go in blocks: the probes are ``[rows, k, k+1]`` integers, gigabytes at a million nodes.
    """
    n, k = nbr.shape
    full = np.concatenate([np.arange(n)[:, None], nbr], axis=1)  # [N, k+1], no duplicates per row
    keys = np.sort((np.arange(n)[:, None] * n + full).reshape(-1))
    out = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, block_rows):
        rows = nbr[s:s + block_rows]
        probe = np.arange(s, s + len(rows))[:, None, None] * n + full[rows]
        pos = np.minimum(np.searchsorted(keys, probe), keys.size - 1)
        inter = (keys[pos] == probe).sum(axis=2)
        out[s:s + len(rows)] = inter / (2 * (k + 1) - inter)
    return out


def _neighbourhood_terms(vectors: np.ndarray, nbr: np.ndarray, block_rows: int = 2048) -> tuple[np.ndarray, ...]:
    """Cosines between nodes and neighbourhood centroids c_i = mean of i's neighbours' vectors.

    All are linear in c, so they cost O(N k D) (no k x k similarity matrices) and read only cosines,
    never coordinates: the features stay dimension-free. Returns (j to i's other neighbours,
    i to j's neighbours, cosine of the centroids) per edge and the centroid norm per node. Rows go
    in blocks so memory stays at ``block_rows x k x D`` whatever N is.
    """
    n, k = nbr.shape
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    c = np.empty_like(v)
    j_dot_ci = np.empty((n, k), dtype=np.float32)  # x_j . c_i, includes x_j . x_j = 1 once
    for s in range(0, n, block_rows):
        vb = v[nbr[s:s + block_rows]]
        c[s:s + block_rows] = vb.mean(axis=1)
        j_dot_ci[s:s + block_rows] = np.matmul(vb, c[s:s + block_rows, :, None])[..., 0]
    c_norm = np.linalg.norm(c, axis=1)
    i_in_j, centroid_cos = np.empty((n, k), dtype=np.float32), np.empty((n, k), dtype=np.float32)
    for s in range(0, n, block_rows):
        cb = c[nbr[s:s + block_rows]]
        i_in_j[s:s + block_rows] = np.matmul(cb, v[s:s + block_rows, :, None])[..., 0]
        centroid_cos[s:s + block_rows] = np.matmul(cb, c[s:s + block_rows, :, None])[..., 0]
    centroid_cos /= np.maximum(c_norm[nbr] * c_norm[:, None], 1e-12)
    j_in_i = (k * j_dot_ci - 1.0) / (k - 1) if k > 1 else np.zeros_like(j_dot_ci)
    return j_in_i, i_in_j, centroid_cos, c_norm


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
    nbr, sim = graph.nbr, graph.sim.astype(np.float32)
    n, k = nbr.shape
    centre, spread = float(sim.mean()), max(float(sim.std()), MIN_SPREAD)

    def level(v: np.ndarray) -> np.ndarray:  # a similarity on the level's standard scale
        return (v - centre) / spread

    mean_sim = sim.mean(axis=1)
    first, kth = sim[:, 0], sim[:, -1]
    log_size = np.log(size.astype(np.float32))
    rank_ij = np.broadcast_to(np.arange(k, dtype=np.float32) / max(k - 1, 1), (n, k))
    rank_ji = _reverse_rank(nbr)
    j_in_i, i_in_j, centroid_cos, c_norm = _neighbourhood_terms(mean, nbr)
    def columns():  # one [N, k] column at a time, written straight into edge_attr (bounded memory)
        yield level(sim)
        yield rank_ij
        yield np.minimum(rank_ji, k - 1) / max(k - 1, 1) + (rank_ji == k)
        yield (rank_ji < k).astype(np.float32)
        yield _jaccard(nbr)
        yield (sim - mean_sim[:, None]) / spread
        yield (sim - mean_sim[nbr]) / spread
        yield (sim - first[:, None]) / spread
        yield (sim - first[nbr]) / spread
        yield (sim - kth[:, None]) / spread
        yield (sim - kth[nbr]) / spread
        yield np.broadcast_to(log_size[:, None], (n, k))
        yield log_size[nbr]
        yield level(j_in_i)
        yield level(i_in_j)
        yield (j_in_i - mean_sim[:, None]) / spread
        yield (i_in_j - mean_sim[nbr]) / spread
        yield level(centroid_cos)
        yield (centroid_cos - sim) / spread

    edge_attr = np.empty((n, k, len(EDGE_FEATURES)), dtype=np.float32)
    for f, column in enumerate(columns()):
        edge_attr[:, :, f] = column
    if node_mode == "structure":
        x = np.stack([level(mean_sim), level(first), level(kth), sim.std(axis=1) / spread, log_size, c_norm], axis=1)
    else:
        x = np.concatenate([peak, mean], axis=1)
    return LevelInputs(
        x=np.ascontiguousarray(x, dtype=np.float32),
        nbr=np.ascontiguousarray(nbr, dtype=np.int64),
        sim=np.ascontiguousarray(sim),
        edge_attr=np.ascontiguousarray(edge_attr),
        peak_index=np.asarray(peak_index, dtype=np.int64),
        size=np.asarray(size, dtype=np.int64),
    )
