"""One writer per collection: the lease kept in the store, two daemons on one collection, and the
embedded store's process lock."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from click.testing import CliRunner
from qdrant_client import QdrantClient

from benchmarks.tasks import clinc_75_75, subsample_classes
from qdrant_lander import Lander
from qdrant_lander.cli import main
from qdrant_lander.daemon import EXIT_LEASE, EXIT_OK, Daemon, DaemonOptions
from qdrant_lander.errors import StoreBusy
from qdrant_lander.lease import LEASE_META, Lease, LeaseHeld
from qdrant_lander.payload import unclustered_filter
from qdrant_lander.stores.client import ServerStore
from qdrant_lander.stores.edge import EdgeStore
from qdrant_lander.sync import import_points

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def col():
    store = ServerStore(QdrantClient(":memory:"))
    x = subsample_classes(clinc_75_75().test, 1, seed=3).x  # 150 points
    yield import_points(store, "docs", x, progress=False)
    store.close()


def test_second_owner_refused_until_release(col):
    a, b = Lease(col, ttl=30, settle=0.01, owner="a"), Lease(col, ttl=30, settle=0.01, owner="b")
    a.acquire()
    assert not b.try_acquire()
    with pytest.raises(LeaseHeld, match="being clustered by a"):
        b.acquire(wait=0.1, poll=0.05)
    a.renew()  # still ours
    a.release()
    b.acquire()
    assert col.get_meta(LEASE_META)["owner"] == "b"


def test_expired_lease_is_free_and_old_owner_stops(col):
    a, b = Lease(col, ttl=0.3, settle=0.01, owner="a"), Lease(col, ttl=30, settle=0.01, owner="b")
    a.acquire()
    time.sleep(0.4)  # a crashed holder: no renewal
    b.acquire()
    with pytest.raises(LeaseHeld, match="now held by b"):
        a.renew()
    a.release()  # not ours any more: must not clear b's record
    assert b.holder().owner == "b"


def test_waiting_for_a_lease(col):
    a, b = Lease(col, ttl=30, settle=0.01, owner="a"), Lease(col, ttl=30, settle=0.01, owner="b")
    a.acquire()
    threading.Timer(0.3, a.release).start()
    t = time.monotonic()
    b.acquire(wait=5, poll=0.05)
    assert 0.25 < time.monotonic() - t < 5


def test_a_holder_on_this_host_counts_only_while_that_process_runs(col):
    """A record naming this host (and pid namespace) and a pid holds the lease only if that process (pid and start
    time) runs: a unit restarted after a crash must not wait a whole ttl for its predecessor's lease, even when its
    pid was reused."""
    mine = Lease(col, ttl=30, settle=0.01, owner="mine")
    mine.acquire()
    rec = col.get_meta(LEASE_META)
    assert rec["pid"] == os.getpid() and rec["started"] is not None
    other = Lease(col, ttl=30, settle=0.01, owner="other")
    assert not other.try_acquire()  # the same pid and start time: the holder runs
    col.set_meta(LEASE_META, {**rec, "started": rec["started"] - 1})  # the same pid, an earlier process
    assert other.holder() is None and other.try_acquire()


def test_a_holder_in_another_pid_namespace_under_this_hostname_holds_the_lease(col):
    """Host-networked containers (docker --network host, hostNetwork pods) share the node's hostname, not its
    pids: a live holder there, whose pid names no process (or another one) here, must not be judged dead."""
    mine = Lease(col, ttl=30, settle=0.01, owner="mine")
    mine.acquire()
    rec = col.get_meta(LEASE_META)
    assert rec["pid_space"].endswith(os.readlink("/proc/self/ns/pid"))
    col.set_meta(LEASE_META, {**rec, "owner": "container", "pid": 2**22 + 1, "pid_space": "other-boot/pid:[1]"})
    other = Lease(col, ttl=30, settle=0.01, owner="other")
    assert other.holder().owner == "container" and not other.try_acquire()


def test_release_on_a_lost_store_leaves_the_lease_to_expire(col, caplog):
    """The store gone (often why a holder stops): release logs instead of raising over the error that stopped it."""
    lease = Lease(col, ttl=30, settle=0.01, owner="a")
    with pytest.raises(ValueError, match="the pass's own error"):
        with lease.holding():
            col.client.close()  # the server went away
            raise ValueError("the pass's own error")
    assert not lease.held and "could not release the lease on 'docs'; it expires within 30 s" in caplog.text


def test_two_daemons_on_one_collection(col):
    lander = Lander(os.environ.get("LANDER_TEST_MODEL"), device="cpu", threads=1)
    opts = DaemonOptions(interval=0.05, lease_ttl=30)
    first, second = Daemon(col, lander, opts, owner="first"), Daemon(col, lander, opts, owner="second")
    with watching(first) as stop:
        assert second.watch(threading.Event()) == EXIT_LEASE
        with pytest.raises(LeaseHeld):
            second.once()
        # --wait-lease: the second daemon gets the collection once the first stops
        waiting = Daemon(col, lander, opts.model_copy(update={"wait_lease": 30}), owner="second")
        threading.Timer(0.5, stop.set).start()
        assert not waiting.once().full


@contextmanager
def watching(daemon: Daemon) -> Iterator[threading.Event]:
    """``daemon.watch`` in a thread, after its first pass; the event stops it, and it must stop with exit 0."""
    stop, codes = threading.Event(), []
    runner = threading.Thread(target=lambda: codes.append(daemon.watch(stop)))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while daemon.passes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.passes >= 1
        yield stop
    finally:
        stop.set()
        runner.join(30)
    assert codes == [EXIT_OK]


@contextmanager
def held_by_another_process(path, points: int, seconds: float):
    """A collection of ``points`` random points that another process keeps open for ``seconds``."""
    x = np.random.RandomState(0).rand(points, 8).astype(np.float32)
    with EdgeStore(path) as store:
        import_points(store, "docs", x, progress=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from qdrant_lander.stores.edge import EdgeStore; "
         f"s = EdgeStore({str(path)!r}); s.open('docs'); print('open', flush=True); time.sleep({seconds})"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_embedded_store_allows_one_process(tmp_path):
    with held_by_another_process(tmp_path / "d", 20, 60):
        with pytest.raises(StoreBusy, match="open in another process"):
            EdgeStore(tmp_path / "d").open("docs")
        for cmd in (["sync", "docs", "--once"], ["status", "docs"]):  # one exit code for "another writer has it"
            busy = CliRunner().invoke(main, [*cmd, "--path", str(tmp_path / "d")])
            assert busy.exit_code == EXIT_LEASE and "open in another process" in busy.output
    with EdgeStore(tmp_path / "d") as store:  # the lock dies with its process
        assert store.open("docs").count() == 20


def test_wait_lease_waits_for_the_embedded_stores_process_lock(tmp_path):
    """On the embedded store the other writer holds the collection's OS lock, not only the lease: --wait-lease
    must wait for that too instead of exiting 3 at once."""
    with held_by_another_process(tmp_path / "d", 200, 2):
        waited = CliRunner().invoke(main, ["sync", "docs", "--once", "--wait-lease", "60", "--path", str(tmp_path / "d")])
        assert waited.exit_code == 0 and waited.output.startswith("full pass: new=200"), waited.output


def test_watch_logs_one_line_per_pass_and_stops_on_sigterm(tmp_path):
    x = subsample_classes(clinc_75_75().test, 1, seed=3).x
    with EdgeStore(tmp_path / "d") as store:
        import_points(store, "docs", x, progress=False)
    model = ["--model", os.environ["LANDER_TEST_MODEL"]] if os.environ.get("LANDER_TEST_MODEL") else []
    cli = [sys.executable, "-c", "from qdrant_lander.cli import main; main()"]
    proc = subprocess.Popen([*cli, "sync", "docs", "--watch", "--interval", "0.1",
                             "--path", str(tmp_path / "d"), *model], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while len([ln for ln in lines if " pass: new=" in ln]) < 2:
            lines.append(proc.stderr.readline())
            assert lines[-1] or proc.poll() is None, "".join(lines)
        assert "full pass: new=150" in "".join(lines)  # never synced: the first pass is a full one
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == EXIT_OK
    finally:
        proc.kill()


def test_a_one_shot_sync_takes_the_lease_too(tmp_path):
    """Plain `sync` rewrites every payload: it must not race a daemon that holds the collection."""
    x = subsample_classes(clinc_75_75().test, 1, seed=3).x
    with EdgeStore(tmp_path / "d") as store:
        daemon = Lease(import_points(store, "docs", x, progress=False), ttl=30, settle=0.01, owner="daemon")
        daemon.acquire()
    run = ["sync", "docs", "--path", str(tmp_path / "d"), "--json"]
    held = CliRunner().invoke(main, run)
    assert held.exit_code == EXIT_LEASE and "being clustered by daemon" in held.output
    with EdgeStore(tmp_path / "d") as store:
        col = store.open("docs")
        assert col.count(unclustered_filter()) == len(x)  # nothing written
        daemon = Lease(col, ttl=30, settle=0.01, owner="daemon")
        daemon.acquire()  # its own lease: taken again, then given back as a daemon does when it stops
        daemon.release()
    done = CliRunner().invoke(main, run)
    assert done.exit_code == EXIT_OK, done.output
    with EdgeStore(tmp_path / "d") as store:
        assert store.open("docs").get_meta(LEASE_META)["expires_at"] <= time.time()  # given back when it finished


def test_a_kept_lease_outlives_its_ttl_and_a_lost_one_is_reported(col):
    """Work longer than the ttl (a large full sync) keeps the lease; one taken over meanwhile raises at the end."""
    a, b = Lease(col, ttl=0.3, settle=0.01, owner="a"), Lease(col, ttl=30, settle=0.01, owner="b")
    a.acquire()
    with a.kept():
        time.sleep(1.0)  # three ttls: without renewals b would find the lease expired
        assert not b.try_acquire()
    assert a.held and a.holder().owner == "a"
    with pytest.raises(LeaseHeld, match="lost the lease on 'docs' while writing"):
        with a.kept():
            col.set_meta(LEASE_META, {**col.get_meta(LEASE_META), "owner": "b"})  # taken over (a stalled renewal)
            time.sleep(0.3)
    assert not a.held


def test_edge_meta_writes_from_two_threads_keep_every_record(tmp_path):
    """A lease renewal in Lease.kept's thread runs beside the sync's own meta writes: neither may undo the other."""
    x = np.random.RandomState(0).rand(20, 8).astype(np.float32)
    with EdgeStore(tmp_path / "d") as store:
        edge = import_points(store, "docs", x, progress=False)
        errors: list[Exception] = []

        def write(prefix: str) -> None:
            try:
                for i in range(100):
                    edge.set_meta(f"{prefix}{i}", {"i": i})
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                errors.append(e)

        threads = [threading.Thread(target=write, args=(p,)) for p in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(edge.get_meta(f"{p}{i}") == {"i": i} for p in "ab" for i in range(100))


def test_a_watch_daemon_keeps_its_lease_while_it_waits_between_passes(col):
    """An interval longer than the lease's ttl must not leave the collection free between two passes."""
    lander = Lander(os.environ.get("LANDER_TEST_MODEL"), device="cpu", threads=1)
    with watching(Daemon(col, lander, DaemonOptions(interval=2.0, lease_ttl=0.3), owner="daemon")):
        time.sleep(0.9)  # three ttls into the wait before the next pass
        assert not Lease(col, ttl=30, settle=0.01, owner="other").try_acquire()


