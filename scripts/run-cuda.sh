#!/usr/bin/env bash
# Runs a CUDA build of unmask (scripts/build-cuda.sh: CUDA 13.0, sm_90a) on a GPU machine.
# Needs the NVIDIA driver (>= 580, i.e. CUDA 13.0) and the CUDA 13 runtime libraries, found in a
# CUDA toolkit or in pip-installed NVIDIA wheels (e.g. those of a cu13x PyTorch). No Rust needed.
# Usage: scripts/run-cuda.sh [BINARY] [unmask args...]   (BINARY defaults to .device/unmask-cuda)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -gt 0 ] && [ -x "$1" ] && [ ! -d "$1" ]; then BIN=$1; shift; else BIN=$ROOT/.device/unmask-cuda; fi
[ -x "$BIN" ] || { echo "no CUDA binary at $BIN; build it with scripts/build-cuda.sh" >&2; exit 127; }

NEED="libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10"
dirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
  [ -e "$d/libcublas.so.13" ] && dirs+=("$d")
done
# site-packages/nvidia/*/lib of every Python on PATH (pip wheels keep the CUDA libraries there).
for py in python3 python; do
  command -v "$py" >/dev/null || continue
  while IFS= read -r d; do [ -n "$d" ] && dirs+=("$d"); done < <("$py" -c '
import glob, os, site
roots = set(site.getsitepackages() + [site.getusersitepackages()])
for r in sorted(roots):
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        if glob.glob(os.path.join(d, "*.so.13")) or glob.glob(os.path.join(d, "libcurand.so.10")):
            print(d)
' 2>/dev/null || true)
  break
done
if [ ${#dirs[@]} -gt 0 ]; then
  joined=$(IFS=:; echo "${dirs[*]}")
  export LD_LIBRARY_PATH="$joined${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

missing=""
for lib in $NEED; do
  ldconfig -p 2>/dev/null | grep -q " $lib " && continue
  found=0
  IFS=: read -ra P <<<"${LD_LIBRARY_PATH:-}"
  for d in "${P[@]}"; do [ -n "$d" ] && [ -e "$d/$lib" ] && found=1 && break; done
  [ $found = 1 ] || missing="$missing $lib"
done
if [ -n "$missing" ]; then
  echo "missing CUDA 13 libraries:$missing (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})" >&2
  echo "hint: pip install nvidia-cuda-runtime==13.0.* nvidia-cublas==13.* nvidia-curand" >&2
  exit 127
fi
exec "$BIN" "$@"
