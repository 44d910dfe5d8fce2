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
    """A perfect scorer: link = same label and positive similarity; density from those links.

    To train on levels like the ones a learned scorer decodes, it can err on purpose (seeded):
    ``drop`` removes that share of true links, leaving same-class fragments for the next level to
    merge; ``flip`` turns that share of false links on, leaving impure supernodes.
    """

    def __init__(self, y: np.ndarray, drop: float = 0.0, flip: float = 0.0,
                 rng: np.random.RandomState | None = None) -> None:
        self.y = np.asarray(y)
        self.drop, self.flip = drop, flip
        self.rng = rng if rng is not None else np.random.RandomState(0)

    def __call__(self, inputs: LevelInputs) -> tuple[np.ndarray, np.ndarray]:
        link = edge_labels(inputs, self.y) * (inputs.sim > 0)
        if self.drop > 0 or self.flip > 0:
            u = self.rng.random_sample(link.shape)
            link = np.where(link > 0, u >= self.drop, u < self.flip).astype(np.float32)
        return link, gt_density(inputs.sim, link)
