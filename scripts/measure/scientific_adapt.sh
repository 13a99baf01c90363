#!/usr/bin/env bash
# Issue 7's adaptation measurement: a model pretrained on MovieLens-100k (content_only over MiniLM text) adapted to
# Amazon Scientific by `m6rec adapt` with soft prompts only, with full fine-tuning, and trained from scratch, all with
# the same time budget; test NDCG@10 with full ranking.
# Usage: scripts/measure/scientific_adapt.sh OUT_DIR PRETRAINED_CHECKPOINT [SHARED_DATA]
set -euo pipefail
out=${1:?usage: scientific_adapt.sh OUT_DIR PRETRAINED_CHECKPOINT [SHARED_DATA]}
pre=${2:?pretrained checkpoint (for example the text run of ml100k_content.sh)}
shared=${3:-../shared/data}
m6rec=${M6REC:-target/debug/m6rec}
budget=${BUDGET:-280}
methods=${METHODS:-prompt full scratch}
mkdir -p "$out"
data="$out/scientific"
if [ ! -d "$data.features" ]; then
  "$m6rec" import unisrec "$shared/amazon-scientific" -o "$data"
  "$m6rec" features "$data" --text-model .m6rec/models/all-MiniLM-L6-v2
fi
for method in $methods; do
  [ -f "$out/eval-$method.json" ] && continue
  lr=$([ "$method" = prompt ] && echo "--lr 0.01" || echo "")
  # shellcheck disable=SC2086
  "$m6rec" adapt --from "$pre" --data "$data" --method "$method" $lr --max-seconds "$budget" \
    --out "$out/run-$method" > "$out/adapt-$method.log" 2>&1
  "$m6rec" eval --checkpoint "$out/run-$method" --data "$data" --json "$out/eval-$method.json" > "$out/eval-$method.log" 2>&1
done
grep -h "parameters trained" "$out"/adapt-*.log || true
for method in $methods; do
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], 'test NDCG@10 %.4f HR@10 %.4f (popularity %.4f)' % (m['model']['ndcg@10'], m['model']['hr@10'], m['popularity']['ndcg@10']))" "$out/eval-$method.json" "$method"
done
