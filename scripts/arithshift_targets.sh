#!/usr/bin/env bash
# Issue 20's measurements on ArithShift's held-out test (`ood`), 3 seeds: TT-SI with answer-check, without
# verification and with consistency, the base model, TT-ICL and the oracle, gated by the token gate against the
# shipped reference profile (every run also records the base model's answers, so each is paired with base). Then
# one report. Usage: scripts/arithshift_targets.sh [OUT] [LIMIT] [LIMIT2]   (OUT: runs/arithshift; LIMIT: first N
# items only; LIMIT2: the first N items for consistency, tt-icl and the oracle, default 200 of the 400)
set -euo pipefail
OUT=${1:-runs/arithshift}
LIMIT=${2:+--limit $2}
LIMIT2="--limit ${3:-200}"
M=src/ttsi/assets/arithshift-base
TTSI=${TTSI:-ttsi}
GATE="--measure token --reference $M/token_profile.json"
COMMON="--model $M --benchmark arithshift:ood --seeds 0,1,2 --lr 1e-3 --batch 8 $LIMIT"
# run DIR OPTIONS...: one run into $OUT/DIR, continued where an interrupted one stopped
run() { local dir="$OUT/$1"; shift; $TTSI eval $COMMON "$@" --out "$dir" $([ -f "$dir/run.json" ] && echo --resume); }
run tt-si-answer-check --method tt-si $GATE --verify answer-check --label tt-si+answer-check
run tt-si-none --method tt-si $GATE --verify none --label tt-si+none
run base --method base $GATE
run tt-si-consistency --method tt-si $GATE --verify consistency --label tt-si+consistency $LIMIT2
run tt-icl --method tt-icl $GATE --verify answer-check $LIMIT2
run oracle --method oracle $GATE $LIMIT2
$TTSI report "$OUT"/{base,tt-si-none,tt-si-answer-check,tt-si-consistency,tt-icl,oracle} --out "$OUT/report"
