"""Synthetic labeled sets and pre-training on them: the generator's knobs do what they say, it is seeded
and leaves the benchmarks' isotropic data unchanged; pre-training runs before the labeled steps and
teaches something that transfers to a real set."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch_geometric.data import Batch

from benchmarks.synthetic import synthetic
from benchmarks.tasks import TASKS, subsample_classes
from qdrant_lander.synthetic import SyntheticSpec, generate, random_spec
from qdrant_lander.training.episodes import level_graphs
from qdrant_lander.training.model import LanderNet
from qdrant_lander.training.trainer import TrainConfig, episode_loss, train

torch.set_num_threads(1)
TINY = {"hidden": 16, "k_choices": [5, 10], "train_levels": 2, "decode_k": [5], "taus": [0.3, 0.5, 0.7],
        "min_merge_ratios": [0.0], "min_supports": [0.0], "lr": 5e-3, "pretrain_sets": 2, "pretrain_points": 600,
        "folds": 1}


def _centres(x, y):
    c = np.stack([x[y == k].mean(axis=0) for k in np.unique(y)])
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def test_generate_is_seeded_unit_and_power_law():
    spec = SyntheticSpec(n=3000, dim=32, superclass_size=4, noise_rank=2, anisotropy=0.5, seed=5)
    x, y = generate(spec)
    again, other = generate(spec), generate(spec.model_copy(update={"seed": 6}))
    assert x.shape == (3000, 32) and x.dtype == np.float32 and y.shape == (3000,)
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert np.array_equal(x, again[0]) and np.array_equal(y, again[1]) and not np.array_equal(x, other[0])
    sizes = np.bincount(y)
    assert sizes.min() >= 2 and sizes.max() > 10 * np.median(sizes)  # a long tail and a few big classes


def test_benchmark_data_is_the_isotropic_setting():
    x, y = synthetic(2000, 16, seed=3)
    ref = generate(SyntheticSpec(n=2000, dim=16, seed=3))
    assert np.array_equal(x, ref[0]) and np.array_equal(y, ref[1])
    # the extra knobs draw from their own stream: labels and sizes stay the same
    assert np.array_equal(y, generate(SyntheticSpec(n=2000, dim=16, seed=3, superclass_size=5, noise_rank=4,
                                                    anisotropy=0.8))[1])


def test_superclasses_bring_nearest_classes_close():
    base = SyntheticSpec(n=4000, dim=64, min_size=20, spread=(0.3, 0.3), seed=1)
    nearest = []
    for size in (1.0, 6.0):
        c = _centres(*generate(base.model_copy(update={"superclass_size": size, "superclass_spread": (0.5, 0.5)})))
        s = c @ c.T
        np.fill_diagonal(s, -1)
        nearest.append(np.median(s.max(axis=1)))
    assert nearest[0] < 0.45 and nearest[1] > 0.7  # cosine of two siblings at offset 0.5: 1 / 1.25


def test_low_rank_noise_concentrates_a_class_variance():
    def top2_share(anisotropy):
        x, y = generate(SyntheticSpec(n=2000, dim=64, min_size=200, noise_rank=2, anisotropy=anisotropy, seed=2))
        big = x[y == np.bincount(y).argmax()]
        sv = np.linalg.svd(big - big.mean(axis=0), compute_uv=False) ** 2
        return sv[:2].sum() / sv.sum()

    assert top2_share(0.0) < 0.15 and top2_share(0.9) > 0.7


def test_random_specs_are_seeded_and_varied():
    a = [random_spec(np.random.RandomState(0), 500) for _ in range(2)]
    specs = [random_spec(rng, 500) for rng in [np.random.RandomState(0)] for _ in range(20)]
    assert a[0] == a[1] and all(s.n == 500 for s in specs)
    assert len({s.dim for s in specs}) > 2 and len({s.noise_rank for s in specs}) > 1


@pytest.fixture(scope="module")
def omni():
    part = subsample_classes(TASKS["omniglot"]().train, 30, seed=2)
    return part.x, part.y


def test_pretraining_alone_learns_links_that_transfer(omni):
    x, y = omni
    model = train(x, y, TrainConfig(**TINY, steps=0, pretrain_steps=60), progress=False)
    assert len(model.losses) == 60 and 0 < model.card.tau < 1
    batch = Batch.from_data_list(level_graphs(x, y, 8, node_mode="structure", max_levels=2))
    torch.manual_seed(0)
    untrained = LanderNet(model.net.config)
    config = TrainConfig(**TINY)
    with torch.no_grad():
        assert episode_loss(model.net, batch, config) < 0.8 * episode_loss(untrained, batch, config)


def test_pretraining_then_labeled_steps(omni):
    plain = train(*omni, TrainConfig(**TINY, steps=20), progress=False)
    both = train(*omni, TrainConfig(**TINY, steps=20, pretrain_steps=20), progress=False)
    again = train(*omni, TrainConfig(**TINY, steps=20, pretrain_steps=20), progress=False)
    mixed = train(*omni, TrainConfig(**TINY, steps=20, pretrain_steps=20, pretrain_mix=0.5), progress=False)
    assert len(both.losses) == 40 and len(mixed.losses) == 40
    a, b, c, m = (model.net.state_dict() for model in (plain, both, again, mixed))
    assert all(torch.equal(b[key], c[key]) for key in b)
    assert not all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(m[key], b[key]) for key in b)


def test_config_rejects_nothing_to_train_and_embedding_pretraining():
    with pytest.raises(ValidationError, match="nothing would be trained"):
        TrainConfig(steps=0)
    for extra in ({"pretrain_steps": 10}, {"pretrain_mix": 0.3}):
        with pytest.raises(ValidationError, match="structure"):
            TrainConfig(**extra, node_mode="embedding")
