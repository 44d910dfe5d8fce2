"""What a long-lived daemon keeps between incremental passes: kNN lists, unit vectors and labels of stored
points, in arrays with one row per point.

A pass looks up its whole receptive field (~16k point ids per 1,000 new points at 100k) several times: in
the kNN lists, the vectors, the labels. Held as arrays behind one sorted id index (:class:`RowIndex`), each
lookup is a handful of numpy calls instead of a Python dict call per id, which cost ~50 ms of a ~0.45 s pass
at 100k points (benchmarks/RESULTS.md, session 15).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from pydantic import ValidationError

from .errors import StoredDataError
from .knn import KnnGraph, repeated
from .payload import KEY, LanderPayload
from .stores.base import Collection
from .sync import scroll_lander, stored_unit_vectors


def as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    return ids.astype(np.int64, copy=False) if isinstance(ids, np.ndarray) else np.fromiter(ids, dtype=np.int64)


class RowIndex:
    """Point id -> row of the owner's arrays, for whole arrays of ids at once.

    A sorted id array searched with ``np.searchsorted`` (a table indexed by id would not serve the large,
    sparse ids users may give). Rows of dropped ids are handed out again; :attr:`high` is how many rows the
    owner's arrays must have.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.ids = np.empty(0, dtype=np.int64)  # sorted
        self.rows = np.empty(0, dtype=np.int64)  # row of each id in ``ids``
        self.high = 0  # rows ever handed out
        self._free: list[int] = []  # rows of dropped ids

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id (any shape); -1 where the id has none."""
        if not len(self.ids):
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, self.rows[pos], -1)

    def place(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ``ids`` (distinct), giving a row to each id that has none."""
        rows = self.find(ids)
        new = np.flatnonzero(rows < 0)
        if len(new):
            reuse = min(len(new), len(self._free))
            taken = [self._free.pop() for _ in range(reuse)]
            rows[new] = np.concatenate([np.asarray(taken, dtype=np.int64),
                                        np.arange(self.high, self.high + len(new) - reuse, dtype=np.int64)])
            self.high += len(new) - reuse
            order = np.argsort(ids[new], kind="stable")
            at = np.searchsorted(self.ids, ids[new][order])
            self.ids = np.insert(self.ids, at, ids[new][order])
            self.rows = np.insert(self.rows, at, rows[new][order])
        return rows

    def reset(self, ids: np.ndarray) -> None:
        """Row r for ``ids[r]`` (distinct), nothing else."""
        order = np.argsort(ids, kind="stable")
        self.ids, self.rows, self.high, self._free = ids[order], order.astype(np.int64), len(ids), []

    def drop(self, ids: np.ndarray) -> None:
        gone = np.isin(self.ids, ids)
        self._free.extend(self.rows[gone].tolist())
        self.ids, self.rows = self.ids[~gone], self.rows[~gone]


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with at least ``rows`` rows: grown by half at a time, so appends stay amortised O(1)."""
    if rows <= len(array):
        return array
    size = max(1024, rows, len(array) * 3 // 2)
    return np.concatenate([array, np.empty((size - len(array), *array.shape[1:]), array.dtype)])


class NeighbourCache:
    """kNN lists and unit vectors of stored points, kept between passes.

    Lists of old points go stale when new points arrive near them; :meth:`add_arrivals` inserts each
    new point into the cached lists of its own neighbours (the usual reverse update), and lists that
    name a deleted point are dropped and fetched again. Memory: ``k * 12 + 4 * dim + 16`` bytes per point
    seen (about 1.3 kB at 256 dimensions, 130 MB for 100k points), plus up to half as much again in spare rows.
    """

    def __init__(self, k: int):
        self.k = k
        self._at = RowIndex()
        self._nbr = np.empty((0, k), dtype=np.int64)  # neighbour point ids, most similar first
        self._sim = np.empty((0, k), dtype=np.float32)
        self._vec = np.empty((0, 0), dtype=np.float32)
        # A stale row's list named a point that changed or went: the list is fetched again when needed, but the
        # point's vector is kept, so a later re-upsert of the point itself is still seen as a change.
        self._stale = np.empty(0, dtype=bool)

    def __len__(self) -> int:
        return len(self.ids())

    def ids(self) -> np.ndarray:
        """Points whose list is cached."""
        return self._at.ids[~self._stale[self._at.rows]]

    def has(self, ids: np.ndarray) -> np.ndarray:
        """Whether each point's list is cached."""
        r = self._at.find(ids)
        return (r >= 0) & ~self._stale[np.maximum(r, 0)]

    def known_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of ``ids`` whose unit vector is cached, with a list or not; those vectors)."""
        r = self._at.find(ids)
        return r >= 0, self._vec[r[r >= 0]]

    def _rows(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        r = self._at.find(as_ids(ids))
        missing = (r < 0) | self._stale[np.maximum(r, 0)]
        if missing.any():
            raise KeyError(f"points not in the neighbour cache: {as_ids(ids)[missing][:5].tolist()}")
        return r

    def lists(self, ids: Iterable[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour ids, similarities) of cached points, one row each."""
        r = self._rows(ids)
        return self._nbr[r], self._sim[r]

    def gather(self, ids: Iterable[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(neighbour ids, similarities, unit vectors) of cached points: a pass's whole field, one lookup."""
        r = self._rows(ids)
        return self._nbr[r], self._sim[r], self._vec[r]

    def put(self, ids: np.ndarray, nbr: np.ndarray, sim: np.ndarray, x: np.ndarray) -> None:
        """Cache (or replace) the lists and unit vectors of ``ids`` (distinct)."""
        if not self._vec.shape[1]:  # the first points cached set the dimension
            self._vec = np.empty((len(self._nbr), x.shape[1]), dtype=np.float32)
        rows = self._at.place(as_ids(ids))
        self._nbr, self._sim, self._vec, self._stale = (_grown(a, self._at.high)
                                                        for a in (self._nbr, self._sim, self._vec, self._stale))
        self._nbr[rows], self._sim[rows], self._vec[rows], self._stale[rows] = nbr, sim, x, False

    def fetch(self, col: Collection, ids: np.ndarray, *, ef: int, batch_size: int) -> np.ndarray:
        """Make sure ``ids`` are cached (lists searched at HNSW breadth ``ef``); returns the ids that no
        longer exist in the store."""
        missing = ids[~self.has(ids)]
        _, first = np.unique(missing, return_index=True)
        missing = missing[np.sort(first)]  # each once, in the order asked
        gone = []
        for s in range(0, len(missing), batch_size):
            want = missing[s:s + batch_size]
            pts = col.retrieve(want.tolist(), vectors=True, payload=False)
            gone.append(want[~np.isin(want, pts.ids)])
            if len(pts.ids):
                x = stored_unit_vectors(pts.ids, pts.vectors, col.name)
                nb = col.knn(pts.ids, x, self.k, ef=ef)
                self.put(pts.ids, nb.ids, nb.sim, x)
        return np.concatenate(gone) if gone else np.empty(0, dtype=np.int64)

    def seed(self, ids: np.ndarray, x: np.ndarray, graph: KnnGraph) -> None:
        """Take every point's list from a full sync's graph (rows of ``ids``), so that the passes after
        it query the store for the new points only. Rows for 25% more points are made now (the
        daemon's default growth rule re-clusters at 25%): growing the arrays copies them, which made
        the first pass after a full one at 100k points 0.3 s slower."""
        n, spare = len(ids), len(ids) // 4 + 1024
        self._at.reset(ids)
        self._nbr, self._sim = np.empty((n + spare, self.k), np.int64), np.empty((n + spare, self.k), np.float32)
        self._vec = np.empty((n + spare, x.shape[1]), np.float32)
        self._stale = np.zeros(n + spare, dtype=bool)
        self._nbr[:n], self._sim[:n], self._vec[:n] = ids[graph.nbr], graph.sim, x

    def add_arrivals(self, ids: np.ndarray, x: np.ndarray, nbr: np.ndarray, sim: np.ndarray) -> None:
        """Cache the new points (lists and unit vectors ``x``) and insert each into the cached lists of
        its neighbours where it ranks among their k nearest."""
        self.put(ids, nbr, sim, x)
        q_all, p_all, s_all = nbr.reshape(-1), np.repeat(ids, nbr.shape[1]), sim.reshape(-1)
        met, at = np.unique(q_all, return_inverse=True)  # each listed neighbour once (a pass lists ~2.5x fewer)
        met_row = self._at.find(met)
        listed = (met_row >= 0) & ~self._stale[np.maximum(met_row, 0)]
        kth = np.where(listed, self._sim[met_row, -1], np.inf)[at]  # neighbours without a list: none to update
        keep = s_all > kth
        if not keep.any():
            return
        # One row per updated list: its k entries, then the arrivals that rank above its k-th, padded.
        targets, row = np.unique(met_row[at[keep]], return_inverse=True)
        order = np.argsort(row, kind="stable")
        row, p_all, s_all = row[order], p_all[keep][order], s_all[keep][order]
        col = np.arange(len(row)) - np.searchsorted(row, row)  # rank of each arrival within its row
        cand_ids = np.full((len(targets), self.k + col.max() + 1), -1, dtype=np.int64)
        cand_sim = np.full(cand_ids.shape, -np.inf, dtype=np.float32)
        cand_ids[:, :self.k], cand_sim[:, :self.k] = self._nbr[targets], self._sim[targets]
        cand_ids[row, self.k + col], cand_sim[row, self.k + col] = p_all, s_all
        # A list fetched after p arrived holds p already: keep each id's first entry only (padding is -inf already).
        cand_sim[repeated(cand_ids)] = -np.inf
        top = np.lexsort((cand_ids, -cand_sim), axis=1)[:, :self.k]  # most similar first, ties by id
        self._nbr[targets] = np.take_along_axis(cand_ids, top, axis=1)
        self._sim[targets] = np.take_along_axis(cand_sim, top, axis=1)

    def forget(self, gone: np.ndarray) -> None:
        """Drop deleted (or changed) points, and every cached list that names one of them (refetched when
        needed; the vectors of those points stay known)."""
        if not len(gone):
            return
        self._stale[self._at.rows[np.isin(self._nbr[self._at.rows], gone).any(axis=1)]] = True
        self._at.drop(gone)


class Label(NamedTuple):
    """What a pass needs of a labelled point's ``lander`` payload."""

    cluster: int
    peak: bool
    path: tuple[int, ...]

    @classmethod
    def of(cls, value: dict) -> Label:
        """From a stored ``lander`` value (validated: a malformed one raises instead of being trusted)."""
        try:
            p = LanderPayload.model_validate(value)
        except ValidationError as e:
            raise StoredDataError(f"a stored '{KEY}' payload is not one qdrant-lander wrote ({str(value)[:80]}: "
                                  f"{e.errors()[0]['msg']}); remove that key or run `sync --full` to rewrite every label"
                                  ) from None
        return cls(p.cluster, p.peak, tuple(p.path))


class Labels(NamedTuple):
    """Labels of some points, one row each: ``known`` says which have one (the other rows are undefined);
    ``path[r, :depth[r]]`` is row r's path."""

    known: np.ndarray
    cluster: np.ndarray
    peak: np.ndarray
    path: np.ndarray
    depth: np.ndarray

    @classmethod
    def of(cls, labels: list[Label]) -> Labels:
        width = max((len(lb.path) for lb in labels), default=1)
        path = np.full((len(labels), width), -1, dtype=np.int64)
        for r, lb in enumerate(labels):
            path[r, :len(lb.path)] = lb.path
        return cls(np.ones(len(labels), dtype=bool), np.asarray([lb.cluster for lb in labels], dtype=np.int64),
                   np.asarray([lb.peak for lb in labels], dtype=bool), path,
                   np.asarray([len(lb.path) for lb in labels], dtype=np.int64))


class LabelCache:
    """Labels of stored points by point id, kept between the passes of one long-lived daemon.

    The daemon is the collection's only writer of ``lander`` payloads (the lease), so a label it wrote
    or read stays what the store holds until the daemon itself writes again: every pass records its
    merges (:meth:`relabel`) and new labels (:meth:`put`) here once all its writes succeeded. What
    others can still do is delete or re-upsert points (a re-upsert replaces the payload): a pass drops
    deleted ids, and one count per pass checks that the cached labels it uses are still in the store
    (else they are dropped and read again). A new daemon starts empty (filled by its first full pass or
    by reads); a replayed journal (a pass that failed mid-write) empties it, and so does the daemon
    each time it takes the lease. Memory: ``33 + 8 * levels`` bytes per point (6 MB for 100k points with
    3-level paths).
    """

    def __init__(self) -> None:
        self._at = RowIndex()
        # One row to start with, so that looking up ids none of which is cached still indexes a row.
        self._cluster = np.full(1, -1, dtype=np.int64)
        self._peak = np.zeros(1, dtype=bool)
        self._path = np.full((1, 1), -1, dtype=np.int64)
        self._depth = np.zeros(1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, pid: object) -> bool:
        return bool(self._at.find(np.asarray([pid], dtype=np.int64))[0] >= 0)

    def ids(self) -> np.ndarray:
        return self._at.ids

    def clusters(self) -> np.ndarray:
        """Cluster id of every cached point, in :meth:`ids` order."""
        return self._cluster[self._at.rows]

    def find(self, ids: np.ndarray) -> Labels:
        """The cached labels of ``ids`` (``known`` False where none is cached)."""
        r = self._at.find(ids)
        known, r = r >= 0, np.maximum(r, 0)
        return Labels(known, self._cluster[r], self._peak[r], self._path[r], self._depth[r])

    def get(self, pid: int) -> Label | None:
        lb = self.find(np.asarray([pid], dtype=np.int64))
        if not lb.known[0]:
            return None
        return Label(int(lb.cluster[0]), bool(lb.peak[0]), tuple(lb.path[0, :lb.depth[0]].tolist()))

    def put(self, ids: np.ndarray, labels: Labels) -> None:
        """Cache (or replace) the labels of ``ids`` (distinct)."""
        rows = self._at.place(as_ids(ids))
        self._cluster, self._peak, self._depth = (_grown(a, self._at.high) for a in (self._cluster, self._peak, self._depth))
        width = max(self._path.shape[1], labels.path.shape[1])
        if width > self._path.shape[1]:
            self._path = np.pad(self._path, ((0, 0), (0, width - self._path.shape[1])), constant_values=-1)
        self._path = _grown(self._path, self._at.high)
        self._cluster[rows], self._peak[rows], self._depth[rows] = labels.cluster, labels.peak, labels.depth
        self._path[rows] = -1
        self._path[rows, :labels.path.shape[1]] = labels.path

    def relabel(self, absorbed: int, survivor: int) -> None:
        """What :func:`qdrant_lander.incremental.relabel` does in the store."""
        rows = self._at.rows[self._cluster[self._at.rows] == absorbed]
        self._cluster[rows], self._peak[rows] = survivor, False

    def forget(self, ids: np.ndarray) -> None:
        self._at.drop(ids)

    def clear(self) -> None:
        self._at.clear()

    def load(self, col: Collection, *, batch_size: int = 1024) -> np.ndarray:
        """Cache every stored label (after a full sync); returns the cluster id of every point (-1
        where a point has none), in scroll order."""
        self.clear()
        clusters = []
        for ids, values in scroll_lander(col, batch_size=batch_size):
            labels = [Label.of(v) if v else None for v in values]
            has = np.asarray([lb is not None for lb in labels], dtype=bool)
            if has.any():
                self.put(ids[has], Labels.of([lb for lb in labels if lb is not None]))
            clusters.extend(lb.cluster if lb is not None else -1 for lb in labels)
        return np.asarray(clusters, dtype=np.int64)
