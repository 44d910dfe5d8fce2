"""Decoding link and density predictions into a hierarchy of clusters (Hi-LANDER).

One level: node i keeps its best link to a *denser* neighbour whose link probability beats tau; the
kept edges form a forest whose roots ("peaks") name the clusters. Each cluster then becomes a
supernode (peak embedding, member-mean embedding, size), a kNN graph is built among supernodes and
the same scorer runs again, until nothing merges.

Above level 0 one wrong parent edge would glue two whole clusters, so a supernode may follow an edge
only when enough of the *points'* strong level-0 links (link > tau) run between the two supernodes
(``min_support`` per point of the smaller one): a merge needs many agreeing point links, not one.

The decoder is scorer-agnostic: the ONNX runtime, the torch trainer and a ground-truth scorer (to
build training levels) all drive the same code, so training sees exactly the levels we decode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, Field

from .features import LevelInputs, NodeMode, edge_features, level_inputs, level_inputs_from, node_terms
from .dedup import graph_per_group, unique_rows
from .knn import DeepKnn, KnnGraph, coarsened_knn, deep_knn
from .validate import row_norms

log = logging.getLogger(__name__)

# Supernode graphs are searched this many times deeper than k: a row can then lose that many neighbours to
# merges before it must be searched again (the top levels of a large hierarchy merge few nodes each).
SLACK = 2

Scorer = Callable[[LevelInputs], tuple[np.ndarray, np.ndarray]]
"""Maps one level's inputs to (link probability float32 [N, k], density float32 [N])."""


class DecodeSettings(BaseModel):
    """How predictions become clusters. Chosen at training time on held-out classes and stored in the
    model card (which extends this), so users never tune them."""

    node_mode: NodeMode
    k: int = 10
    tau: float = 0.5
    max_levels: int = 10
    min_merge_ratio: float = Field(0.0, description="Early stop: stop after a level where fewer nodes merged")
    min_support: float = Field(0.0, description="Strong level-0 links needed per point of the smaller supernode "
                                                "to merge two supernodes (0 = the model's edge alone decides)")
    tau_bias: float | None = Field(None, description="Set: tau is chosen for each dataset, without labels, as the "
                                   "one of AUTO_TAUS whose clusters agree best with the level-0 links (see "
                                   "agreement); None: `tau` is used as is")
    tau_by_spread: list[tuple[float, float]] | None = Field(None, description="Models trained on several spaces: "
                                                          "(spread, tau) of each training space; set, a dataset is "
                                                          "decoded at the tau the line through them gives at its own "
                                                          "spread (see tau_at_spread); None: `tau` is used as is")
    absorb_share: float = Field(0.0, ge=0.0, le=1.0, description="After the last level, clusters of at most this "
                                "share of the typical cluster's size (the median point's) join the larger cluster that "
                                "most of their level-0 link mass goes to (0 = off); see fragment_size")

    @property
    def tau_per_dataset(self) -> bool:
        """Whether each dataset gets its own tau (``tau_bias`` or ``tau_by_spread``) rather than ``tau`` as is."""
        return self.tau_bias is not None or bool(self.tau_by_spread)


# The settings that make a card decode at its own `tau` (a preset or a calibration replaces tau for one space).
OWN_TAU = {"tau_bias": None, "tau_by_spread": None}


AUTO_TAUS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""The taus a ``tau_bias`` decoding tries (the grid it was measured with: benchmarks/RESULTS.md)."""


@dataclass(frozen=True)
class ClusterResult:
    """Clusters of N points. Cluster and supernode ids are the row index of their peak point."""

    labels: np.ndarray  # int64 [N]: final cluster = peak point of the top-level supernode
    paths: np.ndarray  # int64 [N, L]: supernode id of each point after each decoded level
    density: np.ndarray  # float32 [N]: predicted level-0 density
    peak: np.ndarray  # bool [N]: the point is the peak of its final cluster
    tau: float  # the link threshold decoded with (the card's, or the one chosen for this dataset)
    absorb_size: int = 0  # clusters of at most this many points were absorbed (the card's share, resolved here)
    domain: str | None = None  # the default model's preset decoded with (auto resolved; any: the model's own decoding)

    @property
    def n_levels(self) -> int:
        return int(self.paths.shape[1])

    @property
    def n_clusters(self) -> int:
        return int(np.unique(self.labels).size)


@dataclass(frozen=True)
class LevelStep:
    """One decoded level: the model's inputs and outputs and the forest read from them."""

    inputs: LevelInputs
    link: np.ndarray  # float32 [n, k]
    density: np.ndarray  # float32 [n]
    parent: np.ndarray  # int64 [n], -1 for peaks
    root: np.ndarray  # int64 [n], the peak each node ends at


