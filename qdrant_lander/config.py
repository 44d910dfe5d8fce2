"""Runtime settings: one pydantic model, filled from flags > environment (``QLANDER_*``) > a TOML file.

A daemon that runs for months is configured by whoever deploys it (a systemd ``EnvironmentFile``, a
Kubernetes ConfigMap and Secret, a compose ``environment:``), so every setting has one name that works
in all three places: the field ``batch_size`` is ``--batch-size``, ``QLANDER_BATCH_SIZE`` and
``batch_size = 1024`` in the TOML file. The API key is a :class:`~pydantic.SecretStr` and is also
scrubbed from every log record once settings are loaded, so it can only leave the process on purpose.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .domains import Domain
from .errors import InputError

ENV_PREFIX = "QLANDER_"
DEFAULT_PATH = Path("./qdrant_data")  # the embedded store's directory when none is given
CONFIG_ENV = ENV_PREFIX + "CONFIG"  # path of the TOML file when no --config flag is given
MASK = "**********"


class Settings(BaseModel):
    """Everything the commands and the daemon need to reach a store and run the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(None, description="Qdrant server URL; unset = the embedded store at --path.")
    api_key: SecretStr | None = Field(None, description="Qdrant API key (never printed or logged).")
    path: Path = Field(DEFAULT_PATH, description="Directory of the embedded (Qdrant Edge) store.")
    collection: str | None = Field(None, description="Collection the deployment files sync (`sync ${QLANDER_COLLECTION}`"
                                   " in deploy/); commands take the name as their argument.")
    model: Path | None = Field(None, description="ONNX model file or model directory (e.g. from `calibrate`); unset = "
                               "the model shipped in the package.")
    domain: Domain = Field("auto", description="What the default model clusters: faces, text or characters use "
                           "the decoding chosen for that kind of data (-small / -large: for its small or large "
                           "classes); auto picks the one whose space the data "
                           "resembles; any keeps the model's one-for-all setting.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the model runs.")
    threads: int | None = Field(None, ge=1, description="CPU threads for the model; unset = onnxruntime's choice.")
    interval: float = Field(5.0, gt=0, description="Seconds between incremental passes in watch mode.")
    rebuild_every: int = Field(0, ge=0, description="Full re-clustering every N passes in watch mode (0 = never).")
    growth: float = Field(0.25, ge=0, description="--once/--watch: re-cluster everything once the collection grew by "
                          "this share since the last full sync (0 = never).")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus /metrics and /healthz on this port."
    )
    stall_after: float | None = Field(
        None, gt=0, description="With --metrics-port: /healthz answers 503 (status stalled) while a pass has run "
        "longer than this many seconds, e.g. a hung server call; set it well above your longest full sync. "
        "Unset = never.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level of the daemon.")
    vector: str | None = Field(None, description="Named vector to import and cluster, or whose clustering to "
                               "read; unset = the unnamed or only vector (reading: the one the last sync clustered).")
    batch_size: int = Field(1024, ge=1, description="Points per scroll, kNN and payload batch.")
    partition_by: str | None = Field(None, description="Payload key (a tenant or user id) no cluster may span two "
                                     "values of; neighbours are still found among all points. Unset = the key of the "
                                     "last full sync, if any; \"\" = none.")

    def public(self) -> dict[str, Any]:
        """The settings as JSON-ready data with the API key masked: safe to print or log."""
        data = self.model_dump(mode="json")
        data["api_key"] = MASK if self.api_key is not None else None
        return data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config file {path} is not valid TOML: {e}") from None


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    names = set(Settings.model_fields)
    found = {k[len(ENV_PREFIX) :].lower(): v for k, v in environ.items() if k.startswith(ENV_PREFIX) and k != CONFIG_ENV}
    unknown = sorted(ENV_PREFIX + k.upper() for k in found if k not in names)
    if unknown:
        raise InputError(f"unknown environment setting(s) {', '.join(unknown)}; known: {_known_env()}")
    # An empty variable (e.g. `QLANDER_URL=` in a compose file) means "not set", not "empty string".
    return {k: v for k, v in found.items() if v != ""}


def _known_env() -> str:
    return ", ".join(ENV_PREFIX + n.upper() for n in Settings.model_fields)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the three sources, highest first: ``flags`` (None values = not given), environment, TOML.

    The TOML file is ``config_file`` or else ``$QLANDER_CONFIG``; without either, only flags,
    environment and defaults count. Unknown keys anywhere are an :class:`InputError`, so a typo in a
    deployment file fails loudly at start instead of being silently ignored for months.
    """
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(CONFIG_ENV) or None
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file:
        layers.append((f"config file {config_file}", _read_toml(Path(config_file))))
    layers.append(("environment", _from_env(environ)))
    layers.append(("flags", {k: v for k, v in (flags or {}).items() if v is not None}))
    merged: dict[str, Any] = {}
    for _, values in layers:
        merged.update(values)
    try:
        settings = Settings(**merged)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        sources = ", ".join(name for name, _ in layers)
        raise InputError(f"invalid settings ({problems}); read from {sources}") from None
    if settings.api_key is not None:
        redact_in_logs(settings.api_key.get_secret_value())
    return settings


class _Redact(logging.Filter):
    """Replaces secrets in a record's final message (third-party libraries may log request details)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for s in self.secrets:
                message = message.replace(s, MASK)
            record.msg, record.args = message, None
        return True


_REDACT = _Redact()


def redact_in_logs(secret: str) -> None:
    """Scrub ``secret`` from everything the root logger's handlers emit from now on."""
    if not secret:
        return
    _REDACT.secrets.add(secret)
    root = logging.getLogger()
    for handler in root.handlers:
        if _REDACT not in handler.filters:
            handler.addFilter(_REDACT)
