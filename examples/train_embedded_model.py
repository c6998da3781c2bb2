"""Train the package's embedded Turkish model: tokenizer -> pretraining -> instruction tuning -> install.

Run (about 2 hours 23 minutes on a 2-core CPU with bfloat16 kernels, AVX512-BF16, where it trains under bf16 autocast;
on a CPU without them, `--precision auto` trains in float32, since emulated bfloat16 is about 24x slower there, and the
recipe takes about 3 hours, estimated from step times measured on a 2-core AVX2 EPYC: 1.68 s per pretraining step,
1.03 s per SFT step; every stage is resumable and skipped when its output exists):

    python examples/train_embedded_model.py --data-dir ../shared/data/turkish --work-dir outputs/embedded

Stages (the Diffutron recipe at a scale this machine can run):

1. tokenizer: a byte-pair tokenizer (8,000 pieces, SentencePiece-style "▁" word starts, like mmBERT's Gemma
   tokenizer) trained with `tokenizers` on the corpus; `--prepend-scheme first` puts a "▁" before the text's first
   word only, not again after every chat marker (the default, "always", as model v8: 7 tokens between a question and
   its answer instead of 5). Measured with "first" (run "v9", 2-core Intel Xeon with AMX-BF16, 120 min): prompt use
   0.112 nats per reply token against v8's -0.029, but bound 0.751x against 0.741x, 5 of the card's 12 chat answers
   meeting the criteria against 11, EXAMS 19.3% against 20.9%; not shipped (docs/evaluation.md).
   `--split-newlines` makes a newline a token of its own, so that the word after it starts with "▁" as corpus words
   do (without it, as in v8, the trainer, reading the corpus with its line ends, learns pieces such as "im.\\n" that no
   pretraining row holds, and the first word of a chat question or answer, after a newline, is cut into letters).
   Measured (run "v10", same Xeon, 103 min): bound 0.781x / 0.737x / 0.739x after the three stages against v8's
   0.801x / 0.741x / 0.744x, prompt use 0.155 nats per reply token against -0.029, XCOPA 54% and EXAMS 20.6%, but 0
   of the card's 12 chat answers meeting the criteria: short answers, and with repetition penalty 1.5 the newline that
   ends an answer, present 5 times in the chat prompt, is penalised and a stray piece ("KÜR") takes its place; not
   shipped, so the split stays off by default;
2. pretrain: a small ModernBERT trained from scratch with the MDLM objective on the packed corpus (Diffutron adapts
   a pretrained mmBERT with LoRA instead; no pretrained Turkish encoder is available offline, so this pretrains fully);
   4,000 steps of 32 blocks of 128 tokens (5,050 s; bound 0.801x of the unigram model after it);
   2b. only with `--continue-steps N [N ...] --continue-lrs LR [LR ...]` (none by default): warm restarts on packed
   blocks, each a shorter cosine cycle from the previous one's end. Model v3 had one (1,500 steps, lr 6e-4, 2,822 s:
   0.801x -> 0.772x); a second (1,000 steps) gave 0.766x before SFT and 0.779x after it, but 2 of the card's 12 chat
   answers met the criteria (5 with one restart); 300 more packed steps after the first restart gained nothing;
   2c. pretrain_lines: 2,000 steps with one document per row (`RecipeArguments.line_by_line`, 128 documents a step,
   grouped by length, peak lr 6e-4, `--line-steps`, 0 skips it), so that the model sees texts that start at the first
   position and end at the last, as the evidence bound scores held-out texts and as prompts arrive (packed blocks
   start and end mid-document). Measured (models v6 and v8, the default): 0.801x -> 0.741x in 2,545 s, where v3's restart
   reached 0.772x in 2,822 s (and v3's restart followed by 500 steps of documents 0.750x, model "v5" of the notes);
3. Diffutron's chat markers become single tokens, and the tokenizer gets its chat template (`--chat-template`:
   Diffutron's, where an answer ends with a newline and then `[/Answer]`, or "direct", `[/Answer]` right after the
   answer's last word, so that the token ending an answer is not one the prompt holds 5 times; measured with the
   split in run "v11", 132 min: bound 0.739x, prompt use 0.077, but 4 of the card's 12 chat answers meeting the
   criteria and XCOPA 52%, EXAMS 19.1%, so not shipped and not the default); then, only with
   `--sft1-steps N` (off by default), sft1:
   instruction tuning on the linguistic tasks (NER, lemmatisation, POS tagging, verb/noun listing) plus sentence
   continuations from the corpus. Measured with replay (500 steps, then 700 of sft2): the chat answers turned into
   the linguistic tasks' lists ("Fiimler: isim"; 17% of the card's answers met the chat criteria, against 42% without
   stage 1), so the default recipe skips it;
4. sft2: instruction tuning on a rebalanced mix (see `embedded_model_data.py`, which keeps 400 linguistic rows),
   1,000 steps from the pretrained model (or from stage 1), with a LoRA adapter (peft; r=32, alpha 64 on every linear
   layer, `--sft-lora-r`, `--sft-lora-alpha`; the chat markers' embedding rows train with it as peft's trainable
   tokens), peak lr 1e-3 (`--sft2-lr`), merged into the weights after training. Measured from v6's pretrain_lines
   (model v8, the default; 895 s): the bound moves 0.741x -> 0.744x (8 samples; 0.741x on the card), where training
   every weight at lr 3e-4 (v6, `--sft-lora-r 0 --sft2-lr 3e-4`) moved it to 0.764x (0.761x on the card) and at
   1.5e-4 to 0.754x (4 of the card's 12 chat answers meeting the criteria, against v6's 8 and v8's 11). Averaging
   v6's SFT weights with its pretrained ones instead (0.3/0.5/0.7 of the pretrained) reached 0.753x/0.748x/0.744x,
   but the answers lost their end and ran to 64 tokens of word lists;
5. install: the final model in half precision, its tokenizer and generation defaults, copied into the package
   (`src/transformers_mdlm/default_model`), where `pipeline("masked-diffusion")` finds it.

The SFT stages mix corpus rows into their rows (`replay_ratio` rows per instruction row, 2 by default, scored whole as
in pretraining; documents with `pretrain_lines`, else packed blocks), so that instruction tuning keeps the pretrained
model's language (measured: one stage without replay took the bound from 0.80x to 0.93x of the unigram model, half a
packed block per row from 0.77x to 0.79x, two documents per row from 0.741x to 0.764x in model v6, and with LoRA to
0.744x in v8). Answers are padded
with scored EOS tokens to `max_new_tokens` (LLaDA's SFT), so the model learns to end them. The evidence bound on `validation.txt` is measured after each stage and written to the log with the wall times. The
evaluation and the model card come from `examples/evaluate_embedded_model.py`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import ModernBertConfig, PreTrainedTokenizerFast

from embedded_model_data import build_stage_data
from transformers_mdlm import AutoModelForMaskedDiffusion, MaskedDiffusionTrainingArguments
from transformers_mdlm.chat_templates import DIFFUTRON_CHAT_TEMPLATE
from transformers_mdlm.cpu_features import cpu_description, cpu_has_native_bfloat16
from transformers_mdlm.evaluation import corpus_evidence_bound, unigram_bound
from transformers_mdlm.training.recipe import RecipeArguments, run_instruction_tuning, run_pretraining

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
CHAT_MARKERS = ("[SYS]", "[/SYS]", "[Question]", "[/Question]", "[Answer]", "[/Answer]")
#: The chat templates the SFT rows and the pipeline's prompts can use. "diffutron" is Diffutron's own, where an answer
#: ends with a newline and then `[/Answer]`; "direct" puts `[/Answer]` right after the answer's last word, so that the
#: token ending an answer is one a single-turn prompt does not hold (the newline occurs 5 times in every chat prompt, and
#: the repetition penalty, which counts prompt tokens as transformers' does, pushed it down in run v10).
CHAT_TEMPLATES = {
    "diffutron": DIFFUTRON_CHAT_TEMPLATE,
    "direct": DIFFUTRON_CHAT_TEMPLATE.replace("+ '\\n[/Answer]\\n\\n'", "+ '[/Answer]\\n\\n'"),
}
PACKAGE_MODEL_DIR = Path(__file__).resolve().parents[1] / "src" / "transformers_mdlm" / "default_model"

#: Decoding defaults of the embedded model, saved in its generation_config.json: the winner of
#: `examples/tune_embedded_decoding.py` (which also suppresses EOS: see `install`).
GENERATION_DEFAULTS = {
    "max_new_tokens": 64,
    "steps": 64,
    "block_length": 32,
    "temperature": 0.0,
    "repetition_penalty": 1.5,
    "no_repeat_ngram_size": 3,
    "remasking": "low_confidence",
    "stop_on_eos": True,
    "stop_strings": ["[/Answer]"],
}


def train_tokenizer(
    corpus: Path, out: Path, vocab_size: int, prepend_scheme: str = "always", split_newlines: bool = False
) -> None:
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.NFC()
    # "first": a "▁" before the text's first word only, not again after every added token. Corpus lines hold no
    # added tokens, so the vocabulary and the pretraining rows are those of "always"; chat prompts lose the lone "▁"
    # after each chat marker, which brings the answer 2 tokens nearer its question (docs/evaluation.md).
    metaspace = pre_tokenizers.Metaspace(prepend_scheme=prepend_scheme)
    decoder = decoders.Metaspace(prepend_scheme=prepend_scheme)
    if split_newlines:
        # A newline is a token of its own, and (with "always") the word after it starts with "▁" as in the corpus.
        # Without the split (the default; models v8, v9) the BPE trainer, which reads the corpus with its line ends,
        # learns pieces such as "im.\n" that no pretraining row holds, and a word after a newline has no "▁": the
        # first and last words of every chat question and answer are cut into pieces pretraining never trained
        # ("\nAnneme" -> "\n", "A", "n", "n", "eme"). The newline decodes without the "▁" it is given.
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"), metaspace])
        backend.decoder = decoders.Sequence([decoders.Replace("▁\n", "\n"), decoder])
    else:
        backend.pre_tokenizer = metaspace
        backend.decoder = decoder
    backend.train([str(corpus)], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        mask_token="<mask>", model_max_length=256,
    )  # fmt: skip
    tokenizer.save_pretrained(out)


def initial_model(tokenizer_dir: Path, out: Path, args: argparse.Namespace) -> None:
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    config = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, max_position_embeddings=256,
        local_attention=64, global_attn_every_n_layers=3, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, cls_token_id=tokenizer.bos_token_id,
        sep_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForMaskedDiffusion.from_config(config)
    model.generation_config.update(mask_token_id=tokenizer.mask_token_id, **GENERATION_DEFAULTS)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def add_chat_markers(source: Path, out: Path, chat_template: str) -> None:
    """Give Diffutron's chat markers one token each before instruction tuning, and the tokenizer its chat template.

    Split into pieces, `[/Answer]` is hard for a small model to spell and for the pipeline to find; as single (not
    special, so that decoding keeps them) tokens, their embeddings start at the mean embedding and are learnt in SFT.
    The SFT rows and the pipeline's prompts are rendered with the tokenizer's chat template.
    """
    tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    tokenizer.add_tokens(list(CHAT_MARKERS))
    tokenizer.chat_template = chat_template
    model = AutoModelForMaskedDiffusion.from_pretrained(source, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def chat_stage(pretrained: Path, out: Path, template_name: str) -> Path:
    """The SFT start point: `pretrained` with the chat markers and the chat template `template_name`.

    A resumed run whose start point holds another template stops: the SFT rows are rendered with the tokenizer's
    template, so a different `--chat-template` would be silently ignored.
    """
    template = CHAT_TEMPLATES[template_name]
    if not (out / "config.json").exists():
        add_chat_markers(pretrained, out, template)
        return out
    # Start points made before `--chat-template` hold no template: their SFT rendered rows with Diffutron's.
    saved = PreTrainedTokenizerFast.from_pretrained(out).chat_template or DIFFUTRON_CHAT_TEMPLATE
    if saved != template:
        kept = next((name for name, text in CHAT_TEMPLATES.items() if text == saved), "another")
        raise SystemExit(f"The tokenizer in {out} has the {kept!r} chat template, this run asks for {template_name!r}; "
                         f"resume with --chat-template {kept} or start a new --work-dir.")  # fmt: skip
    return out


def training_arguments(output_dir: Path, **overrides) -> MaskedDiffusionTrainingArguments:
    values = dict(
        output_dir=str(output_dir), use_cpu=True, seed=0, report_to=[], logging_steps=50,
        save_strategy="steps", save_steps=500, save_total_limit=1, lr_scheduler_type="cosine", weight_decay=0.01,
        adam_beta2=0.98, dataloader_num_workers=0, disable_tqdm=True, eval_strategy="no",
    )  # fmt: skip
    values.update(overrides)
    return MaskedDiffusionTrainingArguments(**values)


def latest_checkpoint(folder: Path) -> str | None:
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(checkpoints[-1]) if checkpoints else None


def measure_bound(model_dir: Path, data: Path, log: dict, name: str, num_samples: int) -> None:
    """The evidence bound on validation.txt (bits per character) next to the unigram model of the same tokenizer."""
    key = f"bound_after_{name}"
    if key in log:
        return
    start = time.perf_counter()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    model = AutoModelForMaskedDiffusion.from_pretrained(model_dir, dtype=torch.float32).eval()
    validation = (data / "corpus" / "validation.txt").read_text(encoding="utf-8").splitlines()
    train = (data / "corpus" / "train.txt").read_text(encoding="utf-8").splitlines()
    bound = corpus_evidence_bound(model, tokenizer, validation, num_samples=num_samples, seed=0)
    unigram = unigram_bound(tokenizer, train, validation)
    log[key] = {
        "bits_per_character": round(bound.bits_per_character, 4),
        "unigram_bits_per_character": round(unigram.bits_per_character, 4),
        "ratio_to_unigram": round(bound.bits_per_character / unigram.bits_per_character, 4),
        "num_samples": num_samples, "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    print(f"[{key}] {json.dumps(log[key])}")


def run_stage(name: str, work: Path, log: dict, function, recipe: RecipeArguments, **overrides) -> Path:
    overrides.setdefault("bf16", log.get("precision") == "bf16")
    out = work / name
    summary_path = out / "training_summary.json"
    if summary_path.exists():
        print(f"[{name}] done already: {out}")
        if name not in log:  # the run that trained it stopped before writing the log: take the stage's own summary
            summary = json.loads(summary_path.read_text())
            log[name] = {"wall_seconds": summary["wall_seconds"], **summary["metrics"]}
            save_log(work, log)
        return out
    start = time.perf_counter()
    args = training_arguments(out, resume_from_checkpoint=latest_checkpoint(out), **overrides)
    metrics = function(recipe, args)
    log[name] = {"wall_seconds": round(time.perf_counter() - start, 1), **metrics}
    save_log(work, log)  # at once: a later stage that fails must not lose this one's figures
    print(f"[{name}] {json.dumps(log[name], default=str)}")
    return out


def save_log(work: Path, log: dict) -> None:
    (work / "recipe_log.json").write_text(json.dumps(log, indent=2, default=str))


def install(stage2: Path, install: Path) -> None:
    """The final model in half precision, with its tokenizer and decoding defaults, into the package."""
    if install.exists():
        shutil.rmtree(install)
    model = AutoModelForMaskedDiffusion.from_pretrained(stage2, dtype=torch.float32)
    # EOS is never proposed: the model learnt to fill its canvas with EOS after an answer, and EOS, certain at the end,
    # would be committed first and eat the answer; answers end at the `[/Answer]` stop string instead.
    eos_id = PreTrainedTokenizerFast.from_pretrained(stage2).eos_token_id
    model.generation_config.update(**GENERATION_DEFAULTS, suppress_tokens=[eos_id])
    model.half().save_pretrained(install)
    # The weights are stored in half precision (half the size); the config asks for float32 compute on loading.
    config_path = install / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "dtype": "float32"}, indent=2) + "\n")
    PreTrainedTokenizerFast.from_pretrained(stage2).save_pretrained(install)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/turkish")
    parser.add_argument("--work-dir", default="outputs/embedded")
    parser.add_argument("--install-to", default=str(PACKAGE_MODEL_DIR))
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument(
        "--prepend-scheme",
        choices=["always", "first"],
        default="always",
        help="the tokenizer's word start: before every section between added tokens (always, model v8) or before the "
        "text's first word only (first: no lone '▁' after the chat markers)",
    )
    parser.add_argument(
        "--split-newlines",
        action="store_true",
        help="make a newline a token of its own, so that the word after it starts with '▁' as corpus words do (off by "
        "default, as in model v8: measured in run v10, docs/evaluation.md, it kept v8's bound and used the prompt more, "
        "but no chat answer met the criteria)",
    )
    parser.add_argument(
        "--chat-template",
        choices=sorted(CHAT_TEMPLATES),
        default="diffutron",
        help="the chat template of the SFT rows and the model's tokenizer: Diffutron's (an answer ends with a newline, "
        "then [/Answer]; model v8) or direct ([/Answer] right after the answer's last word)",
    )
    parser.add_argument("--hidden-size", type=int, default=320)
    parser.add_argument("--intermediate-size", type=int, default=640)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=5)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--pretrain-steps", type=int, default=4000)
    parser.add_argument(
        "--continue-steps",
        type=int,
        nargs="*",
        default=[],
        help="steps of each warm-restart cycle on packed blocks after the first (none, the default: no restart)",
    )
    parser.add_argument(
        "--continue-lrs",
        type=float,
        nargs="*",
        default=[],
        help="peak learning rate of each warm-restart cycle, one per --continue-steps",
    )
    parser.add_argument(
        "--line-steps",
        type=int,
        default=2000,
        help="steps of the last pretraining stage, one document per row (0 skips it)",
    )
    parser.add_argument("--line-lr", type=float, default=6e-4, help="peak learning rate of that stage")
    parser.add_argument("--line-batch-size", type=int, default=128, help="documents per step in that stage")
    parser.add_argument(
        "--replay-ratio",
        type=float,
        default=2.0,
        help="SFT: corpus rows (documents with --line-steps, else packed blocks) per instruction row",
    )
    parser.add_argument("--sft1-steps", type=int, default=0, help="stage 1 steps (0, the default, skips it)")
    parser.add_argument("--sft2-steps", type=int, default=1000)
    parser.add_argument("--sft2-lr", type=float, default=1e-3, help="peak learning rate of stage 2")
    parser.add_argument(
        "--sft-lora-r",
        type=int,
        default=32,
        help="SFT with a LoRA adapter of this rank (merged after training; the chat markers' embedding rows train "
        "with it); 0 trains every weight (then pass --sft2-lr 3e-4)",
    )
    parser.add_argument("--sft-lora-alpha", type=int, default=64, help="LoRA alpha of the SFT adapter")
    parser.add_argument("--sft-seed", type=int, default=0, help="seed of the SFT stages (row order, masks)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bound-samples", type=int, default=8, help="Monte Carlo samples of the per-stage bound")
    parser.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="training compute: bf16 autocast, fp32, or auto (bf16 where the CPU has bfloat16 kernels, AVX512-BF16 or "
        "AMX; fp32 elsewhere, where bf16 runs about 24x slower)",
    )
    args = parser.parse_args()
    if args.bound_samples < 2:  # checked before any training: the bound's standard error needs two draws
        parser.error(f"--bound-samples must be at least 2, got {args.bound_samples}")
    if len(args.continue_lrs) != len(args.continue_steps):
        parser.error(f"--continue-lrs needs one learning rate per --continue-steps cycle: got "
                     f"{args.continue_lrs} for {args.continue_steps}")  # fmt: skip
    return args


def main() -> None:
    args = parse_args()
    data, work = Path(args.data_dir), Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "recipe_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    # bf16 autocast is emulated, and about 24x slower than fp32, on CPUs without bfloat16 kernels (cpu_features.py).
    precision = (
        "bf16" if args.precision == "bf16" or (args.precision == "auto" and cpu_has_native_bfloat16()) else "fp32"
    )
    if log.get("precision", precision) != precision:  # a resumed run trains its remaining stages as its first did
        if args.precision != "auto":
            raise SystemExit(f"--precision {args.precision}: the stages in {work} trained in {log['precision']}; "
                             "resume with that precision or start a new --work-dir.")  # fmt: skip
        print(f"[precision] {log['precision']}, as the stages in {work} trained (auto would pick {precision} here)")
    log.setdefault("precision", precision)
    log.setdefault("machine", cpu_description())  # the CPU the wall times come from (a resumed run keeps the first)

    trained = log.get("tokenizer")
    if trained:  # a resumed run keeps its tokenizer: a different setting would be ignored, so it is refused
        wanted = {"prepend_scheme": args.prepend_scheme, "split_newlines": args.split_newlines}
        kept = {"prepend_scheme": trained.get("prepend_scheme", "always"),
                "split_newlines": trained.get("split_newlines", False)}  # fmt: skip
        if kept != wanted:
            flags = f"--prepend-scheme {kept['prepend_scheme']}" + (
                " --split-newlines" if kept["split_newlines"] else ""
            )
            raise SystemExit(f"The tokenizer in {work} was trained with {kept}, this run asks for {wanted}; resume "
                             f"with {flags} or start a new --work-dir.")  # fmt: skip
    tokenizer_dir = work / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").exists():
        t0 = time.perf_counter()
        train_tokenizer(
            data / "corpus" / "train.txt", tokenizer_dir, args.vocab_size, args.prepend_scheme, args.split_newlines
        )
        log["tokenizer"] = {
            "wall_seconds": round(time.perf_counter() - t0, 1), "prepend_scheme": args.prepend_scheme,
            "split_newlines": args.split_newlines,
        }  # fmt: skip
        save_log(work, log)
    init_dir = work / "init"
    if not (init_dir / "config.json").exists():
        initial_model(tokenizer_dir, init_dir, args)

    corpus = RecipeArguments(
        model=str(init_dir), train_file=str(data / "corpus" / "train.txt"),
        validation_file=str(data / "corpus" / "validation.txt"), block_size=args.block_size,
    )  # fmt: skip
    pretrained = run_stage(
        "pretrain", work, log, run_pretraining, corpus, max_steps=args.pretrain_steps, learning_rate=1.5e-3,
        warmup_steps=300, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
    )  # fmt: skip
    measure_bound(pretrained, data, log, "pretrain", args.bound_samples)
    save_log(work, log)
    for cycle, (steps, learning_rate) in enumerate(zip(args.continue_steps, args.continue_lrs, strict=True), start=2):
        # Warm restarts: shorter cosine cycles, each from the previous one's end (the loss was still falling).
        corpus.model = str(pretrained)
        pretrained = run_stage(
            f"pretrain{cycle}", work, log, run_pretraining, corpus, max_steps=steps, learning_rate=learning_rate,
            warmup_steps=100, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
            seed=cycle - 1,
        )  # fmt: skip
        measure_bound(pretrained, data, log, pretrained.name, args.bound_samples)
        save_log(work, log)
    if args.line_steps:
        # One document per row: texts that start at the first position and end at the last, as the evidence bound
        # scores them and as prompts arrive (packed blocks start and end mid-document).
        corpus.model, corpus.line_by_line = str(pretrained), True
        pretrained = run_stage(
            "pretrain_lines", work, log, run_pretraining, corpus, max_steps=args.line_steps,
            learning_rate=args.line_lr, warmup_steps=30, per_device_train_batch_size=args.line_batch_size,
            train_sampling_strategy="group_by_length", seed=len(args.continue_steps) + 1,
        )  # fmt: skip
        measure_bound(pretrained, data, log, pretrained.name, args.bound_samples)
        save_log(work, log)
    chat_ready = chat_stage(pretrained, work / f"{pretrained.name}-chat", args.chat_template)
    log.setdefault("chat_template", args.chat_template)
    stage_data = build_stage_data(data, work / "data")
    # Replay: packed corpus blocks mixed into the SFT stages, so that instruction tuning keeps the language.
    replay = {"replay_file": corpus.train_file, "replay_ratio": args.replay_ratio} if args.replay_ratio else {}
    if replay and args.line_steps:
        replay["line_by_line"] = True  # replay documents, as the last pretraining stage saw them
    log["replay_ratio"] = args.replay_ratio
    log["replay_rows"] = "documents" if replay.get("line_by_line") else "packed blocks"

    lora = {}
    if args.sft_lora_r:  # an adapter on every linear layer, and the new chat markers' embedding rows
        lora = {"lora": True, "lora_r": args.sft_lora_r, "lora_alpha": args.sft_lora_alpha,
                "lora_trainable_tokens": ",".join(CHAT_MARKERS)}  # fmt: skip
    if "sft2" not in log:  # a stage trained earlier keeps the settings it was trained with in the log
        log["sft_lora"] = {"r": args.sft_lora_r, "alpha": args.sft_lora_alpha} if lora else None

    def instruction_tuning(name: str, start: Path, steps: int, learning_rate: float, warmup_steps: int) -> Path:
        recipe = RecipeArguments(
            model=str(start), train_file=str(stage_data[name]), max_length=256, truncate=True,
            pad_answer_to=GENERATION_DEFAULTS["max_new_tokens"], block_size=args.block_size, **replay, **lora,
        )  # fmt: skip
        return run_stage(name, work, log, run_instruction_tuning, recipe, max_steps=steps, learning_rate=learning_rate,
                         warmup_steps=warmup_steps, per_device_train_batch_size=16, seed=args.sft_seed)  # fmt: skip

    stage1 = chat_ready  # `--sft1-steps 0`: stage 2 only, starting from the pretrained model
    if args.sft1_steps:
        stage1 = instruction_tuning("sft1", chat_ready, args.sft1_steps, 5e-4, 50)
        measure_bound(stage1, data, log, "sft1", args.bound_samples)
    stage2 = instruction_tuning("sft2", stage1, args.sft2_steps, args.sft2_lr, 30)
    measure_bound(stage2, data, log, "sft2", args.bound_samples)
    save_log(work, log)

    target = Path(args.install_to)
    install(stage2, target)
    log["total_wall_seconds"] = round(
        sum(v.get("wall_seconds", v.get("seconds", 0)) for v in log.values() if isinstance(v, dict)), 1
    )
    save_log(work, log)
    size = sum(f.stat().st_size for f in target.iterdir())
    print(f"installed {target} ({size / 2**20:.1f} MiB); log in {log_path}")


if __name__ == "__main__":
    main()
