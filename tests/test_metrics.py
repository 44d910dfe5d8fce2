import math

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from qdrant_lander.errors import InputError
from qdrant_lander.metrics import score


def test_hand_computed_case():
    # classes {0,1,2}, {3,4}; clusters {0,1}, {2,3,4}
    s = score(np.array([0, 0, 0, 1, 1]), np.array([7, 7, 9, 9, 9]))
    # pairs: tk = 4+1+4-5 = 4, pk = 4+9-5 = 8, qk = 9+4-5 = 8
    assert s.pairwise_precision == pytest.approx(0.5)
    assert s.pairwise_recall == pytest.approx(0.5)
    assert s.fp == pytest.approx(0.5)
    # BCubed: P = (4/2 + 1/3 + 4/3)/5, R = (4/3 + 1/3 + 4/2)/5
    assert s.bcubed_precision == pytest.approx(11 / 15)
    assert s.bcubed_recall == pytest.approx(11 / 15)
    assert s.fb == pytest.approx(11 / 15)
    assert (s.n_clusters, s.n_classes) == (2, 2)


def test_nmi_matches_sklearn_arithmetic():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, 300), rng.integers(0, 9, 300)
    assert score(a, b).nmi == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


def test_perfect_and_degenerate_clusterings():
    y = np.array([0, 0, 1, 1, 2])
    perfect = score(y, np.array([5, 5, 3, 3, 1]))
    assert (perfect.fp, perfect.fb) == (1.0, 1.0) and perfect.nmi == pytest.approx(1.0)
    one = score(y, np.zeros(5, dtype=int))  # everything merged: recall 1, precision low
    assert one.pairwise_recall == 1.0 and one.pairwise_precision == pytest.approx(2 / 10)
    singletons = score(y, np.arange(5))  # nothing merged: precision 1, recall 0
    assert singletons.pairwise_precision == 1.0 and singletons.fp == 0.0
    assert singletons.bcubed_recall == pytest.approx((1 / 2 + 1 / 2 + 1 / 2 + 1 / 2 + 1) / 5)
    assert not math.isnan(singletons.nmi)


def test_length_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="length 3 but there are 4 true labels"):  # said "4 embeddings"
        score(np.array([0, 1, 1, 0]), np.array([0, 1, 1]))
