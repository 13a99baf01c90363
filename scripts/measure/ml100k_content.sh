#!/usr/bin/env bash
# Issue 4's MovieLens-100k measurements: id-only vs text-only vs text+image vs hybrid, on all targets and with 20% of
# the items held out of training (cold start). Usage: scripts/measure/ml100k_content.sh OUT_DIR [SHARED_DATA]
# Each run stops at train.max_seconds = 280; the whole script takes about 45 minutes on 2 cores.
set -euo pipefail
out=${1:?usage: ml100k_content.sh OUT_DIR [SHARED_DATA]}
shared=${2:-../shared/data}
m6rec=${M6REC:-target/debug/m6rec}
mkdir -p "$out"
data="$out/ml-100k"
if [ ! -d "$data" ]; then
  "$m6rec" import movielens "$shared/ml-100k" -o "$data" --images "$shared/ml-100k-tmdb/posters" \
    --item-text "$shared/ml-100k-tmdb/items_tmdb.csv" --id-column movie_id --text-column overview --domain movies
  "$m6rec" features "$data" --config docs/configs/movielens-features.toml --text-model .m6rec/models/all-MiniLM-L6-v2
fi
run() { # name config [extra train args]
  local name=$1 cfg=$2; shift 2
  [ -f "$out/eval-$name.json" ] && return 0
  "$m6rec" train --data "$data" --config "$cfg" --out "$out/run-$name" --summary-json "$out/sum-$name.json" "$@" \
    > "$out/train-$name.log" 2>&1
  "$m6rec" eval --checkpoint "$out/run-$name" --data "$data" --json "$out/eval-$name.json" --plot "$out/eval-$name.svg" \
    > "$out/eval-$name.log" 2>&1
}
for cold in 0 0.2; do
  sfx=$([ "$cold" = 0 ] && echo "" || echo "-cold")
  run "id$sfx" docs/configs/movielens.toml --cold-items "$cold"
  run "text$sfx" docs/configs/movielens-content-only.toml --cold-items "$cold"
  run "text-image$sfx" docs/configs/movielens-text-image.toml --cold-items "$cold"
  run "hybrid$sfx" docs/configs/movielens-hybrid-text-image.toml --cold-items "$cold"
done
echo done > "$out/done"
