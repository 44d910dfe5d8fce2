"""Shared fixtures: the dev data lives in ../shared/data and is read in place."""

import sys
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
