"""A plain PyTorch SASRec with full-softmax cross-entropy: the peer of `cargo xtask bench peers`.

What a user writes when they train SASRec themselves, in its strong variant (cross-entropy over the whole catalog at
every position rather than one sampled negative): item and position embeddings, pre-norm Transformer blocks with a
causal mask (torch.nn.TransformerEncoderLayer, GELU, feed-forward 4·d), a final LayerNorm, logits against the item
table. Every sequence is left-padded to max_len, as SASRec's reference code does; the loss ignores padded positions.
Long histories train on every max_len window (as m6rec's `train.windows`). AdamW, linear warm-up, validation NDCG@10
after every epoch, the best weights kept, the time budget checked after every step.

Input: the sequences file written by `bench-peers-split` (first line `n_items`, then one user per line, item indices
in time order, equal timestamps in file order); the leave-one-out targets are derived exactly as m6rec's `Split`:
the last item is the test target, the one before it the validation target, the rest trains. Evaluation ranks the
target among all items (pessimistic ties, as m6rec's `metrics::ranks`), with and without the history's items.

Usage: python sasrec.py --sequences F --json OUT [--d 64 --layers 2 --heads 2 --max-len 50 --dropout 0.2 --lr 1e-3
--batch 128 --seconds 600 --threads 2 --seed 42 --patience 20]
"""

import argparse
import json
import math
import random
import time

import torch
from torch import nn


def read(path):
    with open(path) as f:
        n_items = int(f.readline())
        seqs = [[int(x) for x in line.split()] for line in f]
    return n_items, seqs


def windows(train, max_len):
    """(input, target) rows of max_len from each training sequence, newest window first."""
    rows = []
    for s in train:
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            rows.append(s[start:end])
            end = start + 1 if start > 0 else 0
    return rows


class SASRec(nn.Module):
    def __init__(self, n_items, d, layers, heads, max_len, dropout):
        super().__init__()
        self.d = d
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d, heads, 4 * d, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        nn.init.normal_(self.item.weight, std=d**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, x):
        b, t = x.shape
        pos = torch.arange(t, device=x.device)
        h = self.drop(self.item(x) * math.sqrt(self.d) + self.pos(pos)[None])
        causal = torch.triu(torch.full((t, t), float("-inf")), 1)
        h = self.blocks(h, mask=causal, src_key_padding_mask=None)
        return self.norm(h)

    def logits(self, h):
        return h @ self.item.weight[1:].T


def pad_left(rows, t):
    out = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        r = r[-t:]
        out[i, t - len(r):] = torch.tensor(r, dtype=torch.long)
    return out


@torch.no_grad()
def evaluate(model, histories, targets, max_len, filter_history, batch=256):
    model.eval()
    ranks = []
    order = sorted(range(len(histories)), key=lambda i: len(histories[i]))
    for k in range(0, len(order), batch):
        idx = order[k:k + batch]
        x = pad_left([[i + 1 for i in histories[j][-max_len:]] for j in idx], max_len)
        scores = model.logits(model(x)[:, -1])
        if filter_history:
            for r, j in enumerate(idx):
                scores[r, torch.tensor(histories[j], dtype=torch.long)] = float("-inf")
        tgt = torch.tensor([targets[j] for j in idx], dtype=torch.long)
        t = scores.gather(1, tgt[:, None])
        rank = (scores > t).sum(1) + (scores == t).sum(1) - 1
        ranks.extend(rank.tolist())
    model.train()
    ndcg = sum(1.0 / math.log2(r + 2) for r in ranks if r < 10) / len(ranks)
    hr = sum(1 for r in ranks if r < 10) / len(ranks)
    return {"ndcg@10": ndcg, "hr@10": hr, "users": len(ranks)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)

    n_items, seqs = read(a.sequences)
    train = [s[:-2] if len(s) >= 3 else s[:1] for s in seqs]
    valid = [(s[:-2], s[-2]) for s in seqs if len(s) >= 3]
    test = [(s[:-1], s[-1]) for s in seqs if len(s) >= 2]
    rows = [[i + 1 for i in r] for r in windows(train, a.max_len)]
    model = SASRec(n_items, a.d, a.layers, a.heads, a.max_len, a.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / a.warmup))
    loss_fn = nn.CrossEntropyLoss(ignore_index=-1)

    started = time.perf_counter()
    train_time = 0.0
    curve, best, best_state, since = [], -1.0, None, 0
    seen_rows = seen_tokens = 0
    epoch, out_of_time = 0, False
    while not out_of_time and since < a.patience:
        epoch += 1
        random.shuffle(rows)
        t0 = time.perf_counter()
        total, steps = 0.0, 0
        for k in range(0, len(rows), a.batch):
            chunk = rows[k:k + a.batch]
            x = pad_left([r[:-1] for r in chunk], a.max_len)
            y = pad_left([r[1:] for r in chunk], a.max_len) - 1  # padding becomes -1, ignored
            logits = model.logits(model(x))
            loss = loss_fn(logits.reshape(-1, n_items), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item()
            steps += 1
            seen_rows += len(chunk)
            seen_tokens += sum(len(r) - 1 for r in chunk)
            if time.perf_counter() - started >= a.seconds:
                out_of_time = True
                break
        train_time += time.perf_counter() - t0
        v = evaluate(model, [h for h, _ in valid], [t for _, t in valid], a.max_len, False)
        curve.append({"epoch": epoch, "elapsed": time.perf_counter() - started, "loss": total / max(steps, 1),
                      "valid_ndcg10": v["ndcg@10"]})
        print(f"peer epoch {epoch:3d}  loss {total / max(steps, 1):.4f}  valid NDCG@10 {v['ndcg@10']:.4f}  "
              f"{seen_rows / train_time:.0f} seq/s  {seen_tokens / train_time:.0f} tok/s  "
              f"{time.perf_counter() - started:.0f}s", flush=True)
        if v["ndcg@10"] > best:
            best, since = v["ndcg@10"], 0
            best_state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            since += 1
    model.load_state_dict(best_state)
    hist, tgt = [h for h, _ in test], [t for _, t in test]
    result = {
        "model": "PyTorch SASRec, full-softmax cross-entropy (scripts/bench/sasrec.py)",
        "torch": torch.__version__,
        "threads": a.threads,
        "config": vars(a),
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": epoch,
        "train_seconds": train_time,
        "seqs_per_sec": seen_rows / train_time,
        "tokens_per_sec": seen_tokens / train_time,
        "padding": 1.0 - seen_tokens / (seen_rows * a.max_len),
        "best_valid_ndcg10": best,
        "curve": curve,
        "test": evaluate(model, hist, tgt, a.max_len, False),
        "test_filtered": evaluate(model, hist, tgt, a.max_len, True),
    }
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
