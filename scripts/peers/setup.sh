#!/usr/bin/env bash
# Makes the peer benchmark's folder PEERS (outside the repository; nothing here is committed):
#   llama.cpp/   llama.cpp's tree, vendored in the llama-cpp-python sdist on PyPI; only
#                `llama-diffusion-cli` is built (CPU, Release, native)
#   venv/        torch, transformers (the pins of llama.cpp's convert_hf_to_gguf requirements)
#   fastdllm/    Dream's reference remote code (configuration_dream.py, modeling_dream.py,
#                generation_utils.py), from a checkout of NVlabs/Fast-dLLM given as FASTDLLM
#                (its dream/model/ holds the Dream originals; DreamLM/Dream on GitHub has no model code)
#   tok_test/    the real Qwen2.5 tokenizer rebuilt from llama.cpp's models/ggml-vocab-qwen2.gguf,
#                with Dream's <|beginoftext|> 151665 and <|mask|> 151666
#   tiny-dream/  the random Dream-layout model (hidden 512, 8 layers, 8/2 heads, vocab 152,064,
#                f32, seed 0) with the reference code, loadable by PyTorch and by unmask
#   gguf/        that model converted by llama.cpp's converter, f32 and f16
# Each step is skipped when its result exists, so a failed step can be rerun. Needs cmake, a C++
# compiler and python3 (3.10+); torch from PyPI is the CUDA build (≈3 GB), which runs on the CPU.
# Builds run at nice 19 with 2 jobs. Takes 15–40 minutes on 2 cores, most of it the llama.cpp build.
# Usage: scripts/peers/setup.sh PEERS FASTDLLM
set -euo pipefail
if [[ $# -ne 2 ]]; then
    echo "usage: scripts/peers/setup.sh PEERS FASTDLLM   (FASTDLLM: a checkout of NVlabs/Fast-dLLM)" >&2
    exit 2
fi
mkdir -p "$1"
export PEERS=$(realpath "$1")
FASTDLLM=$2
HERE=$(cd "$(dirname "$0")" && pwd)
LLAMA_CPP_PYTHON=0.3.36   # its vendored llama.cpp is the one the recipe was tested with
cd "$PEERS"
command -v cmake >/dev/null || { echo "setup: cmake is missing (apt-get install cmake)" >&2; exit 1; }
[[ -f $FASTDLLM/dream/model/modeling_dream.py ]] ||
    { echo "setup: $FASTDLLM/dream/model/modeling_dream.py not found (FASTDLLM must be a Fast-dLLM checkout)" >&2; exit 1; }

if [[ ! -d llama.cpp ]]; then
    echo "== llama.cpp source (llama-cpp-python $LLAMA_CPP_PYTHON sdist)"
    pip download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON" -d dl
    rm -rf x && mkdir x && tar xzf "dl/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" -C x
    mv "x/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp" llama.cpp && rm -rf x
fi
if [[ ! -x llama.cpp/build/bin/llama-diffusion-cli ]]; then
    echo "== building llama-diffusion-cli"
    nice -n 19 cmake -S llama.cpp -B llama.cpp/build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DCMAKE_BUILD_TYPE=Release >/dev/null
    nice -n 19 cmake --build llama.cpp/build --config Release -j 2 --target llama-diffusion-cli
fi
if [[ ! -x venv/bin/python ]] || ! venv/bin/python -c 'import torch, transformers, safetensors' 2>/dev/null; then
    echo "== Python environment"
    python3 -m venv venv
    nice -n 19 venv/bin/pip install -q "torch==2.11.0" "numpy~=2.2.6" "sentencepiece>=0.1.98,<0.3.0" \
        "transformers==4.57.6" "protobuf>=4.21.0,<5.0.0" safetensors
fi
if [[ ! -f fastdllm/dream/model/modeling_dream.py ]]; then
    mkdir -p fastdllm/dream && cp -r "$FASTDLLM/dream/model" fastdllm/dream/
fi
if [[ ! -f tok_test/tokenizer.json ]]; then
    echo "== tokenizer"
    venv/bin/python "$HERE/make_tokenizer.py" llama.cpp/models/ggml-vocab-qwen2.gguf tok_test
fi
if [[ ! -f tiny-dream/model.safetensors ]]; then
    echo "== random Dream model"
    venv/bin/python "$HERE/make_tiny_dream.py" tiny-dream
fi
mkdir -p gguf
for t in f32 f16; do
    if [[ ! -f gguf/tiny-dream-$t.gguf ]]; then
        echo "== GGUF $t"
        venv/bin/python llama.cpp/convert_hf_to_gguf.py tiny-dream --outtype $t --outfile gguf/tiny-dream-$t.gguf
    fi
done
echo "PEERS ready: $PEERS"
