"""One writer per collection: a lease with an expiry, kept in the store itself.

Two daemons relabelling the same collection would race on merges and ids, so a writer holds the
``lease`` meta record (owner, expiry) while it works: a daemon renews it every pass, and :meth:`Lease.kept`
renews it from a background thread while one long piece of work runs (a full sync of a large collection
outlasts the ttl inside single blocking calls such as the HNSW build). Qdrant has no
compare-and-set, so taking the lease is write-then-confirm: read (free or expired?), write our owner
and expiry, wait ``settle`` seconds, read again; only if our owner is still there do we hold it.
Race window: two daemons that both read "free" and write within ``settle`` of each other both
re-read the later writer, so exactly one wins; two whose write/re-read sequences do not overlap see
each other. Only a writer whose read-write gap exceeds ``settle`` (a stalled process) can slip in,
and every renewal re-reads the record, so a daemon that finds another owner stops at its next
renewal. An expired lease is free, and so is one whose holder was a process that is gone and whose pid
we can check: the same hostname, boot and pid namespace (by pid and, on Linux, the process's start time, as a
pid may be reused). Host-networked containers share the node's hostname but not its pids, and a restarted
container gets a new pid namespace, which cannot be told apart from another live container: both wait for the
lease to expire. ``ttl`` bounds how long a crash there blocks others.

The embedded store (Qdrant Edge) is also locked by the OS to the one process that opened it, so a
second process cannot even open the collection; the lease then guards writers inside one process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from .errors import LanderError
from .stores.base import Collection

log = logging.getLogger(__name__)

LEASE_META = "lease"
LEASE_TTL = 300.0  # seconds a lease lasts without renewal; kept() renews it every third of that


class LeaseHeld(LanderError):
    """Another writer holds the collection's lease."""

    exit_code = 3


class LeaseRecord(BaseModel):
    owner: str
    host: str
    pid: int
    expires_at: float  # unix time
    started: int | None = None  # the holder's start time (clock ticks since boot; None: not Linux, or an old record)
    pid_space: str | None = None  # where its pid means something: boot id and pid namespace (None: not Linux)

    def describe(self) -> str:
        left = self.expires_at - time.time()
        return f"{self.owner} (pid {self.pid} on {self.host}, expires in {left:.0f} s)"


def _started(pid: int) -> int | None:
    """When process ``pid`` started (Linux: /proc/PID/stat field 22, clock ticks since boot); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields after the command name start at field 3


def _pid_space() -> str | None:
    """This boot's id and this process's pid namespace (Linux). A hostname alone does not say that a pid can be
    checked here: containers with host networking (``--network host``, ``hostNetwork`` pods) share the node's
    hostname but not its pids, and two machines can carry one default name."""
    try:
        return f"{Path('/proc/sys/kernel/random/boot_id').read_text().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _running(pid: int, started: int | None) -> bool:
    """Whether the process that wrote a record in this pid namespace runs: its pid is alive and, where the record
    has a start time, that process started then (a pid can be reused by another process after a crash)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return started is None or _started(pid) in (None, started)


class Lease:
    """The lease of one collection for one owner (a daemon)."""

    def __init__(self, col: Collection, *, ttl: float = LEASE_TTL, settle: float = 0.5, owner: str | None = None):
        self.col, self.ttl, self.settle = col, ttl, settle
        self.owner = owner or f"lander-{uuid.uuid4().hex[:12]}"
        self.held = False

    def _read(self) -> LeaseRecord | None:
        return self.col.get_record(LEASE_META, LeaseRecord)

    def _write(self, expires_at: float) -> None:
        rec = LeaseRecord(owner=self.owner, host=socket.gethostname(), pid=os.getpid(), expires_at=expires_at,
                          started=_started(os.getpid()), pid_space=_pid_space())
        self.col.set_meta(LEASE_META, rec.model_dump())

    def holder(self) -> LeaseRecord | None:
        """The current holder if the lease is held, not expired, and not a dead process whose pid we can check
        (same host, boot and pid namespace: a daemon killed with -9 there frees its lease at once, not after
        ``ttl``)."""
        rec = self._read()
        if rec is None or rec.expires_at <= time.time():
            return None
        here = rec.host == socket.gethostname() and rec.pid_space == _pid_space()
        if here and not _running(rec.pid, rec.started):
            return None
        return rec

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; False if someone else holds it."""
        rec = self.holder()
        if rec is not None and rec.owner != self.owner:
            return False
        self._write(time.time() + self.ttl)
        time.sleep(self.settle)
        rec = self._read()
        self.held = rec is not None and rec.owner == self.owner
        return self.held

    def acquire(self, *, wait: float = 0.0, poll: float = 1.0) -> None:
        """Take the lease, waiting up to ``wait`` seconds for the holder to release it or expire."""
        deadline = time.monotonic() + wait
        while not self.try_acquire():
            rec = self.holder()
            if time.monotonic() >= deadline:
                who = rec.describe() if rec else "another writer"
                raise LeaseHeld(f"collection '{self.col.name}' is being clustered by {who}; "
                                "stop that daemon, wait for it (--wait-lease SECONDS), or let its lease expire")
            time.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))
        log.info("lease on '%s' taken by %s for %.0f s", self.col.name, self.owner, self.ttl)

    def renew(self) -> None:
        """Extend the lease; :class:`LeaseHeld` if another writer took it meanwhile (we then stop)."""
        rec = self._read()
        if rec is None or rec.owner != self.owner:
            self.held = False
            who = rec.describe() if rec else "nobody (the record was removed)"
            raise LeaseHeld(f"lost the lease on '{self.col.name}': it is now held by {who}")
        self._write(time.time() + self.ttl)

    @contextmanager
    def holding(self, *, wait: float = 0.0) -> Iterator[None]:
        """The lease for the block: acquired (waiting up to ``wait`` seconds), kept, released after."""
        self.acquire(wait=wait)
        try:
            with self.kept():
                yield
        finally:
            self.release()

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Renew the lease every ``ttl / 3`` from a background thread while the block runs.

        Renewal between passes cannot reach inside one call that outlasts the ttl, and a lease that
        expires mid-sync lets a second writer in. A renewal that fails on the store is retried at the
        next beat (the lease still has two thirds of its ttl); one that finds another owner stops the
        beat, and the block's end raises :class:`LeaseHeld` so the loss is not silent.
        """
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.ttl / 3):
                try:
                    self.renew()
                except LeaseHeld as e:
                    log.error("%s", e)
                    return
                except Exception as e:  # noqa: BLE001 - the store's own errors: try again at the next beat
                    log.warning("could not renew the lease on '%s' (retrying in %.0f s): %s",
                                self.col.name, self.ttl / 3, e)

        thread = threading.Thread(target=beat, name=f"lease-{self.owner}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        if not self.held:
            raise LeaseHeld(f"lost the lease on '{self.col.name}' while writing: another writer may have written "
                            "too; run `sync --full` again once it is done")

    def release(self) -> None:
        """Give the lease up now (expired record) so the next daemon need not wait for the expiry.

        A store that fails here (the server went away, which is often why the holder stops) leaves the lease
        to expire by itself: raising would replace the error that stopped the holder, and its exit code."""
        if not self.held:
            return
        self.held = False
        try:
            rec = self._read()
            if rec is not None and rec.owner == self.owner:
                self._write(time.time())
        except Exception as e:  # noqa: BLE001 - the store's own errors, whatever the store
            log.warning("could not release the lease on '%s'; it expires within %.0f s: %s", self.col.name, self.ttl, e)
