"""Decoding on hand-made graphs whose forest is known, plus the hierarchy's stopping rules."""

import numpy as np
import pytest

from qdrant_lander.decode import (AUTO_TAUS, DecodeSettings, absorb_fragments, agreement, cluster_hierarchy,
                                  decode_level, forest_roots, fragment_size, heaviest_targets, hierarchy_levels,
                                  link_support, score_level0, tau_at_spread, _member_means)
from qdrant_lander.domains import space_profile
from qdrant_lander.features import LevelInputs
from qdrant_lander.knn import knn_graph

S5 = DecodeSettings(tau=0.5, k=5, node_mode="structure")


def test_known_forest():
    # 0 <- 1 <- 2 (chain into peak 0), 3 -> 4 is blocked by tau, 4 is a peak of its own.
    nbr = np.array([[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]])
    density = np.array([0.9, 0.8, 0.5, 0.3, 0.4], dtype=np.float32)
    link = np.array([[0.9, 0.9], [0.95, 0.2], [0.9, 0.1], [0.3, 0.2], [0.9, 0.1]], dtype=np.float32)
    parent = decode_level(nbr, link, density, tau=0.5)
    assert parent.tolist() == [-1, 0, 1, -1, -1]
    assert forest_roots(parent).tolist() == [0, 0, 0, 3, 4]


def test_best_link_to_a_denser_neighbour_wins():
    # Node 0 links strongest to 1, but 1 is less dense: it must take 3 (0.7) over 2 (0.6).
    nbr = np.array([[1, 2, 3], [0, 2, 3], [3, 0, 1], [2, 0, 1]])
    density = np.array([0.5, 0.1, 0.6, 0.9], dtype=np.float32)
    link = np.array([[0.99, 0.6, 0.7], [0.9, 0.1, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.1]], dtype=np.float32)
    parent = decode_level(nbr, link, density, tau=0.5)
    assert parent.tolist() == [3, 0, 3, -1]
    assert forest_roots(parent).tolist() == [3, 3, 3, 3]


def test_ties_are_strict_and_break_to_the_nearer_neighbour():
    nbr = np.array([[1, 2], [0, 2], [0, 1]])
    # equal density -> no edge either way; link exactly tau -> not kept
    assert decode_level(nbr, np.full((3, 2), 0.9, np.float32), np.zeros(3, np.float32), 0.5).tolist() == [-1] * 3
    dens = np.array([0.0, 1.0, 1.0], dtype=np.float32)
    at_tau = np.array([[0.5, 0.5], [0.1, 0.1], [0.1, 0.1]], dtype=np.float32)
    assert decode_level(nbr, at_tau, dens, 0.5)[0] == -1
    # two denser neighbours with the same link: the nearer (first in the list) is the parent
    same = np.array([[0.8, 0.8], [0.1, 0.1], [0.1, 0.1]], dtype=np.float32)
    assert decode_level(nbr, same, dens, 0.5)[0] == 1


def test_forest_roots_deep_chain():
    parent = np.r_[-1, np.arange(999)]  # 1000-long chain into node 0
    assert (forest_roots(parent) == 0).all()


def _blobs(n_per=20, n_blobs=3, dim=8, seed=0):
    rng = np.random.RandomState(seed)
    centers = np.eye(dim)[:n_blobs]
    x = np.concatenate([c + 0.05 * rng.randn(n_per, dim) for c in centers]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(n_blobs), n_per)


def _label_scorer(y):
    def scorer(inputs: LevelInputs):
        lab = y[inputs.peak_index]
        link = (lab[:, None] == lab[inputs.nbr]).astype(np.float32)
        return link, (inputs.sim * (2 * link - 1)).mean(axis=1)
    return scorer


def test_label_scorer_recovers_blobs_with_peak_ids_and_paths():
    x, y = _blobs()
    res = cluster_hierarchy(x, knn_graph(x, 5), _label_scorer(y), S5)
    assert res.n_clusters == 3
    for c in range(3):
        assert np.unique(res.labels[y == c]).size == 1
    assert (y[res.labels] == y).all()  # a cluster id is the index of a point of that cluster (its peak)
    assert res.peak.sum() == 3 and (res.labels[res.peak] == np.flatnonzero(res.peak)).all()
    assert res.paths.shape == (len(x), res.n_levels) and (res.paths[:, -1] == res.labels).all()


