#!/usr/bin/env bash
# Trains the variance study's runs: CE and ICL (defaults) for SEEDS, two at a time, each
# evaluated on a large evaluation set (200 recordings x all 10 seconds x 9 devices) whose
# per-clip probabilities clip_probs.py saves for study.py.
#   bash benchmarks/power/train.sh OUT [SEEDS...]
set -euo pipefail
out=${1:?output folder}; shift
seeds=("${@:-0 1 2 3 4}")
here=$(cd "$(dirname "$0")" && pwd)
export HARNESS_PLUGINS="$here/clip_probs.py"
big_eval=(--set dataset.eval_recordings=200 --set dataset.eval_clips_per_device=2000)
one() {
    harness run --method "$1" --seed "$2" --protocol device-logloss,clip-probs \
        --set run.threads=1 "${big_eval[@]}" \
        --set protocol.clip-probs.folder="$out/probs" --set protocol.clip-probs.tag="$1-$2" \
        --out "$out/runs" > "$out/log-$1-$2.txt" 2>&1
}
mkdir -p "$out"
for seed in ${seeds[*]}; do
    one ce "$seed" & one icl "$seed" & wait
done
