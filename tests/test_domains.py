"""Domain presets of the default model: what they change, where they are refused, that they help, and
that ``auto`` picks the right one without being told."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.tasks import (classes_of_at_least, clinc_75_75, clinc_to_banking, lfw_half, omniglot, orl_to_lfw,
                             subsample_classes, thin_classes)
from qdrant_lander import Lander, score
from qdrant_lander.cli import main
from qdrant_lander.config import load_settings
from qdrant_lander.domains import (DOMAINS, FAR_PROFILE, load_presets, nearest_preset, space_profile,
                                   space_spread, with_domain)
from qdrant_lander.errors import InputError


@pytest.fixture(scope="module")
def few_faces():
    """30 people of the LFW test identities (56 faces): a small photo library the default model never saw."""
    return subsample_classes(lfw_half().test, 30, seed=0)


def test_every_domain_has_a_preset_for_the_shipped_model_and_changes_only_the_decoding():
    base = Lander().card
    presets = load_presets()
    assert set(presets) == set(DOMAINS) - {"any", "auto"}
    decoding = {"k", "tau", "min_merge_ratio", "min_support", "tau_bias"}
    for domain, preset in presets.items():
        assert preset.model == base.name and "held-out" in preset.chosen_on
        card = Lander(domain=domain).card
        assert (card.k, card.tau, card.min_support) == (preset.k, preset.tau, preset.min_support)
        assert card.model_dump(exclude=decoding) == base.model_dump(exclude=decoding)
    assert Lander(domain="any").card == base == Lander(domain="auto").card  # auto: unresolved until data comes
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
    anyway = score(few_faces.y, Lander(domain="any").predict(few_faces.x).labels)
    faces = Lander(domain="faces").predict(few_faces.x).labels
    assert anyway.n_clusters <= 3 and anyway.fp < 0.4
    assert score(few_faces.y, faces).n_clusters >= 20 and score(few_faces.y, faces).fp > 0.85
    np.testing.assert_array_equal(Lander().predict(few_faces.x).labels, faces)  # auto: the same, unasked


def test_cli_domain_option(tmp_path, few_faces):
    np.save(tmp_path / "x.npy", few_faces.x)
    np.save(tmp_path / "y.npy", few_faces.y)
    args = ["eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json"]
    anyway = CliRunner().invoke(main, [*args, "--domain", "any"])
    faces = CliRunner().invoke(main, [*args, "--domain", "faces"])
    auto = CliRunner().invoke(main, args)
    assert anyway.exit_code == 0 and faces.exit_code == 0 and auto.exit_code == 0, auto.output
    assert json.loads(faces.stdout)["n_clusters"] > json.loads(anyway.stdout)["n_clusters"]
    assert json.loads(auto.stdout)["domain"] == "faces" and json.loads(anyway.stdout)["domain"] == "any"
    presets = load_presets()  # the tau each decoded with: the preset's, or the model's own under `any`
    assert json.loads(faces.stdout)["tau"] == presets["faces"].tau != json.loads(anyway.stdout)["tau"]
    assert json.loads(auto.stdout)["n_clusters"] == json.loads(faces.stdout)["n_clusters"]


def test_one_cluster_is_reported_with_a_hint(caplog):
    """ORL's 40 people (never seen by the default model) nearly all fall into one cluster under `any` (v2
    splits 10 of the 400 faces off): say so."""
    orl = orl_to_lfw().train
    with caplog.at_level("WARNING", logger="qdrant_lander.lander"):
        labels = Lander(domain="any").predict(orl.x).labels
    assert np.unique(labels, return_counts=True)[1].max() >= 0.9 * len(labels)
    assert "of 400 points fell into one cluster" in caplog.text and "--domain" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="qdrant_lander.lander"):
        assert score(orl.y, Lander(domain="faces").predict(orl.x).labels).fp > 0.95
    assert "one cluster" not in caplog.text


def test_all_singletons_are_reported_with_a_hint(caplog):
    """Isotropic Gaussian blobs in 128 dimensions, far apart: the model trusts no link (every neighbour about as
    near as any other), and a user's first check with such data must say so rather than return 500 singletons."""
    rng = np.random.RandomState(0)
    centres = rng.uniform(-10, 10, size=(5, 128))
    x = (centres[np.arange(500) % 5] + rng.normal(size=(500, 128))).astype(np.float32)
    with caplog.at_level("WARNING", logger="qdrant_lander.lander"):
        labels = Lander(domain="text").predict(x).labels
    alone = int((np.unique(labels, return_counts=True)[1] == 1).sum())
    assert alone >= 450 and f"{alone} of 500 points are clusters of their own" in caplog.text
    assert "isotropic blobs" in caplog.text and "--domain" in caplog.text and "one cluster" not in caplog.text


