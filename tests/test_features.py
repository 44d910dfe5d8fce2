"""Model inputs: similarity features are on each level's own scale, so encoders with different
cosine ranges give the model the same picture."""

import numpy as np

from qdrant_lander.features import EDGE_FEATURES, edge_features, level_inputs, node_terms
from qdrant_lander.knn import KnnGraph, knn_graph

# Edge features computed from the graph's similarities alone (the rest read the vectors or the lists).
FROM_SIM = [EDGE_FEATURES.index(f) for f in ("sim", "sim_minus_mean_i", "sim_minus_mean_j", "sim_minus_first_i",
                                             "sim_minus_first_j", "sim_minus_kth_i", "sim_minus_kth_j")]


def _inputs(graph, x):
    n = len(x)
    return level_inputs(graph, peak=x, mean=x, size=np.ones(n, np.int64), peak_index=np.arange(n),
                        node_mode="structure")


def test_similarity_features_do_not_depend_on_the_encoders_scale():
    rng = np.random.RandomState(0)
    x = rng.randn(200, 12).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    g = knn_graph(x, 8)
    squeezed = KnnGraph(g.nbr, (0.2 * g.sim + 0.75).astype(np.float32))  # cosines of a "face encoder": 0.55-0.95
    a, b = _inputs(g, x), _inputs(squeezed, x)
    np.testing.assert_allclose(a.edge_attr[..., FROM_SIM], b.edge_attr[..., FROM_SIM], atol=1e-4)
    np.testing.assert_allclose(a.x[:, :4], b.x[:, :4], atol=1e-4)  # mean / first / k-th / std of neighbour sims
    assert abs(float(a.edge_attr[..., FROM_SIM[0]].mean())) < 1e-5  # centred on the level's mean
    np.testing.assert_array_equal(a.sim, g.sim)  # the raw cosines still drive aggregation and density


def test_a_level_of_equal_similarities_stays_finite():
    x = np.tile(np.eye(4, dtype=np.float32)[:1], (6, 1))
    g = KnnGraph(np.array([[(i + j) % 6 for j in range(1, 4)] for i in range(6)]), np.ones((6, 3), np.float32))
    assert np.isfinite(_inputs(g, x).edge_attr).all()


def test_edge_features_of_some_rows_are_those_rows_of_the_whole_level():
    rng = np.random.RandomState(1)
    x = rng.randn(300, 16).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    g = knn_graph(x, 7)
    whole = _inputs(g, x)
    nodes = node_terms(g, peak=x, mean=x, size=np.ones(len(x), np.int64), node_mode="structure")
    rows = np.array([5, 299, 0, 42])
    np.testing.assert_array_equal(nodes.x, whole.x)
    np.testing.assert_allclose(edge_features(g, nodes, rows), whole.edge_attr[rows], rtol=0, atol=1e-6)


def test_jaccard_counts_shared_neighbours_including_the_nodes_themselves():
    # 0: [1, 2], 1: [0, 2], 2: [3, 0], 3: [2, 1]. N+(0) = {0,1,2}, N+(1) = {0,1,2}, N+(2) = {0,2,3}.
    g = KnnGraph(np.array([[1, 2], [0, 2], [3, 0], [2, 1]]), np.full((4, 2), 0.5, np.float32))
    jac = edge_features(g, node_terms(g, peak=np.eye(4, dtype=np.float32), mean=np.eye(4, dtype=np.float32),
                                      size=np.ones(4, np.int64), node_mode="structure"))[..., EDGE_FEATURES.index("jaccard")]
    np.testing.assert_allclose(jac[0], [3 / 3, 2 / 4])  # (0,1): all three shared; (0,2): {0,2} of {0,1,2,3}
    np.testing.assert_allclose(jac[3], [2 / 4, 2 / 4])  # N+(3) = {1,2,3}: with 2 -> {2,3}; with 1 -> {1,2}


def test_rank_in_j_and_mutual_read_is_position_in_js_list():
    # 0: [1, 2], 1: [2, 0], 2: [3, 1], 3: [2, 0]: 0 is second in 1's list and absent from 2's, 1 first in 0's, ...
    g = KnnGraph(np.array([[1, 2], [2, 0], [3, 1], [2, 0]]), np.full((4, 2), 0.5, np.float32))
    eye = np.eye(4, dtype=np.float32)
    attr = edge_features(g, node_terms(g, peak=eye, mean=eye, size=np.ones(4, np.int64), node_mode="structure"))
    rank, mutual = attr[..., EDGE_FEATURES.index("rank_in_j")], attr[..., EDGE_FEATURES.index("mutual")]
    np.testing.assert_array_equal(rank, [[1, 2], [1, 0], [0, 0], [0, 2]])  # 0 = first, 1 = k-th place, 2 = absent
    np.testing.assert_array_equal(mutual, [[1, 0], [1, 1], [1, 1], [1, 0]])
