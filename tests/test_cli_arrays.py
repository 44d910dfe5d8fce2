"""The array commands end to end on a small slice of real data: train -> cluster -> eval -> export."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.tasks import omniglot, subsample_classes
from qdrant_lander.cli import main

FAST = ["--set", "steps=60", "--set", "min_merge_ratios=[0.0]", "--set", "k_choices=[5,10]", "--set", "folds=1"]


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
                                       "--name", "cli-test", "--json", *FAST, "--try", "steps=2 hidden=8"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["name"] == "cli-test" and 0 < card["tau"] < 1
    assert len(card["notes"]["heldout_fp_fb_per_recipe"].split()) == 2  # the --try variant was trained and judged
    assert (out / "model.onnx").is_file()
    return out


def test_cluster_writes_labels_and_levels(slices, model_dir):
    out, levels = slices / "pred.labels", slices / "levels.npy"  # written under the names given (numpy adds .npy)
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
        (lambda d: ["cluster", str(d / "xte.npy"), "--out", str(d / "no" / "p.npy")], "the directory .*no does not exist"),
        (lambda d: ["train", str(d / "xtr.npy"), str(d / "ytr.npy"), "--out", str(d / "m2"), "--set", "stepz=3"],
         "not training options: stepz"),
        (lambda d: ["train", str(d / "xtr.npy"), str(d / "ytr.npy"), "--out", str(d / "m2"), "--set", "name=x"],
         "not training options: name .*the model's name is --name"),  # was a TypeError traceback
        (lambda d: ["train", str(d / "xtr.npy"), str(d / "ytr.npy"), "--out", str(d / "m2"), "--set", "k_choices=[0]"],
         "invalid training options.*k_choices.0"),  # was an IndexError traceback
        (lambda d: ["train", str(d / "xtr.npy"), str(d / "ytr.npy"), "--out", str(d / "m2"), "--set",
                    "class_fraction=[0.9,0.1]"], "class_fraction is a range"),
        (lambda d: ["train", str(d / "xtr.npy"), str(d / "ytr.npy"), "--out", str(d / "m2"), "--try", " "],
         "--try '' adds no option"),  # trained the --set recipe twice
        (lambda d: ["train", str(d / "xtr.npy"), str(d / "ytr.npy"), "--out", str(d / "m2"), "--try",
                    "confusable_share 0.5"], "--try expects KEY=VALUE, got 'confusable_share 0.5'"),
        (lambda d: ["calibrate", str(d / "xte.npy"), str(d / "each_own.npy"), "--out", str(d / "m3")],
         "calibration needs at least 2 classes with 2 or more distinct vectors each; the labels have 200 classes, "
         "0 of them"),  # wrote a model whose tau no label could have chosen
        (lambda d: ["cluster", str(d / "xte.npy"), "--out", str(d / "xte.npy")], "is an input of this command"),
        (lambda d: ["cluster", str(d / "xte.npy"), "--out", str(d / "p.npy"), "--levels-out", str(d / "p.npy")],
         "are one file"),
    ],
)
def test_bad_input_is_one_clear_line(slices, model_dir, args, message):
    x = np.load(slices / "xte.npy")
    bad = x.copy()
    bad[3, 0] = np.nan
    np.save(slices / "bad.npy", bad)
    np.save(slices / "tiny.npy", x[:5])
    np.save(slices / "each_own.npy", np.arange(len(x)))
    cmd = args(slices)
    if cmd[0] in ("eval", "cluster", "calibrate"):
        cmd += ["--model", str(model_dir)]
    before = (slices / "xte.npy").read_bytes()
    result = CliRunner().invoke(main, cmd)
    assert result.exit_code == 2, result.output
    assert re.search(message, result.output, re.S) and "Traceback" not in result.output
    assert (slices / "xte.npy").read_bytes() == before
    assert not (slices / "m2").exists() and not (slices / "m3").exists()


def test_a_try_recipe_may_hold_json_values_with_spaces():
    from qdrant_lander.cli.inputs import parse_try_option

    assert parse_try_option("taus=[0.3, 0.5] steps=800 head=paper") == {"taus": [0.3, 0.5], "steps": 800, "head": "paper"}


def test_files_that_are_not_one_npy_array_are_named_as_such(tmp_path):
    """numpy's own messages send users the wrong way (an .npz read as an array of shape (1,); text or a pickle
    "contains pickled data, use allow_pickle=")."""
    import pickle

    np.savez(tmp_path / "a.npz", x=np.ones((30, 4)), y=np.ones(30))
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(np.ones((30, 4))))
    (tmp_path / "t.csv").write_text("1,2,3\n")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 30, dtype=object), allow_pickle=True)
    for name, message in (("a.npz", "is an .npz archive \\(holding x, y\\); save the embeddings as one array"),
                          ("p.pkl", "p.pkl is not a .npy file; save the embeddings with numpy.save"),
                          ("t.csv", "t.csv is not a .npy file"),
                          ("obj.npy", "holds Python objects \\(dtype object\\), not numbers")):
        for args in (["cluster", str(tmp_path / name), "--out", str(tmp_path / "o.npy")],
                     ["import", "docs", str(tmp_path / name), "--path", str(tmp_path / "qd")]):  # import maps the file
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 2 and re.search(message, result.output), (args, result.output)
            assert "allow_pickle" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "qd").exists()


def test_model_for_another_dimension_is_refused(slices, tmp_path):
    from qdrant_lander import Lander
    from qdrant_lander.errors import InputError

    x, y = np.load(slices / "xtr.npy"), np.load(slices / "ytr.npy")
    lander = Lander().fit(x, y, out_dir=tmp_path / "emb", progress=False, node_mode="embedding", steps=3,
                          taus=[0.5], min_merge_ratios=[0.0], k_choices=[5])
    assert lander.card.input_dim == 64
    with pytest.raises(InputError, match="trained for dimension 64"):
        lander.predict(np.random.default_rng(0).normal(size=(50, 32)))


def test_calibrate_chooses_the_decoding_on_the_labels_and_the_directory_uses_it(slices, model_dir, tmp_path):
    """`calibrate` picks k/tau/support on the given labeled sample (the trainer's grid and rule) and
    writes a model directory whose card every command then uses; the weights are the same file."""
    from qdrant_lander import Lander
    from qdrant_lander.training.tau import choose_decoding

    out = tmp_path / "calibrated"
    result = CliRunner().invoke(main, ["calibrate", str(slices / "xte.npy"), str(slices / "yte.npy"), "--out",
                                       str(out), "--model", str(model_dir / "model.onnx"), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    before = Lander(model_dir / "model.onnx", device="cpu")
    x, y = np.load(slices / "xte.npy"), np.load(slices / "yte.npy")
    want, _ = choose_decoding(before.scorer, x / np.linalg.norm(x, axis=1, keepdims=True), y,
                              node_mode=before.card.node_mode, max_levels=before.card.max_levels)  # the trainer's grid
    got = (card["k"], card["tau"], card["min_support"], card["absorb_share"])
    assert got == (want.k, want.tau, want.min_support, want.absorb_share)
    assert card["name"] == f"cli-test+cal-k{want.k}-tau{want.tau:g}"  # payloads tell it from the model it copies
    assert card["notes"]["calibrated_points"] == 200 and card["notes"]["calibrated_fp"] == round(want.fp, 4)
    assert (out / "model.onnx").read_bytes() == (model_dir / "model.onnx").read_bytes()
    after = Lander(out, device="cpu")
    assert after.card.tau == want.tau and after.predict(x).tau == want.tau
    assert Lander(out / "model.onnx", device="cpu").card == after.card  # naming the file keeps the calibration
    pred = CliRunner().invoke(main, ["eval", str(slices / "xte.npy"), str(slices / "yte.npy"), "--model", str(out),
                                     "--json"])
    assert pred.exit_code == 0 and json.loads(pred.stdout)["fp"] == pytest.approx(want.fp, abs=1e-9)


def test_a_card_for_another_model_is_refused(slices, model_dir, tmp_path):
    import shutil

    from qdrant_lander import Lander
    from qdrant_lander.errors import ModelError

    shutil.copytree(model_dir, tmp_path / "m")
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    (tmp_path / "m" / "card.json").write_text(json.dumps({**card, "name": "someone-else"}))
    result = CliRunner().invoke(main, ["cluster", str(slices / "xte.npy"), "--out", str(tmp_path / "o.npy"),
                                       "--model", str(tmp_path / "m")])
    assert result.exit_code == 2 and "describes another model" in result.output
    with pytest.raises(ModelError, match="describes another model"):
        _ = Lander(tmp_path / "m", device="cpu").card  # loading the card refuses it


def test_train_adapts_to_unlabeled_vectors_of_the_space_to_cluster(slices, tmp_path):
    """--adapt-to trains again with the first model's clusters of the unlabeled vectors as extra classes:
    the second training holds out some of those classes too, so it sees more classes than the labels have."""
    out = tmp_path / "adapted"
    result = CliRunner().invoke(main, ["train", str(slices / "xtr.npy"), str(slices / "ytr.npy"), "--out", str(out),
                                       "--adapt-to", str(slices / "xte.npy"), "--json", *FAST])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert notes["adapted_to_points"] == 200 and notes["pseudo_classes"] >= 1
    assert 0 < notes["pseudo_class_points"] <= 200
    assert notes["heldout_classes"] > round(0.25 * 30)  # 30 labeled classes, a quarter held out, plus pseudo-classes


def test_train_refuses_bad_unlabeled_vectors_before_training(slices, tmp_path):
    bad = np.load(slices / "xte.npy")
    bad[7, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    result = CliRunner().invoke(main, ["train", str(slices / "xtr.npy"), str(slices / "ytr.npy"), "--out",
                                       str(tmp_path / "m"), "--adapt-to", str(tmp_path / "bad.npy")])
    assert result.exit_code == 2 and "NaN or inf" in result.output and "Traceback" not in result.output
    np.save(tmp_path / "narrow.npy", np.load(slices / "xte.npy")[:, :32])  # said "the model was trained for dimension 64": none was yet
    result = CliRunner().invoke(main, ["train", str(slices / "xtr.npy"), str(slices / "ytr.npy"), "--out",
                                       str(tmp_path / "m"), "--adapt-to", str(tmp_path / "narrow.npy")])
    assert result.exit_code == 2 and "to adapt to have dimension 32, the labeled embeddings 64" in result.output
    assert not (tmp_path / "m").exists()


def test_array_commands_take_the_model_settings_from_the_environment_and_a_config_file(slices, model_dir, tmp_path):
    """cluster / eval / calibrate read --model, --domain, --device, --threads as every command does:
    flag > QLANDER_* > TOML file."""
    run = CliRunner().invoke
    args = ["cluster", str(slices / "xte.npy"), "--out", str(tmp_path / "p.npy"), "--json"]
    by_env = run(main, args, env={"QLANDER_DOMAIN": "characters-small", "QLANDER_THREADS": "1"})
    assert by_env.exit_code == 0, by_env.output
    assert json.loads(by_env.stdout)["domain"] == "characters-small"
    (tmp_path / "c.toml").write_text(f'model = "{model_dir}"\n')
    by_file = run(main, ["eval", str(slices / "xte.npy"), str(slices / "yte.npy"), "--json", "--config",
                         str(tmp_path / "c.toml")])
    assert by_file.exit_code == 0 and json.loads(by_file.stdout)["model"] == "cli-test"
    missing = run(main, [*args, "--model", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope" in missing.output and "Traceback" not in missing.output


def test_export_keeps_the_directorys_calibration(model_dir, tmp_path):
    """calibrate --out into the model directory writes only card.json: export must carry that card, not the one
    inside model.pt (the exported file clustered at the old tau)."""
    import shutil

    cal = tmp_path / "cal"
    shutil.copytree(model_dir, cal)
    card = json.loads((cal / "card.json").read_text())
    (cal / "card.json").write_text(json.dumps({**card, "tau": 0.123}))
    result = CliRunner().invoke(main, ["export", str(cal), "--out", str(tmp_path / "m.onnx"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tau"] == 0.123


def test_a_model_directory_that_cannot_be_written_is_refused_before_the_work(slices, model_dir, tmp_path):
    """train, calibrate and export under a file used to run the whole training or calibration grid, then die in
    mkdir with a traceback: the work was lost."""
    blocker = tmp_path / "afile"
    blocker.write_text("")
    runs = {"train": ["train", str(slices / "xtr.npy"), str(slices / "ytr.npy"), "--out", str(blocker / "m"), *FAST],
            "calibrate": ["calibrate", str(slices / "xte.npy"), str(slices / "yte.npy"), "--model", str(model_dir),
                          "--out", str(blocker / "c")],
            "export": ["export", str(model_dir), "--out", str(blocker / "m.onnx")]}
    for name, args in runs.items():
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (name, result.output)
        assert "Error: cannot write" in result.output and "Traceback" not in result.output, (name, result.output)
    assert blocker.read_text() == ""


def test_calibrate_into_another_models_directory_carries_its_own_weights(slices, model_dir, tmp_path):
    """calibrate --out into a directory that held another trained model left that model's model.pt: export then
    wrote the other model's weights under the calibrated card. The weights now travel with the model they belong
    to, and a directory whose card names other weights is refused."""
    import shutil

    from qdrant_lander import Lander

    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    stale = (other / "model.pt").read_bytes()
    card = json.loads((other / "card.json").read_text())
    (other / "card.json").write_text(json.dumps({**card, "name": "another"}))  # a card for other weights
    result = CliRunner().invoke(main, ["export", str(other), "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "describes another model" in result.output
    assert not (tmp_path / "x.onnx").exists()

    Lander(model_dir, device="cpu").calibrate(np.load(slices / "xte.npy"), np.load(slices / "yte.npy"), out_dir=other)
    assert (other / "model.pt").read_bytes() == (model_dir / "model.pt").read_bytes()
    Lander(device="cpu").calibrate(np.load(slices / "xte.npy"), np.load(slices / "yte.npy"), out_dir=other)
    assert not (other / "model.pt").exists() and stale  # the shipped model has no model.pt in a directory
    assert Lander(other, device="cpu").card.name.startswith(Lander(device="cpu").card.name + "+cal-")


def test_the_saved_card_carries_the_exported_revision(model_dir):
    """card.json (the card in force) said revision 'unknown' while the ONNX file beside it named the commit."""
    from qdrant_lander.runtime import OnnxScorer

    on_disk = json.loads((model_dir / "card.json").read_text())
    in_file = OnnxScorer(model_dir / "model.onnx", device="cpu").card  # the file's own metadata, not card.json
    assert on_disk["revision"] == in_file.revision


def test_an_interrupted_calibration_leaves_no_empty_model_directory(slices, model_dir, tmp_path, monkeypatch):
    """The directory is made before the grid (to refuse a bad --out early); work that then fails (Ctrl-C here)
    must not leave it behind empty. A directory that existed before is the user's: it stays."""
    import qdrant_lander.training.tau as tau
    from qdrant_lander import Lander

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tau, "choose_decoding", interrupted)
    x, y = np.load(slices / "xte.npy"), np.load(slices / "yte.npy")
    with pytest.raises(KeyboardInterrupt):
        Lander(model_dir).calibrate(x, y, out_dir=tmp_path / "new" / "cal")
    assert not (tmp_path / "new" / "cal").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(KeyboardInterrupt):
        Lander(model_dir).calibrate(x, y, out_dir=tmp_path / "mine")
    assert (tmp_path / "mine").is_dir()