def test_fragments_join_the_larger_cluster_their_links_favour_and_chains_resolve():
    # clusters: A = 0-4 (5 points), B = 5-7 (3), C = 8-9 (2), singleton 10, singleton 11
    labels = np.array([0, 0, 0, 0, 0, 5, 5, 5, 8, 8, 10, 11])
    nbr = np.array([[1, 2]] * 5 + [[6, 7]] * 2 + [[6, 0], [5, 0], [6, 1], [8, 0], [10, 8]])
    link = np.full(nbr.shape, 0.9, dtype=np.float32)
    link[8] = [0.2, 0.9]  # C's links: 0.2 + 0.4 to B, 0.9 to A -> C joins A
    link[9] = [0.4, 0.1]
    link[10] = [0.8, 0.1]  # 10 -> C (larger), which itself moves to A
    link[11] = [0.9, 0.5]  # 11 -> 10 is not larger than 11 (both size 1); 11 -> C: C moves on, so 11 ends in A
    got = absorb_fragments(labels, nbr, link, max_size=2)
    assert got.tolist() == [0] * 5 + [5] * 3 + [0] * 4
    assert (absorb_fragments(labels, nbr, link, max_size=0) == labels).all()
    assert absorb_fragments(labels, nbr, link, max_size=3)[5:8].tolist() == [0, 0, 0]  # B small too: its one link out


def test_heaviest_target_sums_each_sources_edges_and_ties_to_the_lowest_index():
    src, dst = np.array([0, 0, 0, 3, 3]), np.array([1, 2, 2, 2, 1])
    w = np.array([0.9, 0.5, 0.5, 0.4, 0.4])  # 0: 1.0 to 2 beats 0.9 to 1; 3: 0.4 either way -> 1
    sources, targets = heaviest_targets(src, dst, w, 4)
    assert sources.tolist() == [0, 3] and targets.tolist() == [2, 1]


def test_absorb_share_is_applied_after_the_last_level_and_keeps_ids_peaks():
    x, y = _blobs()
    split = y.copy()
    split[:3] = 3  # the scorer sees a fourth "class": three points of blob 0 that no same-blob link reaches
    def scorer(inputs: LevelInputs):
        lab, blob = split[inputs.peak_index], y[inputs.peak_index]
        link = np.where(lab[:, None] == lab[inputs.nbr], 0.9, 0.3 * (blob[:, None] == blob[inputs.nbr]))
        return link.astype(np.float32), -inputs.peak_index.astype(np.float32)
    graph = knn_graph(x, 5)
    plain = cluster_hierarchy(x, graph, scorer, S5)
    assert plain.n_clusters == 4
    # the median point is in a cluster of 20: a share of 0.1 moves clusters of up to 2 points, 0.2 up to 4
    assert cluster_hierarchy(x, graph, scorer, S5.model_copy(update={"absorb_share": 0.1})).n_clusters == 4
    res = cluster_hierarchy(x, graph, scorer, S5.model_copy(update={"absorb_share": 0.2}))
    assert res.absorb_size == 4 and plain.absorb_size == 0
    assert res.n_clusters == 3 and all(np.unique(res.labels[y == c]).size == 1 for c in range(3))
    assert (res.paths[:, -1] == res.labels).all() and (res.labels[res.peak] == np.flatnonzero(res.peak)).all()
    assert res.peak.sum() == 3


def test_fragment_size_follows_the_typical_cluster_not_the_collection_size():
    small = np.repeat(np.arange(10), 20)  # ten clusters of 20 points
    assert fragment_size(small, 0.3) == 6 and fragment_size(small, 0.0) == 0
    assert fragment_size(np.repeat(np.arange(10), 60), 0.3) == 18  # the same classes, three times the points
    # the size of the median *point's* cluster: 100 singletons beside two clusters of 150 do not shrink it
    assert fragment_size(np.r_[np.repeat([0, 1], 150), np.arange(2, 102)], 0.2) == 30


def test_stops_when_nothing_links():
    x, _ = _blobs()
    never = lambda inp: (np.zeros(inp.nbr.shape, np.float32), inp.sim.mean(axis=1))  # noqa: E731
    res = cluster_hierarchy(x, knn_graph(x, 5), never, S5)
    assert res.n_levels == 1 and res.n_clusters == len(x)


def test_stops_at_one_supernode_and_at_max_levels():
    x, _ = _blobs()
    always = lambda inp: (np.ones(inp.nbr.shape, np.float32), inp.sim.mean(axis=1))  # noqa: E731
    steps = list(hierarchy_levels(x, knn_graph(x, 5), always, S5))
    final = cluster_hierarchy(x, knn_graph(x, 5), always, S5)
    assert final.n_clusters == 1 and len(steps) == final.n_levels
    capped = cluster_hierarchy(x, knn_graph(x, 5), always, DecodeSettings(tau=0.5, k=5, node_mode="structure", max_levels=1))
    assert capped.n_levels == 1 and capped.n_clusters > 1


