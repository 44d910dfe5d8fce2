import numpy as np
import pytest

from qdrant_lander.errors import InputError
from qdrant_lander.knn import coarsened_knn, deep_knn, knn_graph, rows_of, top_columns
from qdrant_lander.validate import check_embeddings, check_labels, row_norms


def _unit(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# blocks of the minimum 64 rows (the last one partial), of 100 rows, and one block for all 300
@pytest.mark.parametrize("block_entries", [1, 100 * 300, 1 << 23])
def test_knn_matches_brute_force_for_any_block_size(block_entries):
    x = _unit(300, 12)
    g = knn_graph(x, 8, block_entries=block_entries)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    ref = np.argsort(-s, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(g.nbr, ref)
    np.testing.assert_allclose(g.sim, np.take_along_axis(s, ref, axis=1), atol=1e-6)
    assert (g.nbr != np.arange(300)[:, None]).all()  # self is never a neighbour


# many ties (small integers), -inf entries (a row's own column), fewer columns than chunks and many more
@pytest.mark.parametrize("cols, k", [(12, 11), (300, 5), (5000, 40)])
def test_top_columns_are_the_largest_entries_ties_by_column(cols, k):
    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, size=(50, cols)).astype(np.float32)
    s[np.arange(50), rng.integers(0, cols, 50)] = -np.inf
    s[0] = 1.0  # one row all ties
    got, vals = top_columns(s, k)
    ref = np.argsort(-s, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(vals, np.take_along_axis(s, ref, axis=1))


@pytest.mark.parametrize("scale", [1, 1 << 40])  # dense ids (a lookup table) and sparse ones (binary search)
def test_rows_of_finds_every_listed_id_and_marks_the_rest(scale):
    rng = np.random.default_rng(0)
    ids = rng.permutation(5000)[:3000] * scale
    wanted = np.concatenate([rng.choice(ids, (40, 20)), [[-1, 5001 * scale, 2 * scale + 1] + [ids[0]] * 17]])
    rows = rows_of(ids, wanted)
    assert rows.shape == wanted.shape
    found = rows >= 0
    np.testing.assert_array_equal(ids[rows[found]], wanted[found])
    np.testing.assert_array_equal(found, np.isin(wanted, ids))
    assert (rows_of(ids[:0], wanted) == -1).all()


def _merge(x, groups):
    """Merge each group (rows of node indices) into one node at the unit mean of its members, after the nodes
    standing alone: (the next level's vectors, node_map), as the decoder coarsens a level."""
    owner = np.full(len(x), -1)
    for g, members in enumerate(groups):
        owner[members] = g
    alone = np.flatnonzero(owner < 0)
    node_map = np.empty(len(x), dtype=np.int64)
    node_map[alone] = np.arange(len(alone))
    node_map[owner >= 0] = len(alone) + owner[owner >= 0]
    means = np.stack([x[owner == g].sum(axis=0) for g in range(len(groups))])
    return np.concatenate([x[alone], means / np.linalg.norm(means, axis=1, keepdims=True)]).astype(np.float32), node_map


def _random_triples(x, rng, groups, k):
    return rng.permutation(len(x))[:3 * min(groups, (len(x) - 2 * k) // 3)].reshape(-1, 3)


def _nearest_pairs(x, rng, groups, k):
    """A tenth of the nodes each merge with their nearest node (disjoint pairs): merges among near nodes, as
    decoding makes them, replace a row's neighbours with merged nodes and push kept ones out of its list."""
    nearest, used, pairs = knn_graph(x, 1).nbr[:, 0], np.zeros(len(x), dtype=bool), []
    for a in rng.permutation(len(x))[:len(x) // 10]:
        if not used[a] and not used[nearest[a]]:
            used[[a, nearest[a]]] = True
            pairs.append((a, nearest[a]))
    return np.array(pairs)


# few merges (the lists refreshed), most nodes merged (searched again), and chains of merges among near nodes
# whose seeds made a bound that forgot the candidates a list had no room for return wrong neighbours
@pytest.mark.parametrize("merges, groups, k, seed", [(_random_triples, 12, 10, 1), (_random_triples, 300, 10, 1),
                                                     (_nearest_pairs, 0, 1, 62), (_nearest_pairs, 0, 2, 75)])
def test_a_coarsened_graph_equals_an_exact_search_level_after_level(merges, groups, k, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, 8))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, 20, 400)] + 0.3 * rng.normal(size=(400, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    deep = deep_knn(x, 2 * k)
    for round_ in range(10):
        if len(x) < 40:
            break
        x, node_map = _merge(x, merges(x, rng, groups, k))
        deep = coarsened_knn(deep, node_map, x, k)
        ref = knn_graph(x, k)
        np.testing.assert_array_equal(deep.level(k).nbr, ref.nbr)
        np.testing.assert_allclose(deep.level(k).sim, ref.sim, atol=1e-6)
        if round_ == 0 and merges is _random_triples:  # few merges keep most lists, which then hold fewer known entries
            assert (deep.graph.sim[:, -1] < deep.bound).any() == (groups == 12)


def test_knn_of_rows_with_nan_is_refused_by_name():
    x = _unit(30, 4)
    x[5] = np.nan
    with pytest.raises(InputError, match="1 rows contain NaN or inf"):
        knn_graph(x, 3)


def test_knn_needs_more_points_than_k():
    with pytest.raises(InputError, match="more than k=10"):
        knn_graph(_unit(10, 4), 10)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones(5, dtype=np.float32), "2-D"),
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), "NaN or inf"),
        (np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), "all zeros"),
        (np.ones((1, 3)), "at least 2 points"),
        (np.ones((3, 2), dtype=np.complex64), "real numbers .* got dtype complex64"),  # was cast, imaginary part lost
    ],
)
def test_bad_embeddings_are_named(bad, message):
    with pytest.raises(InputError, match=message):
        check_embeddings(bad)


