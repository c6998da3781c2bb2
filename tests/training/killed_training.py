"""Run by test_checkpoints.py in a subprocess: train a tiny model on a plain dataset, checkpointing every 4 steps.

    python killed_training.py OUTPUT_DIR [--kill-at STEP] [--resume]

With `--kill-at`, the process SIGKILLs itself in the middle of writing that step's checkpoint (after the weights,
before the optimizer state): what a power cut or an out-of-memory kill does. The final weights go to
OUTPUT_DIR/final.safetensors.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import save_file

sys.path[:0] = [os.path.dirname(os.path.dirname(__file__))]  # tests/, for conftest
from conftest import args, make_tiny_tokenizer, small_model  # noqa: E402
from transformers_mdlm import MaskedDiffusionTrainer  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--resume", action="store_true")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = torch.randint(20, 60, (48, 12), generator=torch.Generator().manual_seed(0)).tolist()
    data = Dataset.from_dict({"input_ids": rows})  # a plain dataset: no sample ids of its own
    model = small_model(seed=1, embedding_dropout=0.1, mlp_dropout=0.1)
    trainer = MaskedDiffusionTrainer(
        model=model, train_dataset=data, processing_class=make_tiny_tokenizer(),
        args=args(Path(options.output_dir), output_dir=options.output_dir, max_steps=12, save_strategy="steps",
                  save_steps=4, learning_rate=1e-2, num_train_epochs=3),
    )  # fmt: skip
    if options.kill_at is not None:
        original = trainer._save_optimizer_and_scheduler

        def save_then_die(output_dir):
            if trainer.state.global_step == options.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(output_dir)

        trainer._save_optimizer_and_scheduler = save_then_die
    trainer.train(resume_from_checkpoint=True if options.resume else None)
    save_file({name: p.detach().contiguous() for name, p in model.named_parameters()},
              os.path.join(options.output_dir, "final.safetensors"))  # fmt: skip


if __name__ == "__main__":
    main()
