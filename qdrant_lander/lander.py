"""The estimator users call from Python: ``Lander().fit(x, y)`` / ``Lander().predict(x)``.

It ties the pieces together and nothing more: inputs are checked, the kNN graph is built (or taken
from a store), the ONNX model scores every level, and the decoder reads off the hierarchy. Training
is delegated to :mod:`qdrant_lander.training`, which is the only place torch is imported.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .decode import ClusterResult, cluster_hierarchy
from .errors import InputError, MissingExtraError
from .knn import KnnGraph, knn_graph
from .model_card import ModelCard
from .runtime import OnnxScorer
from .validate import check_embeddings, check_labels


class Lander:
    """Learned hierarchical clustering with a LANDER model.

    ``model`` is an ONNX file or a model directory written by ``fit``/``qdrant-lander train``;
    ``None`` uses the default model shipped with the package. ``device`` is ``auto``, ``cpu`` or
    ``cuda``; ``threads`` caps onnxruntime's intra-op threads.
    """

    def __init__(self, model: str | Path | None = None, *, device: str = "auto", threads: int | None = None):
        self.model = model
        self.device = device
        self.threads = threads
        self._scorer: OnnxScorer | None = None

    @property
    def scorer(self) -> OnnxScorer:
        if self._scorer is None:
            path = self.model
            if path is not None and Path(path).is_dir():
                path = Path(path) / "model.onnx"
            self._scorer = (OnnxScorer.default(device=self.device, threads=self.threads) if path is None
                            else OnnxScorer(path, device=self.device, threads=self.threads))
        return self._scorer

    @property
    def card(self) -> ModelCard:
        return self.scorer.card

    def fit(self, x: np.ndarray, y: np.ndarray, *, out_dir: str | Path | None = None, progress: bool = True,
            name: str = "lander-custom", trained_on: list[str] | None = None, **train_options) -> Lander:
        """Meta-train a model on labeled embeddings (classes disjoint from those you will cluster).

        ``train_options`` are :class:`~qdrant_lander.training.trainer.TrainConfig` fields. The model
        directory (torch weights, ONNX file, card) goes to ``out_dir`` or a temporary directory.
        """
        try:
            from .training.trainer import TrainConfig, train
        except ImportError as e:
            raise MissingExtraError(
                f'training needs torch and torch-geometric ({e.name} is missing): pip install torch==2.13.0 '
                '"qdrant-lander[train]"'
            ) from e
        x = check_embeddings(x, min_points=2)
        y = check_labels(y, len(x))
        if np.unique(y).size < 2:
            raise InputError("meta-training needs at least 2 classes in the labels")
        try:
            config = TrainConfig(**train_options)
        except ValueError as e:  # pydantic's ValidationError: unknown or invalid option
            raise InputError(f"invalid training options: {e}") from e
        trained = train(x, y, config, progress=progress, name=name, trained_on=trained_on or [])
        out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="lander-model-"))
        trained.save(out)
        self.model, self._scorer = out, None
        return self

    def predict(self, x: np.ndarray) -> ClusterResult:
        """Cluster an array of embeddings [N, D] (any scale; rows are L2-normalised here)."""
        card = self.card
        x = check_embeddings(x, min_points=card.k + 1, dim=card.input_dim if card.input_dim != "any" else None)
        return self.predict_graph(x, knn_graph(x, card.k))

    def predict_graph(self, vectors: np.ndarray, graph: KnnGraph) -> ClusterResult:
        """Cluster unit-length ``vectors`` whose level-0 kNN graph is already known (e.g. from Qdrant).

        ``graph.nbr`` holds row indices into ``vectors``, not point ids.
        """
        card = self.card
        if card.input_dim != "any" and vectors.shape[1] != card.input_dim:
            raise InputError(f"vectors have dimension {vectors.shape[1]}, but model '{card.name}' was trained for "
                             f"dimension {card.input_dim}")
        if graph.n != vectors.shape[0]:
            raise InputError(f"kNN graph has {graph.n} rows but there are {vectors.shape[0]} vectors")
        return cluster_hierarchy(vectors, graph, self.scorer, card)
