"""Run by test_distributed.py: evaluate a tiny model on 5 rows of different lengths, under `torchrun
--nproc_per_node 2` or as one process, and write each normalisation's `eval_loss` to OUTPUT_DIR/eval_rank{N}.json.

    python distributed_eval.py OUTPUT_DIR
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import sys

import torch
from datasets import Dataset

sys.path[:0] = [os.path.dirname(__file__), os.path.dirname(os.path.dirname(__file__))]  # this folder and tests/
from conftest import make_tiny_tokenizer, small_model  # noqa: E402
from transformers_mdlm import MaskedDiffusionTrainer, MaskedDiffusionTrainingArguments  # noqa: E402
from transformers_mdlm.training.recipe import finish_distributed  # noqa: E402


def main(output_dir: str) -> None:
    if os.environ.get("LOCAL_RANK") is not None:
        faulthandler.dump_traceback_later(180, exit=True)  # a hung process prints its stacks and exits
    torch.set_num_threads(1)
    # 5 rows, 2 per batch and process: accelerate repeats rows to give both processes a last batch of 2.
    rows = Dataset.from_dict({"input_ids": [[20 + i % 40 for i in range(n)] for n in (3, 30, 5, 40, 12)]})
    model, losses = small_model(), {}
    for normalization in ("sequence", "token"):
        args = MaskedDiffusionTrainingArguments(
            output_dir=output_dir, per_device_eval_batch_size=2, loss_normalization=normalization, report_to=[],
            seed=0, disable_tqdm=True, dataloader_pin_memory=False,
        )  # fmt: skip
        trainer = MaskedDiffusionTrainer(
            model=model, args=args, eval_dataset=rows, processing_class=make_tiny_tokenizer()
        )
        losses[normalization] = trainer.evaluate()["eval_loss"]
    with open(os.path.join(output_dir, f"eval_rank{args.process_index}.json"), "w") as handle:
        json.dump({"world_size": args.world_size, "losses": losses}, handle)
    del trainer
    gc.collect()
    finish_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
