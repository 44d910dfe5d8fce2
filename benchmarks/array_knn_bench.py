"""Clustering an array with exact in-memory neighbours against Qdrant's HNSW index, in one run (``cluster --knn``).

\b
    OMP_NUM_THREADS=1 python -m benchmarks.array_knn_bench EMB.npy [--labels Y.npy] [--rows 100000 ...] [--json]

For each row count the first N rows of EMB are clustered by the default model (``auto``) twice:
``knn="exact"`` (``Lander.predict``: an exact search in memory, N^2 work) and ``knn="index"`` (a temporary
embedded Qdrant Edge store: import, HNSW build, kNN queries, the same decoding). Prints the seconds of both, their
ratio, how many rows share a cluster with the same rows both ways (pairwise F of one against the other), and
with labels the Fp of each.
"""

from __future__ import annotations

import json
import time

import click
import numpy as np
from pydantic import BaseModel

from benchmarks.quality import machine
from qdrant_lander import Lander
from qdrant_lander.arrays import cluster_array
from qdrant_lander.metrics import score


class ArrayKnnRow(BaseModel):
    rows: int
    exact_s: float
    index_s: float
    exact_over_index: float
    agreement_fp: float  # pairwise F of the index clustering scored against the exact one
    exact_fp: float | None
    index_fp: float | None
    exact_clusters: int
    index_clusters: int


def run(x: np.ndarray, y: np.ndarray | None, rows: int) -> ArrayKnnRow:
    lander = Lander()
    xs, ys = np.ascontiguousarray(x[:rows]), (y[:rows] if y is not None else None)
    t = time.perf_counter()
    exact = cluster_array(xs, lander, knn="exact", progress=False)
    exact_s = time.perf_counter() - t
    t = time.perf_counter()
    index = cluster_array(xs, lander, knn="index", progress=False)
    index_s = time.perf_counter() - t
    return ArrayKnnRow(rows=rows, exact_s=round(exact_s, 1), index_s=round(index_s, 1),
                       exact_over_index=round(exact_s / index_s, 2), agreement_fp=round(score(exact.labels, index.labels).fp, 4),
                       exact_fp=round(score(ys, exact.labels).fp, 4) if ys is not None else None,
                       index_fp=round(score(ys, index.labels).fp, 4) if ys is not None else None,
                       exact_clusters=exact.n_clusters, index_clusters=index.n_clusters)


@click.command()
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None, help="int .npy: also score both.")
@click.option("--rows", multiple=True, type=int, default=(25_000, 100_000), show_default=True,
              help="Cluster the first N rows (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def main(embeddings: str, labels: str | None, rows: tuple[int, ...], as_json: bool) -> None:
    x = np.load(embeddings, mmap_mode="r")
    y = np.load(labels) if labels else None
    results = [run(x, y, n) for n in rows]
    if as_json:
        click.echo(json.dumps([r.model_dump() for r in results], indent=1))
        return
    click.echo(f"machine: {machine()}")
    click.echo("| rows | exact s | index s | exact / index | agreement (Fp) | exact Fp | index Fp | clusters exact / index |")
    click.echo("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        click.echo(f"| {r.rows:,} | {r.exact_s} | {r.index_s} | {r.exact_over_index}x | {r.agreement_fp} | {r.exact_fp} | "
                   f"{r.index_fp} | {r.exact_clusters} / {r.index_clusters} |")


if __name__ == "__main__":
    main()
