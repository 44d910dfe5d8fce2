"""Decoding presets of the default model for the kinds of data it was trained on.

The default model is one set of weights for every embedding space, but its single tau is a
compromise between spaces that want very different ones (faces near 0.9, text near 0.3): its links
transfer, its tau does not (benchmarks/RESULTS.md). Users usually know what they cluster, so for each
training domain the package ships the decoding (k, tau, early stop, merge support) chosen on that
domain's *held-out* training classes, the ones the default model never trained on
(``scripts/choose_domain_presets.py``). Naming the domain replaces the compromise by that choice: no
labels, no training, same weights.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Literal, get_args

from pydantic import BaseModel

from .errors import InputError, ModelError
from .model_card import ModelCard

Domain = Literal["any", "faces", "text", "characters"]
DOMAINS: tuple[str, ...] = get_args(Domain)
PRESETS_FILE = "domains.json"  # in qdrant_lander/models, next to default.onnx


class DomainPreset(BaseModel):
    """One domain's decoding for the default model, and where it was chosen."""

    model: str  # the default model's name the preset was chosen for
    k: int
    tau: float
    min_merge_ratio: float
    min_support: float
    chosen_on: str  # the held-out training classes it was chosen on
    heldout_fp: float


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


def with_domain(card: ModelCard, domain: str) -> ModelCard:
    """``card`` decoded with ``domain``'s preset (``any``: unchanged); refuses a model the presets were
    not chosen for, since another model's links need another tau."""
    if check_domain(domain) == "any":
        return card
    preset = load_presets()[domain]
    if card.name != preset.model:
        raise InputError(f"domain presets belong to the default model '{preset.model}', not '{card.name}'; "
                         "use `qdrant-lander calibrate` to fit your own model's tau to your data")
    return card.model_copy(update={"k": preset.k, "tau": preset.tau, "min_merge_ratio": preset.min_merge_ratio,
                                   "min_support": preset.min_support, "tau_bias": None})
