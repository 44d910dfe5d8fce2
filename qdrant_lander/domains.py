"""Decoding presets of the default model for the kinds of data it was trained on.

The default model is one set of weights for every embedding space, but its single tau is a
compromise between spaces that want very different ones (faces near 0.9, text near 0.3): its links
transfer, its tau does not (benchmarks/RESULTS.md). Users usually know what they cluster, so for each
training domain the package ships the decoding (k, tau, early stop, merge support) chosen on that
domain's *held-out* training classes, the ones the default model never trained on
(``scripts/choose_domain_presets.py``). Naming the domain replaces the compromise by that choice: no
labels, no training, same weights.

Class size matters as much as the domain: the text preset, chosen on intents of 150 queries, merges
text with 3-10 points per class badly, and the faces preset, chosen on LFW's people of 1-3 faces,
splits people with dozens. So text and characters also have a ``-small`` preset (the same held-out
classes thinned to 3-20 points each) and faces a ``-large`` one (its held-out people with 5+ faces).

``auto`` (the default) picks for the user, in two steps. The domain: each preset keeps the profile of
its training space (the 10th percentile and the median of the cosine between random pairs of points:
dlib faces near 0.8, the Omniglot CNN near 0.55, MiniLM text near 0), and the nearest wins. Low
quantiles describe unrelated points, so they barely move with the number of classes (a 2-class
collection has half its pairs inside one class, which drags a mean up). Then the class size, among
that domain's presets: the *neighbour extent*, how far down its 10 nearest neighbours a point's own
class reaches (median over points of (cosine to the 10th - the median cosine) / (cosine to the 1st -
the median cosine)), rises with class size inside each domain, and the nearest preset's extent wins.
The profile tells encoders apart, not content: a space unlike all three still gets the nearest one,
so ``calibrate`` remains the answer there. One exception: an encoder that adds a common direction to
every vector (many text encoders do) raises every cosine and would read as faces; the *spread* of the
random pairs relative to (1 - median) does not move with such an offset, and a spread like a tighter
space's (text's) overrules the quantiles.
"""

from __future__ import annotations

import json
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel

from .decode import OWN_TAU
from .errors import InputError
from .model_card import ModelCard, packaged_file

Domain = Literal["auto", "any", "faces", "faces-large", "text", "text-small", "characters", "characters-small"]
DOMAINS: tuple[str, ...] = get_args(Domain)
PRESETS_FILE = "domains.json"  # in qdrant_lander/models, next to default.onnx
PROFILE_PAIRS = 20_000  # random pairs per profile: quantiles known to about +-0.005
EXTENT_K = 10  # neighbours read by the extent
EXTENT_ROWS = 256  # points whose neighbours are found (among all points: a subsample would thin the classes)
FAR_PROFILE = 0.3  # nearest preset farther than this: a space unlike the three (every set measured is <= 0.23)
SPREAD_POINTS = 200  # fewer points read the spread too roughly to overrule the quantiles (see nearest_preset)


class SpaceProfile(BaseModel):
    """How an embedding space spreads its points (quantiles of the cosine between random pairs) and
    how large its classes look (neighbour extent, about 0.3-0.9)."""

    cosine_q10: float
    cosine_median: float
    extent: float
    points: int | None = None  # how many points it was read from (None: not recorded)

    @property
    def spread(self) -> float:
        """(median - 10th percentile) / (1 - median): how far apart unrelated pairs are, relative to how far
        they could be. Unlike the quantiles, it stays put when an encoder adds one common direction to
        every vector (cosines c -> a + (1 - a) c), as many text encoders do: text 0.12, characters 0.23,
        faces 0.30 on the presets' held-out classes."""
        return spread_of(self.cosine_q10, self.cosine_median)

    def distance(self, other: SpaceProfile) -> float:
        """How unlike two spaces are (the extent is left out: it describes the classes, not the space)."""
        return float(np.hypot(self.cosine_q10 - other.cosine_q10, self.cosine_median - other.cosine_median))


def spread_of(cosine_q10: float, cosine_median: float) -> float:
    """See :attr:`SpaceProfile.spread`."""
    return (cosine_median - cosine_q10) / max(1.0 - cosine_median, 1e-6)


def _pair_quantiles(x: np.ndarray, pairs: int, rng: np.random.Generator) -> tuple[float, float]:
    """10th percentile and median of the cosine between ``pairs`` random pairs of distinct rows (at least 2)."""
    n = len(x)
    i = rng.integers(0, n, pairs)
    j = (i + rng.integers(1, n, pairs)) % n  # never i itself
    q10, median = np.quantile(np.einsum("ij,ij->i", x[i], x[j]), [0.1, 0.5])
    return round(float(q10), 4), round(float(median), 4)


