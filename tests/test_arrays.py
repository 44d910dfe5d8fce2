"""Clustering an array with the level-0 kNN from a temporary embedded store's HNSW index (`cluster --knn`).

Data: CLINC150's 75 test intents (real text embeddings, 11,250 x 384: above Qdrant Edge's indexing threshold, so
the index mode really searches an HNSW graph), shipped model.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.tasks import clinc_75_75
from qdrant_lander import Lander, score
from qdrant_lander.arrays import cluster_array, exact_for, searches_index
from qdrant_lander.cli import main
from qdrant_lander.errors import InputError
from qdrant_lander.stores.edge import INDEXING_THRESHOLD_KB, EdgeCollection


@pytest.fixture(scope="module")
def part():
    test = clinc_75_75().test
    assert test.x.nbytes > INDEXING_THRESHOLD_KB * 1024  # else Edge scans and "index" would be exact too
    return test


@pytest.fixture(scope="module")
def lander():
    return Lander(device="cpu", threads=1)


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    """The temporary directory of this test alone (another process's test may be making stores in the system's)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _temp_stores() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("qdrant-lander-knn-*")}


def test_auto_is_exact_up_to_about_fifty_thousand_384d_rows():
    assert exact_for(50_000, 384, "auto") and not exact_for(60_000, 384, "auto")
    assert exact_for(10**6, 384, "exact") and not exact_for(10, 2, "index")
    assert not searches_index((15, 384), "index")  # a few rows: scanned anyway, so clustered in memory (and said so)


def test_exact_is_predict_and_the_index_clusters_as_well_with_row_indices(part, lander, monkeypatch, own_tmp):
    before = _temp_stores()
    exact = cluster_array(part.x * 3.0, lander, knn="exact", progress=False)  # any scale, as predict takes
    np.testing.assert_array_equal(exact.labels, lander.predict(part.x).labels)
    indexed, knn = [], EdgeCollection.knn

    def searched(self, *args, **kwargs):  # how many vectors the index held when the store was asked
        indexed.append(self.shard.info().indexed_vectors_count)
        return knn(self, *args, **kwargs)

    monkeypatch.setattr(EdgeCollection, "knn", searched)
    hnsw = cluster_array(part.x * 3.0, lander, knn="index", progress=False)
    assert indexed and min(indexed) == len(part.x)  # every query searched an HNSW index of all the rows
    assert hnsw.domain == exact.domain == "text" and hnsw.paths.shape[0] == len(part.x)
    peaks = np.unique(hnsw.labels)
    np.testing.assert_array_equal(hnsw.labels[peaks], peaks)  # a cluster id is the row of its peak, in the array
    assert hnsw.peak[peaks].all() and hnsw.peak.sum() == len(peaks)
    fp_exact, fp_hnsw = score(part.y, exact.labels).fp, score(part.y, hnsw.labels).fp
    assert fp_hnsw > 0.7 and abs(fp_hnsw - fp_exact) < 0.03, (fp_exact, fp_hnsw)
    assert _temp_stores() == before  # the temporary store is gone


def test_bad_rows_are_named_before_a_store_is_made(part, lander, own_tmp):
    bad = part.x.copy()
    bad[[7, 2000]] = np.nan
    before = _temp_stores()
    with pytest.raises(InputError, match=r"2 rows contain NaN or inf \(first rows: \[7, 2000\]\)"):
        cluster_array(bad, lander, knn="index", progress=False)
    with pytest.raises(InputError, match="2-D"):
        cluster_array(part.x[0], lander, knn="index", progress=False)
    assert _temp_stores() == before


def test_cli_cluster_and_eval_say_how_neighbours_were_found(part, tmp_path):
    np.save(tmp_path / "x.npy", part.x)
    np.save(tmp_path / "y.npy", part.y)
    runner = CliRunner()
    got = runner.invoke(main, ["cluster", str(tmp_path / "x.npy"), "--out", str(tmp_path / "l.npy"), "--knn", "index",
                               "--json", "--threads", "1"])
    assert got.exit_code == 0, got.output
    summary = json.loads(got.output.strip().splitlines()[-1])
    assert summary["knn"] == "index" and summary["points"] == len(part.x)
    labels = np.load(tmp_path / "l.npy")
    np.testing.assert_array_equal(labels[np.unique(labels)], np.unique(labels))
    got = runner.invoke(main, ["eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json", "--threads", "1"])
    assert got.exit_code == 0, got.output
    report = json.loads(got.output.strip().splitlines()[-1])
    assert report["knn"] == "exact" and report["fp"] == pytest.approx(score(part.y, Lander().predict(part.x).labels).fp)


def test_eval_names_an_array_of_the_wrong_shape(tmp_path):
    """Reviewer's note: a 0-d .npy with labels ended in a TypeError (exit 1)."""
    np.save(tmp_path / "x.npy", np.float32(3.0))
    np.save(tmp_path / "y.npy", np.zeros(3, dtype=np.int64))
    got = CliRunner().invoke(main, ["eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")])
    assert got.exit_code == 2 and "2-D array" in got.output and "Traceback" not in got.output
