"""Immich-style greedy incremental DBSCAN: the face clustering that self-hosted photo apps ship today.

Each point, in arrival order, looks at the points seen before it within ``max_distance`` (cosine
distance, 1 - cos). It joins the cluster of the nearest of them that already has a cluster; failing
that it starts a new cluster if it is a "core" point (at least ``min_faces`` points within distance,
itself included, as Immich counts its search results); otherwise it stays unassigned for good and is
reported as a singleton. Decisions are never revisited, which is what makes the method cheap per
new point and also what users complain about (merged siblings, split people, late joiners).

It is written as a stream (``partial_fit``) so the incremental benchmarks can feed the same arrival
order in batches; batching does not change the result.
"""

from __future__ import annotations

import numpy as np

from qdrant_lander.validate import check_embeddings

UNASSIGNED = -1


class GreedyDBSCAN:
    """Streaming greedy clustering; ``labels_`` holds cluster ids so far (-1 = unassigned)."""

    grid = {"max_distance": [0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6], "min_faces": [1, 2, 3, 5]}

    def __init__(self, max_distance: float = 0.5, min_faces: int = 3, *, block_rows: int = 1024):
        self.max_distance = float(max_distance)
        self.min_faces = int(min_faces)
        self.block_rows = block_rows
        self._x = np.empty((0, 0), dtype=np.float32)
        self.labels_ = np.empty(0, dtype=np.int64)
        self._n_clusters = 0

    @property
    def params(self) -> dict:
        return {"max_distance": self.max_distance, "min_faces": self.min_faces}

    def partial_fit(self, x_batch: np.ndarray) -> np.ndarray:
        """Process a batch in row order after everything seen so far; returns singleton-filled labels."""
        x_batch = check_embeddings(x_batch, min_points=1, dim=self._x.shape[1] if len(self._x) else None)
        n_old = len(self._x)
        self._x = x_batch if n_old == 0 else np.concatenate([self._x, x_batch])
        self.labels_ = np.concatenate([self.labels_, np.full(len(x_batch), UNASSIGNED, dtype=np.int64)])
        for start in range(0, len(x_batch), self.block_rows):
            stop = min(start + self.block_rows, len(x_batch))
            # similarities of this block to every point up to its own end; row i uses only columns < i
            sims = x_batch[start:stop] @ self._x[: n_old + stop].T
            for r in range(stop - start):
                self._assign(n_old + start + r, sims[r, : n_old + start + r])
        return self.labels()

    def _assign(self, i: int, sims_to_earlier: np.ndarray) -> None:
        near = np.flatnonzero(sims_to_earlier >= 1.0 - self.max_distance)
        clustered = near[self.labels_[near] != UNASSIGNED]
        if len(clustered):
            self.labels_[i] = self.labels_[clustered[np.argmax(sims_to_earlier[clustered])]]
        elif len(near) + 1 >= self.min_faces:
            self.labels_[i] = self._n_clusters
            self._n_clusters += 1

    def labels(self) -> np.ndarray:
        """Cluster ids so far, with each unassigned point as its own singleton cluster."""
        out = self.labels_.copy()
        free = out == UNASSIGNED
        out[free] = self._n_clusters + np.arange(free.sum())
        return out

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        """One pass over ``x`` in row order, from an empty state."""
        return GreedyDBSCAN(**self.params, block_rows=self.block_rows).partial_fit(x)
