"""Write a picture of masked diffusion decoding: an animated GIF and a self-contained HTML page.

Run: `python examples/visualize_denoising.py [--model PATH_OR_ID] [--prompt TEXT] [--out docs/assets/denoising]`

Without `--model` it uses the package's default model when one is installed, else a small random ModernBERT with a
word-level tokenizer over a few Turkish words, built offline (its text is then word salad: the point is the
decoding, masks turning into words block by block).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import ModernBertConfig, PreTrainedTokenizerFast, pipeline

import transformers_mdlm
from transformers_mdlm.presets import default_model_path
from transformers_mdlm.visualization import render_denoising

SENTENCES = (
    "Türkiye'nin başkenti Ankara'dır . İstanbul en büyük şehirdir ve Boğaz iki kıtayı ayırır . Güneş doğudan doğar "
    "batıdan batar . Kitap okumak insanı geliştirir . Bugün hava çok güzel , parka gidelim mi ? Evet , hemen gidelim ."
)
WORDS = SENTENCES.split()


def demo_pipeline():
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        mask_token="<mask>",
    )  # fmt: skip
    torch.manual_seed(0)
    config = ModernBertConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=128, initializer_range=0.6, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        cls_token_id=2, sep_token_id=1,
    )  # fmt: skip
    model = transformers_mdlm.AutoModelForMaskedDiffusion.from_config(config).eval()
    return pipeline("masked-diffusion", model=model, tokenizer=tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=default_model_path())
    parser.add_argument("--prompt", default="Türkiye'nin başkenti")
    parser.add_argument("--out", default="denoising", help="output path without suffix (.gif and .html are written)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--block-length", type=int, default=12)
    args = parser.parse_args()

    pipe = pipeline("masked-diffusion", model=args.model) if args.model else demo_pipeline()
    record = pipe(
        args.prompt, max_new_tokens=args.max_new_tokens, steps=args.steps, block_length=args.block_length,
        return_history=True, return_full_text=True, suppress_tokens=[pipe.tokenizer.mask_token_id],
    )[0]  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".gif", ".html"):
        frames = render_denoising(record["history"], out.with_suffix(suffix), mask_token=pipe.tokenizer.mask_token)
        print(f"wrote {out.with_suffix(suffix)} ({frames} frames)")
    print(record["generated_text"])


if __name__ == "__main__":
    main()
