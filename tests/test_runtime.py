"""OnnxScorer: device choice, threads, chunking, the default model, and clear errors."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

import numpy as np
import onnx
import onnx.helper
import onnxruntime as ort
import pytest

import qdrant_lander.decode as decode
import qdrant_lander.model_card as model_card
import qdrant_lander.runtime as runtime
from qdrant_lander.decode import score_level0
from qdrant_lander.errors import InputError, MissingExtraError, ModelError
from qdrant_lander.features import level_inputs
from qdrant_lander.knn import knn_graph
from qdrant_lander.runtime import OnnxScorer, default_model_path
from tests.onnx_models import exported, hub_inputs, make_card

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return exported(tmp_path_factory)[1]


def test_card_and_cpu_provider(model_path):
    scorer = OnnxScorer(model_path, device="cpu")
    assert scorer.provider == CPU
    assert scorer.card.model_dump(exclude={"revision"}) == make_card().model_dump(exclude={"revision"})


def test_auto_says_which_provider_it_uses(model_path, caplog):
    with caplog.at_level(logging.INFO, logger="qdrant_lander.runtime"):
        scorer = OnnxScorer(model_path, device="auto")
    assert scorer.provider == CPU or CUDA in ort.get_available_providers()
    assert f"on {scorer.provider}" in caplog.text


def test_cuda_listed_but_unusable(model_path, monkeypatch, caplog):
    """onnxruntime-gpu lists CUDA as available on machines without a GPU; only the session's
    providers count. Simulated here: CUDA listed, but this onnxruntime cannot create it."""
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime really has CUDA")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    assert OnnxScorer(model_path, device="auto").provider == CPU
    assert "could not use it" in caplog.text
    with pytest.raises(InputError, match="could not use a GPU"):
        OnnxScorer(model_path, device="cuda")


def test_a_cuda_provider_that_fails_to_start_falls_back_here_not_in_onnxruntime(model_path, monkeypatch, caplog,
                                                                                capsys):
    """onnxruntime's own fallback prints a banner to stdout (a --json reader gets it) and may later move a session
    to CPU mid-run behind the provider we report: it is turned off, and the CPU retry is ours, with a warning."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    real = ort.InferenceSession
    seen = []

    asked = []

    def session(path, sess_options=None, providers=None, **kwargs):
        seen.append(kwargs.get("enable_fallback"))
        asked.append(providers)
        if (CUDA, runtime.CUDA_OPTIONS) in providers:
            raise RuntimeError("cudaSetDevice failed")
        return real(path, sess_options=sess_options, providers=providers, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", session)
    assert OnnxScorer(model_path, device="auto").provider == CPU
    assert "could not use it: cudaSetDevice failed; running on CPUExecutionProvider" in caplog.text
    assert capsys.readouterr().out == "" and set(seen) == {0}
    # TF32 off: onnxruntime's CUDA default moves link probabilities by ~1e-3 against the CPU (tests/test_cuda.py)
    assert asked == [[(CUDA, {"use_tf32": "0"}), CPU], [CPU]]
    with pytest.raises(InputError, match="could not use a GPU .*cudaSetDevice failed"):
        OnnxScorer(model_path, device="cuda")



def test_cuda_libraries_from_pip_are_loaded_before_a_cuda_session_and_their_complaints_logged(
        model_path, monkeypatch, caplog, capsys):
    """Serving has no torch to load pip's CUDA/cuDNN libraries, so onnxruntime's preload_dlls is called before any
    session that may use CUDA (never for a CPU one); what it prints goes to the log, not to a --json reader."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    calls = []

    def preload(**kwargs):
        calls.append(kwargs)
        print("Failed to load libcublasLt.so.13: not found")

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    OnnxScorer(model_path, device="cpu")
    assert calls == []
    with caplog.at_level(logging.INFO, logger="qdrant_lander.runtime"):
        OnnxScorer(model_path, device="auto")
    assert calls == [{"msvc": False}]
    assert "preload_dlls: Failed to load libcublasLt.so.13: not found" in caplog.text
    assert capsys.readouterr().out == ""

def test_scorers_loaded_at_once_from_two_threads_give_stdout_back(model_path, monkeypatch):
    """preload_dlls's output is caught by swapping the process's sys.stdout: two loads interleaved in threads
    restored each other's StringIO, and every later print of the process went into it."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    calls, inside = [], threading.Event()

    def preload(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            inside.wait(0.5)  # the other thread's load, if it can start now, comes in ...
        else:
            inside.set()
            time.sleep(0.2)  # ... and ends after this one

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(sys, "stdout", before := sys.stdout)  # put back after the test, even if it fails
    threads = [threading.Thread(target=OnnxScorer, args=(model_path,), kwargs={"device": "auto"}) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 2
    assert sys.stdout is before


def test_cuda_without_gpu_build_names_the_extra(model_path):
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(MissingExtraError, match=r"qdrant-lander\[gpu\]"):
        OnnxScorer(model_path, device="cuda")


def test_runs_are_larger_on_a_gpu_unless_asked(model_path, monkeypatch):
    """A GPU run's launches and copies cost more than its arithmetic (RESULTS.md, Session 40): its default chunk is
    32x the CPU's. Simulated on the CPU by the provider the session reports."""
    assert OnnxScorer(model_path, device="cpu").chunk_edges == runtime.DEFAULT_CHUNK_EDGES == 1 << 15
    assert OnnxScorer(model_path, device="cpu", chunk_edges=100).chunk_edges == 100
    with pytest.raises(InputError, match="chunk_edges must be at least 1"):
        OnnxScorer(model_path, chunk_edges=0)
    monkeypatch.setattr(runtime, "_session", lambda ort, path, device, threads: (
        ort.InferenceSession(str(path), providers=[CPU]), CUDA))
    assert OnnxScorer(model_path).chunk_edges == runtime.DEFAULT_CUDA_CHUNK_EDGES == 1 << 20
    assert OnnxScorer(model_path, chunk_edges=100).chunk_edges == 100


def test_threads_reach_the_session(model_path):
    scorer = OnnxScorer(model_path, device="cpu", threads=1)
    assert scorer._session.get_session_options().intra_op_num_threads == 1
    assert OnnxScorer(model_path, device="cpu", threads=np.int64(2))._session.get_session_options().intra_op_num_threads == 2
    for bad in (0, 2.5, "2", True):  # 2.5 and "2" raised onnxruntime's own TypeError, True ran on 1 thread
        with pytest.raises(InputError, match="threads must be a whole number of at least 1"):
            OnnxScorer(model_path, threads=bad)


def test_chunk_size_does_not_change_results(model_path):
    inputs = hub_inputs(300, 10, seed=3)
    want = OnnxScorer(model_path, device="cpu")(inputs)
    for chunk_edges in (1, 10, 999, 3000):
        got = OnnxScorer(model_path, device="cpu", chunk_edges=chunk_edges)(inputs)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)


def test_head_on_some_rows_equals_those_rows_of_the_whole_graph(model_path):
    """What an incremental pass relies on: scoring a few rows from the node table gives exactly
    their rows of a whole-graph call."""
    inputs = hub_inputs(300, 10, seed=4)
    scorer = OnnxScorer(model_path, device="cpu", chunk_edges=64)
    link, density = scorer(inputs)
    rows = np.array([299, 3, 150, 151, 0])
    table = scorer.node_table(inputs.x, inputs.nbr, inputs.sim)
    got_link, got_density = scorer.head(table, inputs.nbr[rows], inputs.sim[rows], inputs.edge_attr[rows], rows)
    np.testing.assert_allclose(got_link, link[rows], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_density, density[rows], rtol=0, atol=1e-6)


def test_scores_in_blocks_equal_one_whole_call_and_ask_each_row_once(model_path):
    """What a big level relies on: edge features built block by block (of whole chunks) give exactly
    the whole call's scores, and every row's features are asked for once."""
    inputs = hub_inputs(300, 10, seed=5)
    scorer = OnnxScorer(model_path, device="cpu", chunk_edges=64)  # 6 rows a chunk: blocks of 18 rows
    want = scorer(inputs)
    asked = []

    def edge_attr_of(rows):
        asked.append(rows)
        return inputs.edge_attr[rows]

    got = scorer.score_in_blocks(inputs.x, inputs.nbr, inputs.sim, edge_attr_of, block_chunks=3)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert len(asked) == 17 and np.array_equal(np.concatenate(asked), np.arange(300))


def test_level0_scored_in_blocks_equals_the_whole_level_and_keeps_no_edge_features(model_path, monkeypatch):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    graph = knn_graph(x, 10)
    scorer = OnnxScorer(model_path, device="cpu", chunk_edges=64)  # chunks of 6 rows
    monkeypatch.setattr(runtime, "BLOCK_EDGES", 64 * 32)  # 32 chunks a block: blocks of 192 rows, 3 blocks
    asked, build = [], decode.edge_features

    def counted(graph, nodes, rows):
        asked.append(len(rows))
        return build(graph, nodes, rows)

    monkeypatch.setattr(decode, "edge_features", counted)
    step = score_level0(x, graph, scorer, "structure")
    assert asked == [192, 192, 116]
    inputs = level_inputs(graph, peak=x, mean=x, size=np.ones(500, dtype=np.int64), peak_index=np.arange(500),
                          node_mode="structure")
    want_link, want_density = scorer(inputs)
    np.testing.assert_array_equal(step.link, want_link)
    np.testing.assert_array_equal(step.density, want_density)
    np.testing.assert_array_equal(step.inputs.x, inputs.x)
    assert step.inputs.edge_attr.shape == (500, 10, 0)  # never held for the whole level


def test_inputs_that_do_not_fit_are_refused(model_path):
    inputs = hub_inputs(20, 4)
    bad = inputs.__class__(**{**inputs.__dict__, "x": np.zeros((20, 3), np.float32)})
    with pytest.raises(ModelError, match="expects x of shape"):
        OnnxScorer(model_path, device="cpu")(bad)
    inputs.nbr[5, 2] = 20
    with pytest.raises(InputError, match="neighbour indices"):
        OnnxScorer(model_path, device="cpu")(inputs)


def test_not_a_lander_model(tmp_path):
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["a"], ["b"])], "g",
                                   [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, ["n"])],
                                   [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, ["n"])])
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=10), path)
    with pytest.raises(ModelError, match="not a qdrant-lander model"):
        OnnxScorer(path)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxScorer(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="does not exist"):
        OnnxScorer(tmp_path / "missing.onnx")
    with pytest.raises(InputError, match="device"):
        OnnxScorer(path, device="tpu")


