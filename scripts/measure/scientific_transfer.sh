#!/usr/bin/env bash
# Issue 4's transfer measurement: a model pretrained on MovieLens-100k (content_only over MiniLM text) evaluated on
# Amazon Scientific zero-shot, then fine-tuned, against Scientific-only training and popularity.
# Usage: scripts/measure/scientific_transfer.sh OUT_DIR PRETRAINED_CHECKPOINT [SHARED_DATA]
# CONFIG: the Scientific-only run's configuration; give it the pretrained model's (the default is the one with the
# text-similarity prior at a fixed scale, docs/configs/movielens-content-transfer.toml).
set -euo pipefail
out=${1:?usage: scientific_transfer.sh OUT_DIR PRETRAINED_CHECKPOINT [SHARED_DATA]}
pre=${2:?pretrained checkpoint (for example the text run of ml100k_content.sh)}
shared=${3:-../shared/data}
m6rec=${M6REC:-target/debug/m6rec}
budget=${BUDGET:-280}
config=${CONFIG:-docs/configs/movielens-content-transfer.toml}
mkdir -p "$out"
data="$out/scientific"
if [ ! -d "$data.features" ]; then
  "$m6rec" import unisrec "$shared/amazon-scientific" -o "$data"
  "$m6rec" features "$data" --text-model .m6rec/models/all-MiniLM-L6-v2
fi
"$m6rec" eval --zero-shot --checkpoint "$pre" --data "$data" --json "$out/eval-zero-shot.json" > "$out/eval-zero-shot.log" 2>&1
for name in scratch finetune; do
  [ -f "$out/eval-$name.json" ] && continue
  extra=$([ "$name" = finetune ] && echo "--init-from $pre" || echo "--config $config")
  # shellcheck disable=SC2086
  "$m6rec" train --data "$data" $extra --max-seconds "$budget" --out "$out/run-$name" \
    --summary-json "$out/sum-$name.json" > "$out/train-$name.log" 2>&1
  "$m6rec" eval --checkpoint "$out/run-$name" --data "$data" --json "$out/eval-$name.json" > "$out/eval-$name.log" 2>&1
done
echo done > "$out/done"
