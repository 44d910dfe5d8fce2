"""Open the store the user points at: a Qdrant server with ``--url`` (and ``--api-key``), else the
embedded Qdrant Edge store at ``--path``."""

from __future__ import annotations

from pathlib import Path

from qdrant_client import QdrantClient

from ..config import DEFAULT_PATH
from .base import Store
from .client import ServerStore
from .edge import EdgeStore

TIMEOUT_S = 300  # a batch of a thousand kNN queries or payload writes can take longer than the 5 s default


def open_store(url: str | None = None, api_key: str | None = None, path: str | Path = DEFAULT_PATH) -> Store:
    """``https://`` urls use TLS; the API key is sent only to a server, never logged."""
    if url:
        return ServerStore(QdrantClient(url=url, api_key=api_key, timeout=TIMEOUT_S), f"Qdrant server at {url}")
    return EdgeStore(path)
