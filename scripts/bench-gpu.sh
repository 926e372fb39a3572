#!/usr/bin/env bash
# GPU decoding benchmark on random-weight checkpoints with published shapes (no downloads).
# Run on the GPU machine from the repository root, with the stripped CUDA binary at
# .device/unmask-cuda (scripts/build-cuda.sh puts it there):
#   scripts/bench-gpu.sh [PRESET...]        default: sdar-1.7b-chat dream-v0-instruct-7b
# Environment: CKPT_DIR (random checkpoints, default /tmp/unmask-random), RESULTS (default $OUT
# when set, else bench-results/), PROMPT_TOKENS (128), GEN (256), SETTINGS (see `unmask bench`).
# Writes RESULTS/<preset>.md (markdown table) and RESULTS/<preset>.json.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN="$ROOT/scripts/run-cuda.sh $ROOT/.device/unmask-cuda"
CKPT_DIR=${CKPT_DIR:-/tmp/unmask-random}
RESULTS=${RESULTS:-${OUT:-$ROOT/bench-results}}
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
GEN=${GEN:-256}
SETTINGS=${SETTINGS:-ar,b4-s4,b4-t0.9,b8-s8,b8-t0.9,b32-s32,b32-t0.9,b32-s8}
mkdir -p "$RESULTS" "$CKPT_DIR"
[ $# -gt 0 ] || set -- sdar-1.7b-chat dream-v0-instruct-7b

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$RESULTS/gpu.txt"
for preset in "$@"; do
  dir=$CKPT_DIR/$preset
  if [ ! -f "$dir/config.json" ]; then
    echo "== writing random $preset weights (bf16) to $dir"
    t=$(date +%s)
    $RUN make-random-checkpoint --like "$preset" --out "$dir" --dtype bf16 >/dev/null
    echo "   $(du -sh "$dir" | cut -f1) in $(( $(date +%s) - t )) s"
  fi
  echo "== bench $preset"
  # Random weights never emit an end token reliably: `unmask bench` decodes the full length.
  $RUN bench --model "$dir" --device cuda --dtype bf16 --prompt-tokens "$PROMPT_TOKENS" \
    --gen-length "$GEN" --settings "$SETTINGS" --json "$RESULTS/$preset.json" | tee "$RESULTS/$preset.md"
done
