"""Speed and memory of masked diffusion decoding and training, against the authors' reference loop.

Run (CPU, about 25 minutes on 2 cores; `bash benchmarks/run_all.sh DIR` runs all of it and writes JSON to DIR):

    python benchmarks/benchmark.py generation --model mmbert --repeats 2
    python benchmarks/benchmark.py generation --model embedded --repeats 3
    python benchmarks/benchmark.py fast-decoding
    python benchmarks/benchmark.py throughput
    python benchmarks/benchmark.py training

`generation` decodes fixed prompts with this package (exact, and with the approximate dual cache) and with the
reference loop (a literal restatement of the Diffutron authors' sampler: logits at every position, Python loops over
the batch, float64 Gumbel noise), interleaved in the same process, and reports wall time per generated token, forward
passes per token, peak memory (the process's resident high-water mark, reset before each method; CUDA's allocator
peak on a GPU) and the share of new tokens equal to the reference's. `--model mmbert` builds an mmBERT-shaped random
model (vocabulary 256,000, hidden 768, 22 layers) without slow initialisation; `--model embedded` uses the package's
embedded Turkish model; `--dtype bfloat16` casts the model (both methods), `--compile` compiles the encoder with
`torch.compile` (both methods use it); `--static-shapes` adds a row with `static_shapes=True`, and `--compile-step`
makes that row compile its step with `compile_config=CompileConfig(mode="reduce-overhead")` (CUDA graphs on a GPU),
`--compile-reference` adds the reference loop with its model call compiled the same way; `--first-call-row` adds a
row that drops the packed weights a bfloat16 model keeps between calls before each call (what a first call costs);
`--new-tokens N` decodes N tokens in N steps, `--block-length N` sets the block length, `--batch-sizes 1` skips
batch 4; `--settings` picks the decoding (Diffutron's short answers without or with the repetition penalty, or the
authors' sampler defaults). `fast-decoding` compares the sampler's fast settings on the embedded model and
`throughput` measures chat answers per second at batch 1, 4 and 16 (both in `decoding_speed.py`); `training` measures
tokens per second; `evidence-bound` times the evidence bound with PyTorch's kernels and the package's default
(`evaluation_speed.py`). It runs on a GPU when PyTorch sees one (`--device` overrides). Markdown tables go to stdout, JSON to
`--output`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_sampler import reference_generate
from transformers_mdlm import AutoModelForMaskedDiffusion
from transformers_mdlm.cpu_features import cpu_description
from transformers_mdlm.onednn_linear import release_packed_weights

#: Diffutron's short-answer settings (the paper's "short context" decoding).
SHORT_SETTINGS = {"max_new_tokens": 64, "steps": 64, "block_length": 32}
#: `generation --settings`: the decoding compared with the reference loop (greedy in all).
GENERATION_SETTINGS = {
    "short": {**SHORT_SETTINGS, "repetition_penalty": 1.0},
    "short-penalty": {**SHORT_SETTINGS, "repetition_penalty": 1.2},
    "authors-defaults": {"max_new_tokens": 128, "steps": 128, "block_length": 128, "repetition_penalty": 1.2},
}
#: The reference loop has no EOS stop and is greedy here; so is this package, whatever the model's defaults.
SAME_AS_REFERENCE = {
    "stop_on_eos": False,
    "stop_strings": None,
    "temperature": 0.0,
    "suppress_tokens": None,
    "no_repeat_ngram_size": 0,
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TURKISH_PROMPTS = [
    "Türkiye'nin başkenti",
    "Atatürk 1919 yılında Samsun'a çıktığında",
    "Bu akşam yemekte",
    "İstanbul Boğazı",
]


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    # The kernels PyTorch picks: bfloat16 figures differ by far between CPUs with and without bfloat16 kernels.
    return f"{cpu_description()}, {torch.get_num_threads()} threads"


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the resident-set high-water mark


def peak_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mmbert_shaped_model(device: str) -> tuple[Any, list[list[int]], int, int]:
    from transformers import ModernBertConfig
    from transformers.initialization import no_init_weights

    config = ModernBertConfig(
        vocab_size=256_000, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
        local_attention=128, global_attn_every_n_layers=3, max_position_embeddings=8192, pad_token_id=0,
        eos_token_id=1, bos_token_id=2, cls_token_id=2, sep_token_id=1,
    )  # fmt: skip
    with no_init_weights():
        model = AutoModelForMaskedDiffusion.from_config(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():  # fast random weights, wide enough to give varied predictions
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (0.05 if parameter.dim() > 1 else 0.0))
            if parameter.dim() == 1:
                parameter.fill_(1.0) if parameter.shape[0] == config.hidden_size else parameter.zero_()
    model.tie_weights()
    model = model.to(device).eval()
    mask_id, eos_id = 4, 1
    model.generation_config.update(mask_token_id=mask_id, eos_token_id=eos_id)
    prompts = [torch.randint(5, 256_000, (32,), generator=generator).tolist() for _ in range(4)]
    return model, prompts, mask_id, eos_id


def embedded_model(device: str) -> tuple[Any, list[list[int]], int, int, Any]:
    from transformers import AutoTokenizer

    from transformers_mdlm.presets import default_model_path

    path = default_model_path()
    if path is None:
        raise SystemExit("The embedded model is not installed yet.")
    model = AutoModelForMaskedDiffusion.from_pretrained(path, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [tokenizer(p, add_special_tokens=False).input_ids for p in TURKISH_PROMPTS]
    return model, prompts, tokenizer.mask_token_id, tokenizer.eos_token_id, tokenizer


def timed(function: Any, device: str) -> tuple[Any, float, float]:
    reset_peak(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - start, peak_mib(device)


def bench_generation(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    if args.model == "mmbert":
        model, prompts, mask_id, eos_id = mmbert_shaped_model(device)
    else:
        model, prompts, mask_id, eos_id, _ = embedded_model(device)
    model = model.to(DTYPES[args.dtype])
    if args.compile:
        model.model.compile(dynamic=True)  # the encoder; the head runs eagerly at a varying number of positions
    settings = dict(GENERATION_SETTINGS[args.settings])
    if args.new_tokens:  # one step per token, blocks of at most 32, as Diffutron's short answers
        settings.update(max_new_tokens=args.new_tokens, steps=args.new_tokens,
                        block_length=min(settings["block_length"], args.new_tokens))  # fmt: skip
    if args.block_length:
        settings["block_length"] = args.block_length
    rows = []
    for batch in args.batch_sizes or (1, len(prompts)):
        chosen = prompts[:batch]
        width = max(len(p) for p in chosen)
        ids = torch.zeros(batch, width, dtype=torch.long)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for row, prompt in enumerate(chosen):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        methods = {
            "this package": lambda ids=ids, mask=mask: model.generate(
                ids, attention_mask=mask, return_dict_in_generate=True, **settings, **SAME_AS_REFERENCE
            ),
            "reference loop": lambda chosen=chosen: reference_generate(
                model, chosen, mask_id=mask_id, eos_id=eos_id, **settings
            ),
        }
        if args.compile_reference:  # the reference's model call (whole rows, one shape) under the same compiler
            graphed = torch.compile(model, **compile_options(args), fullgraph=False, dynamic=False)
            methods["reference loop, compiled"] = lambda chosen=chosen, graphed=graphed: reference_generate(
                graphed, chosen, mask_id=mask_id, eos_id=eos_id, **settings
            )
            methods["reference loop, compiled"]()  # untimed: compiles, warms up
        if not args.no_cache:
            methods["this package, dual cache"] = lambda ids=ids, mask=mask: model.generate(
                ids, attention_mask=mask, return_dict_in_generate=True, kv_cache="dual", **settings,
                **SAME_AS_REFERENCE,
            )  # fmt: skip
        if args.first_call_row:  # a bfloat16 model's packed weights dropped before each call: every call packs them
            methods["this package, first call"] = lambda ids=ids, mask=mask: first_call(
                model,
                lambda: model.generate(
                    ids, attention_mask=mask, return_dict_in_generate=True, **settings, **SAME_AS_REFERENCE
                ),
            )
        if args.exact_row:  # PyTorch's own kernels, nothing substituted: the authors' tokens bit for bit
            methods["this package, deterministic"] = lambda ids=ids, mask=mask: deterministic(
                lambda: model.generate(
                    ids, attention_mask=mask, return_dict_in_generate=True, **settings, **SAME_AS_REFERENCE
                )
            )
        if args.static_shapes or args.compile_step:
            static = {"static_shapes": True}
            if args.compile_step:
                from transformers import CompileConfig

                static["compile_config"] = CompileConfig(**compile_options(args), fullgraph=False, dynamic=False)
            methods["this package, static shapes"] = lambda ids=ids, mask=mask, static=static: model.generate(
                ids, attention_mask=mask, return_dict_in_generate=True, **settings, **SAME_AS_REFERENCE, **static
            )
            methods["this package, static shapes"]()  # untimed: compiles (with --compile-step), warms up
        if args.compile:  # one untimed call compiles
            methods["this package"]()
        times = {name: [] for name in methods}
        peaks, new_tokens, passes = {}, {}, {}
        for _ in range(args.repeats):  # interleaved, so that all see the same machine state
            for name, method in methods.items():
                out, seconds, peak = timed(method, device)
                times[name].append(seconds)
                peaks[name] = peak
                if name.startswith("reference loop"):  # padded after EOS, as `generate` returns it
                    pad_id = model.padding_id(model.generation_config)
                    new_tokens[name] = [_pad_after_eos(out[r, len(p) : len(p) + settings["max_new_tokens"]].tolist(),
                                                       eos_id, pad_id) for r, p in enumerate(chosen)]  # fmt: skip
                    passes[name] = None
                else:
                    new_tokens[name] = [out.sequences[r, width:].tolist() for r in range(batch)]
                    passes[name] = out.nfe / settings["max_new_tokens"]
        tokens = batch * settings["max_new_tokens"]
        best = {name: min(values) for name, values in times.items()}
        reference = new_tokens["reference loop"]
        for name in methods:
            compiled_reference = new_tokens.get("reference loop, compiled")  # compiled kernels may round otherwise
            rows.append({
                "batch": batch,
                "method": name,
                "ms_per_token": 1000 * best[name] / tokens,
                "speedup_vs_reference": best["reference loop"] / best[name],
                "forward_passes_per_token": passes[name] if passes[name] is not None else 1.0,
                "peak_mib": peaks[name],
                "same_tokens_as_reference": _share_equal(new_tokens[name], reference),
                **({"same_tokens_as_compiled_reference": _share_equal(new_tokens[name], compiled_reference)}
                   if compiled_reference is not None else {}),
            })  # fmt: skip
    skips = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]  # calls that ran without CUDA graphs
    return {"benchmark": "generation", "model": args.model, "device": device_name(device), "dtype": args.dtype,
            "compile": args.compile, "compile_step": args.compile_step, "compile_reference": args.compile_reference,
            "emulate_precision_casts": args.emulate_precision_casts,
            "cudagraph_skips": skips, "settings": settings, "rows": rows}  # fmt: skip


def first_call(model: Any, call: Any) -> Any:
    """`call()` as a first decoding call: the packed copies of the model's weights kept by earlier calls dropped."""
    release_packed_weights(model)
    return call()