def test_two_writers_creating_the_meta_collection_at_once(col):
    """The first meta record creates the meta collection; another writer that created it between our check and
    our create must not turn that into an error (a server answers 409)."""
    from qdrant_lander.stores.client import META_COLLECTION

    exists, asked = col.client.collection_exists, []

    def missing_at_first(name: str) -> bool:  # our check ran before the other writer's create
        asked.append(name)
        return False if len(asked) == 1 else exists(name)

    col.client.create_collection(META_COLLECTION, vectors_config={})  # the other writer's create
    col.client.collection_exists = missing_at_first
    try:
        col.set_meta(LEASE_META, {"owner": "a"})
    finally:
        del col.client.collection_exists
    assert asked[0] == META_COLLECTION and col.get_meta(LEASE_META) == {"owner": "a"}


def test_a_lease_another_writer_took_during_the_settle_is_not_ours(col):
    """Qdrant has no compare-and-set: a writer whose record another one overwrote before the confirming read
    (both read 'free') must not believe it holds the lease, or two daemons write at once."""
    a = Lease(col, ttl=30, settle=0.4, owner="a")
    threading.Timer(0.1, lambda: col.set_meta(LEASE_META, {**col.get_meta(LEASE_META), "owner": "b"})).start()
    assert not a.try_acquire() and not a.held
    assert Lease(col, ttl=30, settle=0.01, owner="c").holder().owner == "b"