def test_embeddings_are_normalised_and_dimension_checked():
    x = check_embeddings(np.array([[3.0, 4.0], [0.0, 2.0]]))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    assert x.dtype == np.float32
    with pytest.raises(InputError, match="trained for dimension 3"):
        check_embeddings(x, dim=3)


@pytest.mark.parametrize("dtype, scale", [(np.float32, 1e30), (np.float32, 1e-30), (np.float64, 1e300),
                                          (np.float64, 1e-300)])
def test_rows_far_from_unit_scale_keep_their_direction(dtype, scale):
    """The sum of squares of float32 rows like these overflows to inf (the row became zeros: a singleton) or
    underflows to 0 (refused as an all-zero row); float64 ones were cast to inf or 0 first."""
    x = np.array([[3.0, 4.0], [0.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(check_embeddings((x * scale).astype(dtype)), check_embeddings(x), rtol=1e-6)


def test_checks_run_in_chunks_with_the_rows_of_the_whole_array(monkeypatch):
    """check_embeddings and unit_batches go through the array CHUNK_ROWS rows at a time (a million rows made two
    whole-array temporaries): the same unit rows as one pass, bad rows counted and named over every chunk."""
    import qdrant_lander.validate as validate

    rng = np.random.default_rng(0)
    x = rng.normal(size=(103, 5)) * rng.uniform(0.1, 10, size=(103, 1))
    whole = check_embeddings(x)
    monkeypatch.setattr(validate, "CHUNK_ROWS", 10)
    np.testing.assert_array_equal(check_embeddings(x), whole)
    batches = list(validate.unit_batches(x.astype(np.float32), 32))
    assert [s for s, _ in batches] == [0, 32, 64, 96] and [len(b) for _, b in batches] == [32, 32, 32, 7]
    np.testing.assert_allclose(np.concatenate([b for _, b in batches]), whole, rtol=1e-6)
    bad = x.copy()
    bad[[3, 57, 99], 1] = [np.nan, np.inf, np.nan]
    bad[[12, 80]] = 0
    with pytest.raises(InputError, match=r"^3 rows contain NaN or inf \(first rows: \[3, 57, 99\]\)"):
        validate.unit_batches(bad, 32)  # raised when called, before any batch is taken
    with pytest.raises(InputError, match=r"^2 rows are all zeros and have no direction \(first rows: \[12, 80\]\)"):
        check_embeddings(np.nan_to_num(bad, posinf=1.0))


def test_an_empty_array_passes_when_no_rows_are_required():
    assert check_embeddings(np.empty((0, 3)), min_points=0).shape == (0, 3)


def test_integer_rows_keep_their_direction():
    x = np.array([[-128, -128], [0, 2]], dtype=np.int8)  # abs(-128) is -128 in int8
    np.testing.assert_allclose(check_embeddings(x), [[-0.70710677, -0.70710677], [0, 1]], rtol=1e-6)


def test_labels_must_match_embeddings():
    with pytest.raises(InputError, match="length 2 but there are 3"):
        check_labels(np.array([0, 1]), 3)
    with pytest.raises(InputError, match="integers"):
        check_labels(np.array([0.5, 1.0, 2.0]), 3)


def test_a_given_graph_with_missing_or_foreign_neighbours_is_refused_before_any_scoring():
    """``predict_graph`` takes graphs users build; a -1 for "no neighbour" would wrap to the last row."""
    from qdrant_lander import Lander, KnnGraph

    x = _unit(60, 12)
    lander = Lander(domain="text", device="cpu", threads=1)
    g = knn_graph(x, lander.card.k)
    assert len(lander.predict_graph(x, g).labels) == 60
    missing = g.nbr.copy()
    missing[3, -1] = -1
    for nbr, sim, message in [(missing, g.sim, r"\[0, 60\), got \[-1"), (g.nbr + 1, g.sim, r"got \[\d+, 60\]"),
                              (g.nbr, g.sim[:, :-1], "similarities have shape")]:
        with pytest.raises(InputError, match=message):
            lander.predict_graph(x, KnnGraph(nbr, sim))


def test_knn_ties_go_to_the_lower_index():
    """Equal similarities are ordered by index, so a graph (and the clusters decoded from it) is reproducible."""
    x = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]], dtype=np.float32)
    g = knn_graph(x / np.linalg.norm(x, axis=1, keepdims=True), 4)
    # row 0: point 4 at cosine 0.71, then 1, 2 and 3 all at 0; row 2: all four at 0
    assert g.nbr[0].tolist() == [4, 1, 2, 3] and g.nbr[2].tolist() == [0, 1, 3, 4]
    # a tie across the k-th place too (argpartition chose among those arbitrarily: [4, 1, 3])
    assert knn_graph(x / np.linalg.norm(x, axis=1, keepdims=True), 3).nbr[0].tolist() == [4, 1, 2]


@pytest.mark.parametrize("scale", [1, 1 << 40])
def test_rows_of_finds_the_smallest_and_largest_id(scale):
    ids = np.array([5, 3, 9, 7]) * scale
    assert rows_of(ids, np.array([[9, 3], [7, 10]]) * scale).tolist() == [[2, 1], [3, -1]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_norms_are_numpys_norms(dtype):
    x = np.random.default_rng(0).normal(size=(500, 384)).astype(dtype) * np.geomspace(1e-3, 1e3, 500)[:, None]
    np.testing.assert_allclose(row_norms(x), np.linalg.norm(x, axis=1), rtol=1e-6)
