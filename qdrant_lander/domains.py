"""Decoding presets of the default model for the kinds of data it was trained on.

The default model is one set of weights for every embedding space, but its single tau is a
compromise between spaces that want very different ones (faces near 0.9, text near 0.3): its links
transfer, its tau does not (benchmarks/RESULTS.md). Users usually know what they cluster, so for each
training domain the package ships the decoding (k, tau, early stop, merge support) chosen on that
domain's *held-out* training classes, the ones the default model never trained on
(``scripts/choose_domain_presets.py``). Naming the domain replaces the compromise by that choice: no
labels, no training, same weights.

``auto`` (the default) names it for the user: each preset keeps the profile of its training domain's
space (the 10th percentile and the median of the cosine between random pairs of points: dlib faces
near 0.8, the Omniglot CNN near 0.55, MiniLM text near 0), and data is decoded with the preset whose
profile is nearest. Low quantiles describe unrelated points, so they barely move with the number of
classes (a 2-class collection has half its pairs inside one class, which drags a mean up). The profile tells encoders apart, not content: a space unlike all three still gets the
nearest one, so ``calibrate`` remains the answer there.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel

from .errors import InputError, ModelError
from .model_card import ModelCard

Domain = Literal["auto", "any", "faces", "text", "characters"]
DOMAINS: tuple[str, ...] = get_args(Domain)
PRESETS_FILE = "domains.json"  # in qdrant_lander/models, next to default.onnx
PROFILE_PAIRS = 20_000  # random pairs per profile: quantiles known to about +-0.005
FAR_PROFILE = 0.3  # nearest preset farther than this: a space unlike the three (every set measured is <= 0.23)


class SpaceProfile(BaseModel):
    """How an embedding space spreads its points: quantiles of the cosine between random pairs."""

    cosine_q10: float
    cosine_median: float

    def distance(self, other: SpaceProfile) -> float:
        return float(np.hypot(self.cosine_q10 - other.cosine_q10, self.cosine_median - other.cosine_median))


def space_profile(x: np.ndarray, *, pairs: int = PROFILE_PAIRS, seed: int = 0) -> SpaceProfile:
    """The profile of unit-length rows ``x`` (at least 2), from up to ``pairs`` random pairs."""
    rng = np.random.default_rng(seed)
    n = len(x)
    i = rng.integers(0, n, pairs)
    j = (i + rng.integers(1, n, pairs)) % n  # never i itself
    q10, median = np.quantile(np.einsum("ij,ij->i", x[i], x[j]), [0.1, 0.5])
    return SpaceProfile(cosine_q10=round(float(q10), 4), cosine_median=round(float(median), 4))


class DomainPreset(BaseModel):
    """One domain's decoding for the default model, and where it was chosen."""

    model: str  # the default model's name the preset was chosen for
    k: int
    tau: float
    min_merge_ratio: float
    min_support: float
    chosen_on: str  # the held-out training classes it was chosen on
    heldout_fp: float
    profile: SpaceProfile  # of those held-out points: what ``auto`` compares data with


def load_presets() -> dict[str, DomainPreset]:
    """The presets shipped with the package, by domain."""
    ref = importlib.resources.files("qdrant_lander") / "models" / PRESETS_FILE
    if not ref.is_file():
        raise ModelError(f"no domain presets in this installation (qdrant_lander/models/{PRESETS_FILE} is missing)")
    return {name: DomainPreset(**value) for name, value in json.loads(ref.read_text()).items()}


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise InputError(f"unknown domain '{domain}'; choose one of {', '.join(DOMAINS)}")
    return domain


def nearest_domain(profile: SpaceProfile) -> tuple[str, float]:
    """The domain whose training space ``profile`` resembles most, and how far its profile is."""
    presets = load_presets()
    return min(((d, p.profile.distance(profile)) for d, p in presets.items()), key=lambda dd: dd[1])


def with_domain(card: ModelCard, domain: str) -> ModelCard:
    """``card`` decoded with ``domain``'s preset (``any``, and ``auto`` before it is resolved: unchanged);
    refuses a model the presets were not chosen for, since another model's links need another tau."""
    if check_domain(domain) in ("any", "auto"):
        return card
    preset = load_presets()[domain]
    if card.name != preset.model:
        raise InputError(f"domain presets belong to the default model '{preset.model}', not '{card.name}'; "
                         "use `qdrant-lander calibrate` to fit your own model's tau to your data")
    return card.model_copy(update={"k": preset.k, "tau": preset.tau, "min_merge_ratio": preset.min_merge_ratio,
                                   "min_support": preset.min_support, "tau_bias": None})
