#!/usr/bin/env bash
# Issue 6's measurements on MovieLens-100k (2 cores):
#  1. training throughput, 1 process x 2 threads vs 2 processes x 1 thread (data-parallel over Gloo on 127.0.0.1),
#     same config and global batch, 3 epochs each, alternated twice so that both see the same machine;
#  2. all-reduce time and bandwidth over loopback for the model's gradient size (and 25 MB, PyTorch's bucket size).
# Usage: scripts/measure/distributed.sh OUT_DIR [SHARED_DATA]   (about 5 minutes)
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
