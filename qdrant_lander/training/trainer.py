"""Episodic meta-training of :class:`LanderNet`, then tau chosen on held-out training classes.

Protocol (shared/design/METHOD.md, last section): split off ``heldout_fraction`` of the training classes; train on
the rest with episodes (each step a random share of the classes, a random k, and the levels the
decoder produces on them); choose tau/k/early stop on the held-out classes; record the link and
density diagnostics there next to plain cosine. Small labeled sets repeat this over folds of classes
(``folds``) so that every class is held out once. Seeded: the same data and config give the same weights.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch_geometric.data import Batch
from tqdm.auto import tqdm

from ..decode import DecodeSettings
from ..domains import space_spread
from ..errors import InputError, ModelError
from ..features import EDGE_FEATURES, NodeMode, node_width
from ..model_card import (CARD_FILE, MODEL_FILE, ONNX_FILE, ModelCard, card_in_force, check_format, check_same_model,
                          packaged_file)
from ..synthetic import generate, random_spec
from .episodes import CandidateNeighbours, sample_episode
from .evaluate import TorchScorer, level0_diagnostics
from .model import Head, LanderNet, NetConfig
from .tau import (ABSORB_SHARES, DECODE_K, MIN_MERGE_RATIOS, MIN_SUPPORTS, TAUS, DecodeChoice, choose_decoding,
                  choose_tau_bias, pick)

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "default.pt"  # the default model's torch weights, in qdrant_lander/models (what init='default' loads)
SMALL_SET_POINTS = 5000
Share = Annotated[float, Field(ge=0, le=1)]  # a share of classes or points, or a link-probability threshold
SMALL_SET_FOLDS = 4


class TrainConfig(BaseModel):
    """Meta-training settings. The defaults train on a few thousand points in a few minutes on 2 CPU cores."""

    model_config = ConfigDict(extra="forbid")

    node_mode: NodeMode = Field("structure", description="'structure' = dimension-free (any embedding space); "
                                                          "'embedding' = the paper's peak || mean input")
    head: Head = "relative"
    hidden: int = Field(64, gt=0)
    layers: int = Field(1, ge=0)
    steps: int = Field(400, ge=0, description="Training episodes (one gradient step each) on the labeled data")
    pretrain_steps: int = Field(0, ge=0, description="Episodes on synthetic labeled sets before the labeled ones "
                                "(0 = none): unlimited classes of every size, spread and density")
    pretrain_sets: int = Field(8, ge=1, description="Synthetic sets drawn for pre-training, each with random "
                               "generator settings (qdrant_lander.synthetic.random_spec)")
    pretrain_points: int = Field(3000, ge=20, description="Points in each synthetic set")
    pretrain_mix: float = Field(0.0, ge=0, lt=1, description="Share of the labeled steps' episodes drawn from the "
                                "synthetic sets instead (0 = none), so a small labeled set cannot undo pre-training")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    density_weight: float = Field(1.0, ge=0, description="Weight of the density MSE next to the link loss")
    denser_edges_only: bool = Field(False, description="Link loss only on edges to a denser neighbour (GT density),"
                                                       " the only edges the decoder can follow (as in the paper)")
    parent_weight: float = Field(0.0, ge=0, description="Weight of a parent-choice loss: -log of the softmax mass "
                                 "(over each node's denser neighbours, by predicted density) on same-class ones, "
                                 "i.e. train the one edge the decoder follows, not every edge alike. Off by "
                                 "default: +0.018 Fp on LFW, +0.008 Omniglot, neutral to negative on text "
                                 "(benchmarks/RESULTS.md)")
    k_choices: list[PositiveInt] = Field([5, 10, 20], min_length=1, description="k drawn per episode")
    train_levels: int = Field(3, ge=1, description="Levels of the ground-truth hierarchy trained on per episode")
    class_fraction: tuple[Share, Share] = Field((0.2, 0.5), description="Share of training classes per episode")
    class_size_fraction: tuple[Share, Share] | None = Field(
        (0.1, 1.0), description="Each episode class keeps a random share of its points drawn from this range (None = "
        "all), so the model sees class sizes the labeled set lacks (ORL, 10 faces a person, -> LFW, 1-2)")
    max_points: int | None = Field(4000, ge=2, description="Cap on an episode's points (whole classes dropped)")
    confusable_share: float = Field(0.0, ge=0, le=1, description="Share of episodes made of a random class and its "
                                    "nearest classes (by mean embedding) instead of random ones. Off by default: "
                                    "+0.021 Fp on LFW, neutral on Omniglot and CLINC75 (benchmarks/RESULTS.md)")
    init: str | None = Field(None, description="Weights training starts from instead of random ones: 'default' (the "
                             "shipped universal model) or a trained model directory of the same network shape. "
                             "Fine-tuning the universal model: +0.018 mean test Fp on CLINC75, +0.008 on Banking77, "
                             "level on characters and faces over three seeds (benchmarks/RESULTS.md, session 28)")
    self_decode: float = Field(0.5, ge=0, le=1, description="After the first third of the steps, this share of "
                               "episodes is decoded by the model being trained (at a random tau) instead of the "
                               "ground truth, so levels >= 1 look like the ones it will decode")
    heldout_fraction: float = Field(0.25, gt=0, lt=1, description="Training classes kept back to choose tau")
    folds: int | None = Field(None, ge=1, description="1: the decoding is chosen on one held-out split "
                              "(heldout_fraction of the classes). F > 1: the classes are cut in F folds, one model is "
                              "trained without each, the decoding is chosen on their mean held-out Fp (every class "
                              "held out once) and the first fold's model is kept (F trainings). None: "
                              f"{SMALL_SET_FOLDS} (at most one per 2 classes) below {SMALL_SET_POINTS} labeled points, "
                              "where a training is short and one held-out split chose worse on every dev set, else 1")
    choose_on: Literal["heldout", "all"] = Field("heldout", description="Where the decoding is chosen: 'heldout' "
                                                 "classes the kept model did not see, or 'all' labeled points (seen "
                                                 "classes too: as many classes as the data, so Fp does not saturate). "
                                                 "'all' lifted CLINC75 fine-tuned 1,600 steps from 0.769-0.796 to "
                                                 "0.812-0.821 test Fp over three seeds, and wrecked ORL's 40 faces "
                                                 "(0.868 -> 0.651): a large labeled text set only (RESULTS.md, "
                                                 "session 41)")
    decode_k: list[PositiveInt] = Field(list(DECODE_K), min_length=1, description="k values tried when choosing the decoding")
    taus: list[Share] = Field(list(TAUS), min_length=1)
    min_merge_ratios: list[float] = Field(list(MIN_MERGE_RATIOS), min_length=1)
    min_supports: list[float] = Field(list(MIN_SUPPORTS), min_length=1, description="Merge supports tried when choosing "
                                      "the decoding (strong point links per point of the smaller supernode)")
    absorb_shares: list[float] = Field(list(ABSORB_SHARES), min_length=1, description="Fragment sizes tried when "
                                       "choosing the decoding, as shares of the typical cluster's size (clusters this "
                                       "small join the cluster their links favour; 0 = off)")
    tau_biases: list[float] = Field([], description="Models trained on several labeled sets: agreement biases to try "
                                    "for a tau chosen per dataset without labels, e.g. [-2,-1,-0.5,0,0.5,1,2] (kept only "
                                    "if it beats one fixed tau on the held-out classes). Off by default: it helped in "
                                    "the training domains and hurt on unseen ones (benchmarks/RESULTS.md)")
    tau_by_spread: bool = Field(False, description="Models trained on several labeled sets: keep each set's own "
                                "held-out tau (at the chosen k, support and absorption) with the set's spread, so "
                                "that a new space is decoded at the tau its spread implies (decode.tau_at_spread). "
                                "Off by default: a probe (RESULTS.md, session 42)")
    max_levels: int = Field(10, ge=1)
    seed: int = 0
    threads: int | None = Field(1, ge=1, description="torch CPU threads (None = torch's default)")

    @model_validator(mode="after")
    def _some_steps(self) -> TrainConfig:
        if self.steps + self.pretrain_steps == 0:
            raise ValueError("steps and pretrain_steps are both 0: nothing would be trained")
        for name in ("class_fraction", "class_size_fraction"):
            lo_hi = getattr(self, name)
            if lo_hi is not None and not 0 < lo_hi[0] <= lo_hi[1]:
                raise ValueError(f"{name} is a range (low, high) with 0 < low <= high <= 1, got {list(lo_hi)}")
        if (self.pretrain_steps or self.pretrain_mix) and self.node_mode != "structure":
            raise ValueError("pretrain_steps and pretrain_mix need node_mode='structure': the synthetic sets have "
                             "their own dimensions")
        return self


@dataclass
class TrainedModel:
    """A trained network with its filled model card and what was measured while choosing the decoding."""

    net: LanderNet
    card: ModelCard
    config: TrainConfig
    decode_grid: list[DecodeChoice] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def scorer(self) -> TorchScorer:
        return TorchScorer(self.net)

    def save(self, out_dir: str | Path, *, onnx: bool = True) -> Path:
        """Write ``model.onnx`` (what serving loads; with ``onnx``), ``model.pt`` (config + weights + card) and
        ``card.json``. The ONNX file goes first: it fills in the card's revision, which all three then carry, and
        a failed export leaves an earlier model in ``out_dir`` whole rather than under a new card."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        card = self.card
        if onnx:
            from onnx_export.export import export_onnx  # the train extra's: Lander.fit checked it before training

            card = export_onnx(self.net, self.card, out / ONNX_FILE)
        torch.save({"net_config": self.net.config.model_dump(), "state_dict": self.net.state_dict(),
                    "card": card.model_dump(mode="json"), "train_config": self.config.model_dump(mode="json")},
                   out / MODEL_FILE)
        (out / CARD_FILE).write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
        return out


