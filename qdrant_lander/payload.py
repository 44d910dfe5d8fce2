"""What lander writes into a collection, and the filters to read it back.

Everything lives under ONE payload key, ``lander``, so the user's own payload keys are never touched
and one ``set_payload`` replaces a point's whole clustering at once (no point ever holds half of one).
Ids are point ids: ``cluster`` is the id of the cluster's peak point, ``path[l]`` the id of the
point's supernode (its peak point) after level ``l``, so ``path[-1] == cluster`` after a full sync (an
incremental merge relabels ``cluster`` only: :func:`qdrant_lander.incremental.relabel`).

A user adds :func:`cluster_filter` to their own queries::

    client.query_points("docs", query=vec, query_filter=cluster_filter(42))
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from qdrant_client import models

from .errors import InputError

KEY = "lander"
CLUSTER_FIELD = f"{KEY}.cluster"
PATH_FIELD = f"{KEY}.path"
SYNC_META = "sync"  # meta record key of the last full sync


class LanderPayload(BaseModel):
    """The value of the ``lander`` payload key of one point."""

    cluster: int
    path: list[int]
    density: float
    peak: bool
    model: str
    generation: int


class SyncState(BaseModel):
    """The meta record of a collection's last full sync.

    ``state`` is ``writing`` from before the first payload write until the last one is durable, then
    ``complete``. Seeing ``writing`` (a crash mid-write) means points may hold ``generation`` or the one
    before; running ``sync`` again rewrites every point with a new generation and recovers.
    """

    state: Literal["writing", "complete"]
    generation: int
    model: str
    points: int
    clusters: int
    started_at: datetime
    finished_at: datetime | None = None
    tau: float | None = None  # decoded with (chosen for this collection if the card has tau_bias); None: not recorded
    domain: str | None = None  # decoding preset used (auto resolved), kept by incremental passes; None: not recorded
    absorb_size: int = 0  # fragments of at most this many points were absorbed (the card's share, resolved): passes too
    vector: str | None = None  # the vector clustered ("" the unnamed one); None: not recorded (an older record)
    partition_by: str | None = None  # payload key no cluster spans two values of (a tenant); None: no such key

    def check_vector(self, collection: str, vector: str) -> None:
        """Refuse to cluster another vector than this clustering's: a collection's ``lander`` payload holds one
        clustering, so syncing a second named vector would silently replace the first one's."""
        if self.vector is None or self.vector == vector:
            return
        done, asked = self.vector or "''", vector or "''"  # '' names the unnamed vector on the command line
        raise InputError(f"collection '{collection}' is clustered on {vector_name(self.vector)}, not "
                         f"{vector_name(vector)}: it holds one clustering. Pass --vector {done}, or replace that "
                         f"clustering with one of {vector_name(vector)}: "
                         f"qdrant-lander sync {collection} --vector {asked} --switch-vector")


def vector_name(vector: str) -> str:
    """A vector as messages name it."""
    return f"vector '{vector}'" if vector else "the unnamed vector"


def cluster_filter(cluster_id: int) -> models.Filter:
    """Filter for the points of one cluster: pass it as ``query_filter``/``scroll_filter``."""
    return models.Filter(must=[models.FieldCondition(key=CLUSTER_FIELD, match=models.MatchValue(value=int(cluster_id)))])


def unclustered_filter() -> models.Filter:
    """Filter for the points that have no ``lander`` payload yet (new since the last sync).

    It tests ``lander.cluster``, which every ``lander`` value has and a sync indexes, so the engine
    answers from that index instead of scanning every point's payload.
    """
    return models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=CLUSTER_FIELD))])
