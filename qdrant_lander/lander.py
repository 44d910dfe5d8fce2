"""The estimator users call from Python: ``Lander().fit(x, y)`` / ``Lander().predict(x)``.

It ties the pieces together and nothing more: inputs are checked, the kNN graph is built (or taken
from a store), the ONNX model scores every level, and the decoder reads off the hierarchy. Training
is delegated to :mod:`qdrant_lander.training`, which is the only place torch is imported.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .decode import OWN_TAU, ClusterResult, cluster_hierarchy
from .dedup import regroup, unique_rows
from .domains import (FAR_PROFILE, Domain, check_domain, nearest_preset, space_profile,
                      with_domain)
from .errors import InputError, MissingExtraError, ModelError
from .knn import KnnGraph, knn_graph
from .model_card import CARD_FILE, MODEL_FILE, ONNX_FILE, ModelCard, calibrated_name, card_in_force
from .runtime import OnnxScorer, default_model_path
from .validate import check_embeddings, check_labels, check_neighbours, check_unit_rows, group_codes


log = logging.getLogger(__name__)
ONE_CLUSTER_WARNING = 50  # points from which one cluster holding nearly all of them is reported as a likely misfit
ONE_CLUSTER_SHARE = 0.9  # "nearly all": a few points split off from a collapse must not hide it


@contextmanager
def _model_dir(out_dir: str | Path | None) -> Iterator[Path]:
    """The model directory ``out_dir`` (None: a new temporary one), made before the training or calibration that
    fills it: one that cannot be made (a file on its path, no permission) is refused before minutes of work rather
    than after them. If the work fails, a directory made here and still empty is removed again."""
    if out_dir is None:
        out, made = Path(tempfile.mkdtemp(prefix="lander-model-")), True
    else:
        out = Path(out_dir)
        made = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot write a model directory at {out}: {e.strerror or e}") from e
    try:
        yield out
    except BaseException:
        if made and not any(out.iterdir()):
            out.rmdir()
        raise


def _labeled_sample(x: np.ndarray, y: np.ndarray, *, purpose: str, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Checked unit-length rows and their labels, each distinct vector once, so that the graphs a model is
    trained or calibrated on are built the way :meth:`Lander.predict` builds the ones it clusters.

    Both uses score links inside classes, so at least two classes need two distinct vectors each: with
    one point per class every tau scores the same and the choice would be arbitrary."""
    x = check_embeddings(x, min_points=2, dim=dim)
    y = check_labels(y, len(x))
    distinct = unique_rows(x)
    if distinct.copies:
        log.info("%d labeled rows repeat an earlier row's vector: each vector is used once", distinct.copies)
    x, y = distinct.take(x), y[distinct.rep]
    sizes = np.unique(y, return_counts=True)[1]
    if (usable := int((sizes >= 2).sum())) < 2:
        copies = f", once the {distinct.copies} rows that repeat an earlier row's vector are set aside" if distinct.copies else ""
        raise InputError(f"{purpose} needs at least 2 classes with 2 or more distinct vectors each; the labels have "
                         f"{len(sizes)} classes, {usable} of them with 2 or more{copies}")
    return x, y


def _shipped() -> Path | None:
    """The shipped model's resolved path; None in an installation without it (then only a model of your own works)."""
    try:
        return default_model_path().resolve()
    except ModelError:
        return None


