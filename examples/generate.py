"""Masked diffusion generation, offline, on a tiny random mmBERT-shaped model.

Run: `python examples/generate.py`

It builds a small ModernBERT (the architecture of mmBERT and Diffutron) from a configuration, so it needs no download.
The model is untrained, so its tokens are meaningless: what this shows is the decoding itself, the canvas of masks
filling in block by block, and the cost (forward passes) of each setting. With a real checkpoint, replace the model
with `AutoModelForMaskedDiffusion.from_pretrained("diffutron/DiffutronLM-0.3B-Instruct")`.
"""

from __future__ import annotations

import torch
from transformers import ModernBertConfig

from transformers_mdlm import AutoModelForMaskedDiffusion

MASK_ID = 4


def build_model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModernBertConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        local_attention=16, global_attn_every_n_layers=2, max_position_embeddings=256, initializer_range=0.5,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, cls_token_id=2, sep_token_id=1,
    )  # fmt: skip
    model = AutoModelForMaskedDiffusion.from_config(config).eval()
    model.generation_config.mask_token_id = MASK_ID
    return model


def show(canvas: torch.Tensor) -> str:
    return " ".join("__" if t == MASK_ID else f"{t:02x}" for t in canvas.tolist())


def main() -> None:
    model = build_model()
    prompt = torch.tensor([[2, 17, 42, 99, 150]])
    out = model.generate(prompt, max_new_tokens=16, steps=8, block_length=8, output_history=True)
    print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters (random weights)")
    print(f"prompt {prompt[0].tolist()}, 16 new tokens in 2 blocks of 8, 8 steps -> {out.nfe} forward passes\n")
    for step, canvas in enumerate(out.history):
        print(f"step {step:2d}  {show(canvas[0, prompt.shape[1] :])}")

    for name, settings in {
        "reference (linear, low confidence)": {},
        "threshold decoding (Fast-dLLM, 0.5)": {"confidence_threshold": 0.5},
        "sampling (temperature 0.7, top-p 0.9)": {"temperature": 0.7, "top_p": 0.9},
        "guidance (cfg 1.0) + penalty 1.2": {"cfg_scale": 1.0, "repetition_penalty": 1.2},
    }.items():
        result = model.generate(
            prompt, max_new_tokens=16, steps=8, block_length=8, return_dict_in_generate=True,
            generator=torch.Generator().manual_seed(0), **settings,
        )  # fmt: skip
        print(f"\n{name}: {result.nfe} passes\n  {show(result.sequences[0, prompt.shape[1] :])}")


if __name__ == "__main__":
    main()
