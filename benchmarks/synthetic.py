"""Synthetic labeled embeddings with power-law cluster sizes, for scale benchmarks.

Real collections have a few huge groups and a long tail of small ones (a photo library: family faces
versus once-seen strangers); uniform cluster sizes would flatter every stage that scales with the
largest cluster. Sizes follow a discrete power law P(s) ~ s^-alpha from ``min_size`` up; each cluster
is a random unit direction plus isotropic noise of its own spread, rows L2-normalised.
"""

from __future__ import annotations

import numpy as np


def power_law_sizes(n: int, *, alpha: float = 2.0, min_size: int = 2, rng: np.random.Generator) -> np.ndarray:
    """Cluster sizes summing to exactly ``n``, drawn by inverse-CDF sampling of a Pareto tail."""
    sizes: list[np.ndarray] = []
    total = 0
    while total < n:
        u = rng.random(max(1024, n // min_size))
        s = np.minimum(np.floor(min_size * (1 - u) ** (-1 / (alpha - 1))), n).astype(np.int64)
        sizes.append(s)
        total += int(s.sum())
    out = np.concatenate(sizes)
    out = out[: int(np.searchsorted(np.cumsum(out), n)) + 1]
    out[-1] -= int(out.sum()) - n
    return out[out > 0]


def synthetic(n: int = 100_000, dim: int = 256, *, alpha: float = 2.0, min_size: int = 2,
              spread: tuple[float, float] = (0.6, 1.0), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32 [n, dim] unit rows, y int64 [n])``, rows shuffled.

    ``spread`` is the range of each cluster's noise norm relative to its unit centre: 0.6 to 1.0 gives
    within-cluster cosines of roughly 0.5 to 0.75, overlapping the neighbours of nearby clusters.
    """
    rng = np.random.default_rng(seed)
    sizes = power_law_sizes(n, alpha=alpha, min_size=min_size, rng=rng)
    y = np.repeat(np.arange(sizes.size), sizes)
    centres = rng.normal(size=(sizes.size, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = (rng.uniform(*spread, size=sizes.size) / np.sqrt(dim)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 65536):  # in blocks: the noise for 1M x 256 at once would double peak memory
        e = min(s + 65536, n)
        x[s:e] = centres[y[s:e]] + sigma[y[s:e], None] * rng.standard_normal((e - s, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(n)
    return x[perm], y[perm]
