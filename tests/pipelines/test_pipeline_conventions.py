"""The pipeline takes and returns what transformers' text-generation pipeline does."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast, pipeline
from transformers.pipelines.pt_utils import KeyDataset

from conftest import EOS, VOCAB

SHORT = dict(max_new_tokens=8, steps=4, block_length=8)
TEXTS = ["w1 w2 w3", "w4", "w5 w6", "w7 w8 w9 w10"]


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return pipeline("masked-diffusion", model=str(tiny_model_dir))


def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece-style, as Diffutron's Gemma tokenizer: a "▁" prepended to the text and marking word starts."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    words = ["▁"] + [f"▁w{i}" for i in range(VOCAB - len(specials) - 1)]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>", mask_token="<mask>")  # fmt: skip


def test_datasets_key_datasets_and_generators_stream_through(pipe):
    expected = [pipe(text, **SHORT) for text in TEXTS]
    ds = Dataset.from_dict({"text": TEXTS})
    assert list(pipe(KeyDataset(ds, "text"), batch_size=2, **SHORT)) == expected
    assert list(pipe(ds["text"], batch_size=3, **SHORT)) == expected
    assert list(pipe((text for text in TEXTS), batch_size=2, **SHORT)) == expected
    with pytest.raises(TypeError, match="input 1"):
        list(pipe(iter(["w1", 5]), **SHORT))


def test_chat_reply_alone_and_continuing_the_final_message(pipe):
    messages = [{"role": "user", "content": "w1 w2"}]
    conversation = pipe(messages, **SHORT)[0]["generated_text"]
    reply = pipe(messages, return_full_text=False, **SHORT)[0]["generated_text"]
    assert isinstance(reply, str) and conversation[-1] == {"role": "assistant", "content": reply}
    started = [*messages, {"role": "assistant", "content": "w7"}]
    continued = pipe(started, **SHORT)[0]["generated_text"]
    assert len(continued) == 2 and continued[-1]["content"].startswith("w7")
    tail = pipe(started, return_full_text=False, **SHORT)[0]["generated_text"]
    assert continued[-1]["content"] == "w7" + tail
    # the model saw the open answer: "[Answer]\nw7" with no closing marker
    seen = []
    pipe(started, callback_on_step_end=lambda m, s, t, kw: seen.append(kw["sequences"]), **SHORT)
    prompt = pipe.tokenizer.decode(seen[0][0, :-8])
    assert prompt.endswith("[Answer] w7") and "[/Answer]" not in prompt


def test_return_tensors_num_return_sequences_and_generation_config(pipe):
    ids = pipe.tokenizer("w1 w2", add_special_tokens=False, return_tensors="pt").input_ids
    tokens = pipe("w1 w2", return_tensors=True, **SHORT)[0]["generated_token_ids"]
    assert tokens == pipe.model.generate(ids, **SHORT)[0].tolist()
    samples = pipe("w1 w2", num_return_sequences=3, do_sample=True, generator=torch.Generator().manual_seed(0),
                   return_full_text=False, **SHORT)  # fmt: skip
    assert len(samples) == 3 and len({s["generated_text"] for s in samples}) > 1
    configured = pipe("w1 w2", generation_config=GenerationConfig(max_new_tokens=3), steps=3, return_tensors=True)
    assert len(configured[0]["generated_token_ids"]) == 2 + 3
    with pytest.raises(TypeError, match="num_beams"):
        pipe("w1", generation_config=GenerationConfig(num_beams=2))


def test_metaspace_tokenizer_spacing_and_trailing_whitespace(tiny_modernbert):
    tokenizer = metaspace_tokenizer()
    assert tokenizer.convert_ids_to_tokens(tokenizer("w1 w2 ", add_special_tokens=False).input_ids) == [
        "▁w1", "▁w2", "▁",
    ]  # fmt: skip
    pipe = pipeline("masked-diffusion", model=tiny_modernbert, tokenizer=tokenizer)
    answer = pipe("w1 w2", return_full_text=False, **SHORT)[0]["generated_text"]
    new = pipe("w1 w2", return_tensors=True, **SHORT)[0]["generated_token_ids"][2:]
    new = new[: new.index(EOS)] if EOS in new else new
    words = [tokenizer.convert_ids_to_tokens(t).lstrip("▁") for t in new if t not in tokenizer.all_special_ids]
    assert answer == "".join(" " + w for w in words if w)  # one space before each word, none doubled
    assert pipe("w1 w2", **SHORT)[0]["generated_text"] == "w1 w2" + answer
    for typed in ("w1 w2 ", "w1 w2\n"):  # trailing whitespace is not a token of the prompt
        assert pipe(typed, **SHORT)[0]["generated_text"] == typed + answer.lstrip()
    assert not pipe("", return_full_text=False, **SHORT)[0]["generated_text"].startswith(" ")


def test_a_calls_output_choice_replaces_the_one_made_at_construction(tiny_model_dir):
    """As transformers: `return_full_text` / `return_tensors` become one return type, and the call's wins."""
    built_for_ids = pipeline("masked-diffusion", model=str(tiny_model_dir), return_tensors=True, **SHORT)
    ids = built_for_ids("w1 w2")[0]["generated_token_ids"]
    new_text = built_for_ids("w1 w2", return_full_text=False)[0]["generated_text"]
    assert new_text.split() == built_for_ids.tokenizer.decode(ids[2:], skip_special_tokens=True).split()
    assert "generated_text" in built_for_ids("w1 w2", return_tensors=False)[0]
    built_for_new_text = pipeline("masked-diffusion", model=str(tiny_model_dir), return_full_text=False, **SHORT)
    assert built_for_new_text("w1 w2", return_tensors=True)[0]["generated_token_ids"] == ids  # prompt and answer
    assert not built_for_new_text("w1 w2")[0]["generated_text"].startswith("w1 w2")


def test_a_tokenizer_without_a_model_is_refused_as_transformers_does(tiny_tokenizer):
    with pytest.raises(RuntimeError, match="tokenizer specified but not the model"):
        pipeline("masked-diffusion", tokenizer=tiny_tokenizer)


def test_infilling_keeps_the_text_as_typed_outside_its_blanks(pipe):
    # "hello" and "é" are not in the tiny vocabulary: decoding the filled ids would turn them into nothing.
    out = pipe("w1 <mask> hello é w3 <mask><mask>", steps=3)[0]["generated_text"]
    words = out.split()
    assert words[0] == "w1" and words[2:5] == ["hello", "é", "w3"] and len(words) == 7
    assert all(word.startswith("w") and word[1:].isdigit() for word in (words[1], *words[5:]))
    assert pipe("w1 <mask> hello", steps=1, return_full_text=False) == pipe("w1 <mask> hello", steps=1)


def test_generator_and_callback_are_checked_before_decoding(pipe):
    with pytest.raises(TypeError, match="`generator` must be a torch"):
        pipe("w1", generator=42, **SHORT)
    with pytest.raises(TypeError, match="`callback_on_step_end` must be callable"):
        pipe("w1", callback_on_step_end="x", **SHORT)


def test_a_mask_token_inside_a_chat_message_is_refused(pipe):
    with pytest.raises(ValueError, match="Message 0 holds the mask token"):
        pipe([{"role": "user", "content": "w1 <mask> w2"}], **SHORT)
