#!/bin/bash
# Semantic IDs from residual k-means against RQ-VAE codes, the same generative model and time budget, per dataset
# (docs/configs/movielens-generative.toml with max_seconds = SECS, default 120). Imports and feature caches are
# made in OUT when missing (as measure_tasks.sh / measure_gen.sh make them).
set -u
source "$(dirname "$0")/datasets.sh"
for ds in ${DATASETS:-toys sci ml}; do
  [ -d $OUT/$ds.features ] || $M features $OUT/$ds --text-model .m6rec/models/all-MiniLM-L6-v2 > $OUT/$ds.features.log 2>&1
  for codes in kmeans rqvae; do
    cfg=$OUT/$ds-gen-$codes.toml
    cp docs/configs/movielens-generative.toml $cfg
    sed -i "s/^max_seconds = .*/max_seconds = ${SECS:-120}/" $cfg
    [ $codes = rqvae ] && sed -i 's/^semantic_ids = { \(.*\) }/semantic_ids = { \1, method = "rqvae" }/' $cfg
    run=$OUT/run-$ds-gen-$codes
    $M train --data $OUT/$ds --config $cfg --out $run --force > $OUT/$ds-gen-$codes.train.log 2>&1
    $M eval --checkpoint $run --data $OUT/$ds --json $OUT/$ds-gen-$codes.json > $OUT/$ds-gen-$codes.eval.log 2>&1
    $M eval --checkpoint $run --data $OUT/$ds --filter-history --json $OUT/$ds-gen-$codes.filt.json > $OUT/$ds-gen-$codes.filt.log 2>&1
    echo "$ds $codes $(grep -E "semantic IDs|level [123]:" $OUT/$ds-gen-$codes.train.log | head -4 | tr '\n' ' ')"
    echo "$ds $codes $(grep -A3 NDCG $OUT/$ds-gen-$codes.eval.log | head -3 | tr '\n' ' ')"
    echo "$ds $codes filtered $(grep -A3 NDCG $OUT/$ds-gen-$codes.filt.log | head -3 | tr '\n' ' ')"
  done
done
echo done
