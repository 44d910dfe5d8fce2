"""Domain presets of the default model: what they change, where they are refused, and that they help."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.tasks import lfw_half, orl_to_lfw, subsample_classes
from qdrant_lander import Lander, score
from qdrant_lander.cli import main
from qdrant_lander.config import load_settings
from qdrant_lander.domains import DOMAINS, load_presets, with_domain
from qdrant_lander.errors import InputError


@pytest.fixture(scope="module")
def few_faces():
    """30 people of the LFW test identities (56 faces): a small photo library the default model never saw."""
    return subsample_classes(lfw_half().test, 30, seed=0)


def test_every_domain_has_a_preset_for_the_shipped_model_and_changes_only_the_decoding():
    base = Lander().card
    presets = load_presets()
    assert set(presets) == set(DOMAINS) - {"any"}
    decoding = {"k", "tau", "min_merge_ratio", "min_support", "tau_bias"}
    for domain, preset in presets.items():
        assert preset.model == base.name and "held-out" in preset.chosen_on
        card = Lander(domain=domain).card
        assert (card.k, card.tau, card.min_support) == (preset.k, preset.tau, preset.min_support)
        assert card.model_dump(exclude=decoding) == base.model_dump(exclude=decoding)
    assert Lander(domain="any").card == base
    assert presets["faces"].tau > presets["text"].tau  # the reason presets exist: faces need a far higher tau


def test_unknown_domain_and_other_models_are_refused(tmp_path):
    with pytest.raises(InputError, match="unknown domain 'photos'"):
        Lander(domain="photos")
    with pytest.raises(InputError, match="default model"):
        Lander(tmp_path, domain="faces")  # any model of one's own, a calibrated copy of the default included
    other = Lander().card.model_copy(update={"name": "lander-custom"})
    with pytest.raises(InputError, match="calibrate"):
        with_domain(other, "faces")
    assert with_domain(other, "any") is other
    assert load_settings({}, environ={"QLANDER_DOMAIN": "faces"}).domain == "faces"
    with pytest.raises(InputError, match="domain"):
        load_settings({}, environ={"QLANDER_DOMAIN": "photos"})


def test_the_faces_preset_keeps_a_small_face_library_apart(few_faces):
    """With its one-for-all tau the default model merges 30 people into one or two clusters."""
    anyway = score(few_faces.y, Lander().predict(few_faces.x).labels)
    faces = score(few_faces.y, Lander(domain="faces").predict(few_faces.x).labels)
    assert anyway.n_clusters <= 3 and anyway.fp < 0.4
    assert faces.n_clusters >= 20 and faces.fp > 0.85


def test_cli_domain_option(tmp_path, few_faces):
    np.save(tmp_path / "x.npy", few_faces.x)
    np.save(tmp_path / "y.npy", few_faces.y)
    args = ["eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json"]
    anyway = CliRunner().invoke(main, args)
    faces = CliRunner().invoke(main, [*args, "--domain", "faces"])
    assert anyway.exit_code == 0 and faces.exit_code == 0, faces.output
    assert json.loads(faces.stdout)["n_clusters"] > json.loads(anyway.stdout)["n_clusters"]


def test_one_cluster_is_reported_with_a_hint(caplog):
    """ORL's 40 people (never seen by the default model) all fall into one cluster under `any`: say so."""
    orl = orl_to_lfw().train
    with caplog.at_level("WARNING", logger="qdrant_lander.lander"):
        assert Lander().predict(orl.x).n_clusters == 1
    assert "one cluster" in caplog.text and "--domain" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="qdrant_lander.lander"):
        assert score(orl.y, Lander(domain="faces").predict(orl.x).labels).fp > 0.95
    assert "one cluster" not in caplog.text
