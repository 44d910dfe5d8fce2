"""How good are a scorer's links and densities on labeled data: the first diagnostic for any model.

A learned link scorer whose AUC on unseen classes does not beat plain cosine cannot beat a tuned
graph clustering, whatever the decoder does (shared/design/METHOD.md), so every trained model reports both.
"""

from __future__ import annotations

import numpy as np
import torch

from ..decode import Scorer, decode_level
from ..features import LevelInputs, NodeMode, level_inputs
from ..knn import knn_graph
from .gt import edge_labels, gt_density
from .model import LanderNet


class TorchScorer:
    """Drives the decoder with a torch :class:`LanderNet` (training-time twin of the ONNX scorer)."""

    def __init__(self, net: LanderNet) -> None:
        self.net = net

    @torch.no_grad()
    def __call__(self, inputs: LevelInputs) -> tuple[np.ndarray, np.ndarray]:
        was_training = self.net.training
        self.net.eval()
        link, density = self.net(torch.from_numpy(inputs.x), torch.from_numpy(inputs.nbr),
                                 torch.from_numpy(inputs.sim), torch.from_numpy(inputs.edge_attr))
        self.net.train(was_training)
        return link.numpy(), density.numpy()


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half."""
    score, label = score.ravel(), label.ravel().astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(s.size, dtype=np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], s.size]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # average 1-based rank per tie group
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def parent_precision(score: np.ndarray, density: np.ndarray, nbr: np.ndarray, y: np.ndarray) -> float:
    """Share of nodes whose parent under the decoder's own rule (:func:`~qdrant_lander.decode.decode_level`,
    no threshold) has their label, over nodes with a denser neighbour.

    That is the one edge per node the decoder follows, so this, not the AUC over every edge, is where
    better links pay: learned links beat cosine's AUC by 0.07-0.13 on text and characters but pick a
    right parent only 0.01-0.02 more often (benchmarks/RESULTS.md).
    """
    parent = decode_level(nbr, score, density, -np.inf)
    rows = np.flatnonzero(parent >= 0)
    return float((y[parent[rows]] == y[rows]).mean()) if rows.size else float("nan")


def level0_diagnostics(scorer: Scorer, x: np.ndarray, y: np.ndarray, *, k: int, node_mode: NodeMode) -> dict[str, float]:
    """Link AUC and parent precision of the scorer and of plain cosine (both picking parents by the scorer's
    density), and density correlation with the GT density, at level 0."""
    graph = knn_graph(x, k)
    n = x.shape[0]
    inputs = level_inputs(graph, peak=x, mean=x, size=np.ones(n, dtype=np.int64), peak_index=np.arange(n),
                          node_mode=node_mode)
    link, density = scorer(inputs)
    truth = edge_labels(inputs, y)
    dens_gt = gt_density(inputs.sim, truth)
    return {
        "link_auc": auc(link, truth),
        "cosine_auc": auc(inputs.sim, truth),
        "parent_precision": parent_precision(link, density, inputs.nbr, y),
        "cosine_parent_precision": parent_precision(inputs.sim, density, inputs.nbr, y),
        "density_corr": float(np.corrcoef(density, dens_gt)[0, 1]),
        "cosine_density_corr": float(np.corrcoef(inputs.sim.mean(axis=1), dens_gt)[0, 1]),
        "positive_rate": float(truth.mean()),
    }