def test_min_merge_ratio_stops_after_a_level_that_merged_little():
    x, y = _blobs()
    # every level links only among the first 4 points: at most 3 merges out of 60 nodes (< 10%)
    def few(inp):
        small = inp.peak_index < 4
        link = (small[:, None] & small[inp.nbr]).astype(np.float32)
        return link, -inp.peak_index.astype(np.float32)  # lower index = denser
    res = cluster_hierarchy(x, knn_graph(x, 5), few, DecodeSettings(tau=0.5, k=5, node_mode="structure", min_merge_ratio=0.1))
    assert res.n_levels == 1 and len(x) - 3 <= res.n_clusters < len(x)
    assert cluster_hierarchy(x, knn_graph(x, 5), few, S5).n_levels > 1


def test_link_support_counts_point_links_between_supernodes_either_way():
    # point links already mapped to supernodes: 0-1 twice (once each way), 1-2 once, inside 2 ignored
    src, dst = np.array([0, 1, 2, 2]), np.array([1, 0, 1, 2])
    nbr = np.array([[1, 2], [0, 2], [1, 0]])
    assert link_support(src, dst, nbr).tolist() == [[2, 0], [2, 1], [1, 0]]
    assert link_support(src[:0], dst[:0], nbr).sum() == 0


def test_min_support_blocks_supernode_merges_that_no_point_links_back():
    x, y = _blobs()
    # level 0 links exactly the same-blob neighbours; above it the "model" links everything (a wrong scorer)
    def wrong_above_level0(inp):
        lab = y[inp.peak_index]
        first = inp.nbr.shape[0] == len(x)
        link = (lab[:, None] == lab[inp.nbr]) if first else np.ones(inp.nbr.shape, bool)
        return link.astype(np.float32), -inp.peak_index.astype(np.float32)
    graph = knn_graph(x, 5)
    assert cluster_hierarchy(x, graph, wrong_above_level0, S5).n_clusters == 1
    guarded = cluster_hierarchy(x, graph, wrong_above_level0, S5.model_copy(update={"min_support": 0.5}))
    assert guarded.n_clusters == 3 and all(np.unique(guarded.labels[y == c]).size == 1 for c in range(3))


def _two_near_blobs_scorer(y):
    """Links 0.9 inside a blob, 0.3 between blobs 0 and 1, 0.01 elsewhere; one peak per blob (lower index denser)."""
    def scorer(inp: LevelInputs):
        a, b = y[inp.peak_index][:, None], y[inp.peak_index][inp.nbr]
        link = np.where(a == b, 0.9, np.where((a < 2) & (b < 2), 0.3, 0.01)).astype(np.float32)
        return link, -inp.peak_index.astype(np.float32)
    return scorer


def test_tau_bias_picks_the_tau_whose_clusters_agree_best_with_the_links():
    x, y = _blobs(n_per=8)
    graph, scorer = knn_graph(x, 12), _two_near_blobs_scorer(y)  # 12 > 7 same-blob neighbours: edges cross blobs
    s = DecodeSettings(k=12, node_mode="structure")
    # bias -2: a 0.3 link (log-odds -0.85) counts for a cluster, so blobs 0 and 1 are better merged
    merged = cluster_hierarchy(x, graph, scorer, s.model_copy(update={"tau_bias": -2.0}))
    assert merged.n_clusters == 2 and merged.tau < 0.3 and merged.tau in AUTO_TAUS
    # bias 0: it counts against, so the tau that keeps the three blobs apart wins
    apart = cluster_hierarchy(x, graph, scorer, s.model_copy(update={"tau_bias": 0.0}))
    assert apart.n_clusters == 3 and apart.tau >= 0.3
    for res in (merged, apart):  # the result is exactly the fixed-tau decoding at the tau it reports
        fixed = cluster_hierarchy(x, graph, scorer, s.model_copy(update={"tau": res.tau}))
        assert (fixed.labels == res.labels).all() and fixed.tau == res.tau
    level0 = score_level0(x, graph, scorer, "structure")
    assert agreement(merged.labels, level0, -2.0) > agreement(apart.labels, level0, -2.0)
    assert agreement(apart.labels, level0, 0.0) > agreement(merged.labels, level0, 0.0)


