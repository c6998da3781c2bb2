"""Fast decoding on the embedded model: quality against speed (`fast-decoding`) and throughput by batch size
(`throughput`). Run through `benchmarks/benchmark.py`:

    python benchmarks/benchmark.py fast-decoding
    python benchmarks/benchmark.py throughput

`throughput` answers 16 Turkish chat prompts with the model's own generation defaults (its stop string and EOS stop
on), in batches of 1, 4 and 16, exact and with the fast settings, and once with the stops off to show the passes they
save. Wall time is the sum over the batches; a forward pass of a batch counts once.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch

from benchmark import device_name, embedded_model

CHAT_PROMPTS = [
    "Türkiye'nin başkenti neresidir?", "İstanbul hakkında kısa bir cümle yaz.", "Kitap okumanın faydaları nelerdir?",
    "Karadeniz hakkında bir cümle yazın.", "Atatürk hakkında kısa bir cümle yazın.", "Okul hakkında bir şey söyleyin.",
    "Aşağıdaki cümleyi tamamlayın.\n\nYarın sabah erkenden", "Bir doktor hakkında kısa bir cümle yaz.",
    "Aşağıdaki cümleyi tamamlayın.\n\nKış gelince köydeki evler", "Ankara hakkında bir şey söyleyin.",
    "Nutuk'a göre Ankara neden merkez seçildi?", "Bir kedi hakkında kısa bir cümle yazın.",
    "Aşağıdaki cümledeki özel adları listeleyin: Ayşe Ankara'dan İzmir'e gitti.",
    "Aşağıdaki cümledeki fiilleri listeleyin: Kuşlar uçtu ve öttü.", "Futbol hakkında bir cümle yazın.",
    "Boşluğa uygun kelimeyi yazarak cümleyi tamamlayın.\n\nSabah kahvaltıda ___ yedim.",
]  # fmt: skip
THROUGHPUT_VARIANTS = {
    "exact, one token per step": {},
    "exact, stops off": {"stop_on_eos": False, "stop_strings": None},
    "threshold 0.1": {"confidence_threshold": 0.1},
    "dual cache": {"kv_cache": "dual"},
    "dual cache + threshold 0.1": {"kv_cache": "dual", "confidence_threshold": 0.1},
}


def bench_fast_decoding(args: argparse.Namespace) -> dict[str, Any]:
    """Quality vs speed of the fast settings on the embedded model: agreement with one-token-per-step decoding and the
    evidence bound of the outputs under the model (lower = the model finds its own output likelier)."""
    from transformers_mdlm.evaluation import evidence_bound

    device = args.device
    model, prompts, mask_id, _, _ = embedded_model(device)
    new = 64
    # The model's n-gram ban is off: it is exact only with one token per step, so it would blur what is compared.
    baseline_settings = {"max_new_tokens": new, "steps": new, "block_length": 32, "stop_strings": None,
                         "no_repeat_ngram_size": 0}  # fmt: skip
    variants = {
        "one token per step (reference schedule)": {},
        "half the steps": {"steps": new // 2},
        "quarter of the steps": {"steps": new // 4},
        "threshold 0.5": {"confidence_threshold": 0.5},
        "threshold 0.3": {"confidence_threshold": 0.3},
        "threshold 0.2": {"confidence_threshold": 0.2},
        "threshold 0.1": {"confidence_threshold": 0.1},
        "threshold 0.05": {"confidence_threshold": 0.05},
        "threshold 0.1 + stop at EOS": {"confidence_threshold": 0.1, "stop_on_eos": True},
        "dual cache": {"kv_cache": "dual"},
        "dual cache + half the steps": {"kv_cache": "dual", "steps": new // 2},
        "dual cache + threshold 0.1": {"kv_cache": "dual", "confidence_threshold": 0.1},
        "dual cache + threshold 0.05": {"kv_cache": "dual", "confidence_threshold": 0.05},
    }
    variants["bfloat16 weights (reference schedule)"] = {"dtype": torch.bfloat16}
    results = []
    baseline = None
    for name, extra in variants.items():
        extra = dict(extra)
        runner = copy.deepcopy(model).to(extra.pop("dtype")) if "dtype" in extra else model
        settings = {**baseline_settings, **extra, "stop_on_eos": extra.get("stop_on_eos", False)}
        outs, seconds, nfe = [], 0.0, 0
        for prompt in prompts:
            ids = torch.tensor([prompt], device=device)
            start = time.perf_counter()
            out = runner.generate(ids, return_dict_in_generate=True, repetition_penalty=1.0, **settings)
            seconds += time.perf_counter() - start
            nfe += out.nfe
            outs.append(out.sequences[0].tolist())
        if baseline is None:
            baseline = outs
        agreement = sum(
            a == b
            for out, base, prompt in zip(outs, baseline, prompts, strict=True)
            for a, b in zip(out[len(prompt) :], base[len(prompt) :], strict=True)
        ) / (len(prompts) * new)
        bounds = evidence_bound(model, outs, mask_token_id=mask_id, context_lengths=[len(p) for p in prompts],
                                num_samples=32, seed=0)  # fmt: skip
        results.append({
            "decoding": name,
            "forward_passes_per_token": nfe / (len(prompts) * new),
            "ms_per_token": 1000 * seconds / (len(prompts) * new),
            "agreement_with_reference_schedule": agreement,
            "output_bound_nats_per_token": sum(b.nats for b in bounds) / sum(b.num_tokens for b in bounds),
        })  # fmt: skip
    return {"benchmark": "fast-decoding", "model": "embedded", "device": device_name(device), "rows": results}


def bench_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Chat answers per second at batch 1, 4 and 16, with the model's defaults and the fast settings."""
    device = args.device
    model, _, _, _, tokenizer = embedded_model(device)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in CHAT_PROMPTS]  # fmt: skip
    rows = []
    for name, extra in THROUGHPUT_VARIANTS.items():
        for batch in (1, 4, 16):
            seconds, passes, answer_tokens = 0.0, 0, 0
            for start in range(0, len(texts), batch):
                encoded = tokenizer(texts[start : start + batch], add_special_tokens=False, padding=True,
                                    padding_side="left", return_tensors="pt").to(device)  # fmt: skip
                begin = time.perf_counter()
                out = model.generate(**encoded, tokenizer=tokenizer, return_dict_in_generate=True, **extra)
                seconds += time.perf_counter() - begin
                passes += out.nfe
                new = out.sequences[:, encoded.input_ids.shape[1] :]
                answer_tokens += int((new != model.padding_id(model.generation_config)).sum())
            rows.append({
                "decoding": name, "batch": batch, "prompts_per_second": len(texts) / seconds,
                "ms_per_prompt": 1000 * seconds / len(texts), "forward_passes_per_call": passes * batch / len(texts),
                "answer_tokens_per_second": answer_tokens / seconds,
            })  # fmt: skip
    return {"benchmark": "throughput", "model": "embedded (chat)", "device": device_name(device), "rows": rows}


__all__ = ["bench_fast_decoding", "bench_throughput"]
