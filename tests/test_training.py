"""Meta-training on a small real subset: the loss falls, seeds reproduce, tau comes from held-out
classes, a saved model rebuilds exactly, and the structure-only model ignores the embedding's axes."""

import numpy as np
import pytest
import torch

from benchmarks.tasks import TASKS, subsample_classes
from qdrant_lander import Lander
from qdrant_lander.decode import cluster_hierarchy
from qdrant_lander.errors import InputError, ModelError
from qdrant_lander.features import level_inputs
from qdrant_lander.knn import knn_graph
from qdrant_lander.metrics import score
from qdrant_lander.model_card import packaged_file
from qdrant_lander.training.episodes import CandidateNeighbours, level_graphs, nearest_classes, sample_episode
from qdrant_lander.training.evaluate import TorchScorer, auc, parent_precision
from qdrant_lander.training.model import LanderNet, NetConfig
from qdrant_lander.training.gt import GroundTruthScorer
from qdrant_lander.training.tau import DecodeChoice, choose_tau_bias, pick
from qdrant_lander.training.trainer import (DEFAULT_WEIGHTS, MODEL_FILE, TrainConfig, _balanced_bce, _fold_classes,
                                           episode_loss, load_trained, parent_loss, train, train_best)
from torch_geometric.data import Batch

torch.set_num_threads(1)
SMALL = dict(steps=60, hidden=16, k_choices=[10, 20], train_levels=2, decode_k=[5], taus=[0.3, 0.5, 0.7],
             min_merge_ratios=[0.0], lr=5e-3, folds=1)


@pytest.fixture(scope="module")
def omni():
    part = subsample_classes(TASKS["omniglot"]().train, 40, seed=1)
    return part.x, part.y


@pytest.fixture(scope="module")
def trained(omni):
    return train(*omni, TrainConfig(**SMALL, seed=3), progress=False, name="t", trained_on=["omniglot[40]"])


def _inputs(x, k=5):
    n = len(x)
    return level_inputs(knn_graph(x, k), peak=x, mean=x, size=np.ones(n, np.int64), peak_index=np.arange(n),
                        node_mode="structure")


def test_loss_decreases(omni, trained):
    x, y = omni
    batch = Batch.from_data_list(level_graphs(x, y, 8, node_mode="structure", max_levels=2))
    config = TrainConfig(**SMALL)
    torch.manual_seed(0)
    untrained = LanderNet(trained.net.config)
    with torch.no_grad():
        before, after = episode_loss(untrained, batch, config), episode_loss(trained.net, batch, config)
    assert after < 0.7 * before


def test_same_seed_same_weights_other_seed_differs(omni, trained):
    again = train(*omni, TrainConfig(**SMALL, seed=3), progress=False, name="t", trained_on=["omniglot[40]"])
    other = train(*omni, TrainConfig(**SMALL | {"steps": 3}, seed=4), progress=False, name="t")
    a, b, c = trained.net.state_dict(), again.net.state_dict(), other.net.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)
    drop = {"notes": {"train_seconds", "choose_seconds"}}
    assert again.card.model_dump(exclude=drop) == trained.card.model_dump(exclude=drop)


def test_train_best_keeps_the_recipe_that_clusters_the_heldout_classes_best(omni, trained):
    """The kept model is the one the same config trains alone, the best by held-out (Fp, Fb), ties to the earlier."""
    short = TrainConfig(**SMALL | {"steps": 2}, seed=3)
    alone = [trained, train(*omni, short, progress=False, name="t")]
    keys = [(m.card.notes["heldout_fp"], m.card.notes["heldout_fb"]) for m in alone]
    want = 1 if keys[1] > keys[0] else 0
    best = train_best(*omni, [trained.config, short], progress=False, name="t")
    a, b = best.net.state_dict(), alone[want].net.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert best.config == alone[want].config and best.card.notes["recipe_chosen"] == want
    assert best.card.notes["heldout_fp_fb_per_recipe"] == " ".join(f"{fp:.4f}/{fb:.4f}" for fp, fb in keys)
    with pytest.raises(InputError, match="one seed"):
        train_best(*omni, [short, short.model_copy(update={"seed": 4})], progress=False)


