"""The daemon's /metrics and /healthz, served for real over HTTP on a free port."""

import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qdrant_lander.errors import InputError
from qdrant_lander.observability import Metrics


@pytest.fixture
def served():
    m = Metrics()
    port = m.start(0, host="127.0.0.1")
    yield m, f"http://127.0.0.1:{port}"
    m.stop()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def samples(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics_count_passes_points_merges_and_errors(served):
    m, base = served
    m.record_pass(points=120, merges=2, created=5, seconds=0.8, model_seconds=0.3)
    m.record_pass(points=30, merges=1, seconds=3.0, model_seconds=0.2, waiting=40)
    m.record_error("query_batch_points")
    m.record_error("query_batch_points")
    m.record_error("set_payload")
    status, ctype, text = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    s = samples(text)
    assert s[("qlander_points_clustered_total", ())] == 150
    assert s[("qlander_merges_total", ())] == 3
    assert s[("qlander_clusters_created_total", ())] == 5
    assert s[("qlander_passes_total", (("outcome", "ok"),))] == 2
    assert s[("qlander_passes_total", (("outcome", "failed"),))] == 0
    assert s[("qlander_model_seconds_total", ())] == pytest.approx(0.5)
    assert s[("qlander_qdrant_errors_total", (("operation", "query_batch_points"),))] == 2
    assert s[("qlander_qdrant_errors_total", (("operation", "set_payload"),))] == 1
    # histogram: one pass <= 1 s, both <= 5 s
    assert s[("qlander_pass_seconds_bucket", (("le", "1.0"),))] == 1
    assert s[("qlander_pass_seconds_bucket", (("le", "5.0"),))] == 2
    assert s[("qlander_pass_seconds_count", ())] == 2
    assert s[("qlander_last_pass_success", ())] == 1
    assert s[("qlander_points_waiting", ())] == 40  # the last pass's figure, not a sum


def test_healthz_follows_the_last_pass(served):
    m, base = served
    status, ctype, body = get(base + "/healthz")
    assert status == 200 and ctype == "application/json" and json.loads(body)["status"] == "starting"
    m.record_pass(points=1, seconds=0.1)
    assert get(base + "/healthz")[0] == 200
    m.record_failure(ConnectionError("qdrant:6333 refused"), seconds=0.2)
    status, _, body = get(base + "/healthz")
    h = json.loads(body)
    assert status == 503
    assert h["status"] == "failing" and h["last_pass_ok"] is False and "refused" in h["last_error"]
    assert h["passes"] == {"ok": 1, "failed": 1}
    assert samples(get(base + "/metrics")[2])[("qlander_last_pass_success", ())] == 0
    m.record_pass(points=1, seconds=0.1)  # recovers on the next good pass
    status, _, body = get(base + "/healthz")
    assert status == 200 and json.loads(body)["last_error"] is None


def test_healthz_reports_a_pass_that_runs_past_stall_after():
    m = Metrics(stall_after=0.2)
    port = m.start(0, host="127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    try:
        m.record_pass(points=1, seconds=0.1)
        with m.running():
            status, _, body = get(base + "/healthz")
            assert status == 200 and json.loads(body)["pass_running_s"] is not None  # running, not yet stalled
            time.sleep(0.3)
            status, _, body = get(base + "/healthz")
            assert status == 503 and json.loads(body)["status"] == "stalled", body
            assert json.loads(body)["pass_running_s"] >= 0.2
            assert samples(get(base + "/metrics")[2])[("qlander_pass_running_seconds", ())] >= 0.2
        status, _, body = get(base + "/healthz")  # the pass ended: healthy again, nothing running
        assert status == 200 and json.loads(body)["pass_running_s"] is None
        assert samples(get(base + "/metrics")[2])[("qlander_pass_running_seconds", ())] == 0
    finally:
        m.stop()


def test_without_stall_after_a_long_pass_stays_healthy():
    m = Metrics()
    with m.running():
        time.sleep(0.05)
        healthy, body = m.health()
    assert healthy and body["status"] == "starting" and body["pass_running_s"] >= 0.05


def test_a_daemon_pass_blocked_in_a_store_call_shows_as_stalled(tmp_path):
    """A real daemon pass waiting on the store (as on a server call that hangs): /healthz sees it, and the
    mark clears when the call returns."""
    import threading

    import numpy as np

    from qdrant_lander.daemon import Daemon, DaemonOptions
    from qdrant_lander.lander import Lander
    from qdrant_lander.stores.edge import EdgeStore
    from qdrant_lander.sync import import_points

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    m = Metrics(stall_after=0.2)
    with EdgeStore(tmp_path / "q") as store:
        col = import_points(store, "docs", x, progress=False)
        daemon = Daemon(col, Lander(domain="any", device="cpu", threads=1), DaemonOptions(growth=0), m)
        daemon.run_pass(full=True)
        release, entered = threading.Event(), threading.Event()
        scroll = col.scroll

        def hanging_scroll(*args, **kwargs):
            entered.set()
            release.wait(30)
            return scroll(*args, **kwargs)

        col.scroll = hanging_scroll
        worker = threading.Thread(target=daemon.run_pass)
        worker.start()
        assert entered.wait(30)
        time.sleep(0.3)
        healthy, body = m.health()
        release.set()
        worker.join(60)
    assert not healthy and body["status"] == "stalled" and body["last_pass_ok"] is True
    assert m.health()[0] and m.health()[1]["pass_running_s"] is None


def test_unknown_path_is_404_and_instances_do_not_share_counters(served):
    m, base = served
    assert get(base + "/")[0] == 404
    other = Metrics()
    m.record_pass(points=7, seconds=0.1)
    assert samples(get(base + "/metrics")[2])[("qlander_points_clustered_total", ())] == 7
    assert other.health() == (True, {"status": "starting", "last_pass_ok": None, "last_pass_at": None,
                                     "last_error": None, "passes": {"ok": 0, "failed": 0}, "pass_running_s": None})


def test_port_in_use_is_an_error():
    a = Metrics()
    port = a.start(0, host="127.0.0.1")
    try:
        with pytest.raises(InputError, match=f"{port}.*--metrics-port"):
            Metrics().start(port, host="127.0.0.1")
    finally:
        a.stop()


def test_instrumented_collection_counts_failed_store_calls(tmp_path):
    """A real store collection: failures of plain calls and of generators (scroll) are counted."""
    import numpy as np
    from qdrant_client import QdrantClient

    from qdrant_lander.errors import StoreError
    from qdrant_lander.stores.client import ServerStore

    m = Metrics()
    store = ServerStore(QdrantClient(":memory:"))
    col = m.instrument(store.create("docs", 4))
    col.upsert(np.arange(3), np.eye(3, 4, dtype=np.float32))
    assert col.count() == 3 and col.name == "docs"  # calls and attributes pass through
    assert sum(len(b.ids) for b in col.scroll(batch_size=2)) == 3
    with pytest.raises(StoreError):
        col.knn(np.arange(3), np.eye(3, 4, dtype=np.float32), k=5)  # only 2 other points exist
    store.client.delete_collection("docs")  # the server loses the collection under the daemon
    with pytest.raises(Exception):
        list(col.scroll(batch_size=2))
    s = samples(generate_latest(m.registry).decode())
    assert s[("qlander_qdrant_errors_total", (("operation", "knn"),))] == 1
    assert s[("qlander_qdrant_errors_total", (("operation", "scroll"),))] == 1
    assert ("qlander_qdrant_errors_total", (("operation", "count"),)) not in s


def test_watch_daemon_serves_metrics_and_health(tmp_path):
    """`qdrant-lander sync --watch --metrics-port` in a subprocess: scraped, then stopped with SIGTERM."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import numpy as np

    from qdrant_lander.stores.edge import EdgeStore
    from qdrant_lander.sync import import_points

    x = np.load(Path(__file__).resolve().parents[1] / "qdrant_lander" / "demo_data" / "clinc_sample.npz")
    with EdgeStore(tmp_path / "qd") as store:
        import_points(store, "docs", x["embeddings"][:300].astype(np.float32), progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = "import sys; from qdrant_lander.cli import main; sys.exit(main())"
    env = {**os.environ, "QLANDER_PATH": str(tmp_path / "qd"), "QLANDER_INTERVAL": "0.5", "OMP_NUM_THREADS": "1",
           "QLANDER_STALL_AFTER": "600"}
    proc = subprocess.Popen([sys.executable, "-c", cli, "sync", "docs", "--watch", "--metrics-port", str(port)],
                            env=env, cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = json.loads(get(f"http://127.0.0.1:{port}/healthz")[2])
                if health["passes"]["ok"] >= 2:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert health is not None and health["status"] == "ok" and health["passes"]["ok"] >= 2, health
        s = samples(get(f"http://127.0.0.1:{port}/metrics")[2])
        assert s[("qlander_points_clustered_total", ())] == 300  # the first (full) pass; later ones find nothing new
        assert s[("qlander_last_pass_success", ())] == 1
        assert s[("qlander_pass_seconds_count", ())] >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
