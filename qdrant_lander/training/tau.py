"""Choosing the decoding settings (tau, k, early stop) for the user, on held-out training classes.

The trainer splits off a share of the *training classes* before training; the decoder is then run
on them with the trained model over a small grid, and the setting with the best pairwise F is stored
in the model card. Nothing is tuned at inference, and nothing is tuned on the data to be clustered.
"""

from __future__ import annotations

import itertools

import numpy as np
from pydantic import BaseModel

from ..decode import Scorer, cluster_hierarchy
from ..features import NodeMode
from ..knn import knn_graph
from ..metrics import score


class DecodeChoice(BaseModel):
    """One decoding setting and how it scored on the held-out classes."""

    tau: float
    k: int
    min_merge_ratio: float
    max_levels: int
    fp: float
    fb: float
    n_clusters: int
    n_classes: int
    n_levels: int


def choose_decoding(scorer: Scorer, x: np.ndarray, y: np.ndarray, *, node_mode: NodeMode, k_choices: list[int],
                    taus: list[float], min_merge_ratios: list[float], max_levels: int,
                    tolerance: float = 0.005) -> tuple[DecodeChoice, list[DecodeChoice]]:
    """Best setting by pairwise F on (x, y), and every setting tried; see :func:`pick`."""
    tried: list[DecodeChoice] = []
    for k in k_choices:
        k = min(k, x.shape[0] - 1)
        graph = knn_graph(x, k)
        for tau, ratio in itertools.product(taus, min_merge_ratios):
            res = cluster_hierarchy(x, graph, scorer, tau=tau, k=k, node_mode=node_mode, max_levels=max_levels,
                                    min_merge_ratio=ratio)
            s = score(y, res.labels)
            tried.append(DecodeChoice(tau=tau, k=k, min_merge_ratio=ratio, max_levels=max_levels, fp=s.fp, fb=s.fb,
                                      n_clusters=s.n_clusters, n_classes=s.n_classes, n_levels=res.n_levels))
    return pick(tried, tolerance), tried


def pick(tried: list[DecodeChoice], tolerance: float = 0.005) -> DecodeChoice:
    """The middle tau of the plateau around the best pairwise F (within ``tolerance``).

    A held-out split has fewer classes than the data users cluster, so it is easier: Fp often
    saturates over a wide range of tau, and its edge (the first grid point) over-merges on larger
    sets. The middle of the plateau keeps the most margin on both sides.
    """
    best = max(tried, key=lambda c: c.fp)
    plateau = sorted((c for c in tried if c.k == best.k and c.min_merge_ratio == best.min_merge_ratio
                      and c.fp >= best.fp - tolerance), key=lambda c: c.tau)
    return plateau[len(plateau) // 2]
