"""Incremental sync: quality of a stream against one full sync, and speed on the embedded store.

Quality: the CLINC150 75-intent test part (11,250 points) arrives in random order in batches of 100;
after each batch one ``sync --once`` pass runs (a fresh :class:`~qdrant_lander.daemon.Daemon`, so a
cold neighbour cache, as a new process would have; the lease is skipped). Compared with one full sync
over all points and with the Immich-style greedy incremental DBSCAN fed the same stream, its setting
tuned on the train part.

Speed: a synthetic power-law collection (256-d) of N points is fully synced, then new points arrive
in batches through one long-lived daemon (warm cache): new points per second of pass time in steady
state (the last half of the passes) and, when the stream is long enough to index the arrivals twice
(~10k points of 256-d each time), over the whole indexing cycles between. Watch mode: a thread upserts points at a steady rate while the daemon watches; the time from
each point's upsert to the daemon's payload write naming it is its arrival-to-payload latency.

Sustain: the same watch mode on a freshly synced collection at a higher rate for longer: whether the
daemon keeps up (latency at the end of the feed no higher than at its start) at, say, 2,000 points/s.
The feeder shares the process, hence the GIL, with the daemon, as it must with the embedded store (one
process per shard): the rate it reaches is reported next to the one asked for.

Store: what the embedded store's kNN queries alone cost, the floor under any pass. A synthetic
collection of N points is imported and indexed, 1,000 more are upserted (unindexed, as arrivals
are), and their k+1 neighbours are queried in one ``query_batch`` at several HNSW search breadths
(``ef``; the daemon's passes use ``PASS_EF``), each against exact search: seconds per 1,000 queries, the
points/s the queries alone allow, and recall.

Arrivals: no full pass while many points arrive (``--growth 0``, or the 25% a growth-triggered full
pass waits for on a large collection): pass seconds with the daemon indexing the arrivals as they pass
Edge's threshold, against the same stream left outside the index (the daemon before it did).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/incremental_bench.py quality [--model M | --domain text]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/incremental_bench.py speed --sizes 10000 100000 --stream 30000 --batch 1000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/incremental_bench.py sustain --sizes 10000 --rate 2000 --chunk 100 --watch-seconds 20
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/incremental_bench.py store --sizes 10000 100000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/incremental_bench.py arrivals --sizes 10000 --stream 40000 --batch 1000

With ``--snapshot DIR`` the speed runs start from a copy of the collection (and the full pass's kNN graph,
which seeds the daemon's caches) as the first run left it after its full pass: Edge builds HNSW on several threads, so two fresh full
passes give slightly different kNN lists, hence different merges, relabel volumes and query costs;
runs of two versions of the code from one snapshot make the same decisions and compare cleanly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import qdrant_edge as qe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baselines import GreedyIncremental, tune  # noqa: E402
from benchmarks.greedy_dbscan import GreedyDBSCAN  # noqa: E402
from benchmarks.synthetic import synthetic  # noqa: E402
from benchmarks.tasks import clinc_75_75  # noqa: E402
from qdrant_lander import Lander  # noqa: E402
from qdrant_lander.daemon import Daemon, DaemonOptions  # noqa: E402
from qdrant_lander.incremental import PASS_EF  # noqa: E402
from qdrant_lander.knn import KnnGraph  # noqa: E402
from qdrant_lander.metrics import score  # noqa: E402
from qdrant_lander.stores.edge import HNSW_EF, EdgeStore  # noqa: E402
from qdrant_lander.sync import full_sync, import_points, read_labels  # noqa: E402


def _fp(y: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> dict:
    s = score(y[ids], labels)
    return {"fp": round(s.fp, 4), "fb": round(s.fb, 4), "nmi": round(s.nmi, 4), "clusters": int(np.unique(labels).size)}


def stream_quality(x: np.ndarray, y: np.ndarray, lander: Lander, opts: DaemonOptions, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as d, EdgeStore(d) as store:
        t0 = time.perf_counter()
        fulls, passes = 0, []
        for s in range(0, len(x), batch):
            col = import_points(store, "docs", x[s:s + batch], start_id=s, progress=False)
            daemon = Daemon(col, lander, opts)
            rep = daemon.run_pass()  # what one `sync --once` does (minus the lease)
            fulls += rep.full
            passes.append(rep.seconds)
        ids, labels = read_labels(col)
        return {**_fp(y, ids, labels), "domain_at_end": daemon.lander.domain, "full_passes": fulls, "passes": len(passes),
                "seconds": round(time.perf_counter() - t0, 1), "median_pass_s": round(float(np.median(passes)), 3)}


def quality(args: argparse.Namespace, lander: Lander) -> dict:
    task = clinc_75_75()
    order = np.random.RandomState(args.seed).permutation(len(task.test.x))
    x, y = task.test.x[order], task.test.y[order]
    out: dict = {"points": len(x), "batch": args.batch, "model": lander.card.name, "tau": lander.card.tau,
                 "k": lander.card.k}
    with tempfile.TemporaryDirectory() as d, EdgeStore(d) as store:
        col = import_points(store, "docs", x, progress=False)
        t0 = time.perf_counter()
        rep = full_sync(col, lander, progress=False)
        out["full"] = {**_fp(y, *read_labels(col)), "seconds": round(time.perf_counter() - t0, 1), "domain": rep.domain}
    for growth in args.growth:
        opts = DaemonOptions(growth=growth, hops=args.hops)
        stream = stream_quality(x, y, lander, opts, args.batch)
        out[f"stream_growth_{growth}"] = {**stream, "fp_over_full": round(stream["fp"] / out["full"]["fp"], 3)}
        print(json.dumps(out), flush=True)
    tuned = tune(GreedyIncremental, task.train.x, task.train.y)
    g = GreedyDBSCAN(**tuned.params)
    t0 = time.perf_counter()
    for s in range(0, len(x), args.batch):
        labels = g.partial_fit(x[s:s + args.batch])
    greedy = _fp(y, np.arange(len(x)), labels)
    out["greedy_dbscan"] = {**greedy, "fp_over_full": round(greedy["fp"] / out["full"]["fp"], 3), "params": tuned.params,
                            "train_fp": round(tuned.fp, 4), "seconds": round(time.perf_counter() - t0, 1)}
    return out


class _Watcher:
    """Feeds points at a steady rate and records arrival-to-payload latency: the time from a point's
    upsert to the daemon's payload write naming it (``set_payloads`` is wrapped; the pass's flush
    follows within milliseconds). Recorded in the writes themselves, not by polling the store, so
    that measuring costs the daemon nothing: a poller's reads of thousands of pending points take
    the GIL from the daemon it measures (the runs before session 12 polled every 0.05 s)."""

    def __init__(self, col, x: np.ndarray, start_id: int, rate: float, chunk: int):
        self.col, self.x, self.start, self.rate, self.chunk = col, x, start_id, rate, chunk
        self.arrived: dict[int, float] = {}
        self.latency: list[float] = []
        self.lock = threading.Lock()
        self.fed = threading.Event()
        set_payloads = col.set_payloads

        def recorded(items):
            set_payloads(items)
            now = time.monotonic()
            with self.lock:
                self.latency += [now - t for ids, _ in items for i in ids if (t := self.arrived.pop(int(i), None))]

        col.set_payloads = recorded

    def feed(self) -> None:
        """Upsert every point due by now (on a fixed schedule from the start, so that time the feeder
        spent waiting for the GIL is made up with a larger upsert, as a queue of arrivals would be)."""
        t0, s = time.monotonic(), 0
        while s < len(self.x):
            t = time.monotonic()
            due = min(len(self.x), max(s + self.chunk, int((t - t0) * self.rate)))
            ids = range(self.start + s, self.start + due)
            with self.lock:  # before the upsert: a pass may label them before this thread runs again
                self.arrived.update((i, t) for i in ids)
            self.col.upsert(np.asarray(ids), self.x[s:due])
            s = due
            time.sleep(max(0.0, t0 + s / self.rate - time.monotonic()))
        self.fed.set()

    def close(self) -> None:
        del self.col.set_payloads


def _synced(n: int, x: np.ndarray, d: str, args: argparse.Namespace, lander: Lander, out: dict) -> tuple:
    """(store, collection, daemon) right after the full pass: made here, or copied from the snapshot."""
    snap = Path(args.snapshot) / str(n) if args.snapshot else None
    opts = DaemonOptions(growth=0, hops=args.hops, interval=args.interval)
    made_with = {k: getattr(args, k) for k in ("seed", "stream", "rate", "watch_seconds", "hops", "model", "domain")}
    if snap is None or not snap.exists():
        store = EdgeStore(d)
        t0 = time.perf_counter()
        col = import_points(store, "docs", x[:n], progress=False)
        out["import_s"] = round(time.perf_counter() - t0, 1)
        daemon = Daemon(col, lander, opts)
        seed: dict = {}
        seeded = daemon._seed  # keep the graph the caches start from (plain arrays: any code version reads them)
        daemon._seed = lambda ids, xs, g: seed.update(ids=ids, x=xs, nbr=g.nbr, sim=g.sim) or seeded(ids, xs, g)
        t0 = time.perf_counter()
        daemon.run_pass(full=True)  # the full sync, then the vector index rebuilt for the passes to come
        out["full_pass_s"] = round(time.perf_counter() - t0, 1)
        if snap is None:
            return store, col, daemon
        store.close()
        shutil.copytree(d, snap / "store")
        np.savez(snap / "seed.npz", **seed)
        (snap / "args.json").write_text(json.dumps(made_with))
    else:
        made = {"domain": "any", **json.loads((snap / "args.json").read_text())}  # made before domain was recorded: any
        if made != made_with:  # other data, model or decoding: not comparable
            sys.exit(f"snapshot {snap} was made with {(snap / 'args.json').read_text()}, not {made_with}")
        shutil.copytree(snap / "store", d, dirs_exist_ok=True)
    out["snapshot"] = str(snap)
    store = EdgeStore(d)
    col = store.open("docs")
    daemon = Daemon(col, lander, opts)
    z = np.load(snap / "seed.npz")
    daemon._seed(z["ids"], z["x"], KnnGraph(nbr=z["nbr"], sim=z["sim"]))
    daemon.labels.load(col)  # what the full pass leaves
    return store, col, daemon


def watched(col, daemon: Daemon, x: np.ndarray, start_id: int, args: argparse.Namespace) -> dict:
    """Feed ``x`` at ``args.rate`` points/s while ``daemon.watch`` runs; latency from the outside, and the
    feed rate actually reached (the feeder shares the process, and the GIL, with the daemon)."""
    w = _Watcher(col, x, start_id, args.rate, args.chunk)
    reports: list = []
    run_pass = daemon.run_pass
    daemon.run_pass = lambda **kw: reports.append(run_pass(**kw)) or reports[-1]  # records every pass's report
    stop = threading.Event()
    threads = [threading.Thread(target=w.feed), threading.Thread(target=daemon.watch, args=(stop,))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    w.fed.wait()
    fed_s = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while w.arrived and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    del daemon.run_pass
    w.close()
    lat = np.asarray(w.latency)  # in the order points got their payload
    third = max(1, lat.size // 3)
    busy = [r for r in reports if r.new]
    p95_thirds = [float(np.percentile(lat[:third], 95)), float(np.percentile(lat[-third:], 95))]
    return {"rate_per_s": args.rate, "fed_per_s": round(len(x) / fed_s, 1),
            "fed_over_asked": round(len(x) / fed_s / args.rate, 3), "interval_s": args.interval,
            "points": int(lat.size), "unlabelled_after_60s": len(w.arrived),
            "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
            "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
            "latency_max_s": round(float(lat.max()), 3),
            # a daemon that keeps up has the same latency at the end of the feed as at its start
            "latency_p95_first_last_third_s": [round(v, 3) for v in p95_thirds],
            "latency_p95_last_over_first": round(p95_thirds[1] / p95_thirds[0], 3),  # ~1 when it keeps up
            "passes": len(busy), "new_per_pass_median": int(np.median([r.new for r in busy])) if busy else 0,
            "pass_s_median": round(float(np.median([r.seconds for r in busy])), 3) if busy else 0.0}


def sustain_at(n: int, args: argparse.Namespace, lander: Lander) -> dict:
    """Arrivals at ``args.rate`` for ``args.watch_seconds`` on a synced collection of ``n`` points, the
    daemon in watch mode: the rate it keeps up with is the throughput that matters in steady state
    (it takes whatever arrived since its last pass, so its batches grow with the load)."""
    x, _ = synthetic(n + int(args.rate * args.watch_seconds), 256, seed=args.seed)
    out: dict = {"collection": n}
    with tempfile.TemporaryDirectory() as d:
        store, col, daemon = _synced(n, x, d, args, lander, out)
        out["watch"] = watched(col, daemon, x[n:], n, args)
        store.close()
    return out


def _rates(passes: list[dict]) -> tuple[float, float]:
    """New points per second of pass time, and per CPU second."""
    new = sum(p["new"] for p in passes)
    return round(new / sum(p["s"] for p in passes), 1), round(new / sum(p["cpu_s"] for p in passes), 1)


def speed_at(n: int, args: argparse.Namespace, lander: Lander) -> dict:
    extra = args.stream + int(args.rate * args.watch_seconds)
    x, _ = synthetic(n + extra, 256, seed=args.seed)
    out: dict = {"collection": n}
    with tempfile.TemporaryDirectory() as d:
        store, col, daemon = _synced(n, x, d, args, lander, out)
        passes = []
        for s in range(n, n + args.stream, args.batch):
            import_points(store, "docs", x[s:s + args.batch], start_id=s, progress=False)
            indexed = col.shard.info().indexed_vectors_count
            cpu = time.process_time()  # wall time follows the machine's load; the process's CPU time much less
            rep = daemon.run_pass()
            passes.append({"new": rep.new, "s": rep.seconds, "cpu_s": round(time.process_time() - cpu, 3),
                           "field": rep.field, "model_s": rep.model_seconds, "relabelled": rep.relabelled,
                           "indexed": col.shard.info().indexed_vectors_count > indexed})  # it indexed the arrivals
        out["batch"] = args.batch
        out["passes"] = passes
        out["steady_points_per_s"], out["steady_points_per_cpu_s"] = _rates(passes[len(passes) // 2:])  # warm cache
        # Whole indexing cycles (after the first pass that indexed, up to the last): each pays for indexing
        # once, as a long-running daemon does; the steady window may hold one indexing in fewer passes.
        indexing = [i for i, p in enumerate(passes) if p["indexed"]]
        if len(indexing) >= 2:
            cycles = passes[indexing[0] + 1:indexing[-1] + 1]
            out["cycles"] = len(indexing) - 1
            out["cycle_points_per_s"], out["cycle_points_per_cpu_s"] = _rates(cycles)
        # watch mode: arrivals at a steady rate, the daemon polling every `interval` seconds
        out["watch"] = watched(col, daemon, x[n + args.stream:], n + args.stream, args)
        store.close()
    return out


def store_at(n: int, args: argparse.Namespace, k: int) -> dict:
    x, _ = synthetic(n + 1000, 256, seed=args.seed)
    ids, q = np.arange(n, n + 1000), x[n:]
    out: dict = {"collection": n, "queries": len(q), "k": k}
    with tempfile.TemporaryDirectory() as d, EdgeStore(d) as store:
        col = import_points(store, "docs", x[:n], progress=False)
        t0 = time.perf_counter()
        col.prepare_knn()
        out["index_s"] = round(time.perf_counter() - t0, 1)
        import_points(store, "docs", q, start_id=n, progress=False)  # arrivals sit unindexed, as in a pass
        exact = col.knn(ids, q, k, exact=True).ids
        rows = []
        for ef in (32, 64, HNSW_EF, 256):
            params = col._params(k + 1, ef=ef)
            reqs = qe.QueryBatchRequest([col._nearest(v, k + 1, params) for v in q])
            secs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                res = col.shard.query_batch(reqs)
                secs.append(time.perf_counter() - t0)
            found = [{h.id for h in r} for r in res]
            recall = np.mean([len(f & set(e.tolist())) / k for f, e in zip(found, exact)])
            best = min(secs) * 1000 / len(q)
            rows.append({"ef": ef, "s_per_1000": round(best, 3), "queries_alone_points_per_s": round(1000 / best),
                         "recall": round(float(recall), 4), "daemon": ef == PASS_EF})
            print(json.dumps({"collection": n, **rows[-1]}), flush=True)
        sync_ef = next(r for r in rows if r["ef"] == HNSW_EF)  # a full sync's breadth: what the others are against
        out["rows"] = [{**r, "time_vs_sync_ef": round(r["s_per_1000"] / sync_ef["s_per_1000"], 3),
                        "recall_vs_sync_ef": round(r["recall"] / sync_ef["recall"], 4)} for r in rows]
    return out


class _NeverIndexed:
    """A collection whose arrivals stay outside the index between full passes, as before the daemon
    indexed them: the baseline of the ``arrivals`` run."""

    def __init__(self, col):
        self._col = col

    def __getattr__(self, name: str):
        return getattr(self._col, name)

    def index_arrivals(self) -> None:
        pass


def arrivals_at(n: int, args: argparse.Namespace, lander: Lander) -> dict:
    """Pass seconds while ``args.stream`` points arrive with no full pass (growth 0), the arrivals indexed
    by the daemon vs left outside the index; the same collection, points and decisions in both runs."""
    x, _ = synthetic(n + args.stream, 256, seed=args.seed)
    out: dict = {"collection": n, "arrivals": args.stream, "batch": args.batch}
    for mode in ("indexed", "never_indexed"):
        with tempfile.TemporaryDirectory() as d, EdgeStore(d) as store:
            col = import_points(store, "docs", x[:n], progress=False)
            daemon = Daemon(col if mode == "indexed" else _NeverIndexed(col), lander, DaemonOptions(growth=0))
            daemon.run_pass(full=True)
            secs = []
            for s in range(n, n + args.stream, args.batch):
                import_points(store, "docs", x[s:s + args.batch], start_id=s, progress=False)
                secs.append(round(daemon.run_pass().seconds, 2))
            half = secs[len(secs) // 2:]
            out[mode] = {"pass_s": secs, "points_per_s": round(args.stream / sum(secs), 1),
                         "second_half_points_per_s": round(len(half) * args.batch / sum(half), 1)}
    out["ratio_second_half"] = round(out["indexed"]["second_half_points_per_s"]
                                     / out["never_indexed"]["second_half_points_per_s"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["quality", "speed", "sustain", "store", "arrivals"])
    p.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--domain", default="any", help="the default model's domain preset (auto, any, faces, text, characters; "
                   "any by default: the runs recorded in RESULTS.md before auto existed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hops", type=int, default=DaemonOptions().hops)
    p.add_argument("--batch", type=int, default=None, help="points per batch (quality 100, speed 500)")
    p.add_argument("--growth", type=float, nargs="+", default=[0.25, 0.0], help="quality: daemon growth rules")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="speed: collection sizes")
    p.add_argument("--stream", type=int, default=5_000, help="speed, arrivals: new points streamed in batches")
    p.add_argument("--rate", type=float, default=200.0, help="watch: arrivals per second")
    p.add_argument("--chunk", type=int, default=20, help="watch: points per upsert")
    p.add_argument("--watch-seconds", type=float, default=15.0)
    p.add_argument("--interval", type=float, default=0.25, help="watch: daemon interval")
    p.add_argument("--repeats", type=int, default=3, help="store: timings per search breadth (the fastest is kept)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0: its default, one per "
                   "core, as the CLI runs it; issue 5's recorded protocol uses 1)")
    p.add_argument("--snapshot", default=None, help="speed: directory keeping each size's collection after its "
                   "full pass (made on first use, copied by later runs: same index, same decisions)")
    args = p.parse_args()
    lander = Lander(args.model, domain=args.domain, device="cpu", threads=args.threads or None)
    if args.what == "store":
        for n in args.sizes:
            print(json.dumps(store_at(n, args, lander.card.k)), flush=True)
    elif args.what == "quality":
        args.batch = args.batch or 100
        print(json.dumps(quality(args, lander)))
    else:
        args.batch = args.batch or 500
        run = {"speed": speed_at, "sustain": sustain_at, "arrivals": arrivals_at}[args.what]
        rates = {}
        for n in args.sizes:
            out = run(n, args, lander)
            print(json.dumps(out), flush=True)
            rates[n] = out.get("cycle_points_per_s", out.get("steady_points_per_s"))
        if args.what == "speed" and len(rates) > 1 and None not in rates.values():  # cost against collection size
            small, large = min(rates), max(rates)
            print(json.dumps({f"points_per_s_{large}_over_{small}": round(rates[large] / rates[small], 3)}), flush=True)


if __name__ == "__main__":
    main()
