#!/bin/bash
# Cold items on Scientific (--cold-items 0.2): id table, content-only tower, generative; after measure_tasks.sh and measure_gen.sh.
set -u
M=${M6REC:-target/release/m6rec}
OUT=${OUT:-/tmp/tasks}; mkdir -p $OUT
cd "$(dirname "$0")/../.."
for kind in id content gen; do
  case $kind in
    id) cfg=docs/configs/movielens.toml;;
    content) cfg=docs/configs/movielens-content-only.toml;;
    gen) cfg=docs/configs/movielens-generative.toml;;
  esac
  c=$OUT/cold-$kind.toml; cp $cfg $c; sed -i "s/^max_seconds = .*/max_seconds = 120/" $c
  grep -q "^max_seconds" $c || sed -i 's/^\[train\]/[train]\nmax_seconds = 120/' $c
  run=$OUT/run-sci-cold-$kind
  $M train --data $OUT/sci --config $c --out $run --force --cold-items 0.2 > $OUT/sci-cold-$kind.train.log 2>&1
  $M eval --checkpoint $run --data $OUT/sci --json $OUT/sci-cold-$kind.json > $OUT/sci-cold-$kind.eval.log 2>&1
  echo "$kind $(grep -A8 NDCG $OUT/sci-cold-$kind.eval.log | head -8 | tr '\n' ' ')"
done
echo done
