#!/usr/bin/env bash
# The peer benchmark: unmask against llama.cpp's `llama-diffusion-cli` and the reference PyTorch
# Dream `diffusion_generate`, on one random Dream-layout model (hidden 512, 8 layers, the real
# 152,064-token vocabulary; see scripts/peers/setup.sh, which makes PEERS). Same 32 prompt ids
# (the chat-templated prompt below), 256 new tokens, 2 threads, end-of-text stopping off.
#
# Every row is run once, then every row a second time, and so on (interleaved, so background load
# hits all tools alike); each run is timed whole (load, decode, exit) by /usr/bin/time, with the
# load average read just before it. Prints the command, the machine and a markdown table of the
# median wall times for docs/benchmarks.md; logs, JSON and the table stay in PEERS/results/<time>/.
#
# Usage: scripts/bench-peers.sh [--quick] [--check-ids | --ids-only] [--rows REGEX] UNMASK PEERS RUNS
#   --quick      64 new tokens, 16 steps (blocks: 4 steps each): checks the whole pipeline in a minute or two (idle)
#   --check-ids  first compare unmask's greedy ids with PyTorch's (not timed), then benchmark
#   --ids-only   only the id comparison
#   --rows REGEX only the rows whose name matches (e.g. 'headline-.*-f32': three rounds in ~8 min)
set -euo pipefail

