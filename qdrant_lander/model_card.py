"""What a trained model is, stored inside its ONNX file so the file alone is enough to serve it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .features import NodeMode

FORMAT_VERSION = 1


class ModelCard(BaseModel):
    """Everything inference needs besides the weights: the inputs the model expects and its decoding
    settings (tau, k, levels), chosen at training time on held-out classes so users never tune them."""

    format_version: int = FORMAT_VERSION
    name: str = Field(description="Short id written into payloads, e.g. 'lander-universal-v1'")
    node_mode: NodeMode
    head: Literal["relative", "paper"] = "relative"
    input_dim: int | Literal["any"] = Field(description="Embedding dimension, or 'any' for structure-only models")
    k: int = 10
    tau: float = 0.5
    max_levels: int = 10
    min_merge_ratio: float = 0.0
    trained_on: list[str] = Field(default_factory=list)
    revision: str = "unknown"
    notes: dict[str, float | str | None] = Field(default_factory=dict,
                                                 description="Measured diagnostics, e.g. link AUC (None: not measurable)")
