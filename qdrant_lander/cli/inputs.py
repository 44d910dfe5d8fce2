"""Reading what users hand the CLI: .npy arrays, JSON Lines payloads, ``--set KEY=VALUE`` options, output paths.

Each failure is an :class:`~qdrant_lander.errors.InputError` that names the file or option, so
every command reports bad files the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError


def load_npy(path: Path, what: str, *, mapped: bool = False) -> np.ndarray:
    """One array saved with ``numpy.save``. numpy's own messages for other files point the wrong way
    (an .npz loads as an archive, a text or pickle file "contains pickled data, use allow_pickle="),
    so those are named here: pickles are never loaded (they run code). ``mapped``: the file is
    memory-mapped read-only instead of read, for commands that go through it batch by batch."""
    try:
        with path.open("rb") as f:
            head = f.read(6)
        if head[:2] == b"PK":
            with np.load(path, allow_pickle=False) as archive:
                names = ", ".join(archive.files) or "nothing"
            raise InputError(f"{path} is an .npz archive (holding {names}); save the {what} as one array with "
                             "numpy.save(\"file.npy\", array)")
        if head != np.lib.format.MAGIC_PREFIX:
            raise InputError(f"{path} is not a .npy file; save the {what} with numpy.save(\"file.npy\", array)")
        return np.load(path, allow_pickle=False, mmap_mode="r" if mapped else None)
    except InputError:
        raise
    except (ValueError, OSError) as e:
        if "Object arrays" in str(e) or "Python objects" in str(e):  # the second: numpy's words when memory-mapping
            raise InputError(f"{path} holds Python objects (dtype object), not numbers: save the {what} as a "
                             "numeric array") from None
        raise InputError(f"cannot read {what} from {path}: {e}") from None


def check_outputs(*paths: Path | None, inputs: Iterable[Path] = ()) -> None:
    """Refuse, before the work starts rather than after it (lost): an output whose directory does not exist,
    one that is an input file (it would be replaced), and two outputs that are one file (the second wins)."""
    read = {p.resolve() for p in inputs}
    seen: dict[Path, Path] = {}
    for path in (p for p in paths if p is not None):
        where = path.resolve()
        if not where.parent.is_dir():
            raise InputError(f"cannot write {path}: the directory {path.parent} does not exist")
        if where in read:
            raise InputError(f"cannot write {path}: it is an input of this command and would be overwritten")
        if where in seen:
            raise InputError(f"{seen[where]} and {path} are one file: give each output its own")
        seen[where] = path


def save_npy(path: Path, array: np.ndarray) -> None:
    """``numpy.save`` to exactly ``path`` (given a name, numpy adds ``.npy`` to it, and messages named the wrong file)."""
    try:
        with path.open("wb") as f:
            np.save(f, array)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None


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


def parse_set_options(items: Iterable[str], flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are JSON where they parse (``taus=[0.3,0.5]``), else plain words."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value.strip()
    return options


def parse_try_option(text: str) -> dict[str, Any]:
    """One ``--try`` recipe: ``KEY=VALUE`` pairs separated by spaces. A pair starts only where a word is
    followed by ``=``, so a JSON value may hold spaces (``taus=[0.3, 0.5] steps=800``)."""
    pairs = re.split(r"\s+(?=[A-Za-z_]\w*=)", text.strip())
    if pairs == [""]:
        raise InputError("--try '' adds no option: it would train the --set recipe a second time")
    return parse_set_options(pairs, "--try")
