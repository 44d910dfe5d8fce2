"""Exact copies of a vector are clustered once and labelled alike, in memory and on both stores."""

import numpy as np
import pytest

from benchmarks.tasks import clinc_75_75, subsample_classes, thin_classes
from qdrant_lander import Lander, dedup
from qdrant_lander.dedup import one_per_vector, unique_rows
from qdrant_lander.errors import InputError, StoreError
from qdrant_lander.knn import KnnGraph, knn_graph
from qdrant_lander.sync import full_sync, import_points, read_labels


@pytest.fixture(scope="module")
def part():
    return thin_classes(subsample_classes(clinc_75_75().test, 8, seed=1), 50)  # 400 points, 8 intents: 10 clusters


@pytest.fixture(scope="module")
def with_copies(part):
    """The part, then 30 copies of one point and 2 copies each of 40 others (rows of ``part`` by ``source``)."""
    rng = np.random.default_rng(0)
    source = np.concatenate([np.arange(len(part.x)), np.full(30, 7), np.repeat(rng.choice(len(part.x), 40, replace=False), 2)])
    return part.x[source], source


def test_unique_rows_keeps_first_appearances_in_order():
    x = np.array([[1, 0], [0, 1], [1, 0], [1, 1], [0, 1]], dtype=np.float32)
    u = unique_rows(x)
    np.testing.assert_array_equal(u.rep, [0, 1, 3])
    np.testing.assert_array_equal(u.inverse, [0, 1, 0, 2, 1])
    assert u.copies == 2
    np.testing.assert_array_equal(x[u.rep[u.inverse]], x)


