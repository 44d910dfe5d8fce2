"""Choosing the decoding settings (tau, k, early stop, merge support, fragment absorption) for the user, on
held-out training classes.

The trainer splits off a share of the *training classes* before training; the decoder is then run
on them with the trained model over a small grid, and the setting with the best pairwise F is stored
in the model card. Nothing is tuned at inference, and nothing is tuned on the data to be clustered.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ..decode import AUTO_TAUS, DecodeSettings, Scorer, absorbed, agreement, decode_levels, score_level0
from ..features import NodeMode
from ..knn import knn_graph
from ..metrics import score


DECODE_K = (10, 20, 30)
TAUS = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))
MIN_MERGE_RATIOS = (0.0, 0.05)
MIN_SUPPORTS = (0.0, 1.0, 2.0)
# Of the typical cluster's size (0 = off). Capped at 0.3: 0.75 collapses text and 0.5, which held-out classes
# (fewer than the data's) often prefer, cost CLINC75 0.03-0.04 Fp on two seeds of three (RESULTS, session 26).
ABSORB_SHARES = (0.0, 0.1, 0.2, 0.3)
"""The grid the trainer (``TrainConfig`` defaults) and :meth:`~qdrant_lander.lander.Lander.calibrate` search."""


class DecodeChoice(DecodeSettings):
    """One decoding setting and how it scored on the held-out classes."""

    fp: float
    fb: float
    n_clusters: int
    n_classes: int
    n_levels: int


def choose_decoding(scorer: Scorer, x: np.ndarray, y: np.ndarray, *, node_mode: NodeMode, max_levels: int,
                    k_choices: Sequence[int] = DECODE_K, taus: Sequence[float] = TAUS,
                    min_merge_ratios: Sequence[float] = MIN_MERGE_RATIOS, min_supports: Sequence[float] = MIN_SUPPORTS,
                    absorb_shares: Sequence[float] = ABSORB_SHARES,
                    tolerance: float = 0.005) -> tuple[DecodeChoice, list[DecodeChoice]]:
    """Best setting by pairwise F on (x, y), and every setting tried (the grid defaults to the
    trainer's); see :func:`pick`."""
    tried: list[DecodeChoice] = []
    for k in k_choices:
        k = min(k, x.shape[0] - 1)
        graph = knn_graph(x, k)
        level0 = score_level0(x, graph, scorer, node_mode)  # does not depend on the rest of the grid: scored once
        for tau, ratio, support in itertools.product(taus, min_merge_ratios, min_supports):
            settings = DecodeSettings(node_mode=node_mode, k=k, tau=tau, max_levels=max_levels,
                                      min_merge_ratio=ratio, min_support=support)
            res = decode_levels(x, graph, scorer, settings, level0)
            for share in absorb_shares:
                s = score(y, absorbed(res, level0, share).labels)
                tried.append(DecodeChoice(**settings.model_dump(exclude={"absorb_share"}), absorb_share=share,
                                          fp=s.fp, fb=s.fb, n_clusters=s.n_clusters, n_classes=s.n_classes,
                                          n_levels=res.n_levels))
    return pick(tried, tolerance), tried


def pick(tried: list[DecodeChoice], tolerance: float = 0.005) -> DecodeChoice:
    """The middle tau of the plateau around the best pairwise F (within ``tolerance``), with the
    strictest merge support that reaches that F; fragment absorption only where it beats every
    setting without it by more than ``tolerance``.

    A held-out split has fewer classes than the data users cluster, so it is easier: Fp often
    saturates over a wide range of tau, and its edge (the first grid point) over-merges on larger
    sets. The middle of the plateau keeps the most margin on both sides; for the same reason, of
    supports that score alike, the strictest guards best against the wrong merges that more classes bring.
    Absorption is judged apart so that, where it does not win, the choice is the one made without it.
    """
    plain = [c for c in tried if c.absorb_share == 0]
    absorbing = [c for c in tried if c.absorb_share > 0]
    if absorbing and (not plain or max(c.fp for c in absorbing) > max(c.fp for c in plain) + tolerance):
        return _plateau_middle(absorbing, tolerance)
    return _plateau_middle(plain, tolerance)


def _plateau_middle(tried: list[DecodeChoice], tolerance: float) -> DecodeChoice:
    top = max(c.fp for c in tried)
    best = max((c for c in tried if c.fp >= top - tolerance), key=lambda c: (c.min_support, -c.absorb_share, c.fp))
    plateau = sorted((c for c in tried if c.k == best.k and c.min_merge_ratio == best.min_merge_ratio
                      and c.min_support == best.min_support and c.absorb_share == best.absorb_share
                      and c.fp >= top - tolerance), key=lambda c: c.tau)
    return plateau[len(plateau) // 2]


def choose_tau_bias(scorer: Scorer, sets: list[tuple[np.ndarray, np.ndarray]], fixed: DecodeChoice,
                    biases: list[float], tolerance: float = 0.005) -> tuple[float | None, dict[float, float]]:
    """The ``tau_bias`` whose per-set tau choice (label-free, :func:`~qdrant_lander.decode.agreement`)
    gives the best mean Fp over the held-out ``sets``, or None when that does not beat ``fixed`` (one
    tau for every set, mean Fp ``fixed.fp``) by more than ``tolerance``; and the mean Fp of each bias.

    A model trained on several spaces needs a different tau in each (faces near 0.9, text near 0.2),
    which one fixed tau cannot give. On a single set the fixed tau is the grid's best on it already,
    so a choice without labels can only tie it: such models keep the fixed tau.
    """
    fp = np.zeros((len(sets), len(AUTO_TAUS)))
    agree = np.zeros((len(sets), len(AUTO_TAUS), len(biases)))
    for i, (x, y) in enumerate(sets):
        graph = knn_graph(x, min(fixed.k, x.shape[0] - 1))
        level0 = score_level0(x, graph, scorer, fixed.node_mode)
        for j, tau in enumerate(AUTO_TAUS):
            labels = decode_levels(x, graph, scorer, fixed.model_copy(update={"tau": tau}), level0).labels
            fp[i, j] = score(y, labels).fp
            agree[i, j] = [agreement(labels, level0, b) for b in biases]
    chosen = agree.argmax(axis=1)  # [set, bias]: the tau index each bias picks on each set
    mean_fp = {b: float(fp[np.arange(len(sets)), chosen[:, m]].mean()) for m, b in enumerate(biases)}
    best = max(mean_fp, key=lambda b: mean_fp[b])
    return (best if mean_fp[best] > fixed.fp + tolerance else None), mean_fp
