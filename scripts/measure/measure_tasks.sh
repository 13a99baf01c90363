#!/bin/bash
# Side-by-side: next_item / masked_item / masked+next / prefix_lm, same model and time budget, per dataset.
set -u
source "$(dirname "$0")/datasets.sh"
SECS=${SECS:-120}
for ds in ml sci toys; do
  for task in next_item masked_item masked_mix prefix_lm; do
    cfg=$OUT/$ds-$task.toml
    cp docs/configs/movielens.toml $cfg
    sed -i "s/^max_seconds = .*/max_seconds = $SECS/" $cfg
    case $task in
      masked_item) sed -i 's/^loss = .*/&\ntask = { type = "masked_item" }/' $cfg;;
      masked_mix) sed -i 's/^loss = .*/&\ntask = { type = "masked_item", next_item_weight = 0.5 }/' $cfg;;
      prefix_lm) sed -i 's/^loss = .*/&\ntask = { type = "prefix_lm" }/' $cfg;;
    esac
    run=$OUT/run-$ds-$task
    rm -rf $run
    $M train --data $OUT/$ds --config $cfg --out $run > $OUT/$ds-$task.train.log 2>&1
    $M eval --checkpoint $run --data $OUT/$ds --json $OUT/$ds-$task.json > $OUT/$ds-$task.eval.log 2>&1
    $M eval --checkpoint $run --data $OUT/$ds --filter-history --json $OUT/$ds-$task.filt.json > /dev/null 2>&1
    echo "$ds $task $(tail -2 $OUT/$ds-$task.eval.log | tr '\n' ' ')"
  done
done
echo done