@pytest.mark.parametrize("part, expected", [
    (lambda: clinc_75_75().test, "text"), (lambda: clinc_to_banking().test, "text"),
    (lambda: omniglot().test, "characters"), (lambda: lfw_half().test, "faces"), (lambda: orl_to_lfw().train, "faces")])
@pytest.mark.parametrize("classes", [2, 10, None])
def test_auto_names_the_domain_of_unseen_classes_and_sets_however_many_classes(part, expected, classes):
    """Test parts (classes the presets never saw), Banking77 and ORL (sets they never saw), from 2 classes up:
    few classes put many pairs inside one class, which must not move the choice."""
    p = part()
    x = (p if classes is None else subsample_classes(p, classes, seed=0)).x
    domain, distance = nearest_preset(space_profile(x))
    assert domain == expected and distance < FAR_PROFILE
    assert Lander().for_data(x).domain == expected


def test_auto_warns_about_a_space_unlike_the_three(caplog):
    """Random points around a common direction, unrelated pairs near cosine 0.35: half-way between the text
    and the characters spaces, near neither (their pairs spread as tightly as text's, which decides)."""
    x = np.random.default_rng(0).standard_normal((500, 768)).astype(np.float32) + 0.73
    with caplog.at_level("WARNING", logger="qdrant_lander.lander"):
        assert Lander().for_data(x / np.linalg.norm(x, axis=1, keepdims=True)).domain == "text"
    assert "resemble none" in caplog.text and "calibrate" in caplog.text


@pytest.mark.parametrize("offset", [1.0, 2.0])
def test_auto_sees_text_through_a_common_direction(offset, caplog):
    """Many text encoders add one direction to every vector (unrelated texts near cosine 0.5-0.8): the
    quantiles then read faces or characters, whose decoding merges intents (0.44 Fp at offset 2 against
    0.74); the spread of the pairs is that of text, and decides."""
    intents = clinc_75_75().test
    u = np.random.default_rng(0).standard_normal(intents.x.shape[1]).astype(np.float32)
    x = intents.x + offset * u / np.linalg.norm(u)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    profile = space_profile(x)
    assert profile.cosine_q10 > 0.45 and abs(profile.spread - space_profile(intents.x).spread) < 0.03
    with caplog.at_level("WARNING", logger="qdrant_lander.lander"):
        assert Lander().for_data(x).domain == "text"
    assert "resemble none" in caplog.text  # the offset is still unlike MiniLM's own space: say so
    small = thin_classes(intents, 10).x + offset * u / np.linalg.norm(u)
    assert Lander().for_data(small / np.linalg.norm(small, axis=1, keepdims=True)).domain == "text-small"


def test_space_spread_is_the_profiles_spread_without_the_neighbour_search():
    x = omniglot().test.x
    assert space_spread(x) == space_profile(x).spread  # what tau_by_spread reads equals what `auto` logs
    assert space_spread(x, seed=1) == space_profile(x, seed=1).spread != space_spread(x)  # the seed draws the pairs


def test_space_profile_reads_neighbours_in_blocks_and_survives_tiny_or_degenerate_input():
    x = subsample_classes(omniglot().test, 10, seed=0).x  # 200 points, 20 per class
    whole, blocked = space_profile(x), space_profile(x, block=7)  # 7 rows at a time: rows span blocks
    assert whole == blocked
    g = np.sort(x @ x.T, axis=1)[:, ::-1][:, 1:11]  # exact 10 nearest of every point (self excluded)
    full = np.median((g[:, -1] - whole.cosine_median) / (g[:, 0] - whole.cosine_median))
    assert abs(whole.extent - full) < 0.05  # 200 of 200 points sampled: the same up to the median's pick
    for blob in (x[:2], np.repeat(x[:1], 30, axis=0)):  # no neighbour nearer than a random point
        assert space_profile(blob).extent == 0.0