@pytest.mark.parametrize(("version", "says"), [(1, "older qdrant-lander.*retrain"), (99, "upgrade qdrant-lander")])
def test_models_of_another_format_are_refused(model_path, tmp_path, version, says):
    model = onnx.load(model_path)
    for prop in model.metadata_props:
        if prop.key == runtime.CARD_KEY:
            prop.value = make_card(format_version=version).model_dump_json()
    other = tmp_path / f"format{version}.onnx"
    onnx.save(model, other)
    with pytest.raises(ModelError, match=says):
        OnnxScorer(other)


def test_a_card_that_describes_other_weights_is_refused_on_loading(model_path, tmp_path):
    """A structure model whose card says embedding inputs of 384 dimensions: refused with the file named when it
    loads, not a raw onnxruntime error on the first pass (which a daemon took for a store failure, exit 4)."""
    model = onnx.load(model_path)
    for prop in model.metadata_props:
        if prop.key == runtime.CARD_KEY:
            prop.value = make_card(node_mode="embedding", input_dim=384).model_dump_json()
    other = tmp_path / "other-card.onnx"
    onnx.save(model, other)
    with pytest.raises(ModelError, match=r"other-card.onnx does not match its model card \(x 6 wide, its card says "
                                         r"768\): re-export it"):
        OnnxScorer(other, device="cpu")