def decode_level(nbr: np.ndarray, link: np.ndarray, density: np.ndarray, tau: float) -> np.ndarray:
    """Parent of each node: its most probable link to a denser neighbour above tau, else -1.

    Parents are strictly denser, so following them can never cycle.
    """
    ok = (density[nbr] > density[:, None]) & (link > tau)
    best = np.argmax(np.where(ok, link, -np.inf), axis=1)
    rows = np.arange(nbr.shape[0])
    return np.where(ok[rows, best], nbr[rows, best], -1).astype(np.int64)


def forest_roots(parent: np.ndarray) -> np.ndarray:
    """Root of every node in a parent forest, by pointer jumping (log depth rounds)."""
    root = np.where(parent < 0, np.arange(parent.size), parent)
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(row_norms(v), 1e-12)[:, None]


def _member_means(mean_vec: np.ndarray, size: np.ndarray, node_map: np.ndarray, n_new: int,
                  block_cols: int = 32) -> np.ndarray:
    """Unit-length size-weighted mean of each new node's members, summed in float64 a few columns at a
    time: one float64 copy of all N x D vectors was 2 GB at a million points (the sync's peak)."""
    order = np.argsort(node_map, kind="stable")  # members of each new node side by side: one reduceat
    starts = np.searchsorted(node_map[order], np.arange(n_new))
    w = size[order, None].astype(np.float64)
    weighted = np.empty((n_new, mean_vec.shape[1]), dtype=np.float64)
    for c in range(0, mean_vec.shape[1], block_cols):
        weighted[:, c:c + block_cols] = np.add.reduceat(mean_vec[order, c:c + block_cols] * w, starts, axis=0)
    return _unit(weighted).astype(np.float32)


