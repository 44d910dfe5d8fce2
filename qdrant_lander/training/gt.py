"""Ground truth for training: link labels, densities and a scorer that decodes perfect levels.

A supernode's label is its peak point's label. Fed through the real decoder
(:func:`~qdrant_lander.decode.hierarchy_levels`), :class:`GroundTruthScorer` yields the training
levels, so the model trains on the same kind of supernode graphs it will decode.
"""

from __future__ import annotations

import numpy as np

from ..features import LevelInputs


def edge_labels(inputs: LevelInputs, y: np.ndarray) -> np.ndarray:
    """1.0 where edge (i, m) joins two nodes whose peak points share a label, else 0.0: ``[N, k]``."""
    lab = y[inputs.peak_index]
    return (lab[:, None] == lab[inputs.nbr]).astype(np.float32)


def gt_density(sim: np.ndarray, link: np.ndarray) -> np.ndarray:
    """d_i = mean_m sim_im * (+1 same label / -1 other): the model's density formula with perfect links."""
    return (sim * (2 * link - 1)).mean(axis=1).astype(np.float32)


class GroundTruthScorer:
    """A perfect scorer: link = same label and positive similarity; density from those links."""

    def __init__(self, y: np.ndarray) -> None:
        self.y = np.asarray(y)

    def __call__(self, inputs: LevelInputs) -> tuple[np.ndarray, np.ndarray]:
        link = edge_labels(inputs, self.y) * (inputs.sim > 0)
        return link, gt_density(inputs.sim, link)
