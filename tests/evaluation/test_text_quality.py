"""The surface checks behind the embedded model's chat criteria, on texts whose answers are known."""

from __future__ import annotations

import pytest

from transformers_mdlm.evaluation.text_quality import check_answer, corpus_vocabulary, distinct_n, has_loop, words


def test_words_keep_suffixes_and_lower_the_turkish_way():
    assert words("İzmir'e GİDİYORUM, 3 kez; IRMAK") == ["izmir'e", "gidiyorum", "kez", "ırmak"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("milli irade, milli birlik, irade ve irade, milli milli milli irade", True),  # a word three times in a row
        ("bir iki üç bir iki üç", True),  # a trigram twice in a row
        ("milli irade ve milli birlik", False),
        ("Ankara Türkiye'nin başkentidir ve büyük bir şehirdir.", False),
    ],
)
def test_has_loop(text, expected):
    assert has_loop(text) is expected


def test_distinct_n_counts_over_all_texts():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a"], 2) == 0.0


def test_check_answer_criteria():
    vocabulary = corpus_vocabulary(["Ankara Türkiye'nin başkentidir.", "Büyük bir şehirdir."])
    good = check_answer("Ankara Türkiye'nin büyük bir şehirdir.", vocabulary)
    assert good.passes and good.num_words == 5 and good.known_word_share == 1.0
    salad = check_answer("D) İnki, 'npils, 'nişi, 'sikeler ve 'nkasyon", vocabulary)
    assert salad.problems()[0] == "opens with an option letter"
    assert salad.known_word_share == 0.0
    looping = check_answer("irade irade irade ve milli birlik", None)
    assert looping.problems() == ["one word is 50% of the answer"] and looping.known_word_share is None
    assert check_answer("Ankara başkenttir.").problems() == ["fewer than 4 words", "one word is 50% of the answer"]


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: distinct_n("w1 w2 w1 w2"), TypeError, r"`texts` must be a list of strings, got one string"),
        (lambda: distinct_n(["w1 w2"], 0), ValueError, r"`n` must be an integer >= 1, got 0"),
        (lambda: distinct_n(["w1", 2]), TypeError, r"`texts\[1\]` must be a string, got int"),
        (lambda: corpus_vocabulary("Ankara güzel"), TypeError, r"`lines` must be a list of strings, got one string"),
        (lambda: has_loop(None), TypeError, r"`text` must be a string, got NoneType"),
        (lambda: has_loop("a b", max_n=0), ValueError, r"`max_n` must be an integer >= 1, got 0"),
        (lambda: check_answer(["Bu bir cümle."]), TypeError, r"`text` must be a string, got list"),
    ],
)  # fmt: skip
def test_a_string_where_texts_are_expected_is_refused_not_split_into_characters(call, error, pattern):
    # They iterated the string: distinct_n("w1 w2 w1 w2") scored each character as a text (0.0: no bigrams at all) and
    # corpus_vocabulary("Ankara güzel") returned the set of its letters.
    with pytest.raises(error, match=pattern):
        call()
