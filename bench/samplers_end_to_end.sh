#!/usr/bin/env bash
# `itransfer train` on the bundled default (tiny T5, bundled SNI slice, CPU) for every sampler,
# with and without unsupervised mixing, STEPS steps each; then one run stopped half-way and
# resumed, compared with its uninterrupted twin. Prints one line per run (wall time, losses).
#   bash bench/samplers_end_to_end.sh [STEPS] [OUT_DIR]
set -euo pipefail
STEPS=${1:-200}
OUT=${2:-$(mktemp -d)}
IT=${ITRANSFER:-.venv/bin/itransfer}
COMMON=(--set train.steps="$STEPS" --set train.warmup_steps=20 --set train.log_every=10
        --set model.max_source_length=256 --set train.tensorboard=false)
summary() {  # first and last logged loss of a run
  python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; \
print(f'loss {r[0][\"loss\"]:.3f} -> {r[-1][\"loss\"]:.3f}')" "$1/train_log.jsonl"
}
for sampler in proportional uniform "temperature, temperature: 2" \
               "reverse_annealing, max_temperature: 1000" dwa \
               "examples_proportional_capped, cap: 100" unimax; do
  for every in null 3; do
    name=$(echo "$sampler" | cut -d, -f1)-mix$every
    start=$(date +%s)
    "$IT" train --out "$OUT/$name" "${COMMON[@]}" --set "train.sampler={name: $sampler}" \
      --set train.mixing.every=$every 2>/dev/null
    echo "$name: $(( $(date +%s) - start )) s, $(summary "$OUT/$name")"
  done
done
"$IT" train --out "$OUT/resumed" "${COMMON[@]}" --set train.log_every=1 \
  --set train.mixing.every=3 --set train.checkpoint_every=$((STEPS / 2)) 2>/dev/null &
pid=$!
while [ ! -d "$OUT/resumed/checkpoints/step-$(printf %07d $((STEPS / 2)))" ]; do sleep 1; done
kill -INT $pid; wait $pid || true
"$IT" train --out "$OUT/resumed" "${COMMON[@]}" --set train.log_every=1 \
  --set train.mixing.every=3 --set train.checkpoint_every=$((STEPS / 2)) --resume 2>/dev/null
"$IT" train --out "$OUT/straight" "${COMMON[@]}" --set train.log_every=1 \
  --set train.mixing.every=3 --set train.checkpoint_every=$((STEPS / 2)) 2>/dev/null
python3 - "$OUT" <<'PY'
import json, sys
a = [json.loads(l) for l in open(f"{sys.argv[1]}/straight/train_log.jsonl")]
b = [json.loads(l) for l in open(f"{sys.argv[1]}/resumed/train_log.jsonl")]
assert [r["step"] for r in a] == [r["step"] for r in b]
gap = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
print(f"resume after Ctrl-C: {len(b)} steps, max |loss difference| vs uninterrupted = {gap:.2e}")
PY
