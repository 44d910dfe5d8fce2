"""The array commands end to end on a small slice of real data: train -> cluster -> eval -> export."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.tasks import omniglot, subsample_classes
from qdrant_lander.cli import main

FAST = ["--set", "steps=60", "--set", "min_merge_ratios=[0.0]", "--set", "k_choices=[5,10]"]


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    d = tmp_path_factory.mktemp("arrays")
    task = omniglot()
    train, test = subsample_classes(task.train, 30), subsample_classes(task.test, 10)
    for name, arr in {"xtr": train.x, "ytr": train.y, "xte": test.x, "yte": test.y}.items():
        np.save(d / f"{name}.npy", arr)
    return d


@pytest.fixture(scope="module")
def model_dir(slices):
    out = slices / "model"
    result = CliRunner().invoke(main, ["train", str(slices / "xtr.npy"), str(slices / "ytr.npy"), "--out", str(out),
                                       "--name", "cli-test", "--json", *FAST])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["name"] == "cli-test" and 0 < card["tau"] < 1
    assert (out / "model.onnx").is_file()
    return out


def test_cluster_writes_labels_and_levels(slices, model_dir):
    out, levels = slices / "pred.npy", slices / "levels.npy"
    result = CliRunner().invoke(main, ["cluster", str(slices / "xte.npy"), "--out", str(out), "--model", str(model_dir),
                                       "--levels-out", str(levels), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    labels, paths = np.load(out), np.load(levels)
    assert labels.shape == (200,) and paths.shape == (200, summary["levels"])
    np.testing.assert_array_equal(paths[:, -1], labels)
    assert summary["clusters"] == len(np.unique(labels))
    assert (labels[labels] == labels).all()  # a cluster id is the row of its peak, which is in its own cluster


def test_eval_reports_scores_as_json(slices, model_dir):
    result = CliRunner().invoke(main, ["eval", str(slices / "xte.npy"), str(slices / "yte.npy"), "--model",
                                       str(model_dir / "model.onnx"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0 <= report["fp"] <= 1 and 0 <= report["fb"] <= 1 and report["n_classes"] == 10
    assert report["fp"] > 0.2  # 10 unseen characters: far better than chance even for a tiny model


def test_export_round_trips_the_card(slices, model_dir):
    out = slices / "again.onnx"
    result = CliRunner().invoke(main, ["export", str(model_dir), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "cli-test"


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda d: ["eval", str(d / "xte.npy"), str(d / "ytr.npy")], "labels have length"),
        (lambda d: ["cluster", str(d / "bad.npy"), "--out", str(d / "p.npy")], "NaN or inf"),
        (lambda d: ["cluster", str(d / "tiny.npy"), "--out", str(d / "p.npy")], "at least 11 points"),
        (lambda d: ["train", str(d / "xtr.npy"), str(d / "ytr.npy"), "--out", str(d / "m2"), "--set", "stepz=3"],
         "invalid training options"),
    ],
)
def test_bad_input_is_one_clear_line(slices, model_dir, args, message):
    x = np.load(slices / "xte.npy")
    bad = x.copy()
    bad[3, 0] = np.nan
    np.save(slices / "bad.npy", bad)
    np.save(slices / "tiny.npy", x[:5])
    cmd = args(slices)
    if cmd[0] in ("eval", "cluster"):
        cmd += ["--model", str(model_dir)]
    result = CliRunner().invoke(main, cmd)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_model_for_another_dimension_is_refused(slices, tmp_path):
    from qdrant_lander import Lander
    from qdrant_lander.errors import InputError

    x, y = np.load(slices / "xtr.npy"), np.load(slices / "ytr.npy")
    lander = Lander().fit(x, y, out_dir=tmp_path / "emb", progress=False, node_mode="embedding", steps=3,
                          taus=[0.5], min_merge_ratios=[0.0], k_choices=[5])
    assert lander.card.input_dim == 64
    with pytest.raises(InputError, match="trained for dimension 64"):
        lander.predict(np.random.default_rng(0).normal(size=(50, 32)))
