"""Where a decoding call spends its time on a GPU: CUDA runtime calls (kernel launches, graph replays, host syncs) and
the busiest kernels, for this package's default step and its compiled static-shape step (CUDA graphs).

Run (on a machine with a GPU; `benchmarks/gpu_step.sh` runs it after the GPU benchmarks):

    python benchmarks/profile_step.py --dtype float32

Uses the mmBERT-shaped random model of `benchmark.py`, one 32-token prompt, 64 new tokens in 64 steps, blocks of 32,
greedy, as `benchmark.py generation --batch-sizes 1`.
"""

from __future__ import annotations

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import CompileConfig

from benchmark import DTYPES, GENERATION_SETTINGS, SAME_AS_REFERENCE, mmbert_shaped_model


def runtime_calls(prof: profile) -> dict[str, int]:
    """How many times each CUDA runtime or driver function ran (launches, graph replays, copies, syncs)."""
    counts = collections.Counter()
    for event in prof.events():
        if event.name.startswith("cu") and event.device_type == torch.autograd.DeviceType.CPU:
            counts[event.name] += 1
    return dict(counts.most_common(8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model, prompts, _, _ = mmbert_shaped_model(args.device)
    model = model.to(DTYPES[args.dtype])
    ids = torch.tensor([prompts[0]], device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else lambda: None
    settings = {**GENERATION_SETTINGS["short"], **SAME_AS_REFERENCE}
    compiled = CompileConfig(mode="reduce-overhead", fullgraph=False, dynamic=False)
    variants = {"default step": {}, "compiled static step": {"compile_config": compiled}}
    for name, extra in variants.items():
        model.generate(ids, **settings, **extra)  # warm up (and compile)
        sync()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
        with profile(activities=activities) as prof:
            model.generate(ids, **settings, **extra)
            sync()
        steps = settings["steps"]
        print(f"== {name} ({args.dtype}), one call of {steps} steps; runtime calls: {runtime_calls(prof)}")
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
