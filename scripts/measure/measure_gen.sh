#!/bin/bash
# Generative retrieval (docs/configs/movielens-generative.toml) per dataset; run scripts/measure/measure_tasks.sh first (imports).
set -u
M=${M6REC:-target/release/m6rec}
OUT=${OUT:-/tmp/tasks}; mkdir -p $OUT
cd "$(dirname "$0")/../.."
for ds in ml sci toys; do
  [ -d $OUT/$ds.features ] || $M features $OUT/$ds --text-model .m6rec/models/all-MiniLM-L6-v2 > $OUT/$ds.features.log 2>&1
  cfg=$OUT/$ds-gen.toml
  cp docs/configs/movielens-generative.toml $cfg
  sed -i "s/^max_seconds = .*/max_seconds = ${SECS:-120}/" $cfg
  run=$OUT/run-$ds-gen
  $M train --data $OUT/$ds --config $cfg --out $run --force > $OUT/$ds-gen.train.log 2>&1
  $M eval --checkpoint $run --data $OUT/$ds --json $OUT/$ds-gen.json > $OUT/$ds-gen.eval.log 2>&1
  $M eval --checkpoint $run --data $OUT/$ds --filter-history --json $OUT/$ds-gen.filt.json > $OUT/$ds-gen.filt.log 2>&1
  echo "$ds $(grep -A3 NDCG $OUT/$ds-gen.eval.log | head -3 | tr '\n' ' ')"
done
echo done