def test_negative_zero_is_zero(monkeypatch):
    """Rows that differ only in the sign of a zero are one vector (they were two: a copy then crowded its
    vector's kNN list); also when every row hashes alike."""
    x = np.array([[1, 0, 0.5], [0, 1, 0.5], [1, -0.0, 0.5], [-0.0, 1, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(unique_rows(x).inverse, [0, 1, 0, 1])
    monkeypatch.setattr(dedup, "_hash_weights", lambda words: np.zeros(words, dtype=np.uint64))
    np.testing.assert_array_equal(unique_rows(x).inverse, [0, 1, 0, 1])


def test_unique_rows_survive_hash_collisions(with_copies, monkeypatch):
    """Rows are grouped by a hash and checked; with every row hashing alike the check must catch it."""
    x, source = with_copies
    want = unique_rows(x)
    np.testing.assert_array_equal(x[want.rep[want.inverse]], x)
    assert want.copies == 30 + 40 * 2
    monkeypatch.setattr(dedup, "_hash_weights", lambda words: np.zeros(words, dtype=np.uint64))
    got = unique_rows(x)
    np.testing.assert_array_equal(got.rep, want.rep)
    np.testing.assert_array_equal(got.inverse, want.inverse)


def test_collapse_drops_copies_and_fills_short_lists_exactly(part, with_copies):
    x, _ = with_copies
    u = unique_rows(x)
    k = 10
    fetched = knn_graph(x, 2 * k)  # what a store returns: copies included
    graph = u.collapse(KnnGraph(fetched.nbr[u.rep], fetched.sim[u.rep]), k, x)
    exact = knn_graph(x[u.rep], k)  # the graph among distinct vectors
    np.testing.assert_array_equal(graph.nbr, exact.nbr)
    np.testing.assert_allclose(graph.sim, exact.sim, atol=1e-6)
    # Point 7 has 30 copies: its fetched list held nothing else, so it was filled by the exact search.
    assert set(u.inverse[fetched.nbr[7]]) == {u.inverse[7]}


def test_predict_labels_copies_with_their_vector_and_leaves_the_rest_unchanged(part, with_copies):
    x, source = with_copies
    lander = Lander(device="cpu", threads=1)
    alone, together = lander.predict(part.x), lander.predict(x)
    n = len(part.x)
    assert alone.n_clusters >= 8
    np.testing.assert_array_equal(together.labels[:n], alone.labels)  # copies change nothing for the originals
    np.testing.assert_array_equal(together.labels, alone.labels[source])  # and take their original's cluster
    np.testing.assert_array_equal(together.paths, alone.paths[source])
    assert together.peak.sum() == alone.peak.sum() and not together.peak[n:].any()
    assert alone.domain == together.domain == "text"  # the preset auto picked, copies or not


def test_too_few_distinct_vectors_is_a_clear_error(part):
    x = np.repeat(part.x[:5], 20, axis=0)
    with pytest.raises(InputError, match="at least 11 points to cluster with k=10 neighbours, got 5 distinct vectors among 100 rows"):
        Lander(device="cpu", threads=1).predict(x)


def test_sync_clusters_copies_once(store, part, with_copies):
    x, source = with_copies
    lander = Lander(device="cpu", threads=1).for_data(part.x)
    col = import_points(store, "docs", x, progress=False)
    assert full_sync(col, lander, progress=False).copies == len(x) - len(part.x)
    _, labels = read_labels(col)
    alone = lander.predict(part.x).labels
    np.testing.assert_array_equal(labels, alone[source])  # store kNN is exact at this size: the same clusters


def test_sync_refuses_a_collection_of_a_few_distinct_vectors(store, part):
    col = import_points(store, "docs", np.repeat(part.x[:4], 10, axis=0), progress=False)
    with pytest.raises(StoreError, match="4 distinct vectors among 40 points"):
        full_sync(col, Lander(device="cpu", threads=1), progress=False)


def test_arriving_copies_of_labelled_points_take_their_cluster(store, part):
    """An incremental pass labels a copy of a labelled vector with its cluster, also when its kNN list is full
    of other new copies (25 copies of one point, more than the list holds)."""
    from qdrant_lander.daemon import Daemon, DaemonOptions

    col = import_points(store, "docs", part.x, progress=False)
    daemon = Daemon(col, Lander(device="cpu", threads=1), DaemonOptions(growth=0))
    daemon.run_pass(full=True)
    _, before = read_labels(col)
    source = np.concatenate([np.arange(0, len(part.x), 10), np.full(25, 3)])
    import_points(store, "docs", part.x[source], start_id=len(part.x), progress=False)
    report = daemon.run_pass()
    _, after = read_labels(col)
    assert report.new == len(source) and report.created == 0
    np.testing.assert_array_equal(after[:len(part.x)], before)
    np.testing.assert_array_equal(after[len(part.x):], before[source])


def test_calibration_uses_each_vector_once(part, with_copies, tmp_path):
    x, source = with_copies
    lander = Lander(device="cpu", threads=1)
    alone = lander.calibrate(part.x, part.y, out_dir=tmp_path / "alone").card
    together = lander.calibrate(x, part.y[source], out_dir=tmp_path / "together").card
    assert alone == together


def test_arriving_copies_of_a_new_vector_are_decided_together(store, part):
    """More copies of one new vector than a kNN list holds: without leaving the copies out of the lists they
    would only see each other and start a cluster of their own."""
    from qdrant_lander.daemon import Daemon, DaemonOptions

    held = np.arange(len(part.x)) != 5  # point 5 arrives later, 25 times
    col = import_points(store, "docs", part.x[held], progress=False)
    daemon = Daemon(col, Lander(device="cpu", threads=1), DaemonOptions(growth=0))
    daemon.run_pass(full=True)
    _, before = read_labels(col)
    import_points(store, "docs", np.repeat(part.x[5:6], 25, axis=0), start_id=1000, progress=False)
    report = daemon.run_pass()
    ids, after = read_labels(col)
    copies = after[ids >= 1000]
    assert report.new == 25 and report.attached == 25 and report.created == 0
    assert len(set(copies.tolist())) == 1 and copies[0] in set(before.tolist())


def test_a_graph_among_distinct_rows_expands_to_rows_of_the_full_array():
    """The daemon's neighbour cache is seeded from the expanded graph: its neighbours must be rows of the full
    array (copies interleaved, as in a real collection), each listing what its distinct vector lists."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 6)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    source = np.r_[0, 1, 0, 2, 3, 1, 1, 4:20, 7, 3]
    x = base[source]
    u = unique_rows(x)
    g = knn_graph(u.take(x), 4)
    full = u.expand_graph(g)
    assert full.nbr.shape == (len(x), 4) and (full.nbr < len(x)).all()
    np.testing.assert_array_equal(x[full.nbr], base[source][u.rep][g.nbr][u.inverse])
    np.testing.assert_array_equal(full.sim, g.sim[u.inverse])
    assert (u.inverse[full.nbr] != u.inverse[:, None]).all()  # no row lists a copy of itself


def test_one_per_vector_lists_each_vector_once_as_the_copy_in_the_rows_group():
    """The rule of regroup on lists of point ids (an incremental pass's): -1 codes are left out, an unknown group
    (-1) is never a copy in a group, the row's own vector stays only as its copy in the row's group."""
    nbr = np.array([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24], [30, 31, 32, 33, 34], [40, 41, 42, 43, 44]])
    sim = np.linspace(1.0, 0.5, 20, dtype=np.float32).reshape(4, 5)
    vec = np.array([[1, 2, 2, 3, -1], [2, 4, 4, -1, -1], [5, 5, -1, -1, -1], [2, 6, -1, -1, -1]])
    grp = np.array([[1, 1, 0, -1, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, -1, 0, 0, 0]])
    ids, s, found = one_per_vector(nbr, sim, vec, grp, own_vec=np.array([1, 2, 9, 8]), own_grp=np.array([0, 1, 0, 0]),
                                   k=2)
    np.testing.assert_array_equal(ids, [[12, 13], [20, 21], [30, 31], [12, 41]])  # row 3: row 0's copy in group 0
    np.testing.assert_array_equal(s, sim[[[0], [1], [2], [3]], [[1, 3], [0, 1], [0, 1], [0, 1]]])
    np.testing.assert_array_equal(found, [2, 2, 1, 2])  # row 2: one vector, then its other copy


def test_one_per_vector_fills_a_short_list_with_other_points_before_one_it_already_took():
    """A row short of k distinct vectors takes copies; the own group's copy, already swapped in for the vector's
    first entry, is not taken a second time while another copy is there (a point listed twice)."""
    nbr = np.array([[10, 11, 12, 13]])
    vec = np.array([[1, 1, 1, 2]])
    grp = np.array([[1, 0, 2, -1]])  # 11: vector 1's copy in the row's group, swapped in for 10
    ids, _, found = one_per_vector(nbr, np.ones((1, 4), dtype=np.float32), vec, grp, own_vec=np.array([9]),
                                   own_grp=np.array([0]), k=3)
    assert found.tolist() == [2]
    np.testing.assert_array_equal(ids, [[11, 12, 13]])  # not [11, 11, 13]
