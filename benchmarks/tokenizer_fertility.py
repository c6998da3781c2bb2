"""Measure tokens per word of candidate Turkish tokenizers trained on the shared corpus.

Run: `python benchmarks/tokenizer_fertility.py [--corpus-dir ../shared/data/turkish/corpus]`

Trains each candidate with `tokenizers` on train.txt and reports, on validation.txt, tokens per whitespace word and
per character, and the share of words kept whole. Used to choose the embedded model's tokenizer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def build(kind: str, vocab_size: int, files: list[str]) -> Tokenizer:
    if kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>")
    else:
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train(files, trainer)
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus-dir", default="../shared/data/turkish/corpus")
    parser.add_argument("--sizes", default="4000,8000,16000")
    args = parser.parse_args()
    corpus = Path(args.corpus_dir)
    lines = (corpus / "validation.txt").read_text(encoding="utf-8").splitlines()
    words = sum(len(line.split()) for line in lines)
    chars = sum(len(line) for line in lines)
    print(f"validation: {len(lines)} lines, {words} words, {chars} characters")
    print("| tokenizer | vocab | tokens/word | chars/token | words kept whole | round trip | train s |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("unigram", "bpe"):
        for size in map(int, args.sizes.split(",")):
            start = time.perf_counter()
            tokenizer = build(kind, size, [str(corpus / "train.txt")])
            seconds = time.perf_counter() - start
            encodings = tokenizer.encode_batch(lines)
            tokens = sum(len(e.ids) for e in encodings)
            whole = sum(len(tokenizer.encode(w).ids) == 1 for line in lines[:200] for w in line.split())
            total = sum(len(line.split()) for line in lines[:200])
            exact = sum(tokenizer.decode(e.ids) == line for e, line in zip(encodings, lines, strict=True))
            print(f"| {kind} | {tokenizer.get_vocab_size()} | {tokens / words:.3f} | {chars / tokens:.2f} | "
                  f"{whole / total:.1%} | {exact / len(lines):.1%} | {seconds:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
