"""Serving never needs torch (nor onnx): it runs where importing torch fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.onnx_models import exported

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "import sys; sys.modules.update(torch=None, torch_geometric=None, onnx=None)  # import raises ImportError\n"


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_serving_modules_import_no_torch():
    """Every module outside ``training`` (core, stores, CLI, daemon...) imports without pulling torch or onnx."""
    code = """
import importlib, pkgutil, sys
import qdrant_lander
for m in pkgutil.walk_packages(qdrant_lander.__path__, "qdrant_lander."):
    if not m.name.startswith("qdrant_lander.training"):
        importlib.import_module(m.name)
heavy = sorted(n for n in sys.modules if n.split(".")[0] in ("torch", "torch_geometric", "onnx"))
print(heavy[:5])
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 16))
    x = np.concatenate([c + 0.15 * rng.standard_normal((40, 16)) for c in centers]).astype(np.float32)
    path = tmp_path_factory.mktemp("blobs") / "x.npy"
    np.save(path, x)
    return path


def test_cluster_hierarchy_without_torch(tmp_path_factory, blobs):
    _, model = exported(tmp_path_factory)
    code = BLOCK + """
import sys, numpy as np
from qdrant_lander.decode import cluster_hierarchy
from qdrant_lander.knn import knn_graph
from qdrant_lander.runtime import OnnxScorer
from qdrant_lander.validate import check_embeddings
scorer = OnnxScorer(sys.argv[1], device="auto")
card = scorer.card
x = check_embeddings(np.load(sys.argv[2]))
result = cluster_hierarchy(x, knn_graph(x, card.k), scorer, card)
print(len(result.labels), result.n_levels, scorer.provider)
"""
    done = _python(code, str(model), str(blobs))
    assert done.returncode == 0, done.stderr
    n, levels, provider = done.stdout.split()
    assert int(n) == 120 and int(levels) >= 1 and provider.endswith("ExecutionProvider")


def test_cluster_cli_without_torch(tmp_path_factory, tmp_path, blobs):
    _, model = exported(tmp_path_factory)
    out = tmp_path / "labels.npy"
    code = BLOCK + "from qdrant_lander.cli import main; main()"
    done = _python(code, "cluster", str(blobs), "--out", str(out), "--model", str(model), "--device", "cpu",
                   "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["points"] == 120 and summary["provider"] == "CPUExecutionProvider"
    labels = np.load(out)
    assert labels.shape == (120,) and set(labels) <= set(range(120))


def test_calibrate_cli_without_torch(tmp_path_factory, tmp_path, blobs):
    _, model = exported(tmp_path_factory)
    labels = tmp_path / "y.npy"
    np.save(labels, np.repeat(np.arange(3), 40))
    code = BLOCK + "from qdrant_lander.cli import main; main()"
    done = _python(code, "calibrate", str(blobs), str(labels), "--out", str(tmp_path / "cal"), "--model", str(model),
                   "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["notes"]["calibrated_classes"] == 3
    assert (tmp_path / "cal" / "model.onnx").is_file() and (tmp_path / "cal" / "card.json").is_file()


def test_config_runtime_says_what_a_model_runs_on_without_importing_torch():
    """`config runtime` names the onnxruntime build, what it offers and the provider the session really got (the
    check for "is my GPU used?"); torch is reported from package metadata, never imported."""
    code = BLOCK + "from qdrant_lander.cli import main; main()"
    done = _python(code, "config", "runtime", "--device", "cpu", "--threads", "1", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["provider"] == "CPUExecutionProvider" and info["device"] == "cpu" and info["threads"] == 1
    assert info["chunk_edges"] == 1 << 15 and info["model"] == "lander-universal-v2"
    assert info["model_path"].endswith("default.onnx")
    assert set(info["packages"]) & {"onnxruntime", "onnxruntime-gpu"}
    assert "CPUExecutionProvider" in info["available_providers"]
    text = _python(code, "config", "runtime", "--device", "cpu")
    assert text.returncode == 0 and "provider             CPUExecutionProvider" in text.stdout
