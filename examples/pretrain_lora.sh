#!/usr/bin/env bash
# Continual pretraining with LoRA (Diffutron's first stage), at toy scale on this CPU:
#   bash examples/pretrain_lora.sh [BASE_MODEL] [OUTPUT_DIR] [MAX_STEPS]
# BASE_MODEL defaults to the package's embedded model; Diffutron's run used jhu-clsp/mmBERT-base (see docs/training.md).
set -euo pipefail
# bf16 autocast only where the CPU has bfloat16 kernels (AVX512-BF16, AMX): elsewhere it is emulated, ~24x slower.
BF16=$(python -c "from transformers_mdlm.cpu_features import cpu_has_native_bfloat16 as f; print('--bf16' * f())")
DATA=${DATA:-../shared/data/turkish/corpus}
BASE=${1:-src/transformers_mdlm/default_model}
OUT=${2:-outputs/toy-lora-pretrain}
STEPS=${3:-100}
mdlm train pretrain \
  --model "$BASE" --train_file "$DATA/train.txt" --validation_file "$DATA/validation.txt" --block_size 128 \
  --lora --lora_r 16 --lora_alpha 16 --lora_dropout 0.05 --lora_targets attn.Wqkv,attn.Wo,mlp.Wi,mlp.Wo,head.dense \
  --output_dir "$OUT" --max_steps "$STEPS" --per_device_train_batch_size 16 --learning_rate 5e-4 \
  --lr_scheduler_type cosine --warmup_steps 10 --logging_steps 10 --save_steps 50 --save_total_limit 1 \
  --use_cpu $BF16 --report_to none --seed 0
