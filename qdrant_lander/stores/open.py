"""Open the store the user points at: a Qdrant server with ``--url`` (and ``--api-key``), else the
embedded Qdrant Edge store at ``--path``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from qdrant_client import QdrantClient

from ..config import DEFAULT_PATH
from ..errors import InputError
from .base import Store
from .client import ServerStore
from .edge import EdgeStore

TIMEOUT_S = 300  # a batch of a thousand kNN queries or payload writes can take longer than the 5 s default


def open_store(url: str | None = None, api_key: str | None = None, path: str | Path = DEFAULT_PATH) -> Store:
    """``https://`` urls use TLS; the API key is sent only to a server, never logged."""
    if url:
        _check_url(url)
        # No version check: it runs in a thread of its own and its warning interleaved with our one-line errors.
        client = QdrantClient(url=url, api_key=api_key, timeout=TIMEOUT_S, check_compatibility=False)
        # qdrant-client goes to port 6333 when the URL names none, https included: say so where it matters (a server
        # behind a TLS proxy on 443 looks unreachable otherwise)
        port = "" if urlsplit(url).port else " (port 6333: the URL names none)"
        return ServerStore(client, f"Qdrant server at {url}{port}")
    return EdgeStore(path)


def _check_url(url: str) -> None:
    """Refuse a URL no server can be at, as bad input (exit 2): a typo in QLANDER_URL used to give a traceback, or
    "cannot reach the server" (exit 4: retry later), so a daemon unit restarted it forever."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in 0-65535
    except ValueError as e:
        raise InputError(f"--url / QLANDER_URL {url!r} is not a valid URL: {e}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise InputError(f"--url / QLANDER_URL {url!r} is not a Qdrant server URL: give http://HOST:6333 or "
                         "https://HOST:PORT; leave it unset to use the embedded store at --path")
