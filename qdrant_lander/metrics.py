"""Clustering quality metrics, defined exactly as the face/species clustering benchmarks define them.

Pure numpy (no scikit-learn) so that ``eval`` and ``sync`` quality reports work in a serving install.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from .validate import check_labels


class Scores(BaseModel):
    """Pairwise F (Fp), BCubed F (Fb) and NMI, with the precision/recall behind each F."""

    fp: float
    fb: float
    nmi: float
    pairwise_precision: float
    pairwise_recall: float
    bcubed_precision: float
    bcubed_recall: float
    n_clusters: int
    n_classes: int


def _contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
    _, t = np.unique(labels_true, return_inverse=True)
    _, p = np.unique(labels_pred, return_inverse=True)
    c = np.zeros((t.max() + 1, p.max() + 1), dtype=np.int64)
    np.add.at(c, (t, p), 1)
    return c


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def pairwise_prf(c: np.ndarray) -> tuple[float, float, float]:
    """tk = sum C_ij^2 - N, pk = sum_c |c|^2 - N, qk = sum_g |g|^2 - N; P = tk/pk, R = tk/qk."""
    n = c.sum()
    tk = float((c**2).sum() - n)
    pk = float((c.sum(axis=0) ** 2).sum() - n)
    qk = float((c.sum(axis=1) ** 2).sum() - n)
    p = tk / pk if pk > 0 else 1.0  # all singletons: no predicted pair can be wrong
    r = tk / qk if qk > 0 else 1.0
    return p, r, _f(p, r)


def bcubed_prf(c: np.ndarray) -> tuple[float, float, float]:
    """For each class g and cluster c with n = |g & c|: P += n^2/|c|, R += n^2/|g|; both / N."""
    n = c.sum()
    sq = c.astype(np.float64) ** 2
    p = float((sq / c.sum(axis=0, keepdims=True)).sum() / n)
    r = float((sq / c.sum(axis=1, keepdims=True)).sum() / n)
    return p, r, _f(p, r)


def nmi(c: np.ndarray) -> float:
    """Normalised mutual information with the arithmetic mean of the entropies (sklearn's default)."""
    n = c.sum()
    pij = c[c > 0] / n
    pi = c.sum(axis=1) / n
    pj = c.sum(axis=0) / n
    outer = np.outer(pi, pj)[c > 0]
    mi = float((pij * np.log(pij / outer)).sum())
    hi = float(-(pi[pi > 0] * np.log(pi[pi > 0])).sum())
    hj = float(-(pj[pj > 0] * np.log(pj[pj > 0])).sum())
    if hi == 0 and hj == 0:
        return 1.0
    denom = (hi + hj) / 2
    return max(0.0, mi / denom) if denom > 0 else 0.0


def score(labels_true: np.ndarray, labels_pred: np.ndarray) -> Scores:
    """All metrics for one clustering; both arrays must have the same length."""
    labels_true = check_labels(labels_true, len(labels_true))
    labels_pred = check_labels(labels_pred, len(labels_true), of="true labels")
    c = _contingency(labels_true, labels_pred)
    pp, pr, fp = pairwise_prf(c)
    bp, br, fb = bcubed_prf(c)
    return Scores(
        fp=fp,
        fb=fb,
        nmi=nmi(c),
        pairwise_precision=pp,
        pairwise_recall=pr,
        bcubed_precision=bp,
        bcubed_recall=br,
        n_clusters=c.shape[1],
        n_classes=c.shape[0],
    )
