"""Input checks shared by the library, the CLI and the sync path.

They run before any work starts so that bad input fails fast, with a message naming the problem,
and nothing is half-written.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .errors import InputError


# Rows checked and scaled at a time, so no temporary is the size of the input: an import (unit_batches) holds one
# batch, not a scaled copy of the whole file (a million 384-d rows: peak 5.2 -> 3.7 GB), and check_embeddings'
# passes stay in cache (6.8 -> 4.5 s); benchmarks/RESULTS.md, session 39.
CHUNK_ROWS = 65_536


def check_embeddings(x: np.ndarray, *, min_points: int = 2, dim: int | None = None) -> np.ndarray:
    """Return ``x`` as C-contiguous float32 rows scaled to unit length.

    Rejects arrays that are not 2-D, hold NaN/inf, have all-zero rows (no direction, so no
    cosine), have fewer than ``min_points`` rows, or a dimension other than ``dim``.
    """
    batches = unit_batches(x, CHUNK_ROWS, min_points=min_points, dim=dim)
    out = np.empty(np.shape(x), dtype=np.float32)  # a new array: the caller's is never changed
    for s, rows in batches:
        out[s:s + len(rows)] = rows
    return out


def unit_batches(x: np.ndarray, batch_size: int, *, min_points: int = 2,
                 dim: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Check the *whole* of ``x`` now, as :func:`check_embeddings` does, then give (first row, float32 unit
    rows) batch by batch: a caller that writes each batch writes nothing when any row is bad, and holds one
    batch's copy at a time (an import never copies its memory-mapped file whole)."""
    x, peak = _checked(x, min_points, dim)
    return ((s, _unit(x[s:s + batch_size], peak[s:s + batch_size])) for s in range(0, len(x), batch_size))


def check_rows(x: np.ndarray, *, min_points: int = 2, dim: int | None = None) -> None:
    """Raise as :func:`check_embeddings` would, without making the scaled copy (a caller that hands the rows on
    to something that scales them batch by batch, and wants the error before it starts)."""
    _checked(x, min_points, dim)


def _checked(x: np.ndarray, min_points: int, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as an array and each row's largest absolute entry, after every check."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise InputError(f"embeddings must be a 2-D array [N, D], got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputError(f"embeddings must be real numbers (integer or float), got dtype {x.dtype}")
    n, d = x.shape
    if n < min_points:
        raise InputError(f"need at least {min_points} point{'s' * (min_points > 1)}, got {n}")
    if dim is not None and d != dim:
        raise InputError(f"embeddings have dimension {d}, but the model was trained for dimension {dim}")
    if n == 0:
        return x, np.empty(0, dtype=x.dtype)
    finite, peak = (np.concatenate(parts) for parts in zip(*map(_finite_and_peak, _chunks(x, CHUNK_ROWS))))
    for bad, what in ((~finite, "contain NaN or inf"), (peak == 0, "are all zeros and have no direction")):
        if bad.any():
            raise InputError(f"{bad.sum()} rows {what} (first rows: {np.flatnonzero(bad)[:5].tolist()})")
    return x, peak


def _chunks(x: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    for s in range(0, len(x), rows):
        chunk = x[s:s + rows]
        yield chunk.astype(np.float64) if np.issubdtype(chunk.dtype, np.integer) else chunk  # abs(int min) overflows


def _finite_and_peak(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.isfinite(x).all(axis=1), np.abs(x).max(axis=1)


def _unit(x: np.ndarray, peak: np.ndarray) -> np.ndarray:
    # Each row is divided by its largest entry first, in the input's own precision: the sum of squares of
    # float32 values above ~1e19 overflows to inf (the row would become zeros) and below ~1e-23 underflows
    # to 0; float64 rows beyond float32's range would do the same once cast.
    x = np.ascontiguousarray(x / peak[:, None], dtype=np.float32)
    x /= row_norms(x)[:, None]
    return x


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of each row, without the ``x * x`` copy ``np.linalg.norm`` makes: at a million 384-d rows that
    copy is 1.5 GB, and the norms took 6.3 s (0.6 s once the memory was touched) against 0.13 s (session 38)."""
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def check_unit_rows(x: np.ndarray) -> None:
    """Raise unless ``x`` holds finite rows of unit length (within float32 rounding), as callers that hand
    in their own vectors and graph promise: :func:`check_embeddings` makes such rows."""
    norms = row_norms(x)
    bad = ~(np.abs(norms - 1.0) <= 1e-3)  # NaN fails too
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(f"{bad.sum()} vectors are not finite rows of unit length (first rows: {rows[:5].tolist()}, "
                         f"lengths {np.round(norms[rows[:5]], 4).tolist()}); scale each row by its L2 norm first")


def check_labels(labels: np.ndarray, n: int, *, of: str = "embeddings") -> np.ndarray:
    """Return integer labels of length ``n`` (one per row of ``of``) or raise naming the mismatch."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise InputError(f"labels must be a 1-D array, got shape {y.shape}")
    if len(y) != n:
        raise InputError(f"labels have length {len(y)} but there are {n} {of}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64)


def group_codes(groups: np.ndarray, n: int) -> np.ndarray:
    """``groups`` (one per row: ints, strings, any values numpy can sort) as dense int64 codes 0..G-1, or an error
    naming a length or shape mismatch."""
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise InputError(f"groups must be one value per row: {n} values, got shape {g.shape}")
    return np.unique(g, return_inverse=True)[1].reshape(-1).astype(np.int64)


def check_neighbours(nbr: np.ndarray, n: int, sim: np.ndarray | None = None) -> None:
    """Raise unless ``nbr`` holds row numbers in ``[0, n)`` (and ``sim`` has its shape): a -1 for a missing
    neighbour would otherwise wrap around to the last row in a gather and cluster silently wrong."""
    if sim is not None and sim.shape != nbr.shape:
        raise InputError(f"kNN similarities have shape {sim.shape}, but the neighbour indices {nbr.shape}")
    if sim is not None and not np.isfinite(sim).all():
        raise InputError(f"{(~np.isfinite(sim)).sum()} kNN similarities are NaN or inf")
    if nbr.size and (nbr.min() < 0 or nbr.max() >= n):
        raise InputError(f"neighbour indices must be row numbers in [0, {n}), got [{nbr.min()}, {nbr.max()}]")
