#!/usr/bin/env bash
# GPU check and benchmark, run ON the GPU machine from the repository root:
#   bash scripts/gpu-bench.sh BIN OUT
# BIN: unmask built with --features cuda (scripts/build-cuda.sh); OUT: where results go.
# 1. parity: CUDA f32 logits of the tiny fixtures vs the reference golden logits;
# 2. the embedded model on CUDA vs CPU (same tokens under greedy decoding), and its speed;
# 3. random-weight checkpoints with SDAR-1.7B and Dream-7B shapes (bf16): tokens/s, forwards,
#    ms per forward and peak GPU memory for AR vs block diffusion.
set -uo pipefail
BIN=$1; FINAL=$2; OUT=$(mktemp -d); mkdir -p "$FINAL"
trap 'cp "$OUT"/gpu.txt "$OUT"/parity.txt "$OUT"/embedded.txt "$OUT"/bandwidth.txt "$OUT"/bench.md "$FINAL"/ 2>/dev/null; tar czf "$FINAL/raw.tgz" -C "$OUT" .' EXIT
RUN="bash scripts/run-cuda.sh $BIN"
[ -f scripts/run-cuda.sh ] || RUN="bash .device/run-cuda.sh $BIN"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
echo "== device-to-device copy bandwidth (for the bandwidth bound)"
python3 - <<'PY' | tee "$OUT/bandwidth.txt"
import torch
x = torch.empty(4 * 1024**3, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(10): y.copy_(x)
e.record(); torch.cuda.synchronize()
ms = s.elapsed_time(e) / 10
print(f"copy of 4 GiB: {ms:.2f} ms -> {2 * 4 * 1024**3 / (ms / 1e3) / 1e9:.0f} GB/s counting bytes read and written")
PY

echo "== parity on CUDA (f32)"
for f in llada dream sdar; do
  ids=$(python3 -c "import json;print(','.join(map(str,json.load(open('tests/fixtures/$f/golden.json'))['input_ids'])))")
  $RUN forward --device cuda --dtype f32 --model tests/fixtures/$f --ids "$ids" --out "$OUT/$f-cuda.safetensors" 2>&1 | tail -1 >&2
  python3 - "$f" "$OUT/$f-cuda.safetensors" <<'PY'
import sys
from safetensors.numpy import load_file
import numpy as np
f, path = sys.argv[1], sys.argv[2]
ours = load_file(path)["logits"]; ref = load_file(f"tests/fixtures/{f}/golden.safetensors")["logits"][:, : load_file(path)["logits"].shape[1]]
print(f"{f}: relative error CUDA vs reference = {np.linalg.norm(ours - ref) / np.linalg.norm(ref):.2e}")
PY
done | tee "$OUT/parity.txt"

echo "== embedded model, CUDA vs CPU"
P='def quicksort(items):'
for dev in cpu cuda; do
  $RUN generate --model assets --device $dev --dtype f32 --prompt "$P" --gen-length 128 --block-size 8 --steps 4 --no-stop --json > "$OUT/embedded-$dev.json" 2>/dev/null
done
python3 - "$OUT" <<'PY' | tee "$OUT/embedded.txt"
import json, sys
a = json.load(open(sys.argv[1] + "/embedded-cpu.json")); b = json.load(open(sys.argv[1] + "/embedded-cuda.json"))
same = sum(x == y for x, y in zip(a["ids"], b["ids"]))
print(f"greedy ids equal on CPU and CUDA: {same}/{len(a['ids'])}; CPU {a['tokens_per_second']:.0f} tok/s, CUDA {b['tokens_per_second']:.0f} tok/s")
PY

bench() {  # model label settings...
  local model=$1 label=$2 prompt; shift 2
  prompt=$(python3 -c "print(','.join(str(1000 + i) for i in range(64)))")
  for cfg in "$@"; do
    IFS=: read -r name b s rule <<<"$cfg"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/mem-$label-$name.txt" &
    smi=$!
    $RUN generate --device cuda --model "$model" --prompt-ids "$prompt" --gen-length 256 --block-size $b --steps $s \
      --rule $rule --threshold 0.9 --no-stop --json > "$OUT/$label-$name.json" 2> "$OUT/$label-$name.err"
    kill $smi; wait $smi 2>/dev/null
    python3 - "$OUT" "$label" "$name" <<'PY'
import json, sys
o, label, name = sys.argv[1:]
r = json.load(open(f"{o}/{label}-{name}.json"))
mem = max(int(x) for x in open(f"{o}/mem-{label}-{name}.txt").read().split() if x.strip().isdigit())
print(f"| {label} | {name} | {r['tokens_per_second']:.1f} | {r['forwards']} | {r['total_ms'] / r['forwards']:.2f} | {len(r['ids']) / r['forwards']:.2f} | {mem} |")
PY
  done
}
echo "== random-weight checkpoints"
# Shapes from src/presets.rs, written by the same command scripts/bench-gpu.sh uses.
$RUN make-random-checkpoint --like sdar-1.7b-chat --out /tmp/sdar-1.7b --dtype bf16 >/dev/null
$RUN make-random-checkpoint --like dream-v0-instruct-7b --out /tmp/dream-7b --dtype bf16 >/dev/null
{
  echo "| model | setting | tokens/s | forwards | ms/forward | tokens/forward | peak GPU MiB |"
  echo "|---|---|---|---|---|---|---|"
  bench /tmp/sdar-1.7b sdar-1.7b "ar:1:1:low-confidence" "b4s2:4:2:low-confidence" "b8s4:8:4:low-confidence" \
    "b32s16:32:16:low-confidence" "b32s8:32:8:low-confidence" "b8thr:8:8:threshold" "b32thr:32:32:threshold"
  bench /tmp/dream-7b dream-7b "ar:1:1:low-confidence" "b4s2:4:2:low-confidence" "b8s4:8:4:low-confidence" \
    "b32s8:32:8:low-confidence"
} | tee "$OUT/bench.md"
