"""Tiny random models and a tiny tokenizer, built in memory: no download, a fraction of a second each."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    DistilBertConfig,
    ModernBertConfig,
    PreTrainedTokenizerFast,
    RobertaConfig,
    XLMRobertaConfig,
)

from transformers_mdlm import AutoModelForMaskedDiffusion, MaskedDiffusionTrainingArguments

PAD, EOS, BOS, UNK, MASK = 0, 1, 2, 3, 4
VOCAB = 100
SPECIAL_IDS = {"pad_token_id": PAD, "eos_token_id": EOS, "bos_token_id": BOS}


def modernbert_config(**overrides) -> ModernBertConfig:
    """mmBERT-shaped in miniature: alternating local/global attention, RoPE, tied decoder, Gemma-style special ids."""
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        local_attention=8,
        global_attn_every_n_layers=2,
        max_position_embeddings=128,
        cls_token_id=BOS,
        sep_token_id=EOS,
        # A wide initialisation makes the random model's predictions vary from position to position, so that
        # orderings and tokens really are tested.
        initializer_range=1.0,
        **SPECIAL_IDS,
    )
    values.update(overrides)
    return ModernBertConfig(**values)


def _bert_like(config_class, max_position_embeddings: int):
    """A two-layer BERT-family configuration (BERT, RoBERTa, XLM-RoBERTa share their argument names)."""
    return lambda: config_class(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=max_position_embeddings, initializer_range=0.5, **SPECIAL_IDS,
    )  # fmt: skip


ARCHITECTURE_CONFIGS = {
    "modernbert": modernbert_config,
    "bert": _bert_like(BertConfig, 64),
    "roberta": _bert_like(RobertaConfig, 66),  # RoBERTa's positions start after the pad id
    "xlm-roberta": _bert_like(XLMRobertaConfig, 66),
    "distilbert": lambda: DistilBertConfig(
        vocab_size=VOCAB,
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=64,
        initializer_range=0.5,
        **SPECIAL_IDS,
    ),
}


def build_model(config, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForMaskedDiffusion.from_config(config).eval()
    model.generation_config.mask_token_id = MASK
    return model


@pytest.fixture(scope="session")
def tiny_modernbert():
    """One tiny random ModernBERT for the whole session; tests must not modify it (use `fresh_modernbert`)."""
    return build_model(modernbert_config())


@pytest.fixture
def fresh_modernbert():
    return build_model(modernbert_config())


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_modernbert):
    """The tiny ModernBERT and tokenizer saved as a model folder (what a Hub repository holds)."""
    path = tmp_path_factory.mktemp("tiny-mdlm")
    tiny_modernbert.save_pretrained(path)
    make_tiny_tokenizer().save_pretrained(path)
    return path


def make_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over 100 ids with Gemma-style special ids (pad 0, eos 1, bos 2, unk 3, mask 4).

    Its words are Diffutron's chat markers (`[Question]` ... `[/Answer]`, ids 5-10) and `w0` ... `w88`.
    """
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    markers = ["[SYS]", "[/SYS]", "[Question]", "[/Question]", "[Answer]", "[/Answer]"]
    words = markers + [f"w{i}" for i in range(VOCAB - len(specials) - len(markers))]
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def random_prompt(generator: torch.Generator, length: int) -> list[int]:
    """Ordinary (non-special) token ids."""
    return torch.randint(5, VOCAB, (length,), generator=generator).tolist()


def left_pad(prompts: list[list[int]], pad_id: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(p) for p in prompts), default=0)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
    return ids, mask


# --------------------------------------------------------------------------- training helpers


def small_model(seed: int = 0, **overrides):
    """A ModernBERT small enough to train in seconds on the CPU, with the usual special ids."""
    torch.manual_seed(seed)
    values = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  initializer_range=0.02, local_attention=16)  # fmt: skip
    values.update(overrides)
    model = AutoModelForMaskedDiffusion.from_config(modernbert_config(**values))
    model.generation_config.mask_token_id = MASK
    return model


def args(tmp_path, **overrides):
    """Training arguments for a quick, silent CPU run writing under `tmp_path`."""
    values = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, report_to=[], save_strategy="no",
                  seed=0, use_cpu=True, logging_steps=1000, disable_tqdm=True)  # fmt: skip
    values.update(overrides)
    return MaskedDiffusionTrainingArguments(**values)


def counting_dataset(rows: int = 2000, length: int = 16, seed: int = 0) -> Dataset:
    """A tiny language: each row counts up (mod 40) over ids 20..59 from a random start."""
    starts = torch.randint(0, 40, (rows,), generator=torch.Generator().manual_seed(seed)).tolist()
    data = [[20 + (s + i) % 40 for i in range(length)] for s in starts]
    return Dataset.from_dict({"input_ids": data, "sample_id": list(range(rows))})