def test_tau_is_chosen_on_heldout_classes_and_stored(omni, trained):
    held_classes = {c.n_classes for c in trained.decode_grid}
    assert held_classes == {10}  # 25% of 40 training classes, never the classes trained on
    assert trained.card.tau == pick(trained.decode_grid).tau and trained.card.k == 5
    assert 0 < trained.card.notes["heldout_density_corr"] <= 1 and trained.card.notes["heldout_classes"] == 10
    assert 0.5 < trained.card.notes["heldout_parent_precision"] <= 1  # the decoder's picks, next to cosine's
    assert 0 < trained.card.notes["heldout_cosine_parent_precision"] <= 1
    assert trained.card.input_dim == "any" and trained.card.trained_on == ["omniglot[40]"]


def test_a_small_set_chooses_on_every_class_once_over_folds(omni):
    """800 points (< SMALL_SET_POINTS) train 4 folds by default: four models each choose on the classes they did
    not see (together: all 40, once each), the choice is the grid's best on their mean held-out Fp, and the
    first fold's model is kept."""
    m = train(*omni, TrainConfig(**SMALL | {"folds": None}, seed=3), progress=False, name="t")
    size = len(m.decode_grid) // 4
    per_fold = [m.decode_grid[f * size:(f + 1) * size] for f in range(4)]
    assert sum(g[0].n_classes for g in per_fold) == 40 == m.card.notes["heldout_classes"]
    assert m.card.notes["folds"] == 4 and len(m.losses) == 4 * SMALL["steps"]
    card = (m.card.k, m.card.tau, m.card.min_support, m.card.absorb_share)
    at = [c for g in per_fold for c in g if (c.k, c.tau, c.min_support, c.absorb_share) == card]
    assert len(at) == 4 and m.card.notes["heldout_fp"] == round(float(np.mean([c.fp for c in at])), 4)
    kind = [i for i in range(size) if (per_fold[0][i].absorb_share > 0) == (m.card.absorb_share > 0)]  # apart
    assert m.card.notes["heldout_fp"] >= max(np.mean([g[i].fp for g in per_fold]) for i in kind) - 0.005
    held = _fold_classes(omni[1], 4, np.random.RandomState(3))[0]  # the trainer's first draw: fold 0's classes
    x0, y0 = omni[0][held], omni[1][held]
    labels = cluster_hierarchy(x0, knn_graph(x0, m.card.k), m.scorer(), m.card).labels
    assert score(y0, labels).fp == at[0].fp  # the kept model is the one that did not see fold 0
    with pytest.raises(InputError, match="25 folds need at least 50 classes"):
        train(*omni, TrainConfig(**SMALL | {"folds": 25}), progress=False)


def test_choosing_on_all_labeled_points_scores_the_kept_model_on_every_class(omni):
    """``choose_on='all'``: the decoding is the pick over the kept model's clusterings of every labeled point (seen
    classes too), not of the held-out ones; the same training otherwise (same weights, held-out figures noted)."""
    held = train(*omni, TrainConfig(**SMALL, seed=3), progress=False)
    m = train(*omni, TrainConfig(**SMALL, seed=3, choose_on="all"), progress=False)
    for a, b in zip(held.net.state_dict().values(), m.net.state_dict().values()):
        assert torch.equal(a, b)
    assert all(c.n_classes == 40 for c in m.decode_grid)  # every class, not the held-out quarter
    assert (m.card.k, m.card.tau, m.card.min_support) == (lambda c: (c.k, c.tau, c.min_support))(pick(m.decode_grid))
    assert m.card.notes["chosen_on"] == "all" and m.card.notes["heldout_fp"] == held.card.notes["heldout_fp"]
    x = omni[0]
    labels = cluster_hierarchy(x, knn_graph(x, m.card.k), m.scorer(), m.card).labels
    assert score(omni[1], labels).fp == pytest.approx(m.card.notes["all_fp"], abs=1e-4)


def test_plateau_pick_takes_the_middle():
    grid = [DecodeChoice(node_mode="structure", tau=t, k=10, fp=fp, fb=fp, n_clusters=1, n_classes=1,
                         n_levels=1) for t, fp in [(0.1, 0.5), (0.3, 0.9), (0.5, 0.9), (0.7, 0.898), (0.9, 0.4)]]
    assert pick(grid).tau == 0.5


