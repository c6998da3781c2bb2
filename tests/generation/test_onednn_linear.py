from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import transformers_mdlm.onednn_linear as onednn
from conftest import MASK, build_model, modernbert_config
from transformers_mdlm.cpu_features import cpu_has_native_bfloat16
from transformers_mdlm.onednn_linear import OneDNNLinearMode, onednn_linear_mode

needs_onednn = pytest.mark.skipif(not onednn._ONEDNN_LINEAR, reason="this PyTorch build has no oneDNN linear kernel")


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return nn.Linear(32, 1000)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts calls of oneDNN's linear kernel."""
    calls = []
    original = torch.ops.mkldnn._linear_pointwise

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", counting)
    return calls


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 32), (2, 32), (3, 5, 32), (17, 32)])
def test_the_mode_matches_the_module(layer, kernel_calls, shape):
    hidden = torch.randn(shape)
    with torch.inference_mode():
        expected = layer(hidden)
        with OneDNNLinearMode():
            logits = layer(hidden)
    assert kernel_calls == [torch.Size([torch.Size(shape[:-1]).numel(), 32])]
    assert logits.shape == (*shape[:-1], 1000)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_the_mode_leaves_autograd_other_dtypes_and_other_functions_alone(layer, kernel_calls):
    hidden = torch.randn(4, 32, requires_grad=True)
    with OneDNNLinearMode():
        layer(hidden).sum().backward()  # autograd on: torch's own linear, so gradients flow
        torch.testing.assert_close(layer.bias.grad, torch.full((1000,), 4.0))
        with torch.inference_mode():
            layer.to(torch.bfloat16)(hidden.detach().bfloat16())
            assert torch.equal(F.relu(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
    assert kernel_calls == []


@needs_onednn
def test_a_failing_kernel_falls_back_to_torch(layer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("operator changed")

    monkeypatch.setattr(onednn, "_ONEDNN_LINEAR", True)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken)
    hidden = torch.randn(3, 32)
    with torch.inference_mode():
        with OneDNNLinearMode():
            logits = layer(hidden)
        torch.testing.assert_close(logits, layer(hidden))
    assert onednn._ONEDNN_LINEAR is False  # disabled for the rest of the process


@needs_onednn
def test_cpu_float32_decoding_uses_the_kernel_and_others_do_not(kernel_calls, monkeypatch):
    monkeypatch.setattr(onednn, "cpu_has_native_bfloat16", lambda: True)  # bfloat16 then keeps torch's kernel
    model = build_model(modernbert_config())
    ids = torch.tensor([[10, 11, 12]])
    out = model.generate(ids, max_new_tokens=8, steps=8, block_length=4, repetition_penalty=1.0)
    assert len(kernel_calls) > 8 and not (out == 4).all()
    kernel_calls.clear()
    model.to(torch.bfloat16).generate(ids, max_new_tokens=8, steps=8, block_length=4)
    assert kernel_calls == []
    assert isinstance(onednn_linear_mode(model), type(onednn_linear_mode(nn.Identity())))  # both no-op contexts


def test_deterministic_mode_decodes_with_pytorchs_own_kernels(kernel_calls):
    """Under `torch.use_deterministic_algorithms(True)` nothing is substituted, and greedy tokens equal the
    authors' loop (which runs PyTorch's kernels) bit for bit."""
    from conftest import EOS, MASK
    from reference_sampler import reference_generate

    model = build_model(modernbert_config())
    prompt = [10, 11, 12, 13]
    settings = dict(max_new_tokens=16, steps=16, block_length=8, repetition_penalty=1.2)
    expected = reference_generate(model, [prompt], mask_id=MASK, eos_id=EOS, **settings)[0, 4:20].tolist()
    torch.use_deterministic_algorithms(True)
    try:
        out = model.generate(torch.tensor([prompt]), output_history=True, **settings)
    finally:
        torch.use_deterministic_algorithms(False)
    assert kernel_calls == []
    assert out.history[-1][0, 4:].tolist() == expected
    model.generate(torch.tensor([prompt]), **settings)
    assert kernel_calls  # outside the switch, float32 CPU decoding does take the oneDNN route


needs_bf16 = pytest.mark.skipif(
    not (onednn._ONEDNN_LINEAR and cpu_has_native_bfloat16()),
    reason="oneDNN has no bfloat16 kernels on this CPU",
)


@needs_bf16
@pytest.mark.parametrize("encoder_too", [False, True], ids=["head", "head-and-encoder"])
def test_bfloat16_decoding_packs_its_linears_and_keeps_the_tokens(kernel_calls, monkeypatch, encoder_too):
    """A bfloat16 model decodes with its output head (and, when large enough, its other linears) packed for oneDNN;
    tokens and the order they are committed in equal plain decoding, with the authors' loop as the third witness."""
    from conftest import EOS, MASK
    from reference_sampler import reference_generate

    model = build_model(modernbert_config()).to(torch.bfloat16)
    prompt = [10, 11, 12, 13]
    settings = dict(max_new_tokens=16, steps=16, block_length=8, repetition_penalty=1.2)
    monkeypatch.setattr(onednn, "PACK_MIN_ELEMENTS", 0)  # the tiny head is far below the real threshold
    monkeypatch.setattr(onednn, "PACK_MIN_LINEAR_ELEMENTS", 0 if encoder_too else 10**12)
    packed = model.generate(torch.tensor([prompt]), output_history=True, **settings)
    linears = sum(isinstance(module, nn.Linear) for module in model.modules())  # each runs once per pass
    assert len(kernel_calls) == packed.nfe * (linears if encoder_too else 1)
    if not encoder_too:  # the head's calls: the block's positions against the hidden size
        assert all(shape[1] == model.config.hidden_size for shape in kernel_calls)
    kernel_calls.clear()
    monkeypatch.setattr(onednn, "PACK_MIN_STEPS", 10**6)  # now too few steps to pack: torch's own linear
    plain = model.generate(torch.tensor([prompt]), output_history=True, **settings)
    assert kernel_calls == []
    assert torch.equal(packed.sequences, plain.sequences)
    assert all(torch.equal(a, b) for a, b in zip(packed.history, plain.history, strict=True))  # same order
    expected = reference_generate(model, [prompt], mask_id=MASK, eos_id=EOS, **settings)[0, 4:20].tolist()
    assert packed.sequences[0, 4:].tolist() == expected


@needs_bf16
def test_the_head_is_not_packed_when_it_would_not_pay_or_exactness_is_asked(monkeypatch):
    model = build_model(modernbert_config()).to(torch.bfloat16)
    plain = type(onednn_linear_mode(nn.Identity()))
    assert isinstance(onednn_linear_mode(model, steps=64), plain)  # a small head: nothing to gain
    monkeypatch.setattr(onednn, "PACK_MIN_ELEMENTS", 0)
    assert isinstance(onednn_linear_mode(model, steps=4), plain)  # fewer steps than the reorder costs
    mode = onednn_linear_mode(model, steps=64, rows=8)
    assert isinstance(mode, OneDNNLinearMode) and not mode.float32
    assert [entry.weight for entry in mode.packed.values()] == [model.get_output_embeddings().weight]
    monkeypatch.setattr(onednn, "PACK_MIN_LINEAR_ELEMENTS", 0)  # every linear, each weight once
    linears = [module.weight for module in model.modules() if isinstance(module, nn.Linear)]
    assert {id(entry.weight) for entry in onednn_linear_mode(model, steps=64).packed.values()} == set(map(id, linears))
    torch.use_deterministic_algorithms(True)
    try:
        assert isinstance(onednn_linear_mode(model, steps=64), plain)
    finally:
        torch.use_deterministic_algorithms(False)


@needs_bf16
def test_a_packed_copy_computes_the_same_values_whatever_rows_it_was_packed_for():
    """Kept copies are reused by calls of other shapes: the rows given when packing only guide oneDNN's layout."""
    torch.manual_seed(0)
    weight = torch.randn(300, 48).bfloat16()
    copies = [torch.ops.mkldnn._reorder_linear_weight(weight, rows) for rows in (1, 8, 64, 512)]
    for rows in (1, 5, 33, 200):
        hidden = torch.randn(rows, 48).bfloat16()
        expected = F.linear(hidden, weight)
        for copy in copies:
            assert torch.equal(torch.ops.mkldnn._linear_pointwise(hidden, copy, None, "none", [], ""), expected)


@pytest.fixture
def reorders(monkeypatch):
    """Counts the weights oneDNN packs, and packs the tiny model's head and linears (far below the real thresholds)."""
    calls = []
    original = torch.ops.mkldnn._reorder_linear_weight

    def counting(weight, *args):
        calls.append(weight.shape)
        return original(weight, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", counting)
    monkeypatch.setattr(onednn, "PACK_MIN_ELEMENTS", 0)
    monkeypatch.setattr(onednn, "PACK_MIN_LINEAR_ELEMENTS", 0)
    return calls


def _decode_plain_and_packed(model, monkeypatch):
    """Tokens of one packed call and of PyTorch's own kernels (too few steps to pack), for the same model."""
    settings = dict(max_new_tokens=16, steps=16, block_length=8, repetition_penalty=1.2)
    packed = model.generate(torch.tensor([[10, 11, 12, 13]]), **settings)
    with monkeypatch.context() as patch:
        patch.setattr(onednn, "PACK_MIN_STEPS", 10**6)
        plain = model.generate(torch.tensor([[10, 11, 12, 13]]), **settings)
    return packed, plain


@needs_bf16
def test_packed_weights_are_kept_between_calls_while_their_bytes_stay_the_same(reorders, monkeypatch):
    """The second call reuses the first's packed copies; a weight written through `.data` (no version bump, same
    storage: only its content tells) or in place under `no_grad` is packed again, and the tokens follow the new weights."""
    model = build_model(modernbert_config()).to(torch.bfloat16)
    linears = sum(isinstance(module, nn.Linear) for module in model.modules())
    packed, plain = _decode_plain_and_packed(model, monkeypatch)
    assert len(reorders) == linears and torch.equal(packed, plain)
    reorders.clear()
    again, _ = _decode_plain_and_packed(model, monkeypatch)
    assert reorders == [] and torch.equal(again, packed)  # kept: nothing packed

    head = model.get_output_embeddings().weight
    version, pointer = head._version, head.data_ptr()
    top = int(again[0, 4])  # the first new token: make another one far likelier at every position
    head.data[(top + 1) % head.shape[0]] = head.data[top] * 4
    assert (head._version, head.data_ptr()) == (version, pointer)  # invisible to the version counter
    changed, plain = _decode_plain_and_packed(model, monkeypatch)
    assert reorders == [head.shape]  # only the head was packed again
    assert torch.equal(changed, plain) and not torch.equal(changed, again)

    reorders.clear()
    layer = model.model.layers[0].mlp.Wo
    with torch.no_grad():
        layer.weight.mul_(2)  # in place: the version counter moves
    changed, plain = _decode_plain_and_packed(model, monkeypatch)
    assert reorders == [layer.weight.shape] and torch.equal(changed, plain)


@needs_bf16
def test_a_merged_lora_adapter_is_decoded_with_the_merged_weights(reorders, monkeypatch):
    """peft's merge writes the sum into the base weights in place; decoding after it must use the merged weights."""
    from peft import LoraConfig, get_peft_model

    model = build_model(modernbert_config()).to(torch.bfloat16)
    before, _ = _decode_plain_and_packed(model, monkeypatch)
    targets = ["Wqkv", "Wi"]
    adapted = [module.weight.shape for name, module in model.named_modules() if name.split(".")[-1] in targets]
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    merged = get_peft_model(model, config).merge_and_unload()
    reorders.clear()
    after, plain = _decode_plain_and_packed(merged, monkeypatch)
    assert sorted(reorders) == sorted(adapted)  # the adapted layers, and only they, packed again
    assert torch.equal(after, plain) and not torch.equal(after, before)


@needs_bf16
def test_packed_weights_can_be_released_or_not_kept(reorders, monkeypatch):
    model = build_model(modernbert_config()).to(torch.bfloat16)
    linears = sum(isinstance(module, nn.Linear) for module in model.modules())
    _decode_plain_and_packed(model, monkeypatch)
    assert onednn.release_packed_weights(model) == linears
    assert onednn.release_packed_weights(model) == 0
    reorders.clear()
    _decode_plain_and_packed(model, monkeypatch)
    assert len(reorders) == linears  # packed anew after the release
    monkeypatch.setattr(onednn, "KEEP_PACKED_WEIGHTS", False)
    reorders.clear()
    _decode_plain_and_packed(model, monkeypatch)
    _decode_plain_and_packed(model, monkeypatch)
    assert len(reorders) == 2 * linears  # every call packs
    assert onednn.release_packed_weights(model) == 0  # the copies kept before were dropped, and nothing new was kept


def test_low_precision_greedy_proposals_match_their_own_argmax():
    """On a CPU, bfloat16/float16 logits are compared in float32 (faster there): same index, first maximum on ties."""
    from transformers_mdlm.generation.logits import propose_tokens

    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16):
        logits = torch.randn(6, 5000).to(dtype)
        logits[:, 4000] = logits[:, 17] = 50.0  # a tie: the first index wins
        logits[3, 9] = float("inf")
        proposals = propose_tokens(logits, temperature=0.0)
        assert torch.equal(proposals, logits.argmax(dim=-1))
        assert proposals.tolist() == [17, 17, 17, 9, 17, 17]


@needs_onednn
def test_without_bfloat16_kernels_nothing_is_packed_and_linears_sum_in_float32(kernel_calls, monkeypatch):
    # Runs on every CPU (the packing tests above need bfloat16 kernels): without them, oneDNN has no kernel for the
    # packed copies, and PyTorch's emulated bfloat16 linear is 2-7x slower than float32 (docs/performance.md), so the
    # mode sums bfloat16 linears in float32 and rounds, as the emulation does (in another order).
    model = build_model(modernbert_config()).to(torch.bfloat16)
    monkeypatch.setattr(onednn, "PACK_MIN_ELEMENTS", 0)
    monkeypatch.setattr(onednn, "cpu_has_native_bfloat16", lambda: False)
    mode = onednn_linear_mode(model, steps=64, rows=8)
    assert isinstance(mode, OneDNNLinearMode) and mode.bfloat16_in_float32 and not mode.packed and not mode.float32
    head = model.get_output_embeddings().weight
    [(weight, copy)] = mode.float32_copies.values()  # the head's float32 copy, made once
    assert weight is head and copy.dtype == torch.float32 and torch.equal(copy, head.float())
    torch.manual_seed(0)
    layer = nn.Linear(48, 300).to(torch.bfloat16)
    hidden = torch.randn(5, 48).bfloat16()
    with torch.inference_mode():
        expected = torch.ops.mkldnn._linear_pointwise(  # oneDNN's float32 kernel, rounded to bfloat16
            hidden.float(), layer.weight.float(), layer.bias.float(), "none", [], ""
        ).bfloat16()
        emulated = layer(hidden)
        kernel_calls.clear()
        with mode:
            routed = layer(hidden)
    assert kernel_calls == [torch.Size([5, 48])]  # oneDNN's float32 kernel computed it
    assert routed.dtype == torch.bfloat16 and torch.equal(routed, expected)
    torch.testing.assert_close(routed, emulated)  # bfloat16's tolerance: the sums differ in order only
    torch.use_deterministic_algorithms(True)
    try:
        assert isinstance(onednn_linear_mode(model, steps=64), type(onednn_linear_mode(nn.Identity())))
    finally:
        torch.use_deterministic_algorithms(False)


@needs_onednn
def test_bfloat16_decoding_without_bfloat16_kernels_runs_its_linears_in_float32(kernel_calls, monkeypatch):
    """Every linear of every forward pass goes through oneDNN's float32 kernel, and the model's logits stay those of
    PyTorch's kernels up to bfloat16 rounding (tokens are not compared: on a CPU that has the kernels, the
    deterministic run uses them, and a greedy near-tie may resolve otherwise)."""
    monkeypatch.setattr(onednn, "cpu_has_native_bfloat16", lambda: False)
    model = build_model(modernbert_config()).to(torch.bfloat16)
    settings = dict(max_new_tokens=16, steps=16, block_length=8, repetition_penalty=1.2)
    routed = model.generate(torch.tensor([[10, 11, 12, 13]]), **settings, return_dict_in_generate=True)
    linears = sum(isinstance(module, nn.Linear) for module in model.modules())
    assert len(kernel_calls) == routed.nfe * linears and not (routed.sequences == MASK).any()
    kernel_calls.clear()
    with torch.inference_mode():
        with onednn_linear_mode(model, steps=16):
            logits = model(input_ids=routed.sequences).logits
        torch.use_deterministic_algorithms(True)
        try:
            plain = model(input_ids=routed.sequences).logits
        finally:
            torch.use_deterministic_algorithms(False)
    assert len(kernel_calls) == linears  # the first pass only
    torch.testing.assert_close(logits.float(), plain.float(), rtol=0.05, atol=0.05)


def test_native_bfloat16_is_false_without_onednn(monkeypatch):
    assert cpu_has_native_bfloat16() == bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    cpu_has_native_bfloat16.cache_clear()
    try:
        assert cpu_has_native_bfloat16() is False
    finally:
        monkeypatch.undo()
        cpu_has_native_bfloat16.cache_clear()


def test_bfloat16_decoding_on_a_cpu_without_bfloat16_kernels_warns(monkeypatch, caplog):
    import logging

    model = build_model(modernbert_config())
    for native, dtype, exact, warns in (
        (False, torch.bfloat16, True, True),  # PyTorch's own (emulated) kernels, as exactness asks
        (False, torch.bfloat16, False, not onednn._ONEDNN_LINEAR),  # else linears run in float32
        (True, torch.bfloat16, True, False),
        (False, torch.float32, True, False),
    ):
        monkeypatch.setattr(onednn, "cpu_has_native_bfloat16", lambda native=native: native)
        logging.Logger.warning_once.cache_clear()  # transformers' warning_once: once per process otherwise
        caplog.clear()
        torch.use_deterministic_algorithms(exact)
        try:
            model.to(dtype).generate(torch.tensor([[10, 11, 12]]), max_new_tokens=4, steps=4)
        finally:
            torch.use_deterministic_algorithms(False)
        assert ("CPU without bfloat16 kernels" in caplog.text) == warns, (native, dtype, exact)


@needs_onednn
def test_the_evidence_bound_of_a_bfloat16_model_sums_in_float32_without_bfloat16_kernels(kernel_calls, monkeypatch):
    # Every evaluation goes through `evidence_bound`: in emulated bfloat16 an mmBERT-shaped model's took 50 s, 10.2 s
    # with the float32 route (docs/performance.md). Float32 models and exact runs keep PyTorch's kernels.
    from transformers_mdlm.evaluation.likelihood import evidence_bound

    monkeypatch.setattr(onednn, "cpu_has_native_bfloat16", lambda: False)
    model = build_model(modernbert_config())
    sequences = [[10 + i % 40 for i in range(30)], [12, 13, 14, 15]]
    evidence_bound(model, sequences, num_samples=4)
    assert kernel_calls == []  # float32: nothing substituted
    model.to(torch.bfloat16)
    routed = evidence_bound(model, sequences, num_samples=4)
    linears = sum(isinstance(module, nn.Linear) for module in model.modules())
    assert len(kernel_calls) == 2 * linears  # one forward pass per sequence (4 draws in a batch)
    kernel_calls.clear()
    torch.use_deterministic_algorithms(True)
    try:
        exact = evidence_bound(model, sequences, num_samples=4)
    finally:
        torch.use_deterministic_algorithms(False)
    assert kernel_calls == []
    for a, b in zip(routed, exact, strict=True):  # the same bound up to the order of float32 sums
        assert a.nats == pytest.approx(b.nats, rel=1e-2) and a.num_tokens == b.num_tokens


@needs_bf16
def test_concurrent_calls_pack_and_reuse_the_kept_copies_without_mixing_them(reorders):
    from concurrent.futures import ThreadPoolExecutor

    model = build_model(modernbert_config()).to(torch.bfloat16)
    settings = dict(max_new_tokens=16, steps=16, block_length=8, repetition_penalty=1.2)
    prompts = [torch.tensor([[10 + row, 11, 12, 13]]) for row in range(4)]
    expected = [model.generate(prompt, **settings) for prompt in prompts]
    onednn.release_packed_weights(model)
    with ThreadPoolExecutor(4) as pool:  # the first calls race to pack, the later ones reuse
        results = list(pool.map(lambda index: model.generate(prompts[index % 4], **settings), range(16)))
    assert all(torch.equal(result, expected[index % 4]) for index, result in enumerate(results))