usage() { sed -n '12,16p' "$0" | sed 's/^# \{0,1\}//'; }
QUICK=0 CHECK=0 TIMING=1 ONLY=
CMDLINE="scripts/bench-peers.sh $*"
while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --check-ids) CHECK=1 ;;
        --ids-only) CHECK=1 TIMING=0 ;;
        --rows)
            [[ $# -ge 2 ]] || { echo "bench-peers: --rows needs a REGEX" >&2; exit 2; }
            ONLY=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench-peers: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [[ $# -ne 3 ]]; then
    echo "bench-peers: expected UNMASK PEERS RUNS, got $# arguments" >&2; usage >&2; exit 2
fi
UNMASK=$(realpath -e "$1" 2>/dev/null) || { echo "bench-peers: UNMASK '$1' does not exist" >&2; exit 2; }
PEERS=$(realpath -e "$2" 2>/dev/null) || { echo "bench-peers: PEERS '$2' does not exist (make it with scripts/peers/setup.sh)" >&2; exit 2; }
RUNS=$3
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bench-peers: RUNS must be a positive integer, got '$RUNS'" >&2; exit 2; }
[[ -x $UNMASK ]] || { echo "bench-peers: UNMASK '$UNMASK' is not executable" >&2; exit 2; }
SCRIPTS=$(cd "$(dirname "$0")" && pwd)/peers
LLAMA=$PEERS/llama.cpp/build/bin/llama-diffusion-cli
PY=$PEERS/venv/bin/python
MODEL=$PEERS/tiny-dream
NEEDED=("$PY" "$MODEL/config.json" "$MODEL/model.safetensors")
((TIMING)) && NEEDED+=("$LLAMA" "$PEERS/gguf/tiny-dream-f32.gguf" "$PEERS/gguf/tiny-dream-f16.gguf" /usr/bin/time)
for f in "${NEEDED[@]}"; do
    [[ -e $f ]] || { echo "bench-peers: missing $f (run scripts/peers/setup.sh $PEERS)" >&2; exit 2; }
done

PROMPT="Write a short Python function that returns the n-th Fibonacci number, then explain in two short sentences how it really works."
# That prompt through the Qwen2.5 chat template (user turn + assistant header): 32 ids. The id check
# verifies PyTorch's tokenizer produces exactly these.
IDS=151644,872,198,7985,264,2805,13027,729,429,4675,279,308,7563,79683,1372,11,1221,10339,304,1378,2805,22870,1246,432,2167,4278,13,151645,198,151644,77091,198
N_PROMPT=32
if ((QUICK)); then GEN=64 STEPS=16 BSTEPS=4; else GEN=256 STEPS=64 BSTEPS=8; fi
CANVAS=$((N_PROMPT + GEN))   # llama.cpp decodes a canvas of -ub tokens, prompt included
# llama.cpp's block schedule splits the whole canvas into CANVAS/32 blocks from the prompt's end
# (the last one lies past the canvas and is empty); --diffusion-steps is the total over them.
LBSTEPS=$((CANVAS / 32 * BSTEPS))

OUT=$PEERS/results/$(date -u +%Y%m%dT%H%M%SZ)$( ((QUICK)) && echo -quick || true)
mkdir -p "$OUT/logs"
: >"$OUT/rows.tsv"
: >"$OUT/runs.tsv"

# Settings, per tool. llama.cpp: algorithm 4 = confidence (Dream's maskgit_plus), eps = the timestep
# schedule; `--temp 0` there still draws from the softmax at T 1 (the confidence is the same), so its
# ids are not compared. unmask: `low-confidence` remasks the least confident = commits the most
# confident (maskgit_plus); `--top-p 1.0` overrides the Dream family's default 0.95.
L_HEAD="--diffusion-eps 0.001 --diffusion-algorithm 4 --temp 0 --top-k 0 --top-p 1.0 --diffusion-steps $STEPS"
L_BLOCK="--diffusion-block-length 32 --diffusion-algorithm 4 --temp 0 --top-k 0 --top-p 1.0 --diffusion-steps $LBSTEPS"
L_SAMP="--diffusion-eps 0.001 --diffusion-algorithm 4 --temp 0.2 --top-k 0 --top-p 0.95 --diffusion-steps $STEPS"
T_HEAD="--steps $STEPS --temperature 0 --top_p 1.0 --top_k none"
T_SAMP="--steps $STEPS --temperature 0.2 --top_p 0.95 --top_k none"
U_HEAD="--block-size $GEN --steps $STEPS --schedule timestep --rule low-confidence --temperature 0 --top-k 0 --top-p 1.0 --seed 0"
U_BLOCK="--block-size 32 --steps $BSTEPS --schedule uniform --rule low-confidence --temperature 0 --top-k 0 --top-p 1.0 --seed 0"
U_SAMP="--block-size $GEN --steps $STEPS --schedule timestep --rule low-confidence --temperature 0.2 --top-k 0 --top-p 0.95 --seed 0"

ROWS=()
declare -A TOOL ARGS GGUF
# row NAME SETTING WEIGHTS COLUMN TOOL ARGS [GGUF]
row() {
    [[ -z $ONLY || $1 =~ ^($ONLY)$ ]] || return 0
    ROWS+=("$1"); TOOL[$1]=$5; ARGS[$1]=$6; GGUF[$1]=${7:-}
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(describe "$1")" >>"$OUT/rows.tsv"
}
describe() {   # the command line of a row, as run (the prompt shortened)
    case ${TOOL[$1]} in
        L) echo "llama-diffusion-cli -m ${GGUF[$1]##*/} -p PROMPT -c $CANVAS -b $CANVAS -ub $CANVAS -t 2 -tb 2 --seed 0 ${ARGS[$1]}" ;;
        T) echo "run_torch_dream.py --gen $GEN --threads 2 ${ARGS[$1]}" ;;
        U) echo "unmask generate --prompt-ids <32 ids> --gen-length $GEN --no-stop --json ${ARGS[$1]}" ;;
    esac
}
row headline-llama-f32    headline f32  llama.cpp               L "$L_HEAD" "$PEERS/gguf/tiny-dream-f32.gguf"
row headline-torch-f32    headline f32  PyTorch                 T "$T_HEAD"
row headline-unmask-f32   headline f32  unmask                  U "$U_HEAD"
row headline-llama-f16    headline f16  llama.cpp               L "$L_HEAD" "$PEERS/gguf/tiny-dream-f16.gguf"
row headline-unmask-f16   headline f16  unmask                  U "$U_HEAD --dtype f16"
row headline-unmask-bf16  headline bf16 unmask                  U "$U_HEAD --dtype bf16"
row blocks-llama-f32      blocks   f32  llama.cpp               L "$L_BLOCK" "$PEERS/gguf/tiny-dream-f32.gguf"
row blocks-unmask-f32     blocks   f32  unmask                  U "$U_BLOCK"
row blocks-unmask-approx  blocks   f32  "unmask --approx-cache" U "$U_BLOCK --approx-cache"
row sampling-llama-f32    sampling f32  llama.cpp               L "$L_SAMP" "$PEERS/gguf/tiny-dream-f32.gguf"
row sampling-torch-f32    sampling f32  PyTorch                 T "$T_SAMP"
row sampling-unmask-f32   sampling f32  unmask                  U "$U_SAMP"
if ((TIMING)) && [[ ${#ROWS[@]} -eq 0 ]]; then
    echo "bench-peers: --rows '$ONLY' matches no row (names: headline-{llama,torch,unmask}-f32, headline-unmask-bf16, blocks-…, sampling-…; see rows.tsv of a full run)" >&2
    rm -rf "$OUT"   # nothing ran: leave no empty results folder behind
    exit 2
fi

# Run one tool; stdout to $2, stderr to $3. The args are flag lists without spaces inside a value.
invoke() {
    local name=$1 out=$2 err=$3 timing=$4
    local -a args
    read -ra args <<<"${ARGS[$name]}"
    local -a time=()
    [[ -n $timing ]] && time=(/usr/bin/time -f '%e\t%U\t%S\t%P\t%M' -o "$timing")
    case ${TOOL[$name]} in
        L) "${time[@]}" "$LLAMA" -m "${GGUF[$name]}" -p "$PROMPT" -c "$CANVAS" -b "$CANVAS" -ub "$CANVAS" \
            -t 2 -tb 2 --seed 0 "${args[@]}" >"$out" 2>"$err" ;;
        T) "${time[@]}" "$PY" "$SCRIPTS/run_torch_dream.py" --model "$MODEL" --prompt "$PROMPT" --gen "$GEN" \
            --threads 2 "${args[@]}" >"$out" 2>"$err" ;;
        U) "${time[@]}" "$UNMASK" generate --model "$MODEL" --prompt-ids "$IDS" --gen-length "$GEN" --no-stop \
            --json "${args[@]}" >"$out" 2>"$err" ;;
    esac
}
# Did the run do the whole decode? (An exit status of 0 alone is not enough to trust a timing.)
completed() {
    local name=$1 out=$2 err=$3
    case ${TOOL[$name]} in
        L) grep -aq 'total time:' "$err" "$out" && ! grep -aqi 'failed to decode\|generation failed' "$err" "$out" ;;
        T) grep -q "RESULT n_input=$N_PROMPT steps=[0-9]* gen=$GEN .* masks_left=0" "$out" ;;
        U) python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(len(d['ids']) != $GEN)" "$out" ;;
    esac
}