def _read_model_file(path: Path) -> tuple[ModelCard, NetConfig, dict]:
    """A saved model file's card (format checked), network shape and raw contents (with ``state_dict``)."""
    if not path.is_file():
        raise ModelError(f"{path} does not exist: not a trained model directory")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    card = ModelCard(**blob["card"])
    check_format(card, path)
    return card, NetConfig(**blob["net_config"]), blob


def load_trained(model_dir: str | Path) -> TrainedModel:
    """Rebuild a :class:`TrainedModel` from a directory written by :meth:`TrainedModel.save`, with the card in
    force (its ``card.json``, which ``calibrate`` may have rewritten: saving it again keeps the calibration)."""
    weights, net_config, blob = _read_model_file(Path(model_dir) / MODEL_FILE)
    card = card_in_force(Path(model_dir)) or weights
    check_same_model(card, weights, Path(model_dir) / MODEL_FILE)
    net = LanderNet(net_config)
    net.load_state_dict(blob["state_dict"])
    net.eval()
    # The training config is a record of how the model was made; settings this version no longer has are dropped.
    config = TrainConfig(**{k: v for k, v in blob["train_config"].items() if k in TrainConfig.model_fields})
    return TrainedModel(net=net, card=card, config=config)


def initial_weights(init: str, net_config: NetConfig) -> dict[str, torch.Tensor]:
    """The weights ``TrainConfig.init`` names ('default': the shipped universal model, whose torch weights sit
    next to ``default.onnx``), refused unless they fit the network this training builds."""
    path = packaged_file(DEFAULT_WEIGHTS, "default model weights") if init == "default" else Path(init) / MODEL_FILE
    _, saved, blob = _read_model_file(path)
    if saved != net_config:
        raise InputError(f"init: {path} holds a network {blob['net_config']}, but this training builds "
                         f"{net_config.model_dump()}: train with that model's node_mode, hidden, layers and head, "
                         "or leave init unset")
    return blob["state_dict"]


