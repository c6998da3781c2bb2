#!/usr/bin/env bash
# Every benchmark of docs/performance.md on the default device (a GPU when PyTorch sees one), JSON and tables to $1.
#   bash benchmarks/run_all.sh outputs/bench
set -uo pipefail
out=${1:-outputs/bench}
mkdir -p "$out"
here=$(dirname "$0")
run() {  # name, then the benchmark's arguments; a failing benchmark does not stop the others
  local name=$1
  shift
  echo "== $name: $*"
  python "$here/benchmark.py" "$@" --output "$out/$name.jsonl" 2>&1 | tee "$out/$name.txt"
}
run generation-mmbert generation --model mmbert --repeats 3
run generation-mmbert-bf16 generation --model mmbert --repeats 3 --dtype bfloat16 --exact-row
run generation-embedded generation --model embedded --repeats 3
run fast-decoding fast-decoding
run throughput throughput
run training training --train-steps 30
run evidence-bound-bf16 evidence-bound --dtype bfloat16
if [ "${COMPILE:-0}" = 1 ]; then
  run generation-mmbert-compile generation --model mmbert --repeats 3 --compile --no-cache
  run generation-mmbert-compiled-step generation --model mmbert --repeats 3 --compile-step --no-cache
fi
