#!/usr/bin/env bash
# The window's race against `unmask bench` for the same settings: autoregressive (block 1, 1 step)
# and block 8 / 4 steps, GEN tokens (default 1000: at ~1 ms per autoregressive token a 256-token
# lane lasts a quarter of a second, too short to time), end-of-text stopping off, interleaved RUNS times. The race
# runs under Xvfb (`unmask gui --race --quit-when-done --report`); bench's ratio is its two rows'
# tokens/s. Usage: scripts/race-bench.sh [BIN] [OUT] [RUNS] [GEN]
set -euo pipefail
BIN=${1:-target/release/unmask}
OUT=${2:-/tmp/unmask-race-bench}
RUNS=${3:-3}
GEN=${4:-1000}
mkdir -p "$OUT"
export XDG_DATA_HOME="$OUT/data"
rm -rf "$XDG_DATA_HOME"
DISPLAY_NUM=:96
Xvfb "$DISPLAY_NUM" -screen 0 1600x1000x24 >/dev/null 2>&1 &
XVFB=$!
trap 'kill $XVFB' EXIT
sleep 1
echo "load average before: $(cat /proc/loadavg)"
for i in $(seq 1 "$RUNS"); do
    "$BIN" bench --settings ar,b8-s4 --gen-length "$GEN" --prompt-tokens 8 --json "$OUT/bench-$i.json" >/dev/null 2>&1
    DISPLAY=$DISPLAY_NUM "$BIN" gui --prompt $'def fibonacci(n):\n' --gen-length "$GEN" --block-size 8 --steps 4 \
        --rule low-confidence --repetition-penalty 1 --no-stop --race --quit-when-done --report "$OUT/race-$i.json" 2>/dev/null
    python3 - "$OUT/bench-$i.json" "$OUT/race-$i.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))["rows"]
r = json.load(open(sys.argv[2]))["race"]
ratio = b[1]["tokens_per_second"] / b[0]["tokens_per_second"]
print(f"bench: ar {b[0]['tokens_per_second']:.1f} b8-s4 {b[1]['tokens_per_second']:.1f} tok/s -> x{ratio:.2f} | "
      f"race: ar {r['ar_tokens_per_second']:.1f} diffusion {r['diffusion_tokens_per_second']:.1f} tok/s -> "
      f"x{r['speedup']:.2f} ({100 * (r['speedup'] / ratio - 1):+.0f}%)")
PY
done
echo "load average after: $(cat /proc/loadavg)"