@pytest.mark.parametrize("version", ["1", 1.0, True, "3"])
def test_a_format_written_as_another_json_type_is_still_checked(version):
    """pydantic reads "1", 1.0 or true as the number: the format check must see the number, not skip the string."""
    from qdrant_lander.model_card import read_card

    card = make_card().model_dump() | {"format_version": version}
    with pytest.raises(ModelError, match="has model format (1|3)"):
        read_card(json.dumps(card), "card.json")


def test_default_model_lookup(model_path, tmp_path, monkeypatch):
    """The default model is package data; a missing one is a clear ModelError, a present one loads."""
    monkeypatch.setattr(model_card.importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(ModelError, match="no default model"):
        OnnxScorer.default()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "default.onnx").write_bytes(model_path.read_bytes())
    assert default_model_path() == tmp_path / "models" / "default.onnx"
    assert OnnxScorer.default(device="cpu").card.name == "test-model"


def test_a_model_of_your_own_needs_no_shipped_model(model_path, tmp_path, monkeypatch):
    """An installation without the shipped file (a slimmed image) still serves the model it is given."""
    from qdrant_lander import Lander

    monkeypatch.setattr(model_card.importlib.resources, "files", lambda package: tmp_path)
    assert Lander(model_path, device="cpu").card.name == "test-model"


def test_a_newer_card_json_says_upgrade_and_names_itself_even_when_its_fields_changed(model_path, tmp_path):
    """A model directory's card.json from a newer format, one whose fields changed too ("k": "auto"): the error
    names card.json (not the model.onnx beside it) and says to upgrade, not that a field does not parse."""
    from qdrant_lander import Lander

    (tmp_path / "model.onnx").write_bytes(model_path.read_bytes())
    (tmp_path / "card.json").write_text(make_card().model_copy(update={"format_version": 3}).model_dump_json()
                                        .replace('"k":10', '"k":"auto"'))
    with pytest.raises(ModelError, match=r"card.json has model format 3, this qdrant-lander reads 2: upgrade"):
        Lander(tmp_path, device="cpu").card


@pytest.mark.parametrize("device,extra", [("auto", "cpu"), ("cpu", "cpu"), ("cuda", "gpu")])
def test_missing_onnxruntime_names_the_extra(model_path, monkeypatch, device, extra):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=rf'pip install "qdrant-lander\[{extra}\]"'):
        OnnxScorer(model_path, device=device)


def test_both_onnxruntime_packages_installed_is_logged(monkeypatch, caplog):
    """onnxruntime and onnxruntime-gpu provide one module: with both, whichever pip wrote last runs, silently."""
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "1.0")
    with caplog.at_level(logging.WARNING, logger="qdrant_lander.runtime"):
        runtime._onnxruntime("cpu")
    assert "onnxruntime and onnxruntime-gpu are both installed" in caplog.text
    caplog.clear()
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="qdrant_lander.runtime"):
        runtime._onnxruntime("cpu")
    assert "both installed" not in caplog.text  # this environment has one of them
