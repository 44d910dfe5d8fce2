"""Clustering an array that is not in Qdrant, with Qdrant's HNSW index for the neighbours of a large one.

``Lander.predict`` searches the level-0 neighbours exactly, in memory: the cost grows with N^2 (a million
384-d rows would take hours). Above a size, :func:`cluster_array` puts the array into a temporary embedded
store (Qdrant Edge, deleted afterwards) and runs the stages of a full sync on it without writing anything
back: the same HNSW search and decoding a collection of those vectors gets from ``qdrant-lander sync``.
"""

from __future__ import annotations

import tempfile

import numpy as np

from .decode import ClusterResult
from .lander import Lander
from .stores.edge import EdgeStore
from .sync import KnnMode, cluster_stored, import_points
from .validate import check_rows

# auto: exact while N^2 * D stays under this (50,000 x 384-d rows: 29 s on one core; benchmarks/RESULTS.md,
# session 39), so every dev set and most arrays get exactly Lander.predict's result.
EXACT_MAX_PAIR_FLOATS = 1e12
ARRAY_COLLECTION = "array"
SCANNED_ROWS = 1_000  # the store would scan so few rows anyway (no index below ~10 MB of vectors): exact, in memory


def exact_for(n: int, dim: int, knn: KnnMode) -> bool:
    """Whether ``knn`` means an exact search for an array of ``n`` rows of ``dim`` numbers."""
    return knn == "exact" or (knn == "auto" and float(n) * n * dim <= EXACT_MAX_PAIR_FLOATS)


def searches_index(shape: tuple[int, ...], knn: KnnMode) -> bool:
    """Whether :func:`cluster_array` takes an array of this shape's neighbours from an HNSW index (the CLI says so)."""
    return len(shape) == 2 and shape[0] > SCANNED_ROWS and not exact_for(shape[0], shape[1], knn)


def cluster_array(x: np.ndarray, lander: Lander, *, knn: KnnMode = "auto", batch_size: int = 1024,
                  progress: bool = True) -> ClusterResult:
    """Cluster the rows of ``x`` (any scale) as ``lander.predict`` does, with the level-0 kNN from an HNSW
    index for ``knn="index"`` (or ``"auto"`` on a large array). Labels and paths are row indices either way.
    The temporary store lives under the system's temporary directory (``TMPDIR``): 3.6 GB at its largest for a
    million 384-d rows."""
    if not searches_index(np.shape(x), knn):
        return lander.predict(x)  # which also names whatever is wrong with x
    dim = lander.card.input_dim
    check_rows(x, min_points=2, dim=None if dim == "any" else dim)  # before a store is made; import scales the rows
    with tempfile.TemporaryDirectory(prefix="qdrant-lander-knn-") as tmp, EdgeStore(tmp) as store:
        col = import_points(store, ARRAY_COLLECTION, x, batch_size=batch_size, progress=progress)
        return cluster_stored(col, lander, batch_size=batch_size, progress=progress, knn="index").result
