"""Shared fixtures: the dev data lives in ../shared/data and is read in place."""

import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so tests can import ``benchmarks.tasks``


@pytest.fixture(params=["edge", "local"])
def store(request, tmp_path):
    """Both stores: real Qdrant Edge in a temp dir, and the server adapter on qdrant-client's local mode."""
    from qdrant_lander.stores.client import ServerStore
    from qdrant_lander.stores.edge import EdgeStore

    s = EdgeStore(tmp_path / "qdrant_data") if request.param == "edge" else ServerStore(QdrantClient(":memory:"))
    yield s
    s.close()


@pytest.fixture
def second_write_fails():
    """``with second_write_fails(col):`` the collection's second payload write times out (a store that fails in the
    middle of a sync or pass); the first goes through."""
    @contextmanager
    def failing(col):
        calls, set_payloads = [], col.set_payloads

        def write(items):
            calls.append(len(items))
            if len(calls) == 2:
                raise ConnectionError("store timed out")
            return set_payloads(items)

        col.set_payloads = write
        try:
            yield
        finally:
            del col.set_payloads
    return failing