machine() {
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores," \
        "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); unmask $("$UNMASK" --version | cut -d' ' -f2)" \
        "(repository at $(git -C "$(dirname "$SCRIPTS")" rev-parse --short HEAD 2>/dev/null || echo '?')), llama.cpp from llama-cpp-python" \
        "$(ls "$PEERS"/dl/llama_cpp_python-*.tar.gz 2>/dev/null | sed 's/.*python-\(.*\)\.tar\.gz/\1/' || echo '?'), torch" \
        "$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null), transformers" \
        "$("$PY" -c 'import transformers; print(transformers.__version__)' 2>/dev/null)"
}

{
    echo "Command: \`$CMDLINE\`"
    machine
    echo "Model: $MODEL (random Dream layout); $N_PROMPT prompt ids, $GEN new tokens, 2 threads; logs in $OUT"
} | tee "$OUT/header.md"

if ((CHECK)); then
    # Greedy ids, unmask against the reference, twice: with the reference's default top_k = 50 (the
    # confidence renormalised over the 50 best; unmask --top-k 50) and plain greedy (no filter).
    echo
    echo "Greedy ids, unmask against PyTorch ($STEPS steps, one block, timestep schedule):" | tee "$OUT/ids.md"
    for k in 50 none; do
        if [[ $k == none ]]; then tk=none uk=0; else tk=model uk=50; fi
        TOOL[ids-torch]=T ARGS[ids-torch]="--steps $STEPS --temperature 0 --top_p 1.0 --top_k $tk --ids-out $OUT/ids-torch-k$k.json"
        TOOL[ids-unmask]=U ARGS[ids-unmask]="${U_HEAD/--top-k 0/--top-k $uk}"
        invoke ids-torch "$OUT/logs/ids-torch-k$k.out" "$OUT/logs/ids-torch-k$k.err" "" ||
            { echo "bench-peers: PyTorch failed, see $OUT/logs/ids-torch-k$k.err" >&2; exit 1; }
        invoke ids-unmask "$OUT/ids-unmask-k$k.json" "$OUT/logs/ids-unmask-k$k.err" "" ||
            { echo "bench-peers: unmask failed, see $OUT/logs/ids-unmask-k$k.err" >&2; exit 1; }
        verdict=$(python3 "$SCRIPTS/compare_ids.py" "$OUT/ids-torch-k$k.json" "$OUT/ids-unmask-k$k.json" "$IDS" || true)
        if [[ $k == none ]]; then what="plain greedy (PyTorch top_k None; unmask --top-k 0)"; else
            what="top_k 50 (PyTorch's default; unmask --top-k 50)"; fi
        printf -- '- %s: %s\n' "$what" "$verdict" | tee -a "$OUT/ids.md"
    done
fi

if ((TIMING)); then
    echo
    echo "Timing ${#ROWS[@]} rows × $RUNS runs, interleaved:"
    for r in $(seq 1 "$RUNS"); do
        for name in "${ROWS[@]}"; do
            load=$(cut -d' ' -f1 /proc/loadavg)
            log=$OUT/logs/$name.r$r
            if invoke "$name" "$log.out" "$log.err" "$log.time"; then rc=0; else rc=$?; fi
            if [[ $rc -eq 0 ]] && ! completed "$name" "$log.out" "$log.err"; then rc=incomplete; fi
            wall=NA user=NA sys=NA cpu=NA rss=NA
            if [[ -s $log.time ]]; then IFS=$'\t' read -r wall user sys cpu rss < <(tail -1 "$log.time") || true; fi
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$r" "$rc" "$wall" "$user" "$sys" "$cpu" "$rss" \
                "$load" "$(date -u +%H:%M:%S)" >>"$OUT/runs.tsv"
            printf '  run %s %-22s %7s s  CPU %5s  load before %s%s\n' "$r" "$name" "$wall" "$cpu" "$load" \
                "$([[ $rc == 0 ]] || echo "  FAILED ($rc): see $log.err")"
        done
    done
    python3 "$SCRIPTS/table.py" "$OUT/runs.tsv" "$OUT/rows.tsv" "$GEN" "$STEPS" "$BSTEPS" >"$OUT/table.md"
    echo
    cat "$OUT/header.md"
    [[ -f $OUT/ids.md ]] && { echo; cat "$OUT/ids.md"; }
    echo
    cat "$OUT/table.md"
fi