def deterministic(call: Any) -> Any:
    """`call()` under `torch.use_deterministic_algorithms(True)` (PyTorch's own kernels), then the switch as it was."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return call()
    finally:
        torch.use_deterministic_algorithms(before)


def _share_equal(rows: list[list[int]], reference: list[list[int]]) -> float:
    """The share of tokens equal, position by position, in rows of the same lengths."""
    pairs = [(a, b) for row, ref in zip(rows, reference, strict=True) for a, b in zip(row, ref, strict=True)]
    return sum(a == b for a, b in pairs) / len(pairs)


def compile_options(args: argparse.Namespace) -> dict[str, Any]:
    """CUDA graphs (`mode="reduce-overhead"`); with `--emulate-precision-casts`, inductor also rounds bfloat16
    intermediates as eager PyTorch does (its option; `torch.compile` takes a mode or options, not both)."""
    if args.emulate_precision_casts:
        return {"mode": None, "options": {"triton.cudagraphs": True, "emulate_precision_casts": True}}
    return {"mode": "reduce-overhead"}


def _pad_after_eos(tokens: list[int], eos_id: int | None, pad_id: int) -> list[int]:
    if eos_id is None or eos_id not in tokens:
        return tokens
    end = tokens.index(eos_id) + 1
    return tokens[:end] + [pad_id] * (len(tokens) - end)


def bench_training(args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import ModernBertConfig

    from transformers_mdlm import MaskedDiffusionTrainer, MaskedDiffusionTrainingArguments
    from transformers_mdlm.presets import default_model_path

    tokenizer = None
    if default_model_path():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    if tokenizer is None:
        raise SystemExit("The training benchmark uses the embedded model's tokenizer; install the model first.")
    config = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4,
        max_position_embeddings=256, local_attention=64, global_attn_every_n_layers=3, pad_token_id=0, eos_token_id=1,
        bos_token_id=2, cls_token_id=2, sep_token_id=1,
    )  # fmt: skip
    block, batch, steps = 128, 32, args.train_steps
    generator = torch.Generator().manual_seed(0)
    rows_data = torch.randint(5, len(tokenizer), (batch * (steps + 5), block), generator=generator).tolist()
    dataset = Dataset.from_dict({"input_ids": rows_data, "sample_id": list(range(len(rows_data)))})
    rows = []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = AutoModelForMaskedDiffusion.from_config(config)
        training_args = MaskedDiffusionTrainingArguments(
            output_dir="/tmp/mdlm-bench", per_device_train_batch_size=batch, max_steps=steps, report_to=[],
            save_strategy="no", use_cpu=not args.device.startswith("cuda"), bf16=precision == "bf16",
            disable_tqdm=True, logging_steps=10_000,
        )  # fmt: skip
        trainer = MaskedDiffusionTrainer(model=model, args=training_args, train_dataset=dataset,
                                         processing_class=tokenizer)  # fmt: skip
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        rows.append({"precision": precision, "parameters": sum(p.numel() for p in model.parameters()),
                     "tokens_per_second": steps * batch * block / seconds, "steps": steps})  # fmt: skip
    return {"benchmark": "training", "device": device_name(args.device), "block": block, "batch": batch, "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    keys = list(rows[0])
    lines = [f"{report['benchmark']} ({report.get('model', '')}) on {report['device']}", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]  # fmt: skip
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) and not math.isnan(v) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "benchmark", choices=["generation", "fast-decoding", "throughput", "training", "evidence-bound"]
    )
    parser.add_argument("--model", choices=["mmbert", "embedded"], default="mmbert")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights and compute (generation)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder (generation)")
    parser.add_argument("--no-cache", action="store_true", help="skip the dual-cache rows (generation)")
    parser.add_argument("--static-shapes", action="store_true", help="add a static-shapes row (generation)")
    parser.add_argument(
        "--exact-row", action="store_true",
        help="generation: add a row decoding under torch.use_deterministic_algorithms(True) (no kernel substituted)",
    )  # fmt: skip
    parser.add_argument(
        "--first-call-row", action="store_true",
        help="generation: add a row that drops the packed weights kept between calls before each call (bfloat16, CPU)",
    )  # fmt: skip
    parser.add_argument("--new-tokens", type=int, help="generation: new tokens (= steps) instead of the settings'")
    parser.add_argument("--batch-sizes", type=int, nargs="+", choices=[1, 2, 3, 4], help="generation: default 1 4")
    parser.add_argument("--block-length", type=int, help="generation: block length instead of the settings' (32)")
    parser.add_argument(
        "--compile-step", action="store_true",
        help="the static-shapes row compiles its step: compile_config=CompileConfig(mode='reduce-overhead')",
    )  # fmt: skip
    parser.add_argument(
        "--compile-reference", action="store_true",
        help="add a row: the reference loop with its model compiled, torch.compile(mode='reduce-overhead')",
    )  # fmt: skip
    parser.add_argument(
        "--emulate-precision-casts", action="store_true",
        help="compiled rows: inductor's emulate_precision_casts option (eager rounding of low-precision intermediates)",
    )  # fmt: skip
    parser.add_argument(
        "--settings",
        choices=sorted(GENERATION_SETTINGS),
        default="short",
        help="generation: Diffutron's short-answer settings without or with the repetition penalty, "
        "or the authors' sampler defaults (128 tokens, 128 steps, one block, penalty 1.2)",
    )
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--output", help="append the JSON report to this file")
    args = parser.parse_args()
    from decoding_speed import bench_fast_decoding, bench_throughput
    from evaluation_speed import bench_evidence_bound

    function = {"generation": bench_generation, "fast-decoding": bench_fast_decoding, "throughput": bench_throughput,
                "training": bench_training, "evidence-bound": bench_evidence_bound}  # fmt: skip
    report = function[args.benchmark](args)
    print(markdown(report))
    if args.output:
        with open(args.output, "a") as handle:
            handle.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
