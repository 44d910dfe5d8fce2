"""Commands on Qdrant collections: import, sync, search, labels, status.

Every command reaches the embedded store at ``--path`` (default ``./qdrant_data``) or a Qdrant server
with ``--url``/``--api-key``; the same settings come from ``QLANDER_*`` variables or a ``--config`` file.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click
import numpy as np

from . import main
from ..config import Settings
from ..errors import InputError, StoreBusy
from ..stores import Collection, Store, open_store
from .inputs import check_outputs, load_jsonl, load_npy, save_npy
from .settings_options import lander_from_settings, settings_options

_STORE = ("url", "api_key", "path")


@contextmanager
def store_from_settings(settings: Settings) -> Iterator[Store]:
    """The store the settings point at (server with --url, else the embedded store), closed on exit."""
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    with open_store(settings.url, api_key, settings.path) as store:
        yield store


@contextmanager
def collection_from_settings(settings: Settings, name: str, *, wait: float = 0.0) -> Iterator[Collection]:
    """An existing collection (StoreError listing the others if missing), its store closed on exit.

    ``wait``: seconds to keep trying while another process has the embedded collection open (its OS lock
    is the embedded store's one-writer rule, as the lease is a server's), so --wait-lease waits for both."""
    deadline = time.monotonic() + wait
    with store_from_settings(settings) as store:
        while True:
            try:
                col = store.open(name, vector=settings.vector)
                break
            except StoreBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        yield col


@contextmanager
def clustered_from_settings(settings: Settings, name: str) -> Iterator[Collection]:
    """A collection opened to read its clustering: on the vector the clustering was made on unless --vector
    names one (then it must be that one), and whatever its distance (a collection never synced reads as such)."""
    from ..sync import last_sync

    with store_from_settings(settings) as store:
        col = store.open(name, vector=settings.vector, reading=True)
        state = last_sync(col)
        if state is not None and state.vector not in (None, col.vector):
            if settings.vector is not None:
                state.check_vector(name, col.vector)
            col = store.open(name, vector=state.vector, reading=True)
        yield col


@main.command(name="import")
@click.argument("collection")
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels", "labels_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="int .npy [N] of known labels, stored in each point's payload under --label-key.")
@click.option("--label-key", default="label", show_default=True,
              help="Payload key for --labels (refused if a --payload row already has it).")
@click.option("--payload", "payload_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON Lines file, one object per row of EMBEDDINGS, stored as each point's payload.")
@click.option("--start-id", type=int,
              help="Point id of the first row; points with these ids are replaced. [default: 0 for a new collection, "
                   "one past the highest id of an existing one, so that another import adds points]")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@settings_options(*_STORE, "batch_size", "vector")
def import_(collection: str, embeddings: Path, labels_path: Path | None, label_key: str, payload_path: Path | None,
            start_id: int | None, as_json: bool, settings: Settings) -> None:
    """Upsert EMBEDDINGS (.npy [N, D]) into COLLECTION as points START_ID .. START_ID+N-1 (by default after
    the points it has, so importing batch after batch adds them all).

    Creates the collection (cosine distance, one unnamed vector) if it does not exist; into an existing
    collection with several named vectors, --vector NAME says which one EMBEDDINGS are (new points only: an
    upsert writes whole points, so ids that exist are refused rather than stripped of their other vectors and
    payload; qdrant-client's update_vectors adds a vector to them). Vectors are checked
    first (no NaN, inf or all-zero rows) and stored at unit length; nothing is written if any input is bad.
    """
    from ..sync import import_points, next_point_id
    from ..validate import check_labels

    x = load_npy(embeddings, "embeddings", mapped=True)  # read batch by batch: files larger than memory import
    payloads = load_jsonl(payload_path) if payload_path else None
    if payloads is not None and len(payloads) != len(x):
        raise InputError(f"{payload_path} has {len(payloads)} objects but {embeddings} has {len(x)} rows")
    if labels_path is not None:
        y = check_labels(load_npy(labels_path, "labels"), len(x))
        if not label_key.strip():
            raise InputError("--label-key is empty: name the payload key the labels go under")
        taken = next((r for r, p in enumerate(payloads or ()) if label_key in p), None)
        if taken is not None:  # the labels would silently replace the user's own values
            raise InputError(f"{payload_path} row {taken} already has the key '{label_key}': "
                             "choose another --label-key")
        payloads = [{**(payloads[i] if payloads else {}), label_key: int(y[i])} for i in range(len(x))]
    with store_from_settings(settings) as store:
        if start_id is None:
            start_id = next_point_id(store, collection, settings.vector)
        col = import_points(store, collection, x, payloads, start_id=start_id, batch_size=settings.batch_size,
                            vector=settings.vector)
        total = col.count()
    summary = {"collection": collection, "imported": int(len(x)), "first_id": start_id,
               "last_id": start_id + len(x) - 1, "points": total, "store": store.description}
    click.echo(json.dumps(summary) if as_json else
               f"imported {len(x)} points (ids {start_id}..{start_id + len(x) - 1}) into '{collection}' "
               f"in the {store.description}; it now has {total} points")


@main.command()
@click.argument("collection")
@click.option("--knn", type=click.Choice(["auto", "exact", "index"]), default="auto", show_default=True,
              help="How neighbours are found: exact = full scan in the store (same result as `cluster` on "
                   "the same array; cost grows with N^2), index = the HNSW index (fast, approximate), "
                   "auto = exact while points x dimension <= 5M, else index.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (counts, seconds per stage) as JSON.")
@click.option("--once", is_flag=True,
              help="One incremental pass: cluster only the points added since (a full re-clustering when due).")
@click.option("--watch", is_flag=True,
              help="Keep the collection clustered: an incremental pass every --interval seconds until SIGTERM.")
@click.option("--full", is_flag=True,
              help="Re-cluster everything, keeping cluster ids stable (each takes the old id it overlaps most).")
@click.option("--switch-vector", is_flag=True,
              help="Cluster --vector although the collection is clustered on another of its vectors: that "
                   "clustering is replaced (a collection holds one). Plain sync only.")
@click.option("--wait-lease", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds to wait while another writer (a daemon, another sync) holds the collection (else exit 3).")
@settings_options(*_STORE, "batch_size", "vector", "model", "domain", "device", "threads", "interval", "rebuild_every",
                  "growth", "metrics_port", "stall_after", "log_level", "partition_by")
def sync(collection: str, knn: str, as_json: bool, once: bool, watch: bool, full: bool, switch_vector: bool,
         wait_lease: float, settings: Settings) -> None:
    """Cluster every point of COLLECTION and write the result as payload.

    \b
    Reads the vectors in batches, takes each point's k nearest neighbours from the store's own index,
    runs the model and decodes the hierarchy, then writes one payload key per point:
      lander = {cluster, path, density, peak, model, generation}
    cluster is the point id of the cluster's peak when the cluster is first found (a re-sync keeps the
    id of the old cluster each new one overlaps most, so stored ids stay valid), path its supernode id
    at every level. The user's other payload keys are not touched. A payload index on lander.cluster is created, so
      qdrant-lander search COLLECTION --cluster ID --like POINT_ID
    (or any Qdrant query with a lander.cluster filter) stays fast.
    Everything is computed before the first write, so a sync that fails before it leaves the collection as it
    was; one killed while writing leaves points of two generations (status says "did not finish"), and the next
    sync rewrites them all.

    \b
    Incremental (docs/daemon.md): --once clusters only the points without a `lander` payload, --watch keeps
    doing so every --interval seconds (one log line per pass; --rebuild-every N re-clusters everything
    after N passes with new points; --metrics-port serves /metrics and /healthz, --stall-after makes /healthz
    report a pass that runs too long). One writer per
    collection. Exit codes: 0 done or stopped, 2 bad input, 3 another writer holds the collection,
    4 the server does not answer (--watch: after repeated failed passes).
    """
    modes = [m for m, on in (("once", once), ("watch", watch), ("full", full)) if on]
    if len(modes) > 1:
        raise click.UsageError(f"--{modes[0]} and --{modes[1]} cannot be combined: choose one")
    if modes and switch_vector:
        raise click.UsageError("--switch-vector replaces the clustering with a plain sync: run it without --" + modes[0])
    if modes:
        _sync_daemon(collection, modes[0], knn, wait_lease, as_json, settings)
    from ..daemon import stable_full_sync
    from ..lease import Lease

    lander = lander_from_settings(settings)
    with collection_from_settings(settings, collection, wait=wait_lease) as col:
        # A daemon may be relabelling this collection: wait for it or refuse, never race it; the lease is renewed
        # while the sync runs (a large collection's outlasts the lease's ttl).
        with Lease(col).holding(wait=wait_lease):
            report, *_ = stable_full_sync(col, lander, batch_size=settings.batch_size, knn=knn,
                                         switch_vector=switch_vector, partition_by=settings.partition_by)
    if as_json:
        click.echo(report.model_dump_json())
        return
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    copies = f" ({report.copies} repeat another point's vector: clustered with it)" if report.copies else ""
    click.echo(f"synced '{collection}': {report.points} points{copies} -> {report.clusters} clusters in {report.levels} "
               f"levels at tau {report.tau} (generation {report.generation}, model {report.model}, domain {report.domain}); "
               f"{stages}" + (f"; peak memory {report.peak_rss_mb:,.0f} MB" if report.peak_rss_mb else ""))


def _sync_daemon(collection: str, mode: str, knn: str, wait_lease: float, as_json: bool,
                 settings: Settings) -> NoReturn:
    """``sync --once/--full/--watch``: the incremental daemon (qdrant_lander.daemon); exits with its code."""
    import logging

    from ..daemon import DaemonOptions, run

    if mode == "watch":
        logging.getLogger("qdrant_lander").setLevel(settings.log_level)  # one line per pass at INFO
    options = DaemonOptions(interval=settings.interval, rebuild_every=settings.rebuild_every, growth=settings.growth,
                            wait_lease=wait_lease, knn=knn, batch_size=settings.batch_size, progress=mode == "full",
                            partition_by=settings.partition_by)
    lander = lander_from_settings(settings)
    with collection_from_settings(settings, collection, wait=wait_lease) as col:
        code, report = run(col, lander, mode, options, settings.metrics_port, settings.stall_after)
    if report is not None:
        click.echo(report.model_dump_json() if as_json else report.log_line())
    sys.exit(code)


@main.command()
@click.argument("collection")
@click.option("--cluster", "cluster_id", required=True, type=int, help="Cluster id (the point id of its peak).")
@click.option("--like", "like", type=click.IntRange(0), default=None, help="Query with the vector of this point id.")
@click.option("--vector-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Query with this vector (.npy of shape [D] or [1, D]).")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1), help="Number of hits.")
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
@settings_options(*_STORE, "vector")
def search(collection: str, cluster_id: int, like: int | None, vector_file: Path | None, limit: int, as_json: bool,
           settings: Settings) -> None:
    """Nearest points of COLLECTION within one cluster.

    Give the query as --like POINT_ID or --vector-file FILE. In your own code, the same filter is
    qdrant_lander.payload.cluster_filter(ID), a qdrant-client Filter for query_points/scroll/count.
    """
    from ..payload import cluster_filter
    from ..sync import last_sync
    from ..validate import check_embeddings

    if (like is None) == (vector_file is None):
        raise InputError("give exactly one query: --like POINT_ID or --vector-file FILE")
    with clustered_from_settings(settings, collection) as col:
        if like is not None:
            found = col.retrieve([like], vectors=True, payload=False)
            if len(found.ids) == 0:
                raise InputError(f"point {like} does not exist in collection '{collection}'")
            query = found.vectors[0]
        else:
            query = load_npy(vector_file, "query vector")
            if query.ndim > 1 and query.shape[0] != 1:  # flattened, several vectors read as one of the wrong size
                raise InputError(f"{vector_file} holds {query.shape[0]} vectors (shape {query.shape}); give one, "
                                 "of shape [D] or [1, D]")
            if not (np.issubdtype(query.dtype, np.integer) or np.issubdtype(query.dtype, np.floating)):
                raise InputError(f"{vector_file} holds {query.dtype} values: a query vector is real numbers")
            query = query.astype(np.float32).reshape(-1)
            if query.size != col.info().dim:
                raise InputError(f"query vector has size {query.size}, collection '{collection}' has {col.info().dim}")
            try:  # NaN, inf, all zeros: the embeddings' own checks
                check_embeddings(query[None], min_points=1)
            except InputError as e:
                raise InputError(f"query vector from {vector_file}: {e}") from None
        hits = col.search(query, limit=limit, filter=cluster_filter(cluster_id))
        synced = bool(hits) or last_sync(col) is not None  # read only for the "no points" message
    if as_json:
        click.echo(json.dumps([{"id": h.id, "score": h.score, "payload": h.payload} for h in hits]))
        return
    if not hits:
        click.echo(f"no points in cluster {cluster_id}" + ("" if synced else f" (collection '{collection}' was never "
                                                                           "synced: run qdrant-lander sync first)"), err=True)
    for h in hits:
        shown = {k: v for k, v in h.payload.items() if k != "lander"}
        click.echo(f"{h.id}\t{h.score:.4f}\t{json.dumps(shown, ensure_ascii=False)}")


@main.command()
@click.argument("collection")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="int64 .npy: the cluster id of every point, ordered by point id, -1 where unclustered.")
@click.option("--ids-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the point ids (int64 .npy) in the same order, for collections whose ids have gaps.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@settings_options(*_STORE, "batch_size", "vector")
def labels(collection: str, out: Path, ids_out: Path | None, as_json: bool, settings: Settings) -> None:
    """Write the cluster id of every point of COLLECTION (for evaluation and your own analysis)."""
    from ..sync import read_labels

    check_outputs(out, ids_out)
    with clustered_from_settings(settings, collection) as col:
        ids, lab = read_labels(col, batch_size=settings.batch_size, progress=True)
    save_npy(out, lab)
    if ids_out is not None:
        save_npy(ids_out, ids)
    clustered = lab[lab >= 0]
    summary = {"points": int(len(lab)), "clustered": int(clustered.size),
               "clusters": int(np.unique(clustered).size), "out": str(out)}
    click.echo(json.dumps(summary) if as_json else
               f"{summary['points']} labels ({summary['clustered']} clustered, {summary['clusters']} clusters) "
               f"written to {out}")


@main.command()
@click.argument("collection")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1), help="How many largest clusters to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@settings_options(*_STORE, "vector")
def status(collection: str, top: int, as_json: bool, settings: Settings) -> None:
    """Points, clustered/unclustered counts, clusters, largest clusters, model and last sync of COLLECTION."""
    from ..sync import status as read_status

    with clustered_from_settings(settings, collection) as col:
        st = read_status(col, top=top)
    if as_json:
        click.echo(st.model_dump_json())
        return
    click.echo(f"collection   {st.collection}\npoints       {st.points}\nclustered    {st.clustered}\n"
               f"unclustered  {st.unclustered}\nclusters     {st.clusters}")
    if st.generation is not None:
        note = "" if st.state == "complete" else "  (last sync did not finish: run sync again)"
        if st.vector:
            click.echo(f"vector       {st.vector}")
        if st.partition_by:
            click.echo(f"partitioned  by '{st.partition_by}' (no cluster holds points of two of its values)")
        click.echo(f"model        {st.model} (domain {st.domain or 'not recorded'})\ngeneration   {st.generation}{note}\n"
                   f"last sync    {st.last_sync:%Y-%m-%d %H:%M:%S} UTC")
    elif st.clustered:  # labels without a sync record: the record was removed (or written by another tool)
        click.echo(f"last sync    not recorded ({st.clustered} points carry labels; `qdrant-lander sync {collection}` "
                   "records one)")
    else:
        click.echo("last sync    never (run: qdrant-lander sync " + collection + ")")
    if st.largest:
        click.echo("largest      " + ", ".join(f"{c} ({n})" for c, n in st.largest))
    if st.unindexed:
        click.echo(f"unindexed    {st.unindexed} (searches scan them; once ~10 MB of vectors gather, sync --knn index "
                   "and daemon passes index them)")
