"""`qdrant-lander export MODEL_DIR --out model.onnx` on a directory written by TrainedModel.save."""

from __future__ import annotations

import json

import numpy as np
import onnx_export.export
from click.testing import CliRunner

from qdrant_lander.cli import main
from qdrant_lander.runtime import OnnxScorer
from qdrant_lander.training.trainer import TrainConfig, TrainedModel
from tests.onnx_models import hub_inputs, make_card, make_net, torch_scores


def test_export_command(tmp_path, monkeypatch):
    net, card = make_net(layers=0), make_card(name="cli-export", trained_on=["a.npy", "b.npy"])
    with monkeypatch.context() as m:  # save() exports too; skip that here, the command is under test
        m.setattr(onnx_export.export, "export_onnx", lambda *args: None)
        TrainedModel(net=net, card=card, config=TrainConfig()).save(tmp_path / "model")
    out = tmp_path / "exported.onnx"
    result = CliRunner().invoke(main, ["export", str(tmp_path / "model"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    stored = json.loads(result.output)
    assert stored["name"] == "cli-export" and stored["trained_on"] == ["a.npy", "b.npy"]
    scorer = OnnxScorer(out, device="cpu")
    assert scorer.card.model_dump() == stored
    inputs = hub_inputs(120, 6)
    for got, want in zip(scorer(inputs), torch_scores(net, inputs)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_export_command_on_a_non_model_dir(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "not a trained model directory" in result.output
    assert not (tmp_path / "m.onnx").exists()
