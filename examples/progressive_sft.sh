#!/usr/bin/env bash
# Progressive instruction tuning (Diffutron's stages 1 and 2), at toy scale on this CPU:
#   bash examples/progressive_sft.sh [BASE_MODEL] [OUTPUT_DIR] [STEPS_PER_STAGE]
# Stage 1 trains on the linguistic tasks; stage 2 starts from stage 1's output and trains on the rest.
set -euo pipefail
# bf16 autocast only where the CPU has bfloat16 kernels (AVX512-BF16, AMX): elsewhere it is emulated, ~24x slower.
BF16=$(python -c "from transformers_mdlm.cpu_features import cpu_has_native_bfloat16 as f; print('--bf16' * f())")
DATA=${DATA:-../shared/data/turkish/instruct/tr_instruct.jsonl}
BASE=${1:-src/transformers_mdlm/default_model}
OUT=${2:-outputs/toy-sft}
STEPS=${3:-50}
LINGUISTIC=ner_extraction,lemmatization,pos_tagging,verb_noun_extraction
COMMON=(--max_length 256 --truncate --per_device_train_batch_size 8 --lr_scheduler_type cosine --warmup_steps 5
        --logging_steps 10 --save_steps 1000 --use_cpu $BF16 --report_to none --seed 0 --max_steps "$STEPS")
mdlm train sft --model "$BASE" --train_file "$DATA" --tasks "$LINGUISTIC" --output_dir "$OUT/stage1" \
  --learning_rate 5e-4 "${COMMON[@]}"
mdlm train sft --model "$OUT/stage1" --train_file "$DATA" --exclude_tasks "$LINGUISTIC" --output_dir "$OUT/stage2" \
  --learning_rate 3e-4 "${COMMON[@]}"