def space_spread(x: np.ndarray, *, pairs: int = PROFILE_PAIRS, seed: int = 0) -> float:
    """``space_profile(x).spread`` from the random pairs alone: no neighbour search, so cheap at any size."""
    return spread_of(*_pair_quantiles(x, pairs, np.random.default_rng(seed)))


def space_profile(x: np.ndarray, *, pairs: int = PROFILE_PAIRS, seed: int = 0, block: int = 65_536) -> SpaceProfile:
    """The profile of unit-length rows ``x`` (at least 2), from up to ``pairs`` random pairs and the
    neighbours of up to ``EXTENT_ROWS`` random points among all of ``x`` (read ``block`` rows at a time)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    q10, median = _pair_quantiles(x, pairs, rng)
    k = min(EXTENT_K, n - 1)
    rows = rng.choice(n, min(EXTENT_ROWS, n), replace=False)
    top = np.full((len(rows), k), -np.inf, dtype=np.float32)
    for start in range(0, n, block):
        sim = x[rows] @ x[start:start + block].T
        own = (rows >= start) & (rows < start + block)
        sim[own, rows[own] - start] = -np.inf  # a point is not its own neighbour
        top = -np.partition(-np.concatenate([top, sim], axis=1), k - 1, axis=1)[:, :k]
    first, kth = top.max(axis=1), top.min(axis=1)
    # A point whose nearest neighbour is no nearer than a random point has no class around it: extent 0.
    closer = first - median > 1e-3
    extent = np.median(np.where(closer, (kth - median) / np.where(closer, first - median, 1.0), 0.0))
    return SpaceProfile(cosine_q10=q10, cosine_median=median, extent=round(float(extent), 4), points=n)


class DomainPreset(BaseModel):
    """One decoding of the default model for one kind of data, and where it was chosen."""

    model: str  # the default model's name the preset was chosen for
    k: int
    tau: float
    min_merge_ratio: float
    min_support: float
    chosen_on: str  # the held-out training classes it was chosen on
    heldout_fp: float
    profile: SpaceProfile  # of those held-out points (mean over the thinned copies): what ``auto`` compares data with


def load_presets() -> dict[str, DomainPreset]:
    """The presets shipped with the package, by name (``text``, ``text-small``, ...)."""
    presets = json.loads(packaged_file(PRESETS_FILE, "domain presets").read_text())
    return {name: DomainPreset(**value) for name, value in presets.items()}


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise InputError(f"unknown domain '{domain}'; choose one of {', '.join(DOMAINS)}")
    return domain


def domain_of(preset: str) -> str:
    """The kind of data a preset is for: ``text`` for ``text`` and ``text-small``."""
    return preset.split("-")[0]


def nearest_preset(profile: SpaceProfile) -> tuple[str, float]:
    """The preset for data with ``profile``, and how far the space is from that preset's domain: the
    domain whose space is nearest, then, of its presets, the one whose class extent is nearest."""
    presets = load_presets()
    spaces = {name: p.profile for name, p in presets.items() if domain_of(name) == name}
    domain = min(spaces, key=lambda name: spaces[name].distance(profile))
    # An encoder that adds a common direction to every vector lifts the quantiles towards the faces space
    # (text offset that way read as faces: 0.44 Fp instead of 0.74) but leaves the spread where it was; a
    # spread nearer a tighter space than the quantiles' pick overrules it. Never the other way: Banking77's
    # intents (MiniLM, as the text preset) spread almost like characters.
    tighter = min(spaces, key=lambda name: abs(spaces[name].spread - profile.spread))
    if (profile.points or 0) >= SPREAD_POINTS and spaces[tighter].spread < spaces[domain].spread:
        domain = tighter
    distance = spaces[domain].distance(profile)
    preset = min((name for name in presets if domain_of(name) == domain),
                 key=lambda name: abs(presets[name].profile.extent - profile.extent))
    return preset, distance


def with_domain(card: ModelCard, domain: str) -> ModelCard:
    """``card`` decoded with ``domain``'s preset (``any``, and ``auto`` before it is resolved: unchanged);
    refuses a model the presets were not chosen for, since another model's links need another tau. Presets
    absorb no fragments: they were chosen without it (``scripts/choose_domain_presets.py`` says why)."""
    if check_domain(domain) in ("any", "auto"):
        return card
    preset = load_presets()[domain]
    if card.name != preset.model:
        raise InputError(f"domain presets belong to the default model '{preset.model}', not '{card.name}'; "
                         "use `qdrant-lander calibrate` to fit your own model's tau to your data")
    return card.model_copy(update={"k": preset.k, "tau": preset.tau, "min_merge_ratio": preset.min_merge_ratio,
                                   "min_support": preset.min_support, "absorb_share": 0.0, **OWN_TAU})