def test_saved_model_rebuilds_identically(omni, trained, tmp_path):
    trained.save(tmp_path, onnx=False)
    loaded = load_trained(tmp_path)
    assert loaded.card == trained.card and loaded.net.config == trained.net.config
    inp = _inputs(omni[0])
    for got, want in zip(TorchScorer(loaded.net)(inp), TorchScorer(trained.net)(inp)):
        np.testing.assert_array_equal(got, want)


def _shipped_weights() -> dict:
    return torch.load(packaged_file(DEFAULT_WEIGHTS, "default model weights"), weights_only=True)


def test_the_shipped_torch_weights_are_the_shipped_onnx_model(omni):
    """init='default' must start from the model users get served, not from another one."""
    blob = _shipped_weights()
    net = LanderNet(NetConfig(**blob["net_config"]))
    net.load_state_dict(blob["state_dict"])
    net.eval()
    inp = _inputs(omni[0])
    for got, want in zip(Lander().scorer(inp), TorchScorer(net)(inp)):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_init_default_fine_tunes_the_universal_weights(omni):
    """A near-zero learning rate leaves the weights where init put them; without init they start elsewhere."""
    options = SMALL | {"hidden": 64, "steps": 1, "lr": 1e-12, "weight_decay": 0.0}
    tuned = train(*omni, TrainConfig(**options, init="default"), progress=False).net.state_dict()
    fresh = train(*omni, TrainConfig(**options), progress=False).net.state_dict()
    shipped = _shipped_weights()["state_dict"]
    for key, value in shipped.items():
        np.testing.assert_allclose(tuned[key].numpy(), value.numpy(), atol=1e-6)
    assert not all(torch.allclose(fresh[key], value) for key, value in shipped.items())


def test_init_refuses_weights_of_another_network_shape(omni):
    with pytest.raises(InputError, match="init: .*network"):
        train(*omni, TrainConfig(**SMALL | {"steps": 1}, init="default"), progress=False)  # hidden 16, not 64


def test_structure_model_is_blind_to_rotations_of_the_space(omni, trained):
    x = omni[0]
    q, _ = np.linalg.qr(np.random.RandomState(0).randn(x.shape[1], x.shape[1]))
    a, b = TorchScorer(trained.net)(_inputs(x)), TorchScorer(trained.net)(_inputs((x @ q).astype(np.float32)))
    np.testing.assert_allclose(a[0], b[0], atol=1e-4)


def test_density_is_derived_from_links(trained, omni):
    inp = _inputs(omni[0])
    link, density = TorchScorer(trained.net)(inp)
    np.testing.assert_allclose(density, (inp.sim * (2 * link - 1)).mean(axis=1), atol=1e-6)
    assert (link >= 0).all() and (link <= 1).all()


@pytest.mark.parametrize("depth", [12, 3])  # 3 < k: every row's neighbours come from the exact search
def test_episode_graph_matches_exact_knn_and_batches_with_offsets(omni, depth):
    x, y = omni
    keep = np.isin(y, np.unique(y)[:5])
    got, want = CandidateNeighbours(x, depth=depth).subgraph(keep, 5), knn_graph(x[keep], 5)
    np.testing.assert_array_equal(got.nbr, want.nbr)
    np.testing.assert_allclose(got.sim, want.sim, atol=1e-6)
    levels = level_graphs(x[keep], y[keep], 5, node_mode="structure", max_levels=2)
    batch = Batch.from_data_list(levels)
    n0 = levels[0].num_nodes
    assert batch.nbr_index.shape == (sum(g.num_nodes for g in levels), 5)
    assert torch.equal(batch.nbr_index[n0:], levels[1].nbr_index + n0)


def test_gt_levels_are_the_decoded_levels(omni):
    x, y = omni
    levels = level_graphs(x, y, 5, node_mode="structure", max_levels=3)
    assert levels[0].num_nodes == len(x) and levels[1].num_nodes < len(x)
    assert levels[0].link.mean() > levels[-1].link.mean()  # higher levels: mostly other-class neighbours


