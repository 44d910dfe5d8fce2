"""Synthetic labeled embeddings: power-law class sizes, per-class spread, superclasses, low-rank noise.

Two users: the scale benchmarks (a realistic mix of a few huge groups and a long tail of small ones,
which uniform sizes would flatter) and pre-training (`TrainConfig.pretrain_steps`), where an unlimited
supply of labeled classes of every size, spread and density may teach the link model what a kNN graph
of *any* embedding space looks like. Real spaces are not isotropic blobs: classes of one domain sit
near each other (intents of one bank, characters of one alphabet), and a class varies along a few
directions more than others. So class centres can group into superclasses, and part of each class's
noise can lie in a random low-rank subspace of its own. With those two off, the draws are exactly the
original isotropic generator's (benchmark data stays the same for a given seed).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class SyntheticSpec(BaseModel):
    """One synthetic labeled set. Relative sizes: a class centre is a unit vector; noise norms are relative to it."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(100_000, ge=2, description="Points")
    dim: int = Field(256, ge=2)
    alpha: float = Field(2.0, gt=1, description="Class sizes follow P(s) ~ s^-alpha from min_size up")
    min_size: int = Field(2, ge=1)
    spread: tuple[float, float] = Field((0.6, 1.0), description="Range of each class's noise norm: 0.6 to 1.0 gives "
                                        "within-class cosines of about 0.75 to 0.5")
    superclass_size: float = Field(1.0, ge=1, description="Mean classes per superclass (1 = independent centres)")
    superclass_spread: tuple[float, float] = Field((0.5, 1.0), description="Range of a class centre's distance from "
                                                   "its superclass centre: 0.5 puts sibling centres at cosine ~0.8")
    noise_rank: int = Field(0, ge=0, description="Dimension of each class's own low-rank noise subspace")
    anisotropy: float = Field(0.0, ge=0, le=1, description="Share of the noise variance in that subspace")
    seed: int = 0


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


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def generate(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32 [n, dim] unit rows, y int64 [n])``, rows shuffled, deterministic in ``spec``."""
    n, dim = spec.n, spec.dim
    rng = np.random.default_rng(spec.seed)
    extra = np.random.default_rng([spec.seed, 1])  # superclasses and low-rank noise: the base draws stay as they were
    sizes = power_law_sizes(n, alpha=spec.alpha, min_size=spec.min_size, rng=rng)
    y = np.repeat(np.arange(sizes.size), sizes)
    centres = _unit(rng.normal(size=(sizes.size, dim)).astype(np.float32))
    if spec.superclass_size > 1:
        n_super = max(1, round(sizes.size / spec.superclass_size))
        parents = _unit(extra.normal(size=(n_super, dim)).astype(np.float32))
        offset = extra.uniform(*spec.superclass_spread, size=sizes.size).astype(np.float32)
        centres = _unit(parents[extra.integers(n_super, size=sizes.size)] + offset[:, None] * centres)
    norm = rng.uniform(*spec.spread, size=sizes.size)
    iso = (norm * np.sqrt(1 - spec.anisotropy) / np.sqrt(dim)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 65536):  # in blocks: the noise for 1M x 256 at once would double peak memory
        e = min(s + 65536, n)
        x[s:e] = centres[y[s:e]] + iso[y[s:e], None] * rng.standard_normal((e - s, dim), dtype=np.float32)
    if spec.noise_rank and spec.anisotropy:
        low = (norm * np.sqrt(spec.anisotropy / spec.noise_rank)).astype(np.float32)  # low-rank norm ~ norm * sqrt(a)
        for c, (s, e) in enumerate(zip(np.cumsum(sizes) - sizes, np.cumsum(sizes))):  # y is sorted here
            basis = _unit(extra.normal(size=(spec.noise_rank, dim)).astype(np.float32))
            x[s:e] += low[c] * (extra.standard_normal((e - s, spec.noise_rank), dtype=np.float32) @ basis)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(n)
    return x[perm], y[perm]


def random_spec(rng: np.random.RandomState, n: int) -> SyntheticSpec:
    """A set of ``n`` points with every knob drawn at random: what pre-training samples from.

    The ranges cover text-like sets (hundreds of points a class, wide spread, close sibling intents)
    and face-like ones (one to a few points a person, tight classes), at several dimensions."""
    low = rng.uniform(0.2, 0.9)
    near = rng.uniform(0.3, 1.0)
    return SyntheticSpec(n=n, dim=int(rng.choice([16, 32, 64, 128, 256])), alpha=rng.uniform(1.8, 3.0),
                         min_size=int(rng.choice([1, 2, 3, 10])), spread=(low, low + rng.uniform(0.1, 0.6)),
                         superclass_size=rng.uniform(1.0, 10.0), superclass_spread=(near, near + rng.uniform(0, 0.6)),
                         noise_rank=int(rng.choice([0, 2, 4, 8])), anisotropy=rng.uniform(0.0, 0.9),
                         seed=int(rng.randint(2**31)))
