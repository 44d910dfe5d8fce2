"""Keep cluster ids stable across full re-clusterings.

A full sync names each cluster after its peak point, so a re-run would rename most clusters and
break every id a user stored ("after a full re-run every face is its own person"). Instead each new
cluster inherits the old id it overlaps most, greedily by overlap size, each old id used once: the
optimal assignment is not needed, since overlaps of the same group between runs are large and
unambiguous, and the greedy order is deterministic. New clusters that inherit nothing keep their
peak id unless some old cluster already had that id, then they get a fresh one.
"""

from __future__ import annotations

import numpy as np


def stable_ids(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Cluster id per point for the ``new`` clustering, reusing ``old`` ids by largest overlap.

    ``old`` holds each point's previous cluster id (-1 = had none, e.g. arrived since), ``new`` the
    fresh one (any non-negative ids). Returns int64 ids aligned with the inputs.
    """
    old = np.asarray(old, dtype=np.int64)
    new = np.asarray(new, dtype=np.int64)
    if old.shape != new.shape:
        raise ValueError(f"old and new labels differ in length: {old.shape} vs {new.shape}")
    new_ids, new_idx = np.unique(new, return_inverse=True)
    had = old >= 0
    pairs, overlap = np.unique(np.stack([new_idx[had], old[had]], axis=1), axis=0, return_counts=True)
    # largest overlap first; ties by smaller old id, then by smaller new cluster, for determinism
    order = np.lexsort((pairs[:, 0], pairs[:, 1], -overlap)) if len(pairs) else np.empty(0, dtype=np.int64)
    mapping = np.full(len(new_ids), -1, dtype=np.int64)
    used: set[int] = set()
    for n_i, o in pairs[order].tolist():
        if mapping[n_i] < 0 and o not in used:
            mapping[n_i] = o
            used.add(o)
    taken = used | set(np.unique(old[had]).tolist())  # never hand a vanished cluster's id to another group
    fresh = max(max(taken, default=-1), int(new_ids.max(initial=-1))) + 1
    for n_i in np.flatnonzero(mapping < 0).tolist():
        own = int(new_ids[n_i])
        if own in taken:
            own, fresh = fresh, fresh + 1
        mapping[n_i] = own
        taken.add(own)
    return mapping[new_idx]
