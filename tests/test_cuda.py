"""The CUDA path on a real GPU: the same scores and clusters as the CPU.

Skipped where onnxruntime cannot start a CUDA session (no GPU, or the CPU build of onnxruntime): CI has
no GPU, so these run only where one is present (``pip install ".[gpu]"``, then ``pytest tests/test_cuda.py``).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.tasks import lfw_half
from qdrant_lander import Lander
from qdrant_lander.errors import InputError
from qdrant_lander.features import level_inputs
from qdrant_lander.knn import knn_graph
from qdrant_lander.metrics import score
from qdrant_lander.runtime import CUDA, OnnxScorer, default_model_path
from tests.onnx_models import hub_inputs


def _cuda_scorer(**kwargs) -> OnnxScorer:
    if CUDA not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    try:
        return OnnxScorer(default_model_path(), device="cuda", **kwargs)
    except InputError as e:  # listed, but no GPU, driver or CUDA libraries here
        pytest.skip(f"no usable GPU: {e}")


def test_cuda_scores_equal_cpu_scores_at_every_chunk_size():
    inputs = hub_inputs(3000, 10, seed=5)
    want = OnnxScorer(default_model_path(), device="cpu")(inputs)
    for chunk_edges in (7, 1 << 15, 1 << 22):  # ragged chunks, the default, one chunk
        scorer = _cuda_scorer(chunk_edges=chunk_edges)
        assert scorer.provider == CUDA
        for got, cpu in zip(scorer(inputs), want):
            np.testing.assert_allclose(got, cpu, rtol=0, atol=1e-5)


def test_cuda_head_on_some_rows_equals_those_rows_of_the_whole_graph():
    scorer = _cuda_scorer()
    inputs = hub_inputs(2000, 10, seed=6)
    table = scorer.node_table(inputs.x, inputs.nbr, inputs.sim)
    link, density = scorer.head(table, inputs.nbr, inputs.sim, inputs.edge_attr)
    rows = np.array([3, 1999, 0, 700])
    some = scorer.head(table, inputs.nbr[rows], inputs.sim[rows], inputs.edge_attr[rows], rows)
    np.testing.assert_allclose(some[0], link[rows], rtol=0, atol=1e-5)
    np.testing.assert_allclose(some[1], density[rows], rtol=0, atol=1e-5)


def test_cuda_clusters_real_faces_as_the_cpu_does():
    _cuda_scorer()
    part = lfw_half().test
    cpu, gpu = Lander(device="cpu").predict(part.x), Lander(device="cuda").predict(part.x)
    assert Lander(device="cuda").scorer.provider == CUDA
    agree = score(cpu.labels, gpu.labels).fp
    assert agree > 0.999, agree  # float sums differ in the last bits; a tie may flip, a wrong kernel would not
    assert abs(score(part.y, gpu.labels).fp - score(part.y, cpu.labels).fp) < 0.002


def test_cuda_level_inputs_of_real_vectors_score_like_cpu():
    scorer = _cuda_scorer()
    x = lfw_half().train.x[:3000].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    graph = knn_graph(x, 10)
    ones = np.ones(len(x), dtype=np.int64)
    inputs = level_inputs(graph, peak=x, mean=x, size=ones, peak_index=np.arange(len(x)), node_mode="structure")
    want = OnnxScorer(default_model_path(), device="cpu")(inputs)
    for got, cpu in zip(scorer(inputs), want):
        np.testing.assert_allclose(got, cpu, rtol=0, atol=1e-5)
