"""Unsupervised baselines that LANDER has to beat, each tuned the same way on labeled train classes.

Every baseline works on L2-normalised embeddings and has a small parameter ``grid``. ``tune`` picks
the setting with the best pairwise F on the train part; the benchmark then clusters the test part
once with it. Work that does not depend on the setting (kNN graph, distance matrix, the FINCH
hierarchy) is done once per grid by ``prepare``, so tuning costs one kNN graph, not one per setting.
"""

from __future__ import annotations

import itertools
import random
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import hdbscan
import igraph as ig
import numpy as np
from pydantic import BaseModel

from benchmarks.greedy_dbscan import GreedyDBSCAN
from qdrant_lander.knn import KnnGraph, knn_graph
from qdrant_lander.metrics import score
from qdrant_lander.validate import check_embeddings

with warnings.catch_warnings():  # finch warns that pynndescent is missing; we always ask it for exact neighbours
    warnings.simplefilter("ignore")
    from finch import FINCH

Grid = dict[str, list]


class Baseline:
    """A clustering method with a parameter grid; one instance is one setting."""

    name: ClassVar[str]
    grid: ClassVar[Grid]

    def __init__(self, **params: Any):
        unknown = set(params) - set(self.grid)
        if unknown:
            raise TypeError(f"{self.name}: unknown parameters {sorted(unknown)}; known: {sorted(self.grid)}")
        self.params = {key: params.get(key, values[0]) for key, values in self.grid.items()}

    @classmethod
    def prepare(cls, x: np.ndarray, grid: Grid) -> Any:
        """Setting-independent work shared by every setting in ``grid``; by default the unit vectors."""
        return x

    def cluster(self, prepared: Any) -> np.ndarray:
        raise NotImplementedError

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        x = check_embeddings(x)
        return self.cluster(self.prepare(x, {key: [value] for key, value in self.params.items()}))


