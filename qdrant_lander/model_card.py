"""What a trained model is, stored inside its ONNX file so the file alone is enough to serve it."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from .decode import DecodeSettings
from .errors import ModelError

FORMAT_VERSION = 2  # 2: similarity features standardised per level (format-1 weights read raw cosines)
CARD_FILE, ONNX_FILE = "card.json", "model.onnx"  # in a model directory (its card.json is the card in force)
MODEL_FILE = "model.pt"  # a trained model directory's torch weights (what `export` reads)
_WEIGHT_FIELDS = ("name", "node_mode", "head", "input_dim")  # what a card cannot change about its weights


def packaged_file(name: str, what: str, hint: str = "") -> Path:
    """A file shipped in ``qdrant_lander/models`` with the default model (its ONNX file, torch weights, presets);
    a broken installation without it gets an error that names it."""
    ref = importlib.resources.files("qdrant_lander") / "models" / name
    if not ref.is_file():
        raise ModelError(f"no {what} in this installation (qdrant_lander/models/{name} is missing){hint}")
    return Path(str(ref))


class ModelCard(DecodeSettings):
    """Everything inference needs besides the weights: the inputs the model expects and its decoding
    settings (the inherited fields), chosen at training time on held-out classes so users never tune them."""

    format_version: int = FORMAT_VERSION
    name: str = Field(description="Short id written into payloads, e.g. 'lander-universal-v2'")
    head: Literal["relative", "paper"] = "relative"
    input_dim: int | Literal["any"] = Field(description="Embedding dimension, or 'any' for structure-only models")
    trained_on: list[str] = Field(default_factory=list)
    revision: str = "unknown"
    notes: dict[str, float | str | None] = Field(default_factory=dict,
                                                 description="Measured diagnostics, e.g. link AUC (None: not measurable)")


def check_format(card: ModelCard, source: object) -> None:
    """Refuse a model whose inputs this version computes differently: its links would be silently wrong."""
    _check_version(card.format_version, source)


def _check_version(version: int, source: object) -> None:
    if version > FORMAT_VERSION:
        raise ModelError(f"{source} has model format {version}, this qdrant-lander reads "
                         f"{FORMAT_VERSION}: upgrade qdrant-lander")
    if version < FORMAT_VERSION:
        raise ModelError(f"{source} has model format {version}, made by an older qdrant-lander whose "
                         f"model inputs differ from today's (format {FORMAT_VERSION}); retrain it with "
                         "`qdrant-lander train`")


def read_card(text: str, source: object) -> ModelCard:
    """A card from its JSON (``source`` names the file in errors). The format is checked before the fields: another
    format may have changed them too, and then "upgrade" or "retrain" is the useful message, not a field error."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ModelError(f"{source} has an unreadable model card: {e}") from e
    version = raw.get("format_version", FORMAT_VERSION) if isinstance(raw, dict) else FORMAT_VERSION
    if isinstance(version, int) and not isinstance(version, bool):
        _check_version(version, source)
    try:
        card = ModelCard.model_validate(raw)
    except ValueError as e:
        raise ModelError(f"{source} has an unreadable model card: {e}") from e
    check_format(card, source)  # again on the parsed value: "1", 1.0 or true are read as numbers
    return card


CALIBRATED = "+cal-"  # a calibrated copy's name: its weights' name, this, and its decoding (Lander.calibrate)


def calibrated_name(name: str, k: int, tau: float) -> str:
    """The name of a copy of model ``name`` calibrated to ``k`` and ``tau`` (a copy of a copy replaces the suffix)."""
    return f"{name.split(CALIBRATED)[0]}{CALIBRATED}k{k}-tau{tau:g}"


def _weights_field(card: ModelCard, field: str) -> object:
    value = getattr(card, field)
    return value.split(CALIBRATED)[0] if field == "name" else value


def check_same_model(card: ModelCard, weights: ModelCard, source: object) -> None:
    """Refuse a card (e.g. a calibrated ``card.json``) that describes other weights than ``source``'s: served or
    exported together, they would cluster with inputs or a decoding the weights were never trained for."""
    if any(_weights_field(card, f) != _weights_field(weights, f) for f in _WEIGHT_FIELDS):
        raise ModelError(f"the card given for {source} describes another model ({', '.join(_WEIGHT_FIELDS)} must "
                         f"match the weights': {[getattr(weights, f) for f in _WEIGHT_FIELDS]}, the card says "
                         f"{[getattr(card, f) for f in _WEIGHT_FIELDS]})")


def card_in_force(model_dir: Path) -> ModelCard | None:
    """A model directory's ``card.json`` (None if it has none): the card in force, which overrides the one inside
    its model files, because ``calibrate`` writes only that."""
    card_file = model_dir / CARD_FILE
    return read_card(card_file.read_text(), card_file) if card_file.is_file() else None
