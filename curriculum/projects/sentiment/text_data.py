"""Reviews as data: the validation tables and expectations, the leak check across splits, and the
bag-of-words baselines. Pure functions on arrays of texts and labels."""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import numpy as np
import pandas as pd

from curriculum.layout import Arrays, ProcessedData
from curriculum.projects.sentiment.tokenizer import words
from curriculum.tasks.base import Predictions

N_CLASSES = 2


def comparable(text: str) -> str:
    """A review as the models see it (its tokens): two texts equal here are the same review."""
    return " ".join(words(text))


def review_tables(reviews: Arrays) -> dict[str, pd.DataFrame]:
    """``reviews``: one row per review (index ``<split>/<position>``, so a failure names it) with its
    label, length in characters and tokens, and ``copies``, how many reviews of the whole data
    set read the same; ``class_counts``: reviews per (split, class)."""
    from curriculum.validation import class_count_table, rows_by_split

    texts, labels, split = rows_by_split(reviews)
    keys = [comparable(str(text)) for text in texts]
    copies = Counter(keys)
    table = pd.DataFrame({
        "label": labels,
        "split": split,
        "characters": [len(str(text)) for text in texts],
        "tokens": [len(key.split()) for key in keys],
        "copies": [copies[key] for key in keys],
    })
    table.index = [f"{name}/{position}" for name, position in zip(split, _positions(split))]
    return {"reviews": table, "class_counts": class_count_table(labels, split, n_classes=N_CLASSES)}


def _positions(split: np.ndarray) -> list[int]:
    """Each row's position within its own split."""
    seen: Counter = Counter()
    positions = []
    for name in split:
        positions.append(seen[name])
        seen[name] += 1
    return positions


def review_expectations(min_characters: int, max_characters: int, max_class_imbalance: float) -> dict[str, list]:
    from curriculum.validation import gxe

    b = max_class_imbalance
    return {
        "reviews": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
            gxe.ExpectColumnValuesToBeBetween(column="characters", min_value=min_characters, max_value=max_characters),
            gxe.ExpectColumnValuesToBeBetween(column="tokens", min_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="copies", value_set=[1]),
        ],
        "class_counts": [
            gxe.ExpectColumnValuesToBeBetween(column="count", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="fraction", min_value=(1 - b) / N_CLASSES,
                                              max_value=(1 + b) / N_CLASSES),
        ],
    }


def check_no_shared_text(texts: Mapping[str, np.ndarray], shown: int = 5) -> None:
    """Refuse splits that share a review (as the models see it): a test review seen in training
    inflates every score. The message names the reviews and their positions."""
    seen: dict[str, tuple[str, int]] = {}
    shared: list[str] = []
    for split, split_texts in texts.items():
        for position, text in enumerate(split_texts):
            key = comparable(str(text))
            first = seen.setdefault(key, (split, position))
            if first[0] != split:
                shared.append(f"{first[0]}/{first[1]} = {split}/{position} ({str(text)[:60]!r})")
    if shared:
        raise ValueError(f"{len(shared)} reviews are in two splits: " + "; ".join(shared[:shown])
                         + ("; ..." if len(shared) > shown else ""))


def bag_of_words_baselines(data: ProcessedData, settings: Any, seed: int) -> dict[str, Predictions]:
    """The majority class, and TF-IDF of 1..``tfidf_max_ngram``-grams (sublinear term frequency)
    + logistic regression (``C = tfidf_c``), fitted on the training split's raw texts."""
    from sklearn.dummy import DummyClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, test = data.split("train"), data.split("test")
    texts_train, texts_test = [str(t) for t in train["text"]], [str(t) for t in test["text"]]
    models = {
        "most_frequent": DummyClassifier(strategy="most_frequent"),
        "tfidf_logistic_regression": make_pipeline(
            TfidfVectorizer(tokenizer=words, token_pattern=None, lowercase=False,
                            ngram_range=(1, settings.tfidf_max_ngram), sublinear_tf=True),
            LogisticRegression(C=settings.tfidf_c, max_iter=settings.logistic_max_iter, random_state=seed)),
    }
    return {name: {"proba": model.fit(texts_train, train["y"]).predict_proba(texts_test)[:, 1:]}
            for name, model in models.items()}
