"""Calibration: a model's own decoding settings against settings chosen on a few labeled classes of the target space.

    OMP_NUM_THREADS=1 python -m benchmarks.calibrate_bench [--model M] [--tasks clinc75,omniglot,lfw]
        [--classes 20] [--seeds 0 --seeds 1 ...] [--baselines leiden-cpm,hdbscan] [--json]

For each task: the model clusters the test part once with its card (what a user without labels
gets), then ``Lander.calibrate`` chooses k / tau / merge support on ``--classes`` whole classes of
the task's *train* part (same embedding space, classes disjoint from the test part; one draw per
seed) and the test part is clustered again with each calibrated card. Nothing looks at test labels
except the scoring. ``--model`` takes an ONNX file or model directory (default: the shipped model),
e.g. a leave-one-domain-out model to see what a few labels of the left-out domain give.
``--baselines`` tunes those methods (``benchmarks/baselines.py`` grids) on the very same samples:
the fair comparison for a user who has those few labels.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.baselines import BASELINES, tune
from benchmarks.tasks import TASKS, subsample_classes
from qdrant_lander import Lander
from qdrant_lander.metrics import score


def _scored(lander: Lander, x: np.ndarray, y: np.ndarray) -> dict:
    res = lander.predict(x)
    s = score(y, res.labels)
    return {"k": lander.card.k, "tau": res.tau, "support": lander.card.min_support, "absorb": lander.card.absorb_share,
            "fp": round(s.fp, 4), "fb": round(s.fb, 4), "clusters": s.n_clusters}


@click.command(help=__doc__)
@click.option("--model", default=None, help="ONNX file or model directory (default: the shipped model).")
@click.option("--tasks", default="clinc75,omniglot,lfw", show_default=True,
              help="Tasks whose train and test parts share one embedding space.")
@click.option("--classes", default=20, show_default=True, help="Labeled classes of the train part to calibrate on.")
@click.option("--seeds", multiple=True, type=int, default=(0, 1, 2), show_default=True)
@click.option("--baselines", default="", help=f"Comma-separated baselines to tune on the same samples ({', '.join(BASELINES)}).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def main(model: str | None, tasks: str, classes: int, seeds: tuple[int, ...], baselines: str, as_json: bool) -> None:
    base = Lander(model, domain="any", device="cpu", threads=1)
    methods = list(filter(None, baselines.split(",")))
    rows = []
    for name in tasks.split(","):
        task = TASKS[name]()
        row = {"task": name, "model": base.card.name, "card": _scored(base, task.test.x, task.test.y), "calibrated": []}
        for seed in seeds:
            part = subsample_classes(task.train, classes, seed=seed)
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                calibrated = base.calibrate(part.x, part.y, out_dir=Path(d))
                seconds = time.perf_counter() - t0
                row["calibrated"].append({"seed": seed, "points": len(part.x), "seconds": round(seconds, 1),
                                          **_scored(calibrated, task.test.x, task.test.y)})
            for method in methods:
                tuned = tune(BASELINES[method], part.x, part.y)
                s = score(task.test.y, BASELINES[method](**tuned.params).fit_predict(task.test.x))
                row.setdefault(method, []).append({"seed": seed, "params": tuned.params, "fp": round(s.fp, 4),
                                                   "fb": round(s.fb, 4)})
        for key in ["calibrated", *methods]:
            row[f"{key}_mean"] = {m: round(float(np.mean([c[m] for c in row[key]])), 4) for m in ("fp", "fb")}
        if methods:  # the comparison itself: calibrated mean over the best baseline's mean, per metric
            row["calibrated_vs_best_baseline"] = {
                m: round(row["calibrated_mean"][m] / max(row[f"{b}_mean"][m] for b in methods), 3)
                for m in ("fp", "fb")}
        rows.append(row)
        if not as_json:
            c = row["card"]
            click.echo(f"{name}: card k {c['k']} tau {c['tau']} -> Fp/Fb {c['fp']:.3f} / {c['fb']:.3f}; calibrated on "
                       f"{classes} classes: " + ", ".join(f"tau {r['tau']} k {r['k']} -> {r['fp']:.3f} / {r['fb']:.3f} "
                                                          f"({r['points']} pts, {r['seconds']} s)" for r in row["calibrated"])
                       + "; mean " + ", ".join(f"{key} {row[f'{key}_mean']['fp']:.3f} / {row[f'{key}_mean']['fb']:.3f}"
                                               for key in ["calibrated", *methods])
                       + ("; calibrated vs best baseline {fp:.3f}x / {fb:.3f}x".format(**row["calibrated_vs_best_baseline"])
                          if methods else ""))
    if as_json:
        click.echo(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
