"""Self-training on the space a model will cluster: its own clusters of unlabeled vectors become classes.

Held-out training classes are easier than the classes a model meets later when the encoder was trained on
the labeled classes (Omniglot's CNN: 1-NN 97.8% on its training classes, 89.5% on new ones). Clusters the
first model finds among the vectors to cluster show the second training what the new classes look like
(benchmarks/RESULTS.md, session 21, three seeds each: LFW +0.010 to +0.025 Fp, Omniglot +0.017 on average,
CLINC75 -0.006 and -0.010 on two).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..decode import cluster_hierarchy
from ..knn import knn_graph
from .trainer import TrainConfig, TrainedModel, train_best

log = logging.getLogger(__name__)


def pseudo_class_size(y: np.ndarray) -> int:
    """Smallest cluster kept as a class: a quarter of the labeled set's median class size, 2 at least, so
    that the fragments a model leaves of a class do not teach it to cut there (on CLINC150 -> Banking77,
    clusters of 2+ points lowered Fp by 0.030, of 20+ raised it by 0.004)."""
    return max(2, int(np.median(np.unique(y, return_counts=True)[1])) // 4)


def pseudo_classes(trained: TrainedModel, x: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of unit-length ``x`` that ``trained`` puts in clusters of at least ``min_size`` points (its
    card's k and decoding, as serving clusters), and those clusters' ids."""
    labels = cluster_hierarchy(x, knn_graph(x, trained.card.k), trained.scorer(), trained.card).labels
    ids, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, ids[counts >= min_size])
    return x[keep], labels[keep]


def train_adapted(x: np.ndarray, y: np.ndarray, x_new: np.ndarray, configs: Sequence[TrainConfig],
                  **train_kwargs: Any) -> TrainedModel:
    """:func:`~qdrant_lander.training.trainer.train_best` on the labeled ``x``/``y``, then again with that
    model's clusters of the unlabeled unit-length ``x_new`` (:func:`pseudo_class_size` points or more) as
    extra classes. The card notes how many vectors and classes were added."""
    trained = train_best(x, y, configs, **train_kwargs)
    min_size = pseudo_class_size(y)
    xp, yp = pseudo_classes(trained, x_new, min_size)
    n_pseudo = np.unique(yp).size
    log.info("adapting to %d unlabeled vectors: %d of them in %d clusters of %d+ points join the labeled classes; "
             "training again", len(x_new), len(xp), n_pseudo, min_size)
    if n_pseudo:
        trained = train_best(np.concatenate([x, xp]), np.concatenate([y, yp + y.max() + 1]), configs, **train_kwargs)
    else:
        log.warning("no cluster of %d+ points among the unlabeled vectors: the model trained on the labels alone is "
                    "kept", min_size)
    trained.card = trained.card.model_copy(update={"notes": {
        **trained.card.notes, "adapted_to_points": float(len(x_new)), "pseudo_class_points": float(len(xp)),
        "pseudo_classes": float(n_pseudo)}})
    return trained