def test_balanced_bce_weighs_classes_equally():
    logits = torch.tensor([[2.0, 2.0, 2.0, -1.0]])
    target = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    pos = torch.nn.functional.softplus(torch.tensor(-2.0))
    neg = torch.nn.functional.softplus(torch.tensor(-1.0))
    assert torch.isclose(_balanced_bce(logits, target), 0.5 * pos + 0.5 * neg)


def test_nearest_classes_are_the_anchors_look_alikes():
    rng = np.random.RandomState(0)
    # Classes 0-3 sit around one direction, 4-7 around another: an anchor's 3 nearest share its group.
    group = np.repeat([0, 0, 0, 0, 1, 1, 1, 1], 5)
    y = np.repeat(np.arange(8), 5)
    x = np.eye(16)[group * 8] + 0.1 * rng.standard_normal((40, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cands = CandidateNeighbours(x, depth=8)
    means = cands.class_means(y, np.arange(8))
    np.testing.assert_allclose(means[2], x[y == 2].mean(0) / np.linalg.norm(x[y == 2].mean(0)), rtol=1e-5)
    assert cands.class_means(y, np.arange(8)) is means  # kept for the next episode on the same labels
    assert cands.class_means(y.copy(), np.arange(8)) is not means
    for _ in range(10):
        chosen = nearest_classes(means, np.arange(8), 4, rng)
        assert len(set(chosen.tolist())) == 4 and len(set((chosen // 4).tolist())) == 1


def test_parent_loss_scores_the_pick_among_denser_neighbours():
    nbr = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    density = torch.tensor([0.0, 1.0, 2.0, -1.0])
    link = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # Node 0 picks between 1 (same class) and 2 (not); node 1's only denser neighbour is right; node 2 has
    # none denser and node 3 no same-class one: neither counts.
    flat = parent_loss(torch.zeros(4, 3), density, nbr, link)
    assert torch.isclose(flat, torch.log(torch.tensor(2.0)) / 2)
    wrong = torch.zeros(4, 3)
    wrong[0, 1] = 10.0  # node 0 would follow its other-class neighbour
    assert parent_loss(wrong, density, nbr, link) > 4.9
    ignored = torch.zeros(4, 3)
    ignored[0, 2] = ignored[2, 0] = ignored[3, 0] = 10.0  # a less dense neighbour, a peak, a node without a right parent
    assert torch.isclose(parent_loss(ignored, density, nbr, link), flat)


def test_auc_matches_definition():
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    t = np.array([0, 0, 1, 1, 1])
    pairs = [(a > b) + 0.5 * (a == b) for a in s[t == 1] for b in s[t == 0]]
    assert auc(s, t) == pytest.approx(np.mean(pairs))


def test_parent_precision_judges_only_the_edge_the_decoder_follows():
    y = np.array([0, 0, 0, 1])
    nbr = np.array([[1, 3], [2, 3], [1, 0], [2, 1]])
    density = np.array([0.0, 1.0, 2.0, 3.0])
    # Node 0 prefers its other-class denser neighbour 3, node 1 its same-class denser neighbour 2; node 2's high
    # score to the less dense node 1 is never followed (no denser neighbour: it does not count), node 3 is a peak.
    score = np.array([[0.2, 0.9], [0.9, 0.1], [0.99, 0.5], [0.5, 0.5]])
    assert parent_precision(score, density, nbr, y) == 0.5
    assert parent_precision((y[nbr] == y[:, None]).astype(float), density, nbr, y) == 1.0


def test_paper_head_and_embedding_mode_train(omni):
    x, y = omni
    m = train(x, y, TrainConfig(**SMALL | {"steps": 3}, head="paper", node_mode="embedding"), progress=False)
    assert m.card.input_dim == x.shape[1] and m.card.head == "paper"
    assert isinstance(m.net, LanderNet)


def test_pick_prefers_the_strictest_merge_support_among_equals():
    grid = [DecodeChoice(node_mode="structure", tau=t, k=10, min_support=s, fp=fp, fb=fp, n_clusters=1, n_classes=1,
                         n_levels=1) for s, t, fp in [(0, 0.3, 0.9), (0, 0.5, 0.9), (2, 0.3, 0.898), (2, 0.7, 0.8)]]
    chosen = pick(grid)
    assert chosen.min_support == 2 and chosen.tau == 0.3  # 0.898 is within tolerance; its plateau is tau 0.3 alone


def test_pick_takes_fragment_absorption_only_where_it_beats_the_plain_choice():
    def grid(rows):
        return [DecodeChoice(node_mode="structure", tau=t, k=10, absorb_share=a, fp=fp, fb=fp, n_clusters=1,
                             n_classes=1, n_levels=1) for a, t, fp in rows]
    plain = [(0, 0.3, 0.90), (0, 0.5, 0.90), (0, 0.7, 0.90)]
    # within tolerance of the plain best: absorption is not taken, and it does not narrow the plain plateau
    chosen = pick(grid(plain + [(0.1, 0.3, 0.904)]))
    assert (chosen.absorb_share, chosen.tau) == (0, 0.5)
    # clearly better: the absorbing settings are chosen among themselves, the smallest share among equals
    chosen = pick(grid(plain + [(0.1, 0.3, 0.95), (0.3, 0.3, 0.95), (0.1, 0.5, 0.6)]))
    assert (chosen.absorb_share, chosen.tau) == (0.1, 0.3)


def test_a_model_of_an_older_format_is_refused(trained, tmp_path):
    trained.save(tmp_path, onnx=False)
    blob = torch.load(tmp_path / MODEL_FILE, weights_only=True)
    blob["card"]["format_version"] = 1  # weights that read raw cosines: their links would be wrong today
    torch.save(blob, tmp_path / MODEL_FILE)
    with pytest.raises(ModelError, match="older qdrant-lander.*retrain"):
        load_trained(tmp_path)


def test_tau_bias_is_kept_only_when_a_per_dataset_tau_beats_the_fixed_one(omni):
    x, y = omni
    scorer = GroundTruthScorer(y)  # links are 0 or 1: every tau decodes alike, so every bias scores the same Fp
    sets = [(x, y), (x, y)]
    fixed = DecodeChoice(node_mode="structure", tau=0.5, k=10, fp=1.0, fb=1.0, n_clusters=40, n_classes=40, n_levels=1)
    bias, per_bias = choose_tau_bias(scorer, sets, fixed, [-1.0, 0.0])
    assert bias is None  # no better than the fixed tau: keep it
    assert list(per_bias) == [-1.0, 0.0] and per_bias[-1.0] == per_bias[0.0] > 0.9
    worse = fixed.model_copy(update={"fp": per_bias[0.0] - 0.1})
    assert choose_tau_bias(scorer, sets, worse, [-1.0, 0.0])[0] == -1.0  # beats it: the first of the equal biases


def test_class_size_fraction_thins_every_class_but_keeps_each_one(omni):
    x, y = omni
    cands = CandidateNeighbours(x)
    opts = dict(class_fraction=(1.0, 1.0), k_choices=[3], node_mode="structure", max_levels=1, max_points=None)
    full = sample_episode(cands, y, np.random.RandomState(0), **opts)
    thin = sample_episode(cands, y, np.random.RandomState(0), class_size_fraction=(0.1, 0.2), **opts)
    n_classes = np.unique(y).size  # all 40 classes are drawn; each keeps 10-20% of its points, at least one
    assert full.num_nodes == len(x) and n_classes <= thin.num_nodes < 0.35 * len(x)
    one_each = sample_episode(cands, y, np.random.RandomState(0), class_size_fraction=(0.0, 0.0), **opts)
    assert one_each.num_nodes == n_classes


def test_pseudo_class_size_is_a_quarter_of_the_median_class():
    from qdrant_lander.training.adapt import pseudo_class_size

    assert pseudo_class_size(np.repeat(np.arange(10), 20)) == 5  # Omniglot: 20 drawings a character
    assert pseudo_class_size(np.repeat([0, 1, 2], [150, 150, 40])) == 37
    assert pseudo_class_size(np.repeat(np.arange(5), 3)) == 2  # never single points


def test_pseudo_classes_are_the_models_clusters_of_the_minimum_size(omni, trained):
    """Every row of a cluster with min_size+ points is kept with its cluster id; every other row is left out."""
    from qdrant_lander.training.adapt import pseudo_classes

    x = omni[0] / np.linalg.norm(omni[0], axis=1, keepdims=True)
    labels = cluster_hierarchy(x, knn_graph(x, trained.card.k), TorchScorer(trained.net), trained.card).labels
    ids, counts = np.unique(labels, return_counts=True)
    min_size = int(np.median(counts)) + 1  # some clusters in, some out
    xp, yp = pseudo_classes(trained, x, min_size)
    kept = np.isin(labels, ids[counts >= min_size])
    assert 0 < kept.sum() < len(x)
    np.testing.assert_array_equal(xp, x[kept])
    np.testing.assert_array_equal(yp, labels[kept])


def test_fit_refuses_a_domain_preset_before_training():
    """A preset is a decoding of the shipped model: fit used to train and save a model that predict then refused."""
    x = np.random.RandomState(0).rand(40, 8).astype(np.float32)
    with pytest.raises(InputError, match="domain 'faces' selects a decoding of the shipped default model"):
        Lander(domain="faces").fit(x, np.repeat(np.arange(4), 10), steps=1)


def test_fit_without_the_exporter_stops_before_training(monkeypatch, tmp_path):
    """Without onnx_export, save logged a warning and left no model.onnx (or an older one, served under the new
    card): the model directory was unusable after the whole training."""
    import sys

    from qdrant_lander.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "onnx_export.export", None)
    x = np.random.RandomState(0).rand(40, 8).astype(np.float32)
    with pytest.raises(MissingExtraError, match=r'qdrant-lander\[cpu,train\]'):
        Lander().fit(x, np.repeat(np.arange(4), 10), out_dir=tmp_path / "m", steps=1)
    assert not (tmp_path / "m").exists()


def test_fit_names_copies_when_they_leave_too_few_classes():
    """Two classes of one repeated vector each, and one real class: after copies are set aside only one class has
    two distinct vectors. The message used to say 'needs at least 2 classes' of labels that held three."""
    rng = np.random.RandomState(0)
    x = np.vstack([np.tile(rng.rand(1, 8), (10, 1)), np.tile(rng.rand(1, 8), (10, 1)), rng.rand(10, 8)])
    with pytest.raises(InputError, match="labels have 3 classes, 1 of them with 2 or more, once the 18 rows that "
                                         "repeat an earlier row's vector are set aside"):
        Lander().fit(x.astype(np.float32), np.repeat(np.arange(3), 10), steps=1)


def test_load_trained_takes_the_directorys_calibrated_card(trained, tmp_path):
    """calibrate rewrites only card.json: load_trained read the card inside model.pt, and saving it again undid
    the calibration."""
    from qdrant_lander.model_card import CARD_FILE
    from qdrant_lander.training.trainer import load_trained

    trained.save(tmp_path)
    calibrated = trained.card.model_copy(update={"tau": 0.123})
    (tmp_path / CARD_FILE).write_text(calibrated.model_dump_json())
    assert load_trained(tmp_path).card.tau == 0.123


def test_tau_by_spread_keeps_each_sets_own_heldout_tau_and_spread(omni):
    """``tau_by_spread``: the card keeps, for each labeled set, its spread and the tau its own held-out classes chose
    at the card's other settings; the weights and the joint choice stay those of the same training without it."""
    from qdrant_lander.domains import space_profile

    text = subsample_classes(TASKS["clinc75"]().train, 40, seed=1)
    xs, ys = [omni[0], text.x], [omni[1], text.y]
    plain = train(xs, ys, TrainConfig(**SMALL, seed=3, node_mode="structure"), progress=False)
    m = train(xs, ys, TrainConfig(**SMALL, seed=3, node_mode="structure", tau_by_spread=True), progress=False)
    assert plain.card.tau_by_spread is None and m.card.tau == plain.card.tau and m.card.k == plain.card.k
    n = len(m.decode_grid) // 2  # one held-out split: the first set's grid, then the second's
    rest = (m.card.k, m.card.min_merge_ratio, m.card.min_support, m.card.absorb_share)
    for (spread, tau), x, grid in zip(m.card.tau_by_spread, xs, (m.decode_grid[:n], m.decode_grid[n:])):
        assert spread == round(space_profile(x).spread, 4)
        assert tau == pick([c for c in grid if (c.k, c.min_merge_ratio, c.min_support, c.absorb_share) == rest]).tau
    assert m.card.tau_by_spread[0][0] > m.card.tau_by_spread[1][0]  # characters spread unrelated points more than text
