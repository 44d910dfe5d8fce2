"""The dev tasks: labeled sets from ``../shared/data`` split into class-disjoint train and test parts.

Shared by the tests and the benchmarks so both measure the same splits. Data is read in place from
``../shared`` (or ``$LANDER_SHARED_DATA``); it is never copied into the project.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(os.environ.get("LANDER_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@dataclass(frozen=True)
class Part:
    x: np.ndarray
    y: np.ndarray
    name: str


@dataclass(frozen=True)
class Task:
    name: str
    train: Part
    test: Part
    domain: str  # "text", "characters" or "faces": for leave-one-domain-out runs


def load_set(name: str) -> tuple[np.ndarray, np.ndarray]:
    d = DATA_DIR / name
    return np.load(d / "embeddings.npy"), np.load(d / "labels.npy").astype(np.int64)


def _by_classes(x: np.ndarray, y: np.ndarray, classes: np.ndarray, name: str) -> Part:
    m = np.isin(y, classes)
    return Part(x[m], y[m], name)


def clinc_75_75() -> Task:
    x, y = load_set("clinc150")
    perm = np.random.RandomState(0).permutation(150)
    return Task("clinc75", _by_classes(x, y, perm[:75], "clinc150[75 train intents]"),
                _by_classes(x, y, perm[75:], "clinc150[75 test intents]"), "text")


def clinc_to_banking() -> Task:
    x, y = load_set("clinc150")
    xb, yb = load_set("banking77")
    return Task("clinc2banking", Part(x, y, "clinc150"), Part(xb, yb, "banking77"), "text")


def omniglot() -> Task:
    x, y = load_set("omniglot")
    split = json.loads((DATA_DIR / "omniglot" / "split.json").read_text())
    return Task("omniglot", _by_classes(x, y, np.asarray(split["train"]), "omniglot[train]"),
                _by_classes(x, y, np.asarray(split["test"]), "omniglot[test]"), "characters")


def lfw_half() -> Task:
    x, y = load_set("lfw_train_half_dlib128")
    ids = np.unique(y)
    perm = np.random.RandomState(0).permutation(ids)
    half = len(ids) // 2
    return Task("lfw", _by_classes(x, y, perm[:half], "lfw[identities A]"),
                _by_classes(x, y, perm[half:], "lfw[identities B]"), "faces")


def orl_to_lfw() -> Task:
    xo, yo = load_set("orl_faces")
    t = lfw_half()
    return Task("orl2lfw", Part(xo, yo, "orl_faces"), t.test, "faces")


TASKS = {"clinc75": clinc_75_75, "clinc2banking": clinc_to_banking, "omniglot": omniglot, "lfw": lfw_half,
         "orl2lfw": orl_to_lfw}


def subsample_classes(part: Part, n_classes: int, seed: int = 0) -> Part:
    """A small slice with whole classes, for quick runs in CI."""
    classes = np.unique(part.y)
    keep = np.random.RandomState(seed).choice(classes, size=min(n_classes, len(classes)), replace=False)
    m = np.isin(part.y, keep)
    return Part(part.x[m], part.y[m], f"{part.name}[{len(keep)} classes]")


def thin_classes(part: Part, size: int, seed: int = 0) -> Part:
    """Every class cut to ``size`` random points (fewer if it has fewer): the same data, smaller classes."""
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(part.y == c), min(size, int((part.y == c).sum())), replace=False)
                           for c in np.unique(part.y)])
    return Part(part.x[keep], part.y[keep], f"{part.name}[<= {size} per class]")


def classes_of_at_least(part: Part, size: int) -> Part:
    """Only the classes with at least ``size`` points (e.g. the people of a face set with many photos)."""
    _, inverse, counts = np.unique(part.y, return_inverse=True, return_counts=True)
    keep = counts[inverse] >= size
    return Part(part.x[keep], part.y[keep], f"{part.name}[>= {size} per class]")
