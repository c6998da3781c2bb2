"""Run by test_distributed.py: train a tiny model, under `torchrun --nproc_per_node 2` or as one process.

    python distributed_train.py OUTPUT_DIR PER_DEVICE_BATCH

No distributed flags are given: the arguments find the backend themselves (gloo on a machine without CUDA). Each
process records the sample ids it was fed; the main process saves the final weights.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path[:0] = [os.path.dirname(__file__), os.path.dirname(os.path.dirname(__file__))]  # this folder and tests/
from conftest import counting_dataset, make_tiny_tokenizer, small_model  # noqa: E402
from transformers_mdlm import MaskedDiffusionTrainer, MaskedDiffusionTrainingArguments  # noqa: E402
from transformers_mdlm.training.recipe import finish_distributed  # noqa: E402


def main(output_dir: str, per_device_batch: int) -> None:
    if os.environ.get("LOCAL_RANK") is not None:
        # A run of this size takes about 10 s: a process still alive after 180 s (also one stuck at interpreter exit)
        # prints every thread's stack to stderr and exits.
        faulthandler.dump_traceback_later(180, exit=True)
    torch.set_num_threads(1)
    model = small_model()
    args = MaskedDiffusionTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=per_device_batch, max_steps=6, learning_rate=3e-3,
        report_to=[], save_strategy="no", seed=0, logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    trainer = MaskedDiffusionTrainer(
        model=model, args=args, train_dataset=counting_dataset(rows=640), processing_class=make_tiny_tokenizer()
    )
    seen: list[int] = []
    collate = trainer.data_collator

    def recording(features):
        seen.extend(int(feature["sample_id"]) for feature in features)
        return collate(features)

    trainer.data_collator = recording
    result = trainer.train()
    report = {
        "rank": args.process_index,
        "world_size": args.world_size,
        "parallel_mode": str(args.parallel_mode),
        "seen": seen,
        "loss": result.training_loss,
    }
    with open(os.path.join(output_dir, f"rank{args.process_index}.json"), "w") as handle:
        json.dump(report, handle)
    if trainer.is_world_process_zero():
        weights = {name: p.detach().contiguous() for name, p in model.named_parameters()}
        save_file(weights, os.path.join(output_dir, "final.safetensors"))
    # As `mdlm train` (whose trainer is gone when `_train_and_save` returns): the DDP wrapper is freed while the process
    # group lives. Freed after it, at `main`'s return, it hung one process in 2 of about 10 CI runs (faulthandler:
    # main thread at `main(...)`'s line with no deeper frame, i.e. in the destructors of `main`'s locals).
    del trainer
    gc.collect()
    finish_distributed()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
