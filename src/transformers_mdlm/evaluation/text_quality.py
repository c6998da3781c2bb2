"""Surface checks of generated text: word forms, repetition, loops, and the chat-answer criteria of the embedded model.

These are cheap, model-free measures, meant to be read together with a likelihood (a model that repeats one word
scores its own output well; a diverse word salad has a high distinct-2): `distinct_n` (share of distinct word
n-grams), `has_loop` (an n-gram repeated back to back), `max_word_share` (the most frequent word's share), and
`known_word_share` (words seen in a reference corpus).

Example:

```python
>>> from transformers_mdlm.evaluation.text_quality import check_answer, distinct_n, has_loop, words
>>> words("Samsun'a çıktı. İstanbul ILIK")
["samsun'a", 'çıktı', 'istanbul', 'ılık']
>>> has_loop("milli irade milli irade"), has_loop("Ankara Türkiye'nin başkentidir.")
(True, False)
>>> distinct_n(["a b a b"], 2)
0.6666666666666666
>>> check_answer("D) İnki, 'npils", vocabulary={"inki"}).problems()
['opens with an option letter', 'fewer than 4 words', 'one word is 33% of the answer', 'known words 33% < 80%']
>>> check_answer("Ankara Türkiye'nin başkentidir.").passes
False

```
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..validation import check_int, check_texts, iter_texts

WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
OPTION_LETTER = re.compile(r"^\s*[A-Ea-e]\s*[)\].:]")
_TURKISH_UPPER = str.maketrans({"I": "ı", "İ": "i"})


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a string, got {type(text).__name__}.")


def words(text: str) -> list[str]:
    """Word forms (letters, with apostrophe suffixes kept: `Samsun'a`), lower-cased the Turkish way (I -> ı, İ -> i)."""
    return WORD.findall(text.translate(_TURKISH_UPPER).lower())


def corpus_vocabulary(lines: Iterable[str]) -> set[str]:
    """Every word form of a corpus, as `words` writes them."""
    vocabulary: set[str] = set()
    for line in iter_texts("lines", lines):  # streamed: a corpus file handle is not read into memory
        vocabulary.update(words(line))
    return vocabulary


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams over all n-grams of `texts` (1.0: no n-gram repeats; 0.0 when there are none)."""
    check_int("n", n, minimum=1)
    grams: list[tuple[str, ...]] = []
    for text in check_texts("texts", texts):
        tokens = words(text)
        grams.extend(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def has_loop(text: str, max_n: int = 4) -> bool:
    """Whether a word n-gram (n <= `max_n`) repeats back to back: a word three times in a row, or a longer n-gram twice."""
    _check_text(text)
    check_int("max_n", max_n, minimum=1)
    tokens = words(text)
    for i in range(len(tokens)):
        if tokens[i : i + 1] * 3 == tokens[i : i + 3] and i + 3 <= len(tokens):
            return True
        for n in range(2, max_n + 1):
            if i + 2 * n <= len(tokens) and tokens[i : i + n] == tokens[i + n : i + 2 * n]:
                return True
    return False


def max_word_share(text: str) -> float:
    """The most frequent word's share of all words (0.0 for no words)."""
    tokens = words(text)
    return max(Counter(tokens).values()) / len(tokens) if tokens else 0.0


@dataclass
class AnswerCheck:
    """One chat answer against the embedded model's criteria (see `check_answer`)."""

    num_words: int
    opens_with_option_letter: bool
    max_word_share: float
    known_word_share: float | None
    min_words: int = 4
    max_share: float = 0.2
    min_known: float = 0.8

    def problems(self) -> list[str]:
        """What fails, in words (empty when the answer meets every criterion)."""
        found = []
        if self.opens_with_option_letter:
            found.append("opens with an option letter")
        if self.num_words < self.min_words:
            found.append(f"fewer than {self.min_words} words")
        if self.max_word_share > self.max_share:
            found.append(f"one word is {self.max_word_share:.0%} of the answer")
        if self.known_word_share is not None and self.known_word_share < self.min_known:
            found.append(f"known words {self.known_word_share:.0%} < {self.min_known:.0%}")
        return found

    @property
    def passes(self) -> bool:
        return not self.problems()


def check_answer(text: str, vocabulary: set[str] | None = None) -> AnswerCheck:
    """A chat answer's checks: no option letter first, at least 4 words, no word over a fifth of them, and (given a
    corpus `vocabulary`) at least 80% of its words seen in the corpus. `vocabulary` is a set of word forms as
    [`words`] writes them (lower-cased the Turkish way), e.g. from [`corpus_vocabulary`]."""
    _check_text(text)
    if vocabulary is not None and (isinstance(vocabulary, (str, bytes)) or not hasattr(vocabulary, "__contains__")):
        raise TypeError(
            "`vocabulary` must be a set of word forms (e.g. `corpus_vocabulary(lines)`), got "
            f"{type(vocabulary).__name__} (a string would match substrings)."
        )
    tokens = words(text)
    known = None
    if vocabulary is not None:
        known = sum(token in vocabulary for token in tokens) / len(tokens) if tokens else 0.0
    return AnswerCheck(len(tokens), bool(OPTION_LETTER.match(text)), max_word_share(text), known)


__all__ = [
    "AnswerCheck",
    "check_answer",
    "corpus_vocabulary",
    "distinct_n",
    "has_loop",
    "max_word_share",
    "words",
]
