"""Instruction data for the embedded model's two SFT stages, built from the shared instruction set and the corpus.

Used by `examples/train_embedded_model.py`. What it changes against the raw instruction set, and why:

- exam questions answer with the option's text, not its letter (the first model opened every answer with "D) ...");
  only a third of them are kept;
- Nutuk answers are cut to their first sentence ("answer in a sentence"), speeches to their first 80 words (enough
  for a title), and rows with longer inputs dropped (the model has 256 positions);
- rows the corpus yields for free keep the pretrained model's language during SFT: continue a sentence, fill a blank,
  write a sentence about a name; all from `train.txt`, never from `validation.txt`;
- stage 2 replays a few stage-1 rows so that the linguistic tasks are not forgotten.

Every row keeps a `license` field naming its source's licence.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

CORPUS_LICENSE = "CC BY-SA 4.0 (corpus: UD Turkish, Turkish Web Treebank, Wiki-NER; Atatürk's speeches public domain)"
LINGUISTIC_TASKS = ("ner_extraction", "lemmatization", "pos_tagging", "verb_noun_extraction")
OPTION_LETTER = re.compile(r"^\s*[A-Ea-e]\s*[).:-]\s*")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
ABOUT_INSTRUCTIONS = (
    "{} hakkında kısa bir cümle yazın.",
    "{} hakkında kısa bir cümle yaz.",
    "{} ile ilgili bir cümle yazın.",
    "{} hakkında bir şey söyleyin.",
)
CONTINUE_INSTRUCTION = "Aşağıdaki cümleyi tamamlayın."
BLANK_INSTRUCTION = "Boşluğa uygun kelimeyi yazarak cümleyi tamamlayın."


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    temporary.replace(path)


def plain_sentences(lines: list[str], min_words: int = 6, max_words: int = 25) -> list[str]:
    """Corpus lines that read as one plain sentence: 6-25 words, ending with a full stop, starting with a capital."""
    keep = []
    for line in lines:
        line = line.strip()
        words = line.split()
        if min_words <= len(words) <= max_words and line[-1:] in ".!?" and line[:1].isupper():
            keep.append(line)
    return keep


def _row(instruction: str, text_input: str, output: str, task: str) -> dict:
    return {"instruction": instruction, "input": text_input, "output": output, "source": "corpus/train.txt",
            "license": CORPUS_LICENSE, "task": task}  # fmt: skip


def continuation_rows(sentences: list[str], count: int, rng: random.Random) -> list[dict]:
    rows = []
    for sentence in rng.sample(sentences, min(count, len(sentences))):
        words = sentence.split()
        cut = rng.randint(max(2, len(words) // 3), max(2, (2 * len(words)) // 3))
        rows.append(_row(CONTINUE_INSTRUCTION, " ".join(words[:cut]), " ".join(words[cut:]), "continue_sentence"))
    return rows


def blank_rows(sentences: list[str], count: int, rng: random.Random) -> list[dict]:
    rows = []
    for sentence in rng.sample(sentences, min(count, len(sentences))):
        words = sentence.split()
        candidates = [i for i, word in enumerate(words[1:-1], start=1) if word.isalpha() and len(word) >= 4]
        if not candidates:
            continue
        index = rng.choice(candidates)
        blanked = " ".join(words[:index] + ["___"] + words[index + 1 :])
        rows.append(_row(BLANK_INSTRUCTION, blanked, sentence, "fill_blank"))
    return rows


def about_rows(sentences: list[str], count: int, rng: random.Random) -> list[dict]:
    """ "Write a sentence about X", where X is a name (a capitalised word after the first) of a corpus sentence."""
    rows = []
    for sentence in rng.sample(sentences, len(sentences)):
        names = [w.split("'")[0].split("’")[0].strip(",.;:") for w in sentence.split()[1:] if w[:1].isupper()]
        names = [name for name in names if len(name) >= 3 and name.isalpha()]
        if not names:
            continue
        instruction = rng.choice(ABOUT_INSTRUCTIONS).format(rng.choice(names))
        rows.append(_row(instruction, "", sentence, "sentence_about"))
        if len(rows) == count:
            break
    return rows


def exam_rows(rows: list[dict], count: int, rng: random.Random) -> list[dict]:
    """Exam questions answered with the option's text (the letter dropped)."""
    rewritten = []
    for row in rng.sample(rows, min(count, len(rows))):
        answer = OPTION_LETTER.sub("", row["output"]).strip()
        if answer:
            rewritten.append({**row, "instruction": "Soruyu okuyun ve doğru cevabı yazın.", "output": answer})
    return rewritten


def nutuk_rows(rows: list[dict]) -> list[dict]:
    """Nutuk answers cut to their first sentence (at most 40 words)."""
    shortened = []
    for row in rows:
        first = SENTENCE_END.split(row["output"].strip(), maxsplit=1)[0]
        words = first.split()
        if len(words) >= 4:
            shortened.append({**row, "output": " ".join(words[:40])})
    return shortened


def short_inputs(rows: list[dict], max_words: int = 80) -> list[dict]:
    """Speech texts cut to their first `max_words` words (enough for a title); other rows with longer inputs dropped,
    so that every prompt leaves room for its answer in 256 positions."""
    kept = []
    for row in rows:
        words = row["input"].split()
        if row["task"] == "title_generation":
            kept.append({**row, "input": " ".join(words[:max_words])})
        elif len(words) <= max_words:
            kept.append(row)
    return kept


def build_stage_data(data_dir: Path, out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write `sft1.jsonl` and `sft2.jsonl` into `out_dir`; returns their paths and prints the mix."""
    rng = random.Random(seed)
    instruct = read_jsonl(data_dir / "instruct" / "tr_instruct.jsonl")
    by_task: dict[str, list[dict]] = {}
    for row in instruct:
        by_task.setdefault(row["task"], []).append(row)
    lines = (data_dir / "corpus" / "train.txt").read_text(encoding="utf-8").splitlines()
    sentences = plain_sentences(lines)
    rng.shuffle(sentences)
    half = len(sentences) // 2  # stage 1 and stage 2 draw corpus rows from different sentences
    linguistic = [row for task in LINGUISTIC_TASKS for row in by_task.get(task, [])]
    stage1 = linguistic + continuation_rows(sentences[:half], 1500, rng)
    replay = rng.sample(linguistic, 400)
    stage2 = (
        continuation_rows(sentences[half:], 1500, rng)
        + blank_rows(sentences[half:], 800, rng)
        + about_rows(sentences[half:], 1500, rng)
        + nutuk_rows(by_task.get("nutuk_qa", []))
        + exam_rows(by_task.get("mcq_exam", []), 500, rng)
        + by_task.get("title_generation", [])
        + replay
    )
    paths = {}
    for name, rows in (("sft1", stage1), ("sft2", stage2)):
        rows = short_inputs(rows)
        rng.shuffle(rows)
        paths[name] = out_dir / f"{name}.jsonl"
        write_jsonl(rows, paths[name])
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["task"]] = counts.get(row["task"], 0) + 1
        print(f"[{name}] {len(rows)} rows: {json.dumps(counts)}")
    return paths
