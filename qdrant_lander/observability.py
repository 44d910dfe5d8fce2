"""Prometheus metrics and a health endpoint for the watch daemon.

The daemon calls :meth:`Metrics.record_pass` after every pass (or :meth:`Metrics.record_failure` when
a pass raised) and :meth:`Metrics.record_error` for every failed Qdrant call; :meth:`Metrics.start`
serves ``/metrics`` (Prometheus text format) and ``/healthz`` (JSON; HTTP 503 when the last pass
failed, or when the pass in progress has run past ``stall_after`` seconds, so a Kubernetes probe or a
load balancer can act on it) from a background thread. A pass that hangs (a server call waiting out the
client's timeout) ends in neither success nor failure: :meth:`Metrics.running` marks the pass in progress
so it can be seen.
Each :class:`Metrics` has its own registry, so two daemons in one process (or tests) never share
counters.
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import InputError

T = TypeVar("T")

# Passes range from milliseconds (a few new points) to many minutes (a full sync of millions).
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """Counters of the daemon's work plus the state ``/healthz`` reports.

    ``stall_after``: seconds a pass may run before ``/healthz`` calls the daemon stalled (None = never: a
    full sync of a large collection legitimately runs long, so only the operator knows the bound).
    """

    def __init__(self, stall_after: float | None = None) -> None:
        self.stall_after = stall_after
        self.registry = CollectorRegistry()
        r = self.registry
        self.points = Counter("qlander_points_clustered", "Points given a cluster id.", registry=r)
        self.passes = Counter("qlander_passes", "Clustering passes, by outcome.", ["outcome"], registry=r)
        self.merges = Counter("qlander_merges", "Clusters merged into another (new points gave a peak a denser parent "
                              "in another cluster).", registry=r)
        self.created = Counter("qlander_clusters_created", "New clusters started.", registry=r)
        self.pass_seconds = Histogram(
            "qlander_pass_seconds", "Wall time of one pass.", buckets=PASS_BUCKETS, registry=r
        )
        self.model_seconds = Counter("qlander_model_seconds", "Time spent running the model.", registry=r)
        self.qdrant_errors = Counter(
            "qlander_qdrant_errors", "Failed Qdrant calls, by operation.", ["operation"], registry=r
        )
        self.last_success = Gauge(
            "qlander_last_pass_success", "1 if the last pass succeeded, 0 if it failed.", registry=r
        )
        self.last_pass_time = Gauge(
            "qlander_last_pass_timestamp_seconds", "Unix time the last pass ended.", registry=r
        )
        self.waiting = Gauge(
            "qlander_points_waiting", "Points without a cluster id when the last pass ended.", registry=r
        )
        Gauge("qlander_pass_running_seconds", "How long the pass in progress has run (0 between passes).",
              registry=r).set_function(lambda: self._running_for() or 0.0)
        for outcome in ("ok", "failed"):  # export zeros from the start, so rate() works on first failure
            self.passes.labels(outcome)
        self._lock = threading.Lock()
        self._last_ok: bool | None = None
        self._last_error: str | None = None
        self._last_at: float | None = None
        self._counts = {"ok": 0, "failed": 0}
        self._started: float | None = None  # monotonic start of the pass in progress
        self._server: ThreadingHTTPServer | None = None

    def record_pass(
        self, *, points: int, merges: int = 0, created: int = 0, seconds: float, model_seconds: float = 0.0,
        waiting: int = 0,
    ) -> None:
        """A pass that finished: ``points`` newly clustered, ``merges`` clusters merged away, ``waiting``
        points still unlabelled (a gauge that keeps rising means arrivals outpace the daemon)."""
        self.points.inc(points)
        self.waiting.set(waiting)
        self.merges.inc(merges)
        self.created.inc(created)
        self.model_seconds.inc(model_seconds)
        self._finish("ok", seconds, None)

    def record_failure(self, error: BaseException | str, *, seconds: float) -> None:
        """A pass that raised; ``/healthz`` turns unhealthy until the next pass succeeds."""
        self._finish("failed", seconds, str(error) or type(error).__name__)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Marks a pass in progress, however it ends (record_pass/record_failure report how)."""
        with self._lock:
            self._started = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._started = None

    def _running_for(self) -> float | None:
        started = self._started
        return None if started is None else time.monotonic() - started

    def record_error(self, operation: str) -> None:
        """One failed Qdrant call (``operation`` = e.g. ``scroll``, ``query_batch_points``, ``set_payload``)."""
        self.qdrant_errors.labels(operation).inc()

    def instrument(self, collection: T) -> T:
        """``collection`` (a store Collection) with every failed call counted by method name.

        Wrap the daemon's collection once and every store call, generators such as ``scroll``
        included, feeds ``qlander_qdrant_errors_total{operation=...}``; errors still propagate.
        """
        return _Counted(collection, self)  # type: ignore[return-value]

    def _finish(self, outcome: str, seconds: float, error: str | None) -> None:
        self.passes.labels(outcome).inc()
        self.pass_seconds.observe(seconds)
        now = time.time()
        self.last_success.set(1 if error is None else 0)
        self.last_pass_time.set(now)
        with self._lock:
            self._last_ok, self._last_error, self._last_at = error is None, error, now
            self._counts[outcome] += 1

    def health(self) -> tuple[bool, dict]:
        """(healthy, body): healthy until a pass fails or the pass in progress outruns ``stall_after``;
        ``status`` is starting, ok, failing or stalled."""
        with self._lock:
            ok = self._last_ok
            running = self._running_for()
            stalled = running is not None and self.stall_after is not None and running > self.stall_after
            body = {
                "status": "stalled" if stalled else "starting" if ok is None else "ok" if ok else "failing",
                "last_pass_ok": ok,
                "last_pass_at": self._last_at,
                "last_error": self._last_error,
                "passes": dict(self._counts),
                "pass_running_s": None if running is None else round(running, 1),
            }
        return ok is not False and not stalled, body

    def start(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` and ``/healthz`` in a daemon thread; returns the bound port (0 = any free)."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
                elif path == "/healthz":
                    healthy, body = metrics.health()
                    self._send(200 if healthy else 503, "application/json", json.dumps(body).encode())
                else:
                    self._send(404, "text/plain", b"not found: try /metrics or /healthz\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes every few seconds: keep logs clean
                pass

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise InputError(f"cannot serve metrics on {host}:{port}: {e.strerror} (choose another --metrics-port)") from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="qlander-metrics", daemon=True).start()
        return self._server.server_address[1]

    def stop(self) -> None:
        """Stop serving (the daemon's shutdown path and tests)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Counted:
    """Delegates everything to ``inner``; exceptions from its methods are counted, then re-raised."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self._inner, self._metrics = inner, metrics

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr
        record = functools.partial(self._metrics.record_error, name)

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                out = attr(*args, **kwargs)
            except Exception:
                record()
                raise
            return _counted_iter(out, record) if inspect.isgenerator(out) else out

        return call


def _counted_iter(gen: Any, record: Any) -> Any:
    try:
        yield from gen
    except Exception:
        record()
        raise
