"""Self-training on the space a model will cluster: its own clusters of unlabeled vectors become classes.

Held-out training classes are easier than the classes a model meets later when the encoder was trained on
the labeled classes (Omniglot's CNN: 1-NN 97.8% on its training classes, 89.5% on new ones). Clusters the
first model finds among the vectors to cluster show the second training what the new classes look like
(benchmarks/RESULTS.md, session 21: Omniglot +0.013 to +0.041 Fp in 6 of 7 runs, text within ±0.011).
"""

from __future__ import annotations

import numpy as np

from ..decode import cluster_hierarchy
from ..knn import knn_graph
from .evaluate import TorchScorer
from .trainer import TrainedModel


def pseudo_class_size(y: np.ndarray) -> int:
    """Smallest cluster kept as a class: a quarter of the labeled set's median class size, 2 at least, so
    that the fragments a model leaves of a class do not teach it to cut there (on CLINC150 -> Banking77,
    clusters of 2+ points lowered Fp by 0.030, of 20+ raised it by 0.004)."""
    return max(2, int(np.median(np.unique(y, return_counts=True)[1])) // 4)


def pseudo_classes(trained: TrainedModel, x: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of unit-length ``x`` that ``trained`` puts in clusters of at least ``min_size`` points (its
    card's k and decoding, as serving clusters), and those clusters' ids."""
    labels = cluster_hierarchy(x, knn_graph(x, trained.card.k), TorchScorer(trained.net), trained.card).labels
    ids, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, ids[counts >= min_size])
    return x[keep], labels[keep]