def _split_classes(y: np.ndarray, fraction: float, rng: np.random.RandomState) -> np.ndarray:
    """Boolean mask of the held-out points: a random ``fraction`` of the classes (at least 2 each side)."""
    classes = np.unique(y)
    if classes.size < 4:
        raise InputError(f"meta-training needs at least 4 classes (2 to train on, 2 to choose tau), got {classes.size}")
    n_held = int(np.clip(round(fraction * classes.size), 2, classes.size - 2))
    return np.isin(y, rng.choice(classes, size=n_held, replace=False))


def _fold_classes(y: np.ndarray, folds: int, rng: np.random.RandomState) -> list[np.ndarray]:
    """Boolean masks of ``folds`` disjoint groups of classes covering every class (at least 2 classes each)."""
    classes = np.unique(y)
    if classes.size < 2 * folds:
        raise InputError(f"{folds} folds need at least {2 * folds} classes (2 per fold), got {classes.size}")
    return [np.isin(y, part) for part in np.array_split(rng.permutation(classes), folds)]


def _balanced_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """BCE where positives and negatives each carry half the weight (links are mostly positive at level 0),
    over the edges in ``mask`` (all when None)."""
    mask = torch.ones_like(target, dtype=torch.bool) if mask is None else mask
    pos, neg = (target > 0.5) & mask, (target <= 0.5) & mask
    n_pos, n_neg = pos.sum().clamp_min(1), neg.sum().clamp_min(1)
    weight = torch.where(pos, 0.5 / n_pos, torch.where(neg, 0.5 / n_neg, 0.0))
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum()