def _pair_key(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(a, b) * n + np.maximum(a, b)


def link_support(src: np.ndarray, dst: np.ndarray, nbr: np.ndarray) -> np.ndarray:
    """For each edge (i, nbr[i, j]) of a supernode graph: how many point links (src -> dst, already
    mapped to supernode ids) run between the two supernodes, either way. int64 [n, k]."""
    n = nbr.shape[0]
    across = src != dst
    keys, counts = np.unique(_pair_key(src[across], dst[across], n), return_counts=True)
    if keys.size == 0:
        return np.zeros(nbr.shape, dtype=np.int64)
    query = _pair_key(np.arange(n)[:, None], nbr, n)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return np.where(keys[pos] == query, counts[pos], 0)


@runtime_checkable
class BlockScorer(Protocol):
    """A scorer that builds a level's edge features a block of rows at a time (the ONNX runtime's)."""

    def __call__(self, inputs: LevelInputs) -> tuple[np.ndarray, np.ndarray]: ...

    def score_in_blocks(self, x: np.ndarray, nbr: np.ndarray, sim: np.ndarray,
                        edge_attr_of: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


def score_level0(vectors: np.ndarray, graph: KnnGraph, scorer: Scorer, node_mode: NodeMode) -> LevelStep:
    """Level 0's inputs and predictions (no forest yet): they do not depend on tau, so a tau search scores once.

    With a :class:`BlockScorer` the edge features are never held for the whole level, and the step's
    ``inputs.edge_attr`` is empty (decoding never reads them): at a million points, k 20, that is 1.5 GB
    of features and more of their intermediates. Other scorers (torch, in training) get the full inputs.
    """
    n = vectors.shape[0]
    size, peak_index = np.ones(n, dtype=np.int64), np.arange(n, dtype=np.int64)
    if isinstance(scorer, BlockScorer):
        nodes = node_terms(graph, peak=vectors, mean=vectors, size=size, node_mode=node_mode)
        inputs = level_inputs_from(graph, nodes, edge_attr=np.empty(graph.nbr.shape + (0,), dtype=np.float32),
                                   peak_index=peak_index, size=size)
        link, density = scorer.score_in_blocks(inputs.x, inputs.nbr, inputs.sim,
                                               lambda rows: edge_features(graph, nodes, rows))
    else:
        inputs = level_inputs(graph, peak=vectors, mean=vectors, size=size, peak_index=peak_index, node_mode=node_mode)
        link, density = scorer(inputs)
    empty = np.empty(0, dtype=np.int64)
    return LevelStep(inputs, link, density, empty, empty)


def hierarchy_levels(vectors: np.ndarray, graph: KnnGraph, scorer: Scorer, settings: DecodeSettings,
                     level0: LevelStep | None = None,
                     groups: np.ndarray | None = None) -> Iterator[tuple[LevelStep, np.ndarray]]:
    """Decode level after level; yield each step with the node each original point sits in there.

    Level 0 uses ``graph`` as given (e.g. fetched from Qdrant's HNSW index); later levels use the
    exact kNN graph among supernodes on their unit-length member means, refreshed from the level below
    where few nodes merged (:func:`coarsened_knn`; ``level0``: level 0 already scored by
    :func:`score_level0`). Stops when no edge
    survives, when fewer than ``min_merge_ratio`` of the nodes merged (early stop, after applying
    that level), when fewer than two supernodes remain, or after ``max_levels`` levels.

    ``groups`` (int [N], e.g. each point's tenant): no node follows an edge into another group, at any level, so
    no cluster spans two; the graphs, and so the model's inputs, stay those of all points (their neighbours and
    similarity scale; clustering each group alone lost badly on small groups: benchmarks/RESULTS.md, session 39).
    """
    s = settings
    n = vectors.shape[0]
    node_of_point = np.arange(n)
    peak_vec, mean_vec = vectors, vectors
    size = np.ones(n, dtype=np.int64)
    peak_index = np.arange(n, dtype=np.int64)
    deep: DeepKnn | None = None  # the supernodes' graph, kept SLACK times deeper than k
    for level in range(s.max_levels):
        if level == 0:
            if level0 is None:
                level0 = score_level0(vectors, graph, scorer, s.node_mode)
            inputs, link, density = level0.inputs, level0.link, level0.density
            strong = link > s.tau
            src, dst = np.nonzero(strong)[0], inputs.nbr[strong]
            usable = link
        else:
            inputs = level_inputs(graph, peak=peak_vec, mean=mean_vec, size=size, peak_index=peak_index,
                                  node_mode=s.node_mode)
            link, density = scorer(inputs)
            usable = link
            if s.min_support > 0:
                support = link_support(node_of_point[src], node_of_point[dst], inputs.nbr)
                usable = np.where(support >= s.min_support * np.minimum(size[:, None], size[inputs.nbr]), link, 0)
        if groups is not None:  # a supernode's points are of one group: its peak's
            group = groups[inputs.peak_index]
            usable = np.where(group[:, None] == group[inputs.nbr], usable, 0)
        parent = decode_level(inputs.nbr, usable, density, s.tau)
        root = forest_roots(parent)
        merged = int((parent >= 0).sum())
        # a million points' cluster stage runs for minutes: -vv shows it level by level (debug: training decodes
        # thousands of episodes and tau candidates through here)
        log.debug("level %d: %d nodes, %d joined a denser one", level, len(parent), merged)
        yield LevelStep(inputs, link, density, parent, root), node_of_point
        roots, node_map = np.unique(root, return_inverse=True)
        node_of_point = node_map[node_of_point]
        if merged == 0 or merged < s.min_merge_ratio * len(parent) or roots.size < 2 or level + 1 == s.max_levels:
            return
        mean_vec = _member_means(mean_vec, size, node_map, roots.size)
        size = np.bincount(node_map, weights=size, minlength=roots.size).astype(np.int64)
        peak_vec, peak_index = peak_vec[roots], peak_index[roots]
        k = min(s.k, roots.size - 1)
        # supernodes of several groups with one mean: each listed once, in the node's group. Where most means
        # repeat, among the distinct ones only; else from the deep graph, refreshed level by level as without groups
        means = None if groups is None else unique_rows(mean_vec)
        shared = None
        if means is not None and 2 * means.copies > roots.size:
            shared = graph_per_group(mean_vec, means, groups[peak_index], k)
        if shared is not None:
            graph, deep = shared, None
        else:
            deep = deep_knn(mean_vec, min(SLACK * k, roots.size - 1)) if deep is None else \
                coarsened_knn(deep, node_map, mean_vec, k)
            graph = deep.level(k)
            if means is not None:
                shared = graph_per_group(mean_vec, means, groups[peak_index], k, deep)
                graph = graph if shared is None else shared


def heaviest_targets(src: np.ndarray, dst: np.ndarray, w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each cluster in ``src`` (indices below ``n``), the ``dst`` cluster its edges' summed weights ``w``
    favour most, ties to the lowest index: (sources, their targets). The attachment rule of fragment
    absorption, shared by full decoding and daemon passes."""
    keys, pos = np.unique(src.astype(np.int64) * n + dst, return_inverse=True)
    mass = np.bincount(pos, weights=w)
    small, big = keys // n, keys % n
    order = np.lexsort((-mass, small))  # per source, its heaviest target first
    first = order[np.r_[True, small[order][1:] != small[order][:-1]]]
    return small[first], big[first]


def absorb_fragments(labels: np.ndarray, nbr: np.ndarray, link: np.ndarray, max_size: int,
                     allowed: np.ndarray | None = None) -> np.ndarray:
    """Clusters of at most ``max_size`` points moved, whole, into the larger cluster that receives the
    largest share of their level-0 link mass, until none moves. Why: the density-peak decoder leaves
    pure fragments at class boundaries (benchmarks/RESULTS.md, session 19) that no single best link
    attaches; their summed links place them better than any one of them. Ids stay peak indices. ``allowed``
    (bool [N, k]): the edges a fragment may move along (None: all)."""
    lab = labels.copy()
    n, k = nbr.shape
    src, dst, w = np.repeat(np.arange(n), k), nbr.reshape(-1), link.reshape(-1).astype(np.float64)
    if allowed is not None:
        keep = allowed.reshape(-1)
        src, dst, w = src[keep], dst[keep], w[keep]
    for _ in range(n):
        ids, inv, cnt = np.unique(lab, return_inverse=True, return_counts=True)
        size = cnt[inv]
        m = (size[src] <= max_size) & (size[dst] > size[src])
        if not m.any():
            break
        small, big = heaviest_targets(inv[src[m]], inv[dst[m]], w[m], ids.size)
        target = np.arange(ids.size)
        target[small] = big
        target = forest_roots(np.where(target == np.arange(ids.size), -1, target))  # targets are larger: no cycles
        lab = ids[target][inv]
    return lab


def fragment_size(labels: np.ndarray, share: float) -> int:
    """``share`` of the size of the cluster the median point belongs to, in points: the largest fragment
    :func:`absorb_fragments` moves. Why relative: a size in points fits only collections whose classes are
    as large as the held-out classes it was chosen on; CLINC75's test part at 2,000 of its 11,250 points
    collapsed from 190 clusters to 10 at a fixed 50 (benchmarks/RESULTS.md, session 25)."""
    if not share:
        return 0
    _, inv, count = np.unique(labels, return_inverse=True, return_counts=True)
    return int(share * np.median(count[inv]))


def agreement(labels: np.ndarray, level0: LevelStep, bias: float) -> float:
    """How well clusters agree with the model's level-0 links, per point: the sum over kNN edges inside
    one cluster of log-odds(link) - ``bias`` (the correlation-clustering objective). It needs no labels,
    so it can choose tau on the very data being clustered: held-out training classes are fewer and
    easier than real data, and a tau chosen on them is off by a different amount in every space."""
    p = np.clip(level0.link.astype(np.float64), 1e-6, 1 - 1e-6)
    inside = labels[:, None] == labels[level0.inputs.nbr]
    return float(((np.log(p / (1 - p)) - bias) * inside).sum() / labels.size)


def decode_levels(vectors: np.ndarray, graph: KnnGraph, scorer: Scorer, settings: DecodeSettings,
                  level0: LevelStep, groups: np.ndarray | None = None) -> ClusterResult:
    """The hierarchy at ``settings.tau`` from an already scored level 0 (a tau search scores it once)."""
    paths = [step.inputs.peak_index[step.root][node_of_point]
             for step, node_of_point in hierarchy_levels(vectors, graph, scorer, settings, level0, groups)]
    path_arr = np.stack(paths, axis=1)
    labels = path_arr[:, -1]
    result = ClusterResult(labels=labels, paths=path_arr, density=level0.density.astype(np.float32),
                           peak=labels == np.arange(vectors.shape[0]), tau=settings.tau)
    return absorbed(result, level0, settings.absorb_share, groups)


def absorbed(result: ClusterResult, level0: LevelStep, share: float,
             groups: np.ndarray | None = None) -> ClusterResult:
    """``result`` with its fragments of up to :func:`fragment_size` points absorbed (:func:`absorb_fragments`;
    none: ``result`` itself): the last level's column of ``paths`` holds the moves, so paths stay nested."""
    max_size = fragment_size(result.labels, share)
    if not max_size:
        return result
    paths = result.paths.copy()
    nbr = level0.inputs.nbr
    allowed = None if groups is None else groups[:, None] == groups[nbr]
    paths[:, -1] = labels = absorb_fragments(result.labels, nbr, level0.link, max_size, allowed)
    return ClusterResult(labels=labels, paths=paths, density=result.density,
                         peak=labels == np.arange(labels.size), tau=result.tau, absorb_size=max_size)


def tau_at_spread(points: list[tuple[float, float]], spread: float) -> float:
    """The tau of the line through the training spaces' (spread, tau) at ``spread``, clipped to the tau grid's range
    and snapped to its 0.05 steps. Text encoders spread unrelated points little and want a low tau, face encoders
    much and want a high one; a space between or beyond them gets the tau its spread implies (RESULTS.md, sessions
    42-43: unseen faces 0.040 -> 0.794 mean Fp, unseen text 0.429 -> 0.668, with four folds per training space)."""
    s, t = np.asarray(points, dtype=float).T
    tau = float(np.polyval(np.polyfit(s, t, 1), spread)) if np.ptp(s) > 0 else float(t.mean())
    return float(np.clip(round(round(tau / 0.05) * 0.05, 2), 0.05, 0.95))


def cluster_hierarchy(vectors: np.ndarray, graph: KnnGraph, scorer: Scorer, settings: DecodeSettings,
                      groups: np.ndarray | None = None) -> ClusterResult:
    """Cluster unit-length ``vectors`` given their level-0 kNN graph; see :func:`hierarchy_levels` (and ``groups``).

    With ``settings.tau_by_spread`` set, tau is the one :func:`tau_at_spread` gives at the vectors' own spread.
    With ``settings.tau_bias`` set, every tau of :data:`AUTO_TAUS` is decoded (level 0 scored once) and
    the clusters with the best :func:`agreement` are returned; ``result.tau`` says which tau that was.
    """
    if settings.tau_by_spread:
        from .domains import space_spread  # domains reads model cards, which extend DecodeSettings

        spread = space_spread(vectors)
        settings = settings.model_copy(update={"tau": tau_at_spread(settings.tau_by_spread, spread)})
        log.info("tau %.2f read off the data's spread %.3f (the model's (spread, tau) per training space: %s)",
                 settings.tau, spread, settings.tau_by_spread)
    level0 = score_level0(vectors, graph, scorer, settings.node_mode)
    if settings.tau_bias is None:
        return decode_levels(vectors, graph, scorer, settings, level0, groups)
    bias = settings.tau_bias
    tried = (decode_levels(vectors, graph, scorer, settings.model_copy(update={"tau": tau}), level0, groups)
             for tau in AUTO_TAUS)
    return max(tried, key=lambda res: agreement(res.labels, level0, bias))  # a generator: one result held at a time
