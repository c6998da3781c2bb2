"""Measure the embedded model and write its model card.

Run after `examples/train_embedded_model.py`:

    python examples/evaluate_embedded_model.py --data-dir ../shared/data/turkish --work-dir outputs/embedded

Figures: the evidence bound on the corpus's validation split (bits per character and per token) next to a unigram
model of the same tokenizer, XCOPA-tr validation accuracy by likelihood scoring, EXAMS-tr validation accuracy, the chat
criteria on 12 prompts written for the card (not used in tuning), whether answers use their prompt (`prompt_use` on
80 fill-in-the-blank and continuation rows built from validation.txt), loops in plain completions, and six sample answers
chosen from those prompts by a fixed seed (not picked). Writes `figures.json` in the work folder, the model card
(`model_cards/turkish-mdlm-embedded.md`, copied next to the weights as `README.md`) and `docs/embedded_model.md`; the
card also shows the recipe's log (`recipe_log.json` in the work folder, else the shipped model's, kept as
`model_cards/turkish-mdlm-embedded.recipe_log.json`) and the decoding sweep (`decoding_sweep.json`) when present.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import torch
from transformers import pipeline

import transformers_mdlm  # noqa: F401  (registers the pipeline)
from embedded_model_data import blank_rows, continuation_rows, plain_sentences
from transformers_mdlm.evaluation import corpus_evidence_bound, prompt_use, score_multiple_choice, unigram_bound
from transformers_mdlm.evaluation.tasks import MULTIPLE_CHOICE_TASKS
from transformers_mdlm.evaluation.text_quality import check_answer, corpus_vocabulary, distinct_n, has_loop
from transformers_mdlm.model_card import build_model_card
from transformers_mdlm.presets import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
#: The recipe's log of the shipped model, kept beside its card.
SHIPPED_LOG = ROOT / "model_cards" / "turkish-mdlm-embedded.recipe_log.json"
#: Held-out instruction rows whose answers depend on their prompts, built from validation.txt as the recipe builds its
#: training rows from train.txt: whether the model's answers use the question (`prompt_use`).
PROMPT_USE_ROWS = 40
#: Written for the card and the tests before the model was trained; never used to tune decoding.
CARD_PROMPTS = [
    "Türkiye'nin başkenti neresidir?",
    "Aşağıdaki cümledeki özel adları listeleyin: Mustafa Kemal 1919'da Samsun'a çıktı.",
    "İstanbul hakkında kısa bir cümle yaz.",
    "Aşağıdaki cümledeki fiilleri listeleyin: Çocuklar parkta koştu ve güldü.",
    "Nutuk'ta anlatılan Kurtuluş Savaşı hangi yıl başladı?",
    "Kitap okumanın faydaları nelerdir?",
    "Aşağıdaki cümleyi tamamlayın.\n\nYarın sabah erkenden",
    "Karadeniz hakkında bir cümle yazın.",
    "Boşluğa uygun kelimeyi yazarak cümleyi tamamlayın.\n\nAnneme güzel bir ___ aldım.",
    "Atatürk hakkında kısa bir cümle yazın.",
    "Okul hakkında bir şey söyleyin.",
    "Soruyu okuyun ve doğru cevabı yazın.\n\nTürkiye Cumhuriyeti hangi yıl kuruldu?\nA) 1920\nB) 1923\nC) 1938",
]
COMPLETION_PROMPTS = ["Türkiye'nin başkenti", "Atatürk 1919 yılında Samsun'a çıktığında", "Bu akşam yemekte",
                      "İstanbul Boğazı", "Milli irade", "Köyümüzün okulu"]  # fmt: skip
NUM_SAMPLES_SHOWN = 6
DATA_SOURCES = [
    {"name": "Universal Dependencies Turkish treebanks (Atis, BOUN, FrameNet, GB, Kenet, Penn, Tourism, TueCL)",
     "license": "CC BY-SA 4.0", "use": "tokenizer, pretraining, SFT rows built from its sentences"},
    {"name": "Universal Dependencies Turkish PUD", "license": "CC BY-SA 3.0", "use": "tokenizer, pretraining, SFT rows built from its sentences"},
    {"name": "Turkish Web Treebank (web, wiki)", "license": "Apache-2.0", "use": "tokenizer, pretraining, SFT rows built from its sentences"},
    {"name": "Atatürk's speeches, statements and telegrams 1906-1938", "license": "public domain",
     "use": "tokenizer, pretraining, instruction tuning (titles, sentences)"},
    {"name": "Turkish Wiki-NER (turkish-nlp-suite)", "hub_id": "turkish-nlp-suite/turkish-wikiNER",
     "license": "CC BY-SA 4.0", "use": "tokenizer, pretraining, instruction tuning (entities, sentences)"},
    {"name": "EXAMS Turkish train questions", "hub_id": "mhardalov/exams", "license": "CC BY-SA 4.0",
     "use": "instruction tuning (stage 2: 454 questions, answered with the option's text)"},
    {"name": "UD Turkish train/dev (lemmas, POS, verbs/nouns)", "license": "CC BY-SA 4.0",
     "use": "instruction tuning (400 rows in stage 2; all in stage 1 when it runs)"},
    {"name": "Nutuk question answering", "license": "CC BY 4.0", "use": "instruction tuning (stage 2, first sentence of each answer)"},
    {"name": "XCOPA-tr, EXAMS-tr validation", "license": "CC BY 4.0 / CC BY-SA 4.0", "use": "evaluation only"},
]  # fmt: skip


def held_out_rows(validation: list[str]) -> list[dict]:
    """Fill-in-the-blank and continuation rows built from validation.txt (`PROMPT_USE_ROWS` of each), as the recipe
    builds its training rows from train.txt: answers that depend on their prompt, for `prompt_use`."""
    sentences = plain_sentences(validation)
    rng = random.Random(0)
    return blank_rows(sentences, PROMPT_USE_ROWS, rng) + continuation_rows(sentences, PROMPT_USE_ROWS, rng)


def measure(pipe, data: Path, num_samples: int) -> dict:
    model, tokenizer = pipe.model, pipe.tokenizer
    validation = (data / "corpus" / "validation.txt").read_text(encoding="utf-8").splitlines()
    train = (data / "corpus" / "train.txt").read_text(encoding="utf-8").splitlines()
    bound = corpus_evidence_bound(model, tokenizer, validation, num_samples=num_samples, seed=0)
    unigram = unigram_bound(tokenizer, train, validation)
    xcopa = score_multiple_choice(model, tokenizer, MULTIPLE_CHOICE_TASKS["xcopa_tr"].load(data / "eval"),
                                  num_samples=num_samples)  # fmt: skip
    exams = score_multiple_choice(model, tokenizer, MULTIPLE_CHOICE_TASKS["exams_tr"].load(data / "eval"),
                                  num_samples=num_samples)  # fmt: skip
    use = prompt_use(model, tokenizer, held_out_rows(validation), num_samples=8)
    vocabulary = corpus_vocabulary(train)
    chats = [[{"role": "user", "content": prompt}] for prompt in CARD_PROMPTS]
    answers = [out[0]["generated_text"].strip() for out in pipe(chats, return_full_text=False, batch_size=12)]
    completions = [out[0]["generated_text"] for out in pipe(COMPLETION_PROMPTS, return_full_text=False, batch_size=6)]
    checks = [check_answer(answer, vocabulary) for answer in answers]
    shown = sorted(random.Random(0).sample(range(len(CARD_PROMPTS)), NUM_SAMPLES_SHOWN))
    samples = [{"prompt": CARD_PROMPTS[i].replace("\n", " "), "output": answers[i].replace("\n", " / ").replace("|", "/")}
               for i in shown]  # fmt: skip
    chat = {
        "meets_criteria": sum(c.passes for c in checks) / len(checks),
        "option_letter": sum(c.opens_with_option_letter for c in checks) / len(checks),
        "known_word_share": sum(c.known_word_share for c in checks) / len(checks),
        "loops": sum(has_loop(a) for a in answers) / len(answers),
        "distinct_2": distinct_n(answers, 2),
        "answers": answers,
        "problems": [c.problems() for c in checks],
    }
    completion = {"loops": sum(has_loop(c) for c in completions) / len(completions), "completions": completions,
                  "distinct_2": distinct_n(completions, 2)}  # fmt: skip
    return {
        "validation_bound": bound.as_dict(),
        "prompt_use": use.as_dict(),
        "unigram_bound": unigram.as_dict(),
        "xcopa_tr_validation": xcopa,
        "exams_tr_validation": exams,
        "chat": chat,
        "completion": completion,
        "samples": samples,
    }


LIMITATIONS = (
    "A ~9M-parameter model trained on 0.8M words of Turkish. Its chat answers are Turkish words in the shape of a "
    "sentence (10 to 25 words; about nine in ten are words of the corpus, the rest invented forms such as "
    '"kabuldu", "buluntur"), but they rarely mean anything, are unrelated to the question, mostly open with the same '
    'words ("Bu süre sonra", "Bu şekilde") and string nouns together with "ve" ("and"); some fill with quotation '
    "marks. It cannot list the words a task asks for (names, verbs). XCOPA and EXAMS accuracies near chance mean it "
    "does not understand questions. Its answers do not use the question at all: on held-out fill-in-the-blank and "
    "continuation rows a reply is as likely after another row's prompt as after its own (the table's prompt-use row), "
    "because the pretrained model predicts a masked token almost only from its two neighbours (masking a token two "
    "or more positions away changes the prediction by 0.003-0.02 nats of KL, against 0.7-1.1 for a neighbour) and "
    "instruction tuning does not teach it to read further. Plain completions (no chat template) fill their 64 "
    "tokens and drift into lists "
    'of words joined by "ve", into the corpus\'s flight-booking sentences (ATIS) or song and album names; its decoding '
    "defaults forbid any 3 tokens twice (`no_repeat_ngram_size=3`), so the card's 6 do not loop (1 of 6 without "
    "the ban); pass a smaller `max_new_tokens`. It is a working end-to-end example and an offline "
    "default, not a useful assistant."
)


NUMBERS = {2: "two", 3: "three", 4: "four"}


def restart_stages(log: dict) -> list[str]:
    """The warm-restart cycles the log holds (`pretrain2`, `pretrain3`, ...), in order."""
    return sorted((key for key in log if re.fullmatch(r"pretrain\d+", key)), key=lambda key: int(key[8:]))


def describe(log: dict) -> str:
    """The card's opening paragraph, with the stages the recipe's log shows."""
    sft_stages = sum(key in log for key in ("sft1", "sft2"))
    cycles = 1 + len(restart_stages(log))
    pretraining = f"pretraining in {NUMBERS.get(cycles, cycles)} cosine cycles" if cycles > 1 else "pretraining"
    if "pretrain_lines" in log:
        pretraining += " on packed blocks, then on one document per row"
    stages = f"{pretraining}, then {'two stages' if sft_stages == 2 else 'one stage'} of instruction tuning"
    return (
        "The small Turkish masked diffusion model shipped inside transformers-mdlm: what "
        '`pipeline("masked-diffusion")` and `mdlm generate` use with no model given, offline. It repeats the shape of '
        f"Diffutron's recipe ({stages}) at a scale a CPU trains in {total_minutes(log):.0f} minutes "
        f"({training_machine(log)}; about 3 hours in float32 on an AVX2-only CPU, estimated from measured step times)."
    )


def training_machine(log: dict) -> str:
    """The CPU the recipe's wall times come from (logs of model v8 and earlier do not name it: an AMD EPYC)."""
    default = "AMD EPYC with AVX512-BF16, 2 cores"
    return log.get("machine", default) + (", bf16 autocast" if log.get("precision", "bf16") == "bf16" else ", float32")


