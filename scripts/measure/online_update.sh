#!/usr/bin/env bash
# Issue 7's online-update measurement on MovieLens-100k. Per user (events in chronological order, equal timestamps in
# file order), the last event is "the following item"; the 10% of events before it are "new events"; the rest is the
# base dataset a model is trained on. Then NDCG@10 on the following item (full ranking, history = base + new events)
# before and after `m6rec update` with the new events.
# Usage: scripts/measure/online_update.sh OUT_DIR [SHARED_DATA]   (about 10 minutes on 2 cores)
set -euo pipefail
out=${1:?usage: online_update.sh OUT_DIR [SHARED_DATA]}
shared=${2:-../shared/data}
m6rec=${M6REC:-target/debug/m6rec}
mkdir -p "$out/base-src"
cp "$shared"/ml-100k/u.item "$shared"/ml-100k/u.user "$shared"/ml-100k/u.genre "$out/base-src/" 2>/dev/null || true
python3 - "$shared/ml-100k/u.data" "$out" <<'PY'
import sys
from collections import defaultdict
src, out = sys.argv[1], sys.argv[2]
rows = [l.rstrip("\n").split("\t") for l in open(src) if l.strip()]
per_user = defaultdict(list)
for pos, (u, i, r, t) in enumerate(rows):
    per_user[u].append((int(t), pos))
keep, events = set(), []
for u, evs in per_user.items():
    evs.sort()  # by timestamp, then file position: a stable chronological order
    n = len(evs) - 1  # the last event is the following item, kept only in the full dataset
    k = max(1, round(0.1 * n))
    for t, pos in evs[: n - k]:
        keep.add(pos)
    events += [(t, pos, u, rows[pos][1]) for t, pos in evs[n - k : n]]
with open(f"{out}/base-src/u.data", "w") as f:
    for pos, row in enumerate(rows):
        if pos in keep:
            f.write("\t".join(row) + "\n")
events.sort()
with open(f"{out}/events.csv", "w") as f:
    f.write("user_id,item_id\n")
    for t, pos, u, i in events:
        f.write(f"{u},{i}\n")
print(f"base: {len(keep)} events, new events: {len(events)}, users: {len(per_user)}")
PY
[ -d "$out/full" ] || "$m6rec" import movielens "$shared/ml-100k" -o "$out/full"
[ -d "$out/base" ] || "$m6rec" import movielens "$out/base-src" -o "$out/base"
[ -f "$out/base-ck/model.safetensors" ] || "$m6rec" train --data "$out/base" --config docs/configs/movielens.toml \
  --out "$out/base-ck" > "$out/train-base.log" 2>&1
"$m6rec" eval --checkpoint "$out/base-ck" --data "$out/full" --json "$out/before.json" > "$out/before.log" 2>&1
"$m6rec" update --from "$out/base-ck" --events "$out/events.csv" --out "$out/updated-ck" > "$out/update.log" 2>&1
"$m6rec" eval --checkpoint "$out/updated-ck" --data "$out/full" --json "$out/after.json" > "$out/after.log" 2>&1
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
b, a = (json.load(open(f"{out}/{n}.json")) for n in ("before", "after"))
for k in ("ndcg@10", "hr@10"):
    print(f"{k}: before {b['model'][k]:.4f}, after {a['model'][k]:.4f}, popularity {a['popularity'][k]:.4f}")
PY
