"""Run by `torchrun --nproc_per_node 2` from test_distributed.py: train a tiny model on two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

sys.path[:0] = [os.path.dirname(__file__), os.path.dirname(os.path.dirname(__file__))]  # this folder and tests/
from conftest import counting_dataset, make_tiny_tokenizer, small_model  # noqa: E402
from transformers_mdlm import MaskedDiffusionTrainer, MaskedDiffusionTrainingArguments  # noqa: E402


def main(output_dir: str) -> None:
    torch.set_num_threads(1)
    model = small_model()
    args = MaskedDiffusionTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=8, max_steps=20, learning_rate=3e-3, report_to=[],
        save_strategy="no", seed=0, use_cpu=True, ddp_backend="gloo", logging_steps=5, disable_tqdm=True,
    )  # fmt: skip
    trainer = MaskedDiffusionTrainer(
        model=model, args=args, train_dataset=counting_dataset(rows=640), processing_class=make_tiny_tokenizer()
    )
    result = trainer.train()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    rank = dist.get_rank() if dist.is_initialized() else 0
    report = {
        "rank": rank,
        "world_size": args.world_size,
        "checksum": float(flat.double().sum()),
        "first": flat[:5].tolist(),
        "loss": result.training_loss,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    }
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1])
