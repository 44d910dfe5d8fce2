"""A tau chosen per dataset (the card's ``tau_bias``) against the card's one fixed tau, in one run.

\b
    OMP_NUM_THREADS=1 python -m benchmarks.auto_tau_bench [--model DIR_OR_ONNX] [--bias B] [--tasks clinc75,lfw] [--json]

Each dev task's test part is clustered twice with the same ONNX model (default: the shipped one), same
exact kNN graph, one onnxruntime thread: once at the card's fixed tau, once choosing tau from
``AUTO_TAUS`` by agreement with the level-0 links (bias: ``--bias``, else the card's; the shipped model's
card has none, so give ``--bias`` with it). Prints Fp / Fb of both, the tau chosen, and the
decoding time of both with their ratio (kNN graph not included: it is the same for both).
"""

from __future__ import annotations

import json
import sys
import time

import click
from pydantic import BaseModel

from benchmarks.quality import _names, machine
from benchmarks.tasks import TASKS
from qdrant_lander import Lander
from qdrant_lander.decode import cluster_hierarchy
from qdrant_lander.knn import knn_graph
from qdrant_lander.metrics import score
from qdrant_lander.validate import check_embeddings


class AutoTauRow(BaseModel):
    task: str
    fixed_tau: float
    fixed_fp: float
    fixed_fb: float
    fixed_s: float
    auto_tau: float
    auto_fp: float
    auto_fb: float
    auto_s: float


def run(lander: Lander, task: str, bias: float) -> AutoTauRow:
    card = lander.card
    test = TASKS[task]().test
    x = check_embeddings(test.x)
    graph = knn_graph(x, card.k)
    out: dict[str, float] = {}
    for kind, settings in (("fixed", card.model_copy(update={"tau_bias": None})),
                           ("auto", card.model_copy(update={"tau_bias": bias}))):
        t0 = time.perf_counter()
        res = cluster_hierarchy(x, graph, lander.scorer, settings)
        out[f"{kind}_s"] = round(time.perf_counter() - t0, 2)
        s = score(test.y, res.labels)
        out.update({f"{kind}_tau": res.tau, f"{kind}_fp": round(s.fp, 4), f"{kind}_fb": round(s.fb, 4)})
    return AutoTauRow(task=task, **out)


@click.command(help=__doc__)
@click.option("--model", default=None, help="Model directory or .onnx file (default: the shipped model).")
@click.option("--bias", type=float, default=None,
              help="Agreement bias (default: the card's tau_bias; required for a card without one, as the shipped model's).")
@click.option("--tasks", "tasks_opt", default=None, help=f"Comma-separated tasks (default: {', '.join(TASKS)}).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def main(model: str | None, bias: float | None, tasks_opt: str | None, as_json: bool) -> None:
    lander = Lander(model, domain="any", device="cpu", threads=1)
    bias = lander.card.tau_bias if bias is None else bias
    if bias is None:
        raise click.UsageError(f"model '{lander.card.name}' has no tau_bias: give one with --bias")
    tasks = _names(tasks_opt, TASKS, "tasks") or [t for t in TASKS if t != "orl2lfw"]  # orl2lfw tests LFW B again
    rows = []
    for task in tasks:
        rows.append(run(lander, task, bias))
        print(rows[-1].model_dump_json(), file=sys.stderr, flush=True)
    if as_json:
        click.echo(json.dumps([r.model_dump() for r in rows], indent=1))
        return
    click.echo(f"model {lander.card.name} (tau {lander.card.tau}, bias {bias}); machine: {machine()}\n")
    click.echo("| task | fixed tau | Fp / Fb | s | chosen tau | Fp / Fb | s | time auto / fixed |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        click.echo(f"| {r.task} | {r.fixed_tau} | {r.fixed_fp:.3f} / {r.fixed_fb:.3f} | {r.fixed_s:.1f} | {r.auto_tau} | "
                   f"{r.auto_fp:.3f} / {r.auto_fb:.3f} | {r.auto_s:.1f} | {r.auto_s / r.fixed_s:.1f}x |")


if __name__ == "__main__":
    main()
