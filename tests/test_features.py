"""Model inputs: similarity features are on each level's own scale, so encoders with different
cosine ranges give the model the same picture."""

import numpy as np

from qdrant_lander.features import EDGE_FEATURES, level_inputs
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