def total_minutes(log: dict) -> float:
    """The recipe's wall time in minutes: every stage and every bound measurement (the log's own total if it has one)."""
    if log.get("total_wall_seconds"):
        return log["total_wall_seconds"] / 60
    stages = [value["wall_seconds"] for value in log.values() if isinstance(value, dict) and "wall_seconds" in value]
    bounds = [value["seconds"] for key, value in log.items() if key.startswith("bound_after_")]
    return (sum(stages) + sum(bounds)) / 60


def training_table(log: dict) -> dict:
    """The recipe's log as the card's training table: wall time and the bound after each stage."""
    stages = {key: value for key, value in log.items() if isinstance(value, dict) and "wall_seconds" in value}
    bounds = {key.removeprefix("bound_after_"): value for key, value in log.items() if key.startswith("bound_after_")}
    table = {
        "recipe": "`python examples/train_embedded_model.py` (tokenizer, pretraining from scratch"
        + (
            ", warm restarts (shorter cosine cycles from the previous one's end: "
            + ", ".join(f"`{stage}`" for stage in restart_stages(log))
            + ")"
            if restart_stages(log)
            else ""
        )
        + (", pretraining on one document per row (`pretrain_lines`)" if "pretrain_lines" in log else "")
        + (", SFT stage 1 on the linguistic tasks and sentence continuations" if "sft1" in log else "")
        + ", SFT stage 2 on a rebalanced mix"
        + (
            f" with a LoRA adapter (r={log['sft_lora']['r']}, alpha={log['sft_lora']['alpha']}, merged; the chat "
            "markers' embedding rows trained with it)"
            if log.get("sft_lora")
            else ""
        )
        + ")",
        "wall time per stage (s)": ", ".join(f"{k} {v['wall_seconds']}" for k, v in stages.items()),
        "total wall time": f"{total_minutes(log):.0f} min on {training_machine(log)} (with the bound measurements)",
        "tokenizer": "byte-pair, 8,000 pieces, SentencePiece-style word starts, trained with `tokenizers` on the corpus",
        "objective": "MDLM, linear schedule, 1/t weighting, per-sequence normalisation, "
        # Recipe logs before `--precision` (model v8 and earlier) trained under bf16 autocast.
        + ("bf16 autocast" if log.get("precision", "bf16") == "bf16" else "float32")
        + "; SFT answers padded with scored EOS to 64 tokens"
        + (
            f"; SFT rows mixed with corpus {log.get('replay_rows', 'packed blocks')} ({log['replay_ratio']} per "
            "instruction row, scored whole)"
            if log.get("replay_ratio")
            else ""
        ),
    }
    if log.get("wall_time_note"):
        table["note on the wall times"] = log["wall_time_note"]
    for stage, value in bounds.items():
        table[f"bound after {stage} (bits/char, {value['num_samples']} samples)"] = (
            f"{value['bits_per_character']:.3f} ({value['ratio_to_unigram']:.3f}x unigram)"
        )
    return table


