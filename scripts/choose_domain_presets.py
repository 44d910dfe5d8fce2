"""Choose the default model's decoding presets per domain (``qdrant_lander/models/domains.json``).

Each preset is chosen, with the trainer's own grid and rule (``choose_decoding``, decoding k from
{10, 20} as the shipped model), on the classes of one training set that the default model held out
while training: the split is reproduced from the training seed and held-out fraction, so no class
the model trained on, and nothing of any test part, takes part. The same points give each preset the
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

from benchmarks.tasks import TASKS  # noqa: E402
from qdrant_lander.domains import PRESETS_FILE, DomainPreset, space_profile  # noqa: E402
from qdrant_lander.lander import Lander  # noqa: E402
from qdrant_lander.training.tau import choose_decoding  # noqa: E402
from qdrant_lander.training.trainer import TrainConfig, _split_classes  # noqa: E402
from qdrant_lander.validate import check_embeddings  # noqa: E402
from scripts.train_default_model import DECODE_K, TRAIN_TASKS  # noqa: E402

DOMAIN_OF = {"clinc75": "text", "omniglot": "characters", "lfw": "faces"}
PRESETS_HEADING = "## Domain presets"


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
        x = check_embeddings(part.x[held])
        best, _ = choose_decoding(lander.scorer, x, part.y[held], node_mode=card.node_mode,
                                  max_levels=card.max_levels, k_choices=DECODE_K)
        presets[DOMAIN_OF[task]] = DomainPreset(
            model=card.name, k=best.k, tau=best.tau, min_merge_ratio=best.min_merge_ratio, min_support=best.min_support,
            chosen_on=f"{part.name}: {np.unique(part.y[held]).size} held-out classes, {int(held.sum())} points",
            heldout_fp=round(best.fp, 4), profile=space_profile(x)).model_dump()
        print(DOMAIN_OF[task], presets[DOMAIN_OF[task]], flush=True)
    models = ROOT / "qdrant_lander" / "models"
    (models / PRESETS_FILE).write_text(json.dumps(presets, indent=2) + "\n")
    # The model card page gets (or replaces) its presets section.
    page = models / "MODEL_CARD.md"
    text = page.read_text().split(PRESETS_HEADING)[0].rstrip("\n")
    rows = [f"| `{d}` | {p['chosen_on']} | {p['k']} | {p['tau']} | {p['min_merge_ratio']} | {p['min_support']} "
            f"| {p['heldout_fp']} | {p['profile']['cosine_q10']} / {p['profile']['cosine_median']} |"
            for d, p in presets.items()]
    page.write_text("\n".join([text, "", PRESETS_HEADING, "",
                               "Decoding per domain (`--domain`, `Lander(domain=...)`), chosen on the held-out classes "
                               "of each training set (written by `scripts/choose_domain_presets.py`). `auto` (the "
                               "default) decodes data with the preset whose profile (cosine between random pairs "
                               "of the held-out points: 10th percentile / median) is nearest to the data's:", "",
                               "| domain | chosen on | k | tau | min_merge_ratio | min_support | held-out Fp | profile |",
                               "|---|---|---|---|---|---|---|---|", *rows, ""]))


if __name__ == "__main__":
    main()
