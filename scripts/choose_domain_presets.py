"""Choose the default model's decoding presets per domain (``qdrant_lander/models/domains.json``).

Each preset is chosen, with the trainer's own grid and rule (``choose_decoding``, decoding k from
{10, 20} as the shipped model), on the classes of one training set that the default model held out
while training: the split is reproduced from the training seed and held-out fraction, so no class
the model trained on, and nothing of any test part, takes part. Each domain also gets a preset for
classes of another size, chosen the same way on mean Fp over copies of those held-out classes: text and
characters a ``-small`` one (classes thinned to 3, 5, 10 and 20 points, 3 random draws per size, sizes
below the largest class only), faces a ``-large`` one (only the people with at least 5, and at least
10, faces: LFW's are mostly 1-3, a photo library's are not). The same points give each preset the
space profile ``auto`` compares data with. Run after
``scripts/train_default_model.py``:

    python scripts/choose_domain_presets.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.tasks import TASKS, Part, classes_of_at_least, thin_classes  # noqa: E402
from qdrant_lander.domains import PRESETS_FILE, DomainPreset, SpaceProfile, space_profile  # noqa: E402
from qdrant_lander.lander import Lander  # noqa: E402
from qdrant_lander.training.tau import choose_decoding  # noqa: E402
from qdrant_lander.training.trainer import TrainConfig, _combine, _split_classes  # noqa: E402
from qdrant_lander.validate import check_embeddings  # noqa: E402
from scripts.train_default_model import DECODE_K, TRAIN_TASKS  # noqa: E402

DOMAIN_OF = {"clinc75": "text", "omniglot": "characters", "lfw": "faces"}
SMALL_SIZES = (3, 5, 10, 20)
SMALL_DRAWS = 3
LARGE_SIZES = (5, 10)
PRESETS_HEADING = "## Domain presets"


def other_size(domain: str, held: Part) -> tuple[str, list[Part], str]:
    """The second preset of ``domain``: its name, the copies of the held-out classes it is chosen on, and how."""
    if domain == "faces":
        return "faces-large", [classes_of_at_least(held, m) for m in LARGE_SIZES], \
            f"those with at least {' / '.join(map(str, LARGE_SIZES))} points"
    sizes = [m for m in SMALL_SIZES if m < np.unique(held.y, return_counts=True)[1].max()]
    return f"{domain}-small", [thin_classes(held, m, seed) for m in sizes for seed in range(SMALL_DRAWS)], \
        f"thinned to {', '.join(map(str, sizes))} points each ({SMALL_DRAWS} draws)"


def mean_profile(profiles: list[SpaceProfile]) -> SpaceProfile:
    """The mean profile of copies of one set (their points differ in number, so the sum is kept)."""
    return SpaceProfile(**{f: round(float(np.mean([getattr(p, f) for p in profiles])), 4)
                           for f in ("cosine_q10", "cosine_median", "extent")},
                        points=sum(p.points or 0 for p in profiles))


def main() -> None:
    lander = Lander(domain="any")  # the card itself: presets are chosen on its scorer
    card = lander.card
    config = TrainConfig()  # the shipped model's seed and held-out fraction are the trainer's defaults
    rng = np.random.RandomState(config.seed)  # train() draws the held-out classes first, one set after another
    parts = [TASKS[t]().train for t in TRAIN_TASKS]
    masks = [_split_classes(p.y, config.heldout_fraction, rng) for p in parts]
    if sum(np.unique(p.y[m]).size for p, m in zip(parts, masks)) != card.notes.get("heldout_classes"):
        sys.exit("the reproduced held-out split does not match the default model's card (heldout_classes)")
    presets = {}
    for task, part, held in zip(TRAIN_TASKS, parts, masks):
        domain, x, y = DOMAIN_OF[task], check_embeddings(part.x[held]), part.y[held]
        on = f"{part.name}: {np.unique(y).size} held-out classes"

        def preset(grids, profile, chosen_on):
            best = _combine(grids)
            return DomainPreset(model=card.name, k=best.k, tau=best.tau, min_merge_ratio=best.min_merge_ratio,
                                min_support=best.min_support, chosen_on=chosen_on, heldout_fp=round(best.fp, 4),
                                profile=profile).model_dump()

        def grid(a, b):  # no fragment absorption: chosen here it cost characters 0.029 Fp (RESULTS.md, session 24)
            return choose_decoding(lander.scorer, a, b, node_mode=card.node_mode, max_levels=card.max_levels,
                                   k_choices=DECODE_K, absorb_shares=(0.0,))[1]

        presets[domain] = preset([grid(x, y)], space_profile(x), f"{on}, {len(x)} points")
        print(domain, presets[domain], flush=True)
        name, copies, how = other_size(domain, Part(x, y, part.name))
        presets[name] = preset([grid(c.x, c.y) for c in copies], mean_profile([space_profile(c.x) for c in copies]),
                               f"{on}, {how}")
        print(name, presets[name], flush=True)
    models = ROOT / "qdrant_lander" / "models"
    (models / PRESETS_FILE).write_text(json.dumps(presets, indent=2) + "\n")
    # The model card page gets (or replaces) its presets section.
    page = models / "MODEL_CARD.md"
    text = page.read_text().split(PRESETS_HEADING)[0].rstrip("\n")
    rows = [f"| `{d}` | {p['chosen_on']} | {p['k']} | {p['tau']} | {p['min_merge_ratio']} | {p['min_support']} "
            f"| {p['heldout_fp']} | {p['profile']['cosine_q10']} / {p['profile']['cosine_median']} / {p['profile']['extent']} |"
            for d, p in presets.items()]
    page.write_text("\n".join([text, "", PRESETS_HEADING, "",
                               "Decoding per domain (`--domain`, `Lander(domain=...)`), chosen on the held-out classes "
                               "of each training set (written by `scripts/choose_domain_presets.py`). `auto` (the "
                               "default) takes the domain whose profile (cosine between random pairs of the held-out "
                               "points: 10th percentile / median) is nearest to the data's, then the preset of that "
                               "domain whose neighbour extent (how far down 10 neighbours a class reaches) is nearest:",
                               "",
                               "| domain | chosen on | k | tau | min_merge_ratio | min_support | held-out Fp | profile |",
                               "|---|---|---|---|---|---|---|---|", *rows, ""]))


if __name__ == "__main__":
    main()
