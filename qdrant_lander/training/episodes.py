"""Episodes for meta-training: a random subset of classes, a random k, and the levels decoded on it.

Each step sees different classes and a different k, so the model cannot memorise where the
training classes live and has to learn what a same-class link *looks like* in the kNN structure
(shared/design/METHOD.md, second prototype). The levels come from the real decoder driven by the ground-truth
scorer, so supernode graphs at level >= 1 look like the ones decoded at inference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from ..decode import DecodeSettings, Scorer, hierarchy_levels
from ..features import NodeMode
from ..knn import KnnGraph, first_kept, knn_graph, nearest_rows
from .gt import GroundTruthScorer, edge_labels, gt_density


class LevelData(Data):
    """One level's graph. ``nbr_index`` is ``[N, k]`` row-major, so batching stacks it along dim 0
    (torch-geometric still offsets it by ``num_nodes``, because its name contains "index")."""

    def __cat_dim__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        return 0 if key == "nbr_index" else super().__cat_dim__(key, value, *args, **kwargs)


class CandidateNeighbours:
    """The ``depth`` nearest neighbours of every training point, computed once.

    An episode's kNN graph is read off these lists (first k neighbours inside the episode's subset)
    instead of a fresh O(N^2) search per step; rows with fewer than k candidates inside the subset are
    searched exactly, so the result equals :func:`knn_graph` on the subset (up to ties).
    """

    def __init__(self, x: np.ndarray, depth: int = 96) -> None:
        self.x = x
        self.graph = knn_graph(x, min(depth, x.shape[0] - 1))
        self._means: tuple[np.ndarray, np.ndarray] | None = None  # (the labels they belong to, class means)

    def class_means(self, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """:func:`class_means` of these points under labels ``y``, computed once per label array: episodes
        of look-alike classes need them every time (38 ms per episode on CLINC150's train part)."""
        if self._means is None or self._means[0] is not y:
            self._means = (y, class_means(self.x, y, classes))
        return self._means[1]

    def subgraph(self, keep: np.ndarray, k: int) -> KnnGraph:
        """Exact kNN graph (degree k) of the points ``keep`` (a boolean mask), in their order."""
        idx = np.flatnonzero(keep)
        new_id = np.full(keep.size, -1, dtype=np.int64)
        new_id[idx] = np.arange(idx.size)
        cand = new_id[self.graph.nbr[idx]]
        valid = cand >= 0
        full = valid.sum(axis=1) >= k
        nbr, sim = np.empty((idx.size, k), dtype=np.int64), np.empty((idx.size, k), dtype=np.float32)
        if full.any():
            nbr[full], sim[full] = first_kept(valid[full], k, cand[full], self.graph.sim[idx[full]])
        short = np.flatnonzero(~full)
        if short.size:
            exact = nearest_rows(self.x[idx], short, k)
            nbr[short], sim[short] = exact.nbr, exact.sim
        return KnnGraph(nbr=nbr, sim=sim)


def level_graphs(x: np.ndarray, y: np.ndarray, k: int, *, node_mode: NodeMode, max_levels: int,
                 graph: KnnGraph | None = None, scorer: Scorer | None = None,
                 tau: float = 0.5) -> list[LevelData]:
    """The training levels of one labeled set: inputs plus link and density targets, level by level.

    Levels are decoded by ``scorer`` at ``tau`` (e.g. the model being trained, so it also learns
    from the imperfect supernodes it produces itself), else by the ground-truth scorer. Targets are
    always the true labels of the supernodes' peak points."""
    if scorer is None:
        scorer = GroundTruthScorer(y)
    graph = graph if graph is not None else knn_graph(x, k)
    out = []
    settings = DecodeSettings(node_mode=node_mode, k=k, tau=tau, max_levels=max_levels)
    for step, _ in hierarchy_levels(x, graph, scorer, settings):
        inp = step.inputs
        link = edge_labels(inp, y)
        out.append(LevelData(x=torch.from_numpy(inp.x), nbr_index=torch.from_numpy(inp.nbr),
                             sim=torch.from_numpy(inp.sim), edge_attr=torch.from_numpy(inp.edge_attr),
                             link=torch.from_numpy(link), density=torch.from_numpy(gt_density(inp.sim, link)),
                             num_nodes=inp.x.shape[0]))
    return out


def class_means(x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Unit-length mean embedding of each of ``classes`` (sorted, as ``np.unique(y)`` gives them)."""
    idx = np.searchsorted(classes, y)
    order = np.argsort(idx, kind="stable")
    cent = np.add.reduceat(x[order], np.searchsorted(idx[order], np.arange(classes.size)), axis=0)
    return cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)


def nearest_classes(means: np.ndarray, classes: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """A random anchor class and the ``n - 1`` classes whose mean embeddings (``means``, one row per
    class) are nearest to its own.

    An episode of look-alike classes puts the other-class neighbours a decoder can confuse next to each
    point, so the links that matter (between near classes) make up more of the loss.
    """
    anchor = rng.randint(classes.size)
    return classes[np.argsort(-(means @ means[anchor]), kind="stable")[:n]]


def sample_episode(cands: CandidateNeighbours, y: np.ndarray, rng: np.random.RandomState, *,
                   class_fraction: tuple[float, float], k_choices: list[int], node_mode: NodeMode, max_levels: int,
                   max_points: int | None = None, scorer: Scorer | None = None,
                   tau_range: tuple[float, float] = (0.1, 0.9),
                   class_size_fraction: tuple[float, float] | None = None, confusable_share: float = 0.0) -> Batch:
    """One training step's graph: the levels (of the episode's k) of a random class subset, batched.

    With ``scorer`` the levels are decoded by it at a random tau in ``tau_range``. With
    ``class_size_fraction`` each class keeps a random share (drawn per class from that range, at least
    one point) of its points, so episodes show class sizes the labeled set does not have. With
    probability ``confusable_share`` the subset is a random class and its nearest classes
    (:func:`nearest_classes`) instead of random ones."""
    x = cands.x
    classes = np.unique(y)
    frac = rng.uniform(*class_fraction)
    n_cls = min(len(classes), max(2, int(round(frac * len(classes)))))
    if confusable_share and rng.random_sample() < confusable_share:
        chosen = nearest_classes(cands.class_means(y, classes), classes, n_cls, rng)
    else:
        chosen = rng.choice(classes, size=n_cls, replace=False)
    if max_points is not None:  # drop classes beyond the cap (at least 2 stay): bounded step time
        sizes = np.bincount(np.searchsorted(classes, y), minlength=classes.size)[np.searchsorted(classes, chosen)]
        chosen = chosen[: max(2, int(np.searchsorted(np.cumsum(sizes), max_points, side="right")))]
    keep = np.isin(y, chosen)
    if class_size_fraction is not None:
        share = dict(zip(chosen.tolist(), rng.uniform(*class_size_fraction, size=chosen.size)))
        idx = np.flatnonzero(keep)
        u = rng.random_sample(idx.size)
        thin = u < np.array([share[c] for c in y[idx].tolist()])
        first = np.unique(y[idx], return_index=True)[1]  # one point of every class stays
        thin[first] = True
        keep[idx[~thin]] = False
    k = int(rng.choice(k_choices))
    k = min(k, int(keep.sum()) - 1)
    levels = level_graphs(x[keep], y[keep], k, node_mode=node_mode, max_levels=max_levels,
                          graph=cands.subgraph(keep, k), scorer=scorer,
                          tau=rng.uniform(*tau_range) if scorer is not None else 0.5)
    return Batch.from_data_list([g for g in levels if g.nbr_index.shape[1] == k])
