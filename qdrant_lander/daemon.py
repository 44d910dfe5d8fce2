"""The sync daemon: incremental passes on an interval, full re-clusterings with stable ids, one writer.

A pass is incremental (:func:`~qdrant_lander.incremental.incremental_pass`) unless a full one is
due: the collection was never fully synced or its last full sync crashed, ``rebuild_every``
incremental passes labelled points since the last full one (watch mode; idle passes do not count), or
the collection grew by ``growth`` (a share) since the last full sync. The
last rule matters early on: a model clusters 500 points of 75 topics far worse than 10,000, and an
incremental pass only attaches and merges, it never splits what a small first sync glued together.
Growth-triggered full syncs come at geometric intervals, so their amortised cost per point stays
constant. Every full sync maps its clusters onto the previous ids (:mod:`~qdrant_lander.stable_ids`).

Exit codes (``qdrant-lander sync`` returns them):

* 0 ``EXIT_OK``: the pass(es) finished, or watch mode was stopped by SIGTERM/SIGINT.
* 2 ``EXIT_INPUT``: bad input or configuration (missing collection, model that does not fit, ...).
* 3 ``EXIT_LEASE``: another writer holds the collection (its lease, or on the embedded store the
  process lock), or took the lease over while we ran.
* 4 ``EXIT_STORE``: ``max_failures`` passes in a row failed (store unreachable, say); watch mode
  only, a single failed pass is logged and retried after the interval.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
from pydantic import BaseModel, Field

from .errors import CollectionNotReady, InputError, LanderError, MissingExtraError, ModelError, StoreUnreachable
from .caches import LabelCache, NeighbourCache
from .config import Settings
from .incremental import (FRESH_ID_START, INCREMENTAL_META, NeedsFullSync, PassReport, incremental_pass, load_state,
                          replay_journal, sync_state)
from .knn import KnnGraph, rows_of
from .lander import Lander
from .lease import LEASE_TTL, Lease, LeaseHeld
from .observability import Metrics
from .payload import unclustered_filter
from .stable_ids import stable_ids
from .stores.base import Collection
from .sync import KnnMode, SyncReport, ensure_indexes, full_sync, last_sync, read_labels

log = logging.getLogger(__name__)

EXIT_OK, EXIT_INPUT, EXIT_LEASE, EXIT_STORE = 0, LanderError.exit_code, LeaseHeld.exit_code, StoreUnreachable.exit_code


_SETTINGS = Settings.model_fields  # the defaults the CLI, environment and TOML file share


class DaemonOptions(BaseModel):
    interval: float = Field(_SETTINGS["interval"].default, gt=0, description="Seconds between passes in watch mode")
    rebuild_every: int = Field(_SETTINGS["rebuild_every"].default, ge=0, description="Full re-clustering after N "
                               "incremental passes that labelled points, in watch mode (0 = never)")
    growth: float = Field(_SETTINGS["growth"].default, ge=0, description="Full re-clustering once the collection "
                          "grew by this share since the last full one (0 = never)")
    hops: int = Field(1, ge=1, description="Rings of neighbours scored around new points")
    max_new: int = Field(20_000, ge=1, description="New points per incremental pass (bounds memory and latency)")
    knn: KnnMode = Field("auto", description="Neighbours of full passes (see full_sync)")
    batch_size: int = Field(_SETTINGS["batch_size"].default, ge=1)
    lease_ttl: float = Field(LEASE_TTL, gt=0, description="Seconds a lease lasts without renewal (renewed every third)")
    wait_lease: float = Field(0.0, ge=0, description="Seconds to wait for another writer's lease")
    partition_by: str | None = Field(None, description="Payload key no cluster may span two values of (full "
                                     "passes; see full_sync); None: the last full sync's; '': none")
    max_failures: int = Field(5, ge=1, description="Failed passes in a row before watch mode gives up")
    progress: bool = False


def stable_full_sync(col: Collection, lander: Lander, *, batch_size: int = 1024, progress: bool = True,
                     knn: KnnMode = "auto", on_graph: Callable[[np.ndarray, np.ndarray, KnnGraph], None] | None = None,
                     switch_vector: bool = False,
                     partition_by: str | None = None) -> tuple[SyncReport, np.ndarray, np.ndarray]:
    """:func:`full_sync` that keeps cluster ids: each new cluster takes the previous generation's id it
    overlaps most (:mod:`qdrant_lander.stable_ids`), so ids users stored stay valid across re-runs.
    Returns the report, and the point ids (ascending) with their previous labels (-1 where a point had none)
    as they were before the sync.

    A journal of merges an interrupted pass left is replayed first, so the old labels are complete, and
    the fresh-id counter is moved past every id handed out before the sync writes any of them: were it
    moved after, a crash in between would let the next pass hand one out again.

    A collection clustered on another of its named vectors is refused (InputError) unless ``switch_vector``:
    its payload holds one clustering, which the sync would replace. ``partition_by``: see :func:`full_sync`; None
    keeps the last full sync's key, "" clusters without one."""
    last = last_sync(col)
    if last is not None and not switch_vector:
        last.check_vector(col.name, col.vector)
    replay_journal(col)
    old_ids, old_labels = read_labels(col, batch_size=batch_size)

    def rename(ids: np.ndarray, clusters: np.ndarray) -> np.ndarray:
        out = stable_ids(np.append(old_labels, -1)[rows_of(old_ids, ids)], clusters)  # -1: no old label
        state = load_state(col)
        top = int(out.max(initial=-1))
        nxt = max(state.next_fresh_id, top + 1) if top >= FRESH_ID_START else state.next_fresh_id
        col.set_meta(INCREMENTAL_META,
                     state.model_copy(update={"pending_merges": [], "next_fresh_id": nxt}).model_dump())
        return out

    key = (last.partition_by if last is not None else None) if partition_by is None else partition_by
    report = full_sync(col, lander, batch_size=batch_size, progress=progress, knn=knn, rename=rename, on_graph=on_graph,
                       partition_by=key or None)
    return report, old_ids, old_labels


