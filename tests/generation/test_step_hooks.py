"""What each step reports and what a hook may change: callbacks, their inputs, replacing the canvas, streamers."""

from __future__ import annotations

import pytest
import torch

from conftest import EOS, MASK, PAD, left_pad
from transformers_mdlm.generation.stopping import pad_after_eos

SHORT = dict(max_new_tokens=16, steps=8, block_length=8)


def test_callback_sees_the_canvas_every_step(tiny_modernbert):
    seen = []

    def callback(model, step, timestep, kwargs):
        seen.append((step, timestep, kwargs["block_index"], kwargs["sequences"].clone(), kwargs["committed"].sum()))

    out = tiny_modernbert.generate(
        torch.tensor([[10, 11]]), callback_on_step_end=callback, return_dict_in_generate=True, **SHORT
    )
    assert [s[0] for s in seen] == list(range(out.nfe))
    assert [s[2] for s in seen] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert all(0 < s[1] <= 1 for s in seen)
    assert all(int(s[4]) == 2 for s in seen)
    assert torch.equal(seen[-1][3], out.sequences)


def test_streamer_gets_prompt_drafts_blocks_and_end(tiny_modernbert):
    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(("put", value.tolist()))

        def put_draft(self, value):
            self.calls.append(("draft", value.tolist()))

        def end(self):
            self.calls.append(("end", None))

    streamer = Recorder()
    out = tiny_modernbert.generate(torch.tensor([[10, 11]]), streamer=streamer, **SHORT)
    kinds = [c[0] for c in streamer.calls]
    assert kinds == ["put"] + ["draft"] * 4 + ["put"] + ["draft"] * 4 + ["put", "end"]
    assert streamer.calls[0][1] == [[10, 11]]
    assert streamer.calls[5][1][0] + streamer.calls[10][1][0] == out[0, 2:].tolist()


def test_callback_receives_only_the_requested_inputs(tiny_modernbert):
    seen = []
    tiny_modernbert.generate(
        torch.tensor([[10, 11]]),
        callback_on_step_end=lambda m, s, t, kw: seen.append(sorted(kw)),
        callback_on_step_end_tensor_inputs=["block_index"],
        **SHORT,
    )
    assert seen == [["block_index"]] * 8
    with pytest.raises(ValueError, match=r"`callback_on_step_end_tensor_inputs`.*sequences, committed, block_index"):
        tiny_modernbert.generate(
            torch.tensor([[10]]), callback_on_step_end=print, callback_on_step_end_tensor_inputs=["latents"], **SHORT
        )
    with pytest.raises(TypeError, match="`callback_on_step_end` must be callable"):
        tiny_modernbert.generate(torch.tensor([[10]]), callback_on_step_end="print", **SHORT)


def test_committed_is_in_the_output_layout(tiny_modernbert):
    """For a left-padded batch, `committed` marks exactly the columns of `sequences` that changed at that step."""
    ids, mask = left_pad([[10, 11, 12], [13]])
    frames = []

    def callback(model, step, timestep, kwargs):
        frames.append((kwargs["sequences"].clone(), kwargs["committed"].clone()))

    out = tiny_modernbert.generate(ids, attention_mask=mask, callback_on_step_end=callback, **SHORT)
    previous = torch.cat([ids, torch.full((2, 16), MASK)], dim=1)
    for sequences, committed in frames:
        assert torch.equal(committed, sequences != previous)
        previous = sequences
    assert torch.equal(pad_after_eos(previous, ids.shape[1], EOS, PAD), out)


def test_callback_can_replace_the_canvas(tiny_modernbert):
    """A returned `sequences` replaces the canvas: a forced token stays, a re-masked one is decoded again."""
    prompt = torch.tensor([[10, 11]])

    def force(model, step, timestep, kwargs):
        if step == 0:
            sequences = kwargs["sequences"].clone()
            sequences[0, 5] = 77  # a still-masked position of the first block
            return {"sequences": sequences}
        return None

    forced = tiny_modernbert.generate(prompt, callback_on_step_end=force, return_dict_in_generate=True, **SHORT)
    assert forced.sequences[0, 5] == 77 and not (forced.sequences == MASK).any()
    assert forced.nfe <= 8

    def remask(model, step, timestep, kwargs):
        if step == 1:
            sequences = kwargs["sequences"].clone()
            sequences[kwargs["committed"]] = MASK  # undo this step's commits
            return {"sequences": sequences}
        return None

    out = tiny_modernbert.generate(prompt, callback_on_step_end=remask, return_dict_in_generate=True, **SHORT)
    assert not (out.sequences == MASK).any()  # the block's schedule was re-planned for the returned masks
    with pytest.raises(ValueError, match="replacement for `sequences` must be a tensor of shape"):
        tiny_modernbert.generate(prompt, callback_on_step_end=lambda *a: {"sequences": torch.zeros(1, 3)}, **SHORT)
