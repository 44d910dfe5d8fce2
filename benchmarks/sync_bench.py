"""Import + full sync on the embedded store (Qdrant Edge): time per stage, peak memory, quality.

    python -m benchmarks.sync_bench clinc            # CLINC150 75-intent test part (11,250 points)
    python -m benchmarks.sync_bench synthetic --n 100000 --dim 256
    python -m benchmarks.sync_bench synthetic --n 100000 --device cuda   # the model on the GPU

Stages: scroll (vectors out), index (HNSW build), knn (all points' neighbours from the index),
model (ONNX scorer calls, all levels; level 0's include building its edge features, which it does block
by block), decode (the rest of clustering: features, forests, supernode
graphs), write (payload). ``knn_stage`` = index + knn, the floor any store-backed sync pays; the goal
is ``total / knn_stage <= 1.5``. Wall and process CPU seconds are both reported: on a shared machine
the CPU ratio is the steadier one. ``clinc`` also checks that the labels read back from the collection
score the same Fp as ``Lander.predict`` on the same array. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from qdrant_lander import Lander
from qdrant_lander.metrics import score
from qdrant_lander.stores import open_store
from qdrant_lander.sync import full_sync, import_points, peak_rss_mb, read_labels


class TimedScorer:
    """Wraps the model so its share of the clustering stage can be reported apart from decoding."""

    def __init__(self, scorer):
        self.scorer, self.seconds = scorer, 0.0

    def _timed(self, call, *args):
        t = time.perf_counter()
        out = call(*args)
        self.seconds += time.perf_counter() - t
        return out

    def __call__(self, inputs):
        return self._timed(self.scorer, inputs)

    def score_in_blocks(self, *args):
        """Level 0's path (decode.py): the model block by block, with each block's edge features built inside."""
        return self._timed(self.scorer.score_in_blocks, *args)

    def __getattr__(self, name):
        return getattr(self.scorer, name)


def run(x: np.ndarray, y: np.ndarray, *, model: str | None, path: Path, batch_size: int, threads: int | None,
        knn: str, device: str = "cpu") -> dict:
    lander = Lander(model, domain="any", device=device, threads=threads)
    timed = TimedScorer(lander.scorer)
    lander._scorer = timed  # benchmark-only instrumentation
    out: dict = {"points": int(len(x)), "dim": int(x.shape[1]), "model": lander.card.name, "knn_mode": knn,
                 "provider": lander.scorer.provider,
                 "rss_mb_after_data": round(peak_rss_mb())}
    with open_store(path=path) as store:
        t = time.perf_counter()
        col = import_points(store, "bench", x, [{"label": int(v)} for v in y], batch_size=batch_size, progress=False)
        out["import_s"] = round(time.perf_counter() - t, 2)
        logging.getLogger(__name__).info("import: %.1f s, peak RSS so far %d MB", out["import_s"], peak_rss_mb())
        rep = full_sync(col, lander, batch_size=batch_size, progress=False, knn=knn)
        ids, labels = read_labels(col, batch_size=batch_size)
    s = dict(rep.seconds)
    s["model"] = round(timed.seconds, 2)
    s["decode"] = round(s.pop("cluster") - timed.seconds, 2)
    total = sum(s.values())
    knn_stage = s["index"] + s["knn"]
    cpu = rep.cpu_seconds
    out.update(stages_s=s, sync_total_s=round(total, 2), knn_stage_s=round(knn_stage, 2),
               total_over_knn=round(total / knn_stage, 2), cpu_stages_s=cpu,
               cpu_total_over_knn=round(sum(cpu.values()) / (cpu["index"] + cpu["knn"]), 2),
               knn=rep.knn, clusters=rep.clusters, levels=rep.levels, peak_rss_mb=rep.peak_rss_mb)
    assert np.array_equal(ids, np.arange(len(x))) and (labels >= 0).all()
    out["fp_sync"] = round(score(y, labels).fp, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["clinc", "synthetic"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--knn", choices=["auto", "exact", "index"], default="auto", help="as `sync --knn`")
    ap.add_argument("--path", type=Path, default=None, help="store directory (default: a temp dir)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # stage times as they end
    if args.task == "clinc":
        from benchmarks.tasks import clinc_75_75

        part = clinc_75_75().test
        x, y = part.x, part.y
    else:
        from benchmarks.synthetic import synthetic

        x, y = synthetic(args.n, args.dim)
    with tempfile.TemporaryDirectory() as tmp:
        out = run(x, y, model=args.model, path=args.path or Path(tmp), batch_size=args.batch_size,
                  threads=args.threads, knn=args.knn, device=args.device)
    if args.task == "clinc":
        t = time.perf_counter()
        direct = Lander(args.model, domain="any", device=args.device, threads=args.threads).predict(x)
        out["predict_s"] = round(time.perf_counter() - t, 2)
        out["fp_predict"] = round(score(y, direct.labels).fp, 4)
        out["fp_diff"] = round(abs(out["fp_sync"] - out["fp_predict"]), 4)
    out["task"] = args.task
    print(json.dumps(out))


if __name__ == "__main__":
    main()
