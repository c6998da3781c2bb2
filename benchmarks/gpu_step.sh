#!/usr/bin/env bash
# The GPU step (docs/performance.md, "On a GPU"): batch-1 decoding against the reference loop with the step compiled
# for CUDA graphs, float32 and bfloat16, then where the time goes. One prepared run for a lent GPU machine:
#   bash benchmarks/gpu_step.sh outputs/gpu
set -uo pipefail
out=${1:-outputs/gpu}
mkdir -p "$out"
here=$(dirname "$0")
export PYTHONUNBUFFERED=1
py=$(command -v python3 || command -v python)
"$py" -c "import torch, transformers, diffusers, transformers_mdlm; print(torch.__version__, transformers.__version__,
diffusers.__version__, torch.cuda.get_device_name(0))" || exit 1
run() {  # name, then the benchmark's arguments; a failing run does not stop the others
  local name=$1
  shift
  echo "== $name: $*"
  "$py" "$here/benchmark.py" generation --no-cache --compile-step --compile-reference "$@" \
    --output "$out/gpu-step.jsonl" 2>&1 | tee "$out/$name.txt"
}
run mmbert-float32 --model mmbert --batch-sizes 1 --repeats 3
run mmbert-bfloat16 --model mmbert --batch-sizes 1 --repeats 3 --dtype bfloat16
"$py" "$here/profile_step.py" --dtype float32 2>&1 | tee "$out/profile-float32.txt"
run embedded --model embedded --batch-sizes 1 4 --repeats 3
