"""The `mdlm` command.

- `mdlm generate`: one-shot generation from arguments or standard input;
- `mdlm chat`: an interactive multi-turn chat that shows each answer denoising live;
- `mdlm train pretrain|sft`: the training recipes (`RecipeArguments` + `MaskedDiffusionTrainingArguments` flags);
- `mdlm eval`: the evidence bound and CETVEL-style Turkish tasks, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .generation.configuration import ALPHA_SCHEDULES, KV_CACHES, REMASKING_STRATEGIES

_GENERATION_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("max_new_tokens", int, "tokens to generate"),
    ("min_new_tokens", int, "no EOS in the first this many new positions"),
    ("steps", int, "denoising steps over all blocks"),
    ("block_length", int, "semi-autoregressive block length"),
    ("temperature", float, "0 = greedy"),
    ("top_k", int, "top-k sampling"),
    ("top_p", float, "nucleus sampling"),
    ("repetition_penalty", float, "Diffutron's repetition penalty (1 = off)"),
    ("no_repeat_ngram_size", int, "no n-gram of this many tokens twice in a row (0 = off)"),
    ("cfg_scale", float, "classifier-free guidance (0 = off)"),
    ("confidence_threshold", float, "parallel decoding threshold in (0, 1] (Fast-dLLM)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdlm", description="Masked diffusion language models from the command line."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "train",
        help="train: `mdlm train pretrain ...` or `mdlm train sft ...` (see `mdlm train pretrain --help`)",
        add_help=False,
    )
    commands.add_parser(
        "lm-eval",
        help="lm-evaluation-harness's command line with the `mdlm` model registered: `mdlm lm-eval --model mdlm ...`",
        add_help=False,
    )

    demo = commands.add_parser("demo", help="serve a Gradio app: chat with live denoising, fill in blanks")
    demo.add_argument("--model", help="model folder, Hub id or alias (default: the embedded model)")
    demo.add_argument("--device", default=None, help="device, e.g. cpu or cuda:0")
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 for every interface)")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--share", action="store_true", help="also open a public gradio.live link")

    generate = commands.add_parser("generate", help="generate once, from arguments or standard input")
    generate.add_argument("prompt", nargs="*", help="the prompt (read from standard input when absent)")
    generate.add_argument("--chat", action="store_true", help="send the prompt as one user turn of a conversation")
    generate.add_argument("--system", help="system message (with --chat)")
    generate.add_argument(
        "--input", help="generate for every row of a .jsonl/.txt file or a dataset (with --output); torchrun-able"
    )
    generate.add_argument("--column", help="--input's column holding the prompts (default: text)")
    generate.add_argument("--id-column", help="--input's column of row ids (default: the row index)")
    generate.add_argument("--output", help="--input's results, one JSON line per row, in input order")
    generate.add_argument("--batch-size", type=int, help="rows per batch with --input (default: 8)")
    generate.add_argument("--live", action="store_true", help="show the canvas denoising live (on stderr)")
    generate.add_argument("--json", action="store_true", help="print the pipeline's output as JSON")
    generate.add_argument("--save-history", metavar="PATH", help="write the denoising as a .gif or .html file")

    chat = commands.add_parser("chat", help="interactive multi-turn chat that shows each answer denoising live")
    chat.add_argument("--system", help="system message")

    evaluate = commands.add_parser("eval", help="evaluate: perplexity (evidence bound), xcopa_tr, exams_tr, xquad_tr")
    evaluate.add_argument("--model", help="model folder, Hub id or alias (default: the embedded model)")
    evaluate.add_argument("--tasks", default="perplexity", help="comma-separated tasks")
    evaluate.add_argument("--data-dir", default="../shared/data/turkish/eval", help="folder of {task}_{split}.jsonl")
    evaluate.add_argument("--split", default="validation")
    evaluate.add_argument("--text-file", help="perplexity: one text per line")
    evaluate.add_argument("--limit", type=int, help="first N items of each task")
    evaluate.add_argument("--num-samples", type=int, default=32, help="Monte-Carlo draws of the evidence bound")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--max-new-tokens", type=int, default=32, help="xquad_tr: answer length")
    evaluate.add_argument("--steps", type=int, default=None, help="xquad_tr: denoising steps")
    evaluate.add_argument("--output", help="write the JSON here too")

    for command in (generate, chat):
        command.add_argument("--model", help="model folder, Hub id or alias (default: the embedded model)")
        command.add_argument("--device", default=None, help="device, e.g. cpu or cuda:0")
        command.add_argument("--seed", type=int, default=None, help="random seed for sampling")
        command.add_argument("--remasking", choices=REMASKING_STRATEGIES)
        command.add_argument("--schedule", choices=ALPHA_SCHEDULES)
        command.add_argument("--stop-on-eos", action="store_true", default=None, help="stop rows after an EOS block")
        command.add_argument(
            "--kv-cache", choices=KV_CACHES, help="approximate key/value reuse (Fast-dLLM dual cache)"
        )
        for name, kind, help_text in _GENERATION_OPTIONS:
            command.add_argument(f"--{name.replace('_', '-')}", type=kind, help=help_text)
    return parser


def _generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = [name for name, _, _ in _GENERATION_OPTIONS] + ["remasking", "schedule", "stop_on_eos", "kv_cache"]
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _load_pipeline(args: argparse.Namespace) -> Any:
    import transformers

    from .presets import default_model_path

    if args.model is None and default_model_path() is None:
        raise ValueError(
            "no embedded default model is installed yet: pass --model (a folder, a Hub id or 'diffutron')."
        )
    _check_device(args.device)
    return transformers.pipeline("masked-diffusion", model=args.model, device=args.device)


def _generator(seed: int | None) -> Any:
    if seed is None:
        return None
    import torch

    return torch.Generator().manual_seed(seed)


def _check_device(device: str | None) -> None:
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device!r} is not a device name (e.g. cpu, cuda, cuda:0, mps): {error}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA device; use --device cpu.")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here.")


def _check_history_path(path: str | None) -> None:
    """`--save-history` must name a .gif or .html file in an existing folder: checked before generating."""
    if path is None:
        return
    if not path.lower().endswith((".gif", ".html", ".htm")):
        raise ValueError(f"--save-history {path}: the file must end in .gif or .html.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--save-history {path}: the folder {folder} does not exist.")


def run_generate_dataset(args: argparse.Namespace) -> int:
    """`mdlm generate --input DATA --output OUT.jsonl`: every row, sharded over `torchrun`'s processes, resumable."""
    from .batch_generation import generate_dataset

    if args.prompt or args.chat or args.save_history or args.live or args.system or args.json:
        raise ValueError(
            "--input takes no prompt and no --chat, --system, --json, --save-history or --live (each row is a plain "
            "prompt; the results go to --output as JSON lines)."
        )
    if not args.output:
        raise ValueError("--input needs --output (a .jsonl file).")
    if args.device is None:  # under torchrun, each process on its own device (its GPU, or the CPU)
        from .batch_generation import process_state

        args.device = str(process_state().device)
    pipe = _load_pipeline(args)
    summary = generate_dataset(
        pipe, args.input, args.output, column=args.column or "text", id_column=args.id_column,
        batch_size=8 if args.batch_size is None else args.batch_size,
        generator=_generator(args.seed), return_full_text=False, **_generation_kwargs(args),
    )  # fmt: skip
    print(json.dumps(summary), file=sys.stderr)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    if args.input is not None:
        return run_generate_dataset(args)
    given = [flag for flag, value in (("--output", args.output), ("--column", args.column),
             ("--id-column", args.id_column), ("--batch-size", args.batch_size)) if value is not None]  # fmt: skip
    if given:  # they would be ignored for a single prompt
        raise ValueError(
            f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with --input (generation over a dataset)."
        )
    # A line read from a pipe ends in a newline that is not part of the prompt.
    prompt = " ".join(args.prompt) if args.prompt else sys.stdin.read().rstrip("\r\n")
    if args.system and not args.chat:
        raise SystemExit("mdlm generate: --system needs --chat")
    _check_history_path(args.save_history)
    pipe = _load_pipeline(args)
    kwargs = _generation_kwargs(args)
    inputs: Any = prompt
    if args.chat:
        inputs = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": prompt}
        ]
    call = dict(
        kwargs, generator=_generator(args.seed), return_history=bool(args.save_history), return_full_text=False
    )
    if args.live:
        from rich.console import Console

        from .visualization import LiveDenoisingView

        new_tokens = kwargs.get("max_new_tokens", pipe.model.generation_config.max_new_tokens)
        with LiveDenoisingView(pipe.tokenizer, start=-new_tokens, console=Console(stderr=True)) as view:
            record = pipe(inputs, callback_on_step_end=view.callback, **call)[0]
    else:
        record = pipe(inputs, **call)[0]
    text = record["generated_text"]
    history = record.pop("history", None)
    # The answer is printed first: a failure while drawing the history must not lose it.
    if args.json:
        print(json.dumps(record, ensure_ascii=False, indent=2))
    else:
        print(text[-1]["content"] if isinstance(text, list) else text)
    sys.stdout.flush()
    if args.save_history:
        from .visualization import render_denoising

        frames = render_denoising(history, args.save_history, mask_token=pipe.tokenizer.mask_token)
        print(f"wrote {args.save_history} ({frames} frames)", file=sys.stderr)
    return 0