def _undirected_edges(graph: KnnGraph, k: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the first ``k`` neighbours with cosine >= threshold, one per unordered pair."""
    n = graph.n
    sim = graph.sim[:, :k]
    keep = sim >= threshold
    src = np.repeat(np.arange(n), k).reshape(n, k)[keep]
    dst = graph.nbr[:, :k][keep]
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    _, first = np.unique(lo * n + hi, return_index=True)
    return np.column_stack([lo[first], hi[first]]), sim[keep][first]


@dataclass
class _GraphCache:
    """The kNN graph at the grid's largest k, and the thresholded igraph graphs built from it so far.

    Building an igraph graph costs as much as a Leiden run, so each (k, threshold) is built once and
    reused for every resolution.
    """

    knn: KnnGraph
    built: dict[tuple[int, float], ig.Graph] = field(default_factory=dict)

    def graph(self, k: int, threshold: float) -> ig.Graph:
        key = (min(k, self.knn.k), threshold)
        if key not in self.built:
            edges, weights = _undirected_edges(self.knn, *key)
            self.built[key] = ig.Graph(n=self.knn.n, edges=edges.tolist(),
                                       edge_attrs={"weight": weights.astype(np.float64)})
        return self.built[key]


class _Leiden(Baseline):
    """Leiden on the cosine-thresholded kNN graph, edges weighted by cosine.

    Uses igraph's C implementation (``community_leiden``), which optimises the same objectives as
    leidenalg's ``RBConfigurationVertexPartition`` / ``CPMVertexPartition`` about 20x faster here, so
    a full grid is affordable. Two iterations per run, leidenalg's default.
    """

    objective: ClassVar[str]

    @classmethod
    def prepare(cls, x: np.ndarray, grid: Grid) -> _GraphCache:
        return _GraphCache(knn_graph(x, min(max(grid["k"]), len(x) - 1)))

    def cluster(self, cache: _GraphCache) -> np.ndarray:
        g = cache.graph(self.params["k"], self.params["threshold"])
        ig.set_random_number_generator(random.Random(0))  # same seed every call: reproducible runs
        part = g.community_leiden(objective_function=self.objective, weights="weight",
                                  resolution=self.params["resolution"], n_iterations=2)
        return np.asarray(part.membership, dtype=np.int64)


# Cosine scales differ a lot between encoders (text neighbours ~0.5-0.9, dlib faces ~0.9-0.98), so
# the threshold grid is dense near 1.
_THRESHOLDS = [0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97]


class LeidenModularity(_Leiden):
    """Modularity with a resolution (configuration null model): the usual community-detection baseline."""

    name = "leiden-mod"
    objective = "modularity"
    grid = {"k": [10, 20], "threshold": _THRESHOLDS, "resolution": [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]}


class LeidenCPM(_Leiden):
    """Constant Potts model: a cluster is kept when its weighted edge density beats the resolution.

    Unlike modularity the resolution does not scale with the graph's size, so a value tuned on the
    train part transfers to a test part of another size.
    """

    name = "leiden-cpm"
    objective = "CPM"
    grid = {"k": [10, 20], "threshold": _THRESHOLDS,
            "resolution": [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7]}


def noise_to_singletons(labels: np.ndarray) -> np.ndarray:
    """Give every noise point (-1) its own cluster, so that every point is clustered."""
    out = np.asarray(labels, dtype=np.int64).copy()
    noise = out < 0
    out[noise] = out.max(initial=-1) + 1 + np.arange(noise.sum())
    return out


class HDBSCAN(Baseline):
    """HDBSCAN (``hdbscan`` package) on cosine distances; noise points become singleton clusters."""

    name = "hdbscan"
    grid = {"min_cluster_size": [2, 3, 5, 10, 20, 40, 80], "min_samples": [1, 2, 5]}

    @classmethod
    def prepare(cls, x: np.ndarray, grid: Grid) -> np.ndarray:
        return np.clip(1.0 - (x @ x.T).astype(np.float64), 0.0, 2.0)

    def cluster(self, dist: np.ndarray) -> np.ndarray:
        model = hdbscan.HDBSCAN(metric="precomputed", min_cluster_size=self.params["min_cluster_size"],
                                min_samples=self.params["min_samples"])
        return noise_to_singletons(model.fit_predict(dist))


class Finch(Baseline):
    """FINCH (first-neighbour merges, parameter-free); the only choice is which partition level to use.

    Level 0 is the finest partition. When the test data yields fewer levels than the chosen one, the
    coarsest available level is used.
    """

    name = "finch"
    grid = {"level": [0, 1, 2, 3, 4, 5]}

    @classmethod
    def prepare(cls, x: np.ndarray, grid: Grid) -> np.ndarray:
        # exact first neighbours at every size (the package would switch to pynndescent above 20k)
        partitions, _, _ = FINCH(x, distance="cosine", ann_threshold=len(x) + 1, verbose=False)
        return partitions

    def cluster(self, partitions: np.ndarray) -> np.ndarray:
        return np.asarray(partitions[:, min(self.params["level"], partitions.shape[1] - 1)], dtype=np.int64)


class GreedyIncremental(Baseline):
    """Immich-style greedy one-pass DBSCAN (see ``benchmarks.greedy_dbscan``).

    Points arrive in a fixed random order (seed 0): the dev sets store each class's rows together,
    which would hand an order-dependent method its best case.
    """

    name = "greedy-dbscan"
    grid = GreedyDBSCAN.grid

    def cluster(self, x: np.ndarray) -> np.ndarray:
        order = np.random.RandomState(0).permutation(len(x))
        labels = np.empty(len(x), dtype=np.int64)
        labels[order] = GreedyDBSCAN(**self.params).fit_predict(x[order])
        return labels


BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls for cls in (LeidenModularity, LeidenCPM, HDBSCAN, Finch, GreedyIncremental)
}


class Tuned(BaseModel):
    """The setting chosen on labeled data and what it scored there."""

    params: dict[str, Any]
    fp: float
    n_settings: int


def grid_settings(grid: Grid) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]


def grid_fps(method: type[Baseline], x: np.ndarray, y: np.ndarray, grid: Grid) -> list[float]:
    """Pairwise F on ``(x, y)`` of every setting of ``grid``, in :func:`grid_settings` order."""
    prepared = method.prepare(check_embeddings(x), grid)
    return [score(y, method(**params).cluster(prepared)).fp for params in grid_settings(grid)]


def tune(method: type[Baseline], x: np.ndarray, y: np.ndarray, grid: Grid | None = None) -> Tuned:
    """Best setting of ``grid`` (default: the method's) by pairwise F on ``(x, y)``; first one wins ties."""
    grid = method.grid if grid is None else grid
    fps = grid_fps(method, x, y, grid)
    best = int(np.argmax(fps))
    return Tuned(params=grid_settings(grid)[best], fp=fps[best], n_settings=len(fps))
