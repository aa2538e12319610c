#!/usr/bin/env bash
# Judge one trial by the ship rule and append its row to research/trials.csv.
#   bash research/judge.sh NAME CHECKPOINT [NOTE]
# PRISTINE defaults to ../shared/data/pristine; COST to runs/cost.csv (made once by
# benchmarks/loss_cost.py, see research/ship_rule_trials.md); THREADS to 2.
set -euo pipefail
name=$1; ckpt=$2; note=${3:-}
pristine=${PRISTINE:-../shared/data/pristine}
cost=${COST:-runs/cost.csv}
export OMP_NUM_THREADS=${THREADS:-2}
py=${PYTHON:-.venv/bin/python}
start=$(date +%s)
"$py" -m pretrain.cli validity --checkpoint "$ckpt" --images "$pristine" --holdout-every 5 --max-images 16 \
    --levels 6 --max-side 256 --out "runs/val_$name" > "runs/val_$name.log" 2>&1
"$py" -m pretrain.cli robustness --checkpoint "$ckpt" --images "$pristine" --views 0 2 --eps 4 \
    --out "runs/rob_$name" > "runs/rob_$name.log" 2>&1
echo "judged in $(( ($(date +%s) - start) / 60 )) min"
"$py" -m pretrain.cli verdict --checkpoint "$ckpt" --robustness "runs/rob_$name" --validity "runs/val_$name" \
    --loss-cost "$cost" --record research/trials.csv --trial "$name" --note "$note" || true