def _denser(density: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """``[N, k]``: is neighbour ``nbr[i, m]`` denser than node i (the only edges the decoder can follow)."""
    n, k = nbr.shape
    return density.index_select(0, nbr.reshape(-1)).reshape(n, k) > density[:, None]


def episode_loss(net: LanderNet, batch: Batch, config: TrainConfig) -> torch.Tensor:
    """Balanced link BCE + weighted density MSE on one batched episode."""
    logits = net.link_logits(batch.x, batch.nbr_index, batch.sim, batch.edge_attr)
    density = LanderNet.density_from_links(torch.sigmoid(logits), batch.sim)
    mask = None
    if config.denser_edges_only:
        mask = _denser(batch.density, batch.nbr_index)
    loss = _balanced_bce(logits, batch.link, mask) + config.density_weight * F.mse_loss(density, batch.density)
    if config.parent_weight:
        loss = loss + config.parent_weight * parent_loss(logits, density.detach(), batch.nbr_index, batch.link)
    return loss


def parent_loss(logits: torch.Tensor, density: torch.Tensor, nbr: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
    """Mean over nodes with a same-class denser neighbour of -log P(the decoder's pick is one of them), where
    P is the softmax of the link logits over the node's denser neighbours."""
    denser = _denser(density, nbr)
    good = denser & (link > 0.5)
    rows = good.any(dim=1)
    if not bool(rows.any()):
        return logits.sum() * 0.0
    lg = logits[rows]
    all_mass = lg.masked_fill(~denser[rows], float("-inf")).logsumexp(dim=1)
    good_mass = lg.masked_fill(~good[rows], float("-inf")).logsumexp(dim=1)
    return (all_mass - good_mass).mean()


def train(x: np.ndarray | Sequence[np.ndarray], y: np.ndarray | Sequence[np.ndarray], config: TrainConfig | None = None,
          progress: bool = True, name: str = "lander-custom", trained_on: list[str] | None = None) -> TrainedModel:
    """Meta-train on labeled unit-length embeddings and choose the decoding on held-out classes.

    ``x``/``y`` may be one labeled set or a list of them (e.g. several domains for a structure-only
    model; each episode draws one set, all sets equally likely). The returned model's
    card carries tau, k and the held-out diagnostics. With ``config.folds`` > 1 (the default below
    SMALL_SET_POINTS labeled points) one model is trained per fold of classes and the decoding is
    chosen on every class, so a small set's choice does not hang on which few classes were held out.
    """
    config = config or TrainConfig()
    xs = [x] if isinstance(x, np.ndarray) else list(x)
    ys = [y] if isinstance(y, np.ndarray) else list(y)
    if len(xs) != len(ys):
        raise InputError(f"got {len(xs)} embedding arrays but {len(ys)} label arrays")
    if config.node_mode == "embedding" and len({a.shape[1] for a in xs}) > 1:
        raise InputError("node_mode='embedding' needs one embedding dimension; use node_mode='structure' to mix spaces")
    rng = np.random.RandomState(config.seed)
    torch.manual_seed(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)

    fewest = min(np.unique(b).size for b in ys)
    folds = config.folds or (max(1, min(SMALL_SET_FOLDS, fewest // 2)) if sum(map(len, ys)) < SMALL_SET_POINTS else 1)
    if folds == 1:
        rounds = [[_split_classes(b, config.heldout_fraction, rng) for b in ys]]
    else:
        per_set = [_fold_classes(b, folds, rng) for b in ys]
        rounds = [[masks[f] for masks in per_set] for f in range(folds)]
    train_s = choose_s = 0.0
    grids: list[list[DecodeChoice]] = []
    held_out: list[tuple[TorchScorer, list[np.ndarray]]] = []  # each round's model and the classes it did not see
    losses: list[float] = []
    for r, held_masks in enumerate(rounds):
        t0 = time.perf_counter()
        if len(rounds) == 1:
            round_rng, stage = rng, ""
        else:  # each fold its own streams: fold r trains the same whatever the other folds do
            torch.manual_seed(config.seed + r + 1)
            round_rng, stage = np.random.RandomState([config.seed, r + 2]), f" (fold {r + 1} of {len(rounds)})"
        net, round_losses = _train_net([a[~m] for a, m in zip(xs, held_masks)], [b[~m] for b, m in zip(ys, held_masks)],
                                       config, round_rng, progress, stage)
        losses += round_losses
        t1 = time.perf_counter()
        scorer = TorchScorer(net)
        grids += [_decode_grid(scorer, a[m], b[m], config) for a, b, m in zip(xs, ys, held_masks)]
        held_out.append((scorer, held_masks))
        train_s, choose_s = train_s + t1 - t0, choose_s + time.perf_counter() - t1
    t1 = time.perf_counter()
    # Tau is chosen on the mean over labeled sets and folds, so one set with many classes cannot dictate it alone.
    best = heldout_best = _combine(grids)
    if config.choose_on == "all":  # the kept model on every labeled point
        grids = [_decode_grid(held_out[0][0], a, b, config) for a, b in zip(xs, ys)]
        best = _combine(grids)
    if len(xs) > 1 and config.tau_by_spread:
        best = best.model_copy(update={"tau_by_spread": _spread_taus(xs, grids, best)})
    auto_notes: dict[str, float] = {}
    if len(xs) > 1 and config.tau_biases:
        scorer, held_masks = held_out[0]  # judged with the kept model, on the classes it did not see
        bias, per_bias = choose_tau_bias(scorer, [(a[m], b[m]) for a, b, m in zip(xs, ys, held_masks)], best,
                                         config.tau_biases)
        best = best.model_copy(update={"tau_bias": bias})
        auto_notes = {"heldout_fp_auto_tau": round(max(per_bias.values()), 4)}
    diags = [level0_diagnostics(scorer, a[m], b[m], k=min(best.k, int(m.sum()) - 1), node_mode=config.node_mode)
             for scorer, held_masks in held_out for a, b, m in zip(xs, ys, held_masks)]
    choose_s += time.perf_counter() - t1
    # NaN (e.g. no negative edge among easy held-out classes) is left out: the card must stay valid JSON.
    notes: dict[str, float | str] = {f"heldout_{key}": round(float(np.nanmean(v)), 4)
                                     for key in ("link_auc", "cosine_auc", "parent_precision",
                                                 "cosine_parent_precision", "density_corr")
                                     if not np.isnan(v := [dg[key] for dg in diags]).all()}
    notes.update(auto_notes)
    if config.choose_on == "all":
        notes.update(chosen_on="all", all_fp=round(best.fp, 4), all_fb=round(best.fb, 4))
    notes.update(heldout_fp=round(heldout_best.fp, 4), heldout_fb=round(heldout_best.fb, 4), folds=float(folds),
                 train_seconds=round(train_s, 1), choose_seconds=round(choose_s, 1),
                 heldout_classes=float(sum(np.unique(b[m]).size for _, masks in held_out for b, m in zip(ys, masks))))
    card = ModelCard(**best.model_dump(include=set(DecodeSettings.model_fields)), name=name, head=config.head,
                     input_dim="any" if config.node_mode == "structure" else int(xs[0].shape[1]),
                     trained_on=trained_on or [], notes=notes)
    log.info("trained %s in %.1fs: tau=%.2f k=%d support=%.1f tau_bias=%s, chosen on %s classes (Fp %.3f there)", name,
             train_s, best.tau, best.k, best.min_support, best.tau_bias, config.choose_on, best.fp)
    # Fold 0's model is kept: trained on as many classes as each model that chose the decoding.
    return TrainedModel(net=held_out[0][0].net, card=card, config=config, decode_grid=[c for g in grids for c in g], losses=losses)


def _decode_grid(scorer: TorchScorer, x: np.ndarray, y: np.ndarray, config: TrainConfig) -> list[DecodeChoice]:
    """Every decoding of ``config``'s grid tried on the labeled (x, y)."""
    return choose_decoding(scorer, x, y, node_mode=config.node_mode, k_choices=config.decode_k, taus=config.taus,
                           min_merge_ratios=config.min_merge_ratios, min_supports=config.min_supports,
                           absorb_shares=config.absorb_shares, max_levels=config.max_levels)[1]


def _train_net(xs: list[np.ndarray], ys: list[np.ndarray], config: TrainConfig, rng: np.random.RandomState,
               progress: bool, stage: str = "") -> tuple[LanderNet, list[float]]:
    """A network (fresh, or from ``config.init``) meta-trained on the labeled sets (xs, ys) (after synthetic
    pre-training if configured)."""
    pools = [CandidateNeighbours(np.ascontiguousarray(a)) for a in xs]
    pool_y = list(ys)
    net = LanderNet(NetConfig(node_mode=config.node_mode, node_dim=node_width(config.node_mode, xs[0].shape[1]),
                              edge_dim=len(EDGE_FEATURES),
                              hidden=config.hidden, layers=config.layers, head=config.head))
    if config.init:
        net.load_state_dict(initial_weights(config.init, net.config))
    losses: list[float] = []
    weights = np.full(len(pools), 1.0 / len(pools))  # sets weigh equally, whatever their number of classes
    if config.pretrain_steps or config.pretrain_mix:
        # Its own random stream: the labeled episodes that follow are drawn as without pre-training.
        syn_rng = np.random.RandomState([config.seed, 1])
        sets = [generate(random_spec(syn_rng, config.pretrain_points)) for _ in range(config.pretrain_sets)]
        syn_pools, syn_y = [CandidateNeighbours(a) for a, _ in sets], [b for _, b in sets]
        syn_weights = np.full(len(sets), 1.0 / len(sets))
        if config.pretrain_steps:
            losses += _fit(net, syn_pools, syn_y, syn_weights, config.pretrain_steps, config, syn_rng,
                           "pre-training (synthetic)" + stage, progress)
        if config.pretrain_mix:
            pools, pool_y = pools + syn_pools, pool_y + syn_y
            weights = np.concatenate([(1 - config.pretrain_mix) * weights, config.pretrain_mix * syn_weights])
    if config.steps:
        losses += _fit(net, pools, pool_y, weights, config.steps, config, rng, "meta-training" + stage, progress)
    net.eval()
    return net, losses


def train_best(x: np.ndarray | Sequence[np.ndarray], y: np.ndarray | Sequence[np.ndarray],
               configs: Sequence[TrainConfig], progress: bool = True, name: str = "lander-custom",
               trained_on: list[str] | None = None) -> TrainedModel:
    """Train each config (a training recipe) and keep the model that clusters the held-out classes best.

    Which recipe suits a labeled set is a choice to make on that set's held-out classes, like tau: episodes
    of look-alike classes raised held-out Fp on every single-set dev task and lowered it for the
    multi-domain default model, and test Fp moved the same way both times (benchmarks/RESULTS.md). The
    configs share seed, held-out fraction and folds, so each is judged on the same classes; higher Fp, then Fb,
    wins, and ties keep the earlier config.
    """
    if not configs:
        raise InputError("no training config to try")
    if len({(c.seed, c.heldout_fraction, c.folds) for c in configs}) > 1:
        raise InputError("configs tried against each other need one seed, heldout_fraction and folds (the same "
                         "held-out classes)")
    models = []
    for i, c in enumerate(configs):
        if len(configs) > 1:
            changed = {key: v for key, v in c.model_dump().items() if v != getattr(configs[0], key)}
            log.info("recipe %d of %d: %s", i + 1, len(configs), changed or "the base options")
        models.append(train(x, y, c, progress=progress, name=name, trained_on=trained_on))
    scores = [(m.card.notes["heldout_fp"], m.card.notes["heldout_fb"]) for m in models]
    chosen = max(range(len(models)), key=lambda i: (scores[i], -i))
    best = models[chosen]
    if len(models) > 1:
        per = " ".join(f"{fp:.4f}/{fb:.4f}" for fp, fb in scores)
        best.card = best.card.model_copy(update={"notes": {**best.card.notes, "heldout_fp_fb_per_recipe": per,
                                                           "recipe_chosen": float(chosen)}})
        log.info("recipes tried (held-out Fp/Fb): %s; kept recipe %d", per, chosen + 1)
    return best


def _fit(net: LanderNet, pools: list[CandidateNeighbours], pool_y: list[np.ndarray], weights: np.ndarray, steps: int,
         config: TrainConfig, rng: np.random.RandomState, desc: str, progress: bool) -> list[float]:
    """``steps`` episodes, each on a set drawn from ``pools`` with probabilities ``weights``, with a fresh Adam
    and cosine decay."""
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, unit="episode")
    net.train()
    for step in bar:
        d = int(rng.choice(len(pools), p=weights))
        own = step >= steps // 3 and rng.random_sample() < config.self_decode
        batch = sample_episode(pools[d], pool_y[d], rng, class_fraction=config.class_fraction,
                               scorer=TorchScorer(net) if own else None,
                               k_choices=config.k_choices, node_mode=config.node_mode,
                               max_levels=config.train_levels, max_points=config.max_points,
                               class_size_fraction=config.class_size_fraction,
                               confusable_share=config.confusable_share)
        loss = episode_loss(net, batch, config)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return losses


def _spread_taus(xs: list[np.ndarray], grids: list[list[DecodeChoice]], best: DecodeChoice) -> list[tuple[float, float]]:
    """(spread, tau) of each labeled set: the tau its own held-out grids (``grids`` runs rounds x sets, in that
    order) choose with everything else fixed at ``best``'s, for :func:`~qdrant_lander.decode.tau_at_spread`."""
    def rest(c: DecodeChoice) -> tuple[int, float, float, float]:  # everything the card fixes but tau
        return c.k, c.min_merge_ratio, c.min_support, c.absorb_share

    return [(round(space_spread(a), 4),
             _combine([[c for c in g if rest(c) == rest(best)] for g in grids[i::len(xs)]]).tau)
            for i, a in enumerate(xs)]


def _combine(grids: list[list[DecodeChoice]]) -> DecodeChoice:
    """:func:`pick` on the mean Fp/Fb across several held-out sets (same grid order in each)."""
    mean = [c.model_copy(update={"fp": float(np.mean([g[i].fp for g in grids])),
                                 "fb": float(np.mean([g[i].fb for g in grids]))}) for i, c in enumerate(grids[0])]
    return pick(mean)
