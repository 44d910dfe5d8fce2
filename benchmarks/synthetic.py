"""Synthetic labeled embeddings with power-law cluster sizes, for scale benchmarks.

Real collections have a few huge groups and a long tail of small ones (a photo library: family faces
versus once-seen strangers); uniform cluster sizes would flatter every stage that scales with the
largest cluster. The generator lives in the library (:mod:`qdrant_lander.synthetic`, pre-training
uses it too); this is the benchmarks' isotropic setting of it.
"""

from __future__ import annotations

import numpy as np

from qdrant_lander.synthetic import SyntheticSpec, generate


def synthetic(n: int = 100_000, dim: int = 256, *, alpha: float = 2.0, min_size: int = 2,
              spread: tuple[float, float] = (0.6, 1.0), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32 [n, dim] unit rows, y int64 [n])``, rows shuffled: isotropic clusters, no superclasses.

    ``spread`` is the range of each cluster's noise norm relative to its unit centre: 0.6 to 1.0 gives
    within-cluster cosines of roughly 0.5 to 0.75, overlapping the neighbours of nearby clusters.
    """
    return generate(SyntheticSpec(n=n, dim=dim, alpha=alpha, min_size=min_size, spread=spread, seed=seed))
