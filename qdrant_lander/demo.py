"""The README's main job as a library function: import a real sample, cluster it, search by cluster.

It exercises the whole product path on the embedded Qdrant Edge store (no server): import ->
full sync (kNN from Qdrant's HNSW index -> ONNX model -> hierarchical decoding -> payload) ->
labels -> a search filtered by cluster id.
"""

from __future__ import annotations

import importlib.resources
import json

import numpy as np
from pydantic import BaseModel

from .lander import Lander
from .metrics import Scores, score
from .payload import cluster_filter
from .stores import Store
from .sync import SyncReport, full_sync, import_points, read_labels

SAMPLE = "clinc_sample"


class DemoHit(BaseModel):
    id: int
    score: float
    cluster: int
    text: str


class DemoReport(BaseModel):
    collection: str
    points: int
    sync: SyncReport
    scores: Scores
    cluster: int
    cluster_size: int
    cluster_intents: dict[str, int]
    hits: list[DemoHit]


def load_sample() -> tuple[np.ndarray, list[dict]]:
    """The bundled CLINC150 sample: 2,000 utterances of 20 intents the default model never saw."""
    base = importlib.resources.files("qdrant_lander") / "demo_data"
    with (base / f"{SAMPLE}.npz").open("rb") as f:
        x = np.load(f)["embeddings"].astype(np.float32)
    rows = [json.loads(line) for line in (base / f"{SAMPLE}.jsonl").read_text().splitlines()]
    return x, rows


def run_demo(store: Store, lander: Lander, *, collection: str = "lander_demo", progress: bool = True) -> DemoReport:
    """Upsert the sample as points 0..N-1 of ``collection``, sync, score, and search the largest cluster.

    Re-running is idempotent: the upsert replaces the same points (and their payload) again.
    """
    x, rows = load_sample()
    col = import_points(store, collection, x, rows, progress=progress)
    report = full_sync(col, lander, progress=progress)
    ids, clusters = read_labels(col)
    intents = np.array([rows[i]["intent"] for i in ids])
    _, truth = np.unique(intents, return_inverse=True)
    values, counts = np.unique(clusters, return_counts=True)
    biggest = int(values[np.argmax(counts)])
    members = intents[clusters == biggest]
    names, n = np.unique(members, return_counts=True)
    peak = col.retrieve([biggest], vectors=True, payload=False).vectors[0]
    hits = col.search(peak, limit=5, filter=cluster_filter(biggest))
    return DemoReport(
        collection=collection, points=len(ids), sync=report, scores=score(truth, clusters), cluster=biggest,
        cluster_size=int(counts.max()), cluster_intents={str(a): int(b) for a, b in zip(names, n)},
        hits=[DemoHit(id=h.id, score=h.score, cluster=int(h.payload["lander"]["cluster"]), text=h.payload["text"])
              for h in hits],
    )
