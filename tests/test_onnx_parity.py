"""The exported ONNX file computes what the torch model computes, on graphs it was not traced on.

Exporters can be silently wrong and still pass ``onnx.checker`` (measured here: the legacy exporter
turns ``index_add_`` into an overwrite, dynamo does the same to ``scatter_reduce(mean)``), so every
comparison runs on graphs of other sizes than the export graph, with hub nodes that many rows point
at, and checks the numbers, not just that it runs.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnx_export import export_onnx
from qdrant_lander.model_card import FORMAT_VERSION, ModelCard
from qdrant_lander.runtime import OnnxScorer
from tests.onnx_models import exported, hub_inputs, make_card, make_net, torch_scores

TOL = 1e-4


def _assert_close(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    for g, w, what in zip(got, want, ("link", "density")):
        assert g.shape == w.shape and g.dtype == np.float32, what
        diff = float(np.abs(g - w).max())
        assert diff <= TOL, f"{what}: max abs diff {diff:.2e}"


def test_metadata_names_and_checker(tmp_path_factory):
    _, path = exported(tmp_path_factory)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert [i.name for i in model.graph.input][:4] == ["x", "nbr", "sim", "edge_attr"]
    assert [o.name for o in model.graph.output][:2] == ["link", "density"]
    meta = {p.key: p.value for p in model.metadata_props}
    card = ModelCard.model_validate_json(meta["qdrant_lander.card"])
    assert card.model_dump(exclude={"revision"}) == make_card().model_dump(exclude={"revision"})
    assert card.revision != "unknown"  # filled from git in this checkout
    assert (meta["format_version"], meta["input_dim"], meta["k"], meta["tau"], meta["max_levels"]) == \
           (str(FORMAT_VERSION), "any", "10", "0.4", "4")
    assert meta["trained_on"] == "synthetic" and meta["revision"] == card.revision
    assert [s["name"] for s in json.loads(meta["qdrant_lander.stages"])] == ["encode", "conv0", "project", "head"]


@pytest.mark.parametrize("n,k", [(1000, 5), (1000, 20), (50, 10), (2, 1)])
def test_plain_entry_point_runs_any_size(tmp_path_factory, n, k):
    """Exported on N=50, k=10; the plain ``x, nbr, sim, edge_attr -> link, density`` graph runs on
    other N and k and matches torch there."""
    net, path = exported(tmp_path_factory)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = hub_inputs(n, k, seed=n + k)
    feed = {name: getattr(inputs, name) for name in ("x", "nbr", "sim", "edge_attr")}  # stage inputs have defaults
    link, density = session.run(["link", "density"], feed)
    _assert_close((link, density), torch_scores(net, inputs))


@pytest.mark.parametrize("head,layers", [("relative", 1), ("paper", 2)])
@pytest.mark.parametrize("n,k,chunk_edges", [(777, 7, 1 << 17), (2000, 12, 1000), (31, 3, 1)])
def test_runtime_matches_torch_on_hub_graphs(tmp_path_factory, head, layers, n, k, chunk_edges):
    """The chunked, staged runtime equals the one-shot torch forward, also when chunks split the rows
    that point at a hub (and when a chunk is a single row)."""
    net, path = exported(tmp_path_factory, head, layers)
    inputs = hub_inputs(n, k, seed=n)
    got = OnnxScorer(path, device="cpu", threads=1, chunk_edges=chunk_edges)(inputs)
    _assert_close(got, torch_scores(net, inputs))


def test_export_writes_nothing_on_failure(tmp_path):
    """A model the exporter cannot handle leaves no (half-written) file behind."""
    net = make_net()
    net.edge_mlp = None  # breaks the forward
    out = tmp_path / "broken.onnx"
    with pytest.raises(Exception):
        export_onnx(net, make_card(), out)
    assert list(tmp_path.iterdir()) == []


def test_revision_is_unknown_for_a_copy_inside_another_repository(tmp_path, monkeypatch):
    """An installed copy (e.g. in a project's own venv inside its git checkout) reported that project's commit."""
    import subprocess

    import onnx_export.export as export_module

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    site = tmp_path / "site" / "onnx_export"
    site.mkdir(parents=True)
    monkeypatch.setattr(export_module, "__file__", str(site / "export.py"))
    assert export_module._git_revision() == "unknown"