def run_chat(args: argparse.Namespace, input_fn: Any = input) -> int:
    from rich.console import Console

    from .visualization import LiveDenoisingView

    console = Console()
    pipe = _load_pipeline(args)
    kwargs = _generation_kwargs(args)
    new_tokens = kwargs.get("max_new_tokens", pipe.model.generation_config.max_new_tokens)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages: list[dict[str, str]] = list(system)
    console.print("[dim]mdlm chat: /reset starts over, /exit (or Ctrl-D) quits.[/dim]")
    while True:
        try:
            line = input_fn("> ")
        except EOFError:
            console.print()
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            messages = list(system)
            continue
        messages.append({"role": "user", "content": line})
        with LiveDenoisingView(pipe.tokenizer, start=-new_tokens, console=console) as view:
            record = pipe(
                list(messages), callback_on_step_end=view.callback, generator=_generator(args.seed), **kwargs
            )[0]
        messages = record["generated_text"]
        console.print(f"[bold green]{messages[-1]['content']}[/bold green]")


TRAIN_STAGES = ("pretrain", "sft")


def run_train(argv: Sequence[str]) -> int:
    """`mdlm train pretrain|sft [flags]`: the recipe flags plus every `MaskedDiffusionTrainingArguments` flag."""
    from transformers import HfArgumentParser

    from .training.arguments import MaskedDiffusionTrainingArguments
    from .training.recipe import RecipeArguments, finish_distributed, run_instruction_tuning, run_pretraining

    if not argv or argv[0] not in TRAIN_STAGES:
        print(f"usage: mdlm train {{{','.join(TRAIN_STAGES)}}} --model M --train-file F --output-dir D [...]",
              file=sys.stderr)  # fmt: skip
        return 2
    stage, rest = argv[0], list(argv[1:])
    parser = HfArgumentParser((RecipeArguments, MaskedDiffusionTrainingArguments), prog=f"mdlm train {stage}")
    recipe, args = parser.parse_args_into_dataclasses(rest)
    metrics = (run_pretraining if stage == "pretrain" else run_instruction_tuning)(recipe, args)
    finish_distributed()
    print(json.dumps({key: value for key, value in metrics.items() if isinstance(value, (int, float))}, indent=2))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:  # gradio is the optional `demo` extra
        raise ValueError("the demo needs gradio: pip install 'transformers-mdlm[demo]'")
    from .demo import build_demo

    build_demo(_load_pipeline(args)).launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Run the tasks; every finished task is kept (also in `--output`, rewritten after each task). Exit status 1 when
    a task failed (its entry holds the error), 0 otherwise."""
    from .evaluation import evaluate_model

    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--steps", args.steps)):
        if value is not None and value < 1:  # checked before the model loads (generation is used by xquad_tr only)
            raise ValueError(f"{flag} must be >= 1, got {value}.")
    generation = {
        "max_new_tokens": args.max_new_tokens,
        "steps": args.max_new_tokens if args.steps is None else args.steps,
    }
    report = evaluate_model(
        args.model, args.tasks, data_dir=args.data_dir, split=args.split, text_file=args.text_file, limit=args.limit,
        num_samples=args.num_samples, seed=args.seed, generation=generation, output=args.output, progress=True,
    )  # fmt: skip
    print(json.dumps(report, ensure_ascii=False, indent=2))
    for task in report["failed"]:
        print(f"mdlm eval: {task} failed: {report['results'][task]['error']}", file=sys.stderr)
    return 1 if report["failed"] else 0


def run_lm_eval(argv: Sequence[str]) -> int:
    """`mdlm lm-eval ARGS...`: lm-evaluation-harness's own command line, with the `mdlm` model registered.

    lm-eval has no plugin entry point for models, so `lm_eval --model mdlm` alone cannot find this package's model;
    this runs the same command after importing it.
    """
    try:
        from lm_eval.__main__ import cli_evaluate

        from .evaluation import lm_eval_adapter  # noqa: F401  (registers the `mdlm` model)
    except ImportError as error:
        print(f"mdlm lm-eval: lm-evaluation-harness is not installed ({error}); pip install 'transformers-mdlm[eval]'",
              file=sys.stderr)  # fmt: skip
        return 2
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "lm-eval":
        return run_lm_eval(argv[1:])
    if argv and argv[0] == "train":
        try:
            return run_train(argv[1:])
        except (ValueError, TypeError, OSError) as error:
            print(f"mdlm train: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return run_generate(args)
        if args.command == "eval":
            return run_eval(args)
        if args.command == "demo":
            return run_demo(args)
        return run_chat(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"mdlm {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: stop quietly, with the shell's status for SIGINT
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
