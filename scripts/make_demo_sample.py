"""Build the small CLINC150 sample bundled for ``qdrant-lander demo`` (run once by maintainers).

20 intents drawn from the *test* half of the dev split (classes the default model never trained on),
100 utterances each, embeddings as float16 with their text and intent name. CLINC150 is CC BY 3.0
(Larson et al., EMNLP-IJCNLP 2019); the attribution travels in the sample's README.
"""

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.tasks import DATA_DIR  # noqa: E402

src = DATA_DIR / "clinc150"
x = np.load(src / "embeddings.npy")
y = np.load(src / "labels.npy")
names = json.loads((src / "label_names.json").read_text())
full = json.loads((src / "data_full.json").read_text())
texts = [t for split in ("train", "val", "test") for t, _ in full[split]]
assert len(texts) == len(x)
test_intents = np.random.RandomState(0).permutation(150)[75:]
chosen = np.sort(np.random.RandomState(1).choice(test_intents, size=20, replace=False))
rows = np.concatenate([np.flatnonzero(y == c)[:100] for c in chosen])
out = ROOT / "qdrant_lander" / "demo_data"
np.savez_compressed(out / "clinc_sample.npz", embeddings=x[rows].astype(np.float16), labels=y[rows].astype(np.int32))
with open(out / "clinc_sample.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps({"text": texts[r], "intent": names[y[r]]}) + "\n")
print(len(rows), "rows;", [names[c] for c in chosen])