def test_supernode_means_are_the_size_weighted_unit_means_of_their_members():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(500, 70)).astype(np.float32)  # 70 columns: two full column blocks and a partial one
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    size = rng.integers(1, 6, 500)
    node_map = np.unique(rng.integers(0, 60, 500), return_inverse=True)[1]
    got = _member_means(v, size, node_map, node_map.max() + 1, block_cols=32)
    want = np.zeros((node_map.max() + 1, 70))
    np.add.at(want, node_map, v * size[:, None])
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)


def test_each_level_is_logged_for_long_cluster_stages(caplog):
    """A million points' cluster stage ran 442 s with nothing said: at debug level each level says its size."""
    import logging

    from qdrant_lander.decode import DecodeSettings, cluster_hierarchy
    from qdrant_lander.knn import knn_graph
    from qdrant_lander.training.gt import GroundTruthScorer

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    y = np.arange(120) % 6
    x = centres[y] + 0.1 * rng.normal(size=(120, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    with caplog.at_level(logging.DEBUG, logger="qdrant_lander.decode"):
        cluster_hierarchy(x, knn_graph(x, 5), GroundTruthScorer(y),
                          DecodeSettings(k=5, tau=0.5, max_levels=3, node_mode="structure"))
    assert "level 0: 120 nodes," in caplog.text and "joined a denser one" in caplog.text


def test_supernodes_count_their_points_and_link_by_their_member_means():
    """Above level 0 a supernode's size is the number of points under it (not of the nodes it merged), and its
    kNN graph is the exact one among the unit means of its points (level 1: the points' own mean)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    always = lambda inp: (np.ones(inp.nbr.shape, np.float32), -inp.peak_index.astype(np.float32))  # noqa: E731
    steps = list(hierarchy_levels(x, knn_graph(x, 5), always, S5))
    assert len(steps) >= 3  # level 2 merges supernodes that are merges already
    for step, node_of_point in steps:
        np.testing.assert_array_equal(step.inputs.size, np.bincount(node_of_point, minlength=len(step.parent)))
        assert (node_of_point[step.inputs.peak_index] == np.arange(len(step.parent))).all()  # a peak lies inside its node
    step, node_of_point = steps[1]
    mean = np.zeros((len(step.parent), x.shape[1]))
    np.add.at(mean, node_of_point, x)
    want = knn_graph((mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32), 5)
    np.testing.assert_array_equal(step.inputs.nbr, want.nbr)
    np.testing.assert_allclose(step.inputs.sim, want.sim, atol=1e-5)


def test_tau_at_spread_follows_the_line_through_the_training_spaces():
    """Two training spaces (text-like spread 0.107 at tau 0.15, characters-like 0.226 at 0.85): a face-like space
    (0.29) is past the second and gets the grid's top; one between them gets the tau between; clipped and snapped."""
    points = [(0.107, 0.15), (0.226, 0.85)]
    assert tau_at_spread(points, 0.29) == 0.95
    assert tau_at_spread(points, 0.1665) == pytest.approx(0.5)
    assert tau_at_spread(points, 0.1325) == 0.3  # a grid value exactly (cards and logs print it)
    assert tau_at_spread(points, 0.0) == 0.05
    assert tau_at_spread([(0.2, 0.4), (0.2, 0.6)], 0.9) == pytest.approx(0.5)  # one spread: the mean tau


def test_tau_by_spread_decodes_at_the_tau_the_datas_own_spread_gives(caplog):
    """The same blobs under two cards' lines: one puts the blobs' own spread at a tau under the 0.3 links between
    blobs 0 and 1 (they merge), the other over them (three clusters); either way the fixed-tau decoding at that tau."""
    x, y = _blobs(n_per=8)
    graph, scorer = knn_graph(x, 12), _two_near_blobs_scorer(y)
    spread = space_profile(x).spread
    s = DecodeSettings(k=12, node_mode="structure")
    for points, want_tau, clusters in (([(spread - 0.1, 0.0), (spread + 0.1, 0.4)], 0.2, 2),
                                       ([(spread - 0.1, 0.4), (spread + 0.1, 0.8)], 0.6, 3)):
        with caplog.at_level("INFO", logger="qdrant_lander.decode"):
            res = cluster_hierarchy(x, graph, scorer, s.model_copy(update={"tau_by_spread": points}))
        assert f"tau {want_tau:.2f} read off the data's spread {spread:.3f}" in caplog.text  # the log says why
        fixed = cluster_hierarchy(x, graph, scorer, s.model_copy(update={"tau": want_tau}))
        assert res.tau == want_tau and res.n_clusters == clusters and (res.labels == fixed.labels).all()
