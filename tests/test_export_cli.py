"""`qdrant-lander export` errors (the happy path runs in test_cli_arrays.py on a trained model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from qdrant_lander.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_export_on_a_non_model_dir(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "not a trained model directory" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_export_without_torch_names_the_extra(tmp_path):
    code = "import sys; sys.modules['torch'] = None\nfrom qdrant_lander.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", code, "export", str(tmp_path), "--out", str(tmp_path / "m.onnx")],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert 'pip install torch==2.13.0 "qdrant-lander[cpu,train]"' in done.stderr and "Traceback" not in done.stderr
