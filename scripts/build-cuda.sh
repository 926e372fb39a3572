#!/usr/bin/env bash
# Builds the headless `unmask` CLI with candle's CUDA backend on a machine that has neither a GPU
# nor a CUDA toolkit: nvcc, headers and libraries come from pinned PyPI wheels (CUDA 13.0), and
# the driver library libcuda.so is replaced at link time by a generated stub.
# Adapted from the shared recipe in /work/shared/cuda (see its README for the background).
#
# Usage: scripts/build-cuda.sh [extra cargo args...]
# Environment:
#   CUDA_TARGET_DIR   cargo target dir              (default: <repo>/target-cuda)
#   CUDA_WORK         wheels + link stubs           (default: ${TMPDIR:-/tmp}/unmask-cuda)
#   CUDA_COMPUTE_CAP  SM to compile kernels for     (default: 90 = sm_90a, H100/H200 only)
#   NVCC_APPEND_FLAGS extra nvcc flags              (default: --compress-mode=size)
#   DEST              where the stripped binary goes (default: <repo>/.device/unmask-cuda)
# Result: a stripped binary at $DEST; run it on the GPU machine with scripts/run-cuda.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CUDA_TARGET_DIR:-$ROOT/target-cuda}
WORK=${CUDA_WORK:-${TMPDIR:-/tmp}/unmask-cuda}
DEST=${DEST:-$ROOT/.device/unmask-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

# 1. CUDA 13.0 pieces. nvcc must stay at 13.0.x: PTX from 13.1+ has an ISA newer than a
#    580 driver (CUDA 13.0) can JIT (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
WHEELS=$WORK/wheels
CU=$WHEELS/nvidia/cu13
if [ ! -x "$CU/bin/nvcc" ] || [ ! -e "$CU/lib/libcublasLt.so.13" ]; then
  echo "== fetching CUDA 13.0 wheels into $WHEELS (about 0.6 GB)"
  python3 -m pip install --quiet --no-deps --target "$WHEELS" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85 \
    nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14
fi

# 2. Link folder: the wheels only carry versioned sonames, the linker wants libX.so.
LINK=$WORK/link
mkdir -p "$LINK/lib"
for lib in cudart cublas cublasLt nvrtc; do ln -sf "$CU/lib/lib$lib.so.13" "$LINK/lib/lib$lib.so"; done
ln -sf "$CU/lib/libcurand.so.10" "$LINK/lib/libcurand.so"

# The driver's libcuda is on no registry. A stub with every cu* entry point cudarc declares
# satisfies the linker; the soname makes the real driver library load at run time.
# The stub must never be on LD_LIBRARY_PATH when running: cuInit would fail.
if [ ! -e "$LINK/lib/libcuda.so" ]; then
  (cd "$ROOT" && cargo fetch --quiet)
  CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -n 1)
  sed -nE 's/^[[:space:]]+(pub )?fn (cu[A-Za-z0-9_]+)\(.*/\2/p' "$CUDARC/src/driver/sys/mod.rs" | sort -u \
    | while read -r sym; do printf 'int %s(void) { return 999; }\n' "$sym"; done > "$LINK/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/lib/libcuda.so" "$LINK/cuda_stub.c"
fi

# 3. Environment read by candle-kernels (nvcc via cudaforge) and cudarc (link search, API version).
export PATH="$CU/bin:$PATH"
export CUDA_HOME=$LINK
export CUDARC_CUDA_VERSION=13000
export LD_LIBRARY_PATH="$CU/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
# Compressing the fatbin shrinks the binary about 2.6x. cudaforge does not key its object cache
# on this variable: after changing it, `cargo clean --release -p candle-kernels`.
export NVCC_APPEND_FLAGS=${NVCC_APPEND_FLAGS---compress-mode=size}

# 4. The GPU binary is the CLI alone: no window (feature `gui`), so no display libraries needed.
cd "$ROOT"
start=$(date +%s)
CARGO_TARGET_DIR=$TARGET nice cargo build --release --bin unmask --no-default-features --features cuda "$@"
mkdir -p "$(dirname "$DEST")"
strip -o "$DEST" "$TARGET/release/unmask"
echo "== built in $(( $(date +%s) - start )) s: $DEST ($(du -h "$DEST" | cut -f1))"
