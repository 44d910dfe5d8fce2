"""Exact copies of vectors: clustered once (what ``Lander.predict`` does) against left in the graph, in one run.

\b
    OMP_NUM_THREADS=1 python -m benchmarks.copies_bench [--task clinc75] [--json]

Copies of random points of a dev task's test part are appended (share of the points x copies each, and
one point copied 200 times); each set is clustered by the default model (``auto``) twice: with copies
collapsed (``Lander.predict``) and with them left in the kNN graph (``predict_graph`` on the graph of
all rows, the behaviour before ``qdrant_lander.dedup``). Prints the Fp of the *original* points under
both, so the two columns compare like with like, and the clustering time of both.
"""

from __future__ import annotations

import json
import sys
import time

import click
import numpy as np
from pydantic import BaseModel

from benchmarks.quality import machine
from benchmarks.tasks import TASKS
from qdrant_lander import Lander
from qdrant_lander.knn import knn_graph
from qdrant_lander.metrics import score
from qdrant_lander.validate import check_embeddings

SETTINGS = ((0.0, 0), (0.2, 2), (0.2, 5), (0.05, 30))  # (share of the points copied, copies of each)


class CopiesRow(BaseModel):
    copies: str
    points: int
    collapsed_fp: float
    collapsed_clusters: int
    collapsed_s: float
    left_in_fp: float
    left_in_clusters: int
    left_in_s: float


def _with_copies(x: np.ndarray, share: float, each: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices into ``x``: every row once, then ``each`` copies of a random ``share`` of them."""
    picked = rng.choice(len(x), int(share * len(x)), replace=False)
    return np.concatenate([np.arange(len(x)), np.repeat(picked, each)])


def run(task: str) -> list[CopiesRow]:
    part = TASKS[task]().test
    x, y = check_embeddings(part.x), part.y
    rng = np.random.default_rng(0)
    sources = [(f"{share:.0%} x{each}" if each else "none", _with_copies(x, share, each, rng)) for share, each in SETTINGS]
    sources.append(("1 point x200", np.concatenate([np.arange(len(x)), np.zeros(200, dtype=np.int64)])))
    rows = []
    for name, source in sources:
        xs = x[source]
        lander = Lander().for_data(xs)  # the preset auto reads (from distinct vectors), the same for both runs
        t = time.perf_counter()
        collapsed = lander.predict(xs)
        t_collapsed = time.perf_counter() - t
        t = time.perf_counter()
        left_in = lander.predict_graph(xs, knn_graph(xs, lander.card.k))
        t_left_in = time.perf_counter() - t
        n = len(x)
        rows.append(CopiesRow(copies=name, points=len(xs),
                              collapsed_fp=round(score(y, collapsed.labels[:n]).fp, 4), collapsed_clusters=collapsed.n_clusters,
                              collapsed_s=round(t_collapsed, 2), left_in_fp=round(score(y, left_in.labels[:n]).fp, 4),
                              left_in_clusters=left_in.n_clusters, left_in_s=round(t_left_in, 2)))
        print(rows[-1].model_dump_json(), file=sys.stderr, flush=True)
    return rows


@click.command()
@click.option("--task", type=click.Choice(list(TASKS)), default="clinc75", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def main(task: str, as_json: bool) -> None:
    rows = run(task)
    if as_json:
        click.echo(json.dumps([r.model_dump() for r in rows], indent=1))
        return
    click.echo(f"{task} test part, Fp of the original points; {machine()}")
    click.echo("| copies added | points | collapsed Fp (clusters, s) | left in Fp (clusters, s) |")
    click.echo("|---|---|---|---|")
    for r in rows:
        click.echo(f"| {r.copies} | {r.points} | {r.collapsed_fp} ({r.collapsed_clusters}, {r.collapsed_s}) | "
                   f"{r.left_in_fp} ({r.left_in_clusters}, {r.left_in_s}) |")


if __name__ == "__main__":
    main()
