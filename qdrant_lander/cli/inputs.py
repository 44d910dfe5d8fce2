"""Reading what users hand the CLI: .npy arrays, JSON Lines payloads, ``--set KEY=VALUE`` options, output paths.

Each failure is an :class:`~qdrant_lander.errors.InputError` that names the file or option, so
every command reports bad files the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError


def load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read {what} from {path}: {e}") from None


def check_outputs(*paths: Path | None) -> None:
    """Refuse an output file whose directory does not exist before the work starts, not after it (lost)."""
    for path in paths:
        if path is not None and not path.resolve().parent.is_dir():
            raise InputError(f"cannot write {path}: the directory {path.parent} does not exist")


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} line {n} is not valid JSON: {e}") from None
        if not isinstance(row, dict):
            raise InputError(f"{path} line {n} is not a JSON object")
        rows.append(row)
    return rows


def parse_set_options(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are JSON where they parse (``taus=[0.3,0.5]``), else plain words."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value.strip()
    return options
