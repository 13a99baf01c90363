#!/usr/bin/env bash
# Issue 6's measurements on MovieLens-100k (2 cores):
#  1. training throughput, 1 process x 2 threads vs 2 processes x 1 thread (data-parallel over Gloo on 127.0.0.1),
#     same config and global batch, 3 epochs each, alternated twice so that both see the same machine;
#  2. all-reduce time and bandwidth over loopback for the model's gradient size (and 25 MB, PyTorch's bucket size).
#  3. with QUALITY=1: the whole movielens.toml run both ways, and its test metrics (QUALITY_ONLY=1: only this part).
# Usage: scripts/measure/distributed.sh OUT_DIR [SHARED_DATA]   (about 5 minutes; QUALITY=1 adds about 12)
set -euo pipefail
out=${1:?usage: distributed.sh OUT_DIR [SHARED_DATA]}
shared=${2:-../shared/data}
m6rec=${M6REC:-target/debug/m6rec}
check=${C10D_CHECK:-target/debug/c10d-check}
cfg=${CONFIG:-docs/configs/movielens.toml}
epochs=${EPOCHS:-3}
mkdir -p "$out"
[ -d "$out/ml" ] || "$m6rec" import movielens "$shared/ml-100k" --out "$out/ml" >/dev/null
port=$((29000 + RANDOM % 2000))

one() { # 1 process x 2 threads
  rm -rf "$out/one"
  "$m6rec" --threads 2 train --data "$out/ml" --config "$cfg" --out "$out/one" --epochs "$epochs" --device cpu >/dev/null
  python3 -c 'import json,sys; h=json.load(open(sys.argv[1]))["history"]; print(sum(r["seqs_per_sec"] for r in h[1:])/len(h[1:]))' "$out/one/state.json"
}
two() { # 2 processes x 1 thread
  rm -rf "$out/two"; port=$((port + 1))
  for r in 1 0; do
    RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$m6rec" --threads 1 train --data "$out/ml" --config "$cfg" --out "$out/two" --epochs "$epochs" --device cpu >/dev/null &
  done
  wait
  python3 -c 'import json,sys; h=json.load(open(sys.argv[1]))["history"]; print(sum(r["seqs_per_sec"] for r in h[1:])/len(h[1:]))' "$out/two/state.json"
}
if [ "${QUALITY_ONLY:-0}" != 1 ]; then
: > "$out/throughput.txt"
for round in 1 2; do
  a=$(one); b=$(two)
  echo "round $round: 1x2 threads $a seq/s, 2x1 thread $b seq/s, ratio $(python3 -c "print(round($b/$a, 3))")" | tee -a "$out/throughput.txt"
done

# Gradient size: every float of the trained model (all of it trains).
floats=$(python3 - "$out/two/last.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read(8); n = struct.unpack("<Q", b)[0]
h = json.loads(open(sys.argv[1], "rb").read(8 + n)[8:])
print(sum((v["data_offsets"][1] - v["data_offsets"][0]) // 4 for k, v in h.items() if k != "__metadata__"))
PY
)
mb=$(python3 -c "print(round($floats * 4 / 1e6, 3))")
echo "model gradient: $floats floats = $mb MB" | tee "$out/allreduce.txt"
port=$((port + 1))
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$check" bandwidth --mb "$mb,25" >/dev/null &
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$check" bandwidth --mb "$mb,25" | tee -a "$out/allreduce.txt"
wait
fi

# 3. (QUALITY=1) the whole movielens.toml run (280 s budget, early stopping) both ways, then test NDCG@10: the same
#    global batches, so what changes is how many epochs the budget buys.
if [ "${QUALITY:-0}" = 1 ]; then
  for setup in one two; do
    rm -rf "$out/q-$setup"; port=$((port + 1))
    if [ $setup = one ]; then
      "$m6rec" --threads 2 train --data "$out/ml" --config "$cfg" --out "$out/q-one" --device cpu >/dev/null
    else
      for r in 1 0; do
        RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
          "$m6rec" --threads 1 train --data "$out/ml" --config "$cfg" --out "$out/q-two" --device cpu >/dev/null &
      done
      wait
    fi
    epochs=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["epoch"], s["best_epoch"], round(s["elapsed"]))' "$out/q-$setup/state.json")
    "$m6rec" --threads 2 eval --checkpoint "$out/q-$setup" --data "$out/ml" --no-baseline --json "$out/q-$setup.json" >/dev/null
    python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); m=m[0] if isinstance(m,list) else m; print(sys.argv[2], "epochs/best/seconds", sys.argv[3], "test", json.dumps(m)[:300])' "$out/q-$setup.json" "$setup" "$epochs" | tee -a "$out/quality.txt"
  done
fi
