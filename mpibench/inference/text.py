"""Real-looking input text of controlled length, generated deterministically from a seed."""

from __future__ import annotations

import functools
import re
from importlib import resources

import numpy as np

_WORD = re.compile(r"^[a-z]{2,12}$")
_PUNCT = np.array([",", ".", ";", "?", "!"])


@functools.lru_cache(maxsize=1)
def vocab_words() -> np.ndarray:
    """Whole, alphabetic words of the BERT uncased vocabulary: each tokenises to one piece."""
    text = resources.files("mpibench.data").joinpath("bert-base-uncased-vocab.txt").read_text("utf-8")
    return np.array([w for w in text.splitlines() if _WORD.match(w)])


def generate_texts(n: int, n_words: int, seed: int) -> list[str]:
    """`n` sentences of `n_words` words each (plus occasional punctuation), Zipf-like word choice.

    Every word is in the vocabulary, so a text of `n_words` words is at least that many tokens:
    truncating to seq_len then gives sequences of exactly seq_len tokens.
    """
    rng = np.random.default_rng(seed)
    words = vocab_words()
    ranks = np.minimum(rng.zipf(1.3, size=(n, n_words)) - 1, len(words) - 1)
    perm = rng.permutation(len(words))  # which words are frequent depends on the seed only
    chosen = words[perm[ranks]]
    out = []
    for row in chosen:
        marks = rng.random(n_words) < 0.08
        row = np.where(marks, np.char.add(row, rng.choice(_PUNCT, n_words)), row)
        out.append(" ".join(row).capitalize())
    return out
