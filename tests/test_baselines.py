"""Baselines on a small real slice (10 Omniglot test classes) and on hand-made points."""

import numpy as np
import pytest

from benchmarks.baselines import (BASELINES, Finch, LeidenCPM, _GraphCache, _undirected_edges, grid_settings,
                                  noise_to_singletons, tune)
from benchmarks.greedy_dbscan import GreedyDBSCAN
from benchmarks.tasks import TASKS, subsample_classes
from qdrant_lander.knn import knn_graph
from qdrant_lander.metrics import score


@pytest.fixture(scope="module")
def part():
    return subsample_classes(TASKS["omniglot"]().test, 10)


def _small_grid(cls):
    """Two values per parameter keeps every tuning run well under a second."""
    return {key: values[:2] if key != "threshold" else [0.3, 0.8] for key, values in cls.grid.items()}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_each_baseline_tunes_from_its_grid_and_clusters_every_point(part, name):
    cls = BASELINES[name]
    grid = _small_grid(cls)
    tuned = tune(cls, part.x, part.y, grid)
    assert tuned.params in grid_settings(grid)
    assert tuned.n_settings == len(grid_settings(grid))
    labels = cls(**tuned.params).fit_predict(part.x)
    assert labels.shape == (len(part.x),) and labels.dtype == np.int64
    s = score(part.y, labels)
    assert s.fp == pytest.approx(tuned.fp)  # fit_predict reproduces what tuning scored
    assert 1 < s.n_clusters < len(part.x)


def test_tune_returns_the_best_setting_of_the_grid(part):
    grid = {"level": [0, 1, 2]}
    by_level = [score(part.y, Finch(level=lv).fit_predict(part.x)).fp for lv in grid["level"]]
    tuned = tune(Finch, part.x, part.y, grid)
    assert tuned.params == {"level": int(np.argmax(by_level))}
    assert tuned.fp == pytest.approx(max(by_level))


def test_leiden_on_real_slice_is_reproducible_and_beats_singletons(part):
    a = LeidenCPM(k=10, threshold=0.3, resolution=0.2).fit_predict(part.x)
    b = LeidenCPM(k=10, threshold=0.3, resolution=0.2).fit_predict(part.x)
    assert np.array_equal(a, b)
    assert score(part.y, a).fb > score(part.y, np.arange(len(part.x))).fb + 0.2


def test_unknown_parameter_is_rejected():
    with pytest.raises(TypeError, match="unknown parameters"):
        LeidenCPM(resolutoin=0.1)


def test_thresholded_edges_are_undirected_pairs_above_threshold(part):
    g = knn_graph(part.x, 10)
    edges, weights = _undirected_edges(g, 5, 0.85)
    assert (edges[:, 0] < edges[:, 1]).all()
    assert len({tuple(e) for e in edges.tolist()}) == len(edges)
    assert (weights >= 0.85).all()
    cos = (part.x[edges[:, 0]] * part.x[edges[:, 1]]).sum(axis=1)
    np.testing.assert_allclose(weights, cos, atol=1e-5)
    cache = _GraphCache(g)
    assert cache.graph(5, 0.85) is cache.graph(5, 0.85)  # built once per (k, threshold)
    assert cache.graph(5, 0.85).ecount() == len(edges)


def test_noise_points_become_singletons():
    out = noise_to_singletons(np.array([-1, 0, 0, -1, 1]))
    assert out.tolist() == [2, 0, 0, 3, 1]


def _unit(angles_deg):
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.column_stack([np.cos(a), np.sin(a)]).astype(np.float32)


def test_greedy_rules_join_nearest_clustered_start_when_core_else_unassigned():
    # cosine distance 1 - cos(angle): 5 deg ~ 0.004, 20 deg ~ 0.06, 90 deg = 1
    x = _unit([0, 90, 4, 93, 8, 200])
    g = GreedyDBSCAN(max_distance=0.01, min_faces=2)
    g.partial_fit(x)
    raw = g.labels_
    assert raw[0] == -1  # alone when it arrived, not core: stays unassigned even after 4 deg shows up
    assert raw[1] == -1
    assert raw[2] == 0  # 0 is within distance: core with itself -> new cluster
    assert raw[3] == 1  # near 90: new cluster
    assert raw[4] == 0  # nearest clustered neighbour within distance is 4 deg (cluster 0)
    assert raw[5] == -1
    labels = g.labels()
    assert len(set(labels[[0, 1, 5]])) == 3 and not set(labels[[0, 1, 5]]) & {0, 1}  # singletons


def test_greedy_min_faces_one_clusters_every_point():
    labels = GreedyDBSCAN(max_distance=0.01, min_faces=1).fit_predict(_unit([0, 90, 4]))
    assert labels.tolist() == [0, 1, 0]


def test_greedy_in_batches_equals_one_pass(part):
    params = {"max_distance": 0.15, "min_faces": 2}
    one = GreedyDBSCAN(**params).fit_predict(part.x)
    stream = GreedyDBSCAN(**params, block_rows=7)
    for start in range(0, len(part.x), 33):
        so_far = stream.partial_fit(part.x[start:start + 33])
        assert len(so_far) == min(start + 33, len(part.x))
    assert np.array_equal(so_far, one)
    assert (stream.labels_ == -1).any() and (stream.labels_ >= 0).any()  # the slice exercises both outcomes


def test_greedy_rejects_a_batch_of_another_dimension(part):
    g = GreedyDBSCAN()
    g.partial_fit(part.x[:5])
    with pytest.raises(ValueError, match="dimension"):
        g.partial_fit(np.ones((2, 3), dtype=np.float32))


def test_greedy_baseline_streams_a_fixed_shuffle_not_the_class_sorted_rows(part):
    params = {"max_distance": 0.15, "min_faces": 2}
    labels = BASELINES["greedy-dbscan"](**params).fit_predict(part.x)
    order = np.random.RandomState(0).permutation(len(part.x))
    assert np.array_equal(labels[order], GreedyDBSCAN(**params).fit_predict(part.x[order]))