def test_a_stalled_holder_that_lost_its_lease_unnoticed_leaves_the_new_holders_record(col):
    """A holder that stalled past its ttl (b took the lease over) and stops before its next renewal must not
    release b's lease: a third writer would start beside b."""
    a, b = Lease(col, ttl=0.3, settle=0.01, owner="a"), Lease(col, ttl=30, settle=0.01, owner="b")
    a.acquire()
    time.sleep(0.4)
    b.acquire()
    assert a.held  # a has not renewed since: it does not know yet
    a.release()
    assert not Lease(col, ttl=30, settle=0.01, owner="c").try_acquire()
    assert b.holder().owner == "b"



@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to become another user")
def test_a_holder_run_by_another_user_on_this_host_counts_as_running():
    """Daemons of two users on one host: signalling the other's pid is refused (EPERM), which says that it runs;
    judged dead, its lease would be taken while it writes."""
    from qdrant_lander.lease import _running

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # root's process
    try:
        child = os.fork()
        if child == 0:  # as nobody, asking about root's process
            try:
                os.setgid(65534)
                os.setuid(65534)
                os._exit(0 if _running(holder.pid, None) else 1)
            except BaseException:
                os._exit(2)
        assert os.waitpid(child, 0)[1] >> 8 == 0
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_whose_record_was_removed_stops_at_its_next_renewal(tmp_path):
    """A removed record (lander_meta.json deleted by hand, the collection made again) may let another writer take
    the lease: the holder must stop, not write a record of its own again."""
    x = np.random.RandomState(0).rand(20, 8).astype(np.float32)
    with EdgeStore(tmp_path / "d") as store:
        col = import_points(store, "docs", x, progress=False)
        a = Lease(col, ttl=30, settle=0.01, owner="a")
        a.acquire()
        (col.root / "lander_meta.json").unlink()
        with pytest.raises(LeaseHeld, match="record was removed"):
            a.renew()
        assert not a.held and col.get_meta(LEASE_META) is None
