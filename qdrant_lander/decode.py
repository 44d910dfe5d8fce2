"""Decoding link and density predictions into a hierarchy of clusters (Hi-LANDER).

One level: node i keeps its best link to a *denser* neighbour whose link probability beats tau; the
kept edges form a forest whose roots ("peaks") name the clusters. Each cluster then becomes a
supernode (peak embedding, member-mean embedding, size), a kNN graph is built among supernodes and
the same scorer runs again, until nothing merges.

Above level 0 one wrong parent edge would glue two whole clusters, so a supernode may follow an edge
only when enough of the *points'* strong level-0 links (link > tau) run between the two supernodes
(``min_support`` per point of the smaller one): a merge needs many agreeing point links, not one.

The decoder is scorer-agnostic: the ONNX runtime, the torch trainer and a ground-truth scorer (to
build training levels) all drive the same code, so training sees exactly the levels we decode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from .features import LevelInputs, NodeMode, level_inputs
from .knn import KnnGraph, knn_graph

Scorer = Callable[[LevelInputs], tuple[np.ndarray, np.ndarray]]
"""Maps one level's inputs to (link probability float32 [N, k], density float32 [N])."""


class DecodeSettings(BaseModel):
    """How predictions become clusters. Chosen at training time on held-out classes and stored in the
    model card (which extends this), so users never tune them."""

    node_mode: NodeMode
    k: int = 10
    tau: float = 0.5
    max_levels: int = 10
    min_merge_ratio: float = Field(0.0, description="Early stop: stop after a level where fewer nodes merged")
    min_support: float = Field(0.0, description="Strong level-0 links needed per point of the smaller supernode "
                                                "to merge two supernodes (0 = the model's edge alone decides)")


@dataclass(frozen=True)
class ClusterResult:
    """Clusters of N points. Cluster and supernode ids are the row index of their peak point."""

    labels: np.ndarray  # int64 [N]: final cluster = peak point of the top-level supernode
    paths: np.ndarray  # int64 [N, L]: supernode id of each point after each decoded level
    density: np.ndarray  # float32 [N]: predicted level-0 density
    peak: np.ndarray  # bool [N]: the point is the peak of its final cluster

    @property
    def n_levels(self) -> int:
        return int(self.paths.shape[1])

    @property
    def n_clusters(self) -> int:
        return int(np.unique(self.labels).size)


@dataclass(frozen=True)
class LevelStep:
    """One decoded level: the model's inputs and outputs and the forest read from them."""

    inputs: LevelInputs
    link: np.ndarray  # float32 [n, k]
    density: np.ndarray  # float32 [n]
    parent: np.ndarray  # int64 [n], -1 for peaks
    root: np.ndarray  # int64 [n], the peak each node ends at


def decode_level(nbr: np.ndarray, link: np.ndarray, density: np.ndarray, tau: float) -> np.ndarray:
    """Parent of each node: its most probable link to a denser neighbour above tau, else -1.

    Parents are strictly denser, so following them can never cycle.
    """
    ok = (density[nbr] > density[:, None]) & (link > tau)
    best = np.argmax(np.where(ok, link, -np.inf), axis=1)
    rows = np.arange(nbr.shape[0])
    return np.where(ok[rows, best], nbr[rows, best], -1).astype(np.int64)


def forest_roots(parent: np.ndarray) -> np.ndarray:
    """Root of every node in a parent forest, by pointer jumping (log depth rounds)."""
    root = np.where(parent < 0, np.arange(parent.size), parent)
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _pair_key(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(a, b) * n + np.maximum(a, b)


def link_support(src: np.ndarray, dst: np.ndarray, nbr: np.ndarray) -> np.ndarray:
    """For each edge (i, nbr[i, j]) of a supernode graph: how many point links (src -> dst, already
    mapped to supernode ids) run between the two supernodes, either way. int64 [n, k]."""
    n = nbr.shape[0]
    across = src != dst
    keys, counts = np.unique(_pair_key(src[across], dst[across], n), return_counts=True)
    if keys.size == 0:
        return np.zeros(nbr.shape, dtype=np.int64)
    query = _pair_key(np.arange(n)[:, None], nbr, n)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return np.where(keys[pos] == query, counts[pos], 0)


def hierarchy_levels(vectors: np.ndarray, graph: KnnGraph, scorer: Scorer,
                     settings: DecodeSettings) -> Iterator[tuple[LevelStep, np.ndarray]]:
    """Decode level after level; yield each step with the node each original point sits in there.

    Level 0 uses ``graph`` as given (e.g. fetched from Qdrant's HNSW index); later levels build an
    exact kNN graph among supernodes on their unit-length member means. Stops when no edge
    survives, when fewer than ``min_merge_ratio`` of the nodes merged (early stop, after applying
    that level), when fewer than two supernodes remain, or after ``max_levels`` levels.
    """
    s = settings
    n = vectors.shape[0]
    node_of_point = np.arange(n)
    peak_vec, mean_vec = vectors, vectors
    size = np.ones(n, dtype=np.int64)
    peak_index = np.arange(n, dtype=np.int64)
    for level in range(s.max_levels):
        inputs = level_inputs(graph, peak=peak_vec, mean=mean_vec, size=size, peak_index=peak_index,
                              node_mode=s.node_mode)
        link, density = scorer(inputs)
        usable = link
        if level == 0:
            strong = link > s.tau
            src, dst = np.nonzero(strong)[0], inputs.nbr[strong]
        elif s.min_support > 0:
            support = link_support(node_of_point[src], node_of_point[dst], inputs.nbr)
            usable = np.where(support >= s.min_support * np.minimum(size[:, None], size[inputs.nbr]), link, 0)
        parent = decode_level(inputs.nbr, usable, density, s.tau)
        root = forest_roots(parent)
        merged = int((parent >= 0).sum())
        yield LevelStep(inputs, link, density, parent, root), node_of_point
        roots, node_map = np.unique(root, return_inverse=True)
        node_of_point = node_map[node_of_point]
        if merged == 0 or merged < s.min_merge_ratio * len(parent) or roots.size < 2 or level + 1 == s.max_levels:
            return
        order = np.argsort(node_map, kind="stable")  # members of each new node side by side: one reduceat
        starts = np.searchsorted(node_map[order], np.arange(roots.size))
        weighted = np.add.reduceat(mean_vec[order] * size[order, None].astype(np.float64), starts, axis=0)
        size = np.bincount(node_map, weights=size, minlength=roots.size).astype(np.int64)
        mean_vec = _unit(weighted).astype(np.float32)
        peak_vec, peak_index = peak_vec[roots], peak_index[roots]
        graph = knn_graph(mean_vec, min(s.k, roots.size - 1))


def cluster_hierarchy(vectors: np.ndarray, graph: KnnGraph, scorer: Scorer, settings: DecodeSettings) -> ClusterResult:
    """Cluster unit-length ``vectors`` given their level-0 kNN graph; see :func:`hierarchy_levels`."""
    paths: list[np.ndarray] = []
    density0: np.ndarray | None = None
    for step, node_of_point in hierarchy_levels(vectors, graph, scorer, settings):
        if density0 is None:
            density0 = step.density.astype(np.float32)
        paths.append(step.inputs.peak_index[step.root][node_of_point])
    path_arr = np.stack(paths, axis=1)
    labels = path_arr[:, -1]
    return ClusterResult(labels=labels, paths=path_arr, density=density0,
                         peak=labels == np.arange(vectors.shape[0]))

