"""What a trained model is, stored inside its ONNX file so the file alone is enough to serve it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .decode import DecodeSettings

FORMAT_VERSION = 1


class ModelCard(DecodeSettings):
    """Everything inference needs besides the weights: the inputs the model expects and its decoding
    settings (the inherited fields), chosen at training time on held-out classes so users never tune them."""

    format_version: int = FORMAT_VERSION
    name: str = Field(description="Short id written into payloads, e.g. 'lander-universal-v1'")
    head: Literal["relative", "paper"] = "relative"
    input_dim: int | Literal["any"] = Field(description="Embedding dimension, or 'any' for structure-only models")
    trained_on: list[str] = Field(default_factory=list)
    revision: str = "unknown"
    notes: dict[str, float | str | None] = Field(default_factory=dict,
                                                 description="Measured diagnostics, e.g. link AUC (None: not measurable)")