class Lander:
    """Learned hierarchical clustering with a LANDER model.

    ``model`` is an ONNX file or a model directory written by ``fit``/``qdrant-lander train``;
    ``None`` uses the default model shipped with the package. ``domain`` (``faces``, ``text``,
    ``characters``) decodes the default model with the settings chosen for that kind of data
    (:mod:`qdrant_lander.domains`); ``auto`` picks the one the data resembles each time data is
    clustered (:meth:`for_data`); ``any`` keeps the model's one-for-all settings. ``device`` is
    ``auto``, ``cpu`` or ``cuda``; ``threads`` caps onnxruntime's intra-op threads.
    """

    def __init__(self, model: str | Path | None = None, *, domain: Domain = "auto", device: str = "auto",
                 threads: int | None = None):
        if model is not None and Path(model).resolve() == _shipped():
            model = None  # the shipped file named by its path: the same model, so its presets and `auto` apply
        if check_domain(domain) not in ("auto", "any") and model is not None:  # e.g. a calibrated copy: its own decoding stands
            raise InputError(f"domain '{domain}' selects a decoding of the shipped default model; a model of your own "
                             "(or a calibrated copy) keeps the decoding in its card")
        self.model = model
        self.domain = domain
        self.device = device
        self.threads = threads
        self._scorer: OnnxScorer | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Without the onnxruntime session (it cannot be pickled): a copy sent to another process (joblib,
        multiprocessing) loads the model again on first use."""
        return {**self.__dict__, "_scorer": None}

    @property
    def scorer(self) -> OnnxScorer:
        if self._scorer is None:
            path, card = self.model, None
            if path is not None and (Path(path).is_dir() or Path(path).name == ONNX_FILE):
                # A model directory, or its model.onnx: the directory's card.json is the card in force (calibrate
                # writes only that, so naming the file must not drop the calibration).
                path = Path(path) / ONNX_FILE if Path(path).is_dir() else Path(path)
                card = card_in_force(path.parent)
            scorer = (OnnxScorer.default(device=self.device, threads=self.threads) if path is None
                      else OnnxScorer(path, device=self.device, threads=self.threads, card=card))
            scorer.card = with_domain(scorer.card, self.domain)
            self._scorer = scorer
        return self._scorer

    @property
    def card(self) -> ModelCard:
        """The decoding in force (for ``auto``, the model's own until :meth:`for_data` resolves it)."""
        return self.scorer.card

    def for_data(self, x: np.ndarray) -> Lander:
        """This model with ``auto`` resolved for the unit-length rows ``x``: the default model takes the
        preset of the training domain whose space ``x`` resembles, for classes of the size ``x``'s look
        (:func:`~qdrant_lander.domains.nearest_preset`); any other model its own card (``any``). A
        resolved domain returns ``self``."""
        if self.domain != "auto":
            return self
        domain = "any"
        distinct = unique_rows(x).take(x) if self.model is None else x  # copies would read as a tighter space
        if self.model is None and len(distinct) >= 2:
            profile = space_profile(distinct)
            domain, distance = nearest_preset(profile)
            log.info("domain auto: %s (cosine between random pairs: 10th percentile %.2f, median %.2f, spread %.2f; "
                     "neighbour extent %.2f)", domain, profile.cosine_q10, profile.cosine_median, profile.spread,
                     profile.extent)
            if distance > FAR_PROFILE:
                log.warning("these vectors resemble none of the default model's training spaces (picked: %s, "
                            "profile distance %.2f): if the clusters look wrong, name the domain (domain/--domain) "
                            "or fit the decoding with `qdrant-lander calibrate`", domain, distance)
        return self.for_domain(domain)

    def for_domain(self, domain: str) -> Lander:
        """This model decoded with ``domain`` (e.g. the one a collection's last sync resolved ``auto`` to).
        From ``auto``/``any`` it shares this model's onnxruntime session, so a daemon that resolves ``auto``
        at every full pass loads the model once."""
        if domain == self.domain:
            return self
        resolved = Lander(self.model, domain=domain, device=self.device, threads=self.threads)
        if self.domain in ("auto", "any"):  # its card is the model's own
            resolved._scorer = copy.copy(self.scorer)
            resolved._scorer.card = with_domain(self.scorer.card, domain)
        return resolved

    def fit(self, x: np.ndarray, y: np.ndarray, *, out_dir: str | Path | None = None, progress: bool = True,
            name: str = "lander-custom", trained_on: list[str] | None = None,
            candidates: Sequence[dict[str, Any]] = (), adapt_to: np.ndarray | None = None, **train_options) -> Lander:
        """Meta-train a model on labeled embeddings (classes disjoint from those you will cluster).

        ``train_options`` are :class:`~qdrant_lander.training.trainer.TrainConfig` fields. Each of
        ``candidates`` (more fields, on top of ``train_options``) is trained as well, and the model that
        clusters the held-out training classes best is kept, e.g. ``candidates=[{"confusable_share": 0.5}]``
        (each candidate costs one more training run). ``adapt_to`` (unlabeled vectors of the space you will
        cluster) trains a second time: the first model clusters them and its clusters of at least a quarter
        of a median labeled class join the labeled classes (:mod:`~qdrant_lander.training.adapt`; twice the
        training time). The model directory (torch weights, ONNX file, card) goes to ``out_dir`` or a
        temporary directory.
        """
        try:
            importlib.import_module("onnx_export.export")  # saving the trained model needs it: checked up front
            from .training.adapt import train_adapted
            from .training.trainer import TrainConfig, train_best
        except ImportError as e:
            raise MissingExtraError(
                f'training needs torch, torch-geometric and onnx ({e.name} is missing): pip install torch==2.13.0 '
                '"qdrant-lander[cpu,train]"'
            ) from e
        if check_domain(self.domain) not in ("auto", "any"):  # before the training, which would be lost
            raise InputError(f"domain '{self.domain}' selects a decoding of the shipped default model; the model fit "
                             "trains keeps the decoding in its own card: fit with Lander() (domain auto)")
        x, y = _labeled_sample(x, y, purpose="meta-training")
        try:
            configs = [TrainConfig(**{**train_options, **extra}) for extra in [{}, *candidates]]
        except ValueError as e:  # pydantic's ValidationError: unknown or invalid option
            raise InputError(f"invalid training options: {e}") from e
        if adapt_to is not None:  # checked before the first training, not after it
            xa = check_embeddings(adapt_to, min_points=2)
            if xa.shape[1] != x.shape[1]:  # check_embeddings would name a model, and none is trained yet
                raise InputError(f"the unlabeled vectors to adapt to have dimension {xa.shape[1]}, the labeled "
                                 f"embeddings {x.shape[1]}: both must come from the same encoder")
            xa = unique_rows(xa).take(xa)
            if len(xa) <= (k := max(k for c in configs for k in c.decode_k)):
                raise InputError(f"adapt_to needs more than {k} distinct vectors (the largest k tried), got {len(xa)}")
        kwargs = dict(progress=progress, name=name, trained_on=trained_on or [])
        with _model_dir(out_dir) as out:
            trained = train_best(x, y, configs, **kwargs) if adapt_to is None else train_adapted(x, y, xa, configs, **kwargs)
            trained.save(out)
        self.model, self._scorer = out, None
        return self

    def calibrate(self, x: np.ndarray, y: np.ndarray, *, out_dir: str | Path) -> Lander:
        """Choose this model's decoding (k, tau, early stop, merge support, fragment absorption) on a labeled
        sample of the space you will cluster, and write a model directory that uses it (same weights).

        A model's links transfer to embedding spaces it was not trained on far better than its tau
        does: the default model's tau, chosen on its training domains, merges a face collection it
        never saw into one cluster, while the same links at tau 0.95 match a Leiden tuned on faces
        (benchmarks/RESULTS.md). A few dozen labeled classes of your own fix the tau; no torch, no
        training. The grid is the trainer's (:mod:`qdrant_lander.training.tau`). Returns a new ``Lander`` on
        ``out_dir``; this one keeps its decoding (unlike :meth:`fit`, which retargets ``self``).
        """
        from .training.tau import choose_decoding

        card = self.card
        x, y = _labeled_sample(x, y, purpose="calibration", dim=card.input_dim if card.input_dim != "any" else None)
        with _model_dir(out_dir) as out:
            best, _ = choose_decoding(self.scorer, x, y, node_mode=card.node_mode, max_levels=card.max_levels)
            # Its own name: payloads, `status` and the passes' same-model checks must tell it from the model it
            # copies (same weights, other decoding); calibrating a calibrated copy replaces the suffix.
            calibrated = card.model_copy(update={
                "name": calibrated_name(card.name, best.k, best.tau), "k": best.k, "tau": best.tau,
                "min_merge_ratio": best.min_merge_ratio, "min_support": best.min_support,
                "absorb_share": best.absorb_share, **OWN_TAU,
                "notes": {**card.notes, "calibrated_fp": round(best.fp, 4), "calibrated_points": float(len(x)),
                          "calibrated_classes": float(np.unique(y).size)}})
            if self.scorer.path.resolve() != (out / ONNX_FILE).resolve():
                shutil.copyfile(self.scorer.path, out / ONNX_FILE)
                # torch weights (what `export` reads) left in out_dir by another model would be exported under this card
                weights = self.scorer.path.parent / MODEL_FILE
                if self.scorer.path.name == ONNX_FILE and weights.is_file():
                    shutil.copyfile(weights, out / MODEL_FILE)
                else:
                    (out / MODEL_FILE).unlink(missing_ok=True)
            (out / CARD_FILE).write_text(calibrated.model_dump_json(indent=2) + "\n")
        return Lander(out, device=self.device, threads=self.threads)

    def predict(self, x: np.ndarray, groups: np.ndarray | None = None) -> ClusterResult:
        """Cluster an array of embeddings [N, D] (any scale; rows are L2-normalised here). Rows equal to an
        earlier row are clustered with it: they take its cluster and path, and only it can be a peak.
        ``result.domain`` names the preset ``auto`` picked for these rows. ``groups`` (int [N], e.g. each row's
        tenant): no cluster spans two groups, while every row's neighbours are still found among all rows."""
        card = self.card
        x = check_embeddings(x, min_points=2, dim=card.input_dim if card.input_dim != "any" else None)
        groups = None if groups is None else group_codes(groups, len(x))
        vectors = unique_rows(x)  # copies of a vector are clustered once (qdrant_lander.dedup) ...
        distinct = vectors if groups is None else unique_rows(x, groups)  # ... once per group
        xu = distinct.take(x)
        lander = self.for_data(xu)
        k = lander.card.k
        if len(vectors.rep) <= k:
            got = f"{len(vectors.rep)} distinct vectors among {len(x)} rows" if vectors.copies else str(len(x))
            raise InputError(f"need at least {k + 1} points to cluster with k={k} neighbours, got {got}")
        graph = knn_graph(vectors.take(x), k)  # one entry per distinct vector, in whichever group
        if groups is not None:  # a vector in several groups: each row's list in its own group
            graph = regroup(graph, vectors, distinct, groups)
        return distinct.expand(lander.predict_graph(xu, graph, None if groups is None else groups[distinct.rep]))

    def predict_graph(self, vectors: np.ndarray, graph: KnnGraph, groups: np.ndarray | None = None) -> ClusterResult:
        """Cluster unit-length ``vectors`` whose level-0 kNN graph is already known (e.g. from Qdrant).

        ``graph.nbr`` holds row indices into ``vectors``, not point ids; level 0 uses its k, so build
        it with ``for_data(vectors).card.k`` neighbours when the domain is ``auto``. ``groups``: see :meth:`predict`.
        """
        if self.domain == "auto":
            return self.for_data(vectors).predict_graph(vectors, graph, groups)
        card = self.card
        if card.input_dim != "any" and vectors.shape[1] != card.input_dim:
            raise InputError(f"vectors have dimension {vectors.shape[1]}, but model '{card.name}' was trained for "
                             f"dimension {card.input_dim}")
        if graph.n != vectors.shape[0]:
            raise InputError(f"kNN graph has {graph.n} rows but there are {vectors.shape[0]} vectors")
        check_unit_rows(vectors)  # the model's features are cosines: other lengths cluster silently wrong
        check_neighbours(graph.nbr, graph.n, graph.sim)
        groups = None if groups is None else group_codes(groups, len(vectors))
        result = dataclasses.replace(cluster_hierarchy(vectors, graph, self.scorer, card, groups), domain=self.domain)
        if len(vectors) >= ONE_CLUSTER_WARNING:
            self._warn_if_degenerate(result, len(vectors), groups)
        return result

    def _warn_if_degenerate(self, result: ClusterResult, n: int, groups: np.ndarray | None) -> None:
        """Nearly all points in one cluster, or nearly all alone: what a tau that does not fit the space looks like.
        A point alone in its group is alone by its group, not by the model: it does not count."""
        _, inverse, sizes = np.unique(result.labels, return_inverse=True, return_counts=True)
        single = sizes[inverse.reshape(-1)] == 1
        if groups is not None:
            single &= np.bincount(groups)[groups] > 1
        hint = " (faces, text or characters: pass domain/--domain)" if self.model is None else ""
        if sizes.max() >= ONE_CLUSTER_SHARE * n:
            # The usual sign of a tau that does not fit the space (e.g. faces under the default model's `any`).
            log.warning("%d of %d points fell into one cluster at tau %s: the model's tau may not fit this space%s; "
                        "a few labeled classes fit it with `qdrant-lander calibrate`", sizes.max(), n, result.tau, hint)
        elif (alone := int(single.sum())) >= ONE_CLUSTER_SHARE * n:
            # The mirror image: almost no link trusted. Isotropic random blobs (make_blobs in many dimensions) do
            # this: every neighbour is about as near as any other and few are mutual, which in real embeddings
            # marks points between groups.
            log.warning("%d of %d points are clusters of their own at tau %s: the model trusted almost no link. Random "
                        "isotropic blobs (e.g. make_blobs in many dimensions) look like that to it, real embeddings "
                        "rarely do; for real data, the model's tau may not fit this space%s, and a few labeled classes "
                        "fit it with `qdrant-lander calibrate`", alone, n, result.tau, hint)