def test_auto_takes_the_small_class_preset_for_small_classes_and_it_pays():
    """Intents of 10 queries: the text preset (chosen on intents of 150) merges them; text-small does not."""
    intents = thin_classes(clinc_75_75().test, 10)
    x, y = intents.x, intents.y
    assert nearest_preset(space_profile(x))[0] == "text-small"
    assert nearest_preset(space_profile(thin_classes(omniglot().test, 3).x))[0] == "characters-small"
    auto = score(y, Lander().predict(x).labels).fp
    assert auto > score(y, Lander(domain="text").predict(x).labels).fp + 0.1
    assert auto == score(y, Lander(domain="text-small").predict(x).labels).fp


def test_auto_takes_the_large_class_preset_for_a_photo_library():
    """People with 10+ photos each (LFW test identities): the faces preset, chosen on LFW's people of 1-3
    faces, splits them; faces-large keeps them whole. ORL (10 photos each) stays on faces."""
    people = classes_of_at_least(lfw_half().test, 10)
    x, y = people.x, people.y
    assert nearest_preset(space_profile(x))[0] == "faces-large"
    assert nearest_preset(space_profile(orl_to_lfw().train.x))[0] == "faces"
    auto = score(y, Lander().predict(x).labels).fp
    assert auto > score(y, Lander(domain="faces").predict(x).labels).fp + 0.1 and auto > 0.9


def test_the_shipped_file_named_by_its_path_is_the_default_model(few_faces):
    """It was taken for a model of one's own: no presets, `auto` kept the one-for-all tau (ORL faces: Fp 0.05
    against 0.98), and domain='faces' was refused."""
    from qdrant_lander.runtime import default_model_path

    named = Lander(default_model_path())
    assert named.model is None and Lander(str(default_model_path()), domain="faces").card == Lander(domain="faces").card
    np.testing.assert_array_equal(named.predict(few_faces.x).labels, Lander().predict(few_faces.x).labels)


def test_auto_leaves_other_models_their_own_decoding(tmp_path):
    lander = Lander().calibrate(*_orl_sample(), out_dir=tmp_path)  # a model of one's own
    assert lander.domain == "auto" and lander.for_data(orl_to_lfw().train.x).domain == "any"
    assert lander.for_data(orl_to_lfw().train.x).card == lander.card


def _orl_sample():
    orl = subsample_classes(orl_to_lfw().train, 10, seed=0)
    return orl.x, orl.y


def test_a_lander_that_has_clustered_can_be_pickled_and_clusters_alike(few_faces):
    """joblib and multiprocessing pickle it; the onnxruntime session it caches could not be."""
    import copy
    import pickle

    lander = Lander(domain="faces")
    labels = lander.predict(few_faces.x).labels
    for clone in (pickle.loads(pickle.dumps(lander)), copy.deepcopy(lander)):
        np.testing.assert_array_equal(clone.predict(few_faces.x).labels, labels)
    assert lander._scorer is not None  # pickling did not drop the original's session


def test_predict_graph_refuses_vectors_and_similarities_it_would_cluster_wrong(few_faces):
    from qdrant_lander.knn import knn_graph
    from qdrant_lander.validate import check_embeddings

    x = check_embeddings(few_faces.x)
    lander = Lander(domain="faces")
    graph = knn_graph(x, lander.card.k)
    with pytest.raises(InputError, match="not finite rows of unit length .* lengths \\[5.0"):
        lander.predict_graph(x * 5, graph)  # Fp 0.98 -> 0.62, silently
    nan = x.copy()
    nan[3, 0] = np.nan
    with pytest.raises(InputError, match="first rows: \\[3\\]"):
        lander.predict_graph(nan, graph)
    graph.sim[0, 0] = np.nan
    with pytest.raises(InputError, match="1 kNN similarities are NaN"):  # 400 singletons, silently
        lander.predict_graph(x, graph)


def test_resolving_a_domain_shares_the_loaded_model():
    """A daemon resolves auto at every full pass: each resolution must reuse one onnxruntime session."""
    auto = Lander()
    faces, text = auto.for_domain("faces"), auto.for_domain("text")
    assert faces.scorer._session is auto.scorer._session is text.scorer._session
    assert (faces.card.tau, text.card.tau) == (load_presets()["faces"].tau, load_presets()["text"].tau)
    assert auto.card == Lander(domain="any").card  # the shared model's own card is left as it was