def _as_last_synced(col: Collection, lander: Lander) -> Lander:
    """``lander`` with ``auto`` resolved as the collection's last full sync resolved it, so incremental
    passes decode like it; unresolved when there is none (the first pass is then a full one). Only the
    default model has presets: any other decodes with its own card, whichever model synced last."""
    try:
        state = sync_state(col)
    except NeedsFullSync:
        state = None
    if state is not None and state.model != lander.card.name:  # e.g. a --model left off the daemon's command line
        log.warning("collection '%s' was last fully synced with model %s, this daemon runs %s: incremental passes "
                    "decode new points with it until a full pass (`sync --full`) re-clusters everything; pass the "
                    "same --model to keep the first", col.name, state.model, lander.card.name)
    if lander.domain != "auto":
        return lander
    if lander.model is not None:
        return lander.for_domain("any")
    return lander.for_domain(state.domain or "any") if state else lander  # no domain: synced before auto existed


class Daemon:
    """Keeps one collection clustered. Holds the collection's lease while it works."""

    def __init__(self, col: Collection, lander: Lander, options: DaemonOptions | None = None,
                 metrics: Metrics | None = None, owner: str | None = None):
        self.col, self.requested, self.lander = col, lander, _as_last_synced(col, lander)
        self.options = options or DaemonOptions()
        self.metrics = metrics
        self.cache = NeighbourCache(self.lander.card.k)
        self.labels = LabelCache()  # valid while this daemon holds the lease without a break (_take_lease)
        self.lease = Lease(col, ttl=self.options.lease_ttl, owner=owner)
        self.passes = 0
        self.since_full = 0  # incremental passes that labelled points since the last full one

    def full_pass(self) -> PassReport:
        """Re-cluster everything; clusters keep the ids they had where they overlap most."""
        t0 = time.perf_counter()
        o = self.options
        self.labels.clear()  # a full pass rewrites every label (and may fail half-way)
        # The model as asked for: auto is resolved again from all the vectors the collection has now.
        rep, old_ids, old_labels = stable_full_sync(self.col, self.requested, batch_size=o.batch_size, progress=o.progress,
                                           knn=o.knn, on_graph=self._seed, partition_by=o.partition_by)
        self.lander = self.requested.for_domain(rep.domain)  # the passes until the next full one keep its choice
        labels = self.labels.load(self.col, batch_size=o.batch_size)  # the next passes read no labels
        kept = len(np.intersect1d(np.unique(labels), np.unique(old_labels[old_labels >= 0])))
        new = ~np.isin(self.labels.ids(), old_ids[old_labels >= 0])  # labelled now, not before (deleted: neither)
        return PassReport(full=True, new=int(new.sum()),
                          created=rep.clusters - kept, seconds=round(time.perf_counter() - t0, 4),
                          model_seconds=rep.seconds.get("cluster", 0.0), field=rep.points, sync=rep)

    def _seed(self, ids: np.ndarray, x: np.ndarray, graph: KnnGraph) -> None:
        """Start the neighbour cache from a full sync's graph (its k is the decoding's, auto resolved)."""
        self.cache = NeighbourCache(graph.k)
        self.cache.seed(ids, x, graph)

    def _full_due(self) -> bool:
        try:
            state = sync_state(self.col)
        except NeedsFullSync as e:  # the pass line says "full pass"; a daemon waiting for points would repeat this
            log.debug("%s", e)
            return True
        o = self.options
        if o.partition_by is not None and (o.partition_by or None) != state.partition_by:
            return True  # asked for another partition key than the clustering has: only a full pass can apply it
        points, waiting = self.col.count(), self.col.count(unclustered_filter())
        if points and waiting == points:  # nothing labelled to attach to (payloads cleared, collection remade)
            return True
        if o.growth <= 0:
            return False
        # Unlabelled points count too: a collection whose payloads were cleared or re-upserted (re-embedded) is
        # as new as one that grew, and passes never split what they attach (an incremental pass over 1,500
        # cleared points: Fp 0.790 against the full sync's 0.902).
        return points >= (1 + o.growth) * state.points or waiting >= o.growth * (points - waiting)

    def run_pass(self, *, full: bool = False) -> PassReport:
        """One pass (full if asked or due), logged in one line and counted in the metrics."""
        t0 = time.perf_counter()
        try:
            with self.metrics.running() if self.metrics is not None else nullcontext():  # /healthz sees a hang
                if full or self._full_due():
                    report = self.full_pass()
                else:
                    o = self.options
                    report = incremental_pass(self.col, self.lander.scorer, self.lander.card, cache=self.cache,
                                              labels=self.labels, hops=o.hops, max_new=o.max_new,
                                              batch_size=o.batch_size)
                    if report.new:  # else the next passes' queries scan every arrival since the last full pass
                        t1 = time.perf_counter()
                        self.col.index_arrivals()
                        report.seconds = round(report.seconds + time.perf_counter() - t1, 4)
        except CollectionNotReady:
            raise  # not a failure: too few points yet
        except Exception as e:
            if self.metrics is not None:
                self.metrics.record_failure(e, seconds=time.perf_counter() - t0)
            raise
        report.domain = self.lander.domain
        report.waiting = self.col.count(unclustered_filter())
        self.passes += 1
        self.since_full = 0 if report.full else self.since_full + (report.new > 0)
        log.info("%s", report.log_line())
        if self.metrics is not None:
            self.metrics.record_pass(points=report.new, merges=report.merged, created=report.created,
                                     seconds=report.seconds, model_seconds=report.model_seconds,
                                     waiting=report.waiting)
        return report

    @contextmanager
    def _holding(self) -> Iterator[None]:
        """The lease for the block; another writer may have relabelled points while we did not hold it, so
        the labels cached before are dropped (the kNN lists stay: only vectors change them)."""
        with self.lease.holding(wait=self.options.wait_lease):
            self.labels.clear()
            ensure_indexes(self.col)  # a user may have dropped one: passes facet and filter on them
            yield

    def once(self, *, full: bool = False) -> PassReport:
        """Take the lease, run one pass, give the lease back."""
        with self._holding():
            return self.run_pass(full=full)

    def watch(self, stop: threading.Event | None = None) -> int:
        """Pass after pass until ``stop`` is set (or SIGTERM/SIGINT); returns an exit code."""
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        try:
            with self._holding():  # renewed while a pass runs (a full one can outlast the ttl) and between passes
                return self._passes(stop)
        except LeaseHeld as e:  # another writer holds the collection, or took it over
            log.error("%s", e)
            return EXIT_LEASE

    def _passes(self, stop: threading.Event) -> int:
        o = self.options
        failures, waiting = 0, False
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.lease.renew()  # re-reads the record: a takeover is noticed at the next pass
                report = self.run_pass(full=0 < o.rebuild_every <= self.since_full)
                failures, waiting = 0, False
            except LeaseHeld:
                raise  # watch() says so and exits EXIT_LEASE
            except CollectionNotReady as e:  # a daemon started before the data: wait for it
                if not waiting:
                    log.info("waiting for points: %s", e)
                waiting, report = True, None
            except (InputError, ModelError, MissingExtraError) as e:  # stored vectors that cannot be clustered too
                log.error("%s", e)
                return EXIT_INPUT
            except Exception as e:  # the store's own errors (network, timeouts) are retried
                failures += 1
                level = logging.ERROR if isinstance(e, LanderError) else logging.WARNING
                log.log(level, "pass failed (%d in a row): %s", failures, e, exc_info=log.isEnabledFor(logging.DEBUG))
                if failures >= o.max_failures:
                    log.error("giving up after %d failed passes", failures)
                    return EXIT_STORE
                report = None
            if report is not None and not report.full and report.new >= o.max_new:
                continue  # a backlog: go on at once
            stop.wait(max(0.0, o.interval - (time.monotonic() - started)))
        log.info("stopped after %d passes", self.passes)
        return EXIT_OK


def run(col: Collection, lander: Lander, mode: str, options: DaemonOptions,
        metrics_port: int | None = None, stall_after: float | None = None) -> tuple[int, PassReport | None]:
    """What ``qdrant-lander sync --once/--full/--watch`` does: (exit code, report of the single pass).

    ``/metrics`` and ``/healthz`` are served on ``metrics_port`` in watch mode; ``/healthz`` turns 503 while
    a pass has run longer than ``stall_after`` seconds.
    """
    metrics = Metrics(stall_after) if metrics_port is not None else None
    daemon = Daemon(metrics.instrument(col) if metrics else col, lander, options, metrics)  # counts store errors
    if mode == "watch":
        if metrics is not None:
            port = metrics.start(metrics_port)
            log.info("serving /metrics and /healthz on port %d", port)
        try:
            return daemon.watch(), None
        finally:
            if metrics is not None:
                metrics.stop()
    return EXIT_OK, daemon.once(full=mode == "full")  # LeaseHeld propagates: the caller exits EXIT_LEASE
