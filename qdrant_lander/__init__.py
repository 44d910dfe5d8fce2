"""qdrant-lander: learned hierarchical clustering (LANDER / Hi-LANDER) for Qdrant collections.

Importing the package stays light (numpy, pydantic): onnxruntime loads when a model first runs, and
torch only when training.
"""

from .decode import ClusterResult
from .errors import InputError, LanderError, MissingExtraError, ModelError, StoreError
from .knn import KnnGraph, knn_graph
from .metrics import Scores, score

__version__ = "0.1.0"

__all__ = ["ClusterResult", "InputError", "KnnGraph", "Lander", "LanderError", "MissingExtraError", "ModelError",
           "Scores", "StoreError", "knn_graph", "score"]


def __getattr__(name: str):
    if name == "Lander":  # lazy: keeps ``import qdrant_lander`` free of onnxruntime
        from .lander import Lander

        return Lander
    raise AttributeError(name)
