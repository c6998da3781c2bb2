"""Speed of the evidence bound (under every evaluation of the package) with PyTorch's kernels and with the package's
kernel route. Run through `benchmarks/benchmark.py`:

    python benchmarks/benchmark.py evidence-bound --dtype bfloat16

Three random sequences of 96 tokens, 8 draws each, on the mmBERT-shaped model (`--model embedded`: the embedded
model, on validation-like Turkish prompts), `--repeats` times each way, interleaved. "PyTorch's kernels" runs under
`torch.use_deterministic_algorithms(True)`; "default" is what `evidence_bound` does (on a CPU without bfloat16 kernels
a bfloat16 model's linears run in float32; otherwise the same kernels). Reports the best wall time and how far the
bounds moved (nats, largest over the sequences).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from benchmark import DTYPES, deterministic, device_name, embedded_model, mmbert_shaped_model
from transformers_mdlm.evaluation.likelihood import evidence_bound


def bench_evidence_bound(args: argparse.Namespace) -> dict[str, Any]:
    if args.model == "mmbert":
        model = mmbert_shaped_model(args.device)[0]
        vocabulary = model.config.vocab_size
        sequences = [torch.randint(5, vocabulary, (96,), generator=torch.Generator().manual_seed(i)).tolist()
                     for i in range(3)]  # fmt: skip
    else:
        model, sequences = embedded_model(args.device)[:2]
    model = model.to(DTYPES[args.dtype])
    methods = {
        "PyTorch's kernels": lambda: deterministic(
            lambda: evidence_bound(model, sequences, num_samples=8, batch_size=8)
        ),
        "default": lambda: evidence_bound(model, sequences, num_samples=8, batch_size=8),
    }
    times, bounds = {name: [] for name in methods}, {}
    for _ in range(args.repeats):
        for name, method in methods.items():
            start = time.perf_counter()
            bounds[name] = [bound.nats for bound in method()]
            times[name].append(time.perf_counter() - start)
    base = bounds["PyTorch's kernels"]
    rows = [{"method": name, "seconds": min(values), "speedup": min(times["PyTorch's kernels"]) / min(values),
             "largest_change_nats": max(abs(a - b) for a, b in zip(bounds[name], base, strict=True))}
            for name, values in times.items()]  # fmt: skip
    return {"benchmark": "evidence-bound", "model": args.model, "device": device_name(args.device),
            "dtype": args.dtype, "rows": rows}  # fmt: skip
