"""The word tokenizer every sentiment model, export and server share: text -> padded token ids.

Fitted on the training split only, and saved as JSON (a fitted artifact of preprocess, beside the
exported models), so the same text gives the same ids in Keras, in PyTorch, in ONNX Runtime and
in the server. The rules are GloVe's (Stanford tokenizer): lower case, ``n't`` and the clitics
``'s 're 've 'll 'd 'm`` split off (``don't`` -> ``do n't``), hyphenated words split, punctuation a
token of its own -- otherwise GloVe would know far fewer of the words.

Ids: 0 pads, 1 is any word outside the vocabulary, 2.. are the vocabulary's words, most frequent
first (ties alphabetical, so the ids depend on the training texts alone). Sequences are cut to
``max_length`` tokens (keeping the first) and padded at the front: a recurrent network reads its
last steps last, so they are the review's own words.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

PAD, OOV = 0, 1
FIRST_WORD_ID = 2
FORMAT = "dl-curriculum word tokenizer v1"

# A word that ends in n't gives up the n't (GloVe has "do", "ca", "wo" and "n't"); the clitics
# stand alone; words (letters and digits of any script) keep inner periods ("u.s") but are split
# at hyphens ("by-the-numbers": GloVe knows the parts, rarely the compound: 96.6 % of MR's word
# types are in GloVe, against 91.4 % unsplit); dashes and ellipses stay whole; any other symbol is
# a token of its own.
_WORD = r"[^\W_]+"
_TOKEN = re.compile(
    rf"{_WORD}(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|{_WORD}(?:\.{_WORD})*|-{{2,}}|\.{{2,}}|\S"
)
# Typographic quotes and dashes as GloVe's corpus spells them.
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "--"})


def words(text: str) -> list[str]:
    """The tokens of one text, by GloVe's rules."""
    text = unicodedata.normalize("NFKC", text).translate(_PLAIN).lower()
    return _TOKEN.findall(text)


def fit(texts: Iterable[str], vocabulary_size: int, max_length: int) -> dict[str, Any]:
    """The tokenizer artifact: the ``vocabulary_size`` most frequent words of ``texts`` (the
    training split's) in id order, and the sequence length."""
    counts = Counter(token for text in texts for token in words(text))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {"format": FORMAT, "max_length": max_length,
            "vocabulary": [word for word, _ in ranked[:vocabulary_size]]}


def check(tokenizer: Mapping[str, Any]) -> None:
    """Refuse an artifact this code did not write (another format, duplicated words)."""
    if tokenizer.get("format") != FORMAT:
        raise ValueError(f"not a tokenizer of this pipeline: format {tokenizer.get('format')!r}, expected {FORMAT!r}")
    vocabulary = tokenizer["vocabulary"]
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError("tokenizer vocabulary has duplicated words")


def n_ids(tokenizer: Mapping[str, Any]) -> int:
    """Rows the embedding needs: padding, out-of-vocabulary and every word."""
    return FIRST_WORD_ID + len(tokenizer["vocabulary"])


def encoder(tokenizer: Mapping[str, Any]) -> Callable[[Sequence[str]], np.ndarray]:
    """The artifact made ready to encode many batches: its word -> id map is built once (a server
    keeps it per model; building it costs more than encoding a review)."""
    check(tokenizer)
    ids = {word: index for index, word in enumerate(tokenizer["vocabulary"], start=FIRST_WORD_ID)}
    length = tokenizer["max_length"]

    def encode_texts(texts: Sequence[str]) -> np.ndarray:
        encoded = np.full((len(texts), length), PAD, dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [ids.get(token, OOV) for token in words(text)[:length]]
            if tokens:
                encoded[row, length - len(tokens):] = tokens
        return encoded

    return encode_texts


def encode(texts: Sequence[str], tokenizer: Mapping[str, Any]) -> np.ndarray:
    """Token ids, int64 ``(len(texts), max_length)``: what every exported model takes (and what a
    server runs on raw text before the model, through :func:`encoder`)."""
    return encoder(tokenizer)(texts)


def coverage(texts: Iterable[str], known: Iterable[str]) -> dict[str, float]:
    """Share of the word types and of the tokens of ``texts`` that ``known`` contains."""
    counts = Counter(token for text in texts for token in words(text))
    known = set(known)
    found = {word: count for word, count in counts.items() if word in known}
    return {"types": len(found) / max(len(counts), 1),
            "tokens": sum(found.values()) / max(sum(counts.values()), 1)}


def embedding_from_vectors(tokenizer: Mapping[str, Any], vocabulary: Sequence[str], vectors: np.ndarray,
                           seed: int) -> np.ndarray:
    """An embedding matrix for the tokenizer's ids from pretrained word vectors (GloVe): a known
    word gets its vector, the padding row zeros, the out-of-vocabulary row and unknown words small
    seeded random vectors (the spread of Keras' default embedding initialiser)."""
    rows = {word: index for index, word in enumerate(vocabulary)}
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(-0.05, 0.05, size=(n_ids(tokenizer), vectors.shape[1])).astype(np.float32)
    matrix[PAD] = 0.0
    for index, word in enumerate(tokenizer["vocabulary"], start=FIRST_WORD_ID):
        if (row := rows.get(word)) is not None:
            matrix[index] = vectors[row]
    return matrix
