#!/usr/bin/env bash
# The window against headless decoding: the same 1,000-token run (block 8, 4 steps, end-of-text
# stopping off; the rule and repetition penalty pinned, since the window's own defaults differ) decoded by `unmask generate` and by `unmask gui --run --quit-when-done --report`
# under Xvfb (wgpu on lavapipe), interleaved, RUNS times each. Prints one line per run and the
# load average; the JSON files stay in OUT.
# Usage: scripts/window-bench.sh [BIN] [OUT] [RUNS]
set -euo pipefail
BIN=${1:-target/release/unmask}
OUT=${2:-/tmp/unmask-window-bench}
RUNS=${3:-3}
mkdir -p "$OUT"
# A fresh settings folder, so the window decodes exactly the flags below.
export XDG_DATA_HOME="$OUT/data"
rm -rf "$XDG_DATA_HOME"
DISPLAY_NUM=:97
Xvfb "$DISPLAY_NUM" -screen 0 1600x1000x24 >/dev/null 2>&1 &
XVFB=$!
trap 'kill $XVFB' EXIT
sleep 1
FLAGS=(--prompt $'def fibonacci(n):\n' --gen-length 1000 --block-size 8 --steps 4 --rule low-confidence --repetition-penalty 1 --no-stop)
echo "load average before: $(cat /proc/loadavg)"
for i in $(seq 1 "$RUNS"); do
    "$BIN" generate "${FLAGS[@]}" --json >"$OUT/headless-$i.json"
    DISPLAY=$DISPLAY_NUM "$BIN" gui "${FLAGS[@]}" --run --quit-when-done --report "$OUT/window-$i.json"
    python3 - "$OUT/headless-$i.json" "$OUT/window-$i.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
w = json.load(open(sys.argv[2]))
r = w["run"]
print(f"headless {h['tokens_per_second']:.1f} tok/s | window {r['tokens_per_second']:.1f} tok/s "
      f"({100 * r['tokens_per_second'] / h['tokens_per_second']:.0f}%) | frames {w['frames']} "
      f"median {w['frame_ms_median']:.1f} ms max {w['frame_ms_max']:.1f} ms | UI CPU "
      f"{w['ui_thread_cpu_s']:.2f} s of {w['wall_s']:.1f} s ({100 * w['ui_thread_cpu_share']:.0f}%) | "
      f"rasterizer threads yielding {w.get('render_threads_lowered', '-')}, their CPU "
      f"{w.get('render_threads_cpu_s', float('nan')):.2f} s")
PY
done
echo "load average after: $(cat /proc/loadavg)"