def sweep_table(work: Path) -> str | None:
    """The decoding sweep of `tune_embedded_decoding.py` as a Markdown table (None when it was not run)."""
    path = work / "decoding_sweep.json"
    if not path.exists():
        return None
    sweep = json.loads(path.read_text(encoding="utf-8"))
    lines = [
        f"How these defaults were chosen (`examples/tune_embedded_decoding.py`, {len(sweep['prompts'])} validation "
        "chat prompts and 6 plain completions written for tuning; the answer's bound is scored by the model itself, "
        "lower = likelier; prompt use: nats per answer token that the answer's own prompt saves against another "
        "prompt's, 0 = unrelated to its question; failed outputs: chat answers missing the criteria or looping plus "
        "looping completions, of 14; the winner has the fewest, then the most answers meeting the criteria, then the "
        "most prompt use, then the lowest bound):",
        "",
        "| setting | failed outputs | meets chat criteria | chat loops | completion loops | distinct-2 | answer bound "
        "(nats/token) | prompt use (nats/token) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sweep["rows"]:
        name = f"**{row['setting']}** (chosen)" if row["setting"] == sweep["chosen"] else row["setting"]
        completion_loops = f"{row['completion_loops']:.0%}" if "completion_loops" in row else "not measured"
        failed = row.get("failed_outputs", "not measured")
        use = row.get("answer_prompt_use_nats_per_token")  # sweeps before model v9 did not measure it
        use = "not measured" if use is None else f"{use:.2f}"
        lines.append(f"| {name} | {failed} | {row['meets_criteria']:.0%} | {row['loops']:.0%} | {completion_loops} | "
                     f"{row['distinct_2']:.2f} | {row['answer_bound_nats_per_token']:.2f} | {use} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/turkish")
    parser.add_argument("--work-dir", default="outputs/embedded")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--reuse-figures", action="store_true", help="rewrite the card from figures.json")
    args = parser.parse_args()
    data, work = Path(args.data_dir), Path(args.work_dir)
    start = time.perf_counter()

    pipe = pipeline("masked-diffusion", model=args.model, dtype=torch.float32)
    model = pipe.model
    if args.reuse_figures:
        figures = json.loads((work / "figures.json").read_text())
    else:
        figures = measure(pipe, data, args.num_samples)
        figures["eval_wall_seconds"] = round(time.perf_counter() - start, 1)
    bound, unigram = figures["validation_bound"], figures["unigram_bound"]
    xcopa, exams, samples = figures["xcopa_tr_validation"], figures["exams_tr_validation"], figures["samples"]
    # The recipe's log of this run, else the one the shipped card was built from (kept in git beside the card, so that
    # the card can be rebuilt on any checkout); the log used is kept there for the next rebuild.
    log_path = work / "recipe_log.json" if (work / "recipe_log.json").exists() else SHIPPED_LOG
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    if log:
        SHIPPED_LOG.write_text(json.dumps(log, indent=2, default=str) + "\n", encoding="utf-8")
    (work / "figures.json").write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    ratio = bound["bits_per_character"] / unigram["bits_per_character"]
    chat, completion = figures["chat"], figures["completion"]
    eval_rows = [
        {"task": "corpus validation (482 lines)", "metric": "bits per character (evidence bound)",
         "value": round(bound["bits_per_character"], 3),
         "display": f"{bound['bits_per_character']:.3f} ± {bound['bits_per_character_stderr']:.3f}"},
        {"task": "corpus validation (482 lines)", "metric": "bits per character, unigram model of the same tokenizer",
         "value": round(unigram["bits_per_character"], 3)},
        {"task": "corpus validation (482 lines)", "metric": "bound / unigram", "value": round(ratio, 3)},
        {"task": "XCOPA-tr validation (100, chance 50%)", "metric": "accuracy", "value": round(xcopa["acc"], 3),
         "display": f"{xcopa['acc']:.1%} (acc_norm {xcopa['acc_norm']:.1%})"},
        {"task": "EXAMS-tr validation (393, chance ~25%)", "metric": "accuracy", "value": round(exams["acc"], 3),
         "display": f"{exams['acc']:.1%} (acc_norm {exams['acc_norm']:.1%})"},
        {"task": f"chat, {len(CARD_PROMPTS)} card prompts", "metric": "answers meeting the chat criteria",
         "value": round(chat["meets_criteria"], 3), "display": f"{chat['meets_criteria']:.0%}"},
        {"task": f"chat, {len(CARD_PROMPTS)} card prompts", "metric": "answers opening with an option letter",
         "value": round(chat["option_letter"], 3), "display": f"{chat['option_letter']:.0%}"},
        {"task": f"chat, {len(CARD_PROMPTS)} card prompts", "metric": "words seen in the corpus",
         "value": round(chat["known_word_share"], 3), "display": f"{chat['known_word_share']:.0%}"},
        {"task": f"completions, {len(COMPLETION_PROMPTS)} prompts", "metric": "completions with a loop",
         "value": round(completion["loops"], 3), "display": f"{completion['loops']:.0%}"},
    ]  # fmt: skip
    if "prompt_use" in figures:  # figures.json files written before it was measured lack it
        use = figures["prompt_use"]
        eval_rows.insert(-1, {
            "task": f"fill-in-the-blank and continuation rows from validation.txt ({use['num_conversations']})",
            "metric": "nats per answer token saved by the row's own prompt (against another row's; 0 = prompt ignored)",
            "value": round(use["gain_nats_per_token"], 3),
            "display": f"{use['gain_nats_per_token']:.3f} ({use['own_nats_per_token']:.2f} vs "
                       f"{use['other_nats_per_token']:.2f})"})  # fmt: skip
    card = build_model_card(
        model, repo_id="", model_name="turkish-mdlm-embedded",
        model_description=describe(log),
        language="tr", license="cc-by-sa-4.0", datasets=DATA_SOURCES, training=training_table(log),
        eval_results=eval_rows, samples=samples, generation_notes=sweep_table(work), limitations=LIMITATIONS,
    )  # fmt: skip
    (ROOT / "model_cards").mkdir(exist_ok=True)
    card.save(ROOT / "model_cards" / "turkish-mdlm-embedded.md")
    card.save(Path(args.model) / "README.md")
    docs = ["# The embedded Turkish model", "", "Its model card, as shipped next to the weights:", "",
            str(card).split("---", 2)[-1].strip(), ""]  # fmt: skip
    (ROOT / "docs" / "embedded_model.md").write_text("\n".join(docs), encoding="utf-8")
    print(json.dumps(figures, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
